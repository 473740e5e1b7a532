//! NVMe-oF listeners and read-only views: `nvmf_subsystem_add_listener`,
//! `nvmf_subsystem_remove_listener`, `nvmf_subsystem_get_listeners`, `nvmf_get_subsystems`,
//! `nvmf_subsystem_get_controllers`, `nvmf_subsystem_get_qpairs`, `nvmf_get_stats`.
//!
//! Result shapes (SPDK `lib/nvmf/nvmf_rpc.c`):
//!
//! * `nvmf_get_subsystems`: `[{"nqn", "subtype": "Discovery"|"NVMe", "listen_addresses":
//!   [{"trtype", "adrfam", "traddr", "trsvcid"}], "allow_any_host", "hosts": [{"nqn"}]}]`, NVMe
//!   subsystems adding `"serial_number", "model_number", "max_namespaces"` (when not 0),
//!   `"min_cntlid", "max_cntlid", "namespaces": [{"nsid", "bdev_name", "name", "nguid",
//!   "eui64"` (when set) `, "uuid"}]`;
//! * `nvmf_subsystem_get_listeners`: `[{"address": {"trtype", "adrfam", "traddr", "trsvcid"}}]`;
//! * `nvmf_subsystem_get_controllers`: `[{"cntlid", "cntrltype": "io"|"discovery", "hostnqn",
//!   "hostid", "num_io_qpairs"}]` (`num_io_qpairs` counts I/O queues only);
//! * `nvmf_subsystem_get_qpairs`: `[{"cntlid", "qid", "state": "enabled"|"deactivating",
//!   "thread", "hostnqn", "listen_address", "peer_address"}]`, `thread` naming the poll group
//!   (reactor) that serves the queue pair, as in `nvmf_get_stats`;
//! * `nvmf_get_stats`: `{"tick_rate", "poll_groups": [{"name": "nvmf_tgt_poll_group_NNN",
//!   "current_qpairs", "transports": [{"trtype": "TCP"}], ...}]}`, one poll group per reactor.
//!   `current_qpairs` counts the TCP connections on that reactor, and `admin_qpairs`,
//!   `io_qpairs`, `current_admin_qpairs`, `current_io_qpairs` the connected ones by kind (live
//!   counts: Shoal keeps no cumulative ones).
//!
//! Listeners: adding one opens the socket (or shares one already open for another subsystem);
//! a bind failure is `-32602` naming the address. Removing one closes the socket with its last
//! user. The subsystem's queue pairs that came through the removed listener are disconnected,
//! as SPDK does.

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use shoal_nvmf::target::subsystem::{ListenAddress, Subsystem, SubsystemKind};
use shoal_nvmf::target::tcp;
use uuid::Uuid;

use super::common::{TICK_RATE, check_tgt};
use super::nvmf::{find_subsystem, is_tcp};
use crate::daemon::Daemon;
use crate::rpc::params::HexBytes;
use crate::rpc::params::nvmf::{
    self as p_nvmf, NvmfGetStats, NvmfGetSubsystems, NvmfSubsystemGetControllers,
    NvmfSubsystemGetListeners, NvmfSubsystemGetQpairs, NvmfSubsystemListener,
};
use crate::rpc::{Registry, RpcError};

/// Registers the listener and query methods.
pub fn register(r: &mut Registry<Daemon>) {
    r.register("nvmf_subsystem_add_listener", add_listener);
    r.register("nvmf_subsystem_remove_listener", remove_listener);
    r.register("nvmf_subsystem_get_listeners", get_listeners);
    r.register("nvmf_get_subsystems", get_subsystems);
    r.register("nvmf_subsystem_get_controllers", get_controllers);
    r.register("nvmf_subsystem_get_qpairs", get_qpairs);
    r.register("nvmf_get_stats", get_stats);
}

