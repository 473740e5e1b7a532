//! Params of the NVMe-oF target methods (`lib/nvmf/nvmf_rpc.c`, `lib/nvmf/tcp.c`).
//!
//! `tgt_name` selects one of several SPDK targets; Shoal has one, and handlers should refuse a
//! `tgt_name` other than [`DEFAULT_TGT_NAME`] (SPDK answers `-32603 Unable to find a target.`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{HexBytes, params_knobs};
use crate::rpc::RpcError;

/// The name of SPDK's default NVMe-oF target.
pub const DEFAULT_TGT_NAME: &str = "nvmf_tgt";

/// The NQN `rpc.py` substitutes for the shortcut `discovery`.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// `nvmf_create_transport`. Answers `true`.
///
/// `rpc.py` always sends `no_srq`, `c2h_success` and (v25+) every `store_true` flag; configs
/// saved by SPDK carry its defaults for every option. Shoal honours the typed fields and
/// accepts the others as knobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvmfCreateTransport {
    /// Transport type; Shoal serves `TCP` (case-insensitive).
    pub trtype: String,
    /// Parent target name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tgt_name: Option<String>,
    /// Maximum queue entries per I/O queue (MQES + 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_depth: Option<u16>,
    /// Maximum I/O queue pairs per controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_io_qpairs_per_ctrlr: Option<u16>,
    /// Deprecated form counting the admin queue too (SPDK subtracts one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_qpairs_per_ctrlr: Option<u16>,
    /// In-capsule data size in bytes (data carried in the command capsule, NVMe/TCP 1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_capsule_data_size: Option<u32>,
    /// Maximum data transfer per command in bytes (reported through MDTS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_io_size: Option<u32>,
    /// Admin queue depth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_aq_depth: Option<u32>,
    /// TCP: send C2HData with the SUCCESS flag instead of a separate response capsule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c2h_success: Option<bool>,
    /// Shoal: with `c2h_success`, also on I/O queues whose host kept SQ flow control on, with
    /// a response capsule (SQHD) at least every half queue (default true; false: only where
    /// the host disabled SQ flow control, as the NVMe/TCP specification and Linux have it; for
    /// a host that ignores the flag on a queue with SQ flow control).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c2h_success_sq_flow_control: Option<bool>,
    /// Knob: I/O buffer unit size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_unit_size: Option<Value>,
    /// Knob: shared data buffer count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_shared_buffers: Option<Value>,
    /// Knob: per-poll-group buffer cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buf_cache_size: Option<Value>,
    /// Knob: small iobuf cache per poll group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iobuf_small_cache_size: Option<Value>,
    /// Knob: large iobuf cache per poll group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iobuf_large_cache_size: Option<Value>,
    /// Knob: zero-copy with bdevs that support it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zcopy: Option<Value>,
    /// Knob (RDMA): CQ entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_cqe: Option<Value>,
    /// Knob (RDMA): SRQ depth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_srq_depth: Option<Value>,
    /// Knob (RDMA): disable SRQ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_srq: Option<Value>,
    /// Knob (TCP): DIF insert/strip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dif_insert_or_strip: Option<Value>,
    /// Knob (TCP): `SO_PRIORITY` of connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sock_priority: Option<Value>,
    /// Listen backlog (SPDK: RDMA only; Shoal's TCP listeners take it too). 0 or absent:
    /// `/proc/sys/net/core/somaxconn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceptor_backlog: Option<u32>,
    /// Shoal: bytes of unsent output a connection holds before it stops reading commands
    /// (back-pressure; at least 65536).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unsent_bytes: Option<u32>,
    /// Shoal: milliseconds a new connection has to send its ICReq and connect (0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ic_timeout_ms: Option<u32>,
    /// Shoal: connections a listener holds at once (0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_listener: Option<u32>,
    /// Shoal: connections one host address holds at once on a listener (0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_host: Option<u32>,
    /// Knob: abort execution timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_timeout_sec: Option<Value>,
    /// Knob (RDMA): disable WR batching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_wr_batching: Option<Value>,
    /// Knob (TCP): control messages per poll group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_msg_num: Option<Value>,
    /// Knob (vfio-user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_mappable_bar0: Option<Value>,
    /// Knob (vfio-user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_adaptive_irq: Option<Value>,
    /// Knob (vfio-user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_shadow_doorbells: Option<Value>,
    /// Knob: acceptor poll period in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceptor_poll_rate: Option<Value>,
    /// Knob: ACK timeout in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_timeout: Option<Value>,
    /// Knob (RDMA): data WR pool size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_wr_pool_size: Option<Value>,
    /// Knob: refuse passthrough of unknown opcodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_command_passthru: Option<Value>,
    /// Knob: keep-alive timeout granularity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kas: Option<Value>,
    /// Knob: minimum keep-alive timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kato: Option<Value>,
    /// Knob: ONCS features to mask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked_oncs: Option<Value>,
    /// Knob: FUSES features to mask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked_fuses: Option<Value>,
}
params_knobs!(NvmfCreateTransport {
    io_unit_size,
    num_shared_buffers,
    buf_cache_size,
    iobuf_small_cache_size,
    iobuf_large_cache_size,
    zcopy,
    num_cqe,
    max_srq_depth,
    no_srq,
    dif_insert_or_strip,
    sock_priority,
    abort_timeout_sec,
    no_wr_batching,
    control_msg_num,
    disable_mappable_bar0,
    disable_adaptive_irq,
    disable_shadow_doorbells,
    acceptor_poll_rate,
    ack_timeout,
    data_wr_pool_size,
    disable_command_passthru,
    kas,
    min_kato,
    masked_oncs,
    masked_fuses
});

