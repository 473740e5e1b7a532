//! SPDK JSON config files: loading, method policy, ordering, errors, and save round trips.

mod rpc_common;

use std::sync::Mutex;

use rpc_common::TempDir;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use shoal_target::config::{ConfigDocument, ConfigError};
use shoal_target::rpc::params::bdev::BdevMallocCreate;
use shoal_target::rpc::params::nvmf::{
    NvmfCreateSubsystem, NvmfCreateTransport, NvmfSubsystemAddHost, NvmfSubsystemAddNs,
    NvmfSubsystemListener,
};
use shoal_target::rpc::{Registry, RpcError, RpcParams};

/// What `rpc.py save_config` printed for an `nvmf_tgt` (SPDK v24.x) with one malloc namespace
/// exported over TCP: SPDK's defaults for every housekeeping option.
const SPDK_SAVED: &str = r#"{
  "subsystems": [
    {"subsystem": "keyring", "config": []},
    {"subsystem": "iobuf", "config": [
      {"method": "iobuf_set_options", "params": {"small_pool_count": 8192, "large_pool_count": 1024,
        "small_bufsize": 8192, "large_bufsize": 135168}}]},
    {"subsystem": "sock", "config": [
      {"method": "sock_set_default_impl", "params": {"impl_name": "posix"}},
      {"method": "sock_impl_set_options", "params": {"impl_name": "ssl", "recv_buf_size": 4096,
        "send_buf_size": 4096, "enable_recv_pipe": true, "enable_quickack": false,
        "enable_placement_id": 0, "enable_zerocopy_send_server": true,
        "enable_zerocopy_send_client": false, "zerocopy_threshold": 0, "tls_version": 0,
        "enable_ktls": false}},
      {"method": "sock_impl_set_options", "params": {"impl_name": "posix", "recv_buf_size": 2097152,
        "send_buf_size": 2097152, "enable_recv_pipe": true, "enable_quickack": false,
        "enable_placement_id": 0, "enable_zerocopy_send_server": true,
        "enable_zerocopy_send_client": false, "zerocopy_threshold": 0, "tls_version": 0,
        "enable_ktls": false}}]},
    {"subsystem": "vmd", "config": []},
    {"subsystem": "accel", "config": [
      {"method": "accel_set_options", "params": {"small_cache_size": 128, "large_cache_size": 16,
        "task_count": 2048, "sequence_count": 2048, "buf_count": 2048}}]},
    {"subsystem": "bdev", "config": [
      {"method": "bdev_set_options", "params": {"bdev_io_pool_size": 65535, "bdev_io_cache_size": 256,
        "bdev_auto_examine": true, "iobuf_small_cache_size": 128, "iobuf_large_cache_size": 16}},
      {"method": "bdev_raid_set_options", "params": {"process_window_size_kb": 1024}},
      {"method": "bdev_iscsi_set_options", "params": {"timeout_sec": 30}},
      {"method": "bdev_nvme_set_options", "params": {"action_on_timeout": "none", "timeout_us": 0,
        "timeout_admin_us": 0, "keep_alive_timeout_ms": 10000, "arbitration_burst": 0,
        "transport_retry_count": 4, "bdev_retry_count": 3, "generate_uuids": false}},
      {"method": "bdev_nvme_set_hotplug", "params": {"period_us": 100000, "enable": false}},
      {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": 131072,
        "block_size": 512, "physical_block_size": 512,
        "uuid": "0b8e1e5a-6c4a-4f3e-9d5e-2a9f4f2b7c11", "optimal_io_boundary": 0,
        "md_size": 0, "dif_type": 0, "dif_is_head_of_md": false, "dif_pi_format": 0}},
      {"method": "bdev_wait_for_examine"}]},
    {"subsystem": "scsi", "config": null},
    {"subsystem": "scheduler", "config": [
      {"method": "framework_set_scheduler", "params": {"name": "static"}}]},
    {"subsystem": "nvmf", "config": [
      {"method": "nvmf_set_config", "params": {"discovery_filter": "match_any",
        "admin_cmd_passthru": {"identify_ctrlr": false}}},
      {"method": "nvmf_set_max_subsystems", "params": {"max_subsystems": 1024}},
      {"method": "nvmf_set_crdt", "params": {"crdt1": 0, "crdt2": 0, "crdt3": 0}},
      {"method": "nvmf_create_transport", "params": {"trtype": "TCP", "max_queue_depth": 128,
        "max_io_qpairs_per_ctrlr": 127, "in_capsule_data_size": 4096, "max_io_size": 131072,
        "io_unit_size": 131072, "max_aq_depth": 128, "num_shared_buffers": 511,
        "buf_cache_size": 4294967295, "dif_insert_or_strip": false, "zcopy": false,
        "c2h_success": true, "sock_priority": 0, "abort_timeout_sec": 1, "ack_timeout": 0,
        "data_wr_pool_size": 0}},
      {"method": "nvmf_create_subsystem", "params": {"nqn": "nqn.2016-06.io.spdk:cnode1",
        "allow_any_host": false, "serial_number": "SPDK00000000000001",
        "model_number": "SPDK bdev Controller", "max_namespaces": 32, "min_cntlid": 1,
        "max_cntlid": 65519, "ana_reporting": false}},
      {"method": "nvmf_subsystem_add_host", "params": {"nqn": "nqn.2016-06.io.spdk:cnode1",
        "host": "nqn.2014-08.org.nvmexpress:uuid:host1"}},
      {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "nqn.2016-06.io.spdk:cnode1",
        "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1",
          "trsvcid": "4420"}, "secure_channel": false}},
      {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "nqn.2016-06.io.spdk:cnode1",
        "namespace": {"nsid": 1, "bdev_name": "Malloc0",
          "nguid": "0B8E1E5A6C4A4F3E9D5E2A9F4F2B7C11",
          "uuid": "0b8e1e5a-6c4a-4f3e-9d5e-2a9f4f2b7c11", "no_auto_visible": false}}}]}
  ]
}"#;

