//! Volumes made from a snapshot: which snapshot (`source`), where their replicas go (a clone
//! of the snapshot's replica on each of its nodes, the rest placed elsewhere and rebuilt),
//! and the clone itself on a node (`bdev_lvol_clone`). See [`super`].

use serde_json::{Value, json};

use super::{SnapshotRecord, SnapshotState, Source, get};
use crate::ctx::Ctx;
use crate::model::NodeView;
use crate::node_ops;
use crate::placement;
use crate::volume::VolumeRecord;
use crate::{Error, Result};

/// The snapshot a new volume is made from (`source.snapshot_id`), checked: ready, of the
/// volume's size. `None` for a volume from nothing.
///
/// # Errors
/// [`Error::Invalid`] (a source that does not decode); [`Error::FailedPrecondition`] (a
/// volume as the source: take a snapshot of it first; a snapshot not ready, or of another
/// size); [`Error::NotFound`].
pub async fn source_of(ctx: &Ctx, source: Option<&Value>) -> Result<Option<SnapshotRecord>> {
    let Some(raw) = source.filter(|s| !s.is_null()) else {
        return Ok(None);
    };
    let src: Source = serde_json::from_value(raw.clone()).map_err(|e| Error::Invalid {
        what: "source",
        detail: format!("{raw}: {e} (give {{\"snapshot_id\": UUID}})"),
    })?;
    match (src.snapshot_id, src.volume_id) {
        (Some(id), None) => {
            let s = get(ctx, &id).await?;
            if s.state != SnapshotState::Ready {
                return Err(Error::FailedPrecondition(format!(
                    "snapshot {id} is {:?}, not ready",
                    s.state
                )));
            }
            Ok(Some(s))
        }
        (None, Some(_)) => Err(Error::FailedPrecondition(
            "a volume is not cloned from another volume directly: take a snapshot of it (POST /v1/snapshots), then create the volume from the snapshot".into(),
        )),
        _ => Err(Error::Invalid {
            what: "source",
            detail: "exactly one of snapshot_id and volume_id".into(),
        }),
    }
}

/// The replicas of a volume made from snapshot `s`: a clone of the snapshot's replica on
/// each of its nodes (as many as asked), then, when more are asked than the snapshot has,
/// replicas placed on other nodes that the nexus rebuilds in full once the volume is
/// published (they stay `creating` until then).
///
/// # Errors
/// [`Error::OutOfRange`] / [`Error::FailedPrecondition`] for another size than the
/// snapshot's; [`Error::Exhausted`] when the extra replicas find no room.
pub fn place_from(
    s: &SnapshotRecord,
    spec: &crate::volume::VolumeSpec,
    nodes: &[NodeView],
    pools: &[crate::pool::PoolRecord],
    volumes: &[VolumeRecord],
) -> Result<Vec<crate::volume::ReplicaRecord>> {
    if spec.size_bytes < s.size_bytes {
        return Err(Error::OutOfRange(format!(
            "snapshot {} holds {} bytes; a volume made from it cannot be smaller ({})",
            s.id, s.size_bytes, spec.size_bytes
        )));
    }
    if spec.size_bytes > s.size_bytes {
        return Err(Error::FailedPrecondition(format!(
            "snapshot {} holds {} bytes: a volume made from it has that size (growing it is not supported yet; resize afterwards)",
            s.id, s.size_bytes
        )));
    }
    let want = spec.replicas as usize;
    let mut out: Vec<crate::volume::ReplicaRecord> = s
        .replica_list
        .iter()
        .take(want)
        .map(|r| crate::volume::ReplicaRecord::planned(&r.node, &r.pool))
        .collect();
    if out.len() < want {
        let mut extra = spec.clone();
        extra.replicas = u32::try_from(want - out.len()).unwrap_or(u32::MAX);
        let taken: std::collections::BTreeSet<String> =
            s.replica_list.iter().map(|r| r.node.clone()).collect();
        out.extend(placement::place(&extra, nodes, pools, volumes, &taken)?);
    }
    Ok(out)
}

/// The snapshot lvol on `node`, if the snapshot has a replica there.
#[must_use]
pub fn replica_on<'a>(s: &'a SnapshotRecord, node: &str) -> Option<&'a str> {
    s.replica_list
        .iter()
        .find(|r| r.node == node)
        .and_then(|r| r.lvol_uuid.as_deref())
}

/// Creates `name` in `pool` as a clone of snapshot lvol `snapshot` unless it exists; its UUID.
///
/// # Errors
/// Node errors.
pub async fn ensure_clone(
    c: &mut crate::node_rpc::NodeClient,
    pool: &str,
    snapshot: &str,
    name: &str,
) -> Result<String> {
    if let Some(u) = node_ops::find_lvol(c, pool, name).await? {
        return Ok(u);
    }
    let ans = c
        .call(
            "bdev_lvol_clone",
            json!({ "snapshot_name": snapshot, "clone_name": name }),
        )
        .await?;
    ans.as_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Unavailable(format!("bdev_lvol_clone answered {ans}")))
}