impl NvmfCreateTransport {
    /// The I/O queue pair limit, accepting the deprecated `max_qpairs_per_ctrlr` (which counts
    /// the admin queue) when `max_io_qpairs_per_ctrlr` is absent.
    #[must_use]
    pub fn io_qpairs_per_ctrlr(&self) -> Option<u16> {
        self.max_io_qpairs_per_ctrlr
            .or_else(|| self.max_qpairs_per_ctrlr.map(|n| n.saturating_sub(1)))
    }
}

/// `nvmf_get_transports`. Answers an array of transport descriptions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvmfGetTransports {
    /// Only this transport type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trtype: Option<String>,
    /// Parent target name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tgt_name: Option<String>,
}
params_knobs!(NvmfGetTransports {});

/// `nvmf_create_subsystem`. Answers `true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvmfCreateSubsystem {
    /// Subsystem NQN (NVMe Base 2.0 "NVMe Qualified Names": at most 223 bytes).
    pub nqn: String,
    /// Serial number (Identify Controller SN, 20 ASCII bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Model number (Identify Controller MN, 40 ASCII bytes); SPDK's default is
    /// `SPDK bdev Controller`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_number: Option<String>,
    /// Parent target name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tgt_name: Option<String>,
    /// Maximum namespaces (0: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_namespaces: Option<u32>,
    /// Allow any host NQN to connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_any_host: Option<bool>,
    /// Lowest controller ID (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cntlid: Option<u16>,
    /// Highest controller ID (default 0xFFEF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cntlid: Option<u16>,
    /// Knob: ANA reporting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ana_reporting: Option<Value>,
    /// Knob: Dataset Management range size limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dmrsl: Option<Value>,
    /// Knob: Write Zeroes size limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wzsl: Option<Value>,
    /// Knob: NVMe passthrough subsystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passthrough: Option<Value>,
    /// Knob: NVM subsystem reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_nssr: Option<Value>,
}
params_knobs!(NvmfCreateSubsystem {
    ana_reporting,
    dmrsl,
    wzsl,
    passthrough,
    enable_nssr
});

/// `nvmf_delete_subsystem`, `nvmf_subsystem_get_controllers`, `nvmf_subsystem_get_qpairs`,
/// `nvmf_subsystem_get_listeners`: `{"nqn": .., "tgt_name": ..}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvmfSubsystemRef {
    /// Subsystem NQN.
    pub nqn: String,
    /// Parent target name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tgt_name: Option<String>,
}
params_knobs!(NvmfSubsystemRef {});

