//! `shoald -m 0x3` as a multi-core target (issue 14, "More than one core"): real daemons with
//! two reactors, real sockets, and Shoal's own NVMe/TCP host driving verified I/O from two
//! reactors of the test process.
//!
//! - `connections_spread_over_both_reactors`: two controllers with two I/O queues each land
//!   on both poll groups, each controller on both, and every queue carries verified I/O at
//!   depth 16 at once;
//! - `killed_connections_on_one_reactor_leave_the_other_serving`: the connections of one
//!   poll group are dropped with writes in flight while the other keeps serving;
//! - `namespace_hot_add_and_remove_under_io`: a namespace added and another removed while
//!   both reactors serve verified I/O on a third; I/O to the removed one fails with Invalid
//!   Namespace or Format, a new controller sees the new one;
//! - `nexus_over_children_on_different_reactors`: a nexus on one `shoald -m 0x3` over two
//!   replicas exported by another, whose queues are served by both of its poll groups;
//!   verified I/O through the nexus from two reactors, then the replicas, read directly,
//!   are identical and hold the last data written.

#![allow(clippy::cast_possible_truncation)]

mod multicore_common;
mod shoalctl_common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use multicore_common::worker::{
    DEPTH, Kind, LANE_BYTES, LaneSpec, SLOT_BYTES, Worker, pattern, slot_len,
};
use multicore_common::{NEXUS_META_BYTES, Node, admin_reactor, connect};
use serde_json::json;
use shoal_reactor::ReactorSet;

const NQN: &str = "nqn.2016-06.io.shoal:mc";

/// A node exporting [`NQN`] over a 64 MiB RAM namespace, and two controllers, each with one
/// I/O queue on each of two workers.
struct Setup {
    node: Node,
    workers: Vec<Worker>,
    /// (cntlid, qid) of each worker's queues.
    queues: Vec<Vec<(u16, u16)>>,
    /// The host's admin reactor: dropped after the workers.
    _admin: ReactorSet,
}

/// [`Setup`], the queues opened one controller at a time so that the listener's round robin
/// alone decides where each lands.
fn two_controllers_two_workers(tag: &str) -> Setup {
    let mut node = Node::start(tag);
    node.malloc("M0", 16384, 4096);
    node.export(NQN, &["M0"]);
    let admin = admin_reactor();
    let removed = Arc::new(AtomicBool::new(false));
    let mut workers: Vec<Worker> = (0..2)
        .map(|w| Worker::start(&format!("io{w}"), removed.clone()))
        .collect();
    let mut queues = vec![Vec::new(); 2];
    let mut lane = 0u64;
    for _ in 0..2 {
        let ctrl = connect(&admin, node.port, NQN, 4);
        for (w, worker) in workers.iter_mut().enumerate() {
            let q = worker.open(LaneSpec {
                ctrl: ctrl.clone(),
                nsid: 1,
                base: lane * LANE_BYTES,
                kind: Kind::Verified,
            });
            queues[w].push(q);
            lane += 1;
        }
    }
    Setup {
        node,
        workers,
        queues,
        _admin: admin,
    }
}

#[test]
fn connections_spread_over_both_reactors() {
    let Setup {
        mut node,
        mut workers,
        queues,
        _admin,
    } = two_controllers_two_workers("mc-spread");
    // Round robin over two reactors: admin A, A's two I/O queues, admin B, B's two.
    assert_eq!(node.admin_qpairs_per_group(), [1, 1]);
    assert_eq!(node.io_qpairs_per_group(), [2, 2]);
    let groups = node.io_queue_groups(NQN);
    assert_eq!(groups.len(), 4, "{groups:?}");
    let cntlids: BTreeSet<u16> = groups.keys().map(|k| k.0).collect();
    assert_eq!(cntlids.len(), 2, "{groups:?}");
    for c in cntlids {
        let on: BTreeSet<&String> = groups
            .iter()
            .filter(|(k, _)| k.0 == c)
            .map(|(_, g)| g)
            .collect();
        assert_eq!(
            on.len(),
            2,
            "controller {c}'s I/O queues on both poll groups: {groups:?}"
        );
    }
    for w in &workers {
        w.run();
    }
    for w in &mut workers {
        w.wait_rounds(20);
    }
    for (w, worker) in workers.iter_mut().enumerate() {
        let r = worker.stop();
        assert!(r.errors.is_empty(), "worker {w}: {:?}", r.errors);
        assert!(r.rounds >= 20);
        // Two lanes, 16 writes and 16 verified reads each per round.
        assert_eq!(r.ios, r.rounds * 2 * 2 * 16, "worker {w} ({queues:?})");
    }
    node.assert_alive();
}

