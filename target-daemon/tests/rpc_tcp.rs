//! JSON-RPC over TCP against the real `shoald`: nothing is served before `rpc_auth` with the
//! right token, and a daemon that would listen off loopback without a token does not start.

mod shoalctl_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoalctl_common::{Shoald, TempDir};

const TOKEN: &str = "s3cr3t-t0ken-for-the-tcp-rpc-test";
/// `shoal_target::rpc::error::AUTH_FAILED`.
const AUTH_FAILED: i64 = -32001;

fn write_token(dir: &Path, token: &str, mode: u32) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// Waits for the "JSON-RPC on tcp ADDR" line of the daemon's log.
fn tcp_addr(d: &Shoald) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = d.log_text();
        if let Some(rest) = log.split("JSON-RPC on tcp ").nth(1) {
            let addr = rest.split_whitespace().next().unwrap();
            return addr.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no TCP listener: {log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `bytes`, then reads every JSON value until the server closes (or `wait` passes).
fn exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> (Vec<Value>, bool) {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = loop {
        match s.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset) => break true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("read after {:?}: {e}", t0.elapsed());
                break false;
            }
        }
    };
    let values = serde_json::Deserializer::from_slice(&buf)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect();
    (values, closed)
}

fn req(id: u64, method: &str, params: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
        .unwrap()
}

fn auth(token: &str) -> Vec<u8> {
    req(1, "rpc_auth", json!({ "token": token }))
}

fn assert_refused(values: &[Value], closed: bool, what: &str) {
    assert_eq!(
        values.len(),
        1,
        "{what}: exactly one answer, got {values:?}"
    );
    assert_eq!(
        values[0]["error"]["code"], AUTH_FAILED,
        "{what}: {values:?}"
    );
    assert_eq!(values[0]["id"], Value::Null, "{what}: the id is not echoed");
    assert!(values[0].get("result").is_none(), "{what}");
    assert!(closed, "{what}: the server must close the connection");
}

fn start_with_token(dir: &TempDir) -> (Shoald, SocketAddr) {
    let token = write_token(dir.path(), TOKEN, 0o600);
    let d = Shoald::start_with(
        dir.path(),
        &[
            "--empty",
            "--rpc-listen",
            "127.0.0.1:0",
            "--rpc-token-file",
            token.to_str().unwrap(),
        ],
    );
    let addr = tcp_addr(&d);
    (d, addr)
}

#[test]
fn nothing_is_served_before_rpc_auth_with_the_token() {
    let dir = TempDir::new("rpc-tcp-auth");
    let (_d, addr) = start_with_token(&dir);
    let quick = Duration::from_secs(10);

    // A request that would change state, sent without authenticating: refused, and not run.
    let create = req(
        7,
        "bdev_malloc_create",
        json!({"name": "intruder", "num_blocks": 256, "block_size": 512}),
    );
    let (v, closed) = exchange(addr, &create, quick);
    assert_refused(&v, closed, "no rpc_auth");

    let mut wrong = auth("s3cr3t-t0ken-for-the-tcp-rpc-tesT");
    wrong.extend_from_slice(&create);
    let (v, closed) = exchange(addr, &wrong, quick);
    assert_refused(&v, closed, "wrong token");

    let (v, closed) = exchange(addr, &auth("short"), quick);
    assert_refused(&v, closed, "short token");

    let (v, closed) = exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", quick);
    assert_refused(&v, closed, "not JSON");

    let notification =
        br#"{"jsonrpc":"2.0","method":"rpc_auth","params":{"token":"nope-nope-nope-nope"}}"#;
    let (v, closed) = exchange(addr, notification, quick);
    assert_refused(&v, closed, "notification with a wrong token");

    let mut big =
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rpc_auth\",\"params\":{\"pad\":\"".to_vec();
    big.extend(std::iter::repeat_n(b'a', 8192));
    let (v, closed) = exchange(addr, &big, quick);
    assert_refused(&v, closed, "oversized first request");

    // The right token, with the next requests in the same write: answered in order.
    let mut ok = auth(TOKEN);
    ok.extend_from_slice(&req(2, "bdev_get_bdevs", json!({})));
    ok.extend_from_slice(&req(3, "spdk_get_version", json!({})));
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&ok).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let v: Vec<Value> = serde_json::Deserializer::from_slice(&buf)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(v.len(), 3, "{v:?}");
    assert_eq!(v[0]["result"], true);
    assert_eq!(v[1]["id"], 2);
    assert_eq!(
        v[1]["result"],
        json!([]),
        "the refused bdev_malloc_create never ran"
    );
    assert_eq!(v[2]["id"], 3);
    assert!(v[2]["result"]["version"].is_string(), "{v:?}");
}

#[test]
fn a_silent_client_is_dropped_after_the_auth_timeout() {
    let dir = TempDir::new("rpc-tcp-silent");
    let (_d, addr) = start_with_token(&dir);
    let t0 = Instant::now();
    let (v, closed) = exchange(addr, b"", Duration::from_secs(15));
    assert_refused(&v, closed, "silence");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
}

#[test]
fn loopback_without_a_token_serves_and_accepts_rpc_auth() {
    let dir = TempDir::new("rpc-tcp-open");
    let d = Shoald::start_with(dir.path(), &["--empty", "--rpc-listen", "127.0.0.1:0"]);
    let addr = tcp_addr(&d);
    let (v, _) = exchange(
        addr,
        &req(5, "spdk_get_version", json!({})),
        Duration::from_secs(2),
    );
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0]["id"], 5);
    assert!(v[0]["result"]["version"].is_string());
    let mut both = auth("whatever-the-client-has-here");
    both.extend_from_slice(&req(6, "bdev_get_bdevs", json!({})));
    let (v, _) = exchange(addr, &both, Duration::from_secs(2));
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[0]["result"], true);
    assert_eq!(v[1]["result"], json!([]));
}

fn shoald_fails(dir: &TempDir, args: &[&str]) -> String {
    let socket = dir.path().join("shoal.sock");
    let stderr = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoald"))
        .arg("-r")
        .arg(&socket)
        .args(["--empty"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shoald started with {args:?}; it must refuse");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "shoald must refuse to start");
    assert!(!socket.exists(), "nothing may be served before the check");
    std::fs::read_to_string(&stderr).unwrap()
}

#[test]
fn shoald_refuses_to_listen_off_loopback_without_a_token() {
    let dir = TempDir::new("rpc-tcp-refuse");
    let err = shoald_fails(&dir, &["--rpc-listen", "0.0.0.0:0"]);
    assert!(err.contains("without authentication"), "{err}");
    let err = shoald_fails(&dir, &["--rpc-listen", "[::]:0"]);
    assert!(err.contains("not a loopback address"), "{err}");
}

#[test]
fn shoald_refuses_a_token_file_others_can_read_or_a_short_token() {
    let dir = TempDir::new("rpc-tcp-badtoken");
    let readable = write_token(dir.path(), TOKEN, 0o644);
    let err = shoald_fails(
        &dir,
        &[
            "--rpc-listen",
            "127.0.0.1:0",
            "--rpc-token-file",
            readable.to_str().unwrap(),
        ],
    );
    assert!(err.contains("chmod 600"), "{err}");
    let short = write_token(dir.path(), "abc", 0o600);
    let err = shoald_fails(
        &dir,
        &[
            "--rpc-listen",
            "127.0.0.1:0",
            "--rpc-token-file",
            short.to_str().unwrap(),
        ],
    );
    assert!(err.contains("must have 16"), "{err}");
}
