//! Cluster allocation and freeing on the home reactor.
//!
//! **Allocation** of cluster `index` of a volume, for a write: take the lowest free data
//! cluster; write it whole, durably (Force Unit Access), with zeroes or, for a clone, the data
//! its nearest ancestor holds there, or with the write's own data when that write covers the
//! cluster whole ([`alloc_write`]); only then append the `Map` record; once the record is
//! durable, publish the mapping in the volume's map and answer every write waiting for it.
//! A crash before the record is durable leaves the cluster free and its contents unreferenced;
//! after it, the cluster holds zeroes (or the parent's data) and whatever was written since.
//!
//! **Freeing** (write zeroes or deallocate over a whole cluster of a thin volume, a deleted
//! volume, a shrink): the mapping leaves the volume's map at once and an `Unmap` record is
//! appended; the cluster goes into quarantine and back to the free set only when that record
//! is durable (a crash cannot give it back to its old volume after another took it) and every
//! I/O that might have read the old mapping has completed. The state both keep on the home
//! (writes waiting for an allocation, the quarantine) and the quarantine's release, which
//! runs after each journal write, are [`super::home`]'s: this module uses it, not the reverse.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use shoal_bdev::{BdevError, BdevIo, IoBuf, IoFlags, IoType, SgList};
use uuid::Uuid;

use super::home::{Allocating, Done, Home, Quarantined, kick, submit};
use crate::LvolError;
use crate::format::record::Record;
use crate::state::{LvolShared, UNMAPPED};

/// What a freeing request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeKind {
    /// Deallocate or write zeroes over whole clusters of a thin volume without a parent.
    Unmap,
    /// The same on a clone: the clusters are unmapped; those the clone does not own must
    /// still read zeroes, not the parent's data, so they are allocated zeroed.
    CloneZero,
}

pub(crate) fn to_bdev(e: LvolError) -> BdevError {
    match e {
        LvolError::NoSpace(m) => BdevError::NoSpace(m),
        LvolError::Io { source, .. } => source,
        LvolError::NotFound(_) => BdevError::Closed,
        other => BdevError::Os(std::io::Error::other(other.to_string())),
    }
}

/// Answers left, the caller's callback, and the first error.
type Gather = Rc<RefCell<(usize, Option<Done>, Result<(), LvolError>)>>;

/// Allocates clusters `idx` of volume `lvol` (those not yet allocated); `done` once all are.
pub(crate) fn alloc(h: &Rc<RefCell<Home>>, lvol: Uuid, idx: Vec<u64>, done: Done) {
    let gather: Gather = Rc::new(RefCell::new((idx.len(), Some(done), Ok(()))));
    let one = |g: &Gather| {
        let g = g.clone();
        Box::new(move |r: Result<(), LvolError>| {
            let fire = {
                let mut s = g.borrow_mut();
                if let Err(e) = r
                    && s.2.is_ok()
                {
                    s.2 = Err(e);
                }
                s.0 -= 1;
                if s.0 == 0 {
                    let r = std::mem::replace(&mut s.2, Ok(()));
                    s.1.take().map(|f| (f, r))
                } else {
                    None
                }
            };
            if let Some((f, r)) = fire {
                f(r);
            }
        }) as Done
    };
    if idx.is_empty() {
        let f = gather.borrow_mut().1.take();
        if let Some(f) = f {
            h.borrow().reactor.defer(move || f(Ok(())));
        }
        return;
    }
    for i in idx {
        alloc_one(h, lvol, i, one(&gather));
    }
}

