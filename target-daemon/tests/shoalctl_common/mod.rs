//! Runs the real `shoald` binary in a temp dir, for the `shoalctl` and `rpc.py` tests.
#![allow(dead_code, missing_docs)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("shoal-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A running `shoald`; killed on drop if still running.
pub struct Shoald {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Shoald {
    /// Starts `shoald -r <dir>/shoal.sock` with the default config on free ports (returned:
    /// the NVMe port and the discovery port), and waits for its RPC socket.
    pub fn start(dir: &Path) -> (Shoald, u16, u16) {
        let (p1, p2) = (free_port(), free_port());
        let config = include_str!("../../config/default.json")
            .replace("\"4420\"", &format!("\"{p1}\""))
            .replace("\"8009\"", &format!("\"{p2}\""));
        let cfg = dir.join("config.json");
        std::fs::write(&cfg, config).expect("write config");
        (
            Shoald::start_with(dir, &["-c", cfg.to_str().expect("utf-8")]),
            p1,
            p2,
        )
    }

    /// Starts `shoald -r <dir>/shoal.sock` with extra arguments.
    pub fn start_with(dir: &Path, args: &[&str]) -> Shoald {
        let socket = dir.join("shoal.sock");
        let log = dir.join("shoald.log");
        let child = Command::new(env!("CARGO_BIN_EXE_shoald"))
            .arg("-r")
            .arg(&socket)
            .args(args)
            .env("SHOAL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn shoald");
        let mut d = Shoald { child, socket, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&d.socket).is_err() {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("shoald exited with {status}: {}", d.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "shoald did not start: {}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped yet (so the
        // PID cannot have been reused); it touches no memory.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits for the daemon to exit.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "shoald did not exit: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Shoald {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `shoalctl -s <socket> args...`.
pub fn shoalctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoalctl"))
        .arg("-s")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run shoalctl")
}

/// Runs a command that must succeed; returns its stdout.
#[track_caller]
pub fn ok(socket: &Path, args: &[&str]) -> String {
    let out = shoalctl(socket, args);
    assert!(
        out.status.success(),
        "shoalctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Runs a command that must fail; returns its one-line error.
#[track_caller]
pub fn fails(socket: &Path, args: &[&str]) -> String {
    let out = shoalctl(socket, args);
    assert_eq!(out.status.code(), Some(1), "shoalctl {args:?} should fail");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).expect("utf-8");
    assert!(err.starts_with("shoalctl: "), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}