/// Checks and normalises an RPC listen address: TCP, IPv4 or IPv6, an IP address of that
/// family, a port from 1 to 65535.
///
/// # Errors
/// `-32602` naming what is wrong.
pub fn listen_address(a: &p_nvmf::ListenAddress) -> Result<ListenAddress, RpcError> {
    let trtype = a.transport_type()?;
    if !is_tcp(trtype) {
        return Err(RpcError::invalid_params(format!(
            "transport type '{trtype}' is not supported (Shoal serves TCP only)"
        )));
    }
    let family = a.address_family();
    let v6 = if family.eq_ignore_ascii_case("ipv4") {
        false
    } else if family.eq_ignore_ascii_case("ipv6") {
        true
    } else {
        return Err(RpcError::invalid_params(format!(
            "address family '{family}' is not supported over TCP (IPv4 or IPv6)"
        )));
    };
    let bare = a.traddr.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = bare.parse().map_err(|_| {
        RpcError::invalid_params(format!("traddr `{}` is not an IP address", a.traddr))
    })?;
    if ip.is_ipv6() != v6 {
        return Err(RpcError::invalid_params(format!(
            "traddr {ip} is not an {family} address"
        )));
    }
    let svc = a.trsvcid.as_deref().ok_or_else(|| {
        RpcError::invalid_params("listen_address: trsvcid (the TCP port) is required")
    })?;
    let port = svc.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| {
        RpcError::invalid_params(format!("trsvcid `{svc}` is not a TCP port (1-65535)"))
    })?;
    Ok(ListenAddress {
        trtype: "TCP".into(),
        adrfam: if v6 { "IPv6" } else { "IPv4" }.into(),
        traddr: ip.to_string(),
        trsvcid: port.to_string(),
    })
}

fn same_address(a: &ListenAddress, b: &ListenAddress) -> bool {
    a.traddr == b.traddr && a.trsvcid == b.trsvcid
}

/// A listen address as SPDK prints a transport ID.
pub fn address_json(a: &ListenAddress) -> Value {
    json!({"trtype": a.trtype, "adrfam": a.adrfam, "traddr": a.traddr, "trsvcid": a.trsvcid})
}

fn add_listener(daemon: &Daemon, p: NvmfSubsystemListener) -> Result<Value, RpcError> {
    check_tgt(p.tgt_name.as_deref())?;
    let sub = find_subsystem(daemon, &p.nqn)?;
    let addr = listen_address(&p.listen_address)?;
    if !daemon.target.has_transport() {
        return Err(RpcError::invalid_params(
            "Unable to find TCP transport: create it first with nvmf_create_transport",
        ));
    }
    if sub.with_config(|c| c.listeners.iter().any(|l| same_address(l, &addr))) {
        return Err(RpcError::invalid_params(format!(
            "Listener {}:{} already exists for {}",
            addr.traddr, addr.trsvcid, p.nqn
        )));
    }
    daemon.listen(&addr).map_err(|e| {
        RpcError::invalid_params(format!(
            "cannot listen on {}:{}: {e}",
            addr.traddr, addr.trsvcid
        ))
    })?;
    if let Err(e) = sub.add_listener(addr.clone()) {
        daemon.unlisten(&addr);
        return Err(RpcError::invalid_params(format!("{e}")));
    }
    tracing::info!(nqn = %p.nqn, "listener {}:{} added", addr.traddr, addr.trsvcid);
    Ok(Value::Bool(true))
}

fn remove_listener(daemon: &Daemon, p: NvmfSubsystemListener) -> Result<Value, RpcError> {
    check_tgt(p.tgt_name.as_deref())?;
    let sub = find_subsystem(daemon, &p.nqn)?;
    let addr = listen_address(&p.listen_address)?;
    sub.remove_listener(&addr).map_err(|_| {
        RpcError::invalid_params(format!(
            "{} has no listener {}:{}",
            p.nqn, addr.traddr, addr.trsvcid
        ))
    })?;
    daemon.unlisten(&addr);
    // SPDK disconnects the subsystem's queue pairs that came through the removed listener.
    let nqn = p.nqn.clone();
    let mut closed = 0;
    for r in &daemon.reactors {
        let (a, q, t) = (addr.clone(), nqn.clone(), daemon.tcp.clone());
        closed += r
            .call(move || t.disconnect_listener(&a, Some(&q)))
            .unwrap_or(0);
    }
    if closed > 0 {
        tracing::info!(nqn = %p.nqn, "{closed} queue pair(s) closed with the listener");
    }
    tracing::info!(nqn = %p.nqn, "listener {}:{} removed", addr.traddr, addr.trsvcid);
    Ok(Value::Bool(true))
}

