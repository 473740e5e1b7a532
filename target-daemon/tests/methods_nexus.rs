//! The nexus methods against an in-process daemon (RAM and file children, export over
//! NVMe-oF, save and reload), and `shoalctl nexus` against a real `shoald`.

mod methods_common;
mod shoalctl_common;

use std::rc::Rc;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use methods_common::{TempDir, TestDaemon, free_port, listener};
use serde_json::{Value, json};
use shoal_bdev::{Bdev, BdevError, BdevIo, IoBuf, IoChannel, IoSink, SgList, open_channel};
use shoal_target::config::ConfigDocument;
use shoal_target::methods::{misc, nexus};
use shoal_target::rpc::error::{EBUSY, EEXIST, EINVAL, ENODEV};

/// Blocks of metadata a 512-byte-block child reserves.
const META: u64 = 2048;
const BLOCKS: u64 = 8192;

fn neg(e: i32) -> i32 {
    -e
}

fn malloc(t: &TestDaemon, name: &str) {
    t.ok(
        "bdev_malloc_create",
        json!({"name": name, "num_blocks": BLOCKS + META, "block_size": 512}),
    );
}

fn nexus_of(t: &TestDaemon, name: &str) -> Value {
    let v = t.ok("nexus_get", json!({"name": name}));
    v[0].clone()
}

fn child<'a>(n: &'a Value, uri: &str) -> &'a Value {
    n["children"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["uri"] == uri))
        .unwrap_or_else(|| panic!("no child {uri} in {n}"))
}

fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Reply {
    _chan: IoChannel,
    tx: mpsc::Sender<(Vec<u8>, Result<(), String>)>,
}

impl IoSink for Reply {
    fn io_done(&self, _tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        let data = io.bufs.iter().flat_map(|b| b.as_slice().to_vec()).collect();
        let _ = self.tx.send((data, result.map_err(|e| e.to_string())));
    }
}

/// Runs one I/O on `bdev` on the daemon's first reactor; the data read, if any.
fn run_io(t: &TestDaemon, bdev: &Arc<dyn Bdev>, make: fn(u64) -> BdevIo, arg: u64) -> Vec<u8> {
    let (tx, rx) = mpsc::channel();
    let b = bdev.clone();
    t.daemon.reactors[0]
        .call(move || {
            let chan = open_channel(&b).expect("channel");
            let reply = Rc::new(Reply { _chan: chan, tx });
            let sink: Rc<dyn IoSink> = reply.clone();
            reply._chan.submit(make(arg), sink, 0);
        })
        .expect("reactor");
    let (data, r) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("I/O answer");
    r.expect("I/O");
    data
}

fn fill(seed: u64) -> Vec<u8> {
    (0..8 * 512u64)
        .map(|i| (i.wrapping_mul(31) ^ seed).to_le_bytes()[0])
        .collect()
}

fn write_at(off: u64) -> BdevIo {
    let mut b = SgList::new();
    b.push(IoBuf::copy_from(&fill(off)));
    BdevIo::write(off, 8, b)
}

fn read_at(off: u64) -> BdevIo {
    let mut b = SgList::new();
    b.push(IoBuf::zeroed(8 * 512));
    BdevIo::read(off, 8, b)
}

