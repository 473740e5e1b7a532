//! Every typed params struct decodes the exact requests SPDK's `rpc.py` sends
//! (`tests/rpc_fixtures.json`, produced by `rpc.py --dry-run`; see `rpc_fixtures_gen.py`).

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use shoal_target::rpc::params::bdev::{
    BdevDelayCreate, BdevDelayUpdateLatency, BdevDelete, BdevErrorCreate, BdevErrorInjectError,
    BdevGetBdevs, BdevGetIostat, BdevMallocCreate, BdevNullCreate, BdevUringCreate,
    DelayLatencyType, ErrorIoType, ErrorKind, IostatResetMode,
};
use shoal_target::rpc::params::misc::{FrameworkGetConfig, RpcGetMethods, SpdkKillInstance};
use shoal_target::rpc::params::nvmf::{
    DISCOVERY_NQN, NvmfCreateSubsystem, NvmfCreateTransport, NvmfGetStats, NvmfGetSubsystems,
    NvmfGetTransports, NvmfSubsystemAddHost, NvmfSubsystemAddNs, NvmfSubsystemAllowAnyHost,
    NvmfSubsystemListener, NvmfSubsystemRef, NvmfSubsystemRemoveHost, NvmfSubsystemRemoveNs,
};
use shoal_target::rpc::params::{NoParams, is_housekeeping};
use shoal_target::rpc::{RpcError, RpcParams, decode_params};

const FIXTURES: &str = include_str!("rpc_fixtures.json");

/// Decodes, re-encodes and re-decodes: the typed struct is a faithful model of the request.
fn check<P>(method: &str, params: Option<Value>) -> Result<Vec<&'static str>, RpcError>
where
    P: DeserializeOwned + Serialize + RpcParams + PartialEq + Debug,
{
    let typed: P = decode_params(method, params)?;
    let again: P = decode_params(method, Some(serde_json::to_value(&typed).expect("encode")))
        .expect("re-decode");
    assert_eq!(typed, again, "{method}");
    Ok(typed.ignored_knobs())
}

/// The params type of each method; `None` for SPDK housekeeping methods.
fn decode(method: &str, p: Option<Value>) -> Option<Result<Vec<&'static str>, RpcError>> {
    Some(match method {
        "rpc_get_methods" => check::<RpcGetMethods>(method, p),
        "spdk_get_version"
        | "framework_start_init"
        | "framework_wait_init"
        | "framework_get_subsystems"
        | "bdev_wait_for_examine" => check::<NoParams>(method, p),
        "framework_get_config" => check::<FrameworkGetConfig>(method, p),
        "spdk_kill_instance" => check::<SpdkKillInstance>(method, p),
        "bdev_malloc_create" => check::<BdevMallocCreate>(method, p),
        "bdev_null_create" => check::<BdevNullCreate>(method, p),
        "bdev_uring_create" => check::<BdevUringCreate>(method, p),
        "bdev_malloc_delete" | "bdev_null_delete" | "bdev_uring_delete" | "bdev_error_delete"
        | "bdev_delay_delete" => check::<BdevDelete>(method, p),
        "bdev_get_bdevs" => check::<BdevGetBdevs>(method, p),
        "bdev_get_iostat" => check::<BdevGetIostat>(method, p),
        "bdev_error_create" => check::<BdevErrorCreate>(method, p),
        "bdev_error_inject_error" => check::<BdevErrorInjectError>(method, p),
        "bdev_delay_create" => check::<BdevDelayCreate>(method, p),
        "bdev_delay_update_latency" => check::<BdevDelayUpdateLatency>(method, p),
        "nvmf_create_transport" => check::<NvmfCreateTransport>(method, p),
        "nvmf_get_transports" => check::<NvmfGetTransports>(method, p),
        "nvmf_create_subsystem" => check::<NvmfCreateSubsystem>(method, p),
        "nvmf_delete_subsystem"
        | "nvmf_subsystem_get_controllers"
        | "nvmf_subsystem_get_qpairs"
        | "nvmf_subsystem_get_listeners" => check::<NvmfSubsystemRef>(method, p),
        "nvmf_get_subsystems" => check::<NvmfGetSubsystems>(method, p),
        "nvmf_subsystem_add_ns" => check::<NvmfSubsystemAddNs>(method, p),
        "nvmf_subsystem_remove_ns" => check::<NvmfSubsystemRemoveNs>(method, p),
        "nvmf_subsystem_add_listener" | "nvmf_subsystem_remove_listener" => {
            check::<NvmfSubsystemListener>(method, p)
        }
        "nvmf_subsystem_add_host" => check::<NvmfSubsystemAddHost>(method, p),
        "nvmf_subsystem_remove_host" => check::<NvmfSubsystemRemoveHost>(method, p),
        "nvmf_subsystem_allow_any_host" => check::<NvmfSubsystemAllowAnyHost>(method, p),
        "nvmf_get_stats" => check::<NvmfGetStats>(method, p),
        _ => return None,
    })
}