/// Records every call it applies; methods use the real typed params.
#[derive(Default)]
struct Log(Mutex<Vec<String>>);

fn rec<P: DeserializeOwned + RpcParams + 'static>(r: &mut Registry<Log>, name: &'static str) {
    r.register(name, move |log: &Log, p: P| {
        let _ = p;
        log.0.lock().expect("lock").push(name.to_owned());
        Ok(Value::Bool(true))
    });
}

fn registry() -> Registry<Log> {
    let mut r = Registry::new();
    r.register("bdev_malloc_create", |log: &Log, p: BdevMallocCreate| {
        let mut v = log.0.lock().expect("lock");
        let name = p.name.unwrap_or_default();
        if v.contains(&format!("bdev:{name}")) {
            return Err(RpcError::already_exists(format!("bdev {name}")));
        }
        v.push("bdev_malloc_create".to_owned());
        v.push(format!("bdev:{name}"));
        Ok(json!(name))
    });
    rec::<NvmfCreateTransport>(&mut r, "nvmf_create_transport");
    rec::<NvmfCreateSubsystem>(&mut r, "nvmf_create_subsystem");
    rec::<NvmfSubsystemAddHost>(&mut r, "nvmf_subsystem_add_host");
    rec::<NvmfSubsystemListener>(&mut r, "nvmf_subsystem_add_listener");
    rec::<NvmfSubsystemAddNs>(&mut r, "nvmf_subsystem_add_ns");
    r
}

fn applied(log: &Log) -> Vec<String> {
    log.0
        .lock()
        .expect("lock")
        .iter()
        .filter(|s| !s.starts_with("bdev:"))
        .cloned()
        .collect()
}

const EXPECTED: [&str; 5] = [
    "bdev_malloc_create",
    "nvmf_create_transport",
    "nvmf_create_subsystem",
    "nvmf_subsystem_add_host",
    "nvmf_subsystem_add_listener",
];

#[test]
fn a_config_saved_by_spdk_applies() {
    let doc = ConfigDocument::parse(SPDK_SAVED).expect("parse");
    let log = Log::default();
    let plan = doc.apply(&registry(), &log).expect("apply");
    let mut want: Vec<&str> = EXPECTED.to_vec();
    want.push("nvmf_subsystem_add_ns");
    assert_eq!(applied(&log), want);
    let ignored: Vec<&str> = plan.ignored.iter().map(|c| c.method.as_str()).collect();
    assert_eq!(
        ignored,
        [
            "iobuf_set_options",
            "sock_set_default_impl",
            "sock_impl_set_options",
            "sock_impl_set_options",
            "accel_set_options",
            "framework_set_scheduler",
            "bdev_set_options",
            "bdev_raid_set_options",
            "bdev_iscsi_set_options",
            "bdev_nvme_set_options",
            "bdev_nvme_set_hotplug",
            "bdev_wait_for_examine",
            "nvmf_set_config",
            "nvmf_set_max_subsystems",
            "nvmf_set_crdt",
        ]
    );
    let first = plan.apply.first().expect("calls");
    assert_eq!((first.subsystem.as_str(), first.index), ("bdev", 5));
}

#[test]
fn bdev_is_applied_before_nvmf_whatever_the_file_order() {
    let mut v: Value = serde_json::from_str(SPDK_SAVED).expect("json");
    v["subsystems"].as_array_mut().expect("array").reverse();
    let doc = ConfigDocument::parse(&v.to_string()).expect("parse");
    assert_eq!(doc.subsystems.first().expect("first").subsystem, "nvmf");
    let log = Log::default();
    doc.apply(&registry(), &log).expect("apply");
    assert_eq!(
        applied(&log).first().map(String::as_str),
        Some("bdev_malloc_create")
    );
}

