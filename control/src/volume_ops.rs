//! Volume operations, run by the leader (API calls and the reconcile loop), each under
//! [`Ctx::ops`] and safe to interrupt anywhere: the intent is written to etcd first, every
//! node step is idempotent ([`crate::node_ops`]), and the leader's pass over the volumes
//! ([`reconcile`]) finishes whatever a crash left half done.
//!
//! | operation | etcd writes (each fenced on the leader's key) | node calls |
//! |---|---|---|
//! | create | 1 txn: `volumes/<id>` (state `creating`, the placement) + `volume-names/<name>` (only if absent); 1 put: state `online` with the lvol UUIDs; 1 put per pool whose free space changed | per replica: `bdev_lvol_get_lvols`, `bdev_lvol_create`; `bdev_lvol_get_lvstores` |
//! | create from a snapshot | as create | per replica: `bdev_lvol_get_lvols`, `bdev_lvol_clone` of the snapshot's replica on that node (see [`crate::snapshot`]) |
//! | create that fails | the above, then 1 txn deleting both keys (or `deleting` when a node could not be cleaned) | `bdev_lvol_delete` of what was made |
//! | publish | 1 put: `target` (`publishing`); 1 put: `published` | per remote replica: its subsystem (get, create, add_ns, add_host, add_listener); on the target: `nexus_get`, `nexus_create`, the volume's subsystem |
//! | unpublish | 1 put: `unpublishing`; 1 put: no target | `nvmf_delete_subsystem`, `nexus_destroy`, the replicas' subsystems |
//! | delete | (unpublish) 1 put: `deleting`; 1 txn deleting both keys | per replica: `nvmf_delete_subsystem`, `bdev_lvol_delete` |
//!
//! Reads: each operation reads the node list (3 prefix reads) and the volume once.
//!
//! What they build on: the records' reads and writes ([`crate::volume_store`]), placement
//! ([`crate::placement`]), a volume made from a snapshot ([`crate::snapshot`]'s `source`
//! functions), growth ([`crate::resize`], which [`resize`] and [`reconcile`] hand over to),
//! and the nexus's children as `nexus_get` reports them ([`crate::nexus_state`]). None of
//! those uses this module; the healer's nexus move ([`crate::heal::nexus_move`]) does, for
//! `make_target`.

use std::collections::BTreeSet;

use etcd_client::{Compare, CompareOp};

use crate::ctx::Ctx;
use crate::model::{NodeView, Status};
use crate::node_ops::{self, Export};
use crate::placement::place;
use crate::pool::{self, PoolRecord};
use crate::store::encode;
use crate::volume::{
    Target, TargetRecord, TargetState, VolumeRecord, VolumeSpec, VolumeState, host_nqn,
    replica_state,
};
use crate::volume_store::{get, put_volume};
use crate::{Error, Result, keys, now_ms};

