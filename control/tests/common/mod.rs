//! Real processes for the control plane's tests: an etcd on a loopback address of its own,
//! `shoald` nodes, agents and `shoal-control` instances, each killed on drop.
//!
//! Every test cluster takes its own 127.x.y.0/24 slice of the loopback range (chosen from
//! the PID, a counter and the clock), so fixed well-known ports never clash with another test
//! or another helper's run on the same machine.
#![allow(dead_code, missing_docs)]

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "cluster-token-for-the-control-tests";

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("shoal-ctl-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh 127.a.b.0/24 slice: `ip(n)` is 127.a.b.n.
#[derive(Clone, Copy)]
pub struct Slice(u8, u8);

impl Slice {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let mut x = std::process::id()
            .wrapping_mul(2_654_435_761)
            .wrapping_add(N.fetch_add(1, Ordering::Relaxed).wrapping_mul(40_503))
            .wrapping_add(nanos);
        x ^= x >> 13;
        // 127.100.0.0 .. 127.249.255.0: clear of 127.0.0.x, which other tests use.
        let [_, b, _, a] = x.to_le_bytes();
        Self(100 + a % 150, b)
    }

    pub fn ip(self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, self.0, self.1, n)
    }

    pub fn addr(self, n: u8, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip(n), port))
    }
}

/// A child process killed (SIGKILL) on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, dir: &Path, cmd: &mut Command) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join(format!("{name}.out"))).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child,
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn assert_running(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("{} exited with {st}: {}", self.name, self.log_text());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, self.log_text());
        }
    }
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    t0.elapsed()
}

fn port_open(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// A one-member etcd on `slice.ip(1)`:2379 with its data in `dir`.
pub fn start_etcd(slice: Slice, dir: &Path) -> (Proc, String) {
    let ip = slice.ip(1);
    let client = format!("http://{ip}:2379");
    let peer = format!("http://{ip}:2380");
    let data = dir.join("etcd-data");
    let mut etcd = Proc::spawn(
        "etcd",
        dir,
        Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(&data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("t={peer}")])
            .args(["--logger", "zap", "--log-level", "warn"]),
    );
    wait_for("etcd", Duration::from_secs(20), || {
        etcd.assert_running();
        port_open(slice.addr(1, 2379))
    });
    (etcd, client)
}

fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// `shoald` of this build ((re)built once per test binary: `cargo test -p shoal-control`
/// does not build other packages' binaries).
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
            .unwrap();
        assert!(
            st.success(),
            "cargo build -p shoal-target --bin shoald failed"
        );
        dir.join("shoald")
    })
    .clone()
}

