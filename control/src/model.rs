//! What the control plane stores and serves: nodes, their liveness and state, instances.
//! Everything here crosses etcd or the API as JSON; whatever comes from a node or a client is
//! validated ([`NodeRecord::validate`]) before it is stored or trusted.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Longest node id, label key or label value.
pub const MAX_NAME: usize = 63;
/// Most topology labels per node.
pub const MAX_LABELS: usize = 16;

/// Checks a node id, label key or label value: 1 to [`MAX_NAME`] bytes of ASCII letters,
/// digits, `.`, `_`, `-` (so it is safe in an etcd key, a log line and a URL path).
///
/// # Errors
/// [`Error::Invalid`] naming `what`.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), Error> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_NAME || !name.chars().all(ok_char) {
        return Err(Error::Invalid {
            what,
            detail: format!(
                "{name:?}: 1 to {MAX_NAME} characters of letters, digits, '.', '_' or '-'"
            ),
        });
    }
    Ok(())
}

/// A node as its agent registered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRecord {
    /// The node's id, unique in the cluster.
    pub id: String,
    /// Where hosts and other nodes reach its NVMe/TCP target.
    pub nvmf_addr: SocketAddr,
    /// Where the control plane reaches its `shoald` JSON-RPC (TCP).
    pub rpc_endpoint: SocketAddr,
    /// Topology labels (`zone`, `rack`, ...).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When the agent registered it (ms since the epoch).
    pub registered_at_ms: u64,
    /// The `shoald` version its agent saw.
    #[serde(default)]
    pub shoald_version: String,
}

impl NodeRecord {
    /// Checks the id and labels.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming what is wrong.
    pub fn validate(&self) -> Result<(), Error> {
        validate_name("node id", &self.id)?;
        if self.labels.len() > MAX_LABELS {
            return Err(Error::Invalid {
                what: "labels",
                detail: format!("{} labels; at most {MAX_LABELS}", self.labels.len()),
            });
        }
        for (k, v) in &self.labels {
            validate_name("label key", k)?;
            validate_name("label value", v)?;
        }
        Ok(())
    }

    /// The node's zone label, if any.
    #[must_use]
    pub fn zone(&self) -> Option<&str> {
        self.labels.get("zone").map(String::as_str)
    }
}

/// The value of a node's liveness key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    /// The lease the key is bound to.
    pub lease: i64,
    /// When this life of the agent began (ms since the epoch).
    pub since_ms: u64,
}

/// Online or offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Its liveness key exists: the agent keeps the lease alive and `shoald` answers.
    Online,
    /// No liveness key: the lease expired or was revoked.
    Offline,
}

/// The leader's record of a node's status and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// The status.
    pub status: Status,
    /// Since when (ms since the epoch, by the leader's clock).
    pub since_ms: u64,
}

/// A node as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// The registration.
    #[serde(flatten)]
    pub record: NodeRecord,
    /// Online now (from the liveness key, not from the leader's record).
    pub status: Status,
    /// Since when, as the leader recorded it (absent until a leader has seen the node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_since_ms: Option<u64>,
}

/// A `shoal-control` instance, as it appears in the election.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Its id (`--id`, default host name and PID).
    pub id: String,
    /// Where its API listens.
    pub api: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> NodeRecord {
        NodeRecord {
            id: id.to_owned(),
            nvmf_addr: "127.0.0.1:4420".parse().unwrap(),
            rpc_endpoint: "127.0.0.1:5260".parse().unwrap(),
            labels: BTreeMap::new(),
            registered_at_ms: 0,
            shoald_version: String::new(),
        }
    }

    #[test]
    fn ids_that_could_escape_a_key_are_refused() {
        for bad in ["", "a/b", "../x", "node 1", "é", &"x".repeat(64), "a\nb"] {
            assert!(record(bad).validate().is_err(), "{bad:?}");
        }
        for ok in ["n1", "node-1.zone_a", &"x".repeat(63)] {
            record(ok).validate().unwrap();
        }
    }

    #[test]
    fn labels_are_checked() {
        let mut r = record("n1");
        r.labels.insert("zone".into(), "a/b".into());
        assert!(r.validate().is_err());
        r.labels.clear();
        for i in 0..=MAX_LABELS {
            r.labels.insert(format!("k{i}"), "v".into());
        }
        assert!(r.validate().is_err());
    }

    #[test]
    fn a_record_with_unknown_fields_does_not_decode() {
        let mut v = serde_json::to_value(record("n1")).unwrap();
        v["extra"] = serde_json::json!(1);
        assert!(serde_json::from_value::<NodeRecord>(v).is_err());
    }
}