#[test]
fn create_get_fault_rebuild_remove_destroy() {
    let t = TestDaemon::start();
    for n in ["M0", "M1", "M2"] {
        malloc(&t, n);
    }
    let size = BLOCKS * 512;
    let name = t.ok(
        "nexus_create",
        json!({"name": "vol", "size": size, "children": ["bdev:///M0", "bdev:///M1"]}),
    );
    assert_eq!(name, "vol");
    let n = nexus_of(&t, "vol");
    assert_eq!(n["state"], "online");
    assert_eq!(n["size"], size);
    assert_eq!(n["num_blocks"], BLOCKS);
    assert_eq!(n["rebuild_rate"]["mode"], "adaptive");
    let c = child(&n, "bdev:///M0");
    assert_eq!(c["state"], "online");
    assert_eq!(c["rebuild_progress"], 100);
    assert_eq!(c["fault_reason"], Value::Null);
    let b = t.ok("bdev_get_bdevs", json!({"name": "vol"}));
    assert_eq!(b[0]["product_name"], "Shoal nexus");
    assert_eq!(b[0]["uuid"], n["uuid"]);
    assert_eq!(
        t.ok("nexus_get", Value::Null).as_array().map(Vec::len),
        Some(1)
    );

    // Errors name what is wrong, with the usual codes.
    let m = t.err(
        "nexus_create",
        json!({"name": "vol", "size": size, "children": ["bdev:///M2"]}),
        neg(EEXIST),
    );
    assert!(m.contains("vol"), "{m}");
    let m = t.err(
        "nexus_create",
        json!({"name": "v2", "size": size, "children": ["bdev:///nope"]}),
        neg(ENODEV),
    );
    assert!(m.contains("nope"), "{m}");
    // Nothing listens there: the remote child cannot be opened.
    let dead = format!("nvmf://127.0.0.1:{}/nqn.2016-06.io.shoal:none", free_port());
    let m = t.err(
        "nexus_create",
        json!({"name": "v2", "size": size, "children": [dead]}),
        neg(ENODEV),
    );
    assert!(m.contains("cannot open child nvmf://127.0.0.1"), "{m}");
    t.err(
        "nexus_create",
        json!({"name": "v2", "size": size, "children": ["file:///x"]}),
        neg(EINVAL),
    );
    t.err(
        "nexus_create",
        json!({"name": "v2", "size": 1000, "children": ["bdev:///M2"]}),
        neg(EINVAL),
    );
    let m = t.err(
        "nexus_create",
        json!({"name": "v2", "size": size, "children": ["bdev:///M1"]}),
        neg(EBUSY),
    );
    assert!(m.contains("nexus vol"), "{m}");
    // A child can be neither deleted nor exported on its own while the nexus uses it.
    let m = t.err("bdev_malloc_delete", json!({"name": "M1"}), neg(EBUSY));
    assert!(m.contains("nexus vol"), "{m}");
    t.err("nexus_get", json!({"name": "nope"}), neg(ENODEV));
    t.err(
        "nexus_fault_child",
        json!({"name": "vol", "uri": "bdev:///M2"}),
        neg(ENODEV),
    );

    // Fault a child, write, bring it back: a partial rebuild.
    let nx = t.daemon.bdevs.get("vol").unwrap();
    run_io(&t, &nx, write_at, 0);
    t.ok(
        "nexus_fault_child",
        json!({"name": "vol", "uri": "bdev:///M1"}),
    );
    let n = nexus_of(&t, "vol");
    assert_eq!(n["state"], "degraded");
    assert_eq!(child(&n, "bdev:///M1")["fault_reason"], "admin");
    let m = t.err(
        "nexus_fault_child",
        json!({"name": "vol", "uri": "bdev:///M0"}),
        neg(EBUSY),
    );
    assert!(m.contains("last healthy child"), "{m}");
    run_io(&t, &nx, write_at, 4096);
    t.ok(
        "nexus_add_child",
        json!({"name": "vol", "uri": "bdev:///M1"}),
    );
    until("M1 online", || {
        child(&nexus_of(&t, "vol"), "bdev:///M1")["state"] == "online"
    });
    let last = child(&nexus_of(&t, "vol"), "bdev:///M1")["last_rebuild"].clone();
    assert_eq!(last["full"], false);
    assert_eq!(last["segments_copied"], 1);
    assert_eq!(run_io(&t, &nx, read_at, 4096), fill(4096));

    // A new child is rebuilt in full; the rate can be limited, paused, resumed, stopped.
    t.ok(
        "nexus_set_rebuild_rate",
        json!({"name": "vol", "mib_per_sec": 1}),
    );
    t.ok(
        "nexus_add_child",
        json!({"name": "vol", "uri": "bdev:///M2"}),
    );
    t.ok("nexus_pause_rebuild", json!({"name": "vol"}));
    let c = child(&nexus_of(&t, "vol"), "bdev:///M2").clone();
    assert_eq!(c["state"], "rebuilding");
    assert_eq!(c["rebuild"]["paused"], true);
    assert_eq!(c["rebuild"]["full"], true);
    t.ok(
        "nexus_resume_rebuild",
        json!({"name": "vol", "uri": "bdev:///M2"}),
    );
    t.err(
        "nexus_pause_rebuild",
        json!({"name": "vol", "uri": "bdev:///M0"}),
        neg(ENODEV),
    );
    t.ok(
        "nexus_stop_rebuild",
        json!({"name": "vol", "uri": "bdev:///M2"}),
    );
    assert_eq!(
        child(&nexus_of(&t, "vol"), "bdev:///M2")["fault_reason"],
        "rebuild_stopped"
    );
    t.ok(
        "nexus_set_rebuild_rate",
        json!({"name": "vol", "mib_per_sec": 0}),
    );
    assert_eq!(nexus_of(&t, "vol")["rebuild_rate"]["mode"], "unlimited");
    // Without a rate: back to the default (adaptive) policy.
    t.ok("nexus_set_rebuild_rate", json!({"name": "vol"}));
    assert_eq!(nexus_of(&t, "vol")["rebuild_rate"]["mode"], "adaptive");
    t.ok(
        "nexus_set_rebuild_rate",
        json!({"name": "vol", "mib_per_sec": 0}),
    );
    // Busy (EBUSY) until the stopped rebuild has ended: its last copy may still land.
    until("M2 added back", || {
        match t.call(
            "nexus_add_child",
            json!({"name": "vol", "uri": "bdev:///M2"}),
        ) {
            Ok(_) => true,
            Err(e) if e.code == neg(EBUSY) => false,
            Err(e) => panic!("nexus_add_child failed: {e}"),
        }
    });
    until("M2 online", || {
        child(&nexus_of(&t, "vol"), "bdev:///M2")["state"] == "online"
    });
    t.ok(
        "nexus_remove_child",
        json!({"name": "vol", "uri": "bdev:///M2"}),
    );
    assert_eq!(
        nexus_of(&t, "vol")["children"].as_array().map(Vec::len),
        Some(2)
    );

    // The saved config recreates the nexus after its children.
    let doc = misc::config_document(&t.daemon);
    let calls: Vec<String> = doc.calls().iter().map(|c| c.method.clone()).collect();
    let at = calls
        .iter()
        .position(|m| m == "nexus_create")
        .expect("nexus_create saved");
    assert!(
        calls[..at]
            .iter()
            .filter(|m| *m == "bdev_malloc_create")
            .count()
            == 3
    );
    let saved = doc.calls()[at].params.clone().unwrap();
    assert_eq!(saved["children"], json!(["bdev:///M0", "bdev:///M1"]));
    assert_eq!(saved["uuid"], nexus_of(&t, "vol")["uuid"]);

    // Exported, it cannot be destroyed; its children cannot be deleted... by a nexus either.
    t.ok("nvmf_create_transport", json!({"trtype": "TCP"}));
    let nqn = "nqn.2016-06.io.shoal:nexus";
    t.ok(
        "nvmf_create_subsystem",
        json!({"nqn": nqn, "allow_any_host": true}),
    );
    t.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": nqn, "namespace": {"bdev_name": "vol"}}),
    );
    t.err("nexus_destroy", json!({"name": "vol"}), neg(EBUSY));
    t.ok("nvmf_subsystem_remove_ns", json!({"nqn": nqn, "nsid": 1}));
    t.ok("nexus_destroy", json!({"name": "vol"}));
    t.err("nexus_get", json!({"name": "vol"}), neg(ENODEV));
    t.err("bdev_get_bdevs", json!({"name": "vol"}), neg(ENODEV));
    assert!(nexus::nexuses(&t.daemon).is_empty());
}

