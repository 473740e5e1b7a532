//! The framework methods and `save_config`: the saved document recreates the same daemon
//! (save -> load into a fresh daemon -> save gives the same document).

mod methods_common;

use methods_common::{TempDir, TestDaemon, free_port, listener};
use serde_json::{Value, json};
use shoal_target::config::ConfigDocument;
use shoal_target::rpc::error::{INVALID_PARAMS, INVALID_STATE};

const NQN1: &str = "nqn.2016-06.io.shoal:one";
const NQN2: &str = "nqn.2016-06.io.shoal:two";
const DISCOVERY: &str = "nqn.2014-08.org.nvmexpress.discovery";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:0f8e5b3c-0000-4000-8000-00000000000a";

/// Builds a daemon using every kind of object `save_config` writes.
fn build(t: &TestDaemon, image: &str, ports: (u16, u16)) {
    t.ok(
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 256, "block_size": 4096}),
    );
    t.ok(
        "bdev_null_create",
        json!({"name": "N0", "num_blocks": 1000, "block_size": 512}),
    );
    t.ok(
        "bdev_uring_create",
        json!({"name": "U0", "filename": image}),
    );
    t.ok(
        "bdev_malloc_create",
        json!({"name": "M1", "num_blocks": 64, "block_size": 512}),
    );
    t.ok("bdev_error_create", json!({"base_name": "M1"}));
    t.ok(
        "bdev_delay_create",
        json!({"base_bdev_name": "N0", "name": "D0", "avg_read_latency": 1, "p99_read_latency": 2,
               "avg_write_latency": 3, "p99_write_latency": 4}),
    );
    t.ok(
        "bdev_delay_update_latency",
        json!({"delay_bdev_name": "D0", "latency_type": "p99_write", "latency_us": 99}),
    );
    t.ok(
        "nvmf_create_transport",
        json!({"trtype": "TCP", "max_queue_depth": 64, "in_capsule_data_size": 4096,
               "max_io_qpairs_per_ctrlr": 4, "max_aq_depth": 32, "c2h_success": false,
               "c2h_success_sq_flow_control": false,
               "max_unsent_bytes": 524_288, "ic_timeout_ms": 2500,
               "max_connections_per_listener": 64, "max_connections_per_host": 16}),
    );
    t.ok(
        "nvmf_create_subsystem",
        json!({"nqn": NQN2, "serial_number": "SN2", "model_number": "Two", "max_namespaces": 4,
               "min_cntlid": 10, "max_cntlid": 20}),
    );
    t.ok(
        "nvmf_create_subsystem",
        json!({"nqn": NQN1, "allow_any_host": true}),
    );
    t.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN2, "namespace": {"bdev_name": "EE_M1",
        "nsid": 3, "eui64": "0011223344556677", "nguid": "000102030405060708090A0B0C0D0E0F"}}),
    );
    t.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN2, "namespace": {"bdev_name": "D0"}}),
    );
    t.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN1, "namespace": {"bdev_name": "M0"}}),
    );
    t.ok(
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN2, "host": HOST}),
    );
    t.ok("nvmf_subsystem_add_listener", listener(NQN1, ports.0));
    t.ok("nvmf_subsystem_add_listener", listener(NQN2, ports.0));
    t.ok("nvmf_subsystem_add_listener", listener(DISCOVERY, ports.1));
}

