//! What the leader's work and the API handlers share: etcd, the nodes' token, whether this
//! instance leads ([`LeaderState`], which [`crate::leader::run`] publishes), and the lock that
//! serialises the changes this instance makes.
//!
//! The bottom of the crate's operations: every operation module (pools, volumes, snapshots,
//! growth, healing, the leader's loop, the API) uses it, and it uses none of them.

use std::time::Duration;

use tokio::sync::watch;

use crate::model::{InstanceInfo, NodeView, Status};
use crate::node_rpc::NodeClient;
use crate::store::Store;
use crate::{Error, Result};

/// Whether this instance leads, and with which election key.
pub type LeaderState = watch::Receiver<Option<Vec<u8>>>;

/// Shared by the API and the leader loop.
pub struct Ctx {
    /// etcd.
    pub store: Store,
    /// This instance.
    pub instance: InstanceInfo,
    /// Whether it leads, and its election key.
    pub leading: LeaderState,
    /// The nodes' JSON-RPC token.
    pub token: Option<String>,
    /// Deadline of one node call.
    pub rpc_timeout: Duration,
    /// Held by every change of pools and volumes (API operations and the reconciler), so one
    /// instance never runs two of them at once; two instances never act at once because only
    /// the leader changes anything and each of its writes is fenced.
    pub ops: tokio::sync::Mutex<()>,
    /// How long a replica's node may stay offline before its replica is replaced.
    pub heal_after: Duration,
}

impl Ctx {
    /// This instance's election key while it leads.
    ///
    /// # Errors
    /// [`Error::NotLeader`].
    pub fn leader_key(&self) -> Result<Vec<u8>> {
        self.leading.borrow().clone().ok_or(Error::NotLeader)
    }

    /// A connection to an online node's `shoald`.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the node is offline or does not answer.
    pub async fn connect(&self, node: &NodeView) -> Result<NodeClient> {
        if node.status != Status::Online {
            return Err(Error::Unavailable(format!(
                "node {} is offline",
                node.record.id
            )));
        }
        NodeClient::connect(
            node.record.rpc_endpoint,
            self.token.as_deref(),
            self.rpc_timeout,
        )
        .await
        .map_err(|e| Error::Unavailable(format!("node {}: {e}", node.record.id)))
    }

    /// A node by id, from the current list.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when it is unknown (a replica's node removed from etcd).
    pub fn node<'a>(nodes: &'a [NodeView], id: &str) -> Result<&'a NodeView> {
        nodes
            .iter()
            .find(|n| n.record.id == id)
            .ok_or_else(|| Error::Unavailable(format!("node {id} is not registered")))
    }
}
