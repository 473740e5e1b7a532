//! The NVMe-oF methods against an in-process daemon: transport, subsystems, namespaces,
//! hosts and listeners with their error codes, and real sockets on loopback.

mod methods_common;

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use methods_common::{TestDaemon, free_port, listener};
use serde_json::{Value, json};
use shoal_target::rpc::error::{EBUSY, EEXIST, ENODEV, INTERNAL_ERROR, INVALID_PARAMS};

const NQN: &str = "nqn.2016-06.io.shoal:test";
const DISCOVERY: &str = "nqn.2014-08.org.nvmexpress.discovery";

fn connects(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).is_ok()
}

/// Waits until connecting to `port` gives `want` (a closed socket may take a loop pass).
fn wait_connects(port: u16, want: bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if connects(port) == want {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn with_subsystem() -> TestDaemon {
    let t = TestDaemon::start();
    t.ok("nvmf_create_transport", json!({"trtype": "TCP"}));
    t.ok(
        "nvmf_create_subsystem",
        json!({"nqn": NQN, "allow_any_host": true}),
    );
    t
}

#[test]
fn transport() {
    let t = TestDaemon::start();
    assert_eq!(t.ok("nvmf_get_transports", json!({})), json!([]));
    t.err("nvmf_get_transports", json!({"trtype": "TCP"}), -ENODEV);
    let m = t.err(
        "nvmf_create_transport",
        json!({"trtype": "RDMA"}),
        INVALID_PARAMS,
    );
    assert!(m.contains("RDMA"), "{m}");
    t.err("nvmf_create_transport", json!({}), INVALID_PARAMS);
    t.err(
        "nvmf_create_transport",
        json!({"trtype": "TCP", "bogus": 1}),
        INVALID_PARAMS,
    );
    t.err(
        "nvmf_create_transport",
        json!({"trtype": "TCP", "max_aq_depth": 70000}),
        INVALID_PARAMS,
    );
    t.err(
        "nvmf_create_transport",
        json!({"trtype": "TCP", "max_queue_depth": 1}),
        INVALID_PARAMS,
    );
    t.err(
        "nvmf_create_transport",
        json!({"trtype": "TCP", "tgt_name": "other"}),
        INTERNAL_ERROR,
    );
    t.err(
        "nvmf_create_transport",
        json!({"trtype": "TCP", "max_unsent_bytes": 4096}),
        INVALID_PARAMS,
    );
    // rpc.py sends knobs Shoal accepts and ignores (no_srq, zcopy, ...).
    let p = json!({"trtype": "tcp", "max_queue_depth": 64, "in_capsule_data_size": 4096,
                   "max_io_qpairs_per_ctrlr": 8, "no_srq": false, "zcopy": false,
                   "c2h_success": true, "c2h_success_sq_flow_control": false,
                   "sock_priority": 0, "acceptor_backlog": 512,
                   "max_unsent_bytes": 1_048_576, "ic_timeout_ms": 3000,
                   "max_connections_per_listener": 100, "max_connections_per_host": 10});
    assert_eq!(t.ok("nvmf_create_transport", p), true);
    let m = t.err(
        "nvmf_create_transport",
        json!({"trtype": "TCP"}),
        INTERNAL_ERROR,
    );
    assert!(m.contains("already exists"), "{m}");
    let list = t.ok("nvmf_get_transports", json!({"trtype": "tcp"}));
    assert_eq!(list[0]["trtype"], "TCP");
    assert_eq!(list[0]["max_queue_depth"], 64);
    assert_eq!(list[0]["in_capsule_data_size"], 4096);
    assert_eq!(list[0]["max_io_qpairs_per_ctrlr"], 8);
    assert_eq!(list[0]["c2h_success"], true);
    assert_eq!(list[0]["c2h_success_sq_flow_control"], false);
    // The limits on what a host may hold are visible (issue 19).
    assert_eq!(list[0]["acceptor_backlog"], 512);
    assert_eq!(list[0]["max_unsent_bytes"], 1_048_576);
    assert_eq!(list[0]["ic_timeout_ms"], 3000);
    assert_eq!(list[0]["max_connections_per_listener"], 100);
    assert_eq!(list[0]["max_connections_per_host"], 10);
    t.err("nvmf_get_transports", json!({"trtype": "RDMA"}), -ENODEV);
}

#[test]
fn subsystems_and_hosts() {
    let t = TestDaemon::start();
    let p = json!({"nqn": NQN, "serial_number": "SN1", "model_number": "Model",
                   "max_namespaces": 8, "min_cntlid": 5, "max_cntlid": 10,
                   "ana_reporting": false});
    assert_eq!(t.ok("nvmf_create_subsystem", p.clone()), true);
    let m = t.err("nvmf_create_subsystem", p, INTERNAL_ERROR);
    assert!(m.contains(NQN), "{m}");
    t.err(
        "nvmf_create_subsystem",
        json!({"nqn": "not-an-nqn"}),
        INVALID_PARAMS,
    );
    t.err("nvmf_create_subsystem", json!({}), INVALID_PARAMS);
    t.err(
        "nvmf_create_subsystem",
        json!({"nqn": "nqn.2016-06.io.shoal:x", "serial_number": "123456789012345678901"}),
        INVALID_PARAMS,
    );
    t.err(
        "nvmf_create_subsystem",
        json!({"nqn": "nqn.2016-06.io.shoal:x", "min_cntlid": 9, "max_cntlid": 3}),
        INVALID_PARAMS,
    );

    let all = t.ok("nvmf_get_subsystems", json!({}));
    assert_eq!(all.as_array().map(Vec::len), Some(2));
    assert_eq!(all[0]["nqn"], DISCOVERY);
    assert_eq!(all[0]["subtype"], "Discovery");
    assert_eq!(all[0].get("namespaces"), None);
    let s = &all[1];
    assert_eq!(s["nqn"], NQN);
    assert_eq!(s["subtype"], "NVMe");
    assert_eq!(s["serial_number"], "SN1");
    assert_eq!(s["model_number"], "Model");
    assert_eq!(s["max_namespaces"], 8);
    assert_eq!(
        (s["min_cntlid"].clone(), s["max_cntlid"].clone()),
        (json!(5), json!(10))
    );
    assert_eq!(s["allow_any_host"], false);
    assert_eq!(s["hosts"], json!([]));
    assert_eq!(s["listen_addresses"], json!([]));
    assert_eq!(s["namespaces"], json!([]));
    assert_eq!(
        t.ok("nvmf_get_subsystems", json!({"nqn": NQN}))[0]["nqn"],
        NQN
    );
    t.err(
        "nvmf_get_subsystems",
        json!({"nqn": "nqn.2016-06.io.shoal:none"}),
        -ENODEV,
    );

    let host = "nqn.2014-08.org.nvmexpress:uuid:0f8e5b3c-0000-4000-8000-000000000001";
    t.ok("nvmf_subsystem_add_host", json!({"nqn": NQN, "host": host}));
    t.err(
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": host}),
        -EEXIST,
    );
    t.err(
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": "bad"}),
        INVALID_PARAMS,
    );
    let m = t.err(
        "nvmf_subsystem_add_host",
        json!({"nqn": "nqn.2016-06.io.shoal:none", "host": host}),
        INVALID_PARAMS,
    );
    assert!(m.contains("Unable to find subsystem"), "{m}");
    t.err(
        "nvmf_subsystem_add_host",
        json!({"nqn": DISCOVERY, "host": host}),
        INVALID_PARAMS,
    );
    assert_eq!(
        t.ok("nvmf_get_subsystems", json!({"nqn": NQN}))[0]["hosts"],
        json!([{"nqn": host}])
    );
    t.ok(
        "nvmf_subsystem_allow_any_host",
        json!({"nqn": NQN, "allow_any_host": true}),
    );
    assert_eq!(
        t.ok("nvmf_get_subsystems", json!({"nqn": NQN}))[0]["allow_any_host"],
        true
    );
    t.err(
        "nvmf_subsystem_allow_any_host",
        json!({"nqn": NQN}),
        INVALID_PARAMS,
    );
    t.ok(
        "nvmf_subsystem_remove_host",
        json!({"nqn": NQN, "host": host}),
    );
    t.err(
        "nvmf_subsystem_remove_host",
        json!({"nqn": NQN, "host": host}),
        -ENODEV,
    );

    t.err(
        "nvmf_delete_subsystem",
        json!({"nqn": DISCOVERY}),
        INVALID_PARAMS,
    );
    t.err(
        "nvmf_delete_subsystem",
        json!({"nqn": "nqn.2016-06.io.shoal:none"}),
        INVALID_PARAMS,
    );
    assert_eq!(t.ok("nvmf_delete_subsystem", json!({"nqn": NQN})), true);
    assert_eq!(
        t.ok("nvmf_get_subsystems", json!({}))
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[test]
fn namespaces_claim_their_bdevs() {
    let t = with_subsystem();
    t.ok(
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 64, "block_size": 512}),
    );
    t.ok(
        "bdev_malloc_create",
        json!({"name": "M1", "num_blocks": 64, "block_size": 512}),
    );
    let m = t.err(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "nope"}}),
        INVALID_PARAMS,
    );
    assert!(m.contains("nope"), "{m}");
    assert_eq!(
        t.ok(
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": "M0"}})
        ),
        1
    );
    let uuid = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
    let ns = json!({"bdev_name": "M1", "nsid": 5, "nguid": "00112233445566778899aabbccddeeff",
                    "eui64": "0123456789ABCDEF", "uuid": uuid});
    assert_eq!(
        t.ok(
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": ns})
        ),
        5
    );
    let list = t.ok("nvmf_get_subsystems", json!({"nqn": NQN}))[0]["namespaces"].clone();
    assert_eq!(list[0]["nsid"], 1);
    assert_eq!(list[0]["bdev_name"], "M0");
    assert_eq!(list[0]["name"], "M0");
    let m0_uuid = t.ok("bdev_get_bdevs", json!({"name": "M0"}))[0]["uuid"].clone();
    assert_eq!(
        list[0]["uuid"], m0_uuid,
        "the namespace UUID defaults to the bdev's"
    );
    assert_eq!(list[1]["nsid"], 5);
    assert_eq!(list[1]["nguid"], "00112233445566778899AABBCCDDEEFF");
    assert_eq!(list[1]["eui64"], "0123456789ABCDEF");
    assert_eq!(list[1]["uuid"], uuid);

    // A bdev backs one namespace at most, and cannot be deleted while it does.
    t.ok(
        "nvmf_create_subsystem",
        json!({"nqn": "nqn.2016-06.io.shoal:other"}),
    );
    let m = t.err(
        "nvmf_subsystem_add_ns",
        json!({"nqn": "nqn.2016-06.io.shoal:other", "namespace": {"bdev_name": "M0"}}),
        INVALID_PARAMS,
    );
    assert!(m.contains(NQN), "{m}");
    let m = t.err("bdev_malloc_delete", json!({"name": "M0"}), -EBUSY);
    assert!(m.contains("namespace 1") && m.contains(NQN), "{m}");
    assert_eq!(
        t.ok("bdev_get_bdevs", json!({"name": "M0"}))[0]["claimed"],
        true
    );
    t.err("bdev_error_create", json!({"base_name": "M0"}), -EBUSY);

    // Bad namespace params.
    for bad in [
        json!({"nqn": NQN, "namespace": {"bdev_name": "M1", "nguid": "0011"}}),
        json!({"nqn": NQN, "namespace": {"bdev_name": "M1", "eui64": "zz23456789abcdef"}}),
        json!({"nqn": NQN, "namespace": {"bdev_name": "M1", "uuid": "not-a-uuid"}}),
        json!({"nqn": NQN, "namespace": {"bdev_name": "M1", "colour": 1}}),
        json!({"nqn": NQN}),
    ] {
        t.err("nvmf_subsystem_add_ns", bad, INVALID_PARAMS);
    }
    t.err(
        "nvmf_subsystem_add_ns",
        json!({"nqn": DISCOVERY, "namespace": {"bdev_name": "M1"}}),
        INVALID_PARAMS,
    );

    t.err(
        "nvmf_subsystem_remove_ns",
        json!({"nqn": NQN, "nsid": 9}),
        INVALID_PARAMS,
    );
    t.err(
        "nvmf_subsystem_remove_ns",
        json!({"nqn": NQN, "nsid": "1"}),
        INVALID_PARAMS,
    );
    assert_eq!(
        t.ok("nvmf_subsystem_remove_ns", json!({"nqn": NQN, "nsid": 1})),
        true
    );
    assert_eq!(
        t.ok("bdev_get_bdevs", json!({"name": "M0"}))[0]["claimed"],
        false
    );
    assert_eq!(t.ok("bdev_malloc_delete", json!({"name": "M0"})), true);
    // Deleting the subsystem releases its namespaces' bdevs.
    t.ok("nvmf_delete_subsystem", json!({"nqn": NQN}));
    assert_eq!(t.ok("bdev_malloc_delete", json!({"name": "M1"})), true);
}

