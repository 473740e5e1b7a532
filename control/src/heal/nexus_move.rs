//! Moving the nexus of a published volume whose node died.
//!
//! When the nexus's node has been offline for `--heal-after` (the same clock as a replica's
//! node: from the later of the offline transition and the start of this leader's term), the
//! leader re-creates the nexus on another node that holds a current replica:
//!
//! 1. **Choose.** The candidates are the online nodes holding a replica that etcd records as
//!    `online` (in service the last time the healer looked at the nexus, with its lvol);
//!    among them the node with the fewest nexuses, then by id. None: a `heal_blocked` event
//!    (once per term) and nothing else; the volume waits (a replica that may have missed
//!    writes is never made the source of a nexus). A chosen node that goes offline before the
//!    move is finished is replaced by another choice.
//! 2. **Fence the old nexus.** If the old node's `shoald` still answers the control plane
//!    (only its agent died, say), its nexus and the volume's export are taken down first; a
//!    node that does not answer is presumed dead. Then, step 4, the old node's host NQN is
//!    removed from every remaining replica's export (which disconnects its controllers), so
//!    a nexus there that only looked dead can no longer write to them.
//! 3. **Record the intent** (one fenced transaction): the target now names the new node,
//!    `publishing`, with `moved_from` the old one; the old node's replica is `faulted` (with
//!    its `replica_faulted` event). The NQN, the address (`traddr`, `trsvcid`) and the volume
//!    UUID are kept.
//! 4. **Build it** (idempotent node steps, [`crate::volume_ops::make_target`]): the new
//!    node's replica is no longer exported (it is the nexus's local child now), the other
//!    `online` replicas are exported to the new node, and `nexus_create` makes the nexus from
//!    them with the volume's UUID. The nexus reads every child's label and takes as current
//!    only those `in_sync` at the highest generation; the others are rebuilt before they
//!    serve a read, and creation fails if none says it is current. The nexus's namespace
//!    carries the volume's UUID (also its NGUID) and the volume's serial, so the host sees the
//!    same namespace. It is exported with the same NQN on the **same address**: see below.
//! 5. **Published** (one fenced transaction with the `nexus_moved` event).
//!
//! A leader that dies anywhere leaves `moved_from` in etcd, and the next one runs steps 4-5
//! again. The old node's replica is then replaced by the ordinary replica healing (its node
//! is offline for `--heal-after`): placed on another node, added to the new nexus, rebuilt.
//! A node that comes back holds no nexus (`shoald` keeps none across a restart: the control
//! plane creates them) and no export; its stale replica is retired and deleted.
//!
//! **The address.** A Linux host's `nvme connect` pins `traddr:trsvcid`: with
//! `--ctrl-loss-tmo` it reconnects to that address, never to another. So the volume's target
//! address moves with its nexus: the new node listens on the old address. That works where
//! the address can move: on loopback (every 127.0.0.0/8 address is local to every process,
//! and the dead `shoald`'s listening socket died with it; a live one would keep the port and
//! the export would fail), and in a real deployment with a per-volume floating address that
//! the new node takes over once the old one is fenced (as a virtual IP is moved). The clean
//! answer, ANA multipath (a second path to another nexus that the host switches to), comes
//! with a later issue.
//!
//! **What the labels cannot tell.** The nexus writes each change of its in-sync set into the
//! labels of the children it keeps, so the labels of the surviving replicas name the current
//! ones as long as one of them is current. Only if every surviving replica had been faulted
//! by the old nexus in the last healer pass before it died (500 ms), before etcd recorded it,
//! would they all look current at an older generation; NVMe reservations (the new nexus
//! fencing the old one at the replicas) and a nexus that records its in-sync set outside its
//! node close that window, on the roadmap.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Healer, commit, is_online, offline_ms};
use crate::ctx::Ctx;
use crate::events::{Event, EventKind};
use crate::model::NodeView;
use crate::nexus_state::published;
use crate::node_ops;
use crate::node_rpc::NodeClient;
use crate::volume::{TargetState, VolumeRecord, host_nqn, replica_state as rs};
use crate::volume_ops;
use crate::{Error, Result, keys};