/// Creates a volume, or answers the one of that name: `(volume, created)`.
///
/// # Errors
/// [`Error::Invalid`], [`Error::AlreadyExists`] (same name, other parameters),
/// [`Error::FailedPrecondition`] (a source: snapshots are not implemented yet),
/// [`Error::Exhausted`], [`Error::Unavailable`]; nothing is left behind on an error.
pub async fn create(ctx: &Ctx, spec: VolumeSpec) -> Result<(VolumeRecord, bool)> {
    spec.validate()?;
    let _g = ctx.ops.lock().await;
    let leader = ctx.leader_key()?;
    let name_key = keys::volume_name(&spec.name);
    if let Some((id, _)) = ctx.store.get::<String>(&name_key).await? {
        let v = get(ctx, &id).await?;
        if v.spec != spec {
            return Err(Error::AlreadyExists(format!(
                "volume {:?} exists ({}) with other parameters: size {} bytes, {} replicas, thin {}",
                spec.name, v.id, v.spec.size_bytes, v.spec.replicas, v.spec.thin
            )));
        }
        return match v.state {
            VolumeState::Creating => {
                let nodes = ctx.store.list_nodes().await?;
                Ok((finish_create(ctx, &leader, v, &nodes).await?, false))
            }
            VolumeState::Deleting => Err(Error::FailedPrecondition(format!(
                "volume {:?} ({}) is being deleted",
                spec.name, v.id
            ))),
            _ => Ok((v, false)),
        };
    }
    let from = crate::snapshot::source_of(ctx, spec.source.as_ref()).await?;
    let nodes = ctx.store.list_nodes().await?;
    let pools: Vec<PoolRecord> = ctx.store.list(&keys::pools()).await?;
    let volumes: Vec<VolumeRecord> = ctx.store.list(&keys::volumes()).await?;
    let replica_list = match &from {
        Some(s) => crate::snapshot::place_from(s, &spec, &nodes, &pools, &volumes)?,
        None => place(&spec, &nodes, &pools, &volumes, &BTreeSet::new())?,
    };
    let v = VolumeRecord {
        id: uuid::Uuid::new_v4().to_string(),
        spec,
        state: VolumeState::Creating,
        replica_list,
        target: None,
        created_ms: now_ms(),
        retired: vec![],
        adopt: from.map(|s| s.volume_id),
        resizing_to: None,
    };
    // The intent, and the name taken only if nobody took it meanwhile.
    ctx.store
        .fenced_txn(
            &leader,
            vec![Compare::version(name_key.clone(), CompareOp::Equal, 0)],
            vec![(keys::volume(&v.id), encode(&v)), (name_key, encode(&v.id))],
            vec![],
        )
        .await?;
    tracing::info!(volume = %v.id, name = %v.spec.name, replicas = ?v.replica_list.iter().map(|r| &r.node).collect::<Vec<_>>(), "event: volume creating");
    let v = finish_create(ctx, &leader, v, &nodes).await?;
    Ok((v, true))
}

/// Creates the replicas of a `creating` volume; on failure removes them and the volume.
async fn finish_create(
    ctx: &Ctx,
    leader: &[u8],
    mut v: VolumeRecord,
    nodes: &[NodeView],
) -> Result<VolumeRecord> {
    let pools: Vec<PoolRecord> = ctx.store.list(&keys::pools()).await?;
    let from = crate::snapshot::source_of(ctx, v.spec.source.as_ref()).await?;
    let mut failure = None;
    for i in 0..v.replica_list.len() {
        let Some(r) = v.replica_list.get(i).cloned() else {
            break;
        };
        // From a snapshot: a replica beyond the snapshot's is rebuilt once published.
        let snap = from
            .as_ref()
            .map(|s| crate::snapshot::replica_on(s, &r.node));
        if snap == Some(None) {
            continue;
        }
        let cluster = pools
            .iter()
            .find(|p| p.spec.node == r.node && p.spec.name == r.pool)
            .map_or(4 << 20, |p| p.cluster_bytes);
        let size = v.replica_bytes(cluster);
        let made = async {
            let node = Ctx::node(nodes, &r.node)?;
            let mut c = ctx.connect(node).await?;
            let uuid = match snap.flatten() {
                Some(s) => crate::snapshot::ensure_clone(&mut c, &r.pool, s, v.lvol_name()).await?,
                None => {
                    node_ops::ensure_lvol(&mut c, &r.pool, v.lvol_name(), size, v.spec.thin).await?
                }
            };
            Ok::<_, Error>(uuid)
        }
        .await;
        match made {
            Ok(uuid) => {
                if let Some(r) = v.replica_list.get_mut(i) {
                    r.lvol_uuid = Some(uuid);
                    r.state = replica_state::ONLINE.into();
                }
            }
            Err(e) => {
                failure = Some(match e {
                    Error::NodeRpc(crate::node_rpc::NodeRpcError::Rpc {
                        code, message, ..
                    }) if code.abs() == 28 => {
                        Error::Exhausted(format!("node {}: {message}", r.node))
                    }
                    e => e,
                });
                break;
            }
        }
    }
    if let Some(e) = failure {
        tracing::warn!(volume = %v.id, error = %e, "event: volume creation failed; removing what was made");
        match remove_everywhere(ctx, leader, &mut v, nodes).await {
            Ok(()) => {}
            Err(e2) => {
                tracing::warn!(volume = %v.id, error = %e2, "cleanup postponed to the reconcile loop")
            }
        }
        return Err(e);
    }
    v.state = VolumeState::Online;
    put_volume(ctx, leader, &v).await?;
    for r in &v.replica_list {
        if let Ok(n) = Ctx::node(nodes, &r.node) {
            let _ = pool::refresh(ctx, n, &r.node, &r.pool).await;
        }
    }
    tracing::info!(volume = %v.id, name = %v.spec.name, "event: volume created");
    Ok(v)
}

