//! Framework methods and the configuration document: `framework_start_init`,
//! `framework_wait_init`, `framework_get_subsystems`, `framework_get_config`, `save_config`,
//! `spdk_kill_instance` (`rpc_get_methods` and `spdk_get_version` are built into the
//! registry).
//!
//! The document [`config_document`] builds is what SPDK's `rpc.py save_config` assembles from
//! `framework_get_subsystems` and `framework_get_config`, and what `save_config` (a Shoal
//! extension) answers in one call:
//!
//! * `bdev`: every bdev's creation call, in creation order, with its UUID (delay bdevs with
//!   their current latencies);
//! * `nvmf`: `nvmf_create_transport` with the transport's settings, the discovery subsystem's
//!   listeners, then for each NVMe subsystem (by NQN) `nvmf_create_subsystem`, its listeners,
//!   hosts and namespaces (SPDK's order). SPDK does not save discovery listeners; Shoal does,
//!   as `nvmf_subsystem_add_listener` calls on the discovery NQN, which SPDK loads too.
//!
//! Loading the document into a fresh daemon and saving again gives the same document.

use serde_json::{Map, Value, json};
use shoal_nvmf::target::subsystem::{DISCOVERY_NQN, Subsystem, SubsystemKind};

use super::common::lock;
use super::nvmf::transport_json;
use super::nvmf_query::address_json;
use crate::config::ConfigDocument;
use crate::daemon::Daemon;
use crate::rpc::params::HexBytes;
use crate::rpc::params::NoParams;
use crate::rpc::params::misc::{FrameworkGetConfig, SpdkKillInstance};
use crate::rpc::{Registry, RpcError, RpcState, StateMask};

/// Registers the framework methods.
pub fn register(r: &mut Registry<Daemon>) {
    let state = r.state().clone();
    r.register_in(
        "framework_start_init",
        StateMask::STARTUP,
        move |_d: &Daemon, _p: NoParams| {
            state.set(RpcState::Runtime);
            tracing::info!("framework initialised (framework_start_init)");
            Ok(Value::Bool(true))
        },
    );
    r.register_in(
        "framework_wait_init",
        StateMask::ANY,
        |_d: &Daemon, _p: NoParams| Ok(Value::Bool(true)),
    );
    r.register("framework_get_subsystems", |d: &Daemon, _p: NoParams| {
        Ok(config_document(d).subsystems_json())
    });
    r.register(
        "framework_get_config",
        |d: &Daemon, p: FrameworkGetConfig| {
            config_document(d).subsystem_json(&p.name).ok_or_else(|| {
                RpcError::invalid_params(format!("Subsystem '{}' not found", p.name))
            })
        },
    );
    r.register("save_config", |d: &Daemon, _p: NoParams| {
        Ok(serde_json::to_value(config_document(d))?)
    });
    r.register_in("spdk_kill_instance", StateMask::ANY, kill_instance);
}

fn kill_instance(_d: &Daemon, p: SpdkKillInstance) -> Result<Value, RpcError> {
    let sig = match p.sig_name.as_str() {
        "SIGINT" => libc::SIGINT,
        "SIGTERM" => libc::SIGTERM,
        "SIGQUIT" => libc::SIGQUIT,
        "SIGHUP" => libc::SIGHUP,
        "SIGKILL" => libc::SIGKILL,
        other => {
            return Err(RpcError::invalid_params(format!(
                "sig_name `{other}` is not one of SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGKILL"
            )));
        }
    };
    tracing::warn!(signal = %p.sig_name, "spdk_kill_instance: signalling the daemon");
    // The signal stops the RPC server; sending it a moment later lets this answer go out.
    let send = move || {
        std::thread::sleep(KILL_DELAY);
        // SAFETY: kill(2) on our own process ID with a valid signal number; it touches no
        // memory. The daemon's signal thread (or the default action) handles the signal.
        let rc = unsafe { libc::kill(libc::getpid(), sig) };
        if rc != 0 {
            tracing::error!(
                "spdk_kill_instance: kill: {}",
                std::io::Error::last_os_error()
            );
        }
    };
    std::thread::Builder::new()
        .name("kill_instance".into())
        .spawn(send)
        .map_err(|e| RpcError::internal(format!("spdk_kill_instance: {e}")))?;
    Ok(Value::Bool(true))
}

