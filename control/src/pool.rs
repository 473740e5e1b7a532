//! Pools: an lvstore on one disk of one node, declared through the API and brought online by
//! the leader.
//!
//! A pool's `disk` is a URI:
//! * `uring:///ABSOLUTE/PATH`: a file or block device, opened by `shoald` with io_uring
//!   (`bdev_uring_create`, 4 KiB blocks). Its pool survives restarts: when the node comes
//!   back the leader re-creates the bdev and `shoald`'s examine finds the pool on it.
//! * `malloc:///?size_mib=N`: N MiB of `shoald`'s memory (`bdev_malloc_create`), for tests;
//!   gone when `shoald` stops.
//!
//! The leader (pass of [`reconcile`]) makes each declared pool exist on its node: it creates
//! the disk's bdev `base-<name>` unless it exists, then asks `bdev_lvol_get_lvstores`: a pool
//! of that name is imported as it is (its UUID, capacity and free space recorded); otherwise a
//! new one is created with `bdev_lvol_create_lvstore`, but only if the control plane never saw
//! one there (a pool it knew that is missing from a persistent disk is an error to look at,
//! never overwritten). Capacity and free space are written to etcd when they change.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::ctx::Ctx;
use crate::model::{NodeView, Status, validate_name};
use crate::node_ops::{self, LvsInfo};
use crate::store::encode;
use crate::{Error, Result, keys, now_ms};

/// Largest `malloc` pool (in MiB).
pub const MAX_MALLOC_MIB: u64 = 1 << 20;

/// A pool's disk, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disk {
    /// `uring:///path`.
    Uring(String),
    /// `malloc:///?size_mib=N`.
    Malloc(u64),
}

impl Disk {
    /// Parses a disk URI.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming what is wrong.
    pub fn parse(uri: &str) -> Result<Self> {
        let bad = |detail: String| Error::Invalid {
            what: "disk",
            detail,
        };
        if let Some(path) = uri.strip_prefix("uring://") {
            if !path.starts_with('/') || path.len() < 2 || path.len() > 4096 {
                return Err(bad(format!("{uri:?}: expected uring:///ABSOLUTE/PATH")));
            }
            if path.split('/').any(|c| c == "..") || path.chars().any(char::is_control) {
                return Err(bad(format!("{uri:?}: no '..' or control characters")));
            }
            return Ok(Self::Uring(path.to_owned()));
        }
        if let Some(q) = uri.strip_prefix("malloc:///?size_mib=") {
            let mib: u64 = q
                .parse()
                .map_err(|_| bad(format!("{uri:?}: size_mib must be a number")))?;
            if !(8..=MAX_MALLOC_MIB).contains(&mib) {
                return Err(bad(format!("{uri:?}: size_mib 8 to {MAX_MALLOC_MIB}")));
            }
            return Ok(Self::Malloc(mib));
        }
        Err(bad(format!(
            "{uri:?}: expected uring:///PATH or malloc:///?size_mib=N"
        )))
    }

    /// Whether its contents survive a restart of `shoald`.
    #[must_use]
    pub fn persistent(&self) -> bool {
        matches!(self, Self::Uring(_))
    }

    /// The method and parameters that create its bdev `name`.
    #[must_use]
    pub fn create_call(&self, name: &str) -> (&'static str, serde_json::Value) {
        match self {
            Self::Uring(path) => (
                "bdev_uring_create",
                json!({ "name": name, "filename": path, "block_size": 4096 }),
            ),
            Self::Malloc(mib) => (
                "bdev_malloc_create",
                json!({ "name": name, "num_blocks": mib * 256, "block_size": 4096 }),
            ),
        }
    }
}

/// A pool as declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// The node.
    pub node: String,
    /// The pool's name (unique on its node).
    pub name: String,
    /// The disk URI.
    pub disk: String,
}