#[test]
fn unknown_methods_are_refused_by_name_before_anything_is_applied() {
    let mut v: Value = serde_json::from_str(SPDK_SAVED).expect("json");
    v["subsystems"][5]["config"].as_array_mut().expect("bdev config").insert(
        1,
        json!({"method": "bdev_nvme_attach_controller", "params": {"name": "Nvme0", "trtype": "PCIe", "traddr": "0000:01:00.0"}}),
    );
    let doc = ConfigDocument::parse(&v.to_string()).expect("parse");
    let log = Log::default();
    let err = doc.apply(&registry(), &log).expect_err("unknown method");
    match &err {
        ConfigError::UnknownMethod {
            subsystem,
            index,
            method,
        } => {
            assert_eq!(
                (subsystem.as_str(), *index, method.as_str()),
                ("bdev", 1, "bdev_nvme_attach_controller")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "config: subsystem `bdev`, config[1]: method `bdev_nvme_attach_controller` is not supported by Shoal"
    );
    assert!(applied(&log).is_empty());
}

#[test]
fn a_failing_call_names_its_place() {
    let text = r#"{"subsystems":[{"subsystem":"bdev","config":[
        {"method":"bdev_malloc_create","params":{"name":"M","num_blocks":8,"block_size":512}},
        {"method":"bdev_malloc_create","params":{"name":"M","num_blocks":8,"block_size":512}}]}]}"#;
    let err = ConfigDocument::parse(text)
        .expect("parse")
        .apply(&registry(), &Log::default())
        .expect_err("duplicate");
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "config: subsystem `bdev`, config[1]: bdev_malloc_create failed: File exists"
        ),
        "{msg}"
    );
    assert!(matches!(
        err,
        ConfigError::Apply {
            error: RpcError { code: -17, .. },
            ..
        }
    ));
    // Bad params in a config are reported the same way, with the field named.
    let text = r#"{"subsystems":[{"subsystem":"nvmf","config":[
        {"method":"nvmf_create_transport","params":{"trtype":"TCP","max_queue_depth":"deep"}}]}]}"#;
    let msg = ConfigDocument::parse(text)
        .expect("parse")
        .apply(&registry(), &Log::default())
        .expect_err("bad type")
        .to_string();
    assert!(msg.contains("config[0]: nvmf_create_transport failed: nvmf_create_transport: invalid `max_queue_depth`"), "{msg}");
}

