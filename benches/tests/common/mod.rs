//! Helpers for the `shoal-perf` system tests: the real `shoald` binary with a generated SPDK
//! configuration, and `shoal-perf` runs with their exit status, stdout and stderr.
#![allow(dead_code, missing_docs)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const NQN: &str = "nqn.2016-06.io.shoal:perf";
pub const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:0badc0de-0000-4000-8000-000000000001";

/// The `target/<profile>` directory this test binary was built in.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_path_buf()
}

/// The `shoald` binary of this build. It is (re)built once per test binary with the same
/// profile and target directory: `cargo test -p shoal-benches` does not build other packages'
/// binaries, and a stale `shoald` would test old code. Under `cargo test --workspace` it is
/// already up to date and this costs a fingerprint check.
pub fn shoald_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = profile_dir();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "-p", "shoal-target", "--bin", "shoald"]);
        match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                cmd.arg("--release");
            }
            Some(profile) => {
                cmd.args(["--profile", profile]);
            }
        }
        if let Some(target) = dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        let st = cmd
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(
            st.success(),
            "cargo build -p shoal-target --bin shoald failed"
        );
        let bin = dir.join("shoald");
        assert!(bin.exists(), "{} missing", bin.display());
        bin
    })
    .clone()
}

/// `shoal-perf`, built with these tests.
pub fn perf_bin() -> &'static str {
    env!("CARGO_BIN_EXE_shoal-perf")
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The core `shoal-perf` runs on: 1 where there are two, else 0.
pub fn host_mask() -> &'static str {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
        "0x2"
    } else {
        "0x1"
    }
}

/// A bdev of the configuration.
pub enum Dev<'a> {
    Malloc { mib: u64 },
    Uring { path: &'a Path },
}

/// An SPDK JSON configuration: one bdev as namespace 1 of [`NQN`], listening on `port`; only
/// `hosts` may connect when given.
pub fn config(dev: &Dev, port: u16, hosts: Option<&[&str]>) -> String {
    let bdev = match dev {
        Dev::Malloc { mib } => json!({"method": "bdev_malloc_create",
            "params": {"name": "Dev0", "num_blocks": mib * 256, "block_size": 4096}}),
        Dev::Uring { path } => json!({"method": "bdev_uring_create",
            "params": {"name": "Dev0", "filename": path, "block_size": 4096}}),
    };
    let mut nvmf = vec![
        json!({"method": "nvmf_create_transport", "params": {"trtype": "TCP"}}),
        json!({"method": "nvmf_create_subsystem", "params": {"nqn": NQN,
            "allow_any_host": hosts.is_none(), "serial_number": "SHOALPERF0001"}}),
        json!({"method": "nvmf_subsystem_add_ns",
            "params": {"nqn": NQN, "namespace": {"bdev_name": "Dev0"}}}),
        json!({"method": "nvmf_subsystem_add_listener", "params": {"nqn": NQN,
            "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1",
                "trsvcid": port.to_string()}}}),
    ];
    for h in hosts.unwrap_or_default() {
        nvmf.push(json!({"method": "nvmf_subsystem_add_host",
            "params": {"nqn": NQN, "host": h}}));
    }
    json!({"subsystems": [
        {"subsystem": "bdev", "config": [bdev]},
        {"subsystem": "nvmf", "config": nvmf},
    ]})
    .to_string()
}

/// A running `shoald`, killed (SIGKILL) when dropped.
pub struct Shoald {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Shoald {
    /// Starts `shoald -m 0x1` on `config` in `dir` and waits until it accepts on `port`.
    pub fn start(dir: &Path, config: &str, port: u16) -> Shoald {
        let cfg = dir.join("shoald.json");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("shoald.log"))
            .unwrap();
        let child = Command::new(shoald_bin())
            .args(["-m", "0x1", "--log", "warn", "-c"])
            .arg(&cfg)
            .arg("-r")
            .arg(dir.join("rpc.sock"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start shoald");
        let mut d = Shoald {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("shoald exited ({st}): {}", d.log());
            }
            assert!(
                Instant::now() < deadline,
                "shoald did not listen: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("shoald.log")).unwrap_or_default()
    }

    /// Kills it as a crash would (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Shoald {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `-r` argument for namespace 1 of [`NQN`] on `port`.
pub fn trid(port: u16) -> String {
    format!("trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{port} subnqn:{NQN} ns:1")
}

/// A `shoal-perf` command with `args`, on the host core.
pub fn perf(args: &[&str]) -> Command {
    let mut c = Command::new(perf_bin());
    c.args(["-c", host_mask()]).args(args);
    c
}

/// Runs `shoal-perf` with `args` and a time limit.
pub fn run_perf(args: &[&str]) -> Output {
    let child = perf(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shoal-perf");
    wait_output(child, Duration::from_secs(60))
}

/// Waits for `child` (killing it after `limit`) and collects its output.
pub fn wait_output(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for shoal-perf"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("shoal-perf did not finish within {limit:?}");
        }
    }
}

/// The JSON document of a `--json` run.
pub fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Asserts a successful run and returns its JSON document.
pub fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "shoal-perf failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    json_of(out)
}

/// Asserts a failure with exactly one line on stderr, and returns it.
pub fn one_line_error(out: &Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("shoal-perf: "), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    err
}

/// A directory for a test's files, on a disk file system where there is one.
pub fn test_dir() -> tempfile::TempDir {
    let base = Path::new("/var/tmp");
    if base.is_dir() {
        tempfile::tempdir_in(base).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}