impl PoolSpec {
    /// Checks the names and the disk.
    ///
    /// # Errors
    /// [`Error::Invalid`].
    pub fn validate(&self) -> Result<Disk> {
        validate_name("node id", &self.node)?;
        validate_name("pool name", &self.name)?;
        Disk::parse(&self.disk)
    }

    /// Its disk's bdev on the node.
    #[must_use]
    pub fn base_bdev(&self) -> String {
        format!("base-{}", self.name)
    }
}

/// A pool's state as the leader last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolState {
    /// Declared; not yet seen on its node.
    Pending,
    /// On its node, with capacity and free space known.
    Online,
    /// Something is wrong (see the message).
    Error,
}

/// A pool in etcd (and in the API, with its node's status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    /// The declaration.
    #[serde(flatten)]
    pub spec: PoolSpec,
    /// The state.
    pub state: PoolState,
    /// The lvstore's UUID once seen.
    #[serde(default)]
    pub uuid: Option<String>,
    /// Data capacity in bytes.
    #[serde(default)]
    pub capacity_bytes: u64,
    /// Free bytes.
    #[serde(default)]
    pub free_bytes: u64,
    /// Cluster size in bytes (volumes are rounded up to it).
    #[serde(default)]
    pub cluster_bytes: u64,
    /// Why the pool is in error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it was declared (ms since the epoch).
    pub created_ms: u64,
}

/// A pool as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolView {
    /// The record.
    #[serde(flatten)]
    pub record: PoolRecord,
    /// Whether its node is online.
    pub node_status: Status,
}

/// Declares a pool (leader only): 201-like `true` when new, `false` when the same
/// declaration exists; [`Error::AlreadyExists`] for the same node and name with another disk.
/// Brings it online at once when its node answers.
///
/// # Errors
/// As above; [`Error::NotFound`] for an unknown node; etcd errors.
pub async fn declare(ctx: &Ctx, spec: PoolSpec) -> Result<(PoolRecord, bool)> {
    spec.validate()?;
    let _g = ctx.ops.lock().await;
    let leader = ctx.leader_key()?;
    let nodes = ctx.store.list_nodes().await?;
    if !nodes.iter().any(|n| n.record.id == spec.node) {
        return Err(Error::NotFound(format!("no node {:?}", spec.node)));
    }
    let key = keys::pool(&spec.node, &spec.name);
    if let Some((old, _)) = ctx.store.get::<PoolRecord>(&key).await? {
        if old.spec != spec {
            return Err(Error::AlreadyExists(format!(
                "pool {}/{} exists with disk {:?}",
                spec.node, spec.name, old.spec.disk
            )));
        }
        return Ok((old, false));
    }
    let mut rec = PoolRecord {
        spec,
        state: PoolState::Pending,
        uuid: None,
        capacity_bytes: 0,
        free_bytes: 0,
        cluster_bytes: 0,
        message: None,
        created_ms: now_ms(),
    };
    ctx.store
        .fenced_txn(&leader, vec![], vec![(key, encode(&rec))], vec![])
        .await?;
    tracing::info!(node = %rec.spec.node, pool = %rec.spec.name, disk = %rec.spec.disk, "event: pool declared");
    if let Ok(node) = Ctx::node(&nodes, &rec.spec.node)
        && node.status == Status::Online
    {
        match bring_online(ctx, node, &rec).await {
            Ok(new) => {
                write_if_changed(ctx, &leader, &rec, &new).await?;
                rec = new;
            }
            Err(e) => tracing::warn!(pool = %rec.spec.name, error = %e, "pool not online yet"),
        }
    }
    Ok((rec, true))
}

