//! Snapshots of volumes: one lvol snapshot (`bdev_lvol_snapshot`) of every in-sync replica,
//! all at one point of the volume's write stream, and volumes made from them (each replica
//! a `bdev_lvol_clone` of the snapshot's replica on its node).
//!
//! **Consistency.** A published volume's nexus holds new host writes and waits for those in
//! flight to complete on every child (`nexus_pause_io`, with a deadline of
//! [`PAUSE_DEADLINE`]), the leader snapshots each replica the nexus reports in sync on its
//! node, then ends the pause (`nexus_resume_io`). The resume names the pause's generation and
//! fails when the pause lapsed meanwhile (the leader was too slow, or a previous leader
//! died): the snapshots are then deleted and the request fails, since they might not be one
//! point of the stream. A replica being rebuilt (or faulted) is not snapshotted: its contents
//! are not the volume's; the snapshot has fewer replicas (at least one). An unpublished
//! volume has no I/O: its `online` replicas are snapshotted directly.
//!
//! **Records.** `snapshots/<id>` ([`SnapshotRecord`]) and `snapshot-names/<name>`, written
//! like volumes: the intent (`creating`, with the replicas chosen) first, fenced on the
//! leader's key, then `ready` with the lvol UUIDs and a `snapshot_created` event in one
//! transaction. A snapshot lvol is named by the snapshot's id in the replica's pool. A
//! `creating` record found later (a leader died, or a node failed mid-way) is rolled back by
//! the reconcile pass: its lvols are deleted from every node and the keys removed (its pause
//! has lapsed by then); the client's retry with the same name starts again.
//!
//! **Delete** follows SPDK's lvol rules. After a snapshot the replica (origin) is a thin clone
//! of it; a snapshot with one clone is deleted by merging it into that clone, with more it is
//! refused. So a snapshot is deletable while at most one volume on each node uses it (its
//! source volume's replica, or one volume made from it); otherwise `412` names the volumes
//! to delete first. Deleting a volume made from a snapshot deletes its clones only.
//!
//! | operation | etcd writes (fenced) | node calls |
//! |---|---|---|
//! | create | 1 txn: record `creating` + name (if absent); 1 txn: `ready` + event | nexus node: `nexus_pause_io`, `nexus_resume_io`; per replica `bdev_lvol_get_lvols`, `bdev_lvol_snapshot` |
//! | create that fails | 1 txn deleting both keys | per replica `bdev_lvol_get_lvols`, `bdev_lvol_delete` |
//! | delete | 1 put `deleting`; 1 txn deleting both keys + event | per replica `bdev_lvol_get_lvols`, `bdev_lvol_delete` |

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Compare, CompareOp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::ctx::Ctx;
use crate::events::{Event, EventKind};
use crate::model::NodeView;
use crate::node_ops;
use crate::node_rpc::NodeRpcError;
use crate::store::encode;
use crate::volume::{MAX_VOLUME_NAME, TargetState, VolumeRecord, VolumeState, replica_state};
use crate::volume_store;
use crate::{Error, Result, keys, now_ms};

mod source;
pub use source::{ensure_clone, place_from, replica_on, source_of};

/// How long a nexus holds its writes for a snapshot at most: past it, it resumes by itself
/// and the snapshot fails.
pub const PAUSE_DEADLINE: Duration = Duration::from_secs(10);

/// Set in `shoal-control`'s environment (`SHOAL_TEST_SNAPSHOT_NO_PAUSE=1`), snapshots of a
/// published volume are taken without pausing its nexus: only for showing that the tests
/// see the difference.
fn no_pause_for_tests() -> bool {
    std::env::var_os("SHOAL_TEST_SNAPSHOT_NO_PAUSE").is_some_and(|v| v == "1")
}

/// A snapshot's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotState {
    /// Recorded; being taken (rolled back if found later).
    Creating,
    /// Every replica's snapshot taken: usable as a source.
    Ready,
    /// Being deleted from its nodes.
    Deleting,
}

/// One replica's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotReplica {
    /// Its node.
    pub node: String,
    /// Its pool.
    pub pool: String,
    /// The snapshot lvol's UUID once taken.
    pub lvol_uuid: Option<String>,
}

