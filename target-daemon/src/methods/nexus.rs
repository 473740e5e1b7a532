//! Nexus methods (replicated volumes, Shoal's own; Mayastor's names where they exist):
//! `nexus_create`, `nexus_destroy`, `nexus_add_child`, `nexus_remove_child`,
//! `nexus_fault_child`, `nexus_get`, `nexus_set_rebuild_rate`, `nexus_pause_rebuild`,
//! `nexus_resume_rebuild`, `nexus_stop_rebuild`, `nexus_resize`.
//!
//! `nexus_resize {"name", "size"}` grows a nexus online to `size` bytes (Mayastor grows a
//! nexus with its requested size too): the remote children's sizes are read again from their
//! targets first (Identify Namespace: their replicas were grown just before, and the change
//! notice may still be on its way), then every online child must hold the new size (else
//! `-EINVAL` naming the child), no child may be rebuilding (`-EBUSY`), and a smaller size is
//! refused (`-EINVAL`). The hosts of a subsystem that exports the nexus get a Namespace
//! Attribute Changed event.
//!
//! * A nexus is a bdev: it is registered with the others (so `nvmf_subsystem_add_ns` exports
//!   it and `bdev_get_bdevs` lists it) and recorded with a `nexus_create` recipe, kept up to
//!   date as children come and go, so `save_config` recreates it (from the same children,
//!   whose metadata then picks the current ones).
//! * Children are URIs: `bdev:///NAME` is a bdev of this daemon; `nvmf://HOST[:PORT]/NQN
//!   [?hostnqn=..&nsid=..]` is a namespace of another daemon, connected with Shoal's NVMe/TCP
//!   host ([`RemoteBdev`], admin queue on the first reactor). A remote child belongs to its
//!   nexus: it is not registered as a bdev of this daemon.
//! * A nexus runs its control path and rebuilds on the first reactor; the methods wait for it.
//! * The live nexuses (the typed nexus behind a bdev, which nexus has a child) are in
//!   [`super::nexus_live`], which the claim rules consult too.
//!
//! Result of `nexus_get`: `[{"name", "uuid", "size", "block_size", "num_blocks", "state",
//! "generation", "rebuild_rate": {"mode", "mib_per_sec"}, "children": [{"uri", "state",
//! "fault_reason", "rebuild_progress", "replica_uuid", "dirty_segments", "rebuild",
//! "last_rebuild"}], "write_intent": {"region_bytes", "regions", "marked_regions",
//! "bitmap_writes"} (null when the nexus keeps no bitmap)}]`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shoal_bdev::Bdev;
use shoal_nvmf::host::RemoteBdev;
use shoal_replication::{
    ChildOpener, ChildSpec, ChildStatus, ChildUri, Nexus, NexusError, NexusErrorKind, NexusOptions,
    NexusStatus, RebuildRate, RebuildSummary,
};
use uuid::Uuid;

use super::claims::{add_bdev, check_new_name, claimed_by};
use super::common::lock;
pub use super::nexus_live::nexuses;
use super::nexus_live::{LIVE, lookup, nexus_using};
use crate::daemon::Daemon;
use crate::rpc::params::params_knobs;
use crate::rpc::{Registry, RpcError, error};
use crate::stacked::Stacked;

/// How long a method waits for the nexus's reactor (metadata I/O, barriers).
pub const WAIT: Duration = Duration::from_secs(120);
/// The method that creates a nexus (and names its recipe).
pub const CREATE_METHOD: &str = "nexus_create";

/// `nexus_create`. Answers the nexus name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NexusCreate {
    /// Bdev name of the nexus.
    pub name: String,
    /// Volume UUID; by default the one the children's metadata names (or a new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
    /// Size in bytes the host sees.
    pub size: u64,
    /// Child URIs.
    pub children: Vec<String>,
    /// A child I/O outstanding this long faults the child (default 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_timeout_ms: Option<u64>,
    /// Keep a write-intent bitmap on the children (default `true`): after a crash only the
    /// regions it marks are resynchronised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_intent: Option<bool>,
    /// Children labelled for this other volume are taken as this one's (clones of its
    /// replicas, e.g. made from its snapshot) and relabelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt_uuid: Option<Uuid>,
}
params_knobs!(NexusCreate {});

/// `nexus_destroy`, `nexus_set_rebuild_rate`: a nexus by name (and a rate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NexusName {
    /// The nexus.
    pub name: String,
}
params_knobs!(NexusName {});

