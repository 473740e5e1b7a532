//! The multi-core harness: real `shoald -m 0x3` daemons set up over JSON-RPC, and I/O
//! workers, each a reactor on its own thread of the test process driving queue pairs of
//! Shoal's own NVMe/TCP host with verified writes and reads.
#![allow(dead_code, missing_docs, clippy::cast_possible_truncation)]

pub mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_nvmf::host::{ConnectOptions, Controller};
use shoal_reactor::{Reactor, ReactorConfig, ReactorSet};
use shoal_target::rpc::client::RpcClient;

use super::shoalctl_common::{Shoald, TempDir, free_port};

/// A `shoald -m 0x3` with a TCP transport and one NVMe/TCP port for its subsystems.
pub struct Node {
    pub daemon: Shoald,
    pub rpc: RpcClient,
    /// The NVMe/TCP port every subsystem of this node listens on.
    pub port: u16,
    _dir: TempDir,
}

impl Node {
    /// Starts `shoald -m 0x3` (two reactors, two poll groups) on an empty configuration.
    pub fn start(tag: &str) -> Node {
        let dir = TempDir::new(tag);
        let cfg = dir.path().join("config.json");
        std::fs::write(&cfg, r#"{"subsystems": []}"#).expect("write config");
        let daemon = Shoald::start_with(
            dir.path(),
            &["-m", "0x3", "-c", cfg.to_str().expect("utf-8")],
        );
        let rpc = RpcClient::connect(&daemon.socket).expect("connect to the RPC socket");
        rpc.set_timeout(Some(Duration::from_secs(20)))
            .expect("RPC timeout");
        let mut n = Node {
            daemon,
            rpc,
            port: free_port(),
            _dir: dir,
        };
        n.call("nvmf_create_transport", json!({"trtype": "TCP"}));
        let groups = n.call("nvmf_get_stats", json!({}))["poll_groups"].clone();
        assert_eq!(
            groups.as_array().map(Vec::len),
            Some(2),
            "-m 0x3 gives two poll groups: {groups}"
        );
        n
    }

    /// Calls `method`; panics with the daemon's log on an error.
    #[track_caller]
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        match self.rpc.call(method, Some(params.clone())) {
            Ok(v) => v,
            Err(e) => panic!(
                "{method} {params}: {e}\nshoald log:\n{}",
                self.daemon.log_text()
            ),
        }
    }

    /// A RAM bdev.
    pub fn malloc(&mut self, name: &str, num_blocks: u64, block_size: u32) {
        self.call(
            "bdev_malloc_create",
            json!({"name": name, "num_blocks": num_blocks, "block_size": block_size}),
        );
    }

    /// A subsystem `nqn` with `bdevs` as namespaces 1, 2, ..., listening on [`Node::port`].
    pub fn export(&mut self, nqn: &str, bdevs: &[&str]) {
        self.call(
            "nvmf_create_subsystem",
            json!({"nqn": nqn, "allow_any_host": true}),
        );
        for b in bdevs {
            self.call(
                "nvmf_subsystem_add_ns",
                json!({"nqn": nqn, "namespace": {"bdev_name": b}}),
            );
        }
        let port = self.port.to_string();
        self.call(
            "nvmf_subsystem_add_listener",
            json!({"nqn": nqn, "listen_address": {"trtype": "TCP", "adrfam": "IPv4",
                "traddr": "127.0.0.1", "trsvcid": port}}),
        );
    }

    /// `current_io_qpairs` of each poll group (`nvmf_get_stats`), in poll-group order.
    pub fn io_qpairs_per_group(&mut self) -> Vec<u64> {
        self.group_counts("current_io_qpairs")
    }

    /// `current_admin_qpairs` of each poll group.
    pub fn admin_qpairs_per_group(&mut self) -> Vec<u64> {
        self.group_counts("current_admin_qpairs")
    }

    fn group_counts(&mut self, field: &str) -> Vec<u64> {
        let stats = self.call("nvmf_get_stats", json!({}));
        stats["poll_groups"]
            .as_array()
            .expect("poll_groups")
            .iter()
            .map(|g| g[field].as_u64().expect("a count"))
            .collect()
    }

    /// The poll group (`thread` of `nvmf_subsystem_get_qpairs`) of each I/O queue of
    /// subsystem `nqn`, by (controller ID, queue ID).
    pub fn io_queue_groups(&mut self, nqn: &str) -> BTreeMap<(u16, u16), String> {
        let list = self.call("nvmf_subsystem_get_qpairs", json!({"nqn": nqn}));
        list.as_array()
            .expect("a list")
            .iter()
            .filter(|q| q["qid"].as_u64().is_some_and(|q| q > 0))
            .map(|q| {
                let id = |k: &str| u16::try_from(q[k].as_u64().expect(k)).expect(k);
                let thread = q["thread"].as_str().expect("thread").to_string();
                ((id("cntlid"), id("qid")), thread)
            })
            .collect()
    }

    /// Panics if the daemon's log shows a panic or the daemon has exited.
    #[track_caller]
    pub fn assert_alive(&mut self) {
        let log = self.daemon.log_text();
        assert!(!log.contains("panicked"), "shoald panicked:\n{log}");
        assert!(
            matches!(self.daemon.child.try_wait(), Ok(None)),
            "shoald exited:\n{log}"
        );
    }
}

/// A reactor thread for the host's admin queues.
pub fn admin_reactor() -> ReactorSet {
    ReactorSet::start(&[0], ReactorConfig::default(), Arc::new(|_: &Reactor| {}))
        .expect("start the host's admin reactor")
}

/// Connects Shoal's host to subsystem `nqn` on `port`, asking for `io_queues` I/O queues of
/// depth 32.
pub fn connect(admin: &ReactorSet, port: u16, nqn: &str, io_queues: u16) -> Arc<Controller> {
    let mut o = ConnectOptions::new("127.0.0.1", port, nqn);
    o.io_queues = io_queues;
    o.io_queue_depth = 32;
    o.io_timeout = Duration::from_secs(10);
    Controller::connect(&admin.handles()[0], o).expect("connect the host")
}

/// The data offset of a nexus on its children (the label area: `shoal_replication::label`).
pub const NEXUS_META_BYTES: u64 = 1 << 20;
