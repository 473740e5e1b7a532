//! NVMe-oF configuration methods: `nvmf_create_transport`, `nvmf_get_transports`,
//! `nvmf_create_subsystem`, `nvmf_delete_subsystem`, `nvmf_subsystem_add_ns`,
//! `nvmf_subsystem_remove_ns`, `nvmf_subsystem_add_host`, `nvmf_subsystem_remove_host`,
//! `nvmf_subsystem_allow_any_host`.
//!
//! Result shapes (SPDK `lib/nvmf/nvmf_rpc.c`): `true` for changes, the NSID (a number) for
//! `nvmf_subsystem_add_ns`, and for `nvmf_get_transports` `[{"trtype": "TCP",
//! "max_queue_depth", "max_io_qpairs_per_ctrlr", "in_capsule_data_size", "max_io_size",
//! "io_unit_size", "max_aq_depth", "c2h_success", ...}]`.
//!
//! Only the TCP transport exists. Removing a host fails (disconnects) the controllers that
//! host has on the subsystem, as SPDK does; deleting a subsystem fails all of its controllers
//! and drops its listeners.

use std::sync::Arc;

use serde_json::{Value, json};
use shoal_nvmf::target::subsystem::{
    ConfigError, DISCOVERY_NQN, Subsystem, SubsystemKind, SubsystemOptions, TransportConfig,
};

use super::claims::claimed_by_any;
use super::common::{check_tgt, lock};
use crate::daemon::Daemon;
use crate::rpc::params::nvmf::{
    NvmfCreateSubsystem, NvmfCreateTransport, NvmfDeleteSubsystem, NvmfGetTransports,
    NvmfSubsystemAddHost, NvmfSubsystemAddNs, NvmfSubsystemAllowAnyHost, NvmfSubsystemRemoveHost,
    NvmfSubsystemRemoveNs,
};
use crate::rpc::{Registry, RpcError};

/// Registers the configuration methods.
pub fn register(r: &mut Registry<Daemon>) {
    r.register("nvmf_create_transport", create_transport);
    r.register("nvmf_get_transports", get_transports);
    r.register("nvmf_create_subsystem", create_subsystem);
    r.register("nvmf_delete_subsystem", delete_subsystem);
    r.register("nvmf_subsystem_add_ns", add_ns);
    r.register("nvmf_subsystem_remove_ns", remove_ns);
    r.register("nvmf_subsystem_add_host", add_host);
    r.register("nvmf_subsystem_remove_host", remove_host);
    r.register("nvmf_subsystem_allow_any_host", allow_any_host);
}

/// The subsystem `nqn`, or SPDK's error for a missing one (`-32602`).
///
/// # Errors
/// `-32602 Unable to find subsystem with NQN ...`.
pub fn find_subsystem(daemon: &Daemon, nqn: &str) -> Result<Arc<Subsystem>, RpcError> {
    daemon
        .target
        .subsystem(nqn)
        .ok_or_else(|| RpcError::invalid_params(format!("Unable to find subsystem with NQN {nqn}")))
}

/// A configuration error of the target as an RPC error with `code` for `Invalid`.
fn config_error(e: &ConfigError) -> RpcError {
    match e {
        ConfigError::AlreadyExists(what) => {
            RpcError::already_exists(format!("{what} already exists"))
        }
        ConfigError::NotFound(what) => RpcError::no_such_device(format!("{what} does not exist")),
        ConfigError::Invalid(m) => RpcError::invalid_params(m.clone()),
    }
}

/// Whether `trtype` names the TCP transport (SPDK compares case-insensitively).
pub fn is_tcp(trtype: &str) -> bool {
    trtype.eq_ignore_ascii_case("tcp")
}

