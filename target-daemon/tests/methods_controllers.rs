//! Controllers, queue pairs and statistics with real NVMe/TCP hosts on loopback, and the
//! methods that disconnect them (removing a host, the last listener, the subsystem).

mod methods_common;

use methods_common::host::Host;
use methods_common::{TestDaemon, free_port, listener};
use serde_json::json;
use shoal_target::rpc::error::INVALID_PARAMS;

const NQN: &str = "nqn.2016-06.io.shoal:ctrl";
const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-000000000001";
const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-4000-8000-000000000002";

/// A daemon with a subsystem allowing HOST_A and HOST_B, a namespace, and a listener.
fn setup() -> (TestDaemon, u16) {
    let t = TestDaemon::start();
    let port = free_port();
    t.ok("nvmf_create_transport", json!({"trtype": "TCP"}));
    t.ok("nvmf_create_subsystem", json!({"nqn": NQN}));
    t.ok(
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 256, "block_size": 512}),
    );
    t.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "M0"}}),
    );
    t.ok(
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": HOST_A}),
    );
    t.ok(
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": HOST_B}),
    );
    t.ok("nvmf_subsystem_add_listener", listener(NQN, port));
    (t, port)
}

#[test]
fn controllers_qpairs_and_stats() {
    let (t, port) = setup();
    assert_eq!(
        t.ok("nvmf_subsystem_get_controllers", json!({"nqn": NQN})),
        json!([])
    );
    let admin = Host::admin(port, NQN, HOST_A);
    let cntlid = admin.cntlid;
    let _io1 = Host::io(port, cntlid, 1, NQN, HOST_A);
    let _io2 = Host::io(port, cntlid, 2, NQN, HOST_A);

    let ctrls = t.ok("nvmf_subsystem_get_controllers", json!({"nqn": NQN}));
    assert_eq!(ctrls.as_array().map(Vec::len), Some(1), "{ctrls}");
    let c = &ctrls[0];
    assert_eq!(c["cntlid"], cntlid);
    assert_eq!(c["cntrltype"], "io");
    assert_eq!(c["hostnqn"], HOST_A);
    assert_eq!(c["hostid"], "07070707-0707-0707-0707-070707070707");
    assert_eq!(c["num_io_qpairs"], 2);

    let qpairs = t.ok("nvmf_subsystem_get_qpairs", json!({"nqn": NQN}));
    let qids: Vec<u64> = qpairs
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|q| q["qid"].as_u64())
        .collect();
    assert_eq!(qids, [0, 1, 2]);
    assert_eq!(qpairs[0]["state"], "enabled");
    assert_eq!(qpairs[0]["thread"], "nvmf_tgt_poll_group_000");
    assert_eq!(qpairs[0]["cntlid"], cntlid);
    assert_eq!(qpairs[0]["hostnqn"], HOST_A);
    assert_eq!(qpairs[0]["listen_address"]["traddr"], "127.0.0.1");
    assert_eq!(qpairs[0]["peer_address"]["traddr"], "127.0.0.1");

    let stats = t.ok("nvmf_get_stats", json!({}));
    assert_eq!(stats["tick_rate"], 1_000_000_000u64);
    let g = &stats["poll_groups"][0];
    assert_eq!(g["name"], "nvmf_tgt_poll_group_000");
    assert_eq!(g["current_qpairs"], 3);
    assert_eq!(g["current_admin_qpairs"], 1);
    assert_eq!(g["current_io_qpairs"], 2);
    assert_eq!(g["transports"][0]["trtype"], "TCP");

    t.err(
        "nvmf_subsystem_get_controllers",
        json!({"nqn": "nqn.2016-06.io.shoal:no"}),
        INVALID_PARAMS,
    );
    t.err("nvmf_subsystem_get_qpairs", json!({}), INVALID_PARAMS);
}

#[test]
fn removing_a_host_disconnects_only_its_controllers() {
    let (t, port) = setup();
    let mut a = Host::admin(port, NQN, HOST_A);
    let mut a_io = Host::io(port, a.cntlid, 1, NQN, HOST_A);
    let _b = Host::admin(port, NQN, HOST_B);
    assert_eq!(
        t.ok("nvmf_subsystem_get_controllers", json!({"nqn": NQN}))
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    t.ok(
        "nvmf_subsystem_remove_host",
        json!({"nqn": NQN, "host": HOST_A}),
    );
    assert!(a.closed_by_target(), "admin queue of the removed host");
    assert!(a_io.closed_by_target(), "I/O queue of the removed host");
    let ctrls = t.ok("nvmf_subsystem_get_controllers", json!({"nqn": NQN}));
    assert_eq!(ctrls.as_array().map(Vec::len), Some(1), "{ctrls}");
    assert_eq!(ctrls[0]["hostnqn"], HOST_B);
    // The removed host cannot come back.
    let mut again = Host::connect(port);
    let c = again.fabrics_connect(0, NQN, HOST_A);
    assert!(!c.status().is_success());
}

#[test]
fn removing_the_last_listener_disconnects_the_subsystem() {
    let (t, port) = setup();
    let mut a = Host::admin(port, NQN, HOST_A);
    t.ok("nvmf_subsystem_remove_listener", listener(NQN, port));
    assert!(a.closed_by_target());
    assert_eq!(
        t.ok("nvmf_subsystem_get_controllers", json!({"nqn": NQN})),
        json!([])
    );
}

#[test]
fn deleting_the_subsystem_disconnects_it() {
    let (t, port) = setup();
    let mut a = Host::admin(port, NQN, HOST_A);
    let mut io = Host::io(port, a.cntlid, 1, NQN, HOST_A);
    t.ok("nvmf_delete_subsystem", json!({"nqn": NQN}));
    assert!(a.closed_by_target());
    assert!(io.closed_by_target());
    // The namespace's bdev is free again.
    t.ok("bdev_malloc_delete", json!({"name": "M0"}));
}