/// Marks the volume `deleting`, removes its nexus, exports and replicas from every node,
/// then its keys. A node that cannot be reached leaves it `deleting` (the reconcile loop
/// goes on later) and is the error.
async fn remove_everywhere(
    ctx: &Ctx,
    leader: &[u8],
    v: &mut VolumeRecord,
    nodes: &[NodeView],
) -> Result<()> {
    if v.state != VolumeState::Deleting {
        v.state = VolumeState::Deleting;
        put_volume(ctx, leader, v).await?;
    }
    if v.target.is_some() {
        take_down_target(ctx, leader, v, nodes).await?;
    }
    let mut first_err = None;
    // Retired replicas too: a replaced replica not yet deleted from its node.
    for r in v.replica_list.iter().chain(&v.retired) {
        let done = async {
            let node = Ctx::node(nodes, &r.node)?;
            let mut c = ctx.connect(node).await?;
            node_ops::delete_export(&mut c, &v.replica_nqn(&r.node)).await?;
            node_ops::delete_lvol(&mut c, &r.pool, v.lvol_name()).await?;
            let _ = pool::refresh(ctx, node, &r.node, &r.pool).await;
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = done {
            first_err.get_or_insert(e);
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let name_key = keys::volume_name(&v.spec.name);
    let both = ctx
        .store
        .fenced_txn(
            leader,
            vec![Compare::value(
                name_key.clone(),
                CompareOp::Equal,
                encode(&v.id),
            )],
            vec![],
            vec![keys::volume(&v.id), name_key],
        )
        .await;
    match both {
        // The name points elsewhere (cannot happen with one leader at a time): keep it.
        Err(Error::FailedPrecondition(_)) => {
            ctx.store
                .fenced_txn(leader, vec![], vec![], vec![keys::volume(&v.id)])
                .await?;
        }
        r => r?,
    }
    tracing::info!(volume = %v.id, name = %v.spec.name, "event: volume deleted");
    Ok(())
}

/// Deletes a volume: nothing of it is left on any node.
///
/// # Errors
/// [`Error::NotFound`]; [`Error::Unavailable`] when a node cannot be reached (the volume
/// stays `deleting` and the leader finishes when it can).
pub async fn delete(ctx: &Ctx, id: &str) -> Result<()> {
    let _g = ctx.ops.lock().await;
    let leader = ctx.leader_key()?;
    let mut v = get(ctx, id).await?;
    let nodes = ctx.store.list_nodes().await?;
    remove_everywhere(ctx, &leader, &mut v, &nodes).await
}

/// Publishes a volume on `node` (or a node the leader chooses: an online node holding a
/// replica, with the fewest nexuses).
///
/// # Errors
/// [`Error::FailedPrecondition`] when published elsewhere or not online;
/// [`Error::NotFound`]; [`Error::Unavailable`].
pub async fn publish(ctx: &Ctx, id: &str, node: Option<String>) -> Result<Target> {
    if let Some(n) = &node {
        crate::model::validate_name("node", n)?;
    }
    let _g = ctx.ops.lock().await;
    let leader = ctx.leader_key()?;
    let mut v = get(ctx, id).await?;
    let nodes = ctx.store.list_nodes().await?;
    match v.state {
        VolumeState::Creating | VolumeState::Deleting => {
            return Err(Error::FailedPrecondition(format!(
                "volume {id} is {:?}",
                v.state
            )));
        }
        _ => {}
    }
    if let Some(t) = &v.target {
        if node.as_ref().is_some_and(|n| *n != t.node) {
            return Err(Error::FailedPrecondition(format!(
                "volume {id} is published on node {}; unpublish it first",
                t.node
            )));
        }
        if t.state == TargetState::Unpublishing {
            take_down_target(ctx, &leader, &mut v, &nodes).await?;
        }
    }
    if v.target.is_none() {
        let chosen = match node {
            Some(n) => {
                let nv = nodes
                    .iter()
                    .find(|x| x.record.id == n)
                    .ok_or_else(|| Error::NotFound(format!("no node {n:?}")))?;
                if nv.status != Status::Online {
                    return Err(Error::Unavailable(format!("node {n} is offline")));
                }
                nv
            }
            None => choose_target(ctx, &v, &nodes).await?,
        };
        v.target = Some(TargetRecord {
            node: chosen.record.id.clone(),
            nqn: v.nqn(),
            traddr: chosen.record.nvmf_addr.ip().to_string(),
            trsvcid: chosen.record.nvmf_addr.port().to_string(),
            state: TargetState::Publishing,
            moved_from: None,
        });
        put_volume(ctx, &leader, &v).await?;
    }
    finish_publish(ctx, &leader, &mut v, &nodes).await?;
    v.target
        .as_ref()
        .map(Target::from)
        .ok_or_else(|| Error::Unavailable("published target vanished".into()))
}

async fn choose_target<'a>(
    ctx: &Ctx,
    v: &VolumeRecord,
    nodes: &'a [NodeView],
) -> Result<&'a NodeView> {
    let volumes: Vec<VolumeRecord> = ctx.store.list(&keys::volumes()).await?;
    let nexuses = |id: &str| {
        volumes
            .iter()
            .filter(|x| x.target.as_ref().is_some_and(|t| t.node == id))
            .count()
    };
    v.replica_list
        .iter()
        .filter_map(|r| nodes.iter().find(|n| n.record.id == r.node))
        .filter(|n| n.status == Status::Online)
        .min_by_key(|n| (nexuses(&n.record.id), n.record.id.clone()))
        .ok_or_else(|| {
            Error::Unavailable(format!("no node of volume {}'s replicas is online", v.id))
        })
}

/// Exports the replicas to the target, creates the nexus and exports it; marks it published.
async fn finish_publish(
    ctx: &Ctx,
    leader: &[u8],
    v: &mut VolumeRecord,
    nodes: &[NodeView],
) -> Result<()> {
    let Some(t) = v.target.clone() else {
        return Ok(());
    };
    make_target(ctx, v, nodes).await?;
    if let Some(t) = v.target.as_mut() {
        t.state = TargetState::Published;
        t.moved_from = None;
    }
    put_volume(ctx, leader, v).await?;
    tracing::info!(volume = %v.id, node = %t.node, nqn = %t.nqn, "event: volume published");
    Ok(())
}

/// The node steps of a publish (idempotent; nothing written to etcd): exports the `online`
/// replicas to the target's node, creates the nexus there from them (its labels decide which
/// are current) and exports it on the target's address.
///
/// # Errors
/// Node errors; [`Error::Unavailable`] when no replica can be reached.
pub(crate) async fn make_target(ctx: &Ctx, v: &VolumeRecord, nodes: &[NodeView]) -> Result<()> {
    let Some(t) = v.target.clone() else {
        return Ok(());
    };
    let host = host_nqn(&t.node);
    let mut children = Vec::new();
    for r in &v.replica_list {
        let Some(uuid) = &r.lvol_uuid else { continue };
        // Only replicas known to be current: a new one, one that was being rebuilt or one
        // the nexus had faulted is added by the healer afterwards, and rebuilt.
        if r.state != replica_state::ONLINE {
            continue;
        }
        if r.node == t.node {
            children.push(format!("bdev:///{uuid}"));
            continue;
        }
        let node = Ctx::node(nodes, &r.node)?;
        let exported = async {
            let mut c = ctx.connect(node).await?;
            node_ops::ensure_export(
                &mut c,
                &Export {
                    nqn: &v.replica_nqn(&r.node),
                    bdev: uuid,
                    traddr: node.record.nvmf_addr.ip().to_string(),
                    trsvcid: node.record.nvmf_addr.port().to_string(),
                    host: Some(&host),
                    serial: &v.serial(),
                },
            )
            .await
        }
        .await;
        match exported {
            Ok(()) => children.push(format!(
                "nvmf://{}/{}?hostnqn={host}",
                node.record.nvmf_addr,
                v.replica_nqn(&r.node)
            )),
            // The nexus starts without it (degraded); healing brings it back.
            Err(e) => {
                tracing::warn!(volume = %v.id, node = %r.node, error = %e, "replica not exported; publishing without it")
            }
        }
    }
    if children.is_empty() {
        return Err(Error::Unavailable(format!(
            "volume {}: no replica reachable",
            v.id
        )));
    }
    let node = Ctx::node(nodes, &t.node)?;
    let mut c = ctx.connect(node).await?;
    let (name, size, adopt) = (v.lvol_name(), v.spec.size_bytes, v.adopt.as_deref());
    node_ops::ensure_nexus(&mut c, name, &v.id, size, &children, adopt).await?;
    node_ops::ensure_export(
        &mut c,
        &Export {
            nqn: &t.nqn,
            bdev: v.lvol_name(),
            traddr: t.traddr.clone(),
            trsvcid: t.trsvcid.clone(),
            host: None,
            serial: &v.serial(),
        },
    )
    .await
}

/// Unpublishes a volume (idempotent).
///
/// # Errors
/// [`Error::NotFound`]; [`Error::Unavailable`] when the target node cannot be reached.
pub async fn unpublish(ctx: &Ctx, id: &str) -> Result<()> {
    let _g = ctx.ops.lock().await;
    let leader = ctx.leader_key()?;
    let mut v = get(ctx, id).await?;
    if v.target.is_none() {
        return Ok(());
    }
    let nodes = ctx.store.list_nodes().await?;
    take_down_target(ctx, &leader, &mut v, &nodes).await
}

async fn take_down_target(
    ctx: &Ctx,
    leader: &[u8],
    v: &mut VolumeRecord,
    nodes: &[NodeView],
) -> Result<()> {
    let Some(t) = v.target.clone() else {
        return Ok(());
    };
    if t.state != TargetState::Unpublishing {
        if let Some(t) = v.target.as_mut() {
            t.state = TargetState::Unpublishing;
        }
        put_volume(ctx, leader, v).await?;
    }
    let node = Ctx::node(nodes, &t.node)?;
    let mut c = ctx.connect(node).await?;
    record_nexus_faults(ctx, leader, v, &t.node, &mut c).await?;
    node_ops::delete_export(&mut c, &t.nqn).await?;
    node_ops::destroy_nexus(&mut c, v.lvol_name()).await?;
    for r in &v.replica_list {
        if r.node == t.node {
            continue;
        }
        // A replica node that is down has no connection to close; its export goes with the
        // replica's deletion or the next publish reuses it.
        if let Ok(n) = Ctx::node(nodes, &r.node)
            && let Ok(mut c) = ctx.connect(n).await
        {
            node_ops::delete_export(&mut c, &v.replica_nqn(&r.node)).await?;
        }
    }
    v.target = None;
    put_volume(ctx, leader, v).await?;
    tracing::info!(volume = %v.id, node = %t.node, "event: volume unpublished");
    Ok(())
}

/// Before a nexus is destroyed, records as `faulted` every replica that etcd has `online` but
/// the nexus does not (faulted, or rebuilding): the nexus may have acknowledged writes those
/// replicas missed, and its labels go with it, so the next publish must not take them as
/// current (the healer's pass may not have seen the fault yet). Nothing is changed when the
/// nexus is gone or has no online child left (then nothing is known to be newer).
async fn record_nexus_faults(
    ctx: &Ctx,
    leader: &[u8],
    v: &mut VolumeRecord,
    target: &str,
    c: &mut crate::node_rpc::NodeClient,
) -> Result<()> {
    let Some(nx) = node_ops::nexus(c, v.lvol_name()).await? else {
        return Ok(());
    };
    let kids = crate::nexus_state::children(v, target, &nx);
    if !kids.values().any(|k| k.state == "online") {
        return Ok(());
    }
    let mut changed = false;
    for r in &mut v.replica_list {
        let current = kids.get(&r.node).is_some_and(|k| k.state == "online");
        if r.state == replica_state::ONLINE && !current {
            tracing::warn!(volume = %v.id, node = %r.node, "replica not in sync in the nexus being taken down: recorded faulted");
            r.state = replica_state::FAULTED.to_owned();
            changed = true;
        }
    }
    if changed {
        put_volume(ctx, leader, v).await?;
    }
    Ok(())
}

/// Grows a volume (see [`crate::resize`]).
///
/// # Errors
/// See [`crate::resize::resize`].
pub async fn resize(ctx: &Ctx, id: &str, size_bytes: u64) -> Result<VolumeRecord> {
    crate::resize::resize(ctx, id, size_bytes).await
}

/// The leader's pass over the volumes: finishes what a crash interrupted (`creating`,
/// `deleting`, `publishing`, `unpublishing`, a growth). One volume's error does not stop the others.
///
/// # Errors
/// etcd errors and [`Error::NotLeader`].
pub async fn reconcile(ctx: &Ctx, nodes: &[NodeView]) -> Result<()> {
    let leader = ctx.leader_key()?;
    let ids: Vec<VolumeRecord> = ctx.store.list(&keys::volumes()).await?;
    for v in ids {
        let pending = matches!(v.state, VolumeState::Creating | VolumeState::Deleting)
            || v.resizing_to.is_some()
            || v.target.as_ref().is_some_and(|t| {
                // (A nexus moving off a dead node is the healer's: `heal::nexus_move`.)
                t.state != TargetState::Published && t.moved_from.is_none()
            });
        if !pending {
            continue;
        }
        let _g = ctx.ops.lock().await;
        let Some((mut v, _)) = ctx.store.get::<VolumeRecord>(&keys::volume(&v.id)).await? else {
            continue;
        };
        let r = match (v.state, v.target.as_ref().map(|t| t.state)) {
            (VolumeState::Creating, _) => finish_create(ctx, &leader, v.clone(), nodes)
                .await
                .map(|_| ()),
            (VolumeState::Deleting, _) => remove_everywhere(ctx, &leader, &mut v, nodes).await,
            _ if v.resizing_to.is_some() => {
                crate::resize::finish(ctx, &leader, &mut v, nodes).await
            }
            (_, Some(TargetState::Publishing)) => finish_publish(ctx, &leader, &mut v, nodes).await,
            (_, Some(TargetState::Unpublishing)) => {
                take_down_target(ctx, &leader, &mut v, nodes).await
            }
            _ => Ok(()),
        };
        match r {
            Ok(()) => tracing::info!(volume = %v.id, "reconciled an interrupted operation"),
            Err(e @ (Error::Etcd(_) | Error::NotLeader)) => return Err(e),
            Err(e) => tracing::debug!(volume = %v.id, error = %e, "reconcile: not yet"),
        }
    }
    Ok(())
}
