//! Events: what happened to nodes, replicas and rebuilds, as structured log lines (`event:`
//! with the kind, volume and node as fields) and as records in etcd that the API serves
//! (`GET /v1/events`).
//!
//! Only the leader writes events, each in the same fenced transaction as the change it
//! reports ([`Event::put`] gives the key and value to add to it): an event is in etcd exactly
//! when its change is, whatever crash comes between. Ids are the leader's time in milliseconds
//! and a random suffix, so keys sort by time. The history is bounded: the leader deletes all
//! but the newest [`MAX_EVENTS`] every few seconds ([`trim`]).

use std::fmt;

use etcd_client::{DeleteOptions, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::store::{Store, encode};
use crate::{Error, Result, keys, now_ms};

/// Events kept in etcd.
pub const MAX_EVENTS: usize = 1000;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A node's liveness key went away (its agent stopped renewing, or `shoald` stopped
    /// answering the agent).
    NodeOffline,
    /// A node's liveness key is back.
    NodeOnline,
    /// A replica is out of service: the nexus faulted it, or its node is offline.
    ReplicaFaulted,
    /// A replica was given up and a new one placed on another node.
    ReplicaReplaced,
    /// A stale replica (given up earlier) was deleted from its node.
    ReplicaRemoved,
    /// The nexus started to rebuild a replica.
    RebuildStarted,
    /// The replica's rebuild finished: it is online again.
    RebuildFinished,
    /// A faulted replica cannot be replaced (no node with room within the topology).
    HealBlocked,
    /// A snapshot of a volume was taken (every in-sync replica, at one point of its writes).
    SnapshotCreated,
    /// A snapshot was deleted from every node.
    SnapshotDeleted,
}

impl EventKind {
    /// The name used in the API and the logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NodeOffline => "node_offline",
            Self::NodeOnline => "node_online",
            Self::ReplicaFaulted => "replica_faulted",
            Self::ReplicaReplaced => "replica_replaced",
            Self::ReplicaRemoved => "replica_removed",
            Self::RebuildStarted => "rebuild_started",
            Self::RebuildFinished => "rebuild_finished",
            Self::HealBlocked => "heal_blocked",
            Self::SnapshotCreated => "snapshot_created",
            Self::SnapshotDeleted => "snapshot_deleted",
        }
    }

    /// Whether an operator should look (logged as a warning).
    #[must_use]
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            Self::NodeOffline | Self::ReplicaFaulted | Self::HealBlocked
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its id (`<ms since the epoch, 16 digits>-<8 hex digits>`: ids sort by time).
    pub id: String,
    /// When (ms since the epoch, by the leader's clock).
    pub time_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// The volume concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// The node concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// What happened, for people.
    pub message: String,
}

impl Event {
    /// A new event, now.
    #[must_use]
    pub fn new(
        kind: EventKind,
        volume: Option<&str>,
        node: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        let time_ms = now_ms();
        let rand = uuid::Uuid::new_v4().simple().to_string();
        Self {
            id: format!("{time_ms:016}-{}", rand.get(..8).unwrap_or("0")),
            time_ms,
            kind,
            volume: volume.map(str::to_owned),
            node: node.map(str::to_owned),
            message: message.into(),
        }
    }

    /// The key and value that store it (for a fenced transaction with its change).
    #[must_use]
    pub fn put(&self) -> (String, Vec<u8>) {
        (keys::event(&self.id), encode(self))
    }

    /// Logs it as a structured line (after its change is committed).
    pub fn log(&self) {
        let vol = self.volume.as_deref().unwrap_or("");
        let node = self.node.as_deref().unwrap_or("");
        if self.kind.is_warning() {
            tracing::warn!(kind = %self.kind, volume = vol, node = node, "event: {}", self.message);
        } else {
            tracing::info!(kind = %self.kind, volume = vol, node = node, "event: {}", self.message);
        }
    }
}

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this volume's.
    pub volume: Option<String>,
    /// Only this node's.
    pub node: Option<String>,
    /// Only this kind.
    pub kind: Option<EventKind>,
    /// At most this many (the newest), oldest first.
    pub limit: usize,
}

/// The newest events that pass `f`, oldest first.
///
/// # Errors
/// etcd errors.
pub async fn list(store: &Store, f: &Filter) -> Result<Vec<Event>> {
    let mut all: Vec<Event> = store.list(&keys::events()).await?;
    all.retain(|e| {
        f.volume
            .as_ref()
            .is_none_or(|v| e.volume.as_ref() == Some(v))
            && f.node.as_ref().is_none_or(|n| e.node.as_ref() == Some(n))
            && f.kind.is_none_or(|k| e.kind == k)
    });
    let skip = all.len().saturating_sub(f.limit);
    Ok(all.split_off(skip))
}

/// Deletes all but the newest `keep` events (fenced on `leader_key`).
///
/// # Errors
/// etcd errors; [`Error::NotLeader`].
pub async fn trim(store: &Store, leader_key: &[u8], keep: usize) -> Result<usize> {
    let prefix = keys::events();
    let mut kv = store.client().kv_client();
    let count = store
        .deadline(kv.get(
            prefix.as_str(),
            Some(GetOptions::new().with_prefix().with_count_only()),
        ))
        .await?
        .count();
    let excess = usize::try_from(count).unwrap_or(0).saturating_sub(keep);
    if excess == 0 {
        return Ok(0);
    }
    let oldest = store
        .deadline(
            kv.get(
                prefix.as_str(),
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_keys_only()
                        .with_sort(SortTarget::Key, SortOrder::Ascend)
                        .with_limit(i64::try_from(excess).unwrap_or(i64::MAX)),
                ),
            ),
        )
        .await?;
    let Some(last) = oldest.kvs().last() else {
        return Ok(0);
    };
    let mut end = last.key().to_vec();
    end.push(0);
    let txn = Txn::new()
        .when([etcd_client::Compare::version(
            leader_key.to_vec(),
            etcd_client::CompareOp::Greater,
            0,
        )])
        .and_then([TxnOp::delete(
            prefix.as_str(),
            Some(DeleteOptions::new().with_range(end)),
        )]);
    let resp = store.deadline(kv.txn(txn)).await?;
    if !resp.succeeded() {
        return Err(Error::NotLeader);
    }
    Ok(excess)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_kinds_have_their_api_names() {
        let a = Event::new(EventKind::NodeOffline, None, Some("n1"), "x");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = Event::new(EventKind::NodeOnline, None, Some("n1"), "y");
        assert!(a.id < b.id, "{} {}", a.id, b.id);
        assert_eq!(a.id.len(), 25);
        for k in [
            EventKind::NodeOffline,
            EventKind::NodeOnline,
            EventKind::ReplicaFaulted,
            EventKind::ReplicaReplaced,
            EventKind::ReplicaRemoved,
            EventKind::RebuildStarted,
            EventKind::RebuildFinished,
            EventKind::HealBlocked,
        ] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        let v = serde_json::to_value(&a).unwrap();
        assert!(v.get("volume").is_none(), "{v}");
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), a);
    }
}
