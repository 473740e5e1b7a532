//! What the control plane reads from a nexus: its children by node (`nexus_get`), which
//! faults are the replica's own, and the live rebuild progress the API shows.
//!
//! A leaf used by the healer ([`crate::heal`]), by unpublishing ([`crate::volume_ops`], which
//! records the replicas the nexus had faulted before it goes) and by the API; it uses the
//! shared context, the node calls and the volume records, none of those.

use std::collections::HashMap;

use serde_json::Value;

use crate::ctx::Ctx;
use crate::node_ops;
use crate::volume::{NQN_PREFIX, TargetRecord, TargetState, VolumeRecord, replica_state as rs};

/// A nexus child as `nexus_get` reports it.
#[derive(Debug, Clone)]
pub struct Child {
    /// Its URI (as the nexus knows it: give it back unchanged).
    pub uri: String,
    /// `online`, `rebuilding`, `faulted`, ...
    pub state: String,
    /// The fault reason.
    pub reason: Option<String>,
    /// Rebuild progress, 0 to 100, while a rebuild runs.
    pub progress: Option<u8>,
    /// The last rebuild, in short.
    pub last_rebuild: Option<String>,
}

/// The node of a child of volume `id`'s nexus on `target`: a local child is the target's own
/// replica, a remote one names its node in its NQN (`...:replica:<id>:<node>`).
#[must_use]
pub fn child_node(uri: &str, id: &str, target: &str) -> Option<String> {
    if uri.starts_with("bdev:///") {
        return Some(target.to_owned());
    }
    let marker = format!("/{NQN_PREFIX}:replica:{id}:");
    let at = uri.find(&marker)?;
    let rest = uri.get(at + marker.len()..)?;
    let node = rest.split(['?', '/']).next()?;
    crate::model::validate_name("node", node).ok()?;
    Some(node.to_owned())
}

/// The children of a nexus (`nexus_get` entry) by node; what does not parse is left out.
#[must_use]
pub fn children(v: &VolumeRecord, target: &str, nexus: &Value) -> HashMap<String, Child> {
    let mut out = HashMap::new();
    for c in nexus
        .get("children")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(uri) = c.get("uri").and_then(Value::as_str) else {
            continue;
        };
        let Some(node) = child_node(uri, &v.id, target) else {
            continue;
        };
        let s = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_owned);
        let progress = c
            .get("rebuild")
            .and_then(|r| r.get("progress"))
            .and_then(Value::as_u64)
            .and_then(|p| u8::try_from(p.min(100)).ok());
        let last_rebuild = c.get("last_rebuild").filter(|r| r.is_object()).map(|r| {
            format!(
                "{} {}, {} of {} segments, {} bytes in {} ms",
                if r.get("full").and_then(Value::as_bool) == Some(true) {
                    "full"
                } else {
                    "partial"
                },
                r.get("outcome").and_then(Value::as_str).unwrap_or("?"),
                r.get("segments_copied")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                r.get("segments_total").and_then(Value::as_u64).unwrap_or(0),
                r.get("bytes_copied").and_then(Value::as_u64).unwrap_or(0),
                r.get("duration_ms").and_then(Value::as_u64).unwrap_or(0),
            )
        });
        out.insert(
            node,
            Child {
                uri: uri.to_owned(),
                state: s("state").unwrap_or_default(),
                reason: s("fault_reason"),
                progress,
                last_rebuild,
            },
        );
    }
    out
}

/// Fault reasons that are the replica's own (replace it), not its path's (re-add it).
pub(crate) fn replica_fault(reason: Option<&str>) -> bool {
    !matches!(
        reason,
        Some("disconnected" | "timed_out" | "cannot_open") | None
    )
}

pub(crate) fn published(v: &VolumeRecord) -> Option<&TargetRecord> {
    v.target
        .as_ref()
        .filter(|t| t.state == TargetState::Published)
}

/// Fills in the rebuild progress of `view`'s rebuilding replicas from the nexus (a best
/// effort: nothing is filled in when the nexus's node does not answer within 2 s).
pub async fn live_progress(ctx: &Ctx, v: &VolumeRecord, view: &mut crate::volume::VolumeView) {
    let Some(t) = published(v) else { return };
    if !v
        .replica_list
        .iter()
        .any(|r| r.state == rs::REBUILDING || r.state == rs::CREATING)
    {
        return;
    }
    let got = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        let nodes = ctx.store.list_nodes().await?;
        let node = Ctx::node(&nodes, &t.node)?;
        let mut c = ctx.connect(node).await?;
        node_ops::nexus(&mut c, v.lvol_name()).await
    })
    .await;
    let Ok(Ok(Some(nx))) = got else { return };
    let kids = children(v, &t.node, &nx);
    for r in &mut view.replica_list {
        if let Some(c) = kids.get(&r.node)
            && r.state == rs::REBUILDING
        {
            r.rebuild_progress = c
                .progress
                .or(Some(if c.state == "online" { 100 } else { 0 }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_map_to_their_nodes() {
        let id = "6a1f3e56-0000-4000-8000-00000000c0de";
        assert_eq!(child_node("bdev:///abc", id, "n1").as_deref(), Some("n1"));
        let u = format!(
            "nvmf://127.0.0.2:4420/{NQN_PREFIX}:replica:{id}:node-2?hostnqn=nqn.2016-06.io.shoal:node:n1"
        );
        assert_eq!(child_node(&u, id, "n1").as_deref(), Some("node-2"));
        let other = u.replace("c0de", "beef");
        assert_eq!(child_node(&other, id, "n1"), None);
        let bad = format!("nvmf://h:1/{NQN_PREFIX}:replica:{id}:a%2Fb");
        assert_eq!(child_node(&bad, id, "n1"), None);
    }

    #[test]
    fn path_faults_are_re_added_replica_faults_replaced() {
        for r in ["disconnected", "timed_out", "cannot_open"] {
            assert!(!replica_fault(Some(r)));
        }
        for r in [
            "io_error",
            "no_space",
            "metadata_error",
            "admin",
            "rebuild_stopped",
            "new",
        ] {
            assert!(replica_fault(Some(r)));
        }
    }
}