/// Removes a pool that no volume uses (its lvstore is deleted from the node, then the record).
///
/// # Errors
/// [`Error::NotFound`]; [`Error::FailedPrecondition`] while a replica lives on it;
/// [`Error::Unavailable`] when its node cannot be reached.
pub async fn remove(ctx: &Ctx, node_id: &str, name: &str) -> Result<()> {
    validate_name("node id", node_id)?;
    validate_name("pool name", name)?;
    let _g = ctx.ops.lock().await;
    let leader = ctx.leader_key()?;
    let key = keys::pool(node_id, name);
    let Some((rec, _)) = ctx.store.get::<PoolRecord>(&key).await? else {
        return Err(Error::NotFound(format!("no pool {node_id}/{name}")));
    };
    let vols: Vec<crate::volume::VolumeRecord> = ctx.store.list(&keys::volumes()).await?;
    if let Some(v) = vols.iter().find(|v| {
        v.replica_list
            .iter()
            .any(|r| r.node == node_id && r.pool == name)
    }) {
        return Err(Error::FailedPrecondition(format!(
            "pool {node_id}/{name} holds a replica of volume {} ({}); delete the volume first",
            v.spec.name, v.id
        )));
    }
    let nodes = ctx.store.list_nodes().await?;
    let node = Ctx::node(&nodes, node_id)?;
    let mut c = ctx.connect(node).await?;
    if node_ops::lvstores(&mut c)
        .await?
        .iter()
        .any(|l| l.name == name)
    {
        c.call("bdev_lvol_delete_lvstore", json!({ "lvs_name": name }))
            .await?;
    }
    let base = rec.spec.base_bdev();
    if node_ops::bdev_exists(&mut c, &base).await? {
        let method = match Disk::parse(&rec.spec.disk)? {
            Disk::Uring(_) => "bdev_uring_delete",
            Disk::Malloc(_) => "bdev_malloc_delete",
        };
        c.call(method, json!({ "name": base })).await?;
    }
    ctx.store
        .fenced_txn(&leader, vec![], vec![], vec![key])
        .await?;
    tracing::info!(node = %node_id, pool = %name, "event: pool removed");
    Ok(())
}

/// Makes the pool exist on its (online) node; the record as it should now be.
async fn bring_online(ctx: &Ctx, node: &NodeView, rec: &PoolRecord) -> Result<PoolRecord> {
    let disk = Disk::parse(&rec.spec.disk)?;
    let mut c = ctx.connect(node).await?;
    let find = |all: Vec<LvsInfo>| all.into_iter().find(|l| l.name == rec.spec.name);
    let mut found = find(node_ops::lvstores(&mut c).await?);
    if found.is_none() {
        let base = rec.spec.base_bdev();
        let (method, params) = disk.create_call(&base);
        node_ops::ensure_bdev(&mut c, &base, method, params).await?;
        found = find(node_ops::lvstores(&mut c).await?);
        if found.is_none() {
            if rec.uuid.is_some() && disk.persistent() {
                let mut new = rec.clone();
                new.state = PoolState::Error;
                new.message = Some(format!(
                    "pool {} ({}) is no longer on {}; not creating a new one over it",
                    rec.spec.name,
                    rec.uuid.as_deref().unwrap_or(""),
                    rec.spec.disk
                ));
                return Ok(new);
            }
            node_ops::create_lvstore(&mut c, &base, &rec.spec.name).await?;
            tracing::info!(node = %rec.spec.node, pool = %rec.spec.name, "event: pool created");
            found = find(node_ops::lvstores(&mut c).await?);
        } else {
            tracing::info!(node = %rec.spec.node, pool = %rec.spec.name, "event: pool imported");
        }
    }
    let Some(l) = found else {
        return Err(Error::Unavailable(format!(
            "node {}: pool {} not listed after its creation",
            rec.spec.node, rec.spec.name
        )));
    };
    let mut new = rec.clone();
    if new.uuid.as_deref().is_some_and(|u| u != l.uuid) && disk.persistent() {
        new.state = PoolState::Error;
        new.message = Some(format!(
            "the disk holds pool {} with UUID {}, not the {} the control plane knows",
            l.name,
            l.uuid,
            rec.uuid.as_deref().unwrap_or("")
        ));
        return Ok(new);
    }
    new.state = PoolState::Online;
    new.uuid = Some(l.uuid);
    new.capacity_bytes = l.capacity_bytes;
    new.free_bytes = l.free_bytes;
    new.cluster_bytes = l.cluster_bytes;
    new.message = None;
    Ok(new)
}

