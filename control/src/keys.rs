//! The etcd key layout. Every key lives under [`PREFIX`]; a change of layout that old code
//! could misread gets a new version (`/shoal/v2/`) and a migration, never a silent reuse.
//!
//! | key | value | written by | lifetime |
//! |---|---|---|---|
//! | `nodes/<id>` | [`crate::model::NodeRecord`] | the node's agent | until the node is removed |
//! | `alive/<id>` | [`crate::model::Liveness`] | the node's agent | bound to the agent's lease |
//! | `node-state/<id>` | [`crate::model::NodeState`] | the leader (fenced) | persistent |
//! | `leader/<lease>` | [`crate::model::InstanceInfo`] | each `shoal-control` (etcd election) | bound to its lease |
//!
//! Per node that means one write at registration, one lease keep-alive every TTL/3 (no
//! write), and one leader write per online/offline change.

/// Root of Shoal's keys, with the layout version.
pub const PREFIX: &str = "/shoal/v1/";

/// Prefix of the node records.
#[must_use]
pub fn nodes() -> String {
    format!("{PREFIX}nodes/")
}

/// A node's record.
#[must_use]
pub fn node(id: &str) -> String {
    format!("{PREFIX}nodes/{id}")
}

/// Prefix of the liveness keys.
#[must_use]
pub fn alive_prefix() -> String {
    format!("{PREFIX}alive/")
}

/// A node's liveness key (bound to its agent's lease).
#[must_use]
pub fn alive(id: &str) -> String {
    format!("{PREFIX}alive/{id}")
}

/// Prefix of the node states the leader keeps.
#[must_use]
pub fn node_states() -> String {
    format!("{PREFIX}node-state/")
}

/// A node's state as the leader last saw it.
#[must_use]
pub fn node_state(id: &str) -> String {
    format!("{PREFIX}node-state/{id}")
}

/// The election's name (candidates' keys are `<name>/<lease id in hex>`).
#[must_use]
pub fn election() -> String {
    format!("{PREFIX}leader")
}
