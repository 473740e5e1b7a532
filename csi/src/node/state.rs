//! What the node plugin remembers about a staged volume, one small JSON file per volume in
//! its state directory (a host path, so it outlives the plugin's container). NodeUnstageVolume
//! gets only the volume id and the staging path: the file says which subsystem to disconnect.
//! It is written before the connection is made, so a crash between the two leaves a record
//! that a retried stage or an unstage finds.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The record of one staged volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    /// Subsystem NQN.
    pub nqn: String,
    /// NVMe/TCP address.
    pub traddr: String,
    /// NVMe/TCP port.
    pub trsvcid: String,
    /// The namespace UUID asked for, if the publish context gave one.
    #[serde(default)]
    pub uuid: Option<String>,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir(pub PathBuf);

/// Whether a volume id can name a file (the control plane's ids are UUIDs).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !id.starts_with('.')
}

impl StateDir {
    fn path(&self, id: &str) -> PathBuf {
        self.0.join(format!("{id}.json"))
    }

    /// Saves a record (write to a temporary name, then rename: never half a file).
    pub fn save(&self, id: &str, s: &Staged) -> io::Result<()> {
        std::fs::create_dir_all(&self.0)?;
        let tmp = self.0.join(format!(".{id}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(s).map_err(io::Error::other)?)?;
        std::fs::rename(&tmp, self.path(id))
    }

    /// Loads a record; a missing or unreadable one is `None` (the mount table is the fallback).
    pub fn load(&self, id: &str) -> Option<Staged> {
        let b = std::fs::read(self.path(id)).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// Removes a record (missing is fine).
    pub fn remove(&self, id: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    /// Where it is.
    pub fn dir(&self) -> &Path {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_remove() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir(d.path().join("state"));
        let rec = Staged {
            nqn: "n".into(),
            traddr: "a".into(),
            trsvcid: "1".into(),
            uuid: None,
        };
        assert_eq!(s.load("v1"), None);
        s.save("v1", &rec).unwrap();
        assert_eq!(s.load("v1"), Some(rec));
        std::fs::write(s.dir().join("v2.json"), b"{not json").unwrap();
        assert_eq!(s.load("v2"), None);
        s.remove("v1").unwrap();
        s.remove("v1").unwrap();
        assert_eq!(s.load("v1"), None);
        assert!(valid_id("0b5c7e1e-6b1a-4a8e-9d59-2f5f3b0f6f11"));
        for bad in ["", "../x", "a/b", ".hidden", &"x".repeat(129)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