#[test]
fn every_rpc_py_request_decodes() {
    let fixtures: Vec<Value> = serde_json::from_str(FIXTURES).expect("fixtures");
    assert!(fixtures.len() >= 60);
    let mut typed = 0;
    for f in &fixtures {
        let req = &f["request"];
        assert_eq!(req["jsonrpc"], "2.0");
        let method = req["method"].as_str().expect("method");
        let params = req.get("params").cloned();
        match decode(method, params) {
            Some(Ok(knobs)) => {
                typed += 1;
                // Requests built with rpc.py's defaults carry no knob that changes anything.
                if !f["rpc_py"].as_str().expect("cmd").contains(" -z ") {
                    assert!(knobs.is_empty(), "{}: {knobs:?}", f["rpc_py"]);
                }
            }
            Some(Err(e)) => panic!("{}: {e}", f["rpc_py"]),
            None => assert!(is_housekeeping(method), "no params type for {method}"),
        }
    }
    assert!(typed >= 54, "{typed}");
}

fn fixture(cmd_prefix: &str) -> Option<Value> {
    let fixtures: Vec<Value> = serde_json::from_str(FIXTURES).expect("fixtures");
    let f = fixtures
        .into_iter()
        .find(|f| {
            f["rpc_py"]
                .as_str()
                .is_some_and(|c| c.starts_with(cmd_prefix))
        })
        .unwrap_or_else(|| panic!("no fixture {cmd_prefix}"));
    f["request"].get("params").cloned()
}

#[test]
fn decoded_values_match_what_rpc_py_meant() {
    let m: BdevMallocCreate =
        decode_params("bdev_malloc_create", fixture("bdev_malloc_create -b")).expect("malloc");
    assert_eq!(
        (m.num_blocks, m.block_size, m.name.as_deref()),
        (131_072, 512, Some("Malloc0"))
    );

    let t: NvmfCreateTransport = decode_params(
        "nvmf_create_transport",
        fixture("nvmf_create_transport -t TCP -q"),
    )
    .expect("transport");
    assert_eq!(t.trtype, "TCP");
    assert_eq!(t.max_queue_depth, Some(128));
    assert_eq!(t.io_qpairs_per_ctrlr(), Some(7));
    assert_eq!(t.in_capsule_data_size, Some(4096));
    assert_eq!(t.max_io_size, Some(131_072));
    assert_eq!(t.c2h_success, Some(false)); // -o disables it
    let mut knobs = t.ignored_knobs();
    knobs.sort_unstable();
    assert_eq!(
        knobs,
        [
            "abort_timeout_sec",
            "control_msg_num",
            "iobuf_small_cache_size",
            "kas",
            "min_kato",
            "zcopy"
        ]
    );

    let ns: NvmfSubsystemAddNs = decode_params(
        "nvmf_subsystem_add_ns",
        fixture("nvmf_subsystem_add_ns nqn.2016-06.io.spdk:cnode1 Malloc0 -n"),
    )
    .expect("add_ns");
    assert_eq!(ns.namespace.nsid, Some(1));
    assert_eq!(
        ns.namespace.nguid.expect("nguid").to_string(),
        "0123456789ABCDEF0123456789ABCDEF"
    );
    assert_eq!(
        ns.namespace.eui64.expect("eui64").0,
        [0xAB, 0xCD, 0xEF, 0x01, 0x23, 0x45, 0x67, 0x89]
    );

    let l: NvmfSubsystemListener = decode_params(
        "nvmf_subsystem_add_listener",
        fixture("nvmf_subsystem_add_listener discovery"),
    )
    .expect("listener");
    assert_eq!(l.nqn, DISCOVERY_NQN);
    assert_eq!(l.listen_address.transport_type().expect("trtype"), "tcp");
    assert_eq!(l.listen_address.address_family(), "ipv4");
    assert_eq!(l.listen_address.trsvcid.as_deref(), Some("8009"));

    let e: BdevErrorInjectError = decode_params(
        "bdev_error_inject_error",
        fixture("bdev_error_inject_error EE_Malloc0 all"),
    )
    .expect("inject");
    assert_eq!(
        (e.io_type, e.error_type, e.count()),
        (ErrorIoType::All, ErrorKind::CorruptData, 1)
    );
    assert_eq!(
        (e.corrupt_offset, e.corrupt_value, e.queue_depth),
        (Some(512), Some(255), Some(4))
    );
    let clear: BdevErrorInjectError = decode_params(
        "bdev_error_inject_error",
        fixture("bdev_error_inject_error EE_Malloc0 clear"),
    )
    .expect("clear");
    assert_eq!(clear.count(), 1);

    let u: BdevDelayUpdateLatency = decode_params(
        "bdev_delay_update_latency",
        fixture("bdev_delay_update_latency"),
    )
    .expect("delay");
    assert_eq!(
        (u.latency_type, u.latency_us),
        (DelayLatencyType::P99Write, 5000)
    );

    let s: BdevGetIostat =
        decode_params("bdev_get_iostat", fixture("bdev_get_iostat -c")).expect("iostat");
    assert_eq!(s.reset_mode, Some(IostatResetMode::Maxmin));
    assert_eq!(s.names.as_deref(), Some(&["Malloc0".to_owned()][..]));

    let a: NvmfSubsystemAllowAnyHost = decode_params(
        "nvmf_subsystem_allow_any_host",
        fixture("nvmf_subsystem_allow_any_host nqn.2016-06.io.spdk:cnode1 --no"),
    )
    .expect("allow");
    assert!(!a.allow_any_host);

    // Older rpc.py versions and SPDK-saved configs use these spellings too.
    let old: NvmfCreateTransport = decode_params(
        "nvmf_create_transport",
        Some(
            json!({"trtype": "TCP", "max_qpairs_per_ctrlr": 8, "io_unit_size": 131072,
                    "num_shared_buffers": 511, "buf_cache_size": 4294967295u64,
                    "sock_priority": 0, "abort_timeout_sec": 1}),
        ),
    )
    .expect("old transport");
    assert_eq!(old.io_qpairs_per_ctrlr(), Some(7));
    let legacy: NvmfSubsystemListener = decode_params(
        "nvmf_subsystem_remove_listener",
        Some(json!({"nqn": "nqn.x", "listen_address": {"transport": "TCP", "traddr": "::1", "adrfam": "IPv6"}})),
    )
    .expect("legacy listener");
    assert_eq!(legacy.listen_address.transport_type().expect("tr"), "TCP");
}