/// A snapshot in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Its UUID (also the name of its lvols).
    pub id: String,
    /// The client's name (idempotency key).
    pub name: String,
    /// The volume it was taken of.
    pub volume_id: String,
    /// That volume's size.
    pub size_bytes: u64,
    /// That volume's thin flag (volumes made from it inherit it).
    pub thin: bool,
    /// When it was taken (ms since the epoch).
    pub created_ms: u64,
    /// Its life.
    pub state: SnapshotState,
    /// The replicas' snapshots.
    pub replica_list: Vec<SnapshotReplica>,
}

/// A snapshot as the API shows it (the CSI driver's fields first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotView {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Source volume.
    pub volume_id: String,
    /// Size of the source volume when taken.
    pub size_bytes: u64,
    /// When, in seconds since the epoch.
    pub created_unix: u64,
    /// Usable as a source.
    pub ready: bool,
    /// `creating`, `ready` or `deleting`.
    pub state: SnapshotState,
    /// Per replica: node, pool, lvol.
    pub replica_list: Vec<SnapshotReplica>,
}

impl SnapshotRecord {
    /// The view.
    #[must_use]
    pub fn view(&self) -> SnapshotView {
        SnapshotView {
            id: self.id.clone(),
            name: self.name.clone(),
            volume_id: self.volume_id.clone(),
            size_bytes: self.size_bytes,
            created_unix: self.created_ms / 1000,
            ready: self.state == SnapshotState::Ready,
            state: self.state,
            replica_list: self.replica_list.clone(),
        }
    }
}

/// The body of `POST /v1/snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSpec {
    /// Unique name.
    pub name: String,
    /// The volume to snapshot.
    pub volume_id: String,
}

/// What a volume is made from (`source` of a create request).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// A snapshot.
    #[serde(default)]
    pub snapshot_id: Option<String>,
    /// Another volume (refused: take a snapshot of it first).
    #[serde(default)]
    pub volume_id: Option<String>,
}

fn check_name(name: &str) -> Result<()> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_VOLUME_NAME || !name.chars().all(ok) {
        return Err(Error::Invalid {
            what: "name",
            detail: format!("{name:?}: 1 to {MAX_VOLUME_NAME} letters, digits, '.', '_' or '-'"),
        });
    }
    Ok(())
}

fn check_id(id: &str) -> Result<()> {
    volume_store::get_check_id(id).map_err(|_| Error::Invalid {
        what: "snapshot id",
        detail: format!("{id:?} is not a UUID"),
    })
}

/// One snapshot by id.
///
/// # Errors
/// [`Error::NotFound`]; etcd errors.
pub async fn get(ctx: &Ctx, id: &str) -> Result<SnapshotRecord> {
    check_id(id)?;
    ctx.store
        .get::<SnapshotRecord>(&keys::snapshot(id))
        .await?
        .map(|(s, _)| s)
        .ok_or_else(|| Error::NotFound(format!("no snapshot {id}")))
}

/// Up to `limit` snapshots (of `volume`, when given) with ids after `start`, in id order,
/// and the id to start the next page after (`None`: no more).
///
/// # Errors
/// etcd errors.
pub async fn list(
    ctx: &Ctx,
    volume: Option<&str>,
    start: Option<&str>,
    limit: usize,
) -> Result<(Vec<SnapshotRecord>, Option<String>)> {
    let all: Vec<SnapshotRecord> = ctx.store.list(&keys::snapshots()).await?;
    let mut page: Vec<SnapshotRecord> = all
        .into_iter()
        .filter(|s| volume.is_none_or(|v| s.volume_id == v))
        .filter(|s| start.is_none_or(|st| s.id.as_str() > st))
        .collect();
    page.sort_by(|a, b| a.id.cmp(&b.id));
    let more = page.len() > limit;
    page.truncate(limit);
    let next = if more {
        page.last().map(|s| s.id.clone())
    } else {
        None
    };
    Ok((page, next))
}

async fn put(ctx: &Ctx, leader: &[u8], s: &SnapshotRecord, event: Option<&Event>) -> Result<()> {
    let mut puts = vec![(keys::snapshot(&s.id), encode(s))];
    puts.extend(event.map(Event::put));
    ctx.store.fenced_txn(leader, vec![], puts, vec![]).await?;
    if let Some(e) = event {
        e.log();
    }
    Ok(())
}

