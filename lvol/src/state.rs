//! The core state of pools and volumes, which every other part of the crate uses and which
//! uses none of them (only the on-disk format's constants and types): the pool ([`Lvs`]: its
//! fields; its operations are in `store`), a volume's bdev ([`LvolBdev`]: identity, alias,
//! flags), what every reactor's channel of a volume shares ([`LvolShared`]: its cluster map as
//! the I/O path reads it, its parent, and the counters by which the pool knows when no I/O can
//! still use a cluster it freed), and the walks of a cluster map and of a chain of ancestors.
//!
//! The pool and its volumes point at each other (a pool holds its volumes' bdevs, a volume
//! its pool, weakly), so they are defined together here; `store` (the pool's operations),
//! `channel` (the I/O path) and `lvol` (a volume as a `Bdev`) build on them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use shoal_bdev::{Bdev, BdevInfo};
use shoal_reactor::ReactorHandle;
use uuid::Uuid;

use crate::format::superblock::Superblock;

/// SPDK's product name for a logical volume.
pub const PRODUCT_NAME: &str = "Logical Volume";
/// A map entry of a cluster with no data cluster.
pub const UNMAPPED: u64 = u64::MAX;

/// A volume's cluster map as the I/O path reads it: the data cluster of each cluster index,
/// or [`UNMAPPED`]. Its length is the volume's size in clusters; a resize replaces it whole.
pub type ClusterMap = Arc<[AtomicU64]>;

/// A map of `n` unmapped clusters.
pub fn new_map(n: usize) -> ClusterMap {
    (0..n).map(|_| AtomicU64::new(UNMAPPED)).collect()
}

/// I/O counters of one channel of a volume: the pool takes a snapshot of `started` when it
/// frees a cluster, and reuses the cluster only once every channel's `finished` has caught up
/// (no I/O that could have seen the old mapping is still out). Each is written by its
/// channel's reactor only.
#[derive(Debug, Default)]
pub struct ChanCounters {
    /// I/Os started.
    pub started: AtomicU64,
    /// I/Os finished, counted in start order: every I/O numbered below it (its `started`
    /// count before it) has completed. I/Os complete out of order, so this is not the number
    /// of completions: one I/O still out holds it back.
    pub finished: AtomicU64,
}

/// What every reactor's channel of a volume shares.
pub struct LvolShared {
    /// The pool.
    pub lvs: Weak<Lvs>,
    /// Data cluster of each cluster index, or [`UNMAPPED`]. Set by the pool's home reactor
    /// only once the mapping is durable; cleared when a cluster is freed. Replaced whole by a
    /// resize (on the home, while the volume's I/O is frozen), which then bumps `map_gen`;
    /// a channel keeps its own handle to it and takes the new one when `map_gen` moves, so
    /// the I/O path takes no lock.
    map: Mutex<ClusterMap>,
    /// Bumped when `map` is replaced.
    pub map_gen: AtomicU64,
    /// The volume's UUID.
    pub uuid: Uuid,
    /// The parent's shared state (a clone reads unallocated clusters from it). Changed by the
    /// home only while the volume's I/O is frozen, and then `chain_gen` is bumped; the I/O
    /// path reads a copy of the chain of ancestors that it refreshes when `chain_gen` moves.
    pub parent: Mutex<Option<Arc<LvolShared>>>,
    /// Bumped when this volume's chain of ancestors changes.
    pub chain_gen: AtomicU64,
    /// Thin provisioned (a snapshot's origin becomes thin; inflating makes it thick).
    pub thin: AtomicBool,
    /// A snapshot (read-only for ever; clones may read from it).
    pub snapshot: bool,
    /// I/O is held at submission (see `store::freeze`).
    pub frozen: AtomicBool,
    /// Read-only (set by `bdev_lvol_set_read_only`, or a snapshot).
    pub read_only: AtomicBool,
    /// Counters of every channel opened on the volume.
    pub chans: Mutex<Vec<Arc<ChanCounters>>>,
    /// Blocks per cluster.
    pub cluster_blocks: u64,
    /// The first block of the data area on the base bdev.
    pub data_block: u64,
    /// Writes refused because the pool was full.
    pub nospace_errors: AtomicU64,
}