/// `nexus_get`: one nexus, or all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NexusGet {
    /// The nexus; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
params_knobs!(NexusGet {});

/// `nexus_add_child`, `nexus_remove_child`, `nexus_fault_child`, `nexus_stop_rebuild`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NexusChild {
    /// The nexus.
    pub name: String,
    /// The child's URI.
    pub uri: String,
}
params_knobs!(NexusChild {});

/// `nexus_pause_rebuild`, `nexus_resume_rebuild`: one child's rebuild, or all of the nexus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NexusRebuildRef {
    /// The nexus.
    pub name: String,
    /// The child; every rebuild of the nexus when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}
params_knobs!(NexusRebuildRef {});

/// `nexus_set_rebuild_rate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NexusSetRebuildRate {
    /// The nexus.
    pub name: String,
    /// MiB/s; 0 means unlimited. Absent: back to the default policy (unlimited while the host
    /// is idle, 128 MiB/s while it does I/O).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mib_per_sec: Option<u64>,
}
params_knobs!(NexusSetRebuildRate {});

/// `nexus_resize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NexusResize {
    /// The nexus.
    pub name: String,
    /// The new size in bytes the host sees (at least the current one).
    pub size: u64,
}
params_knobs!(NexusResize {});

/// Registers the nexus methods.
pub fn register(r: &mut Registry<Daemon>) {
    r.register("nexus_resize", resize);
    r.register(CREATE_METHOD, create);
    r.register("nexus_destroy", destroy);
    r.register("nexus_get", get);
    r.register("nexus_add_child", |d: &Daemon, p: NexusChild| {
        let (nx, uri) = nexus_and_uri(d, &p.name, &p.uri)?;
        let bdev = child_free(d, &nx, &uri)?;
        wait(nx.add_child(ChildSpec::new(uri, bdev)))?;
        update_recipe(d, &nx);
        Ok(Value::Bool(true))
    });
    r.register("nexus_remove_child", |d: &Daemon, p: NexusChild| {
        let (nx, uri) = nexus_and_uri(d, &p.name, &p.uri)?;
        wait(nx.remove_child(&uri))?;
        update_recipe(d, &nx);
        Ok(Value::Bool(true))
    });
    r.register("nexus_fault_child", |d: &Daemon, p: NexusChild| {
        let (nx, uri) = nexus_and_uri(d, &p.name, &p.uri)?;
        wait(nx.fault_child(&uri))?;
        Ok(Value::Bool(true))
    });
    r.register("nexus_stop_rebuild", |d: &Daemon, p: NexusChild| {
        let (nx, uri) = nexus_and_uri(d, &p.name, &p.uri)?;
        wait(nx.stop_rebuild(&uri))?;
        Ok(Value::Bool(true))
    });
    r.register("nexus_pause_rebuild", |d: &Daemon, p: NexusRebuildRef| {
        pause_resume(d, &p, true)
    });
    r.register("nexus_resume_rebuild", |d: &Daemon, p: NexusRebuildRef| {
        pause_resume(d, &p, false)
    });
    r.register(
        "nexus_set_rebuild_rate",
        |d: &Daemon, p: NexusSetRebuildRate| {
            let nexus = find(d, &p.name)?;
            match p.mib_per_sec {
                Some(m) => nexus.set_rebuild_rate(m),
                None => nexus.set_rebuild_rate_policy(RebuildRate::default()),
            }
            Ok(Value::Bool(true))
        },
    );
}

pub(super) fn find(daemon: &Daemon, name: &str) -> Result<Arc<Nexus>, RpcError> {
    lookup(daemon, name).ok_or_else(|| RpcError::no_such_device(format!("nexus {name}")))
}

/// Maps a nexus error to the RPC error SPDK-style tools expect.
pub fn nexus_error(e: &NexusError) -> RpcError {
    let m = e.to_string();
    match (e, e.kind()) {
        (NexusError::ChildExists(_), _) => RpcError::already_exists(m),
        (NexusError::MetadataIo { .. }, _) => RpcError::errno(error::EIO, m),
        (_, NexusErrorKind::Invalid) => RpcError::invalid_argument(m),
        (_, NexusErrorKind::NotFound) => RpcError::no_such_device(m),
        (_, NexusErrorKind::Exists) => RpcError::already_exists(m),
        (NexusError::NoCurrentChild(_) | NexusError::ForeignChild { .. }, _) => {
            RpcError::invalid_argument(m)
        }
        (_, NexusErrorKind::State) => RpcError::busy(m),
        (_, NexusErrorKind::Io) => RpcError::no_such_device(m),
        (_, NexusErrorKind::Unsupported) => RpcError::not_supported(m),
        (_, NexusErrorKind::Unavailable) => RpcError::internal(m),
    }
}