/// Takes a snapshot of a volume, or answers the one of that name: `(snapshot, created)`.
///
/// # Errors
/// [`Error::Invalid`]; [`Error::NotFound`] (the volume); [`Error::AlreadyExists`] (the name
/// is a snapshot of another volume); [`Error::FailedPrecondition`] (the volume is being
/// created, deleted, published or unpublished); [`Error::Unavailable`] (a node, or the pause
/// lapsed); nothing is left behind on an error.
pub async fn create(ctx: &Ctx, spec: SnapshotSpec) -> Result<(SnapshotRecord, bool)> {
    check_name(&spec.name)?;
    volume_store::get_check_id(&spec.volume_id)?;
    let _g = ctx.ops.lock().await;
    let leader = ctx.leader_key()?;
    let nodes = ctx.store.list_nodes().await?;
    let name_key = keys::snapshot_name(&spec.name);
    if let Some((id, _)) = ctx.store.get::<String>(&name_key).await? {
        let s = get(ctx, &id).await?;
        if s.volume_id != spec.volume_id {
            return Err(Error::AlreadyExists(format!(
                "snapshot {:?} exists ({}) of volume {}",
                spec.name, s.id, s.volume_id
            )));
        }
        match s.state {
            SnapshotState::Ready => return Ok((s, false)),
            SnapshotState::Deleting => {
                return Err(Error::FailedPrecondition(format!(
                    "snapshot {:?} ({}) is being deleted",
                    spec.name, s.id
                )));
            }
            // Left half done: rolled back, then taken again below.
            SnapshotState::Creating => remove_everywhere(ctx, &leader, &s, &nodes, false).await?,
        }
    }
    let v = volume_store::get(ctx, &spec.volume_id).await?;
    if matches!(v.state, VolumeState::Creating | VolumeState::Deleting) {
        return Err(Error::FailedPrecondition(format!(
            "volume {} is {:?}",
            v.id, v.state
        )));
    }
    let replica_list: Vec<SnapshotReplica> = v
        .replica_list
        .iter()
        .filter(|r| r.state == replica_state::ONLINE && r.lvol_uuid.is_some())
        .map(|r| SnapshotReplica {
            node: r.node.clone(),
            pool: r.pool.clone(),
            lvol_uuid: None,
        })
        .collect();
    if replica_list.is_empty() {
        return Err(Error::Unavailable(format!(
            "volume {} has no replica in sync to snapshot",
            v.id
        )));
    }
    let mut s = SnapshotRecord {
        id: uuid::Uuid::new_v4().to_string(),
        name: spec.name,
        volume_id: v.id.clone(),
        size_bytes: v.spec.size_bytes,
        thin: v.spec.thin,
        created_ms: now_ms(),
        state: SnapshotState::Creating,
        replica_list,
    };
    ctx.store
        .fenced_txn(
            &leader,
            vec![Compare::version(name_key.clone(), CompareOp::Equal, 0)],
            vec![
                (keys::snapshot(&s.id), encode(&s)),
                (name_key, encode(&s.id)),
            ],
            vec![],
        )
        .await?;
    if let Err(e) = take(ctx, &mut s, &v, &nodes).await {
        tracing::warn!(snapshot = %s.id, volume = %v.id, error = %e, "snapshot failed; removing what was made");
        if let Err(e2) = remove_everywhere(ctx, &leader, &s, &nodes, false).await {
            tracing::warn!(snapshot = %s.id, error = %e2, "cleanup postponed to the reconcile loop");
        }
        return Err(e);
    }
    s.state = SnapshotState::Ready;
    let ev = Event::new(
        EventKind::SnapshotCreated,
        Some(&v.id),
        None,
        format!(
            "snapshot {} ({}) of volume {} taken on {} replica(s)",
            s.name,
            s.id,
            v.id,
            s.replica_list.len()
        ),
    );
    put(ctx, &leader, &s, Some(&ev)).await?;
    Ok((s, true))
}