pub fn token_file(dir: &Path) -> PathBuf {
    let p = dir.join("token");
    if !p.exists() {
        std::fs::write(&p, format!("{TOKEN}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    p
}

/// A node: `shoald` with JSON-RPC on `ip(n)`:5260 (token) and its agent.
pub struct Node {
    pub id: String,
    pub shoald: Proc,
    pub agent: Proc,
    pub rpc: SocketAddr,
}

pub fn start_node(slice: Slice, n: u8, zone: &str, etcd: &str, dir: &Path, ttl: u32) -> Node {
    let id = format!("node-{n}");
    let rpc = slice.addr(n, 5260);
    let token = token_file(dir);
    let mut shoald = Proc::spawn(
        &format!("shoald-{n}"),
        dir,
        Command::new(shoald_bin())
            .arg("-r")
            .arg(dir.join(format!("shoald-{n}.sock")))
            .args([
                "--empty",
                "--rpc-listen",
                &rpc.to_string(),
                "--rpc-token-file",
            ])
            .arg(&token),
    );
    wait_for("shoald's TCP RPC", Duration::from_secs(20), || {
        shoald.assert_running();
        port_open(rpc)
    });
    let agent = Proc::spawn(
        &format!("agent-{n}"),
        dir,
        Command::new(env!("CARGO_BIN_EXE_shoal-agent"))
            .args(["--etcd", etcd, "--node-id", &id])
            .args(["--nvmf-addr", &slice.addr(n, 4420).to_string()])
            .args(["--rpc-endpoint", &rpc.to_string(), "--rpc-token-file"])
            .arg(&token)
            .args(["--label", &format!("zone={zone}")])
            .args(["--lease-ttl", &ttl.to_string()]),
    );
    Node {
        id,
        shoald,
        agent,
        rpc,
    }
}

/// `shoal-control serve` on `ip(n)`:8080.
pub fn start_control(slice: Slice, n: u8, etcd: &str, dir: &Path, ttl: u32) -> (Proc, String) {
    start_control_with(slice, n, etcd, dir, ttl, &[])
}

/// `shoal-control serve` on `ip(n)`:8080 with more arguments.
pub fn start_control_with(
    slice: Slice,
    n: u8,
    etcd: &str,
    dir: &Path,
    ttl: u32,
    extra: &[&str],
) -> (Proc, String) {
    start_control_env(slice, n, etcd, dir, ttl, extra, &[])
}

/// `shoal-control serve` on `ip(n)`:8080 with more arguments and environment variables.
pub fn start_control_env(
    slice: Slice,
    n: u8,
    etcd: &str,
    dir: &Path,
    ttl: u32,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Proc, String) {
    let listen = slice.addr(n, 8080);
    let mut p = Proc::spawn(
        &format!("control-{n}"),
        dir,
        Command::new(env!("CARGO_BIN_EXE_shoal-control"))
            .args(["serve", "--etcd", etcd, "--listen", &listen.to_string()])
            .arg("--rpc-token-file")
            .arg(token_file(dir))
            .args([
                "--id",
                &format!("control-{n}"),
                "--lease-ttl",
                &ttl.to_string(),
            ])
            .args(extra)
            .envs(env.iter().copied()),
    );
    wait_for("shoal-control's API", Duration::from_secs(20), || {
        p.assert_running();
        port_open(listen)
    });
    (p, format!("http://{listen}"))
}

/// Runs `shoal-control --api URL --json ARGS` and parses its output.
pub fn ctl_json(api: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal-control"))
        .args(["--api", api, "--json"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shoal-control {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `shoal-control --api URL ARGS` and returns stdout.
pub fn ctl_text(api: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal-control"))
        .args(["--api", api])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A blocking HTTP call to the API: (status, JSON body or null).
pub fn http(method: &str, url: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = client.request(m, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        let v = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{method} {url}: {status}: not JSON ({e}): {bytes:?}"))
        };
        (status, v)
    })
}

/// One JSON-RPC call to a node's `shoald` (with the cluster token).
pub fn node_call(rpc: SocketAddr, method: &str, params: serde_json::Value) -> serde_json::Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(shoal_control::node_rpc::call_once(
        rpc,
        Some(TOKEN),
        Duration::from_secs(10),
        method,
        params,
    ))
    .unwrap_or_else(|e| panic!("{method} on {rpc}: {e}"))
}

/// A sparse file of `mib` MiB for a uring pool.
pub fn disk_file(dir: &Path, name: &str, mib: u64) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(mib << 20).unwrap();
    p
}

/// Declares a uring pool `pool` on each node (a file of `mib` MiB in `dir`) and waits until
/// they are all online.
pub fn add_pools(api: &str, dir: &Path, nodes: &[&Node], mib: u64) {
    for n in nodes {
        let disk = disk_file(dir, &format!("{}.img", n.id), mib);
        let (st, body) = http(
            "POST",
            &format!("{api}/v1/pools"),
            Some(
                serde_json::json!({"node": n.id, "name": "pool", "disk": format!("uring://{}", disk.display())}),
            ),
        );
        assert!(st == 201 || st == 200, "{st}: {body}");
    }
    wait_for("pools online", Duration::from_secs(20), || {
        let (_, b) = http("GET", &format!("{api}/v1/pools"), None);
        b["pools"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["state"] == "online")
            .count()
            == nodes.len()
    });
}