#[test]
fn a_saved_config_brings_the_volume_back_from_its_files() {
    let dir = TempDir::new("nexus-files");
    let files: Vec<String> = (0..2)
        .map(|i| {
            let p = dir.path().join(format!("r{i}"));
            std::fs::File::create(&p)
                .unwrap()
                .set_len((BLOCKS + META) * 512)
                .unwrap();
            p.to_str().unwrap().to_owned()
        })
        .collect();
    let doc = {
        let t = TestDaemon::start();
        for (i, f) in files.iter().enumerate() {
            t.ok(
                "bdev_uring_create",
                json!({"name": format!("U{i}"), "filename": f, "block_size": 512}),
            );
        }
        t.ok(
            "nexus_create",
            json!({"name": "vol", "size": BLOCKS * 512, "children": ["bdev:///U0", "bdev:///U1"],
                   "io_timeout_ms": 5000}),
        );
        let nx = t.daemon.bdevs.get("vol").unwrap();
        for off in [0u64, 800, 8000] {
            run_io(&t, &nx, write_at, off);
        }
        let doc = misc::config_document(&t.daemon);
        nexus::shutdown(&t.daemon);
        doc
    };
    let doc = ConfigDocument::parse(&doc.to_json_pretty().unwrap()).unwrap();
    let t = TestDaemon::start();
    doc.apply(&t.registry, &t.daemon)
        .expect("load the saved config");
    let n = nexus_of(&t, "vol");
    assert_eq!(n["state"], "online", "{n}");
    assert!(
        n["children"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["last_rebuild"].is_null())
    );
    let nx = t.daemon.bdevs.get("vol").unwrap();
    for off in [0u64, 800, 8000] {
        assert_eq!(run_io(&t, &nx, read_at, off), fill(off), "data at {off}");
    }
}

