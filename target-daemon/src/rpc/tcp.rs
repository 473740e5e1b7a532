//! JSON-RPC over TCP, for the control plane on other machines (SPDK serves its RPC on
//! `-r host:port` the same way), never open without authentication off loopback.
//!
//! The methods, framing and limits are the Unix socket's ([`super::server`]); what differs is
//! who may talk:
//!
//! * A listener with an [`AuthToken`]: the first JSON value a client sends must be the request
//!   `{"method": "rpc_auth", "params": {"token": "..."}}`, within [`AUTH_TIMEOUT`] and at most
//!   [`AUTH_MAX_BYTES`] long. The server answers `true` and then serves the connection as the
//!   Unix socket does. Anything else (another method, a wrong token, bytes that are not JSON, a
//!   notification, silence) gets one error response with code [`AUTH_FAILED`] and the
//!   connection is closed: no method runs and nothing about the daemon is said.
//! * A listener without a token is allowed only on a loopback address
//!   ([`super::auth::check_listen_address`], checked before the socket is opened). An
//!   `rpc_auth` sent first there is answered `true` without looking at the token, so one client
//!   works against both kinds.
//!
//! [`AUTH_FAILED`]: super::error::AUTH_FAILED

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use super::auth::{AuthError, AuthToken, check_listen_address};
use super::dispatch::{Registry, error_response, result_response};
use super::error::RpcError;
use super::framing::Deframer;
use super::server::{
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_REQUEST_BYTES, ServerError, serve_connection,
    wait_readable, write_response,
};

/// The method a TCP client authenticates with.
pub const AUTH_METHOD: &str = "rpc_auth";
/// How long a new TCP client has to send its `rpc_auth` request.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest first request of a client that has not authenticated yet.
pub const AUTH_MAX_BYTES: usize = 4096;
/// A client that does not read its responses for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of a TCP listener.
#[derive(Debug, Clone)]
pub struct TcpServerConfig {
    /// Address to listen on (port 0: any free port; see [`TcpRpcServer::local_addr`]).
    pub listen: SocketAddr,
    /// The token clients must present; `None` only on a loopback address.
    pub token: Option<AuthToken>,
    /// Largest request accepted after authentication, in bytes.
    pub max_request_bytes: usize,
    /// Most clients at once, authenticated or not; further connections are closed at once.
    pub max_connections: usize,
}

