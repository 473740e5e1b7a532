//! Growing a volume (`POST /v1/volumes/{id}/resize`), run by the leader under [`Ctx::ops`]
//! like the other volume operations, and finished by the leader's reconcile pass when a
//! crash interrupts it.
//!
//! | step | etcd writes (fenced on the leader's key) | node calls |
//! |---|---|---|
//! | intent | 1 put: `resizing_to` | none |
//! | replicas | none | per replica on an online node: `bdev_get_bdevs` of its lvol; if smaller, `bdev_lvol_resize` (`size_in_mib`: the volume's size plus the nexus's 1 MiB, rounded up to the pool's cluster) |
//! | nexus (published) | none | on the target node: `nexus_resize` (which re-reads the remote children's sizes; its hosts get a Namespace Attribute Changed event) |
//! | done | 1 put: `size_bytes` = the new size, no `resizing_to`; 1 put per pool whose free space changed | `bdev_lvol_get_lvstores` |
//!
//! Replicas first, so that the nexus finds every child large enough. Every step is
//! idempotent (a replica at the size or larger is left alone; a nexus at the size answers at
//! once), so a new leader finishes a growth from `resizing_to` ([`finish`]).
//!
//! Failures:
//! * shrinking: 416 `out_of_range`, nothing changed;
//! * a thick volume whose replica pool lacks the room, known from the pools' records before
//!   anything is done or from the node's `ENOSPC`: 507 `resource_exhausted` naming the node
//!   and the pool, and the growth is **rolled back**: `resizing_to` is cleared, the volume
//!   keeps its size (replicas already grown keep their larger lvol, which the nexus does not
//!   use; a later growth reuses it);
//! * anything else (a node unreachable, the nexus rebuilding a child: `EBUSY`): 503, and the
//!   growth stays recorded; the reconcile pass finishes it.
//!
//! A replica whose node is offline is skipped: healing replaces it at the new size
//! ([`VolumeRecord::replica_bytes`] counts `resizing_to`); should the node come back first,
//! the nexus refuses the too-small replica when it is added back, and it is replaced.

use serde_json::{Value, json};

use crate::ctx::Ctx;
use crate::model::{NodeView, Status};
use crate::node_rpc::{NodeClient, NodeRpcError};
use crate::pool::{self, PoolRecord};
use crate::volume::{MAX_SIZE, TargetState, VolumeRecord, VolumeState, replica_bytes_for};
use crate::volume_store::{get, put_volume};
use crate::{Error, Result, keys};

/// `ENOSPC`.
const ENOSPC: i64 = 28;

/// Grows volume `id` to `size_bytes` and answers it (the same size: at once).
///
/// # Errors
/// [`Error::Invalid`] (not a multiple of 4096, above the maximum), [`Error::OutOfRange`]
/// (smaller), [`Error::NotFound`], [`Error::FailedPrecondition`] (creating, deleting, or a
/// growth to another size under way), [`Error::Exhausted`] (no room: rolled back),
/// [`Error::Unavailable`] and node errors (the growth stays recorded and is finished later).
pub async fn resize(ctx: &Ctx, id: &str, size_bytes: u64) -> Result<VolumeRecord> {
    if size_bytes == 0 || size_bytes > MAX_SIZE || !size_bytes.is_multiple_of(4096) {
        return Err(Error::Invalid {
            what: "size_bytes",
            detail: format!("{size_bytes}: a multiple of 4096, from 4096 to {MAX_SIZE}"),
        });
    }
    let _g = ctx.ops.lock().await;
    let leader = ctx.leader_key()?;
    let mut v = get(ctx, id).await?;
    if matches!(v.state, VolumeState::Creating | VolumeState::Deleting) {
        return Err(Error::FailedPrecondition(format!(
            "volume {id} is {:?}",
            v.state
        )));
    }
    if size_bytes < v.spec.size_bytes {
        return Err(Error::OutOfRange(format!(
            "volume {id} has {} bytes; shrinking to {size_bytes} is not supported",
            v.spec.size_bytes
        )));
    }
    match v.resizing_to {
        Some(t) if t != size_bytes => {
            return Err(Error::FailedPrecondition(format!(
                "volume {id} is being grown to {t} bytes; ask again once that is done"
            )));
        }
        None if size_bytes == v.spec.size_bytes => return Ok(v),
        _ => {}
    }
    let nodes = ctx.store.list_nodes().await?;
    if v.resizing_to.is_none() {
        check_room(ctx, &v, size_bytes).await?;
        v.resizing_to = Some(size_bytes);
        put_volume(ctx, &leader, &v).await?;
        tracing::info!(volume = %v.id, from = v.spec.size_bytes, to = size_bytes, "event: volume resizing");
    }
    finish(ctx, &leader, &mut v, &nodes).await?;
    Ok(v)
}

