//! Examine meets hostile bytes: a tenant's volume holding a valid pool image is never opened as
//! a pool, and a pool whose name or UUIDs clash with an open one is refused, with the real
//! daemon's methods (in-process, one reactor).

mod methods_common;

use std::rc::Rc;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use methods_common::{TempDir, TestDaemon};
use serde_json::{Value, json};
use shoal_bdev::{Bdev, BdevError, BdevIo, IoBuf, IoChannel, IoSink, SgList, open_channel};

/// Blocks of metadata a 512-byte-block nexus child reserves (1 MiB).
const META: u64 = 2048;
/// The volume: 32 MiB of 512-byte blocks.
const BLOCKS: u64 = 65536;
/// Blocks per copy (1 MiB).
const CHUNK: u64 = 2048;

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

/// Runs one I/O on `bdev` on the daemon's reactor; the data read, if any.
fn run_io(t: &TestDaemon, bdev: &Arc<dyn Bdev>, io: BdevIo) -> Vec<u8> {
    let (tx, rx) = mpsc::channel();
    let b = bdev.clone();
    t.daemon.reactors[0]
        .call(move || {
            let chan = open_channel(&b).expect("channel");
            let reply = Rc::new(Reply { _chan: chan, tx });
            let sink: Rc<dyn IoSink> = reply.clone();
            reply._chan.submit(io, sink, 0);
        })
        .expect("reactor");
    let (data, r) = rx.recv_timeout(Duration::from_secs(30)).expect("answer");
    r.expect("I/O");
    data
}

fn bdev(t: &TestDaemon, name: &str) -> Arc<dyn Bdev> {
    t.daemon.bdevs.get(name).expect("bdev")
}

/// The whole of `name` (`BLOCKS` blocks).
fn read_all(t: &TestDaemon, name: &str) -> Vec<u8> {
    let b = bdev(t, name);
    let mut out = Vec::new();
    for c in 0..BLOCKS / CHUNK {
        let mut bufs = SgList::new();
        bufs.push(IoBuf::zeroed(usize::try_from(CHUNK * 512).unwrap()));
        out.extend(run_io(t, &b, BdevIo::read(c * CHUNK, CHUNK, bufs)));
    }
    out
}

fn write_all(t: &TestDaemon, name: &str, data: &[u8]) {
    let b = bdev(t, name);
    for (c, chunk) in data
        .chunks(usize::try_from(CHUNK * 512).unwrap())
        .enumerate()
    {
        let mut bufs = SgList::new();
        bufs.push(IoBuf::copy_from(chunk));
        let at = u64::try_from(c).unwrap() * CHUNK;
        run_io(t, &b, BdevIo::write(at, CHUNK, bufs));
    }
    run_io(t, &b, BdevIo::flush());
}

fn malloc(t: &TestDaemon, name: &str, blocks: u64) {
    t.ok(
        "bdev_malloc_create",
        json!({"name": name, "num_blocks": blocks, "block_size": 512}),
    );
}