fn create_transport(daemon: &Daemon, p: NvmfCreateTransport) -> Result<Value, RpcError> {
    check_tgt(p.tgt_name.as_deref())?;
    if !is_tcp(&p.trtype) {
        return Err(RpcError::invalid_params(format!(
            "Invalid transport type '{}' (Shoal serves TCP only)",
            p.trtype
        )));
    }
    let mut cfg = TransportConfig::default();
    if let Some(v) = p.max_queue_depth {
        cfg.max_queue_depth = v;
    }
    if let Some(v) = p.io_qpairs_per_ctrlr() {
        cfg.max_io_qpairs_per_ctrlr = v;
    }
    if let Some(v) = p.in_capsule_data_size {
        cfg.in_capsule_data_size = v;
    }
    if let Some(v) = p.max_io_size {
        cfg.max_io_size = v;
    }
    if let Some(v) = p.max_aq_depth {
        cfg.max_aq_depth = u16::try_from(v).map_err(|_| {
            RpcError::invalid_params(format!("max_aq_depth {v} is above the limit of 65535"))
        })?;
    }
    if let Some(v) = p.c2h_success {
        cfg.c2h_success = v;
    }
    if let Some(v) = p.c2h_success_sq_flow_control {
        cfg.c2h_success_sq_flow_control = v;
    }
    if let Some(v) = p.acceptor_backlog {
        cfg.acceptor_backlog = v;
    }
    if let Some(v) = p.max_unsent_bytes {
        if v < 65_536 {
            return Err(RpcError::invalid_params(format!(
                "max_unsent_bytes {v} is below the minimum of 65536"
            )));
        }
        cfg.max_unsent_bytes = v;
    }
    if let Some(v) = p.ic_timeout_ms {
        cfg.ic_timeout_ms = v;
    }
    if let Some(v) = p.max_connections_per_listener {
        cfg.max_connections_per_listener = v;
    }
    if let Some(v) = p.max_connections_per_host {
        cfg.max_connections_per_host = v;
    }
    if cfg.max_io_qpairs_per_ctrlr == 0 {
        return Err(RpcError::invalid_params(
            "max_io_qpairs_per_ctrlr must be at least 1",
        ));
    }
    match daemon.target.create_transport(cfg) {
        Ok(()) => Ok(Value::Bool(true)),
        Err(ConfigError::AlreadyExists(_)) => Err(RpcError::internal(format!(
            "Transport type '{}' already exists",
            p.trtype.to_ascii_uppercase()
        ))),
        Err(e) => Err(config_error(&e)),
    }
}

/// The transport as `nvmf_get_transports` and `save_config` describe it.
pub fn transport_json(cfg: &TransportConfig, for_config: bool) -> Value {
    let mut v = json!({
        "trtype": "TCP",
        "max_queue_depth": cfg.max_queue_depth,
        "max_io_qpairs_per_ctrlr": cfg.max_io_qpairs_per_ctrlr,
        "in_capsule_data_size": cfg.in_capsule_data_size,
        "max_io_size": cfg.max_io_size,
    });
    if let Value::Object(m) = &mut v {
        if !for_config {
            // Not settable through Shoal's nvmf_create_transport (a logged knob), so it is
            // shown but not saved.
            m.insert("io_unit_size".into(), json!(cfg.io_unit_size));
        }
        m.insert("max_aq_depth".into(), json!(cfg.max_aq_depth));
        m.insert("c2h_success".into(), json!(cfg.c2h_success));
        m.insert(
            "c2h_success_sq_flow_control".into(),
            json!(cfg.c2h_success_sq_flow_control),
        );
        // Limits on what a host may hold (issue 19); see ARCHITECTURE.md for the memory bound
        // of a connection.
        m.insert("acceptor_backlog".into(), json!(cfg.acceptor_backlog));
        m.insert("max_unsent_bytes".into(), json!(cfg.max_unsent_bytes));
        m.insert("ic_timeout_ms".into(), json!(cfg.ic_timeout_ms));
        m.insert(
            "max_connections_per_listener".into(),
            json!(cfg.max_connections_per_listener),
        );
        m.insert(
            "max_connections_per_host".into(),
            json!(cfg.max_connections_per_host),
        );
    }
    v
}

fn get_transports(daemon: &Daemon, p: NvmfGetTransports) -> Result<Value, RpcError> {
    check_tgt(p.tgt_name.as_deref())?;
    let has = daemon.target.has_transport();
    if let Some(t) = &p.trtype
        && (!is_tcp(t) || !has)
    {
        return Err(RpcError::no_such_device(format!("transport {t}")));
    }
    if !has {
        return Ok(json!([]));
    }
    Ok(json!([transport_json(&daemon.target.transport(), false)]))
}

fn create_subsystem(daemon: &Daemon, p: NvmfCreateSubsystem) -> Result<Value, RpcError> {
    check_tgt(p.tgt_name.as_deref())?;
    let opts = SubsystemOptions {
        serial_number: p.serial_number,
        model_number: p.model_number,
        allow_any_host: p.allow_any_host.unwrap_or(false),
        max_namespaces: p.max_namespaces.unwrap_or(0),
        min_cntlid: p.min_cntlid,
        max_cntlid: p.max_cntlid,
    };
    match daemon.target.create_subsystem(&p.nqn, opts) {
        Ok(_) => {
            tracing::info!(nqn = %p.nqn, "subsystem created");
            Ok(Value::Bool(true))
        }
        Err(ConfigError::AlreadyExists(_)) => Err(RpcError::internal(format!(
            "Unable to create subsystem {}: it already exists",
            p.nqn
        ))),
        Err(e) => Err(RpcError::invalid_params(format!(
            "Unable to create subsystem {}: {e}",
            p.nqn
        ))),
    }
}