fn alloc_one(h: &Rc<RefCell<Home>>, lvol: Uuid, index: u64, done: Done) {
    let mut hm = h.borrow_mut();
    let reactor = hm.reactor.clone();
    if let Some(why) = hm.j.failed.clone() {
        reactor.defer(move || done(Err(LvolError::Unavailable(why))));
        return;
    }
    let Some(meta) = hm.table.lvols.get(&lvol) else {
        let e = LvolError::NotFound(format!("volume {lvol} was deleted"));
        reactor.defer(move || done(Err(e)));
        return;
    };
    if index >= meta.header.num_clusters {
        let e = LvolError::Invalid(format!("cluster {index} is past the volume's end"));
        reactor.defer(move || done(Err(e)));
        return;
    }
    if meta.map.contains_key(&index) {
        // Allocated, perhaps not yet durable: wait for the journal.
        let rno = hm.j.next_rno;
        hm.when_durable(rno, done);
        drop(hm);
        kick(h);
        return;
    }
    if let Some(a) = hm.allocating.get_mut(&(lvol, index)) {
        a.waiters.push(done);
        return;
    }
    let phys = match take_free(&mut hm, lvol) {
        Ok(p) => p,
        Err(e) => return reactor.defer(move || done(Err(e))),
    };
    hm.allocating.insert(
        (lvol, index),
        Allocating {
            waiters: vec![done],
        },
    );
    let src = hm.lvs.lvol_shared(&lvol).and_then(|s| ancestor(&s, index));
    let sb = hm.lvs.sb;
    let bs = u64::from(sb.block_size);
    let cb = sb.cluster_size / bs;
    let dst = sb.data_offset / bs + phys * cb;
    let chan = hm.chan.clone();
    drop(hm);
    let hc = h.clone();
    let filled = move |r: Result<(), BdevError>| fill_done(&hc, lvol, index, phys, r);
    match src {
        None => {
            let io = if chan
                .bdev()
                .supports_flags(IoType::WriteZeroes, IoFlags::FUA)
            {
                BdevIo::write_zeroes(dst, cb).with_flags(IoFlags::FUA)
            } else {
                let len = usize::try_from(sb.cluster_size).unwrap_or(0);
                BdevIo::write(dst, cb, SgList::from_buf([IoBuf::zeroed(len)]))
                    .with_flags(IoFlags::FUA)
            };
            submit(&chan, io, move |_io, r| filled(r));
        }
        Some(from) => {
            // Copy-on-write: the parent's cluster, whole, then durably to the new one.
            let len = usize::try_from(sb.cluster_size).unwrap_or(0);
            let src_blk = sb.data_offset / bs + from * cb;
            let read = BdevIo::read(src_blk, cb, SgList::from_buf([IoBuf::zeroed(len)]));
            let c2 = chan.clone();
            submit(&chan, read, move |io, r| match r {
                Err(e) => filled(Err(e)),
                Ok(()) => {
                    let w = BdevIo::write(dst, cb, io.bufs).with_flags(IoFlags::FUA);
                    submit(&c2, w, move |_io, r| filled(r));
                }
            });
        }
    }
}

/// The answer to a write that fills a new cluster whole ([`alloc_write`]), with its I/O back:
/// `Ok(true)` written and mapped durably; `Ok(false)` not attempted, because the cluster is
/// mapped or being allocated already (the write then goes the common way: [`alloc`]).
pub(crate) type WriteDone = Box<dyn FnOnce(BdevIo, Result<bool, LvolError>)>;

/// Allocates cluster `index` of volume `lvol` for `io`, a write of exactly that cluster, with
/// the write itself as the fill: its data is written to the new cluster with Force Unit
/// Access instead of zeroes (or the parent's data: none of it would show), then the `Map`
/// record is appended as for any allocation, and `done` gets the I/O back once that record
/// is durable. A crash before that leaves the cluster free, holding data no volume refers to
/// (the next allocation of it fills it again unless its write covers it whole); after it,
/// the cluster holds exactly the write. One device write saved per new cluster.
pub(crate) fn alloc_write(
    h: &Rc<RefCell<Home>>,
    lvol: Uuid,
    index: u64,
    mut io: BdevIo,
    done: WriteDone,
) {
    let mut hm = h.borrow_mut();
    let reactor = hm.reactor.clone();
    if let Some(why) = hm.j.failed.clone() {
        reactor.defer(move || done(io, Err(LvolError::Unavailable(why))));
        return;
    }
    let Some(meta) = hm.table.lvols.get(&lvol) else {
        let e = LvolError::NotFound(format!("volume {lvol} was deleted"));
        reactor.defer(move || done(io, Err(e)));
        return;
    };
    let sb = hm.lvs.sb;
    let bs = u64::from(sb.block_size);
    let cb = sb.cluster_size / bs;
    if index >= meta.header.num_clusters
        || io.io_type != IoType::Write
        || io.num_blocks != cb
        || meta.map.contains_key(&index)
        || hm.allocating.contains_key(&(lvol, index))
    {
        // Not a whole-cluster write of a cluster without one (any more): the common way
        // checks and waits as it should.
        reactor.defer(move || done(io, Ok(false)));
        return;
    }
    let phys = match take_free(&mut hm, lvol) {
        Ok(p) => p,
        Err(e) => return reactor.defer(move || done(io, Err(e))),
    };
    hm.allocating.insert(
        (lvol, index),
        Allocating {
            waiters: Vec::new(),
        },
    );
    let chan = hm.chan.clone();
    drop(hm);
    let (user_offset, user_flags) = (io.offset_blocks, io.flags);
    io.offset_blocks = sb.data_offset / bs + phys * cb;
    io.flags = io.flags | IoFlags::FUA;
    let hc = h.clone();
    submit(&chan, io, move |mut io, r| {
        io.offset_blocks = user_offset;
        io.flags = user_flags;
        // The write's own device error goes back to it as it was (its NVMe status); the
        // writes waiting for the cluster hear a copy.
        let (r, own) = match r {
            Ok(()) => (Ok(()), None),
            Err(e) => (Err(clone_err(&e)), Some(e)),
        };
        // This write hears first, then the writes that came for the cluster meanwhile.
        let mine: Done = Box::new(move |res| {
            let res = match (res, own) {
                (Ok(()), _) => Ok(true),
                (Err(_), Some(source)) => Err(LvolError::Io {
                    context: format!("writing new cluster {phys}"),
                    source,
                }),
                (Err(e), None) => Err(e),
            };
            done(io, res);
        });
        let orphan = match hc.borrow_mut().allocating.get_mut(&(lvol, index)) {
            Some(a) => {
                a.waiters.insert(0, mine);
                None
            }
            None => Some(mine),
        };
        if let Some(mine) = orphan {
            // Only `fill_done` removes the entry: not reached.
            mine(Err(LvolError::Unavailable(
                "the cluster's allocation was lost".into(),
            )));
            return;
        }
        fill_done(&hc, lvol, index, phys, r);
    });
}

