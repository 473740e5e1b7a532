//! Healing: the leader's pass that keeps every published volume at its replica count.
//!
//! Each pass (every 500 ms) asks each node that holds a nexus for all of them (`nexus_get`,
//! one call per node) and compares each published volume's nexus with its record in etcd:
//!
//! * a replica whose node has been offline for `--heal-after` (counted from when the leader
//!   saw it go, and never from before this leader's term began, so a new leader or one back
//!   from an etcd outage gives every node the full time again), or that the nexus faulted for
//!   a reason of the replica itself (`io_error`, `no_space`, `metadata_error`, `admin`,
//!   `rebuild_stopped`), is **replaced**, provided another child of the nexus is online (one
//!   that may hold the only current copy is never given up): a new replica is placed on
//!   another online node with room (never a node that holds or held a replica of the volume
//!   not yet deleted), the old one moves to the volume's `retired` list, and both go to etcd
//!   in one fenced transaction with their events;
//! * a replica the nexus faulted for a reason of the path (`disconnected`, `timed_out`,
//!   `cannot_open`) while its node is online is **re-added** (the nexus then copies only the
//!   segments it missed), at most [`MAX_READDS`] times before it is replaced (a new replica
//!   the nexus refuses that often is replaced too);
//! * a new replica is created (`bdev_lvol_create`), exported to the nexus's node and added to
//!   the nexus (`nexus_add_child`): the nexus rebuilds it online while the host's I/O goes on;
//!   the pass marks it `online` once the nexus does;
//! * a retired replica is removed from the nexus at once, and deleted (export and lvol) from
//!   its node as soon as the node answers: a node that comes back never serves it (its
//!   exports died with its `shoald`; the pool's import brings back only the lvol, which is
//!   deleted before anything exports it again).
//!
//! Every step is idempotent and recorded before the next depends on it, so a new leader that
//! takes over in the middle (the old one killed between two steps) finishes the work from
//! what etcd holds: a `creating` replica is created, exported and added again ("already
//! there" counts as done), a `rebuilding` one is watched, a retired one is removed.
//!
//! A published volume whose nexus's own node has been offline for `--heal-after` has its
//! nexus **moved** to a node holding a current replica, with the same NQN, namespace and
//! address ([`nexus_move`]); the replica on the dead node is then replaced as above.
//!
//! Unpublished volumes are not healed (there is no nexus to rebuild from); their retired
//! replicas are still deleted.
//!
//! The healer reads the nexuses through [`crate::nexus_state`] and places replacements with
//! [`crate::placement`]; its nexus move rebuilds a nexus with the publish's node steps
//! ([`crate::volume_ops`]). Only the leader's loop ([`crate::leader`]) uses this module.

pub mod nexus_move;

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::Value;

use crate::ctx::Ctx;
use crate::events::{Event, EventKind};
use crate::model::{NodeView, Status};
use crate::nexus_state::{Child, children, published, replica_fault};
use crate::node_ops::{self, Export};
use crate::placement;
use crate::pool::{self, PoolRecord};
use crate::store::encode;
use crate::volume::{
    ReplicaRecord, TargetRecord, VolumeRecord, VolumeState, host_nqn, replica_state as rs,
};
use crate::{Error, Result, keys, now_ms};

/// Re-adds of a replica faulted for a path reason before it is replaced.
pub const MAX_READDS: u32 = 3;

/// What the healer remembers during one term of leadership.
#[derive(Debug)]
pub struct Healer {
    term_start_ms: u64,
    /// (volume, node) pairs already reported as impossible to replace.
    blocked: HashSet<(String, String)>,
    /// Re-adds per (volume, node) since the replica was last online.
    readds: HashMap<(String, String), u32>,
}

impl Healer {
    /// A healer for a term that begins now.
    #[must_use]
    pub fn new() -> Self {
        Self {
            term_start_ms: now_ms(),
            blocked: HashSet::new(),
            readds: HashMap::new(),
        }
    }
}

impl Default for Healer {
    fn default() -> Self {
        Self::new()
    }
}

