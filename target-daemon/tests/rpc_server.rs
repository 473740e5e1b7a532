//! The RPC server over real Unix sockets: framing, error codes, permissions, concurrency,
//! start-up and shutdown.

mod rpc_common;

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rpc_common::{TempDir, client, start_server, start_server_with, test_registry};
use serde_json::{Value, json};
use shoal_target::rpc::{ClientError, RpcServer, ServerConfig, ServerError};

/// Reads every response until the server closes the connection.
fn read_all_responses(c: &mut shoal_target::rpc::RpcClient) -> (Vec<Value>, bool) {
    let mut out = Vec::new();
    loop {
        match c.read_response() {
            Ok(v) => out.push(v),
            Err(ClientError::Closed) => return (out, true),
            Err(e) => panic!("unexpected client error: {e}"),
        }
    }
}

fn error_code(resp: &Value) -> i64 {
    resp["error"]["code"].as_i64().expect("error response")
}

#[test]
fn socket_is_0600_and_removed_at_shutdown() {
    let dir = TempDir::new("rpc-mode");
    let (server, path, _) = start_server(&dir);
    let meta = std::fs::symlink_metadata(&path).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let lock = dir.path().join("rpc.sock.lock");
    assert_eq!(
        std::fs::metadata(&lock)
            .expect("lock file")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // No private bind directory is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");
    server.shutdown().expect("clean shutdown");
    assert!(!path.exists());
    assert!(!lock.exists());
}

#[test]
fn two_requests_in_one_write_and_one_request_split_over_writes() {
    let dir = TempDir::new("rpc-framing");
    let (_server, path, _) = start_server(&dir);
    let mut c = client(&path);
    // Exactly what rpc.py's flush() sends for two queued requests: indent=2, joined by "\n".
    let a = serde_json::to_string_pretty(&json!({"jsonrpc": "2.0", "method": "echo", "id": 1,
        "params": {"x": "}{"}}))
    .expect("json");
    let b = serde_json::to_string_pretty(&json!({"jsonrpc": "2.0", "method": "echo", "id": 2}))
        .expect("json");
    c.send_raw(format!("{a}\n{b}").as_bytes()).expect("send");
    let r1 = c.read_response().expect("first");
    let r2 = c.read_response().expect("second");
    assert_eq!(
        r1,
        json!({"jsonrpc": "2.0", "id": 1, "result": {"x": "}{"}})
    );
    assert_eq!(r2, json!({"jsonrpc": "2.0", "id": 2, "result": {}}));

    // One request dribbled byte by byte with pauses; a string id is echoed verbatim.
    let req = br#"{"jsonrpc":"2.0","method":"echo","params":{"s":"a\"b"},"id":"req-7"}"#;
    for piece in req.chunks(5) {
        c.send_raw(piece).expect("send piece");
        std::thread::sleep(Duration::from_millis(2));
    }
    let r = c.read_response().expect("split request answered");
    assert_eq!(
        r,
        json!({"jsonrpc": "2.0", "id": "req-7", "result": {"s": "a\"b"}})
    );
}

#[test]
fn garbage_gets_parse_error_and_connection_closed() {
    let dir = TempDir::new("rpc-garbage");
    let (_server, path, _) = start_server(&dir);
    let mut c = client(&path);
    c.send_raw(br#"{"jsonrpc":"2.0","method":"echo","id":1} this is not json"#)
        .expect("send");
    let (responses, closed) = read_all_responses(&mut c);
    assert!(closed);
    assert_eq!(responses.len(), 2, "{responses:?}");
    assert_eq!(responses[0]["id"], 1);
    assert_eq!(error_code(&responses[1]), -32700);
    assert_eq!(responses[1]["id"], Value::Null);
    // The server still serves new connections.
    let mut c2 = client(&path);
    assert_eq!(c2.call("echo", None).expect("echo"), json!({}));
}

#[test]
fn every_error_code() {
    let dir = TempDir::new("rpc-errors");
    let (_server, path, _) = start_server(&dir);
    let mut c = client(&path);
    let mut raw = |text: &str| -> Value {
        c.send_raw(text.as_bytes()).expect("send");
        c.read_response().expect("response")
    };
    // -32600: not an object, bad version, bad id, bad method, bad params, unknown member.
    for (req, id) in [
        ("42 ", Value::Null), // a bare number ends at a delimiter
        (r#""echo""#, Value::Null),
        (r#"{"jsonrpc":"1.0","method":"echo","id":3}"#, json!(3)),
        (
            r#"{"jsonrpc":"2.0","method":"echo","id":{"a":1}}"#,
            Value::Null,
        ),
        (r#"{"jsonrpc":"2.0","method":7,"id":4}"#, json!(4)),
        (r#"{"jsonrpc":"2.0","id":5}"#, json!(5)),
        (
            r#"{"jsonrpc":"2.0","method":"echo","params":"x","id":6}"#,
            json!(6),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"echo","extra":1,"id":7}"#,
            json!(7),
        ),
        ("[]", Value::Null),
        // Invalid requests without `id` are not notifications: they are answered.
        (r#"{"jsonrpc":"2.0","method":1}"#, Value::Null),
        (r#"{"jsonrpc":"2.0","params":{}}"#, Value::Null),
    ] {
        let r = raw(req);
        assert_eq!(error_code(&r), -32600, "{req} -> {r}");
        assert_eq!(r["id"], id, "{req}");
    }
    // -32601.
    let r = raw(r#"{"jsonrpc":"2.0","method":"no_such_method","id":8}"#);
    assert_eq!(error_code(&r), -32601);
    assert!(
        r["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("no_such_method")
    );

    // -32602 naming the problem.
    let cases = [
        (
            json!({"block_size": 512}),
            "bdev_malloc_create: missing field `num_blocks`",
        ),
        (
            json!({"num_blocks": 8, "block_size": "4k"}),
            "bdev_malloc_create: invalid `block_size`: invalid type: string \"4k\", expected u32",
        ),
        (
            json!({"num_blocks": 8, "block_size": 512, "foo": 1}),
            "bdev_malloc_create: unknown field `foo`",
        ),
        (
            json!({"num_blocks": -1, "block_size": 512}),
            "bdev_malloc_create: invalid `num_blocks`: invalid value: integer `-1`, expected u64",
        ),
        (
            json!({"num_blocks": 8, "block_size": 512, "uuid": "not-a-uuid"}),
            "bdev_malloc_create: invalid `uuid`",
        ),
    ];
    for (params, want) in cases {
        let err = match c.call("bdev_malloc_create", Some(params.clone())) {
            Err(ClientError::Rpc(e)) => e,
            other => panic!("{params}: {other:?}"),
        };
        assert_eq!(err.code, -32602, "{params}");
        assert!(err.message.starts_with(want), "{params}: {}", err.message);
    }
    match c.call("echo", Some(json!([1, 2]))) {
        Err(ClientError::Rpc(e)) => {
            assert_eq!(e.code, -32602);
            assert!(e.message.contains("positional"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }

    // -32603 from a panicking handler; the connection survives.
    match c.call("panic", None) {
        Err(ClientError::Rpc(e)) => assert_eq!(e.code, -32603),
        other => panic!("{other:?}"),
    }
    // -1 for a method not allowed in the current state.
    match c.call("startup_only", None) {
        Err(ClientError::Rpc(e)) => {
            assert_eq!(e.code, -1);
            assert!(e.message.contains("before framework is initialized"));
        }
        other => panic!("{other:?}"),
    }
    // Errno codes chosen by handlers, as SPDK: -17 EEXIST, -19 ENODEV, -95 ENOTSUP.
    let p = json!({"name": "Malloc9", "num_blocks": 8, "block_size": 512});
    assert_eq!(
        c.call("bdev_malloc_create", Some(p.clone()))
            .expect("create"),
        "Malloc9"
    );
    for (method, params, code) in [
        ("bdev_malloc_create", p, -17),
        ("bdev_malloc_delete", json!({"name": "nope"}), -19),
        (
            "bdev_malloc_create",
            json!({"num_blocks": 8, "block_size": 520, "md_size": 8}),
            -95,
        ),
    ] {
        match c.call(method, Some(params)) {
            Err(ClientError::Rpc(e)) => assert_eq!(e.code, code, "{method}: {}", e.message),
            other => panic!("{method}: {other:?}"),
        }
    }
    // A deprecated alias reaches the same handler.
    let p = json!({"name": "Malloc10", "num_blocks": 8, "block_size": 512});
    assert_eq!(
        c.call("construct_malloc_bdev", Some(p)).expect("alias"),
        "Malloc10"
    );
}

#[test]
fn notifications_get_no_response_and_batches_get_an_array() {
    let dir = TempDir::new("rpc-notify");
    let (_server, path, ctx) = start_server(&dir);
    let mut c = client(&path);
    c.notify("echo", Some(json!({"n": 1}))).expect("notify");
    c.notify("no_such_method", None).expect("notify unknown");
    let r = c.call("echo", Some(json!({"n": 2}))).expect("call");
    assert_eq!(r, json!({"n": 2}));
    assert_eq!(ctx.calls.load(std::sync::atomic::Ordering::Relaxed), 2);

    c.send_raw(
        br#"[{"jsonrpc":"2.0","method":"echo","params":{"a":1},"id":1},
            {"jsonrpc":"2.0","method":"echo","params":{"b":2}},
            {"jsonrpc":"2.0","method":"nope","id":2}, 17]"#,
    )
    .expect("send batch");
    let r = c.read_response().expect("batch response");
    let items = r.as_array().expect("array");
    assert_eq!(items.len(), 3, "{r}");
    assert_eq!(
        items[0],
        json!({"jsonrpc": "2.0", "id": 1, "result": {"a": 1}})
    );
    assert_eq!(error_code(&items[1]), -32601);
    assert_eq!(error_code(&items[2]), -32600);
    // A batch of notifications only: nothing is sent back; the next answer is for id 9.
    c.send_raw(br#"[{"jsonrpc":"2.0","method":"echo"}]"#)
        .expect("send");
    c.send_raw(br#"{"jsonrpc":"2.0","method":"echo","id":9}"#)
        .expect("send");
    assert_eq!(c.read_response().expect("resp")["id"], 9);
}

#[test]
fn oversize_request_is_refused_and_closed() {
    let dir = TempDir::new("rpc-big");
    let mut config = ServerConfig::with_path(dir.path().join("rpc.sock"));
    config.max_request_bytes = 1024;
    let (_server, path, _) = start_server_with(config);
    let mut c = client(&path);
    let big = "x".repeat(4096);
    // The client may see EPIPE while writing if the server already closed: ignore it.
    let _ = c.send_raw(
        format!(r#"{{"jsonrpc":"2.0","method":"echo","params":{{"s":"{big}"}},"id":1}}"#)
            .as_bytes(),
    );
    let (responses, closed) = read_all_responses(&mut c);
    assert!(closed);
    assert_eq!(responses.len(), 1, "{responses:?}");
    assert_eq!(error_code(&responses[0]), -32600);
    assert!(
        responses[0]["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("1024")
    );
}

#[test]
fn concurrent_clients() {
    let dir = TempDir::new("rpc-conc");
    let (_server, path, ctx) = start_server(&dir);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut c = client(&path);
                for i in 0..50 {
                    let r = c.call("echo", Some(json!({"t": t, "i": i}))).expect("echo");
                    assert_eq!(r, json!({"t": t, "i": i}));
                }
            })
        })
        .collect();
    // A slow call on one connection does not hold up the others.
    let slow_path = path.clone();
    let slow = std::thread::spawn(move || {
        client(&slow_path)
            .call("slow", Some(json!({"ms": 300})))
            .expect("slow")
    });
    let start = Instant::now();
    for t in threads {
        t.join().expect("client thread");
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(slow.join().expect("slow thread"), json!(true));
    assert_eq!(ctx.calls.load(std::sync::atomic::Ordering::Relaxed), 400);
}

#[test]
fn startup_refuses_live_servers_and_clears_stale_sockets() {
    let dir = TempDir::new("rpc-start");
    let path = dir.path().join("rpc.sock");
    let bind = || {
        RpcServer::bind(
            ServerConfig::with_path(&path),
            Arc::new(test_registry()),
            Arc::new(rpc_common::TestCtx::default()),
        )
    };
    // A stale socket file (its listener is gone) is removed.
    drop(UnixListener::bind(&path).expect("stale listener"));
    assert!(path.exists());
    let first = bind()
        .expect("bind over a stale socket")
        .spawn()
        .expect("spawn");
    // A second server on the same path is refused (lock held).
    assert!(matches!(bind(), Err(ServerError::InUse(_))));
    first.shutdown().expect("shutdown");

    // A live server that does not use the lock file is detected by connecting.
    let foreign = UnixListener::bind(&path).expect("foreign listener");
    assert!(matches!(bind(), Err(ServerError::InUse(_))));
    drop(foreign);
    std::fs::remove_file(&path).expect("remove foreign socket");

    // A regular file is never deleted.
    std::fs::write(&path, b"precious").expect("write file");
    assert!(matches!(bind(), Err(ServerError::NotASocket(_))));
    assert_eq!(std::fs::read(&path).expect("still there"), b"precious");
    std::fs::remove_file(&path).expect("cleanup");

    let long = dir.path().join("x".repeat(120));
    assert!(matches!(
        RpcServer::bind(
            ServerConfig::with_path(long),
            Arc::new(test_registry()),
            Arc::new(rpc_common::TestCtx::default())
        ),
        Err(ServerError::PathTooLong(_))
    ));
}

#[test]
fn shutdown_closes_idle_clients_promptly() {
    let dir = TempDir::new("rpc-stop");
    let (server, path, _) = start_server(&dir);
    let mut idle = UnixStream::connect(&path).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut c = client(&path);
    assert_eq!(c.call("echo", None).expect("echo"), json!({}));
    let start = Instant::now();
    server.shutdown().expect("shutdown");
    assert!(start.elapsed() < Duration::from_secs(2));
    let mut buf = [0u8; 16];
    assert_eq!(idle.read(&mut buf).expect("EOF, not timeout"), 0);
    assert!(matches!(
        c.call("echo", None),
        Err(ClientError::Closed | ClientError::Io(_))
    ));
    assert!(UnixStream::connect(&path).is_err());
}

#[test]
fn connections_beyond_the_limit_are_closed() {
    let dir = TempDir::new("rpc-limit");
    let mut config = ServerConfig::with_path(dir.path().join("rpc.sock"));
    config.max_connections = 2;
    let (_server, path, _) = start_server_with(config);
    let mut a = client(&path);
    let mut b = client(&path);
    a.call("echo", None).expect("a");
    b.call("echo", None).expect("b");
    let mut third = UnixStream::connect(&path).expect("connect");
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = third.write_all(br#"{"jsonrpc":"2.0","method":"echo","id":1}"#);
    let mut buf = [0u8; 64];
    assert!(matches!(third.read(&mut buf), Ok(0) | Err(_)));
    drop(a);
    // Once a slot frees up, new clients are served again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = client(&path);
        if c.call("echo", None).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
    b.call("echo", None).expect("b still served");
}