/// The data cluster of cluster `index` in `map`, if allocated.
#[inline]
pub fn map_phys(map: &[AtomicU64], index: u64) -> Option<u64> {
    let i = usize::try_from(index).ok()?;
    let p = map.get(i)?.load(Ordering::Acquire);
    (p != UNMAPPED).then_some(p)
}

/// The data cluster of cluster `index` through a volume's ancestors' `maps`, nearest first:
/// the nearest ancestor's that has it. An ancestor too short to have `index` (a volume
/// shrunk, then snapshotted, then grown) ends the walk with `None`, zeroes: what lies past
/// its end is not its data, and its own ancestors do not show through (SPDK's blob backing
/// device reads zeroes past its blob's end rather than asking that blob's parent).
pub fn chain_phys<'a>(maps: impl IntoIterator<Item = &'a [AtomicU64]>, index: u64) -> Option<u64> {
    let i = usize::try_from(index).ok()?;
    for m in maps {
        let p = m.get(i)?.load(Ordering::Acquire);
        if p != UNMAPPED {
            return Some(p);
        }
    }
    None
}

impl LvolShared {
    /// A new volume's shared state; `map` holds its size in clusters.
    pub(crate) fn new(
        lvs: Weak<Lvs>,
        uuid: Uuid,
        map: ClusterMap,
        parent: Option<Arc<LvolShared>>,
        flags: (bool, bool, bool),
        cluster_blocks: u64,
        data_block: u64,
    ) -> LvolShared {
        let (thin, snapshot, read_only) = flags;
        LvolShared {
            lvs,
            map: Mutex::new(map),
            map_gen: AtomicU64::new(0),
            uuid,
            parent: Mutex::new(parent),
            chain_gen: AtomicU64::new(0),
            thin: AtomicBool::new(thin),
            snapshot,
            frozen: AtomicBool::new(false),
            read_only: AtomicBool::new(read_only),
            chans: Mutex::new(Vec::new()),
            cluster_blocks,
            data_block,
            nospace_errors: AtomicU64::new(0),
        }
    }