fn get_listeners(daemon: &Daemon, p: NvmfSubsystemGetListeners) -> Result<Value, RpcError> {
    check_tgt(p.tgt_name.as_deref())?;
    let sub = find_subsystem(daemon, &p.nqn)?;
    let list: Vec<Value> = sub
        .with_config(|c| c.listeners.clone())
        .iter()
        .map(|a| json!({"address": address_json(a)}))
        .collect();
    Ok(Value::Array(list))
}

fn describe_subsystem(sub: &Subsystem) -> Value {
    let c = sub.config();
    let mut m = Map::new();
    m.insert("nqn".into(), json!(sub.nqn));
    let subtype = match sub.kind {
        SubsystemKind::Discovery => "Discovery",
        SubsystemKind::Nvme => "NVMe",
    };
    m.insert("subtype".into(), json!(subtype));
    m.insert(
        "listen_addresses".into(),
        Value::Array(c.listeners.iter().map(address_json).collect()),
    );
    m.insert("allow_any_host".into(), json!(c.allow_any_host));
    m.insert(
        "hosts".into(),
        Value::Array(c.hosts.iter().map(|h| json!({"nqn": h})).collect()),
    );
    if sub.kind == SubsystemKind::Nvme {
        m.insert("serial_number".into(), json!(c.serial_number));
        m.insert("model_number".into(), json!(c.model_number));
        if c.max_namespaces != 0 {
            m.insert("max_namespaces".into(), json!(c.max_namespaces));
        }
        m.insert("min_cntlid".into(), json!(c.min_cntlid));
        m.insert("max_cntlid".into(), json!(c.max_cntlid));
        let namespaces: Vec<Value> = c
            .namespaces
            .values()
            .map(|ns| {
                let name = ns.bdev.info().name.clone();
                let mut n = Map::new();
                n.insert("nsid".into(), json!(ns.nsid));
                n.insert("bdev_name".into(), json!(name));
                n.insert("name".into(), json!(name));
                n.insert("nguid".into(), json!(HexBytes(ns.nguid).to_string()));
                if let Some(e) = ns.eui64 {
                    n.insert("eui64".into(), json!(HexBytes(e).to_string()));
                }
                n.insert("uuid".into(), json!(ns.uuid.to_string()));
                Value::Object(n)
            })
            .collect();
        m.insert("namespaces".into(), Value::Array(namespaces));
    }
    Value::Object(m)
}

fn get_subsystems(daemon: &Daemon, p: NvmfGetSubsystems) -> Result<Value, RpcError> {
    check_tgt(p.tgt_name.as_deref())?;
    let subs: Vec<Arc<Subsystem>> = match &p.nqn {
        Some(nqn) => vec![
            daemon
                .target
                .subsystem(nqn)
                .ok_or_else(|| RpcError::no_such_device(format!("subsystem {nqn}")))?,
        ],
        None => daemon.target.subsystems(),
    };
    Ok(Value::Array(
        subs.iter().map(|s| describe_subsystem(s)).collect(),
    ))
}