/// How long the old node's `shoald` gets to answer before it is presumed dead.
const FENCE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether `v`'s nexus is being moved (a move to finish).
#[must_use]
pub fn moving(v: &VolumeRecord) -> bool {
    v.target
        .as_ref()
        .is_some_and(|t| t.state == TargetState::Publishing && t.moved_from.is_some())
}

/// Whether `v`'s nexus must move now: published on a node offline for `--heal-after`.
pub(super) fn due(ctx: &Ctx, h: &Healer, nodes: &[NodeView], v: &VolumeRecord) -> bool {
    let heal_ms = u64::try_from(ctx.heal_after.as_millis()).unwrap_or(u64::MAX);
    published(v).is_some_and(|t| offline_ms(h, nodes, &t.node).is_some_and(|ms| ms >= heal_ms))
}

/// Starts (steps 1-3) or finishes (4-5) the move of `v`'s nexus.
///
/// # Errors
/// etcd errors, [`Error::NotLeader`]; node errors (the next pass tries again).
pub(super) async fn run(
    ctx: &Ctx,
    leader: &[u8],
    h: &mut Healer,
    v: &mut VolumeRecord,
    nodes: &[NodeView],
) -> Result<()> {
    // A move not begun, or one whose chosen node went offline before it finished: choose.
    let chosen_lost = v
        .target
        .as_ref()
        .is_some_and(|t| moving(v) && !is_online(nodes, &t.node));
    if !moving(v) || chosen_lost {
        start(ctx, leader, h, v, nodes).await?;
    }
    if moving(v) && v.target.as_ref().is_some_and(|t| is_online(nodes, &t.node)) {
        finish(ctx, leader, v, nodes).await?;
    }
    Ok(())
}

async fn start(
    ctx: &Ctx,
    leader: &[u8],
    h: &mut Healer,
    v: &mut VolumeRecord,
    nodes: &[NodeView],
) -> Result<()> {
    let Some(t) = v.target.clone() else {
        return Ok(());
    };
    // The node the nexus was on (for a move being chosen again: the first one's).
    let old = t.moved_from.clone().unwrap_or_else(|| t.node.clone());
    let volumes: Vec<VolumeRecord> = ctx.store.list(&keys::volumes()).await?;
    let nexuses = |id: &str| {
        volumes
            .iter()
            .filter(|x| x.id != v.id && x.target.as_ref().is_some_and(|t| t.node == id))
            .count()
    };
    let new = v
        .replica_list
        .iter()
        .filter(|r| {
            r.node != old
                && r.node != t.node
                && r.state == rs::ONLINE
                && r.lvol_uuid.is_some()
                && is_online(nodes, &r.node)
        })
        .min_by_key(|r| (nexuses(&r.node), r.node.clone()))
        .map(|r| r.node.clone());
    let key = (v.id.clone(), format!("nexus:{old}"));
    let Some(new) = new else {
        if h.blocked.insert(key) {
            let e = Event::new(
                EventKind::HealBlocked,
                Some(&v.id),
                Some(&old),
                format!(
                    "the nexus of volume {} on offline node {old} cannot move: no online node holds a replica known to be current",
                    v.id
                ),
            );
            commit(ctx, leader, v, vec![e]).await?;
        }
        return Ok(());
    };
    h.blocked.remove(&key);
    if t.moved_from.is_none() {
        fence_old(ctx, nodes, v, &old).await?;
    }
    let mut events = Vec::new();
    for r in v.replica_list.iter_mut().filter(|r| r.node == old) {
        if r.state != rs::FAULTED && r.state != rs::CREATING {
            events.push(Event::new(
                EventKind::ReplicaFaulted,
                Some(&v.id),
                Some(&old),
                format!(
                    "replica of volume {} on node {old} faulted: node offline (with the nexus)",
                    v.id
                ),
            ));
            r.state = rs::FAULTED.into();
            r.reason = Some("node offline".into());
            r.rebuild_progress = None;
        }
    }
    if let Some(t) = v.target.as_mut() {
        t.node = new.clone();
        t.state = TargetState::Publishing;
        t.moved_from = Some(old.clone());
    }
    commit(ctx, leader, v, events).await?;
    tracing::info!(volume = %v.id, from = %old, to = %new, "heal: moving the nexus off an offline node");
    Ok(())
}