#[test]
fn shoalctl_nexus_commands() {
    let dir = shoalctl_common::TempDir::new("shoalctl-nexus");
    let (d, _, _) = shoalctl_common::Shoald::start(dir.path());
    let ctl = |args: &[&str]| {
        let out = shoalctl_common::shoalctl(&d.socket, args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), text, err)
    };
    for n in ["A", "B"] {
        let (ok, _, err) = ctl(&["bdev", "malloc", "create", n, "--size", "33MiB"]);
        assert!(ok, "{err}");
    }
    let (ok, out, err) = ctl(&["nexus", "create", "vol", "--size", "32MiB", "bdev:///A"]);
    assert!(ok && out.contains("created nexus vol"), "{out} {err}");
    let (ok, out, _) = ctl(&["nexus", "rebuild-rate", "vol", "2"]);
    assert!(ok && out.contains("2 MiB/s"), "{out}");
    let (ok, out, err) = ctl(&["nexus", "add-child", "vol", "bdev:///B"]);
    assert!(ok, "{out} {err}");
    let (ok, out, _) = ctl(&["nexus", "list"]);
    assert!(ok, "{out}");
    assert!(out.contains("vol  degraded  32 MiB"), "{out}");
    assert!(
        out.contains("bdev:///B") && out.contains("rebuilding") && out.contains("% full"),
        "{out}"
    );
    assert!(
        out.contains('[') && out.contains('#') || out.contains("[-"),
        "a progress bar: {out}"
    );
    let (ok, _, _) = ctl(&["nexus", "rebuild-rate", "vol", "0"]);
    assert!(ok);
    let (ok, out, err) = ctl(&["nexus", "watch", "vol", "--interval-ms", "50"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("vol  online"),
        "watch ends when the rebuild is done: {out}"
    );
    let (ok, out, _) = ctl(&["--json", "nexus", "list", "vol"]);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["children"][1]["state"], "online");
    let (ok, _, err) = ctl(&["nexus", "add-child", "vol", "bdev:///nope"]);
    assert!(!ok && err.contains("no bdev nope"), "{err}");
    let (ok, out, _) = ctl(&["nexus", "destroy", "vol"]);
    assert!(ok && out.contains("destroyed nexus vol"), "{out}");
}