    /// The cluster map now (the control path's view; the I/O path keeps its own handle).
    pub fn map(&self) -> ClusterMap {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the cluster map (a resize, on the home reactor with the volume's I/O frozen).
    pub(crate) fn replace_map(&self, map: ClusterMap) {
        *self.map.lock().unwrap_or_else(|e| e.into_inner()) = map;
        self.map_gen.fetch_add(1, Ordering::AcqRel);
    }

    /// The data cluster of cluster `index`, if allocated.
    pub fn phys(&self, index: u64) -> Option<u64> {
        map_phys(&self.map(), index)
    }

    /// Stores `phys` (or [`UNMAPPED`]) as cluster `index`'s entry, if the map has it.
    pub(crate) fn set_phys(&self, index: u64, phys: u64) {
        let map = self.map();
        if let Some(a) = usize::try_from(index).ok().and_then(|i| map.get(i)) {
            a.store(phys, Ordering::Release);
        }
    }

    /// Clears every entry of the map.
    pub(crate) fn unmap_all(&self) {
        for a in self.map().iter() {
            a.store(UNMAPPED, Ordering::Release);
        }
    }

    /// Allocated clusters.
    pub fn allocated(&self) -> u64 {
        self.map()
            .iter()
            .filter(|p| p.load(Ordering::Relaxed) != UNMAPPED)
            .count() as u64
    }

    /// The parent, if any.
    pub fn parent(&self) -> Option<Arc<LvolShared>> {
        self.parent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The ancestors, nearest first.
    pub fn chain(&self) -> Vec<Arc<LvolShared>> {
        let mut out: Vec<Arc<LvolShared>> = Vec::new();
        let mut cur = self.parent();
        while let Some(p) = cur {
            // A cycle cannot be built (the table refuses one); bound the walk anyway.
            if out.len() > crate::format::MAX_LVOLS {
                break;
            }
            cur = p.parent();
            out.push(p);
        }
        out
    }

    /// The data cluster holding `index` in the nearest ancestor that has it, unless an
    /// ancestor too short to have it comes first ([`chain_phys`]).
    pub fn ancestor_phys(&self, index: u64) -> Option<u64> {
        let maps: Vec<ClusterMap> = self.chain().iter().map(|p| p.map()).collect();
        chain_phys(maps.iter().map(|m| &m[..]), index)
    }

    /// Whether the volume is thin provisioned.
    pub fn is_thin(&self) -> bool {
        self.thin.load(Ordering::Acquire)
    }

    /// A snapshot of every channel's `started`, for a cluster freed now.
    pub fn quiesce_point(&self) -> Vec<(Arc<ChanCounters>, u64)> {
        let chans = self.chans.lock().unwrap_or_else(|e| e.into_inner());
        chans
            .iter()
            .map(|c| (c.clone(), c.started.load(Ordering::Acquire)))
            .collect()
    }
}

/// A logical volume's bdev.
pub struct LvolBdev {
    pub(crate) info: BdevInfo,
    /// The right to change its size: the pool's resize only (`store/resize.rs`).
    pub(crate) size_key: shoal_bdev::SizeKey,
    pub(crate) shared: Arc<LvolShared>,
    /// Its name in the pool (the alias is `lvs_name/name`).
    pub(crate) name: Mutex<String>,
    pub(crate) fua: bool,
}

impl std::fmt::Debug for LvolBdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LvolBdev")
            .field("uuid", &self.info.uuid)
            .finish()
    }
}

impl LvolBdev {
    /// The volume's UUID.
    pub fn uuid(&self) -> Uuid {
        self.info.uuid
    }

    /// Its name in the pool.
    pub fn lvol_name(&self) -> String {
        self.name.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The pool, unless it was closed.
    pub fn lvs(&self) -> Option<Arc<Lvs>> {
        self.shared.lvs.upgrade()
    }

    /// `lvs_name/lvol_name`.
    pub fn alias(&self) -> String {
        let lvs = self.lvs().map(|l| l.name()).unwrap_or_default();
        format!("{lvs}/{}", self.lvol_name())
    }

    /// The shared state (map, counters).
    pub fn shared(&self) -> &Arc<LvolShared> {
        &self.shared
    }

    /// Thin provisioned.
    pub fn is_thin(&self) -> bool {
        self.shared.is_thin()
    }

    /// A snapshot.
    pub fn is_snapshot(&self) -> bool {
        self.shared.snapshot
    }

    /// The parent's UUID (a clone's snapshot), if any.
    pub fn parent_uuid(&self) -> Option<Uuid> {
        self.shared.parent().map(|p| p.uuid)
    }

    /// Read-only.
    pub fn is_read_only(&self) -> bool {
        self.shared.read_only.load(Ordering::Acquire)
    }

    /// Allocated clusters.
    pub fn num_allocated_clusters(&self) -> u64 {
        self.shared.allocated()
    }

    /// Writes refused because the pool was full.
    pub fn nospace_errors(&self) -> u64 {
        self.shared.nospace_errors.load(Ordering::Relaxed)
    }
}

/// A pool. Its operations (creating, opening, the volume operations, the home reactor's
/// work) are in `store`.
pub struct Lvs {
    pub(crate) id: u64,
    pub(crate) sb: Superblock,
    pub(crate) base: Arc<dyn Bdev>,
    pub(crate) home: ReactorHandle,
    pub(crate) name: Mutex<String>,
    pub(crate) lvols: Mutex<BTreeMap<Uuid, Arc<LvolBdev>>>,
    pub(crate) free: AtomicU64,
    pub(crate) closed: AtomicBool,
    pub(crate) replayed_pages: u64,
}

impl std::fmt::Debug for Lvs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lvs")
            .field("uuid", &self.sb.uuid)
            .field("name", &self.name())
            .finish()
    }
}
