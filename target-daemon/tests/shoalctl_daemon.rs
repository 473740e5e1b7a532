//! The real `shoald` binary driven by the real `shoalctl`, then stopped with SIGTERM.

mod shoalctl_common;

use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use shoal_target::config::ConfigDocument;
use shoalctl_common::{Shoald, TempDir, fails, free_port, ok};

#[test]
fn shoalctl_against_shoald() {
    let dir = TempDir::new("shoalctl");
    let (mut d, nvme_port, disc_port) = Shoald::start(dir.path());
    let s = d.socket.clone();
    let s = s.as_path();
    const NQN: &str = "nqn.2016-06.io.shoal:vol0";
    const NQN2: &str = "nqn.2016-06.io.shoal:ctl";

    // The default configuration is live.
    assert!(TcpStream::connect(("127.0.0.1", nvme_port)).is_ok());
    assert!(TcpStream::connect(("127.0.0.1", disc_port)).is_ok());
    assert!(ok(s, &["version"]).starts_with("Shoal v"));
    assert!(ok(s, &["methods"]).lines().any(|l| l == "bdev_get_bdevs"));
    let list = ok(s, &["bdev", "list"]);
    assert!(list.starts_with("NAME"), "{list}");
    assert!(
        list.contains("Malloc0") && list.contains("64 MiB"),
        "{list}"
    );

    // Bdevs of each kind.
    assert_eq!(
        ok(
            s,
            &[
                "bdev",
                "malloc",
                "create",
                "M1",
                "--size",
                "1MiB",
                "--block-size",
                "4096"
            ]
        ),
        "created bdev M1\n"
    );
    ok(s, &["bdev", "null", "create", "N1", "--size", "1G"]);
    let image = dir.path().join("disk.img");
    std::fs::write(&image, vec![0u8; 1 << 20]).expect("image");
    ok(
        s,
        &[
            "bdev",
            "uring",
            "create",
            "U1",
            image.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(
        ok(s, &["bdev", "error", "create", "M1"]),
        "created bdev EE_M1\n"
    );
    ok(
        s,
        &[
            "bdev",
            "error",
            "inject",
            "EE_M1",
            "--io-type",
            "write",
            "--num",
            "3",
        ],
    );
    ok(s, &["bdev", "error", "clear", "EE_M1"]);
    ok(
        s,
        &[
            "bdev",
            "delay",
            "create",
            "D1",
            "N1",
            "--read-latency",
            "100",
        ],
    );
    ok(s, &["bdev", "delay", "update", "D1", "p99_write", "500"]);
    let json: Value =
        serde_json::from_str(&ok(s, &["--json", "bdev", "list", "D1"])).expect("json");
    assert_eq!(
        json[0]["driver_specific"]["delay"]["p99_write_latency"],
        500
    );
    assert_eq!(json[0]["driver_specific"]["delay"]["p99_read_latency"], 100);
    let stat = ok(s, &["bdev", "iostat", "M1"]);
    assert!(stat.starts_with("NAME") && stat.contains("M1"), "{stat}");

    // NVMe-oF objects.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    ok(
        s,
        &[
            "nvmf",
            "subsystem",
            "create",
            NQN2,
            "--serial",
            "SN9",
            "--model",
            "CTL",
        ],
    );
    assert_eq!(
        ok(s, &["nvmf", "ns", "add", NQN2, "EE_M1", "--nsid", "7"]),
        format!("added namespace 7 (EE_M1) to {NQN2}\n")
    );
    ok(s, &["nvmf", "ns", "add", NQN2, "D1"]);
    ok(
        s,
        &[
            "nvmf",
            "host",
            "add",
            NQN2,
            "nqn.2014-08.org.nvmexpress:uuid:1",
        ],
    );
    ok(s, &["nvmf", "listener", "add", NQN2, &addr]);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    let subs = ok(s, &["nvmf", "subsystem", "list"]);
    assert!(
        subs.contains(NQN2) && subs.contains(&addr) && subs.contains("7:EE_M1"),
        "{subs}"
    );
    assert!(
        subs.contains("nqn.2014-08.org.nvmexpress.discovery"),
        "{subs}"
    );
    let l = ok(s, &["nvmf", "listener", "list", NQN2]);
    assert!(l.contains(&addr), "{l}");
    assert!(ok(s, &["nvmf", "controllers", NQN]).starts_with("CNTLID"));
    assert!(ok(s, &["nvmf", "qpairs", NQN]).starts_with("CNTLID"));
    assert!(ok(s, &["nvmf", "stats"]).contains("nvmf_tgt_poll_group_000"));
    assert!(ok(s, &["nvmf", "transport", "list"]).contains("trtype: TCP"));
    ok(s, &["nvmf", "subsystem", "allow-any-host", NQN2, "on"]);
    let v: Value =
        serde_json::from_str(&ok(s, &["--json", "nvmf", "subsystem", "list", NQN2])).expect("json");
    assert_eq!(v[0]["allow_any_host"], true);
    assert_eq!(v[0]["serial_number"], "SN9");

    // Raw passthrough.
    let v: Value = serde_json::from_str(&ok(s, &["rpc", "bdev_get_bdevs", r#"{"name": "N1"}"#]))
        .expect("json");
    assert_eq!(v[0]["product_name"], "Null disk");

    // Errors: one line, exit status 1.
    let e = fails(s, &["bdev", "delete", "nope"]);
    assert!(e.contains("No such device") && e.contains("-19"), "{e}");
    let e = fails(s, &["bdev", "delete", "EE_M1"]);
    assert!(e.contains("in use by namespace 7"), "{e}");
    fails(s, &["bdev", "malloc", "create", "M1", "--size", "1MiB"]);
    let e = fails(s, &["bdev", "malloc", "create", "Z", "--size", "1000"]);
    assert!(e.contains("multiple of the block size"), "{e}");
    fails(s, &["nvmf", "listener", "add", NQN2, "127.0.0.1"]);
    fails(s, &["rpc", "bdev_get_bdevs", "{not json"]);
    fails(s, &["rpc", "no_such_method"]);
    let e = fails(&dir.path().join("nothing.sock"), &["version"]);
    assert!(e.contains("is shoald running?"), "{e}");

    // Save the configuration; it parses and holds what was made.
    let saved = dir.path().join("saved.json");
    ok(s, &["config", "save", saved.to_str().expect("utf-8")]);
    let doc = ConfigDocument::load(&saved).expect("saved config");
    let methods: Vec<String> = doc.calls().into_iter().map(|c| c.method).collect();
    assert!(methods.iter().any(|m| m == "bdev_delay_create"));
    assert_eq!(
        methods
            .iter()
            .filter(|m| *m == "nvmf_subsystem_add_ns")
            .count(),
        3
    );

    // Tear down through the CLI.
    ok(s, &["nvmf", "listener", "remove", NQN2, &addr]);
    ok(s, &["nvmf", "ns", "remove", NQN2, "7"]);
    ok(
        s,
        &[
            "nvmf",
            "host",
            "remove",
            NQN2,
            "nqn.2014-08.org.nvmexpress:uuid:1",
        ],
    );
    ok(s, &["nvmf", "subsystem", "delete", NQN2]);
    for b in ["EE_M1", "M1", "D1", "N1", "U1"] {
        assert_eq!(ok(s, &["bdev", "delete", b]), format!("deleted bdev {b}\n"));
    }

    // SIGTERM: a clean exit, socket removed.
    d.signal(libc::SIGTERM);
    let status = d.wait(Duration::from_secs(30));
    assert!(status.success(), "shoald exit {status}: {}", d.log_text());
    assert!(!s.exists(), "the RPC socket is removed");
    assert!(
        d.log_text().contains("flushed 1 of 1 bdev(s)"),
        "{}",
        d.log_text()
    );
}

#[test]
fn config_load_and_kill_instance() {
    let dir = TempDir::new("shoalctl-load");
    let mut d = Shoald::start_with(dir.path(), &["--empty"]);
    let s = d.socket.clone();
    let port = free_port();
    let cfg = dir.path().join("in.json");
    let text = format!(
        r#"{{"subsystems": [
          {{"subsystem": "sock", "config": [{{"method": "sock_impl_set_options",
              "params": {{"impl_name": "posix"}}}}]}},
          {{"subsystem": "nvmf", "config": [
            {{"method": "nvmf_create_transport", "params": {{"trtype": "TCP"}}}},
            {{"method": "nvmf_create_subsystem", "params": {{"nqn": "nqn.2016-06.io.shoal:l"}}}},
            {{"method": "nvmf_subsystem_add_ns", "params": {{"nqn": "nqn.2016-06.io.shoal:l",
                "namespace": {{"bdev_name": "L0"}}}}}},
            {{"method": "nvmf_subsystem_add_listener", "params": {{"nqn": "nqn.2016-06.io.shoal:l",
                "listen_address": {{"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": "{port}"}}}}}}]}},
          {{"subsystem": "bdev", "config": [
            {{"method": "bdev_malloc_create", "params": {{"name": "L0", "num_blocks": 64,
                "block_size": 512}}}}]}}]}}"#
    );
    std::fs::write(&cfg, text).expect("config");
    let out = ok(&s, &["config", "load", cfg.to_str().expect("utf-8")]);
    assert_eq!(out, "applied 5 call(s), skipped 1 SPDK-only call(s)\n");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    // Loading it again fails on the first call, naming it.
    let e = fails(&s, &["config", "load", cfg.to_str().expect("utf-8")]);
    assert!(
        e.contains("bdev config[0]") && e.contains("File exists"),
        "{e}"
    );

    // spdk_kill_instance ends the daemon as a signal does.
    ok(
        &s,
        &["rpc", "spdk_kill_instance", r#"{"sig_name": "SIGTERM"}"#],
    );
    let status = d.wait(Duration::from_secs(30));
    assert!(status.success(), "shoald exit {status}: {}", d.log_text());
}

#[test]
fn sigterm_closes_a_nexus_and_disconnects_its_remote_replica_without_waiting_out_the_drain() {
    let dir_a = TempDir::new("shoalctl-replica");
    let dir_b = TempDir::new("shoalctl-nexus");
    let mut a = Shoald::start_with(dir_a.path(), &["--empty"]);
    let mut b = Shoald::start_with(dir_b.path(), &["--empty"]);
    let (sa, sb) = (a.socket.clone(), b.socket.clone());
    let port = free_port();
    const NQN: &str = "nqn.2016-06.io.shoal:replica";
    let malloc = r#"{"name": "R", "num_blocks": 16384, "block_size": 4096}"#;
    ok(&sa, &["rpc", "bdev_malloc_create", malloc]);
    ok(
        &sa,
        &["rpc", "nvmf_create_transport", r#"{"trtype": "TCP"}"#],
    );
    let sub = format!(r#"{{"nqn": "{NQN}", "allow_any_host": true}}"#);
    ok(&sa, &["rpc", "nvmf_create_subsystem", &sub]);
    let ns = format!(r#"{{"nqn": "{NQN}", "namespace": {{"bdev_name": "R"}}}}"#);
    ok(&sa, &["rpc", "nvmf_subsystem_add_ns", &ns]);
    let listener = format!(
        r#"{{"nqn": "{NQN}", "listen_address": {{"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": "{port}"}}}}"#
    );
    ok(&sa, &["rpc", "nvmf_subsystem_add_listener", &listener]);
    ok(&sb, &["rpc", "bdev_malloc_create", malloc]);
    let nexus = format!(
        r#"{{"name": "vol", "size": 33554432, "children": ["bdev:///R", "nvmf://127.0.0.1:{port}/{NQN}"]}}"#
    );
    ok(&sb, &["rpc", "nexus_create", &nexus]);
    let list = ok(&sb, &["nexus", "list"]);
    assert!(list.contains("online"), "{list}");

    // The daemon's drain waits up to 5 s for the reactors to have nothing in flight; an open
    // connection to the replica always has a receive in flight, so it must be closed first.
    let start = std::time::Instant::now();
    b.signal(libc::SIGTERM);
    let status = b.wait(Duration::from_secs(30));
    let took = start.elapsed();
    assert!(status.success(), "shoald exit {status}: {}", b.log_text());
    let log = b.log_text();
    assert!(log.contains("nexus closed cleanly"), "{log}");
    assert!(
        took < Duration::from_secs(4),
        "shutdown took {took:?} (the drain's bound is 5 s): {log}"
    );
    a.signal(libc::SIGTERM);
    assert!(
        a.wait(Duration::from_secs(30)).success(),
        "{}",
        a.log_text()
    );
}