fn pools(t: &TestDaemon) -> Vec<Value> {
    t.ok("bdev_lvol_get_lvstores", Value::Null)
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A pool image named `lvs` (the argument) holding one volume `v`, as a tenant could write it.
fn pool_image(t: &TestDaemon, lvs: &str) -> Vec<u8> {
    malloc(t, "img", BLOCKS);
    t.ok(
        "bdev_lvol_create_lvstore",
        json!({"bdev_name": "img", "lvs_name": lvs, "cluster_sz": 1 << 20}),
    );
    t.ok(
        "bdev_lvol_create",
        json!({"lvs_name": lvs, "lvol_name": "v", "size_in_mib": 4, "thin_provision": true}),
    );
    let image = read_all(t, "img");
    t.ok("bdev_lvol_delete_lvstore", json!({"lvs_name": lvs}));
    t.ok("bdev_malloc_delete", json!({"name": "img"}));
    image
}

/// The node's own pool `lvs` with a volume `real`; its UUID.
fn real_pool(t: &TestDaemon) -> String {
    malloc(t, "base0", BLOCKS);
    t.ok(
        "bdev_lvol_create_lvstore",
        json!({"bdev_name": "base0", "lvs_name": "lvs", "cluster_sz": 1 << 20}),
    );
    t.ok(
        "bdev_lvol_create",
        json!({"lvs_name": "lvs", "lvol_name": "real", "size_in_mib": 4}),
    )
    .as_str()
    .expect("uuid")
    .to_string()
}

#[test]
fn a_pool_image_inside_a_nexus_is_never_opened() {
    let t = TestDaemon::start();
    // Named unlike any pool of the node: only what is examined keeps it out.
    let image = pool_image(&t, "tenant");
    let real = real_pool(&t);
    for c in ["c0", "c1"] {
        malloc(&t, c, BLOCKS + META);
    }
    let nexus = |t: &TestDaemon| {
        t.ok(
            "nexus_create",
            json!({"name": "nx", "size": BLOCKS * 512, "children": ["bdev:///c0", "bdev:///c1"]}),
        );
    };
    nexus(&t);
    // The tenant writes a valid pool image at LBA 0 of its volume.
    write_all(&t, "nx", &image);
    t.ok("nexus_destroy", json!({"name": "nx"}));
    // The next creation of the nexus (a restart, a move) must not examine the tenant's bytes.
    nexus(&t);
    let p = pools(&t);
    assert_eq!(p.len(), 1, "only the node's own pool: {p:?}");
    assert_eq!(p[0]["base_bdev"], "base0");
    // Stacked on a nexus, a test device is not examined either.
    t.ok(
        "bdev_delay_create",
        json!({"name": "dnx", "base_bdev_name": "nx", "avg_read_latency": 0,
               "p99_read_latency": 0, "avg_write_latency": 0, "p99_write_latency": 0}),
    );
    assert_eq!(
        pools(&t).len(),
        1,
        "a delay bdev over the nexus is not examined"
    );
    t.ok("bdev_delay_delete", json!({"name": "dnx"}));
    // The nexus is not claimed: it can be exported.
    t.ok(
        "nvmf_create_subsystem",
        json!({"nqn": "nqn.2016-06.io.spdk:tenant", "allow_any_host": true}),
    );
    t.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": "nqn.2016-06.io.spdk:tenant", "namespace": {"bdev_name": "nx"}}),
    );
    // The node's alias resolves to its own volume, and the tenant's volume is not a bdev.
    let b = t.ok("bdev_get_bdevs", json!({"name": "lvs/real"}));
    assert_eq!(b[0]["name"], real.as_str());
    assert!(
        t.call("bdev_get_bdevs", json!({"name": "tenant/v"}))
            .is_err()
    );
}

#[test]
fn a_pool_named_like_an_open_one_is_refused() {
    let t = TestDaemon::start();
    let image = pool_image(&t, "lvs");
    real_pool(&t);
    let dir = TempDir::new("examine-clash");
    let write_file = |name: &str, data: &[u8]| {
        let f = dir.path().join(name);
        std::fs::write(&f, data).expect("write the image");
        f.to_str().expect("utf-8").to_string()
    };
    // A base device holding a pool named like the open one: left alone, unclaimed.
    let f = write_file("same-name.img", &image);
    t.ok(
        "bdev_uring_create",
        json!({"name": "U0", "filename": f, "block_size": 512}),
    );
    assert_eq!(pools(&t).len(), 1, "the clashing pool is not opened");
    assert!(t.call("bdev_get_bdevs", json!({"name": "lvs/v"})).is_err());
    t.ok(
        "nvmf_create_subsystem",
        json!({"nqn": "nqn.2016-06.io.spdk:u0", "allow_any_host": true}),
    );
    t.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": "nqn.2016-06.io.spdk:u0", "namespace": {"bdev_name": "U0"}}),
    );
    // A copy of the open pool's device under another name: its UUIDs clash.
    let copy = read_all(&t, "base0");
    t.ok(
        "bdev_lvol_rename_lvstore",
        json!({"old_name": "lvs", "new_name": "lvs2"}),
    );
    let f = write_file("copy.img", &copy);
    t.ok(
        "bdev_uring_create",
        json!({"name": "U1", "filename": f, "block_size": 512}),
    );
    let p = pools(&t);
    assert_eq!(p.len(), 1, "the copy is not opened: {p:?}");
    assert_eq!(p[0]["name"], "lvs2");
}