#[test]
fn malformed_configs_name_the_line() {
    let missing_comma = "{\n  \"subsystems\": [\n    {\"subsystem\": \"bdev\", \"config\": [\n      {\"method\": \"bdev_malloc_create\"}\n      {\"method\": \"x\"}\n    ]}\n  ]\n}\n";
    match ConfigDocument::parse(missing_comma) {
        Err(ConfigError::Syntax { line, message, .. }) => {
            assert_eq!(line, 5, "{message}");
            assert!(message.contains("line 5"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let bad_shape = "{\"subsystems\": [\n {\"subsystem\": \"bdev\",\n  \"config\": \"oops\"}]}";
    match ConfigDocument::parse(bad_shape) {
        Err(ConfigError::Syntax { line, message, .. }) => assert_eq!(line, 3, "{message}"),
        other => panic!("{other:?}"),
    }
    let unknown_key = "{\"subsystems\": [{\"subsystem\": \"bdev\", \"config\": [], \"extra\": 1}]}";
    assert!(matches!(
        ConfigDocument::parse(unknown_key),
        Err(ConfigError::Syntax { .. })
    ));
    for (entry, want) in [
        (r#"{"params": {}}"#, "missing field `method`"),
        (
            r#"{"method": "m", "parameters": {}}"#,
            "method `m`: unknown field `parameters`",
        ),
        (
            r#"{"method": "m", "params": [1]}"#,
            "method `m`: `params` must be an object",
        ),
        (r#"[[{"method": "m"}]]"#, "nested batch"),
    ] {
        let text = format!(
            r#"{{"subsystems":[{{"subsystem":"nvmf","config":[{{"method":"a"}},{entry}]}}]}}"#
        );
        match ConfigDocument::parse(&text) {
            Err(e @ ConfigError::Entry { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.starts_with("config: subsystem `nvmf`, config[1]: "),
                    "{msg}"
                );
                assert!(msg.contains(want), "{msg}");
            }
            other => panic!("{entry}: {other:?}"),
        }
    }
}

#[test]
fn comments_batches_nulls_and_missing_subsystems() {
    let text = r#"// Shoal test config
{
  /* subsystems
     in file order */
  "subsystems": [
    {"subsystem": "bdev", "config": [
      [{"method": "bdev_malloc_create", "params": {"name": "A//B", "num_blocks": 8, "block_size": 512}},
       {"method": "bdev_malloc_create", "params": {"name": "C/*D*/", "num_blocks": 8, "block_size": 512}}],
      {"method": "bdev_wait_for_examine", "params": null}
    ]},
    {"subsystem": "vhost_blk", "config": null},
    {"subsystem": "ublk", "config": []}
  ],
  "comment": "other root keys are ignored"
}"#;
    let doc = ConfigDocument::parse(text).expect("parse");
    let calls = doc.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0].params.as_ref().expect("p")["name"], "A//B");
    assert_eq!(calls[1].params.as_ref().expect("p")["name"], "C/*D*/");
    assert_eq!(calls[2].params, None);
    let log = Log::default();
    doc.apply(&registry(), &log).expect("apply");
    assert_eq!(applied(&log), ["bdev_malloc_create", "bdev_malloc_create"]);

    assert!(
        ConfigDocument::parse("{}")
            .expect("empty")
            .calls()
            .is_empty()
    );
    // A syntax error after a comment still points at the right line.
    match ConfigDocument::parse("// one\n/* two\n three */\n{\"subsystems\": [,]}") {
        Err(ConfigError::Syntax { line, .. }) => assert_eq!(line, 4),
        other => panic!("{other:?}"),
    }
}

#[test]
fn save_builds_the_same_format_and_round_trips() {
    let mut doc = ConfigDocument::default();
    doc.push(
        "nvmf",
        "nvmf_create_transport",
        Some(json!({"trtype": "TCP", "max_queue_depth": 128})),
    );
    doc.push(
        "bdev",
        "bdev_malloc_create",
        Some(json!({"name": "Malloc0", "num_blocks": 8, "block_size": 512})),
    );
    doc.push(
        "nvmf",
        "nvmf_create_subsystem",
        Some(json!({"nqn": "nqn.2016-06.io.spdk:cnode1"})),
    );
    doc.ensure_subsystem("sock");
    doc.ensure_subsystem("bdev");
    let names: Vec<&str> = doc
        .subsystems
        .iter()
        .map(|s| s.subsystem.as_str())
        .collect();
    assert_eq!(names, ["sock", "bdev", "nvmf"]);

    let text = doc.to_json_pretty().expect("json");
    let v: Value = serde_json::from_str(&text).expect("valid json");
    assert_eq!(
        v["subsystems"][0],
        json!({"subsystem": "sock", "config": []})
    );
    assert_eq!(
        v["subsystems"][2]["config"][0],
        json!({"method": "nvmf_create_transport", "params": {"trtype": "TCP", "max_queue_depth": 128}})
    );
    let back = ConfigDocument::parse(&text).expect("reparse");
    assert_eq!(back, doc);
    assert_eq!(back.calls(), doc.calls());

    // framework_get_subsystems / framework_get_config, from which rpc.py builds save_config.
    assert_eq!(
        doc.subsystems_json(),
        json!([{"subsystem": "sock", "depends_on": []},
               {"subsystem": "bdev", "depends_on": ["sock"]},
               {"subsystem": "nvmf", "depends_on": ["sock", "bdev"]}])
    );
    assert_eq!(doc.subsystem_json("sock"), Some(json!([])));
    assert_eq!(doc.subsystem_json("nope"), None);

    // An SPDK-saved config survives parse -> save -> parse unchanged.
    let spdk = ConfigDocument::parse(SPDK_SAVED).expect("parse");
    let again = ConfigDocument::parse(&spdk.to_json_pretty().expect("save")).expect("reparse");
    assert_eq!(again, spdk);
    let original: Value = serde_json::from_str(SPDK_SAVED).expect("json");
    let saved: Value = serde_json::to_value(&spdk).expect("value");
    assert_eq!(saved, original);
}

#[test]
fn load_reads_files_and_bounds_their_size() {
    let dir = TempDir::new("rpc-config");
    let path = dir.path().join("shoal.json");
    std::fs::write(&path, SPDK_SAVED).expect("write");
    assert_eq!(ConfigDocument::load(&path).expect("load").calls().len(), 21);
    assert!(matches!(
        ConfigDocument::load(&dir.path().join("missing.json")),
        Err(ConfigError::Read { .. })
    ));
    let big = dir.path().join("big.json");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len(shoal_target::config::MAX_CONFIG_BYTES + 1))
        .expect("sparse file");
    assert!(matches!(
        ConfigDocument::load(&big),
        Err(ConfigError::TooLarge { .. })
    ));
}