#[test]
fn unknown_and_malformed_fields_are_named() {
    let err = |method: &str, p: Value| -> String {
        decode(method, Some(p))
            .expect("known method")
            .expect_err("must fail")
            .message
    };
    assert_eq!(
        err(
            "bdev_uring_create",
            json!({"name": "u", "filename": "/f", "bogus": true})
        ),
        "bdev_uring_create: unknown field `bogus`, expected one of `name`, `filename`, `block_size`, `uuid`"
    );
    assert!(
        err(
            "nvmf_subsystem_add_ns",
            json!({"nqn": "n", "namespace": {"bdev_name": "b", "x": 1}})
        )
        .starts_with("nvmf_subsystem_add_ns: in `namespace`: unknown field `x`")
    );
    assert_eq!(
        err(
            "nvmf_subsystem_add_ns",
            json!({"nqn": "n", "namespace": {"bdev_name": "b", "nguid": "12"}})
        ),
        "nvmf_subsystem_add_ns: invalid `namespace.nguid`: expected 32 hexadecimal digits, got `12`"
    );
    assert!(
        err(
            "nvmf_subsystem_add_listener",
            json!({"nqn": "n", "listen_address": {"trtype": "tcp"}})
        )
        .starts_with(
            "nvmf_subsystem_add_listener: invalid `listen_address`: missing field `traddr`"
        )
    );
    assert!(
        err("nvmf_create_transport", json!({"trtype": "TCP", "max_queue_depth": 70000}))
            .starts_with("nvmf_create_transport: invalid `max_queue_depth`: invalid value: integer `70000`, expected u16")
    );
    assert!(
        err(
            "bdev_error_inject_error",
            json!({"name": "e", "io_type": "read", "error_type": "explode"})
        )
        .starts_with("bdev_error_inject_error: invalid `error_type`: unknown variant `explode`")
    );
    assert!(
        err(
            "bdev_delay_update_latency",
            json!({"delay_bdev_name": "d", "latency_type": "avg", "latency_us": 1})
        )
        .contains("unknown variant `avg`")
    );
    assert_eq!(
        err("nvmf_subsystem_remove_ns", json!({"nqn": "n"})),
        "nvmf_subsystem_remove_ns: missing field `nsid`"
    );
    assert!(err("spdk_get_version", json!({"verbose": true})).contains("unknown field `verbose`"));
    // Knobs are accepted whatever their JSON type, and reported only when not default.
    let knobs = decode(
        "nvmf_create_subsystem",
        Some(json!({"nqn": "n", "ana_reporting": true, "passthrough": false, "dmrsl": 0})),
    )
    .expect("known")
    .expect("decodes");
    assert_eq!(knobs, ["ana_reporting"]);
    let knobs = decode(
        "nvmf_subsystem_add_ns",
        Some(json!({"nqn": "n", "namespace": {"bdev_name": "b", "ptpl_file": "/p", "no_auto_visible": false}})),
    )
    .expect("known")
    .expect("decodes");
    assert_eq!(knobs, ["namespace.ptpl_file"]);
}