/// `nvmf_delete_subsystem`. Answers `true`.
pub type NvmfDeleteSubsystem = NvmfSubsystemRef;
/// `nvmf_subsystem_get_controllers`. Answers an array of controllers.
pub type NvmfSubsystemGetControllers = NvmfSubsystemRef;
/// `nvmf_subsystem_get_qpairs`. Answers an array of queue pairs.
pub type NvmfSubsystemGetQpairs = NvmfSubsystemRef;
/// `nvmf_subsystem_get_listeners`. Answers an array of listeners.
pub type NvmfSubsystemGetListeners = NvmfSubsystemRef;

/// `nvmf_get_subsystems`. Answers an array of subsystems; `-19` for an unknown `nqn`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvmfGetSubsystems {
    /// Only this subsystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nqn: Option<String>,
    /// Parent target name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tgt_name: Option<String>,
}
params_knobs!(NvmfGetSubsystems {});

/// `nvmf_get_stats`. Answers `{"tick_rate": .., "poll_groups": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvmfGetStats {
    /// Parent target name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tgt_name: Option<String>,
}
params_knobs!(NvmfGetStats {});

/// The `namespace` object of `nvmf_subsystem_add_ns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceParams {
    /// The bdev to expose.
    pub bdev_name: String,
    /// Namespace ID (1..=0xFFFFFFFE); the lowest free one when absent or 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsid: Option<u32>,
    /// NGUID, 32 hex digits (the Identify Namespace NGUID field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nguid: Option<HexBytes<16>>,
    /// EUI-64, 16 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eui64: Option<HexBytes<8>>,
    /// Namespace UUID; defaults to the bdev's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
    /// Knob: persistent reservation file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ptpl_file: Option<Value>,
    /// Knob: ANA group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anagrpid: Option<Value>,
    /// Refused when set: do not make the namespace visible to every controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_auto_visible: Option<Value>,
    /// Knob: hide bdev metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hide_metadata: Option<Value>,
}

/// `nvmf_subsystem_add_ns`. Answers the namespace ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvmfSubsystemAddNs {
    /// Subsystem NQN.
    pub nqn: String,
    /// The namespace.
    pub namespace: NamespaceParams,
    /// Parent target name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tgt_name: Option<String>,
}

impl crate::rpc::RpcParams for NvmfSubsystemAddNs {
    fn ignored_knobs(&self) -> Vec<&'static str> {
        let ns = &self.namespace;
        [
            ("namespace.ptpl_file", &ns.ptpl_file),
            ("namespace.anagrpid", &ns.anagrpid),
            ("namespace.hide_metadata", &ns.hide_metadata),
        ]
        .into_iter()
        .filter(|(_, v)| super::knob_is_set(v))
        .map(|(k, _)| k)
        .collect()
    }

    fn refused(&self) -> Vec<(&'static str, &'static str)> {
        // Serving the namespace to every host of the subsystem would undo the access control
        // that was asked for (SPDK then shows it only to hosts given `nvmf_ns_add_host`).
        if super::knob_is_set(&self.namespace.no_auto_visible) {
            return vec![(
                "namespace.no_auto_visible",
                "a namespace visible only to hosts added to it",
            )];
        }
        Vec::new()
    }
}

/// `nvmf_subsystem_remove_ns`. Answers `true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvmfSubsystemRemoveNs {
    /// Subsystem NQN.
    pub nqn: String,
    /// Namespace ID.
    pub nsid: u32,
    /// Parent target name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tgt_name: Option<String>,
}
params_knobs!(NvmfSubsystemRemoveNs {});

/// The `listen_address` object of the listener methods (SPDK's `rpc_listen_address`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenAddress {
    /// Transport type (`tcp`/`TCP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trtype: Option<String>,
    /// Old spelling of `trtype`, still accepted by SPDK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// Address family (`ipv4`, `ipv6`; SPDK defaults to `ipv4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adrfam: Option<String>,
    /// Transport address (an IP address for TCP).
    pub traddr: String,
    /// Transport service ID (the TCP port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trsvcid: Option<String>,
}

impl ListenAddress {
    /// The transport type from `trtype` or the legacy `transport`.
    ///
    /// # Errors
    /// `-32602` if neither is given.
    pub fn transport_type(&self) -> Result<&str, RpcError> {
        self.trtype
            .as_deref()
            .or(self.transport.as_deref())
            .ok_or_else(|| RpcError::invalid_params("listen_address: missing field `trtype`"))
    }