#[test]
fn killed_connections_on_one_reactor_leave_the_other_serving() {
    let Setup {
        mut node,
        mut workers,
        queues,
        _admin,
    } = two_controllers_two_workers("mc-kill");
    let groups = node.io_queue_groups(NQN);
    let doomed = "nvmf_tgt_poll_group_001";
    for w in &workers {
        w.run();
    }
    for w in &mut workers {
        w.wait_rounds(5);
    }
    // Each worker drops its queue served by poll group 1, with 16 writes in flight on it.
    let mut outstanding = 0;
    for (w, worker) in workers.iter_mut().enumerate() {
        let kill: Vec<(u16, u16)> = queues[w]
            .iter()
            .copied()
            .filter(|q| groups[q] == doomed)
            .collect();
        assert_eq!(kill.len(), 1, "worker {w}: {queues:?} on {groups:?}");
        let (out, _closed) = worker.kill(kill);
        outstanding += out;
    }
    assert!(outstanding > 0, "the connections were dropped mid-I/O");
    // Poll group 1 loses its connections; poll group 0 keeps serving.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while node.io_qpairs_per_group() != [2, 0] {
        assert!(
            std::time::Instant::now() < deadline,
            "I/O queues per poll group: {:?}",
            node.io_qpairs_per_group()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for w in &mut workers {
        w.wait_rounds(10);
    }
    for (w, worker) in workers.iter_mut().enumerate() {
        let r = worker.stop();
        assert!(r.errors.is_empty(), "worker {w}: {:?}", r.errors);
        assert!(r.rounds >= 15);
    }
    assert_eq!(
        node.admin_qpairs_per_group(),
        [1, 1],
        "the controllers stay"
    );
    node.assert_alive();
}

#[test]
fn namespace_hot_add_and_remove_under_io() {
    let mut node = Node::start("mc-ns");
    node.malloc("M0", 8192, 4096);
    node.malloc("M1", 8192, 4096);
    node.malloc("M2", 8192, 512);
    node.export(NQN, &["M0", "M1"]);
    let admin = admin_reactor();
    let removed = Arc::new(AtomicBool::new(false));
    let mut workers: Vec<Worker> = (0..2)
        .map(|w| Worker::start(&format!("ns{w}"), removed.clone()))
        .collect();
    let ctrl = connect(&admin, node.port, NQN, 4);
    // Each worker: a verified lane on namespace 1 and a doomed one on namespace 2, each on
    // its own queue (four queues: both poll groups serve both namespaces).
    for (w, worker) in workers.iter_mut().enumerate() {
        for (nsid, kind) in [(1, Kind::Verified), (2, Kind::Doomed)] {
            worker.open(LaneSpec {
                ctrl: ctrl.clone(),
                nsid,
                base: w as u64 * LANE_BYTES,
                kind,
            });
        }
    }
    assert_eq!(node.io_qpairs_per_group(), [2, 2]);
    for w in &workers {
        w.run();
    }
    for w in &mut workers {
        w.wait_rounds(3);
    }
    // Hot add while both reactors serve both namespaces.
    let nsid = node.call(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "M2"}}),
    );
    assert_eq!(nsid, 3);
    for w in &mut workers {
        w.wait_rounds(3);
    }
    // Hot remove of namespace 2 under the doomed lanes' I/O.
    node.call("nvmf_subsystem_remove_ns", json!({"nqn": NQN, "nsid": 2}));
    removed.store(true, std::sync::atomic::Ordering::SeqCst);
    node.call("bdev_malloc_delete", json!({"name": "M1"}));
    for w in &mut workers {
        w.wait_rounds(5);
    }
    for (w, worker) in workers.iter_mut().enumerate() {
        let r = worker.stop();
        assert!(r.errors.is_empty(), "worker {w}: {:?}", r.errors);
        assert!(
            r.doomed_ok > 0,
            "worker {w}: namespace 2 served before: {r:?}"
        );
        // Five rounds after the removal: 16 writes and 16 reads each, per doomed lane.
        assert!(r.doomed_invalid_ns >= 5 * 32, "worker {w}: {r:?}");
    }
    // The controller's host sees the change on a new controller: namespaces 1 and 3.
    let ctrl2 = connect(&admin, node.port, NQN, 2);
    let nsids: Vec<u32> = ctrl2.namespaces().iter().map(|n| n.nsid).collect();
    assert_eq!(nsids, [1, 3]);
    assert_eq!(ctrl2.namespace(3).map(|n| n.block_size), Some(512));
    // The new namespace takes verified I/O from both reactors (the doomed lanes keep failing
    // cleanly alongside).
    for (w, worker) in workers.iter_mut().enumerate() {
        worker.open(LaneSpec {
            ctrl: ctrl2.clone(),
            nsid: 3,
            base: w as u64 * LANE_BYTES,
            kind: Kind::Verified,
        });
        let r = worker.rounds(3);
        assert!(r.errors.is_empty(), "worker {w}: {:?}", r.errors);
        assert_eq!(r.ios, 3 * 2 * 2 * 16, "worker {w}: {r:?}");
    }
    drop(workers);
    drop((ctrl, ctrl2));
    drop(admin);
    node.assert_alive();
}

