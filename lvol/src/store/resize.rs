//! Resizing a volume (`bdev_lvol_resize`), with SPDK's blobstore's rules: the new size is
//! rounded up to whole clusters; a read-only volume (a snapshot, or one set read-only) is
//! refused (SPDK's `-EPERM`); growing a thick volume allocates the new clusters, and is
//! refused, with nothing changed, when the pool has too few free; growing a thin one allocates
//! nothing; shrinking frees the clusters past the new end. (SPDK then refuses to shrink a bdev
//! that is open; the daemon checks that before it asks.)
//!
//! **Crash consistency.** A power cut leaves the old size or the new one, never a mix:
//! - Thin growth and any shrink are one `ResizeLvol` record. A shrink unmaps the clusters past
//!   the new end in the I/O path's map at once (the volume's I/O is frozen meanwhile, so none
//!   is using them) and puts them in quarantine until the record is durable, as any freed
//!   cluster.
//! - Thick growth takes the clusters from the free set, zeroes them durably (unless the clear
//!   method is `none`), appends one `Map` record for each, at indices past the volume's end
//!   (a table keeps them, but they are not part of the volume: "staged"), and then the
//!   `ResizeLvol` record. The journal replays a prefix of its records, so a crash before the
//!   `ResizeLvol` is durable leaves the old size and staged mappings, which the pool drops when
//!   it opens (`Table::drop_staged`; it journals an `Unmap` for each, durably, before the
//!   clusters are free again: `Lvs::start`); after it, the new size with every cluster
//!   mapped.
//!
//! The new size reaches the I/O path only once the record is durable: the volume's I/O is
//! frozen ([`super::freeze`]), its map replaced by one of the new length (a channel takes the
//! new one when `map_gen` moves), the bdev's size changed (`BdevInfo::resize`, which tells its
//! watchers, such as the NVMe-oF target), then the held I/O goes on, checked against the new
//! size (past the end of a shrunk volume: out of range).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

use super::freeze::{freeze, thaw};
use super::home::{Done, Home, kick};
use super::ops::{clear_runs, pick_clusters, runs};
use super::snap::{busy, chain_changed};
use super::{Lvs, lock};
use crate::LvolError;
use crate::format::record::{ClearMethod, FLAG_READ_ONLY, FLAG_SNAPSHOT, FLAG_THIN, Record};
use crate::state::new_map;

type Reply = Box<dyn FnOnce(Result<(), LvolError>)>;

impl Lvs {
    /// Resizes volume `uuid` to `size_bytes`, rounded up to whole clusters
    /// (`bdev_lvol_resize`). The caller checks that a volume it shrinks is not in use.
    ///
    /// # Errors
    /// No such volume; a size of 0 or too large; a read-only volume
    /// ([`LvolError::ReadOnly`]); another operation in progress on it; too few free clusters
    /// to grow a thick volume ([`LvolError::NoSpace`], nothing changed); metadata I/O errors.
    pub fn resize_lvol(&self, uuid: Uuid, size_bytes: u64) -> Result<(), LvolError> {
        self.resize_checked(uuid, size_bytes, false)
    }

    /// As [`Lvs::resize_lvol`], but refuses to make the volume smaller than it is when the
    /// request reaches the pool ([`LvolError::Busy`]): for a caller that checked only that a
    /// growth is asked for, not that the volume is unused (`bdev_lvol_resize` does not hold
    /// its claims lock across a growth), and whose volume another request resized meanwhile.
    ///
    /// # Errors
    /// As [`Lvs::resize_lvol`]; [`LvolError::Busy`] for a size below the volume's.
    pub fn grow_lvol(&self, uuid: Uuid, size_bytes: u64) -> Result<(), LvolError> {
        self.resize_checked(uuid, size_bytes, true)
    }

    fn resize_checked(
        &self,
        uuid: Uuid,
        size_bytes: u64,
        grow_only: bool,
    ) -> Result<(), LvolError> {
        if size_bytes == 0 {
            return Err(LvolError::Invalid("a volume's size must not be 0".into()));
        }
        let clusters = size_bytes.div_ceil(self.sb.cluster_size);
        if clusters.checked_mul(self.sb.cluster_size).is_none()
            || usize::try_from(clusters).is_err()
        {
            return Err(LvolError::Invalid("size too large".into()));
        }
        self.on_home(move |h, reply| resize_on_home(h, uuid, clusters, grow_only, reply))
    }
}