fn get_controllers(daemon: &Daemon, p: NvmfSubsystemGetControllers) -> Result<Value, RpcError> {
    check_tgt(p.tgt_name.as_deref())?;
    let sub = find_subsystem(daemon, &p.nqn)?;
    let cntrltype = match sub.kind {
        SubsystemKind::Discovery => "discovery",
        SubsystemKind::Nvme => "io",
    };
    let list: Vec<Value> = sub
        .controllers()
        .iter()
        .map(|c| {
            json!({
                "cntlid": c.cntlid,
                "cntrltype": cntrltype,
                "hostnqn": c.hostnqn,
                "hostid": Uuid::from_bytes(c.hostid).to_string(),
                "num_io_qpairs": c.state().io_queues.len(),
            })
        })
        .collect();
    Ok(Value::Array(list))
}

fn get_qpairs(daemon: &Daemon, p: NvmfSubsystemGetQpairs) -> Result<Value, RpcError> {
    check_tgt(p.tgt_name.as_deref())?;
    let sub = find_subsystem(daemon, &p.nqn)?;
    let mut list = Vec::new();
    for (i, r) in daemon.reactors.iter().enumerate() {
        let t = daemon.tcp.clone();
        for q in r.call(move || t.qpairs()).unwrap_or_default() {
            if q.subnqn.as_deref() != Some(sub.nqn.as_str()) {
                continue;
            }
            let failed = q
                .cntlid
                .and_then(|id| sub.controller(id))
                .is_none_or(|c| c.is_failed());
            list.push(json!({
                "cntlid": q.cntlid,
                "qid": q.qid,
                "state": if failed { "deactivating" } else { "enabled" },
                "thread": poll_group_name(i),
                "hostnqn": q.hostnqn,
                "listen_address": address_json(&q.listen),
                "peer_address": q.peer.map(|a| json!({
                    "trtype": "TCP",
                    "adrfam": if a.is_ipv4() { "IPv4" } else { "IPv6" },
                    "traddr": a.ip().to_string(),
                    "trsvcid": a.port().to_string(),
                })),
            }));
        }
    }
    list.sort_by_key(|q| (q["cntlid"].as_u64(), q["qid"].as_u64()));
    Ok(Value::Array(list))
}

/// The name of reactor `i`'s poll group, as SPDK's `nvmf_tgt` names its poll-group threads.
fn poll_group_name(i: usize) -> String {
    format!("nvmf_tgt_poll_group_{i:03}")
}

fn get_stats(daemon: &Daemon, p: NvmfGetStats) -> Result<Value, RpcError> {
    check_tgt(p.tgt_name.as_deref())?;
    let mut groups = Vec::new();
    for (i, r) in daemon.reactors.iter().enumerate() {
        let t = daemon.tcp.clone();
        let Some(qpairs) = r.call(move || t.qpairs()) else {
            continue;
        };
        let admin = qpairs.iter().filter(|q| q.qid == Some(0)).count();
        let io = qpairs
            .iter()
            .filter(|q| q.qid.is_some_and(|x| x > 0))
            .count();
        let mut g = Map::new();
        g.insert("name".into(), json!(poll_group_name(i)));
        // Live counts: Shoal keeps no cumulative ones.
        g.insert("admin_qpairs".into(), json!(admin));
        g.insert("io_qpairs".into(), json!(io));
        g.insert("current_admin_qpairs".into(), json!(admin));
        g.insert("current_io_qpairs".into(), json!(io));
        g.insert("current_qpairs".into(), json!(qpairs.len()));
        g.insert("transports".into(), json!([{"trtype": "TCP"}]));
        groups.push(Value::Object(g));
    }
    // Shoal: connections refused at accept (max_connections_per_listener / _per_host), closed
    // for want of an ICReq in ic_timeout_ms, and ended by a host's protocol error, since the
    // daemon started (each kind is logged at most once a minute).
    Ok(json!({
        "tick_rate": TICK_RATE,
        "poll_groups": groups,
        "refused_connections": tcp::limits::CONN_REFUSALS.total(),
        "ic_timeouts": tcp::limits::IC_TIMEOUTS.total(),
        "protocol_errors": tcp::limits::PROTOCOL_ERRORS.total(),
    }))
}