async fn finish(ctx: &Ctx, leader: &[u8], v: &mut VolumeRecord, nodes: &[NodeView]) -> Result<()> {
    let Some(t) = v.target.clone() else {
        return Ok(());
    };
    let from = t.moved_from.clone().unwrap_or_default();
    // The new node's replica becomes the nexus's local child: its export (to the old nexus)
    // goes, and with it any connection the old nexus still had to it.
    let tn = Ctx::node(nodes, &t.node)?;
    let mut c = ctx.connect(tn).await?;
    node_ops::delete_export(&mut c, &v.replica_nqn(&t.node)).await?;
    // The others no longer admit the old nexus's host.
    for r in &v.replica_list {
        if r.node == t.node || r.node == from || !is_online(nodes, &r.node) {
            continue;
        }
        let n = Ctx::node(nodes, &r.node)?;
        let mut rc = ctx.connect(n).await?;
        remove_host(&mut rc, &v.replica_nqn(&r.node), &host_nqn(&from)).await?;
    }
    volume_ops::make_target(ctx, v, nodes).await?;
    if let Some(t) = v.target.as_mut() {
        t.state = TargetState::Published;
        t.moved_from = None;
    }
    let e = Event::new(
        EventKind::NexusMoved,
        Some(&v.id),
        Some(&t.node),
        format!(
            "nexus of volume {} moved from offline node {from} to node {}; exported again as {} on {}:{}",
            v.id, t.node, t.nqn, t.traddr, t.trsvcid
        ),
    );
    commit(ctx, leader, v, vec![e]).await
}

/// Takes the volume's nexus and export down on `old` if its `shoald` still answers (the
/// node looked offline: its agent died, or it cannot reach etcd). One that does not answer
/// within [`FENCE_TIMEOUT`] is presumed dead.
async fn fence_old(ctx: &Ctx, nodes: &[NodeView], v: &VolumeRecord, old: &str) -> Result<()> {
    let Ok(n) = Ctx::node(nodes, old) else {
        return Ok(());
    };
    let timeout = FENCE_TIMEOUT.min(ctx.rpc_timeout);
    let Ok(mut c) = NodeClient::connect(n.record.rpc_endpoint, ctx.token.as_deref(), timeout).await
    else {
        return Ok(());
    };
    let nqn = v.nqn();
    match async {
        node_ops::delete_export(&mut c, &nqn).await?;
        node_ops::destroy_nexus(&mut c, v.lvol_name()).await
    }
    .await
    {
        Ok(()) => {
            tracing::warn!(volume = %v.id, node = %old, "heal: the offline node's shoald still answered: its nexus was taken down before the move");
            Ok(())
        }
        // It answered, then failed: not known to be fenced; try again next pass.
        Err(e) => Err(Error::Unavailable(format!(
            "node {old} answers but its nexus of volume {} could not be taken down: {e}",
            v.id
        ))),
    }
}

/// Removes `host` from subsystem `nqn`'s allowed hosts if it is there (`shoald` then fails
/// that host's controllers).
async fn remove_host(c: &mut NodeClient, nqn: &str, host: &str) -> Result<()> {
    let subs = match c.call("nvmf_get_subsystems", json!({ "nqn": nqn })).await {
        Ok(v) => v,
        // No export (yet): nothing admits the old host.
        Err(crate::node_rpc::NodeRpcError::Rpc { .. }) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let listed = subs
        .as_array()
        .and_then(|a| a.first())
        .and_then(|s| s.get("hosts"))
        .and_then(Value::as_array)
        .is_some_and(|hs| {
            hs.iter()
                .any(|e| e.get("nqn").and_then(Value::as_str) == Some(host))
        });
    if listed {
        c.call(
            "nvmf_subsystem_remove_host",
            json!({ "nqn": nqn, "host": host }),
        )
        .await?;
    }
    Ok(())
}
