//! The etcd key layout. Every key lives under [`PREFIX`]; a change of layout that old code
//! could misread gets a new version (`/shoal/v2/`) and a migration, never a silent reuse.
//!
//! | key | value | written by | lifetime |
//! |---|---|---|---|
//! | `nodes/<id>` | [`crate::model::NodeRecord`] | the node's agent | until the node is removed |
//! | `alive/<id>` | [`crate::model::Liveness`] | the node's agent | bound to the agent's lease |
//! | `node-state/<id>` | [`crate::model::NodeState`] | the leader (fenced) | persistent |
//! | `leader/<lease>` | [`crate::model::InstanceInfo`] | each `shoal-control` (etcd election) | bound to its lease |
//! | `pools/<node>/<name>` | [`crate::pool::PoolRecord`] | the leader (fenced) | until the pool is removed |
//! | `volumes/<uuid>` | [`crate::volume::VolumeRecord`] | the leader (fenced) | until the volume is deleted |
//! | `volume-names/<name>` | the volume's UUID (JSON string) | the leader (fenced) | as its volume |
//! | `snapshots/<uuid>` | [`crate::snapshot::SnapshotRecord`] | the leader (fenced) | until the snapshot is deleted |
//! | `snapshot-names/<name>` | the snapshot's UUID (JSON string) | the leader (fenced) | as its snapshot |
//! | `events/<ms>-<hex>` | [`crate::events::Event`] | the leader (fenced, with the change it reports) | the last [`crate::events::MAX_EVENTS`] |
//!
//! Per node that means one write at registration, one lease keep-alive every TTL/3 (no
//! write), and one leader write per online/offline change. Per pool: one write when it is
//! declared, one when it comes online, one per change of its free space (the leader reads
//! the node's `bdev_lvol_get_lvstores` every reconcile pass and writes only differences).
//! Per volume operation, see [`crate::volume_ops`].

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

/// Prefix of the pools.
#[must_use]
pub fn pools() -> String {
    format!("{PREFIX}pools/")
}

/// A pool's record.
#[must_use]
pub fn pool(node: &str, name: &str) -> String {
    format!("{PREFIX}pools/{node}/{name}")
}

/// Prefix of the volumes.
#[must_use]
pub fn volumes() -> String {
    format!("{PREFIX}volumes/")
}

/// A volume's record.
#[must_use]
pub fn volume(id: &str) -> String {
    format!("{PREFIX}volumes/{id}")
}

/// A volume's name index.
#[must_use]
pub fn volume_name(name: &str) -> String {
    format!("{PREFIX}volume-names/{name}")
}

/// Prefix of the events.
#[must_use]
pub fn events() -> String {
    format!("{PREFIX}events/")
}

/// An event (ids sort by time).
#[must_use]
pub fn event(id: &str) -> String {
    format!("{PREFIX}events/{id}")
}

/// Prefix of the snapshots.
#[must_use]
pub fn snapshots() -> String {
    format!("{PREFIX}snapshots/")
}

/// A snapshot's record.
#[must_use]
pub fn snapshot(id: &str) -> String {
    format!("{PREFIX}snapshots/{id}")
}

/// A snapshot's name index.
#[must_use]
pub fn snapshot_name(name: &str) -> String {
    format!("{PREFIX}snapshot-names/{name}")
}