/// Checks the request; the volume's current size and whether it is thin.
fn check(
    hm: &Home,
    uuid: Uuid,
    clusters: u64,
    grow_only: bool,
) -> Result<(u64, bool, ClearMethod), LvolError> {
    if let Some(why) = &hm.j.failed {
        return Err(LvolError::Unavailable(why.clone()));
    }
    let m = hm
        .table
        .lvols
        .get(&uuid)
        .ok_or_else(|| LvolError::NotFound(format!("volume {uuid}")))?;
    if m.header.flags & (FLAG_READ_ONLY | FLAG_SNAPSHOT) != 0 {
        return Err(LvolError::ReadOnly(format!(
            "volume {} is read-only (a snapshot, or set read-only): it cannot be resized",
            m.header.name
        )));
    }
    busy(hm, &uuid)?;
    let old = m.header.num_clusters;
    if grow_only && clusters < old {
        return Err(LvolError::Busy(format!(
            "volume {} was resized meanwhile to {old} clusters: {clusters} would shrink it",
            m.header.name
        )));
    }
    if clusters > old {
        let what = format!("volume {} grown to {clusters} clusters", m.header.name);
        hm.check_clusters(clusters - old, &what)?;
    }
    Ok((old, m.header.flags & FLAG_THIN != 0, m.header.clear))
}

fn resize_on_home(h: &Rc<RefCell<Home>>, uuid: Uuid, clusters: u64, grow_only: bool, reply: Reply) {
    let (old, thin, clear) = {
        let mut hm = h.borrow_mut();
        match check(&hm, uuid, clusters, grow_only) {
            Ok(x) => {
                if x.0 != clusters {
                    hm.busy.insert(uuid);
                }
                x
            }
            Err(e) => return reply(Err(e)),
        }
    };
    if clusters == old {
        return reply(Ok(()));
    }
    if clusters < old {
        return shrink(h, uuid, clusters, reply);
    }
    if thin {
        let rno = h.borrow_mut().append(Record::ResizeLvol(uuid, clusters));
        return publish_growth_when_durable(h, uuid, clusters, rno, reply);
    }
    grow_thick(h, uuid, old, clusters, clear, reply);
}

/// Ends the operation: the volume is no longer busy, and `reply` hears `r`.
fn finish(h: &Rc<RefCell<Home>>, uuid: Uuid, r: Result<(), LvolError>, reply: Reply) {
    h.borrow_mut().busy.remove(&uuid);
    reply(r);
}

fn grow_thick(
    h: &Rc<RefCell<Home>>,
    uuid: Uuid,
    old: u64,
    clusters: u64,
    clear: ClearMethod,
    reply: Reply,
) {
    let need = clusters - old;
    let (taken, chan, sb) = {
        let mut hm = h.borrow_mut();
        let free = hm.free.len() as u64;
        if free < need {
            let name = hm
                .table
                .lvols
                .get(&uuid)
                .map(|m| m.header.name.clone())
                .unwrap_or_default();
            let e = LvolError::NoSpace(format!(
                "thick volume {name} needs {need} more clusters to grow to {clusters}: pool {} \
                 has {free} free",
                hm.lvs.name()
            ));
            drop(hm);
            return finish(h, uuid, Err(e), reply);
        }
        let mut taken = pick_clusters(&hm.free, need);
        taken.sort_unstable();
        for c in &taken {
            hm.free.remove(c);
        }
        hm.free_count_changed();
        // The new size counts from now on, not from its record (`Pending`).
        hm.pending.clusters += need;
        (taken, hm.chan.clone(), hm.lvs.sb)
    };
    let rs = runs(&taken);
    let hc = h.clone();
    let cleared: Done = Box::new(move |r| {
        hc.borrow_mut().pending.clusters -= need;
        if let Err(e) = r {
            {
                let mut hm = hc.borrow_mut();
                hm.free.extend(taken.iter().copied());
                hm.free_count_changed();
            }
            return finish(&hc, uuid, Err(e), reply);
        }
        let rno = {
            let mut hm = hc.borrow_mut();
            // Staged past the end first, then the size that takes them in (module docs).
            for (k, &phys) in taken.iter().enumerate() {
                hm.append(Record::Map {
                    lvol: uuid,
                    index: old + k as u64,
                    phys,
                });
            }
            hm.append(Record::ResizeLvol(uuid, clusters))
        };
        publish_growth_when_durable(&hc, uuid, clusters, rno, reply);
    });
    if clear == ClearMethod::None {
        return cleared(Ok(()));
    }
    let bs = u64::from(sb.block_size);
    clear_runs(chan, sb.cluster_size / bs, sb.data_offset / bs, rs, cleared);
}