    /// The address family, `ipv4` when absent (as SPDK).
    #[must_use]
    pub fn address_family(&self) -> &str {
        self.adrfam.as_deref().unwrap_or("ipv4")
    }
}

/// `nvmf_subsystem_add_listener`, `nvmf_subsystem_remove_listener`. Answers `true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvmfSubsystemListener {
    /// Subsystem NQN (`rpc.py` expands `discovery` to [`DISCOVERY_NQN`]).
    pub nqn: String,
    /// The address.
    pub listen_address: ListenAddress,
    /// Parent target name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tgt_name: Option<String>,
    /// Refused when set: require TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_channel: Option<Value>,
    /// Knob: initial ANA state of the listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ana_state: Option<Value>,
    /// Knob: socket implementation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sock_impl: Option<Value>,
    /// Knob (vfio-user): NUMA node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_id: Option<Value>,
}
impl crate::rpc::RpcParams for NvmfSubsystemListener {
    fn ignored_knobs(&self) -> Vec<&'static str> {
        [
            ("ana_state", &self.ana_state),
            ("sock_impl", &self.sock_impl),
            ("numa_id", &self.numa_id),
        ]
        .into_iter()
        .filter(|(_, v)| super::knob_is_set(v))
        .map(|(k, _)| k)
        .collect()
    }

    fn refused(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        if super::knob_is_set(&self.secure_channel) {
            out.push(("secure_channel", "a TLS-only listener"));
        }
        if self.sock_impl.as_ref().and_then(Value::as_str) == Some("ssl") {
            out.push(("sock_impl", "\"ssl\": NVMe/TCP over TLS"));
        }
        out
    }
}

/// `nvmf_subsystem_add_listener`.
pub type NvmfSubsystemAddListener = NvmfSubsystemListener;
/// `nvmf_subsystem_remove_listener`.
pub type NvmfSubsystemRemoveListener = NvmfSubsystemListener;

/// `nvmf_subsystem_add_host`. Answers `true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvmfSubsystemAddHost {
    /// Subsystem NQN.
    pub nqn: String,
    /// Host NQN to allow.
    pub host: String,
    /// Parent target name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tgt_name: Option<String>,
    /// Refused when set: TLS pre-shared key name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk: Option<Value>,
    /// Refused when set: DH-HMAC-CHAP key name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhchap_key: Option<Value>,
    /// Refused when set: DH-HMAC-CHAP controller key name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhchap_ctrlr_key: Option<Value>,
}
impl crate::rpc::RpcParams for NvmfSubsystemAddHost {
    fn refused(&self) -> Vec<(&'static str, &'static str)> {
        [
            ("psk", &self.psk, "a TLS pre-shared key for this host"),
            (
                "dhchap_key",
                &self.dhchap_key,
                "DH-HMAC-CHAP authentication of this host",
            ),
            (
                "dhchap_ctrlr_key",
                &self.dhchap_ctrlr_key,
                "DH-HMAC-CHAP authentication of the controller to this host",
            ),
        ]
        .into_iter()
        .filter(|(_, v, _)| super::knob_is_set(v))
        .map(|(k, _, what)| (k, what))
        .collect()
    }
}

/// `nvmf_subsystem_remove_host`. Answers `true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvmfSubsystemRemoveHost {
    /// Subsystem NQN.
    pub nqn: String,
    /// Host NQN to remove.
    pub host: String,
    /// Parent target name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tgt_name: Option<String>,
    /// Knob: how long to wait for the host's I/O to drain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<Value>,
}
params_knobs!(NvmfSubsystemRemoveHost { timeout_ms });

/// `nvmf_subsystem_allow_any_host`. Answers `true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvmfSubsystemAllowAnyHost {
    /// Subsystem NQN.
    pub nqn: String,
    /// Allow any host (`true`) or enforce the host list (`false`).
    pub allow_any_host: bool,
    /// Parent target name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tgt_name: Option<String>,
}
params_knobs!(NvmfSubsystemAllowAnyHost {});