fn wait<T>(t: shoal_replication::Ticket<Result<T, NexusError>>) -> Result<T, RpcError> {
    t.wait(WAIT).and_then(|r| r).map_err(|e| nexus_error(&e))
}

/// Opens children for the nexus: `bdev:///` from the daemon's registry.
struct Opener<'a> {
    daemon: &'a Daemon,
}

impl ChildOpener for Opener<'_> {
    fn open(&self, uri: &ChildUri) -> Result<Arc<dyn Bdev>, NexusError> {
        match uri {
            ChildUri::Local { name } => {
                let b = self.daemon.bdev(name).ok_or_else(|| NexusError::Open {
                    uri: uri.to_string(),
                    reason: format!("there is no bdev {name}"),
                })?;
                if b.info().product_name == shoal_replication::PRODUCT_NAME {
                    return Err(NexusError::Invalid(format!(
                        "child {uri}: a nexus cannot be the child of a nexus"
                    )));
                }
                Ok(b)
            }
            ChildUri::Remote(remote) => {
                let admin = self
                    .daemon
                    .reactors
                    .first()
                    .ok_or(NexusError::ReactorGone)?;
                let b =
                    RemoteBdev::connect_parsed(admin, remote).map_err(|e| NexusError::Open {
                        uri: uri.to_string(),
                        reason: e.to_string(),
                    })?;
                let mut remotes = self
                    .daemon
                    .remotes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                remotes.retain(|w| w.strong_count() > 0);
                remotes.push(Arc::downgrade(&b));
                Ok(b)
            }
        }
    }
}

/// Parses a child URI; a local bdev named by its UUID or alias (a logical volume's
/// `bdev:///lvs/lvol`) becomes `bdev:///<its name>` (a volume's name is its UUID, which stays
/// the same across renames and restarts).
fn parse_uri(daemon: &Daemon, text: &str) -> Result<ChildUri, RpcError> {
    let uri = ChildUri::parse(text).map_err(|e| nexus_error(&e))?;
    Ok(match uri {
        ChildUri::Local { name } => ChildUri::Local {
            name: daemon.bdev(&name).map_or(name, |b| b.info().name.clone()),
        },
        remote => remote,
    })
}

fn nexus_and_uri(d: &Daemon, name: &str, uri: &str) -> Result<(Arc<Nexus>, ChildUri), RpcError> {
    Ok((find(d, name)?, parse_uri(d, uri)?))
}

/// Checks that nothing else holds the child `uri` (another nexus; for a local bdev also a
/// namespace or a stacked bdev). A child of `except` may be given again (a faulted child
/// coming back).
fn check_free(
    daemon: &Daemon,
    stacked: &Stacked,
    uri: &ChildUri,
    except: Option<&Nexus>,
) -> Result<(), RpcError> {
    if let ChildUri::Local { name } = uri
        && let Some(holder) = claimed_by(daemon, stacked, name)
    {
        return Err(RpcError::busy(format!(
            "bdev {name} is already claimed by {holder}"
        )));
    }
    if let Some(other) = nexus_using(daemon, uri, except) {
        return Err(RpcError::busy(format!(
            "{uri} is already a child of nexus {other}"
        )));
    }
    Ok(())
}

/// Opens `uri` as a new child of `nx`, checking that nothing else holds it.
fn child_free(daemon: &Daemon, nx: &Nexus, uri: &ChildUri) -> Result<Arc<dyn Bdev>, RpcError> {
    check_free(daemon, &lock(&daemon.stacked), uri, Some(nx))?;
    Opener { daemon }.open(uri).map_err(|e| nexus_error(&e))
}

