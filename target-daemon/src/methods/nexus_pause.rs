//! Pausing a nexus's host writes for a consistent snapshot of its replicas (Shoal's own
//! methods): `nexus_pause_io` and `nexus_resume_io`.
//!
//! `nexus_pause_io {"name", "timeout_ms"}` holds every new host write of the nexus, waits
//! for the writes in flight to complete on every child and answers `{"generation",
//! "in_sync": [child URIs]}`; the nexus resumes by itself after `timeout_ms` (1 to 60000).
//! `nexus_resume_io {"name", "generation"}` ends that pause, and fails with `-16` when it is
//! not in force any more (it lapsed at its deadline): the caller's snapshots are then not
//! one point of the write stream. See `shoal_replication`'s `pause` module.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::nexus::{WAIT, find, nexus_error};
use crate::daemon::Daemon;
use crate::rpc::params::params_knobs;
use crate::rpc::{Registry, RpcError};

/// `nexus_pause_io`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NexusPauseIo {
    /// The nexus.
    pub name: String,
    /// After this many milliseconds the nexus resumes by itself (1 to 60000).
    pub timeout_ms: u64,
}
params_knobs!(NexusPauseIo {});

/// `nexus_resume_io`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NexusResumeIo {
    /// The nexus.
    pub name: String,
    /// The generation `nexus_pause_io` answered.
    pub generation: u64,
}
params_knobs!(NexusResumeIo {});

/// Registers the pause methods.
pub fn register(r: &mut Registry<Daemon>) {
    r.register("nexus_pause_io", |d: &Daemon, p: NexusPauseIo| {
        let nx = find(d, &p.name)?;
        let info = nx
            .pause_io(Duration::from_millis(p.timeout_ms))
            .wait(WAIT)
            .and_then(|r| r)
            .map_err(|e| nexus_error(&e))?;
        Ok::<Value, RpcError>(json!({
            "generation": info.generation,
            "in_sync": info.in_sync,
        }))
    });
    r.register("nexus_resume_io", |d: &Daemon, p: NexusResumeIo| {
        let nx = find(d, &p.name)?;
        nx.resume_io(p.generation).map_err(|e| nexus_error(&e))?;
        Ok::<Value, RpcError>(Value::Bool(true))
    });
}