impl TcpServerConfig {
    /// Defaults for `listen` with `token`.
    #[must_use]
    pub fn new(listen: SocketAddr, token: Option<AuthToken>) -> Self {
        Self {
            listen,
            token,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Why a TCP listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum TcpServerError {
    /// A non-loopback address without a token.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Binding or setting up the socket failed.
    #[error(transparent)]
    Server(#[from] ServerError),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ServerError {
    let context = context.into();
    move |source| ServerError::Io { context, source }
}

struct Shared {
    stop: AtomicBool,
    wake_tx: UnixStream,
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
}

/// Stops a [`TcpRpcServer`] from any thread.
#[derive(Clone)]
pub struct TcpShutdownHandle {
    shared: Arc<Shared>,
}

impl TcpShutdownHandle {
    /// Asks the server to stop (idempotent, non-blocking).
    pub fn shutdown(&self) {
        if !self.shared.stop.swap(true, Ordering::AcqRel) {
            let _ = (&self.shared.wake_tx).write(&[1]);
        }
    }
}

/// A bound TCP listener; see the [module documentation](self).
pub struct TcpRpcServer<C> {
    listener: TcpListener,
    wake_rx: UnixStream,
    local_addr: SocketAddr,
    config: TcpServerConfig,
    registry: Arc<Registry<C>>,
    ctx: Arc<C>,
    shared: Arc<Shared>,
}

impl<C: Send + Sync + 'static> TcpRpcServer<C> {
    /// Checks the address against the token, then binds.
    ///
    /// # Errors
    /// [`TcpServerError::Auth`] for a non-loopback address without a token (nothing is
    /// opened), or the bind's error.
    pub fn bind(
        config: TcpServerConfig,
        registry: Arc<Registry<C>>,
        ctx: Arc<C>,
    ) -> Result<Self, TcpServerError> {
        check_listen_address(config.listen, config.token.as_ref())?;
        let listener = TcpListener::bind(config.listen)
            .map_err(io_err(format!("cannot listen on {}", config.listen)))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("cannot make the RPC listener non-blocking"))?;
        let local_addr = listener
            .local_addr()
            .map_err(io_err("cannot read the RPC listener's address"))?;
        let (wake_tx, wake_rx) = UnixStream::pair().map_err(io_err("socketpair"))?;
        wake_tx
            .set_nonblocking(true)
            .map_err(io_err("cannot make the wake socket non-blocking"))?;
        tracing::info!(
            addr = %local_addr,
            auth = if config.token.is_some() { "token" } else { "none (loopback)" },
            "RPC TCP listener"
        );
        Ok(Self {
            listener,
            wake_rx,
            local_addr,
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

    /// The address bound (with the port chosen when 0 was asked for).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops [`TcpRpcServer::run`].
    #[must_use]
    pub fn shutdown_handle(&self) -> TcpShutdownHandle {
        TcpShutdownHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Serves clients until [`TcpShutdownHandle::shutdown`], then closes every connection and
    /// joins their threads.
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
        tracing::info!(addr = %self.local_addr, "RPC TCP listener stopped");
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
                    Ok((stream, peer)) => self.start_connection(stream, peer, threads),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting an RPC connection failed");
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn start_connection(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        threads: &mut Vec<JoinHandle<()>>,
    ) {
        let mut conns = self
            .shared
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if conns.len() >= self.config.max_connections {
            tracing::warn!(%peer, limit = self.config.max_connections, "too many RPC clients");
            return;
        }
        let setup = stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)))
            .and_then(|()| stream.set_nodelay(true))
            .and_then(|()| stream.try_clone());
        let clone = match setup {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot set up an RPC connection");
                return;
            }
        };
        let id = self.shared.next_conn.fetch_add(1, Ordering::Relaxed);
        conns.insert(id, clone);
        drop(conns);
        let shared = Arc::clone(&self.shared);
        let registry = Arc::clone(&self.registry);
        let ctx = Arc::clone(&self.ctx);
        let token = self.config.token.clone();
        let max = self.config.max_request_bytes;
        let spawned = std::thread::Builder::new()
            .name("rpc-tcp".to_owned())
            .spawn(move || {
                match authenticate(&stream, token.as_ref(), max) {
                    Admission::Serve { deframer, pending } => {
                        let answered = pending
                            .and_then(|first| registry.handle_message(&ctx, first))
                            .is_none_or(|response| write_response(&stream, &response).is_ok());
                        if answered {
                            serve_connection(&stream, &registry, &ctx, deframer);
                        }
                    }
                    Admission::Refused => {
                        tracing::warn!(%peer, "RPC client did not authenticate; closed");
                    }
                }
                let _ = stream.shutdown(std::net::Shutdown::Both);
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

/// What the first message of a connection asks.
enum FirstMessage {
    /// `rpc_auth` with a token (and the request's id, if any).
    Auth { id: Option<Value>, token: String },
    /// Anything else.
    Other,
}

fn classify(message: &Value) -> FirstMessage {
    let is_auth = message.get("method").and_then(Value::as_str) == Some(AUTH_METHOD);
    let token = message
        .get("params")
        .and_then(|p| p.get("token"))
        .and_then(Value::as_str);
    match (is_auth, token) {
        (true, Some(token)) => FirstMessage::Auth {
            id: message.get("id").cloned(),
            token: token.to_owned(),
        },
        _ => FirstMessage::Other,
    }
}

/// Reads the first JSON value within [`AUTH_TIMEOUT`] and [`AUTH_MAX_BYTES`].
fn read_first(stream: &TcpStream, deframer: &mut Deframer) -> Result<Value, String> {
    let mut chunk = [0u8; 4096];
    let mut reader = stream;
    loop {
        match deframer.next_value() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        match reader.read(&mut chunk) {
            Ok(0) => return Err("connection closed".to_owned()),
            Ok(n) => deframer.push(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("no rpc_auth within {AUTH_TIMEOUT:?}"));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// What the authentication step decided.
enum Admission {
    /// Serve the connection: the deframer holds what followed the first message, and
    /// `pending` is a first message that still has to be dispatched (loopback without a
    /// token, where the first message need not be `rpc_auth`).
    Serve {
        deframer: Deframer,
        pending: Option<Value>,
    },
    /// Refused and answered; close.
    Refused,
}

/// Runs the authentication step (see the [module documentation](self)).
fn authenticate(stream: &TcpStream, token: Option<&AuthToken>, max: usize) -> Admission {
    let Some(token) = token else {
        let mut deframer = Deframer::new(max);
        let Ok(first) = read_first(stream, &mut deframer) else {
            return Admission::Refused;
        };
        let pending = match classify(&first) {
            FirstMessage::Auth { id, .. } => {
                if respond_auth_ok(stream, id).is_err() {
                    return Admission::Refused;
                }
                None
            }
            FirstMessage::Other => Some(first),
        };
        return Admission::Serve { deframer, pending };
    };
    let mut deframer = Deframer::new(AUTH_MAX_BYTES);
    let refusal = match stream.set_read_timeout(Some(AUTH_TIMEOUT)) {
        Err(e) => e.to_string(),
        Ok(()) => match read_first(stream, &mut deframer) {
            Err(e) => e,
            Ok(first) => match classify(&first) {
                FirstMessage::Auth { id, token: t } if token.verify(t.as_bytes()) => {
                    if stream.set_read_timeout(None).is_err()
                        || respond_auth_ok(stream, id).is_err()
                    {
                        return Admission::Refused;
                    }
                    deframer.set_max_value_bytes(max);
                    return Admission::Serve {
                        deframer,
                        pending: None,
                    };
                }
                FirstMessage::Auth { .. } => "wrong token".to_owned(),
                FirstMessage::Other => format!("send {AUTH_METHOD} with the node's token first"),
            },
        },
    };
    tracing::debug!(reason = %refusal, "RPC authentication refused");
    // The id is not echoed: nothing the client sent is reflected before it authenticated.
    let _ = write_response(
        stream,
        &error_response(Value::Null, &RpcError::auth_failed(refusal)),
    );
    Admission::Refused
}

fn respond_auth_ok(stream: &TcpStream, id: Option<Value>) -> io::Result<()> {
    match id {
        Some(id) => write_response(stream, &result_response(id, Value::Bool(true))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_refuses_an_open_address_before_opening_a_socket() {
        let registry = Arc::new(Registry::<()>::new());
        for addr in ["0.0.0.0:0", "[::]:0"] {
            let config = TcpServerConfig::new(addr.parse().unwrap(), None);
            let err = TcpRpcServer::bind(config, Arc::clone(&registry), Arc::new(()));
            assert!(matches!(
                err,
                Err(TcpServerError::Auth(AuthError::OpenListener(_)))
            ));
        }
        let token = AuthToken::new(&[b'k'; 32]).unwrap();
        let config = TcpServerConfig::new("127.0.0.1:0".parse().unwrap(), Some(token));
        let server = TcpRpcServer::bind(config, registry, Arc::new(())).unwrap();
        assert!(server.local_addr().ip().is_loopback());
    }
}