fn create(daemon: &Daemon, p: NexusCreate) -> Result<Value, RpcError> {
    let home = daemon
        .reactors
        .first()
        .cloned()
        .ok_or_else(|| RpcError::internal("no reactor is running"))?;
    let stacked = lock(&daemon.stacked);
    check_new_name(daemon, &p.name)?;
    let mut specs = Vec::with_capacity(p.children.len());
    for text in &p.children {
        let uri = parse_uri(daemon, text)?;
        check_free(daemon, &stacked, &uri, None)?;
        let bdev = Opener { daemon }.open(&uri).map_err(|e| nexus_error(&e))?;
        specs.push(ChildSpec::new(uri, bdev));
    }
    let mut opts = NexusOptions::new(p.name.clone(), p.size);
    opts.uuid = p.uuid;
    opts.adopt = p.adopt_uuid;
    if let Some(ms) = p.io_timeout_ms {
        opts.io_timeout = Duration::from_millis(ms);
    }
    if let Some(w) = p.write_intent {
        opts.write_intent = w;
    }
    let nx = wait(Nexus::create(opts, specs, &home))?;
    lock(&LIVE).retain(|w| w.strong_count() > 0);
    lock(&LIVE).push(Arc::downgrade(&nx));
    let bdev: Arc<dyn Bdev> = nx.clone();
    if let Err(e) = add_bdev(daemon, bdev, CREATE_METHOD, recipe(&nx, p.io_timeout_ms)) {
        let _ = nx.destroy().wait(WAIT);
        return Err(e);
    }
    Ok(Value::String(p.name))
}

/// The `nexus_create` params that recreate `nx` with its current children.
fn recipe(nx: &Nexus, io_timeout_ms: Option<u64>) -> Value {
    let st = nx.status();
    let mut v = json!({
        "name": st.name,
        "uuid": st.uuid,
        "size": st.size_bytes,
        "children": st.children.iter().map(|c| c.uri.clone()).collect::<Vec<_>>(),
    });
    if let (Some(ms), Value::Object(m)) = (io_timeout_ms, &mut v) {
        m.insert("io_timeout_ms".into(), json!(ms));
    }
    if let (None, Value::Object(m)) = (st.write_intent, &mut v) {
        m.insert("write_intent".into(), json!(false));
    }
    v
}

/// Rewrites the recipe of `nx` with its current children, moved to the end of the list (a
/// child added later may have been created after the nexus).
fn update_recipe(daemon: &Daemon, nx: &Nexus) {
    let name = nx.info().name.clone();
    let mut recipes = lock(&daemon.recipes);
    let Some(i) = recipes.iter().position(|(n, _)| *n == name) else {
        return;
    };
    let (n, mut r) = recipes.remove(i);
    let timeout = r.params.get("io_timeout_ms").and_then(Value::as_u64);
    r.params = recipe(nx, timeout);
    recipes.push((n, r));
}

fn resize(daemon: &Daemon, p: NexusResize) -> Result<Value, RpcError> {
    let nx = find(daemon, &p.name)?;
    // The remote children (every remote bdev of this daemon is a nexus child) read their
    // size again: the notice of a replica's growth may not have arrived yet.
    let remotes: Vec<Arc<RemoteBdev>> = daemon
        .remotes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for r in remotes {
        if let Err(e) = r.refresh_size() {
            tracing::warn!(bdev = %r.info().name, error = %e, "size of a remote child not re-read");
        }
    }
    wait(nx.resize(p.size))?;
    update_recipe(daemon, &nx);
    Ok(Value::Bool(true))
}

fn destroy(daemon: &Daemon, p: NexusName) -> Result<Value, RpcError> {
    let nx = find(daemon, &p.name)?;
    {
        let stacked = lock(&daemon.stacked);
        if let Some(holder) = claimed_by(daemon, &stacked, &p.name) {
            return Err(RpcError::busy(format!(
                "nexus {} is in use by {holder}; remove that first",
                p.name
            )));
        }
    }
    let r = wait(nx.destroy());
    daemon.bdevs.remove(&p.name);
    daemon.forget_bdev(&p.name);
    r?;
    tracing::info!(nexus = %p.name, "nexus destroyed");
    Ok(Value::Bool(true))
}

fn pause_resume(d: &Daemon, p: &NexusRebuildRef, pause: bool) -> Result<Value, RpcError> {
    let nx = find(d, &p.name)?;
    let uri = p.uri.as_deref().map(|u| parse_uri(d, u)).transpose()?;
    let r = if pause {
        nx.pause_rebuild(uri.as_ref())
    } else {
        nx.resume_rebuild(uri.as_ref())
    };
    r.map_err(|e| nexus_error(&e))?;
    Ok(Value::Bool(true))
}

fn get(daemon: &Daemon, p: NexusGet) -> Result<Value, RpcError> {
    let list = match p.name {
        Some(n) => vec![find(daemon, &n)?],
        None => nexuses(daemon),
    };
    Ok(Value::Array(
        list.iter().map(|n| status_json(&n.status())).collect(),
    ))
}

