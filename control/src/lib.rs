//! `shoal-control`: Shoal's control plane, the part that knows every node (and, with the
//! pools and volumes still to come, every pool, volume and replica) and keeps the cluster as
//! it should be.
//!
//! It is stateless: everything it knows lives in etcd under the versioned prefix
//! [`keys::PREFIX`], so any number of instances may run. One of them leads
//! ([`leader`], an etcd election on a lease) and alone acts on the cluster, every write it
//! makes fenced by its leadership ([`store::Store::fenced_put`]); all of them answer the
//! operators' HTTP/JSON API ([`api`]).
//!
//! Nodes register themselves through `shoal-agent` ([`agent`]), a small process next to each
//! `shoald`: it keeps the node's etcd lease alive while `shoald` answers its JSON-RPC over TCP
//! ([`node_rpc`], the same connection the control plane uses), so a node is online exactly
//! while the control plane could reach it.
//!
//! ```text
//!   shoalctl / CSI ──HTTP/JSON──▶ shoal-control (×N, one leads) ──etcd──┐
//!                                        │ JSON-RPC/TCP + token          │ leases
//!                                        ▼                               │
//!                                      shoald ◀──probe── shoal-agent ────┘
//! ```

pub mod agent;
pub mod api;
mod api_common;
mod api_snapshots;
mod api_volumes;
pub mod binary;
pub mod cli;
pub mod ctx;
pub mod events;
pub mod heal;
pub mod keys;
pub mod leader;
pub mod model;
pub mod nexus_state;
pub mod node_ops;
pub mod node_rpc;
pub mod placement;
pub mod pool;
pub mod resize;
pub mod snapshot;
pub mod store;
pub mod volume;
pub mod volume_ops;
pub mod volume_store;

/// Why a control-plane operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// etcd refused or could not be reached.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// A value stored in etcd does not decode (written by something else, or corrupt).
    #[error("bad value at {key}: {detail}")]
    BadValue {
        /// The key.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// A name or field given by a client or a node is not acceptable.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// Which field.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// This instance is not (or no longer) the leader; the write was not made.
    #[error("not the leader: the write was fenced off")]
    NotLeader,
    /// A node's JSON-RPC failed.
    #[error("node RPC: {0}")]
    NodeRpc(#[from] node_rpc::NodeRpcError),
    /// What was asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The name exists with other parameters.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request cannot be carried out in the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A size or index out of the acceptable range.
    #[error("{0}")]
    OutOfRange(String),
    /// Not enough nodes or space.
    #[error("{0}")]
    Exhausted(String),
    /// Something needed is unreachable (a node, the leader).
    #[error("{0}")]
    Unavailable(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
#[must_use]
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