/// Once record `rno` is durable: freezes the volume's I/O, gives the I/O path the longer map
/// (with the clusters the table now maps past the old end) and the new size, and thaws.
fn publish_growth_when_durable(
    h: &Rc<RefCell<Home>>,
    uuid: Uuid,
    clusters: u64,
    rno: u64,
    reply: Reply,
) {
    let hc = h.clone();
    h.borrow_mut().when_durable(
        rno,
        Box::new(move |r| {
            if let Err(e) = r {
                return finish(&hc, uuid, Err(e), reply);
            }
            let h2 = hc.clone();
            freeze(
                &hc,
                &[uuid],
                Box::new(move |_| {
                    let r = install_size(&h2, uuid, clusters, copy_map);
                    thaw(&h2, &[uuid]);
                    finish(&h2, uuid, r, reply);
                }),
            );
        }),
    );
    kick(h);
}

/// Copies the entries `old` and `new` both have.
fn copy_map(old: &[AtomicU64], new: &[AtomicU64]) {
    for (a, b) in old.iter().zip(new.iter()) {
        b.store(a.load(Ordering::Acquire), Ordering::Relaxed);
    }
}

/// Replaces the volume's map by one of `clusters` entries (filled by `fill` from the old map,
/// then the table's mappings below `clusters`), and sets the bdev's size. The volume's I/O
/// is frozen.
fn install_size(
    h: &Rc<RefCell<Home>>,
    uuid: Uuid,
    clusters: u64,
    fill: impl FnOnce(&[AtomicU64], &[AtomicU64]),
) -> Result<(), LvolError> {
    let (bdev, sh) = {
        let hm = h.borrow();
        let bdev = lock(&hm.lvs.lvols)
            .get(&uuid)
            .cloned()
            .ok_or_else(|| LvolError::NotFound(format!("volume {uuid}")))?;
        let sh = bdev.shared().clone();
        let n = usize::try_from(clusters).map_err(|_| LvolError::Invalid("size".into()))?;
        let new = new_map(n);
        fill(&sh.map(), &new);
        if let Some(m) = hm.table.lvols.get(&uuid) {
            for (&i, &p) in m.map.range(..clusters) {
                if let Some(a) = usize::try_from(i).ok().and_then(|i| new.get(i)) {
                    a.store(p, Ordering::Relaxed);
                }
            }
        }
        sh.replace_map(new);
        chain_changed(&hm, &uuid);
        (bdev, sh)
    };
    let blocks = clusters.saturating_mul(sh.cluster_blocks);
    // Watchers (the NVMe-oF target) run here, with no borrow of the home held.
    bdev.info
        .resize(&bdev.size_key, blocks)
        .map_err(|e| LvolError::Invalid(e.to_string()))?;
    tracing::info!(lvs = %bdev.lvs().map(|l| l.name()).unwrap_or_default(),
        lvol = %bdev.lvol_name(), uuid = %uuid, clusters, "volume resized");
    Ok(())
}

fn shrink(h: &Rc<RefCell<Home>>, uuid: Uuid, clusters: u64, reply: Reply) {
    let hc = h.clone();
    let frozen: Done = Box::new(move |_| {
        let r = (|| {
            let (rno, freed) = {
                let mut hm = hc.borrow_mut();
                // Checked again: the journal may have failed meanwhile.
                if let Some(why) = &hm.j.failed {
                    return Err(LvolError::Unavailable(why.clone()));
                }
                let freed: Vec<u64> = hm
                    .table
                    .lvols
                    .get(&uuid)
                    .map(|m| m.map.range(clusters..).map(|(_, &p)| p).collect())
                    .unwrap_or_default();
                let rno = hm.append(Record::ResizeLvol(uuid, clusters));
                (rno, freed)
            };
            install_size(&hc, uuid, clusters, copy_map)?;
            let mut hm = hc.borrow_mut();
            if let Some(sh) = hm.lvs.lvol_shared(&uuid) {
                super::alloc::quarantine(&mut hm, &sh, freed, rno);
            }
            Ok(rno)
        })();
        thaw(&hc, &[uuid]);
        match r {
            Ok(rno) => {
                let h2 = hc.clone();
                hc.borrow_mut()
                    .when_durable(rno, Box::new(move |r| finish(&h2, uuid, r, reply)));
                kick(&hc);
            }
            Err(e) => finish(&hc, uuid, Err(e), reply),
        }
    });
    freeze(h, &[uuid], frozen);
}