fn delete_subsystem(daemon: &Daemon, p: NvmfDeleteSubsystem) -> Result<Value, RpcError> {
    check_tgt(p.tgt_name.as_deref())?;
    if p.nqn == DISCOVERY_NQN {
        return Err(RpcError::invalid_params(
            "the discovery subsystem cannot be deleted",
        ));
    }
    find_subsystem(daemon, &p.nqn)?;
    let sub = daemon.target.delete_subsystem(&p.nqn).map_err(|_| {
        RpcError::invalid_params(format!("Unable to find subsystem with NQN {}", p.nqn))
    })?;
    for addr in sub.with_config(|c| c.listeners.clone()) {
        daemon.unlisten(&addr);
    }
    tracing::info!(nqn = %p.nqn, "subsystem deleted");
    Ok(Value::Bool(true))
}

fn add_ns(daemon: &Daemon, p: NvmfSubsystemAddNs) -> Result<Value, RpcError> {
    check_tgt(p.tgt_name.as_deref())?;
    let sub = find_subsystem(daemon, &p.nqn)?;
    if sub.kind == SubsystemKind::Discovery {
        return Err(RpcError::invalid_params(
            "Unable to add namespace: the discovery subsystem has no namespaces",
        ));
    }
    let ns = p.namespace;
    // Held across the claim check and the insertion, so a concurrent deletion or second
    // claim cannot slip in between.
    let stacked = lock(&daemon.stacked);
    let bdev = daemon.bdev(&ns.bdev_name).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "Unable to add namespace: bdev {} does not exist",
            ns.bdev_name
        ))
    })?;
    if let Some(holder) = claimed_by_any(daemon, &stacked, &bdev.info().name) {
        return Err(RpcError::invalid_params(format!(
            "Unable to add namespace: bdev {} is already claimed by {holder}",
            bdev.info().name
        )));
    }
    let nsid = sub
        .add_namespace(
            bdev,
            ns.nsid.filter(|&n| n != 0),
            ns.uuid,
            ns.nguid.map(|h| h.0),
            ns.eui64.map(|h| h.0),
        )
        .map_err(|e| RpcError::invalid_params(format!("Unable to add namespace: {e}")))?;
    drop(stacked);
    tracing::info!(nqn = %p.nqn, nsid, bdev = %ns.bdev_name, "namespace added");
    Ok(json!(nsid))
}

fn remove_ns(daemon: &Daemon, p: NvmfSubsystemRemoveNs) -> Result<Value, RpcError> {
    check_tgt(p.tgt_name.as_deref())?;
    let sub = find_subsystem(daemon, &p.nqn)?;
    let _stacked = lock(&daemon.stacked);
    sub.remove_namespace(p.nsid).map_err(|_| {
        RpcError::invalid_params(format!("namespace {} does not exist in {}", p.nsid, p.nqn))
    })?;
    tracing::info!(nqn = %p.nqn, nsid = p.nsid, "namespace removed");
    Ok(Value::Bool(true))
}

fn add_host(daemon: &Daemon, p: NvmfSubsystemAddHost) -> Result<Value, RpcError> {
    check_tgt(p.tgt_name.as_deref())?;
    let sub = find_subsystem(daemon, &p.nqn)?;
    if sub.kind == SubsystemKind::Discovery {
        return Err(RpcError::invalid_params(
            "the discovery subsystem has no host list (it answers every host)",
        ));
    }
    sub.add_host(&p.host).map_err(|e| config_error(&e))?;
    Ok(Value::Bool(true))
}

fn remove_host(daemon: &Daemon, p: NvmfSubsystemRemoveHost) -> Result<Value, RpcError> {
    check_tgt(p.tgt_name.as_deref())?;
    let sub = find_subsystem(daemon, &p.nqn)?;
    sub.remove_host(&p.host).map_err(|e| config_error(&e))?;
    // SPDK disconnects the host's queue pairs; failing the controller closes every one of its
    // connections.
    for c in sub.controllers() {
        if c.hostnqn == p.host {
            c.fail("host removed");
        }
    }
    Ok(Value::Bool(true))
}

fn allow_any_host(daemon: &Daemon, p: NvmfSubsystemAllowAnyHost) -> Result<Value, RpcError> {
    check_tgt(p.tgt_name.as_deref())?;
    let sub = find_subsystem(daemon, &p.nqn)?;
    if sub.kind == SubsystemKind::Discovery {
        return Err(RpcError::invalid_params(
            "the discovery subsystem always answers every host",
        ));
    }
    sub.set_allow_any_host(p.allow_any_host);
    Ok(Value::Bool(true))
}