async fn write_if_changed(
    ctx: &Ctx,
    leader: &[u8],
    old: &PoolRecord,
    new: &PoolRecord,
) -> Result<()> {
    if old == new {
        return Ok(());
    }
    if old.state != new.state {
        tracing::info!(node = %new.spec.node, pool = %new.spec.name, state = ?new.state,
            message = new.message.as_deref().unwrap_or(""), "event: pool state");
    }
    ctx.store
        .fenced_txn(
            leader,
            vec![],
            vec![(keys::pool(&new.spec.node, &new.spec.name), encode(new))],
            vec![],
        )
        .await
}

/// Every pool with its node's status.
///
/// # Errors
/// etcd errors.
pub async fn list(ctx: &Ctx) -> Result<Vec<PoolView>> {
    let pools: Vec<PoolRecord> = ctx.store.list(&keys::pools()).await?;
    let nodes = ctx.store.list_nodes().await?;
    Ok(pools
        .into_iter()
        .map(|record| {
            let node_status = nodes
                .iter()
                .find(|n| n.record.id == record.spec.node)
                .map_or(Status::Offline, |n| n.status);
            PoolView {
                record,
                node_status,
            }
        })
        .collect())
}

/// The leader's pass over the pools: each pool of an online node made to exist, its free
/// space refreshed. Errors of one pool are logged and do not stop the others.
///
/// # Errors
/// etcd errors and [`Error::NotLeader`].
pub async fn reconcile(ctx: &Ctx, nodes: &[NodeView]) -> Result<()> {
    let leader = ctx.leader_key()?;
    let pools: Vec<PoolRecord> = ctx.store.list(&keys::pools()).await?;
    for rec in pools {
        let Ok(node) = Ctx::node(nodes, &rec.spec.node) else {
            continue;
        };
        if node.status != Status::Online || rec.state == PoolState::Error {
            continue;
        }
        let _g = ctx.ops.lock().await;
        // Read again under the lock: an API call may have changed or removed it.
        let Some((rec, _)) = ctx
            .store
            .get::<PoolRecord>(&keys::pool(&rec.spec.node, &rec.spec.name))
            .await?
        else {
            continue;
        };
        match bring_online(ctx, node, &rec).await {
            Ok(new) => write_if_changed(ctx, &leader, &rec, &new).await?,
            Err(e @ (Error::Etcd(_) | Error::NotLeader)) => return Err(e),
            Err(e) => {
                tracing::warn!(node = %rec.spec.node, pool = %rec.spec.name, error = %e, "pool reconcile failed");
            }
        }
    }
    Ok(())
}

/// Refreshes one pool's free space from its node (after a volume was created or deleted).
///
/// # Errors
/// etcd errors.
pub async fn refresh(ctx: &Ctx, node: &NodeView, node_id: &str, name: &str) -> Result<()> {
    let leader = ctx.leader_key()?;
    let Some((rec, _)) = ctx
        .store
        .get::<PoolRecord>(&keys::pool(node_id, name))
        .await?
    else {
        return Ok(());
    };
    if let Ok(new) = bring_online(ctx, node, &rec).await {
        write_if_changed(ctx, &leader, &rec, &new).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_uris() {
        assert_eq!(
            Disk::parse("uring:///var/lib/shoal/d0.img").unwrap(),
            Disk::Uring("/var/lib/shoal/d0.img".into())
        );
        assert_eq!(
            Disk::parse("malloc:///?size_mib=64").unwrap(),
            Disk::Malloc(64)
        );
        for bad in [
            "",
            "uring://relative",
            "uring:///",
            "uring:///a/../b",
            "file:///x",
            "malloc:///?size_mib=0",
            "malloc:///?size_mib=x",
            "malloc:///?size_mib=99999999999999999999",
        ] {
            assert!(Disk::parse(bad).is_err(), "{bad}");
        }
    }
}