async fn commit(ctx: &Ctx, leader: &[u8], v: &VolumeRecord, events: Vec<Event>) -> Result<()> {
    let mut puts = vec![(keys::volume(&v.id), encode(v))];
    puts.extend(events.iter().map(Event::put));
    ctx.store.fenced_txn(leader, vec![], puts, vec![]).await?;
    for e in &events {
        e.log();
    }
    Ok(())
}

/// Every nexus of each target node of `volumes` (`None` for a node that is offline or did
/// not answer).
async fn nexus_states(
    ctx: &Ctx,
    nodes: &[NodeView],
    volumes: &[VolumeRecord],
) -> HashMap<String, Option<Vec<Value>>> {
    let mut out = HashMap::new();
    for t in volumes.iter().filter_map(published) {
        if out.contains_key(&t.node) {
            continue;
        }
        let got = async {
            let node = Ctx::node(nodes, &t.node)?;
            let mut c = ctx.connect(node).await?;
            node_ops::nexuses(&mut c).await
        }
        .await;
        match got {
            Ok(list) => out.insert(t.node.clone(), Some(list)),
            Err(e) => {
                tracing::debug!(node = %t.node, error = %e, "heal: no nexus state");
                out.insert(t.node.clone(), None)
            }
        };
    }
    out
}

/// Whether anything about `v` may need the healer.
fn needs_work(v: &VolumeRecord, nodes: &[NodeView], nexus: Option<&Value>) -> bool {
    if !v.retired.is_empty() {
        return true;
    }
    let Some(t) = published(v) else {
        return false;
    };
    let Some(nx) = nexus else { return false };
    let kids = children(v, &t.node, nx);
    kids.len() != v.replica_list.len()
        || kids.values().any(|c| c.state != "online")
        || v.replica_list.iter().any(|r| {
            r.state != rs::ONLINE
                || nodes
                    .iter()
                    .any(|n| n.record.id == r.node && n.status != Status::Online)
        })
}

/// One healing pass over every volume (see the module's documentation). One volume's
/// trouble does not stop the others.
///
/// # Errors
/// etcd errors and [`Error::NotLeader`].
pub async fn pass(ctx: &Ctx, h: &mut Healer, nodes: &[NodeView]) -> Result<()> {
    let leader = ctx.leader_key()?;
    let volumes: Vec<VolumeRecord> = ctx.store.list(&keys::volumes()).await?;
    let states = nexus_states(ctx, nodes, &volumes).await;
    for v in &volumes {
        let nexus = published(v).and_then(|t| {
            states
                .get(&t.node)?
                .as_ref()?
                .iter()
                .find(|n| n.get("name").and_then(Value::as_str) == Some(&v.id))
        });
        let moves = nexus_move::moving(v) || nexus_move::due(ctx, h, nodes, v);
        if !moves && !needs_work(v, nodes, nexus) {
            continue;
        }
        let _g = ctx.ops.lock().await;
        // Read again under the lock: an API call may have changed it meanwhile.
        let Some((mut cur, _)) = ctx.store.get::<VolumeRecord>(&keys::volume(&v.id)).await? else {
            continue;
        };
        if cur.target != v.target
            || !matches!(
                cur.state,
                VolumeState::Online | VolumeState::Degraded | VolumeState::Faulted
            )
        {
            continue;
        }
        let done = if moves {
            nexus_move::run(ctx, &leader, h, &mut cur, nodes).await
        } else {
            heal_volume(ctx, &leader, h, &mut cur, nodes, nexus).await
        };
        match done {
            Ok(()) => {}
            Err(e @ (Error::Etcd(_) | Error::NotLeader)) => return Err(e),
            Err(e) => tracing::info!(volume = %v.id, error = %e, "heal: not yet"),
        }
    }
    Ok(())
}

/// How long `node` has been offline as far as this term can tell (`None` when online).
fn offline_ms(h: &Healer, nodes: &[NodeView], node: &str) -> Option<u64> {
    let n = nodes.iter().find(|n| n.record.id == node)?;
    if n.status == Status::Online {
        return None;
    }
    let since = n
        .status_since_ms
        .unwrap_or(h.term_start_ms)
        .max(h.term_start_ms);
    Some(now_ms().saturating_sub(since))
}