/// How long `spdk_kill_instance` waits before signalling, so that its answer is sent first.
const KILL_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

fn bdev_calls(daemon: &Daemon, doc: &mut ConfigDocument) {
    let stacked = lock(&daemon.stacked);
    let recipes = lock(&daemon.recipes).clone();
    for (name, recipe) in recipes {
        let mut params = recipe.params;
        if let (Some(lat), Value::Object(m)) = (stacked.delay_latency_params(&name), &mut params) {
            for (k, v) in lat {
                m.insert(k.to_owned(), json!(v));
            }
        }
        doc.push("bdev", &recipe.method, Some(params));
    }
}

fn subsystem_calls(sub: &Subsystem, doc: &mut ConfigDocument) {
    let c = sub.config();
    let nqn = &sub.nqn;
    if sub.kind == SubsystemKind::Nvme {
        let mut params = Map::new();
        params.insert("nqn".into(), json!(nqn));
        params.insert("allow_any_host".into(), json!(c.allow_any_host));
        params.insert("serial_number".into(), json!(c.serial_number));
        params.insert("model_number".into(), json!(c.model_number));
        if c.max_namespaces != 0 {
            params.insert("max_namespaces".into(), json!(c.max_namespaces));
        }
        params.insert("min_cntlid".into(), json!(c.min_cntlid));
        params.insert("max_cntlid".into(), json!(c.max_cntlid));
        params.insert("ana_reporting".into(), json!(false));
        doc.push("nvmf", "nvmf_create_subsystem", Some(Value::Object(params)));
    }
    for l in &c.listeners {
        doc.push(
            "nvmf",
            "nvmf_subsystem_add_listener",
            Some(json!({"nqn": nqn, "listen_address": address_json(l)})),
        );
    }
    for h in &c.hosts {
        doc.push(
            "nvmf",
            "nvmf_subsystem_add_host",
            Some(json!({"nqn": nqn, "host": h})),
        );
    }
    for ns in c.namespaces.values() {
        let mut n = Map::new();
        n.insert("nsid".into(), json!(ns.nsid));
        n.insert("bdev_name".into(), json!(ns.bdev.info().name));
        n.insert("nguid".into(), json!(HexBytes(ns.nguid).to_string()));
        if let Some(e) = ns.eui64 {
            n.insert("eui64".into(), json!(HexBytes(e).to_string()));
        }
        n.insert("uuid".into(), json!(ns.uuid.to_string()));
        doc.push(
            "nvmf",
            "nvmf_subsystem_add_ns",
            Some(json!({"nqn": nqn, "namespace": Value::Object(n)})),
        );
    }
}

/// The configuration of the live daemon, as SPDK's `save_config` writes it.
#[must_use]
pub fn config_document(daemon: &Daemon) -> ConfigDocument {
    let mut doc = ConfigDocument::default();
    doc.ensure_subsystem("bdev");
    doc.ensure_subsystem("nvmf");
    bdev_calls(daemon, &mut doc);
    let target = &daemon.target;
    if target.has_transport() {
        doc.push(
            "nvmf",
            "nvmf_create_transport",
            Some(transport_json(&target.transport(), true)),
        );
    }
    if let Some(disc) = target.subsystem(DISCOVERY_NQN) {
        subsystem_calls(&disc, &mut doc);
    }
    for sub in target.subsystems() {
        if sub.kind == SubsystemKind::Nvme {
            subsystem_calls(&sub, &mut doc);
        }
    }
    doc
}