/// Takes the lowest free data cluster for a write of volume `lvol`, or says the pool is full.
fn take_free(hm: &mut Home, lvol: Uuid) -> Result<u64, LvolError> {
    let Some(phys) = hm.free.pop_first() else {
        let name = hm.lvs.name();
        let total = hm.lvs.sb.total_clusters;
        tracing::warn!(lvs = %name, lvol = %lvol, "pool full: a write needs a new cluster");
        return Err(LvolError::NoSpace(format!(
            "pool {name} has no free cluster left (all {total} are allocated)"
        )));
    };
    hm.free_count_changed();
    Ok(phys)
}

/// The data cluster holding `index` in the nearest ancestor of a volume, if any.
fn ancestor(sh: &Arc<LvolShared>, index: u64) -> Option<u64> {
    sh.ancestor_phys(index)
}

fn fill_done(h: &Rc<RefCell<Home>>, lvol: Uuid, index: u64, phys: u64, r: Result<(), BdevError>) {
    let mut hm = h.borrow_mut();
    let gone = !hm.table.lvols.contains_key(&lvol);
    if r.is_err() || gone {
        hm.free.insert(phys);
        hm.free_count_changed();
        let waiters = hm
            .allocating
            .remove(&(lvol, index))
            .map(|a| a.waiters)
            .unwrap_or_default();
        drop(hm);
        for w in waiters {
            let e = match &r {
                Err(e) => LvolError::Io {
                    context: format!("filling cluster {phys}"),
                    source: clone_err(e),
                },
                Ok(()) => LvolError::NotFound(format!("volume {lvol} was deleted")),
            };
            w(Err(e));
        }
        return;
    }
    let rno = hm.append(Record::Map { lvol, index, phys });
    let hc = h.clone();
    hm.when_durable(
        rno,
        Box::new(move |r| {
            let waiters = {
                let mut hm = hc.borrow_mut();
                // A free of this cluster may have come while the record was on its way (the
                // cluster is then in quarantine, bound for another volume): publish only
                // what the table still maps. The waiters retry and see the cluster missing.
                let still = hm
                    .table
                    .lvols
                    .get(&lvol)
                    .is_some_and(|m| m.map.get(&index) == Some(&phys));
                if r.is_ok()
                    && still
                    && let Some(sh) = hm.lvs.lvol_shared(&lvol)
                {
                    sh.set_phys(index, phys);
                }
                hm.allocating
                    .remove(&(lvol, index))
                    .map(|a| a.waiters)
                    .unwrap_or_default()
            };
            for w in waiters {
                w(r.as_ref().map(|_| ()).map_err(clone_lvol_err));
            }
        }),
    );
    drop(hm);
    kick(h);
}