#[test]
fn a_remote_replica_over_nvme_tcp() {
    // Daemon `r` exports a RAM bdev; daemon `n` runs a nexus over a local bdev and that
    // namespace, reached with Shoal's NVMe/TCP host.
    let r = TestDaemon::start();
    malloc(&r, "R0");
    r.ok("nvmf_create_transport", json!({"trtype": "TCP"}));
    let nqn = "nqn.2016-06.io.shoal:replica0";
    r.ok(
        "nvmf_create_subsystem",
        json!({"nqn": nqn, "allow_any_host": true}),
    );
    r.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": nqn, "namespace": {"bdev_name": "R0"}}),
    );
    let port = free_port();
    r.ok("nvmf_subsystem_add_listener", listener(nqn, port));
    let n = TestDaemon::start();
    malloc(&n, "L0");
    let remote = format!("nvmf://127.0.0.1:{port}/{nqn}");
    n.ok(
        "nexus_create",
        json!({"name": "vol", "size": BLOCKS * 512, "children": ["bdev:///L0"]}),
    );
    let nx = n.daemon.bdevs.get("vol").unwrap();
    for off in [0u64, 1000, 8000] {
        run_io(&n, &nx, write_at, off);
    }
    n.ok("nexus_add_child", json!({"name": "vol", "uri": remote}));
    until("the remote child online", || {
        child(
            &nexus_of(&n, "vol"),
            &format!("nvmf://127.0.0.1:{port}/{nqn}"),
        )["state"]
            == "online"
    });
    run_io(&n, &nx, write_at, 4000);
    // The replica on the other daemon holds the volume after the metadata region.
    let r0 = r.daemon.bdevs.get("R0").unwrap();
    for off in [0u64, 1000, 4000, 8000] {
        assert_eq!(
            run_io(&r, &r0, read_at, META + off),
            fill(off),
            "replica at {off}"
        );
    }
    // Reads prefer the local child.
    let before = r0.info().iostat().num_read_ops;
    for off in [0u64, 1000, 4000] {
        assert_eq!(run_io(&n, &nx, read_at, off), fill(off));
    }
    assert_eq!(r0.info().iostat().num_read_ops, before);
    // The remote side goes away: the child is faulted, the host sees no error.
    r.ok("nvmf_subsystem_remove_ns", json!({"nqn": nqn, "nsid": 1}));
    for off in [0u64, 2000] {
        run_io(&n, &nx, write_at, off);
    }
    let c = child(&nexus_of(&n, "vol"), &remote).clone();
    assert_eq!(c["state"], "faulted", "{c}");
    assert_eq!(nexus_of(&n, "vol")["state"], "degraded");
    assert_eq!(run_io(&n, &nx, read_at, 2000), fill(2000));
    n.ok("nexus_destroy", json!({"name": "vol"}));
}

#[test]
fn pause_and_resume_io_with_a_deadline() {
    let t = TestDaemon::start();
    for n in ["P0", "P1"] {
        malloc(&t, n);
    }
    let size = BLOCKS * 512;
    t.ok(
        "nexus_create",
        json!({"name": "pv", "size": size, "children": ["bdev:///P0", "bdev:///P1"]}),
    );
    // Bad requests: nothing paused.
    t.err(
        "nexus_pause_io",
        json!({"name": "pv", "timeout_ms": 0}),
        neg(EINVAL),
    );
    t.err(
        "nexus_pause_io",
        json!({"name": "pv", "timeout_ms": u64::MAX}),
        neg(EINVAL),
    );
    t.err(
        "nexus_pause_io",
        json!({"name": "nobody", "timeout_ms": 100}),
        neg(ENODEV),
    );
    t.err("nexus_pause_io", json!({"name": "pv"}), -32602);
    let p = t.ok("nexus_pause_io", json!({"name": "pv", "timeout_ms": 30000}));
    let g = p["generation"].as_u64().unwrap();
    assert_eq!(p["in_sync"], json!(["bdev:///P0", "bdev:///P1"]));
    t.err(
        "nexus_pause_io",
        json!({"name": "pv", "timeout_ms": 100}),
        neg(EBUSY),
    );
    t.err(
        "nexus_resume_io",
        json!({"name": "pv", "generation": g + 1}),
        neg(EBUSY),
    );
    t.ok("nexus_resume_io", json!({"name": "pv", "generation": g}));
    // A pause nobody resumes lapses; its late resume fails.
    let p = t.ok("nexus_pause_io", json!({"name": "pv", "timeout_ms": 50}));
    std::thread::sleep(Duration::from_millis(300));
    t.err(
        "nexus_resume_io",
        json!({"name": "pv", "generation": p["generation"]}),
        neg(EBUSY),
    );
    t.ok("nexus_destroy", json!({"name": "pv"}));
}
