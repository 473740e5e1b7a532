//! Volumes: what a client asks for ([`VolumeSpec`]), what the leader records in etcd
//! ([`VolumeRecord`]: the intent first, then each step's outcome), what the API shows
//! ([`VolumeView`]), and the NQNs Shoal exports them under (the volume's, a replica's, and
//! [`host_nqn`], the host NQN of a node's nexus). Types and pure functions only.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{NodeView, Status};
use crate::{Error, Result};

/// Bytes at the start of every replica that the nexus keeps for its labels
/// (`shoal_replication::META_BYTES`; a test checks that they agree).
pub const META_BYTES: u64 = 1 << 20;
/// Longest volume name.
pub const MAX_VOLUME_NAME: usize = 128;
/// Most replicas per volume.
pub const MAX_REPLICAS: u32 = 8;
/// Largest volume (1 PiB).
pub const MAX_SIZE: u64 = 1 << 50;
/// NQN prefix of everything Shoal exports.
pub const NQN_PREFIX: &str = "nqn.2016-06.io.shoal";

/// Where replicas may go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Only nodes of these zones (spread over distinct zones as far as they go).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
    /// Only these nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
}

/// A create request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// Unique name (the client's idempotency key).
    pub name: String,
    /// Size in bytes the host sees.
    pub size_bytes: u64,
    /// Number of replicas.
    #[serde(default = "three")]
    pub replicas: u32,
    /// Thin provisioned.
    #[serde(default)]
    pub thin: bool,
    /// Placement constraints.
    #[serde(default)]
    pub topology: Option<Topology>,
    /// What the volume is made from: `{"snapshot_id": UUID}` (see [`crate::snapshot`]).
    #[serde(default)]
    pub source: Option<Value>,
}

fn three() -> u32 {
    3
}

fn invalid(what: &'static str, detail: String) -> Error {
    Error::Invalid { what, detail }
}

impl VolumeSpec {
    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if self.name.is_empty() || self.name.len() > MAX_VOLUME_NAME || !self.name.chars().all(ok) {
            return Err(invalid(
                "name",
                format!(
                    "{:?}: 1 to {MAX_VOLUME_NAME} letters, digits, '.', '_' or '-'",
                    self.name
                ),
            ));
        }
        if self.size_bytes == 0
            || self.size_bytes > MAX_SIZE
            || !self.size_bytes.is_multiple_of(4096)
        {
            return Err(invalid(
                "size_bytes",
                format!(
                    "{}: a multiple of 4096, from 4096 to {MAX_SIZE}",
                    self.size_bytes
                ),
            ));
        }
        if self.replicas == 0 || self.replicas > MAX_REPLICAS {
            return Err(invalid(
                "replicas",
                format!("{}: 1 to {MAX_REPLICAS}", self.replicas),
            ));
        }
        if let Some(t) = &self.topology {
            for (what, list) in [("topology.zones", &t.zones), ("topology.nodes", &t.nodes)] {
                for v in list.iter().flatten() {
                    crate::model::validate_name(what, v)?;
                }
                if list.as_ref().is_some_and(|l| l.is_empty() || l.len() > 256) {
                    return Err(invalid(what, "1 to 256 entries when given".into()));
                }
            }
        }
        Ok(())
    }
}

/// The volume's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeState {
    /// Recorded; replicas being created.
    Creating,
    /// Every replica in place.
    Online,
    /// Some replicas unreachable.
    Degraded,
    /// No replica reachable.
    Faulted,
    /// Being deleted from its nodes.
    Deleting,
}

/// Replica states (the `state` of a [`ReplicaRecord`]).
pub mod replica_state {
    /// Placed; its lvol being created (and, for a replacement, exported and added to the
    /// nexus).
    pub const CREATING: &str = "creating";
    /// In service.
    pub const ONLINE: &str = "online";
    /// In the nexus, being rebuilt.
    pub const REBUILDING: &str = "rebuilding";
    /// Out of service (the nexus faulted it, or its node is offline): re-added or replaced.
    pub const FAULTED: &str = "faulted";
    /// Given up (in [`super::VolumeRecord::retired`]): deleted from its node when it is
    /// reachable, never served again.
    pub const RETIRED: &str = "retired";
    /// Views only: `online` in etcd, but its node is offline.
    pub const OFFLINE: &str = "offline";
}

/// One replica: a volume of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    /// Its node.
    pub node: String,
    /// Its pool on that node.
    pub pool: String,
    /// The lvol's UUID once created.
    pub lvol_uuid: Option<String>,
    /// One of [`replica_state`].
    pub state: String,
    /// Why it is faulted (the nexus's fault reason, or `node offline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a replacement until its rebuild finishes: the node of the replica it replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// Views only: the rebuild's progress (0 to 100) as the nexus reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild_progress: Option<u8>,
}

impl ReplicaRecord {
    /// A replica planned on `node`'s pool `pool`.
    #[must_use]
    pub fn planned(node: &str, pool: &str) -> Self {
        Self {
            node: node.to_owned(),
            pool: pool.to_owned(),
            lvol_uuid: None,
            state: replica_state::CREATING.into(),
            reason: None,
            replaces: None,
            rebuild_progress: None,
        }
    }
}

/// Where a volume is published, and how far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetState {
    /// Recorded; nexus and exports being made.
    Publishing,
    /// The nexus is exported.
    Published,
    /// Being taken down.
    Unpublishing,
}