#[test]
fn listeners_open_and_close_sockets() {
    let t = TestDaemon::start();
    t.ok("nvmf_create_subsystem", json!({"nqn": NQN}));
    let port = free_port();
    // Without a transport, SPDK refuses listeners.
    t.err(
        "nvmf_subsystem_add_listener",
        listener(NQN, port),
        INVALID_PARAMS,
    );
    t.ok("nvmf_create_transport", json!({"trtype": "TCP"}));

    assert!(!connects(port));
    assert_eq!(
        t.ok("nvmf_subsystem_add_listener", listener(NQN, port)),
        true
    );
    assert!(connects(port), "the listener accepts connections");
    let m = t.err(
        "nvmf_subsystem_add_listener",
        listener(NQN, port),
        INVALID_PARAMS,
    );
    assert!(m.contains("already exists"), "{m}");
    let addrs = t.ok("nvmf_get_subsystems", json!({"nqn": NQN}))[0]["listen_addresses"].clone();
    assert_eq!(
        addrs,
        json!([{"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1",
                "trsvcid": port.to_string()}])
    );
    let l = t.ok("nvmf_subsystem_get_listeners", json!({"nqn": NQN}));
    assert_eq!(l[0]["address"], addrs[0]);

    // The discovery subsystem shares the socket; removing one user keeps it open.
    t.ok("nvmf_subsystem_add_listener", listener(DISCOVERY, port));
    t.ok("nvmf_subsystem_remove_listener", listener(NQN, port));
    assert!(connects(port), "still used by the discovery subsystem");
    t.ok("nvmf_subsystem_remove_listener", listener(DISCOVERY, port));
    assert!(wait_connects(port, false), "closed with its last user");
    t.err(
        "nvmf_subsystem_remove_listener",
        listener(NQN, port),
        INVALID_PARAMS,
    );

    // A port taken by someone else: the error names the address.
    let squatter = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = squatter.local_addr().expect("addr").port();
    let m = t.err(
        "nvmf_subsystem_add_listener",
        listener(NQN, taken),
        INVALID_PARAMS,
    );
    assert!(m.contains(&format!("127.0.0.1:{taken}")), "{m}");
    assert_eq!(
        t.ok("nvmf_get_subsystems", json!({"nqn": NQN}))[0]["listen_addresses"],
        json!([])
    );

    // Bad addresses.
    let mut p = listener(NQN, port);
    p["listen_address"]["trtype"] = json!("RDMA");
    t.err("nvmf_subsystem_add_listener", p, INVALID_PARAMS);
    let mut p = listener(NQN, port);
    p["listen_address"]["adrfam"] = json!("ipv6");
    t.err("nvmf_subsystem_add_listener", p, INVALID_PARAMS);
    let mut p = listener(NQN, port);
    p["listen_address"]["traddr"] = json!("localhost.invalid");
    t.err("nvmf_subsystem_add_listener", p, INVALID_PARAMS);
    let mut p = listener(NQN, port);
    p["listen_address"]["trsvcid"] = json!("70000");
    t.err("nvmf_subsystem_add_listener", p, INVALID_PARAMS);
    let mut p = listener(NQN, port);
    p["listen_address"]
        .as_object_mut()
        .map(|m| m.remove("trsvcid"));
    t.err("nvmf_subsystem_add_listener", p, INVALID_PARAMS);
    t.err(
        "nvmf_subsystem_add_listener",
        listener("nqn.2016-06.io.shoal:none", port),
        INVALID_PARAMS,
    );
    // SPDK's legacy `transport` spelling and a missing adrfam (IPv4) are accepted.
    let legacy = json!({"nqn": NQN, "listen_address": {"transport": "TCP",
                        "traddr": "127.0.0.1", "trsvcid": port.to_string()}});
    t.ok("nvmf_subsystem_add_listener", legacy);
    assert!(connects(port));
    // Deleting the subsystem closes its listeners.
    t.ok("nvmf_delete_subsystem", json!({"nqn": NQN}));
    assert!(wait_connects(port, false));
}

#[test]
fn ignored_tgt_name_and_unknown_methods() {
    let t = with_subsystem();
    t.ok("nvmf_get_subsystems", json!({"tgt_name": "nvmf_tgt"}));
    t.err(
        "nvmf_get_subsystems",
        json!({"tgt_name": "t2"}),
        INTERNAL_ERROR,
    );
    t.err(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "x"},
                                          "tgt_name": "t2"}),
        INTERNAL_ERROR,
    );
    let m = t.err("nvmf_frobnicate", Value::Null, -32601);
    assert!(m.contains("nvmf_frobnicate"), "{m}");
}