fn is_online(nodes: &[NodeView], node: &str) -> bool {
    nodes
        .iter()
        .any(|n| n.record.id == node && n.status == Status::Online)
}

async fn heal_volume(
    ctx: &Ctx,
    leader: &[u8],
    h: &mut Healer,
    v: &mut VolumeRecord,
    nodes: &[NodeView],
    nexus: Option<&Value>,
) -> Result<()> {
    if let (Some(t), Some(nx)) = (published(v).cloned(), nexus) {
        let kids = children(v, &t.node, nx);
        decide(ctx, leader, h, v, nodes, &kids).await?;
        remove_retired_children(ctx, v, nodes, &t, &kids).await;
        add_children(ctx, leader, h, v, nodes, &t, &kids).await?;
        observe(ctx, leader, h, v, &kids).await?;
        delete_retired(ctx, leader, v, nodes, Some(&kids)).await
    } else if published(v).is_some() {
        // The nexus's node is down or the nexus is gone: nothing to rebuild from here.
        Ok(())
    } else {
        delete_retired(ctx, leader, v, nodes, None).await
    }
}

/// Marks replicas faulted, and replaces those that must be.
async fn decide(
    ctx: &Ctx,
    leader: &[u8],
    h: &mut Healer,
    v: &mut VolumeRecord,
    nodes: &[NodeView],
    kids: &HashMap<String, Child>,
) -> Result<()> {
    let heal_ms = u64::try_from(ctx.heal_after.as_millis()).unwrap_or(u64::MAX);
    for i in 0..v.replica_list.len() {
        let Some(r) = v.replica_list.get(i).cloned() else {
            break;
        };
        let child = kids.get(&r.node);
        let off = offline_ms(h, nodes, &r.node);
        let key = (v.id.clone(), r.node.clone());
        let faulted = child.filter(|c| c.state == "faulted");
        let why_replace = match (off, faulted) {
            (Some(ms), _) if ms >= heal_ms => Some(format!(
                "node {} offline for {}.{} s",
                r.node,
                ms / 1000,
                ms % 1000 / 100
            )),
            (_, Some(c)) if replica_fault(c.reason.as_deref()) => Some(format!(
                "the nexus faulted it ({})",
                c.reason.as_deref().unwrap_or("?")
            )),
            (None, Some(c)) if h.readds.get(&key).copied().unwrap_or(0) >= MAX_READDS => {
                Some(format!(
                    "faulted again ({}) after {MAX_READDS} re-adds",
                    c.reason.as_deref().unwrap_or("?")
                ))
            }
            (None, None)
                if r.state == rs::CREATING
                    && h.readds.get(&key).copied().unwrap_or(0) >= MAX_READDS =>
            {
                Some(format!(
                    "the nexus did not take it in {MAX_READDS} attempts"
                ))
            }
            _ => None,
        };
        let why_fault = why_replace.clone().or_else(|| match (off, faulted) {
            (Some(_), _) => Some("node offline".to_owned()),
            (None, Some(c)) => c.reason.clone(),
            _ => None,
        });
        let mut events = Vec::new();
        if let Some(reason) = &why_fault
            && r.state != rs::FAULTED
            && r.state != rs::CREATING
        {
            events.push(Event::new(
                EventKind::ReplicaFaulted,
                Some(&v.id),
                Some(&r.node),
                format!(
                    "replica of volume {} on node {} faulted: {reason}",
                    v.id, r.node
                ),
            ));
            if let Some(x) = v.replica_list.get_mut(i) {
                x.state = rs::FAULTED.into();
                x.reason = Some(reason.clone());
                x.rebuild_progress = None;
            }
        }
        // Never give a replica up while no other child of the nexus is online: it may hold
        // the only current copy (the others being rebuilt, say).
        let others_online = kids
            .iter()
            .any(|(n, c)| *n != r.node && c.state == "online");
        if let Some(reason) = why_replace.filter(|_| others_online) {
            match replacement(ctx, v, nodes).await {
                Ok(mut new) => {
                    new.replaces = Some(r.node.clone());
                    events.push(Event::new(
                        EventKind::ReplicaReplaced,
                        Some(&v.id),
                        Some(&r.node),
                        format!(
                            "replica of volume {} on node {} replaced by a new one on node {} ({reason})",
                            v.id, r.node, new.node
                        ),
                    ));
                    let mut old = std::mem::replace(&mut v.replica_list[i], new);
                    old.state = rs::RETIRED.into();
                    old.replaces = None;
                    v.retired.push(old);
                    h.readds.remove(&key);
                    h.blocked.remove(&key);
                }
                Err(Error::Exhausted(why)) => {
                    if h.blocked.insert(key) {
                        events.push(Event::new(
                            EventKind::HealBlocked,
                            Some(&v.id),
                            Some(&r.node),
                            format!(
                                "replica of volume {} on node {} cannot be replaced: {why}",
                                v.id, r.node
                            ),
                        ));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if !events.is_empty() {
            commit(ctx, leader, v, events).await?;
        }
    }
    Ok(())
}

/// A new replica for `v`: one online node with room, within its topology, on none of the
/// nodes that hold or held (not yet deleted) a replica of it.
async fn replacement(ctx: &Ctx, v: &VolumeRecord, nodes: &[NodeView]) -> Result<ReplicaRecord> {
    let pools: Vec<PoolRecord> = ctx.store.list(&keys::pools()).await?;
    let volumes: Vec<VolumeRecord> = ctx.store.list(&keys::volumes()).await?;
    let exclude: BTreeSet<String> = v
        .replica_list
        .iter()
        .chain(&v.retired)
        .map(|r| r.node.clone())
        .collect();
    let mut one = v.spec.clone();
    one.replicas = 1;
    placement::place(&one, nodes, &pools, &volumes, &exclude)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Exhausted("no node to place a replica on".into()))
}

/// Takes retired replicas out of the nexus (their children are closed at once).
async fn remove_retired_children(
    ctx: &Ctx,
    v: &VolumeRecord,
    nodes: &[NodeView],
    t: &TargetRecord,
    kids: &HashMap<String, Child>,
) {
    for r in &v.retired {
        let Some(c) = kids.get(&r.node) else { continue };
        let done = async {
            let node = Ctx::node(nodes, &t.node)?;
            let mut cl = ctx.connect(node).await?;
            node_ops::nexus_remove_child(&mut cl, v.lvol_name(), &c.uri).await
        }
        .await;
        match done {
            Ok(()) => {
                tracing::info!(volume = %v.id, node = %r.node, child = %c.uri, "heal: old replica removed from the nexus")
            }
            Err(e) => {
                tracing::warn!(volume = %v.id, node = %r.node, error = %e, "heal: removing the old replica from the nexus failed; retrying")
            }
        }
    }
}

/// Why adding a replica to the nexus did not happen.
enum AddError {
    /// Before the nexus was asked (the lvol or its export): not counted as a re-add.
    Before(Error),
    /// The nexus refused or failed it.
    Nexus(Error),
}

impl From<Error> for AddError {
    fn from(e: Error) -> Self {
        Self::Before(e)
    }
}

/// Makes sure replica `r` of `v` has its lvol (created when new) and, on another node than
/// the nexus's, its export to the nexus; then adds it to the nexus as `child` (its URI when
/// the nexus has it already, faulted) or as a new child. Answers the lvol UUID and the URI.
async fn add_one(
    ctx: &Ctx,
    v: &VolumeRecord,
    r: &ReplicaRecord,
    nodes: &[NodeView],
    t: &TargetRecord,
    child: Option<&Child>,
) -> Result<(String, String), AddError> {
    let node = Ctx::node(nodes, &r.node)?;
    let mut c = ctx.connect(node).await?;
    let uuid = match &r.lvol_uuid {
        Some(u) => match node_ops::find_lvol(&mut c, &r.pool, v.lvol_name()).await? {
            // (A restarted node's pool is imported by the pool pass; until then it is absent.)
            Some(found) if found == *u => u.clone(),
            other => {
                return Err(AddError::Before(Error::Unavailable(format!(
                    "node {}: the replica's lvol is {other:?}, expected {u}",
                    r.node
                ))));
            }
        },
        None => {
            let pools: Vec<PoolRecord> = ctx.store.list(&keys::pools()).await?;
            let cluster = pools
                .iter()
                .find(|p| p.spec.node == r.node && p.spec.name == r.pool)
                .map_or(4 << 20, |p| p.cluster_bytes);
            let size = v.replica_bytes(cluster);
            let u =
                node_ops::ensure_lvol(&mut c, &r.pool, v.lvol_name(), size, v.spec.thin).await?;
            let _ = pool::refresh(ctx, node, &r.node, &r.pool).await;
            u
        }
    };
    let host = host_nqn(&t.node);
    if r.node != t.node {
        // Again for a child coming back: its node may have restarted without it.
        node_ops::ensure_export(
            &mut c,
            &Export {
                nqn: &v.replica_nqn(&r.node),
                bdev: &uuid,
                traddr: node.record.nvmf_addr.ip().to_string(),
                trsvcid: node.record.nvmf_addr.port().to_string(),
                host: Some(&host),
                serial: &v.serial(),
            },
        )
        .await?;
    }
    let uri = match child {
        Some(ch) => ch.uri.clone(),
        None if r.node == t.node => format!("bdev:///{uuid}"),
        None => format!(
            "nvmf://{}/{}?hostnqn={host}",
            node.record.nvmf_addr,
            v.replica_nqn(&r.node)
        ),
    };
    let tn = Ctx::node(nodes, &t.node)?;
    let mut tc = ctx.connect(tn).await?;
    node_ops::nexus_add_child(&mut tc, v.lvol_name(), &uri)
        .await
        .map_err(AddError::Nexus)?;
    Ok((uuid, uri))
}

/// Creates, exports and adds to the nexus the replicas it lacks: new ones (full rebuild),
/// and ones whose path failed, on an online node (partial rebuild).
async fn add_children(
    ctx: &Ctx,
    leader: &[u8],
    h: &mut Healer,
    v: &mut VolumeRecord,
    nodes: &[NodeView],
    t: &TargetRecord,
    kids: &HashMap<String, Child>,
) -> Result<()> {
    for i in 0..v.replica_list.len() {
        let Some(r) = v.replica_list.get(i).cloned() else {
            break;
        };
        let child = kids.get(&r.node);
        let wanted = match child {
            None => true,
            Some(c) => c.state == "faulted" && !replica_fault(c.reason.as_deref()),
        };
        if !wanted || !is_online(nodes, &r.node) {
            continue;
        }
        let key = (v.id.clone(), r.node.clone());
        let fresh = r.lvol_uuid.is_none() || r.state == rs::CREATING;
        match add_one(ctx, v, &r, nodes, t, child).await {
            Ok((uuid, uri)) => {
                if child.is_some() {
                    *h.readds.entry(key).or_default() += 1;
                }
                let how = if fresh {
                    "a new replica: full"
                } else if child.is_some() {
                    "back after a fault: partial"
                } else {
                    "added again"
                };
                if let Some(x) = v.replica_list.get_mut(i) {
                    x.lvol_uuid = Some(uuid);
                    x.state = rs::REBUILDING.into();
                    x.reason = None;
                }
                let e = Event::new(
                    EventKind::RebuildStarted,
                    Some(&v.id),
                    Some(&r.node),
                    format!(
                        "rebuild of volume {}'s replica on node {} started ({how}), child {uri}",
                        v.id, r.node
                    ),
                );
                commit(ctx, leader, v, vec![e]).await?;
            }
            Err(AddError::Before(e @ (Error::Etcd(_) | Error::NotLeader))) => return Err(e),
            Err(AddError::Before(e)) => {
                tracing::debug!(volume = %v.id, node = %r.node, error = %e, "heal: replica not ready to add yet");
            }
            Err(AddError::Nexus(e)) => {
                *h.readds.entry(key).or_default() += 1;
                tracing::warn!(volume = %v.id, node = %r.node, error = %e, "heal: the nexus did not take the replica; retrying");
            }
        }
    }
    Ok(())
}

/// Records what the nexus reports: rebuilt replicas online again.
async fn observe(
    ctx: &Ctx,
    leader: &[u8],
    h: &mut Healer,
    v: &mut VolumeRecord,
    kids: &HashMap<String, Child>,
) -> Result<()> {
    for i in 0..v.replica_list.len() {
        let Some(r) = v.replica_list.get(i).cloned() else {
            break;
        };
        let Some(c) = kids.get(&r.node) else { continue };
        if c.state != "online" || r.state == rs::ONLINE || r.state == rs::CREATING {
            continue;
        }
        if let Some(x) = v.replica_list.get_mut(i) {
            x.state = rs::ONLINE.into();
            x.reason = None;
            x.replaces = None;
        }
        h.readds.remove(&(v.id.clone(), r.node.clone()));
        let up = v
            .replica_list
            .iter()
            .filter(|x| x.state == rs::ONLINE)
            .count();
        let mut msg = format!(
            "replica of volume {} on node {} online; {up} of {} replicas online",
            v.id, r.node, v.spec.replicas
        );
        if let Some(old) = &r.replaces {
            msg.push_str(&format!("; it replaces the one on node {old}"));
        }
        let events = if r.state == rs::REBUILDING {
            if let Some(l) = &c.last_rebuild {
                msg.push_str(&format!("; rebuild: {l}"));
            }
            vec![Event::new(
                EventKind::RebuildFinished,
                Some(&v.id),
                Some(&r.node),
                msg,
            )]
        } else {
            // Faulted in our record, online in the nexus again (a node back in time).
            tracing::info!(volume = %v.id, node = %r.node, "heal: {msg}");
            vec![]
        };
        commit(ctx, leader, v, events).await?;
    }
    Ok(())
}

/// Deletes retired replicas from their nodes once they are out of the nexus and the node
/// answers.
async fn delete_retired(
    ctx: &Ctx,
    leader: &[u8],
    v: &mut VolumeRecord,
    nodes: &[NodeView],
    kids: Option<&HashMap<String, Child>>,
) -> Result<()> {
    let mut i = 0;
    while i < v.retired.len() {
        let Some(r) = v.retired.get(i).cloned() else {
            break;
        };
        let in_nexus = kids.is_some_and(|k| k.contains_key(&r.node));
        if in_nexus || !is_online(nodes, &r.node) {
            i += 1;
            continue;
        }
        let current = v.replica_list.iter().any(|x| x.node == r.node);
        let done = async {
            let node = Ctx::node(nodes, &r.node)?;
            let mut c = ctx.connect(node).await?;
            if !current {
                node_ops::delete_export(&mut c, &v.replica_nqn(&r.node)).await?;
            }
            // A node back from a restart has its pool (and the stale lvol in it) only once
            // the leader's pool pass has imported it: until then "no lvol" proves nothing.
            if !node_ops::lvstores(&mut c)
                .await?
                .iter()
                .any(|l| l.name == r.pool)
            {
                return Err(Error::Unavailable(format!(
                    "node {}: pool {} not imported yet",
                    r.node, r.pool
                )));
            }
            let found = node_ops::find_lvol(&mut c, &r.pool, v.lvol_name()).await?;
            let ours = match (&found, &r.lvol_uuid) {
                (Some(f), Some(u)) => f == u,
                (Some(_), None) => !current,
                (None, _) => false,
            };
            if ours {
                node_ops::delete_lvol(&mut c, &r.pool, v.lvol_name()).await?;
            }
            let _ = pool::refresh(ctx, node, &r.node, &r.pool).await;
            Ok::<_, Error>(ours)
        }
        .await;
        match done {
            Ok(deleted) => {
                v.retired.remove(i);
                let what = if deleted {
                    "deleted from its node"
                } else {
                    "already gone from its node"
                };
                let e = Event::new(
                    EventKind::ReplicaRemoved,
                    Some(&v.id),
                    Some(&r.node),
                    format!("stale replica of volume {} on node {} {what}", v.id, r.node),
                );
                commit(ctx, leader, v, vec![e]).await?;
            }
            Err(e @ (Error::Etcd(_) | Error::NotLeader)) => return Err(e),
            Err(e) => {
                tracing::info!(volume = %v.id, node = %r.node, error = %e, "heal: stale replica not deleted yet");
                i += 1;
            }
        }
    }
    Ok(())
}