#[test]
fn nexus_over_children_on_different_reactors() {
    const R0: &str = "nqn.2016-06.io.shoal:replica0";
    const R1: &str = "nqn.2016-06.io.shoal:replica1";
    const SIZE: u64 = 16 << 20;
    let mut replicas = Node::start("mc-replicas");
    let blocks = (SIZE + NEXUS_META_BYTES) / 4096;
    replicas.malloc("R0", blocks, 4096);
    replicas.malloc("R1", blocks, 4096);
    replicas.export(R0, &["R0"]);
    replicas.export(R1, &["R1"]);
    let mut nexus = Node::start("mc-nexus");
    let uri = |nqn: &str| format!("nvmf://127.0.0.1:{}/{nqn}", replicas.port);
    nexus.call(
        "nexus_create",
        json!({"name": "nx0", "size": SIZE, "io_timeout_ms": 10000,
            "children": [uri(R0), uri(R1)]}),
    );
    nexus.export(NQN, &["nx0"]);

    let admin = admin_reactor();
    let removed = Arc::new(AtomicBool::new(false));
    let mut workers: Vec<Worker> = (0..2)
        .map(|w| Worker::start(&format!("nx{w}"), removed.clone()))
        .collect();
    let ctrl = connect(&admin, nexus.port, NQN, 2);
    for (w, worker) in workers.iter_mut().enumerate() {
        worker.open(LaneSpec {
            ctrl: ctrl.clone(),
            nsid: 1,
            base: w as u64 * LANE_BYTES,
            kind: Kind::Verified,
        });
    }
    // The host's two queues sit on both reactors of the nexus node.
    assert_eq!(nexus.io_qpairs_per_group(), [1, 1]);
    for w in &workers {
        w.run();
    }
    for w in &mut workers {
        w.wait_rounds(10);
    }
    let reports: Vec<_> = workers.iter_mut().map(Worker::stop).collect();
    for (w, r) in reports.iter().enumerate() {
        assert!(r.errors.is_empty(), "worker {w}: {:?}", r.errors);
        assert_eq!(r.ios, r.rounds * 2 * 16, "worker {w}: {r:?}");
    }
    // On the replica node, the children's I/O queues (one per reactor of the nexus node that
    // opened a channel, each child its own controller) are served by both poll groups: the
    // two children's queues do not all sit on one reactor.
    let per_group = replicas.io_qpairs_per_group();
    assert!(per_group.iter().all(|&n| n > 0), "{per_group:?}");
    let on = |q: BTreeMap<(u16, u16), String>| -> BTreeSet<String> { q.into_values().collect() };
    let (g0, g1) = (
        on(replicas.io_queue_groups(R0)),
        on(replicas.io_queue_groups(R1)),
    );
    assert!(!g0.is_empty() && !g1.is_empty(), "{g0:?} {g1:?}");
    assert_eq!(
        g0.union(&g1).count(),
        2,
        "children's queues: {g0:?} and {g1:?}"
    );

    // Both replicas hold what the host wrote last, read directly from the replica node.
    let direct: Vec<_> = [R0, R1]
        .iter()
        .map(|nqn| connect(&admin, replicas.port, nqn, 1))
        .collect();
    let len = 2 * LANE_BYTES as usize;
    let copies: Vec<Vec<u8>> = direct
        .iter()
        .map(|c| workers[0].read(c, 1, NEXUS_META_BYTES, len))
        .collect();
    assert!(copies[0] == copies[1], "the replicas differ");
    for (w, r) in reports.iter().enumerate() {
        for s in 0..DEPTH {
            let at = (w as u64 * LANE_BYTES + s * SLOT_BYTES) as usize;
            let want = pattern(slot_len(s), r.last_seed, 0, s);
            assert!(
                copies[0][at..at + want.len()] == want[..],
                "worker {w} slot {s}: the replicas hold the last round"
            );
        }
    }
    drop(workers);
    drop((ctrl, direct));
    drop(admin);
    nexus.assert_alive();
    replicas.assert_alive();
}