fn methods_of(doc: &Value, subsystem: &str) -> Vec<String> {
    doc["subsystems"]
        .as_array()
        .expect("subsystems")
        .iter()
        .find(|s| s["subsystem"] == subsystem)
        .and_then(|s| s["config"].as_array())
        .expect("config")
        .iter()
        .filter_map(|c| c["method"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn save_load_save_round_trip() {
    let dir = TempDir::new("config");
    let image = dir.path().join("disk.img");
    std::fs::write(&image, vec![0u8; 1 << 20]).expect("image");
    let image = image.to_str().expect("utf-8").to_owned();
    let ports = (free_port(), free_port());

    let t = TestDaemon::start();
    build(&t, &image, ports);
    let saved = t.ok("save_config", json!({}));

    // rpc.py's save_config: framework_get_subsystems, then framework_get_config per subsystem.
    let subs = t.ok("framework_get_subsystems", Value::Null);
    assert_eq!(
        subs,
        json!([{"subsystem": "bdev", "depends_on": []},
               {"subsystem": "nvmf", "depends_on": ["bdev"]}])
    );
    let assembled: Vec<Value> = subs
        .as_array()
        .expect("list")
        .iter()
        .map(|s| {
            let config = t.ok("framework_get_config", json!({"name": s["subsystem"]}));
            json!({"subsystem": s["subsystem"], "config": config})
        })
        .collect();
    assert_eq!(json!({"subsystems": assembled}), saved);
    t.err(
        "framework_get_config",
        json!({"name": "iscsi"}),
        INVALID_PARAMS,
    );

    // What was saved, in SPDK's order.
    assert_eq!(
        methods_of(&saved, "bdev"),
        [
            "bdev_malloc_create",
            "bdev_null_create",
            "bdev_uring_create",
            "bdev_malloc_create",
            "bdev_error_create",
            "bdev_delay_create"
        ]
    );
    assert_eq!(
        methods_of(&saved, "nvmf"),
        [
            "nvmf_create_transport",
            "nvmf_subsystem_add_listener",
            "nvmf_create_subsystem",
            "nvmf_subsystem_add_listener",
            "nvmf_subsystem_add_ns",
            "nvmf_create_subsystem",
            "nvmf_subsystem_add_listener",
            "nvmf_subsystem_add_host",
            "nvmf_subsystem_add_ns",
            "nvmf_subsystem_add_ns"
        ]
    );
    let bdev_cfg = &saved["subsystems"][0]["config"];
    assert_eq!(
        bdev_cfg[5]["params"]["p99_write_latency"], 99,
        "current latencies are saved"
    );
    assert!(bdev_cfg[0]["params"]["uuid"].is_string(), "UUIDs are saved");
    let nvmf_cfg = &saved["subsystems"][1]["config"];
    assert_eq!(nvmf_cfg[0]["params"]["max_queue_depth"], 64);
    assert_eq!(nvmf_cfg[0]["params"]["c2h_success"], false);
    assert_eq!(nvmf_cfg[0]["params"]["c2h_success_sq_flow_control"], false);
    assert_eq!(nvmf_cfg[0]["params"]["max_unsent_bytes"], 524_288);
    assert_eq!(nvmf_cfg[0]["params"]["ic_timeout_ms"], 2500);
    assert_eq!(nvmf_cfg[0]["params"]["max_connections_per_listener"], 64);
    assert_eq!(nvmf_cfg[0]["params"]["max_connections_per_host"], 16);
    assert_eq!(nvmf_cfg[1]["params"]["nqn"], DISCOVERY);

    // Load into a fresh daemon (after this one released its ports) and save again.
    let text = serde_json::to_string_pretty(&saved).expect("json");
    drop(t);
    let t2 = TestDaemon::start();
    let doc = ConfigDocument::parse(&text).expect("parse");
    doc.apply(&t2.registry, &t2.daemon).expect("apply");
    assert_eq!(t2.ok("save_config", json!({})), saved);
    let b = t2.ok("bdev_get_bdevs", json!({"name": "EE_M1"}));
    assert_eq!(b[0]["claimed"], true);
    let s = t2.ok("nvmf_get_subsystems", json!({"nqn": NQN2}));
    assert_eq!(s[0]["namespaces"][0]["bdev_name"], "D0");
    assert_eq!(s[0]["namespaces"][1]["nsid"], 3);
    assert_eq!(s[0]["namespaces"][1]["eui64"], "0011223344556677");
    assert_eq!(s[0]["min_cntlid"], 10);
}

#[test]
fn default_config_round_trips() {
    let (p1, p2) = (free_port(), free_port());
    let text = include_str!("../config/default.json")
        .replace("\"4420\"", &format!("\"{p1}\""))
        .replace("\"8009\"", &format!("\"{p2}\""));
    let t = TestDaemon::start();
    ConfigDocument::parse(&text)
        .expect("parse")
        .apply(&t.registry, &t.daemon)
        .expect("apply");
    assert!(std::net::TcpStream::connect(("127.0.0.1", p1)).is_ok());
    assert!(std::net::TcpStream::connect(("127.0.0.1", p2)).is_ok());
    let saved = t.ok("save_config", json!({}));
    drop(t);
    let t2 = TestDaemon::start();
    ConfigDocument::parse(&saved.to_string())
        .expect("parse")
        .apply(&t2.registry, &t2.daemon)
        .expect("apply");
    assert_eq!(t2.ok("save_config", json!({})), saved);
}

#[test]
fn framework_methods() {
    let t = TestDaemon::start();
    let m = t.err("framework_start_init", Value::Null, INVALID_STATE);
    assert!(m.contains("before framework is initialized"), "{m}");
    assert_eq!(t.ok("framework_wait_init", Value::Null), true);
    t.err("framework_wait_init", json!({"x": 1}), INVALID_PARAMS);
    let all = t.ok("rpc_get_methods", json!({}));
    let names: Vec<&str> = all
        .as_array()
        .expect("list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for m in [
        "bdev_malloc_create",
        "bdev_malloc_delete",
        "bdev_null_create",
        "bdev_null_delete",
        "bdev_uring_create",
        "bdev_uring_delete",
        "bdev_get_bdevs",
        "bdev_get_iostat",
        "bdev_error_create",
        "bdev_error_delete",
        "bdev_error_inject_error",
        "bdev_delay_create",
        "bdev_delay_delete",
        "bdev_delay_update_latency",
        "nvmf_create_transport",
        "nvmf_get_transports",
        "nvmf_create_subsystem",
        "nvmf_delete_subsystem",
        "nvmf_get_subsystems",
        "nvmf_subsystem_add_ns",
        "nvmf_subsystem_remove_ns",
        "nvmf_subsystem_add_listener",
        "nvmf_subsystem_remove_listener",
        "nvmf_subsystem_get_listeners",
        "nvmf_subsystem_add_host",
        "nvmf_subsystem_remove_host",
        "nvmf_subsystem_allow_any_host",
        "nvmf_subsystem_get_controllers",
        "nvmf_subsystem_get_qpairs",
        "nvmf_get_stats",
        "framework_start_init",
        "framework_wait_init",
        "framework_get_subsystems",
        "framework_get_config",
        "save_config",
        "spdk_get_version",
        "rpc_get_methods",
        "spdk_kill_instance",
        "sock_impl_set_options",
    ] {
        assert!(names.contains(&m), "{m} missing from rpc_get_methods");
    }
    let current = t.ok("rpc_get_methods", json!({"current": true}));
    assert!(
        !current
            .as_array()
            .expect("list")
            .contains(&json!("framework_start_init"))
    );
    // SPDK housekeeping is accepted and ignored.
    assert_eq!(
        t.ok(
            "sock_impl_set_options",
            json!({"impl_name": "posix", "recv_buf_size": 2097152})
        ),
        true
    );
    t.err(
        "spdk_kill_instance",
        json!({"sig_name": "SIGUSR9"}),
        INVALID_PARAMS,
    );
    t.err("spdk_kill_instance", json!({}), INVALID_PARAMS);
    assert!(
        t.ok("spdk_get_version", Value::Null)["version"]
            .as_str()
            .is_some()
    );
}

#[test]
fn framework_start_init_moves_to_runtime() {
    let t = TestDaemon::start();
    t.registry.state().set(shoal_target::rpc::RpcState::Startup);
    t.err("bdev_get_bdevs", json!({}), INVALID_STATE);
    assert_eq!(t.ok("framework_start_init", Value::Null), true);
    t.ok("bdev_get_bdevs", json!({}));
}