/// Pauses the nexus (if published), snapshots the in-sync replicas, resumes; fills the
/// lvol UUIDs and drops the replicas the nexus did not have in sync.
async fn take(
    ctx: &Ctx,
    s: &mut SnapshotRecord,
    v: &VolumeRecord,
    nodes: &[NodeView],
) -> Result<()> {
    let pause = match &v.target {
        None => None,
        Some(t) if t.state == TargetState::Published => {
            let node = Ctx::node(nodes, &t.node)?;
            Some((ctx.connect(node).await?, t.node.clone()))
        }
        Some(t) => {
            return Err(Error::FailedPrecondition(format!(
                "volume {} is {:?} on node {}; retry",
                v.id, t.state, t.node
            )));
        }
    };
    let mut paused = None;
    if let Some((mut c, target)) = pause {
        if no_pause_for_tests() {
            tracing::warn!("SHOAL_TEST_SNAPSHOT_NO_PAUSE=1: snapshot taken without a pause");
        } else {
            let ms = u64::try_from(PAUSE_DEADLINE.as_millis()).unwrap_or(u64::MAX);
            let ans = match c
                .call(
                    "nexus_pause_io",
                    json!({ "name": v.lvol_name(), "timeout_ms": ms }),
                )
                .await
            {
                Ok(a) => a,
                // EBUSY: another pause is in force (an earlier attempt's, which lapses).
                Err(NodeRpcError::Rpc {
                    code: -16, message, ..
                }) => {
                    return Err(Error::Unavailable(format!(
                        "node {target}: {message}; retry within {} s",
                        PAUSE_DEADLINE.as_secs()
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            let generation = ans.get("generation").and_then(Value::as_u64);
            let in_sync: Option<Vec<&str>> = ans
                .get("in_sync")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect());
            let (Some(generation), Some(in_sync)) = (generation, in_sync) else {
                return Err(Error::Unavailable(format!(
                    "node {target}: nexus_pause_io answered nonsense: {ans}"
                )));
            };
            // Only the replicas the nexus has in sync at the pause.
            s.replica_list.retain(|sr| {
                v.replica_list.iter().any(|r| {
                    r.node == sr.node
                        && r.lvol_uuid.as_ref().is_some_and(|u| {
                            let local = format!("bdev:///{u}");
                            let remote = format!("/{}?", v.replica_nqn(&r.node));
                            in_sync.iter().any(|c| *c == local || c.contains(&remote))
                        })
                })
            });
            paused = Some((c, target, generation));
        }
    }
    let made = snapshot_replicas(ctx, s, v, nodes).await;
    if let Some((mut c, target, generation)) = paused {
        let resumed = c
            .call(
                "nexus_resume_io",
                json!({ "name": v.lvol_name(), "generation": generation }),
            )
            .await;
        if let Err(e) = resumed {
            return Err(Error::Unavailable(format!(
                "the pause of volume {}'s nexus on node {target} ended before every replica was snapshotted ({e}): the snapshots would not be one point of the write stream; nothing is kept, retry",
                v.id
            )));
        }
    }
    made?;
    if s.replica_list.is_empty() {
        return Err(Error::Unavailable(format!(
            "volume {}: the nexus has no replica in sync",
            v.id
        )));
    }
    Ok(())
}

async fn snapshot_replicas(
    ctx: &Ctx,
    s: &mut SnapshotRecord,
    v: &VolumeRecord,
    nodes: &[NodeView],
) -> Result<()> {
    let id = s.id.clone();
    for sr in &mut s.replica_list {
        let Some(origin) = v
            .replica_list
            .iter()
            .find(|r| r.node == sr.node)
            .and_then(|r| r.lvol_uuid.clone())
        else {
            continue;
        };
        let node = Ctx::node(nodes, &sr.node)?;
        let mut c = ctx.connect(node).await?;
        let uuid = match node_ops::find_lvol(&mut c, &sr.pool, &id).await? {
            Some(u) => u,
            None => {
                let ans = c
                    .call(
                        "bdev_lvol_snapshot",
                        json!({ "lvol_name": origin, "snapshot_name": id }),
                    )
                    .await?;
                ans.as_str().map(str::to_owned).ok_or_else(|| {
                    Error::Unavailable(format!(
                        "node {}: bdev_lvol_snapshot answered {ans}",
                        sr.node
                    ))
                })?
            }
        };
        sr.lvol_uuid = Some(uuid);
    }
    Ok(())
}

/// Deletes the snapshot's lvols from every node, then its keys (with a `snapshot_deleted`
/// event when `event`). A node that cannot be reached, or refuses, is the error; the record
/// stays for the reconcile pass.
async fn remove_everywhere(
    ctx: &Ctx,
    leader: &[u8],
    s: &SnapshotRecord,
    nodes: &[NodeView],
    event: bool,
) -> Result<()> {
    let mut first_err = None;
    for sr in &s.replica_list {
        let done = async {
            let node = Ctx::node(nodes, &sr.node)?;
            let mut c = ctx.connect(node).await?;
            node_ops::delete_lvol(&mut c, &sr.pool, &s.id).await?;
            let _ = crate::pool::refresh(ctx, node, &sr.node, &sr.pool).await;
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
    let ev = event.then(|| {
        Event::new(
            EventKind::SnapshotDeleted,
            Some(&s.volume_id),
            None,
            format!("snapshot {} ({}) deleted", s.name, s.id),
        )
    });
    let name_key = keys::snapshot_name(&s.name);
    let mut deletes = vec![keys::snapshot(&s.id)];
    // The name only while it is still this snapshot's.
    let ours = ctx
        .store
        .get::<String>(&name_key)
        .await?
        .is_some_and(|(id, _)| id == s.id);
    if ours {
        deletes.push(name_key);
    }
    let puts: Vec<_> = ev.iter().map(Event::put).collect();
    ctx.store.fenced_txn(leader, vec![], puts, deletes).await?;
    if let Some(e) = &ev {
        e.log();
    }
    Ok(())
}

/// Deletes a snapshot from every node.
///
/// # Errors
/// [`Error::NotFound`]; [`Error::FailedPrecondition`] when more than one volume on a node
/// uses it (SPDK's rule: a snapshot merges into its only clone); [`Error::Unavailable`]
/// (the snapshot stays `deleting` and the leader finishes when it can).
pub async fn delete(ctx: &Ctx, id: &str) -> Result<()> {
    let _g = ctx.ops.lock().await;
    let leader = ctx.leader_key()?;
    let mut s = get(ctx, id).await?;
    let nodes = ctx.store.list_nodes().await?;
    if s.state == SnapshotState::Ready {
        let volumes: Vec<VolumeRecord> = ctx.store.list(&keys::volumes()).await?;
        let users = users_per_node(&s, &volumes);
        if let Some((node, vols)) = users.iter().find(|(_, v)| v.len() > 1) {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {id} is used by {} volumes on node {node} ({}): a snapshot is deleted by merging it into its only user; delete the volumes made from it first",
                vols.len(),
                vols.join(", ")
            )));
        }
        s.state = SnapshotState::Deleting;
        put(ctx, &leader, &s, None).await?;
    }
    let event = s.state == SnapshotState::Deleting;
    remove_everywhere(ctx, &leader, &s, &nodes, event).await
}

/// Per node of the snapshot: the volumes whose replica there is a clone of it (its source
/// volume's replica while it is still the one snapshotted, and volumes made from it).
fn users_per_node(s: &SnapshotRecord, volumes: &[VolumeRecord]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for sr in &s.replica_list {
        let users = volumes
            .iter()
            .filter(|v| {
                let made_from = source_snapshot(v).as_deref() == Some(s.id.as_str());
                (v.id == s.volume_id || made_from)
                    && v.replica_list
                        .iter()
                        .chain(&v.retired)
                        .any(|r| r.node == sr.node)
            })
            .map(|v| v.id.clone())
            .collect();
        out.insert(sr.node.clone(), users);
    }
    out
}

/// The snapshot a volume was made from, if any.
#[must_use]
pub fn source_snapshot(v: &VolumeRecord) -> Option<String> {
    v.spec
        .source
        .as_ref()
        .and_then(|s| serde_json::from_value::<Source>(s.clone()).ok())
        .and_then(|s| s.snapshot_id)
}

/// The leader's pass: rolls back snapshots left `creating`, finishes those left `deleting`.
///
/// # Errors
/// etcd errors and [`Error::NotLeader`].
pub async fn reconcile(ctx: &Ctx, nodes: &[NodeView]) -> Result<()> {
    let leader = ctx.leader_key()?;
    let all: Vec<SnapshotRecord> = ctx.store.list(&keys::snapshots()).await?;
    for s in all {
        if s.state == SnapshotState::Ready {
            continue;
        }
        let _g = ctx.ops.lock().await;
        let Some((s, _)) = ctx
            .store
            .get::<SnapshotRecord>(&keys::snapshot(&s.id))
            .await?
        else {
            continue;
        };
        let event = match s.state {
            SnapshotState::Ready => continue,
            SnapshotState::Creating => false,
            SnapshotState::Deleting => true,
        };
        match remove_everywhere(ctx, &leader, &s, nodes, event).await {
            Ok(()) => {
                tracing::info!(snapshot = %s.id, state = ?s.state, "reconciled an interrupted snapshot operation")
            }
            Err(e @ (Error::Etcd(_) | Error::NotLeader)) => return Err(e),
            Err(e) => tracing::debug!(snapshot = %s.id, error = %e, "reconcile: not yet"),
        }
    }
    Ok(())
}
