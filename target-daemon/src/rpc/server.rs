//! The JSON-RPC server on a Unix stream socket.
//!
//! Start-up, as SPDK's `spdk_rpc_listen` (`lib/rpc/rpc.c`): take an exclusive `flock` on
//! `<socket>.lock` (so two daemons, Shoal or SPDK, never share a path), refuse if a live server
//! still answers on the socket, remove a stale socket file, then bind. The socket is created
//! with mode 0600 without a window where it is more open: it is bound inside a fresh 0700
//! directory next to the target path, chmod-ed, then renamed into place.
//!
//! Each client gets a thread (RPC is not on the I/O path; at most
//! [`ServerConfig::max_connections`] at once). Requests and responses are bare JSON values;
//! see [`super::framing`]. A syntax error answers `-32700` and closes the connection, since
//! the stream cannot be resynchronised; a request larger than
//! [`ServerConfig::max_request_bytes`] answers `-32600` and closes it too. Each response is
//! followed by `"\n"`, as SPDK does.
//!
//! [`ShutdownHandle::shutdown`] stops accepting, closes client connections (a handler already
//! running finishes first), joins their threads and removes the socket and lock files.

use std::collections::HashMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use super::dispatch::{Registry, error_response};
use super::error::RpcError;
use super::framing::{DeframeError, Deframer};

/// Where `shoald` listens unless told otherwise (SPDK uses `/var/tmp/spdk.sock`).
pub const DEFAULT_SOCKET_PATH: &str = "/var/tmp/shoal.sock";
/// Largest request accepted, in bytes.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 16 << 20;
/// Most clients served at once (SPDK: `SPDK_JSONRPC_MAX_CONNS` = 64).
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// A client that does not read its responses for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest `sun_path` (108 bytes including the terminating NUL on Linux).
const MAX_SUN_PATH: usize = 107;

/// Server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Path of the Unix socket.
    pub socket_path: PathBuf,
    /// Largest request accepted, in bytes.
    pub max_request_bytes: usize,
    /// Most clients served at once; further connections are closed at once.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            socket_path: PathBuf::from(DEFAULT_SOCKET_PATH),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl ServerConfig {
    /// Defaults with another socket path.
    #[must_use]
    pub fn with_path(socket_path: impl Into<PathBuf>) -> Self {
        Self {
            socket_path: socket_path.into(),
            ..Self::default()
        }
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The path does not fit in `sockaddr_un`.
    #[error("RPC socket path {0} is too long (at most {MAX_SUN_PATH} bytes)")]
    PathTooLong(PathBuf),
    /// Another live server owns the path.
    #[error("RPC socket {0} is in use by another server; specify another path")]
    InUse(PathBuf),
    /// Something that is not a socket is in the way.
    #[error("{0} exists and is not a socket; refusing to remove it")]
    NotASocket(PathBuf),
    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ServerError {
    let context = context.into();
    move |source| ServerError::Io { context, source }
}

/// State shared by the accept loop, the connection threads and the shutdown handles.
#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    /// Written to by [`ShutdownHandle::shutdown`] to wake the accept loop's `poll`.
    wake_tx: UnixStream,
    /// Clones of the client sockets, to close them at shutdown.
    conns: Mutex<HashMap<u64, UnixStream>>,
    next_conn: AtomicU64,
}

/// Stops a server from any thread; cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// Asks the server to stop (idempotent, non-blocking).
    pub fn shutdown(&self) {
        if !self.shared.stop.swap(true, Ordering::AcqRel) {
            // The wake socket is non-blocking; a full buffer already means "wake up".
            let _ = (&self.shared.wake_tx).write(&[1]);
        }
    }

    /// True once [`ShutdownHandle::shutdown`] has been called.
    #[must_use]
    pub fn is_shutdown(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire)
    }
}

/// Owns the socket and lock files; removes them when dropped.
#[derive(Debug)]
struct SocketFiles {
    socket_path: PathBuf,
    lock_path: PathBuf,
    _lock: File,
}

