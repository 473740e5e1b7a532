//! The named set of block devices of one `shoald`.
//!
//! RPC handlers create devices and register them here; subsystems and nexuses look them up by
//! name. Deleting a device closes it (new I/O fails with `Closed`) and drops the registry's
//! reference: the memory or file goes away once the last channel using it is gone, so I/O in
//! flight drains first.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::{Bdev, BdevError};

/// Devices by name.
#[derive(Default)]
pub struct BdevRegistry {
    bdevs: Mutex<BTreeMap<String, Arc<dyn Bdev>>>,
}

impl BdevRegistry {
    /// An empty registry.
    pub fn new() -> BdevRegistry {
        BdevRegistry::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<dyn Bdev>>> {
        self.bdevs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a device; fails if the name is taken.
    pub fn insert(&self, bdev: Arc<dyn Bdev>) -> Result<(), BdevError> {
        let name = bdev.info().name.clone();
        let mut map = self.lock();
        if map.contains_key(&name) {
            return Err(BdevError::Invalid(format!("bdev {name} already exists")));
        }
        map.insert(name, bdev);
        Ok(())
    }

    /// Whether a device of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// The device of this name (also found by its UUID, as SPDK allows).
    pub fn get(&self, name: &str) -> Option<Arc<dyn Bdev>> {
        let map = self.lock();
        map.get(name).cloned().or_else(|| {
            map.values()
                .find(|b| b.info().uuid.to_string() == name)
                .cloned()
        })
    }

    /// Every device, by name.
    pub fn list(&self) -> Vec<Arc<dyn Bdev>> {
        self.lock().values().cloned().collect()
    }

    /// Closes and unregisters a device.
    pub fn remove(&self, name: &str) -> Option<Arc<dyn Bdev>> {
        let b = self.lock().remove(name)?;
        b.info().close();
        Some(b)
    }
}