fn clone_err(e: &BdevError) -> BdevError {
    match e {
        BdevError::NoSpace(m) => BdevError::NoSpace(m.clone()),
        BdevError::Closed => BdevError::Closed,
        other => BdevError::Os(std::io::Error::other(other.to_string())),
    }
}

fn clone_lvol_err(e: &LvolError) -> LvolError {
    match e {
        LvolError::NoSpace(m) => LvolError::NoSpace(m.clone()),
        LvolError::NotFound(m) => LvolError::NotFound(m.clone()),
        other => LvolError::Unavailable(other.to_string()),
    }
}

/// Unmaps clusters `idx` of `lvol` (whole-cluster deallocate or write zeroes on a thin
/// volume); `done` once the records are durable.
pub(crate) fn free(h: &Rc<RefCell<Home>>, lvol: Uuid, idx: Vec<u64>, kind: FreeKind, done: Done) {
    let mut hm = h.borrow_mut();
    let Some(sh) = hm.lvs.lvol_shared(&lvol) else {
        let e = LvolError::NotFound(format!("volume {lvol} was deleted"));
        hm.reactor.defer(move || done(Err(e)));
        return;
    };
    let mut freed = Vec::new();
    let mut rno = hm.j.next_rno;
    let mut unowned = Vec::new();
    for i in idx {
        let phys = hm
            .table
            .lvols
            .get(&lvol)
            .and_then(|m| m.map.get(&i).copied());
        match phys {
            // A clone's own cluster over an ancestor's data: unmapped, it would show that
            // data; it is zeroed in place instead.
            Some(_) if kind == FreeKind::CloneZero && ancestor(&sh, i).is_some() => {
                unowned.push(i);
            }
            Some(p) => {
                sh.set_phys(i, UNMAPPED);
                rno = hm.append(Record::Unmap { lvol, index: i });
                freed.push(p);
            }
            None if kind == FreeKind::CloneZero && ancestor(&sh, i).is_some() => unowned.push(i),
            None => {}
        }
    }
    quarantine(&mut hm, &sh, freed, rno);
    drop(hm);
    if unowned.is_empty() {
        h.borrow_mut().when_durable(rno, done);
        kick(h);
        return;
    }
    // A clone's cluster that only its parent holds: it must read zeroes now. Allocate it
    // (a copy of the parent), then zero it on the base.
    let hc = h.clone();
    alloc(
        h,
        lvol,
        unowned.clone(),
        Box::new(move |r| {
            if let Err(e) = r {
                return done(Err(e));
            }
            let hm = hc.borrow();
            let sb = hm.lvs.sb;
            let bs = u64::from(sb.block_size);
            let cb = sb.cluster_size / bs;
            let mut left = unowned.len();
            let shared = Rc::new(RefCell::new((left, Some(done))));
            for i in unowned {
                let Some(p) = hm
                    .table
                    .lvols
                    .get(&lvol)
                    .and_then(|m| m.map.get(&i).copied())
                else {
                    left -= 1;
                    continue;
                };
                let io =
                    BdevIo::write_zeroes(sb.data_offset / bs + p * cb, cb).with_flags(IoFlags::FUA);
                let s = shared.clone();
                submit(&hm.chan, io, move |_io, r| {
                    let f = {
                        let mut st = s.borrow_mut();
                        st.0 -= 1;
                        if r.is_err() || st.0 == 0 {
                            st.1.take()
                        } else {
                            None
                        }
                    };
                    if let Some(f) = f {
                        f(r.map_err(|e| LvolError::Io {
                            context: "zeroing a clone's cluster".into(),
                            source: e,
                        }));
                    }
                });
            }
            let _ = left;
        }),
    );
}

/// Puts freed clusters in quarantine until record `rno` is durable and every channel of the
/// volume has finished the I/Os it had started.
pub(crate) fn quarantine(hm: &mut Home, sh: &LvolShared, clusters: Vec<u64>, rno: u64) {
    if clusters.is_empty() {
        return;
    }
    // The map entries were cleared: after this barrier, any I/O that has not counted itself
    // started yet will see them cleared.
    if !shoal_reactor::process_barrier() {
        std::sync::atomic::fence(Ordering::SeqCst);
    }
    hm.quarantine.push(Quarantined {
        clusters,
        rno,
        quiesce: sh.quiesce_point(),
    });
}