impl Drop for SocketFiles {
    fn drop(&mut self) {
        // Remove the socket before releasing the lock (closing `_lock` after this body).
        let _ = fs::remove_file(&self.socket_path);
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// A bound server, not yet accepting; see the [module documentation](self).
pub struct RpcServer<C> {
    listener: UnixListener,
    wake_rx: UnixStream,
    files: SocketFiles,
    config: ServerConfig,
    registry: Arc<Registry<C>>,
    ctx: Arc<C>,
    shared: Arc<Shared>,
}

/// A server running on its own thread.
#[derive(Debug)]
pub struct RunningServer {
    handle: ShutdownHandle,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

impl RunningServer {
    /// A handle to stop the server.
    #[must_use]
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Stops the server and waits for it.
    ///
    /// # Errors
    /// What the accept loop failed with, if it failed.
    pub fn shutdown(mut self) -> Result<(), ServerError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), ServerError> {
        self.handle.shutdown();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(ServerError::Io {
                context: "RPC server thread".to_owned(),
                source: io::Error::other("panicked"),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// Locks `<path>.lock`, clears a stale socket, and binds `path` with mode 0600.
fn bind_socket(path: &Path) -> Result<(UnixListener, SocketFiles), ServerError> {
    if path.as_os_str().len() > MAX_SUN_PATH {
        return Err(ServerError::PathTooLong(path.to_owned()));
    }
    let mut lock_name = path.as_os_str().to_owned();
    lock_name.push(".lock");
    let lock_path = PathBuf::from(lock_name);
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io_err(format!(
            "cannot open lock file {}",
            lock_path.display()
        )))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Err(ServerError::InUse(path.to_owned())),
        Err(fs::TryLockError::Error(e)) => {
            return Err(io_err(format!("cannot lock {}", lock_path.display()))(e));
        }
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(ServerError::InUse(path.to_owned()));
            }
            tracing::info!(path = %path.display(), "removing stale RPC socket");
            fs::remove_file(path).map_err(io_err(format!("cannot remove {}", path.display())))?;
        }
        Ok(_) => return Err(ServerError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(format!("cannot stat {}", path.display()))(e)),
    }
    let listener = bind_private(path)?;
    let files = SocketFiles {
        socket_path: path.to_owned(),
        lock_path,
        _lock: lock,
    };
    Ok((listener, files))
}

/// Binds `path` so that it never exists with a mode more open than 0600.
fn bind_private(path: &Path) -> Result<UnixListener, ServerError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp_dir = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    let tmp_sock = tmp_dir.join("s");
    if tmp_sock.as_os_str().len() > MAX_SUN_PATH {
        // No room for the private directory: bind in place and restrict at once.
        tracing::warn!(path = %path.display(), "socket path too long for a private bind");
        let listener =
            UnixListener::bind(path).map_err(io_err(format!("cannot bind {}", path.display())))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(io_err(format!("cannot chmod {}", path.display())))?;
        return Ok(listener);
    }
    if tmp_dir.exists() {
        fs::remove_dir_all(&tmp_dir)
            .map_err(io_err(format!("cannot remove {}", tmp_dir.display())))?;
    }
    DirBuilder::new()
        .mode(0o700)
        .create(&tmp_dir)
        .map_err(io_err(format!("cannot create {}", tmp_dir.display())))?;
    let result = (|| {
        let listener = UnixListener::bind(&tmp_sock)
            .map_err(io_err(format!("cannot bind {}", path.display())))?;
        fs::set_permissions(&tmp_sock, fs::Permissions::from_mode(0o600))
            .map_err(io_err(format!("cannot chmod {}", tmp_sock.display())))?;
        fs::rename(&tmp_sock, path)
            .map_err(io_err(format!("cannot move socket to {}", path.display())))?;
        Ok(listener)
    })();
    let _ = fs::remove_file(&tmp_sock);
    let _ = fs::remove_dir(&tmp_dir);
    result
}

/// Waits until the listener or the wake socket is readable.
pub(super) fn wait_readable(listener: &impl AsRawFd, wake: &impl AsRawFd) -> io::Result<()> {
    let mut fds = [
        libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is an initialised array of exactly 2 `pollfd` that outlives the call
        // and the count passed is its length; both descriptors belong to `listener` and `wake`
        // (socket objects that own their descriptors),
        // which are borrowed for the whole call and so stay open.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

impl<C: Send + Sync + 'static> RpcServer<C> {
    /// Binds the socket (see the [module documentation](self)); nothing is accepted until
    /// [`RpcServer::run`] or [`RpcServer::spawn`].
    ///
    /// # Errors
    /// [`ServerError::InUse`] if another server owns the path, [`ServerError::NotASocket`] if
    /// a non-socket file is in the way, [`ServerError::PathTooLong`], or an I/O error.
    pub fn bind(
        config: ServerConfig,
        registry: Arc<Registry<C>>,
        ctx: Arc<C>,
    ) -> Result<Self, ServerError> {
        let (listener, files) = bind_socket(&config.socket_path)?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("cannot make the RPC listener non-blocking"))?;
        let (wake_tx, wake_rx) = UnixStream::pair().map_err(io_err("socketpair"))?;
        wake_tx
            .set_nonblocking(true)
            .map_err(io_err("cannot make the wake socket non-blocking"))?;
        tracing::info!(path = %config.socket_path.display(), "RPC server listening");
        Ok(Self {
            listener,
            wake_rx,
            files,
            config,
            registry,
            ctx,
            shared: Arc::new(Shared {
                stop: AtomicBool::new(false),
                wake_tx,
                conns: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(0),
            }),
        })
    }

    /// The socket path.
    #[must_use]
    pub fn socket_path(&self) -> &Path {
        &self.files.socket_path
    }

    /// A handle that stops [`RpcServer::run`].
    #[must_use]
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Runs the server on a new thread.
    ///
    /// # Errors
    /// If the thread cannot be spawned.
    pub fn spawn(self) -> Result<RunningServer, ServerError> {
        let handle = self.shutdown_handle();
        let thread = std::thread::Builder::new()
            .name("rpc-accept".to_owned())
            .spawn(move || self.run())
            .map_err(io_err("cannot spawn the RPC server thread"))?;
        Ok(RunningServer {
            handle,
            thread: Some(thread),
        })
    }

    /// Accepts and serves clients until [`ShutdownHandle::shutdown`]; then closes every
    /// connection, joins the client threads and removes the socket and lock files.
    ///
    /// # Errors
    /// If waiting for connections fails.
    pub fn run(self) -> Result<(), ServerError> {
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        let result = self.accept_loop(&mut threads);
        for (_, stream) in self
            .shared
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
        {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        for t in threads {
            let _ = t.join();
        }
        tracing::info!(path = %self.files.socket_path.display(), "RPC server stopped");
        drop(self.files);
        result
    }

    fn accept_loop(&self, threads: &mut Vec<JoinHandle<()>>) -> Result<(), ServerError> {
        while !self.shared.stop.load(Ordering::Acquire) {
            wait_readable(&self.listener, &self.wake_rx)
                .map_err(io_err("waiting for RPC connections"))?;
            threads.retain(|t| !t.is_finished());
            loop {
                if self.shared.stop.load(Ordering::Acquire) {
                    return Ok(());
                }
                match self.listener.accept() {
                    Ok((stream, _)) => self.start_connection(stream, threads),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // ECONNABORTED, EMFILE...: log and keep serving the others.
                        tracing::warn!(error = %e, "accepting an RPC connection failed");
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn start_connection(&self, stream: UnixStream, threads: &mut Vec<JoinHandle<()>>) {
        let live = self
            .shared
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        if live >= self.config.max_connections {
            tracing::warn!(
                limit = self.config.max_connections,
                "too many RPC clients; closing a new connection"
            );
            return;
        }
        let setup = stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)))
            .and_then(|()| stream.try_clone());
        let clone = match setup {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot set up an RPC connection");
                return;
            }
        };
        let id = self.shared.next_conn.fetch_add(1, Ordering::Relaxed);
        self.shared
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, clone);
        let shared = Arc::clone(&self.shared);
        let registry = Arc::clone(&self.registry);
        let ctx = Arc::clone(&self.ctx);
        let max = self.config.max_request_bytes;
        let spawned = std::thread::Builder::new()
            .name("rpc-conn".to_owned())
            .spawn(move || {
                serve_connection(&stream, &registry, &ctx, Deframer::new(max));
                shared
                    .conns
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                tracing::warn!(error = %e, "cannot spawn an RPC connection thread");
                self.shared
                    .conns
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
            }
        }
    }
}

/// Writes one response followed by `"\n"`.
pub(super) fn write_response<S>(stream: &S, response: &Value) -> io::Result<()>
where
    for<'a> &'a S: Write,
{
    let mut bytes = serde_json::to_vec(response).map_err(io::Error::other)?;
    bytes.push(b'\n');
    let mut w = stream;
    w.write_all(&bytes)
}

/// Serves one client until it closes, breaks the framing, or the server shuts down.
/// `deframer` may already hold bytes received (after a TCP client's authentication).
pub(super) fn serve_connection<C, S>(
    stream: &S,
    registry: &Registry<C>,
    ctx: &C,
    mut deframer: Deframer,
) where
    for<'a> &'a S: Read + Write,
{
    let mut chunk = vec![0u8; 64 * 1024];
    let mut reader = stream;
    loop {
        loop {
            let fatal = match deframer.next_value() {
                Ok(Some(message)) => {
                    if let Some(response) = registry.handle_message(ctx, message)
                        && let Err(e) = write_response(stream, &response)
                    {
                        tracing::debug!(error = %e, "RPC connection write failed");
                        return;
                    }
                    continue;
                }
                Ok(None) => break,
                Err(DeframeError::Syntax(msg)) => RpcError::parse_error(msg),
                Err(e @ DeframeError::TooLarge { .. }) => RpcError::invalid_request(e),
            };
            tracing::warn!(error = %fatal, "closing RPC connection");
            let _ = write_response(stream, &error_response(Value::Null, &fatal));
            return;
        }
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(error = %e, "RPC connection read failed");
                return;
            }
        };
        deframer.push(chunk.get(..n).unwrap_or_default());
    }
    if deframer.has_partial_value() {
        tracing::debug!("RPC client closed the connection in the middle of a request");
    }
}