/// Refuses a thick growth that a replica's pool has no room for, as its record says.
async fn check_room(ctx: &Ctx, v: &VolumeRecord, size_bytes: u64) -> Result<()> {
    if v.spec.thin {
        return Ok(());
    }
    let pools: Vec<PoolRecord> = ctx.store.list(&keys::pools()).await?;
    for r in &v.replica_list {
        let Some(p) = pools
            .iter()
            .find(|p| p.spec.node == r.node && p.spec.name == r.pool)
        else {
            continue;
        };
        let more = replica_bytes_for(size_bytes, p.cluster_bytes)
            .saturating_sub(v.replica_bytes(p.cluster_bytes));
        if more > p.free_bytes {
            return Err(Error::Exhausted(format!(
                "node {} pool {}: growing volume {} to {size_bytes} bytes needs {more} more bytes, the pool has {} free; the volume is unchanged",
                r.node, r.pool, v.id, p.free_bytes
            )));
        }
    }
    Ok(())
}

/// Finishes the growth `v.resizing_to` records: the replicas, then the nexus, then the size.
///
/// # Errors
/// As [`resize`]; on [`Error::Exhausted`] the growth is rolled back.
pub async fn finish(
    ctx: &Ctx,
    leader: &[u8],
    v: &mut VolumeRecord,
    nodes: &[NodeView],
) -> Result<()> {
    let Some(size) = v.resizing_to else {
        return Ok(());
    };
    let pools: Vec<PoolRecord> = ctx.store.list(&keys::pools()).await?;
    match grow_replicas(ctx, v, size, nodes, &pools).await {
        Ok(()) => {}
        Err(e @ Error::Exhausted(_)) => {
            // Rolled back: the volume keeps its size.
            v.resizing_to = None;
            put_volume(ctx, leader, v).await?;
            tracing::warn!(volume = %v.id, error = %e, "event: volume growth refused; rolled back");
            return Err(e);
        }
        Err(e) => return Err(e),
    }
    if let Some(t) = v
        .target
        .as_ref()
        .filter(|t| t.state == TargetState::Published)
    {
        let node = Ctx::node(nodes, &t.node)?;
        let mut c = ctx.connect(node).await?;
        c.call(
            "nexus_resize",
            json!({ "name": v.lvol_name(), "size": size }),
        )
        .await
        .map_err(|e| match e {
            NodeRpcError::Rpc { code, message, .. } => Error::Unavailable(format!(
                "node {}: the nexus did not grow (error {code}: {message}); the growth is finished later",
                t.node
            )),
            e => e.into(),
        })?;
    }
    v.spec.size_bytes = size;
    v.resizing_to = None;
    put_volume(ctx, leader, v).await?;
    for r in &v.replica_list {
        if let Ok(n) = Ctx::node(nodes, &r.node) {
            let _ = pool::refresh(ctx, n, &r.node, &r.pool).await;
        }
    }
    tracing::info!(volume = %v.id, size_bytes = size, "event: volume resized");
    Ok(())
}

async fn grow_replicas(
    ctx: &Ctx,
    v: &VolumeRecord,
    size: u64,
    nodes: &[NodeView],
    pools: &[PoolRecord],
) -> Result<()> {
    for r in &v.replica_list {
        let Some(uuid) = &r.lvol_uuid else { continue };
        let node = Ctx::node(nodes, &r.node)?;
        if node.status != Status::Online {
            tracing::warn!(volume = %v.id, node = %r.node, "replica's node offline: not grown (healing replaces it at the new size)");
            continue;
        }
        let cluster = pools
            .iter()
            .find(|p| p.spec.node == r.node && p.spec.name == r.pool)
            .map_or(4 << 20, |p| p.cluster_bytes);
        let want = replica_bytes_for(size, cluster);
        let mut c = ctx.connect(node).await?;
        grow_lvol(&mut c, uuid, want).await.map_err(|e| match e {
            Error::NodeRpc(NodeRpcError::Rpc { code, message, .. }) if code.abs() == ENOSPC => {
                Error::Exhausted(format!(
                    "node {} pool {}: {message}; the volume is unchanged",
                    r.node, r.pool
                ))
            }
            e => e,
        })?;
    }
    Ok(())
}

/// Grows lvol `uuid` to at least `bytes` (one that has them already is left alone).
async fn grow_lvol(c: &mut NodeClient, uuid: &str, bytes: u64) -> Result<()> {
    let v = c.call("bdev_get_bdevs", json!({ "name": uuid })).await?;
    let b = v.as_array().and_then(|a| a.first());
    let have = b.and_then(|b| {
        let n = b.get("num_blocks").and_then(Value::as_u64)?;
        let bs = b.get("block_size").and_then(Value::as_u64)?;
        n.checked_mul(bs)
    });
    let Some(have) = have else {
        return Err(Error::Unavailable(format!(
            "node at {} answered nonsense for bdev_get_bdevs {uuid}",
            c.addr()
        )));
    };
    if have >= bytes {
        return Ok(());
    }
    c.call(
        "bdev_lvol_resize",
        json!({ "name": uuid, "size_in_mib": bytes.div_ceil(1 << 20) }),
    )
    .await?;
    Ok(())
}