fn summary_json(s: &RebuildSummary) -> Value {
    json!({
        "full": s.full,
        "outcome": format!("{:?}", s.outcome).to_lowercase(),
        "segments_total": s.segments_total,
        "segments_copied": s.segments_copied,
        "bytes_copied": s.bytes_copied,
        "duration_ms": u64::try_from(s.duration.as_millis()).unwrap_or(u64::MAX),
    })
}

fn child_json(c: &ChildStatus) -> Value {
    json!({
        "uri": c.uri,
        "state": c.state.as_str(),
        "fault_reason": c.fault_reason.map(|r| r.as_str()),
        "rebuild_progress": c.rebuild_progress,
        "replica_uuid": c.replica_uuid,
        "dirty_segments": c.dirty_segments,
        "rebuild": c.rebuild.as_ref().map(|r| json!({
            "full": r.full,
            "paused": r.paused,
            "segments_total": r.segments_total,
            "segments_copied": r.segments_copied,
            "bytes_copied": r.bytes_copied,
            "progress": r.progress,
        })),
        "last_rebuild": c.last_rebuild.as_ref().map(summary_json),
    })
}

/// `nexus_get`'s entry for one nexus.
pub fn status_json(s: &NexusStatus) -> Value {
    let rate = match s.rebuild_rate {
        RebuildRate::Adaptive { busy_mib_per_sec } => {
            json!({"mode": "adaptive", "mib_per_sec": busy_mib_per_sec})
        }
        RebuildRate::Fixed { mib_per_sec } => json!({"mode": "fixed", "mib_per_sec": mib_per_sec}),
        RebuildRate::Unlimited => json!({"mode": "unlimited", "mib_per_sec": 0}),
    };
    json!({
        "name": s.name,
        "uuid": s.uuid,
        "size": s.size_bytes,
        "block_size": s.block_size,
        "num_blocks": s.size_bytes / u64::from(s.block_size.max(1)),
        "state": s.state.as_str(),
        "generation": s.generation,
        "rebuild_rate": rate,
        "children": s.children.iter().map(child_json).collect::<Vec<_>>(),
        "write_intent": s.write_intent.map(|w| json!({
            "region_bytes": w.region_bytes,
            "regions": w.regions,
            "marked_regions": w.marked_regions,
            "bitmap_writes": w.bitmap_writes,
        })),
    })
}

/// Destroys every nexus of `daemon` in an orderly way (at shutdown, before the final flush),
/// so that their children's metadata is clean and the next start needs no resynchronisation.
pub fn shutdown(daemon: &Daemon) {
    for nx in nexuses(daemon) {
        let name = nx.info().name.clone();
        match nx.destroy().wait(WAIT) {
            Ok(Ok(())) => tracing::info!(nexus = %name, "nexus closed cleanly"),
            Ok(Err(e)) => tracing::warn!(nexus = %name, "closing the nexus: {e}"),
            Err(e) => tracing::warn!(nexus = %name, "closing the nexus: {e}"),
        }
    }
    disconnect_remotes(daemon);
}

/// How long shutdown waits for remote replicas' controllers to shut down.
const DISCONNECT_WAIT: Duration = Duration::from_secs(2);

/// Disconnects the remote replicas' controllers (normal shutdown, CC.SHN), all at once and for
/// at most [`DISCONNECT_WAIT`]: their connections would otherwise keep a receive in flight on
/// the reactors until the process ends, and the daemon's drain would wait its full bound.
fn disconnect_remotes(daemon: &Daemon) {
    let remotes: Vec<Arc<RemoteBdev>> =
        std::mem::take(&mut *daemon.remotes.lock().unwrap_or_else(|e| e.into_inner()))
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
    if remotes.is_empty() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    for b in remotes {
        let tx = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("disconnect".into())
            .spawn(move || {
                let r = b.controller().disconnect();
                let _ = tx.send((b.info().name.clone(), r));
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a thread to disconnect a remote replica: {e}");
        }
    }
    drop(tx);
    let deadline = std::time::Instant::now() + DISCONNECT_WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok((name, Ok(()))) => tracing::debug!(bdev = %name, "remote replica disconnected"),
            Ok((name, Err(e))) => tracing::warn!(bdev = %name, "disconnecting: {e}"),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!("remote replicas still disconnecting after {DISCONNECT_WAIT:?}");
                break;
            }
        }
    }
}