/// The volume's nexus and its export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    /// The nexus's node.
    pub node: String,
    /// The export's NQN (stable per volume).
    pub nqn: String,
    /// Address hosts connect to.
    pub traddr: String,
    /// Port.
    pub trsvcid: String,
    /// How far.
    pub state: TargetState,
    /// While the nexus is being moved off a dead node (`publishing` on the new node): the old
    /// node. The healer finishes such a move ([`crate::heal`]), not the plain publish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<String>,
}

/// A volume in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Its UUID.
    pub id: String,
    /// What was asked for.
    #[serde(flatten)]
    pub spec: VolumeSpec,
    /// Its life.
    pub state: VolumeState,
    /// The replicas (planned, then created).
    pub replica_list: Vec<ReplicaRecord>,
    /// Where it is published.
    #[serde(default)]
    pub target: Option<TargetRecord>,
    /// When it was created (ms since the epoch).
    pub created_ms: u64,
    /// Replicas given up (replaced), to delete from their nodes when they are reachable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<ReplicaRecord>,
    /// For a volume made from a snapshot: the snapshotted volume, whose labels its replicas
    /// (clones) carry until its nexus relabels them (`nexus_create`'s `adopt_uuid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<String>,
    /// A growth under way (`crate::resize`): the size asked for, recorded before any replica
    /// grows; `spec.size_bytes` takes it once every replica and the nexus have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resizing_to: Option<u64>,
}

impl VolumeRecord {
    /// The name of every replica's lvol (in its pool), and of the nexus.
    #[must_use]
    pub fn lvol_name(&self) -> &str {
        &self.id
    }

    /// Bytes of each replica: the size (the one a growth under way asks for, so that a
    /// replica made meanwhile, a replacement, already has it) plus the nexus's label region,
    /// rounded up to `cluster`.
    #[must_use]
    pub fn replica_bytes(&self, cluster: u64) -> u64 {
        replica_bytes_for(
            self.resizing_to.unwrap_or(0).max(self.spec.size_bytes),
            cluster,
        )
    }
}

/// Bytes of a replica of a `size_bytes` volume in a pool of `cluster`-byte clusters.
#[must_use]
pub fn replica_bytes_for(size_bytes: u64, cluster: u64) -> u64 {
    let raw = size_bytes.saturating_add(META_BYTES);
    let c = cluster.max(1);
    raw.div_ceil(c).saturating_mul(c)
}

/// The host NQN a node's nexus uses towards the replicas.
#[must_use]
pub fn host_nqn(node: &str) -> String {
    format!("{NQN_PREFIX}:node:{node}")
}

impl VolumeRecord {
    /// The stable NQN of the volume's export.
    #[must_use]
    pub fn nqn(&self) -> String {
        format!("{NQN_PREFIX}:volume:{}", self.id)
    }

    /// The NQN of the replica on `node` when exported to the nexus.
    #[must_use]
    pub fn replica_nqn(&self, node: &str) -> String {
        format!("{NQN_PREFIX}:replica:{}:{node}", self.id)
    }

    /// A serial number for its exports (20 ASCII characters at most).
    #[must_use]
    pub fn serial(&self) -> String {
        let hex: String = self.id.chars().filter(char::is_ascii_hexdigit).collect();
        format!("SHL{}", hex.get(..17).unwrap_or(&hex))
    }

    /// The view: the state from the replicas' nodes, the target once published.
    #[must_use]
    pub fn view(&self, nodes: &[NodeView]) -> VolumeView {
        let online = |id: &str| {
            nodes
                .iter()
                .any(|n| n.record.id == id && n.status == Status::Online)
        };
        let replica_list: Vec<ReplicaRecord> = self
            .replica_list
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if r.state == replica_state::ONLINE && !online(&r.node) {
                    r.state = replica_state::OFFLINE.into();
                }
                r
            })
            .collect();
        let up = replica_list
            .iter()
            .filter(|r| r.state == replica_state::ONLINE)
            .count();
        let state = match self.state {
            VolumeState::Online | VolumeState::Degraded | VolumeState::Faulted => {
                if up == 0 {
                    VolumeState::Faulted
                } else if up < self.spec.replicas as usize {
                    VolumeState::Degraded
                } else {
                    VolumeState::Online
                }
            }
            s => s,
        };
        VolumeView {
            id: self.id.clone(),
            name: self.spec.name.clone(),
            size_bytes: self.spec.size_bytes,
            replicas: self.spec.replicas,
            thin: self.spec.thin,
            topology: self.spec.topology.clone(),
            source: self.spec.source.clone(),
            state,
            replica_list,
            target: self
                .target
                .as_ref()
                .filter(|t| t.state == TargetState::Published)
                .map(Target::from),
        }
    }
}

/// A published volume's address, as a host needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The nexus's node.
    pub node: String,
    /// NQN.
    pub nqn: String,
    /// Address.
    pub traddr: String,
    /// Port.
    pub trsvcid: String,
}

impl From<&TargetRecord> for Target {
    fn from(t: &TargetRecord) -> Self {
        Self {
            node: t.node.clone(),
            nqn: t.nqn.clone(),
            traddr: t.traddr.clone(),
            trsvcid: t.trsvcid.clone(),
        }
    }
}

/// A volume as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeView {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Replica count asked for.
    pub replicas: u32,
    /// Thin.
    pub thin: bool,
    /// Constraints.
    pub topology: Option<Topology>,
    /// Source.
    pub source: Option<Value>,
    /// State.
    pub state: VolumeState,
    /// Replicas.
    pub replica_list: Vec<ReplicaRecord>,
    /// Where it is published.
    pub target: Option<Target>,
}
