//! Volume and pool operations, run on the home reactor: each appends its records and answers
//! once they are durable.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use shoal_bdev::{Bdev, BdevIo, IoBuf, IoFlags, SgList};
use uuid::Uuid;

use super::freeze::{freeze, thaw};
use super::home::{Home, kick, submit, sync, uninstall};
use super::{Lvs, lock};
use crate::LvolError;
use crate::format::record::{ClearMethod, FLAG_READ_ONLY, FLAG_THIN, LvolHeader, Record};
use crate::format::{MAX_LVOLS, PAGE, check_name};
use crate::state::LvolBdev;

/// What `bdev_lvol_create` asks for.
#[derive(Debug, Clone)]
pub struct LvolOptions {
    /// Name in the pool.
    pub name: String,
    /// Size in bytes (rounded up to whole clusters).
    pub size_bytes: u64,
    /// Thin provisioned.
    pub thin: bool,
    /// How clusters are cleared.
    pub clear: ClearMethod,
}

/// The first run of `n` consecutive free clusters, else the lowest `n` free ones.
pub(super) fn pick_clusters(free: &std::collections::BTreeSet<u64>, n: u64) -> Vec<u64> {
    let mut run: Vec<u64> = Vec::new();
    for &c in free {
        if run.last().is_some_and(|&l| l + 1 != c) {
            run.clear();
        }
        run.push(c);
        if run.len() as u64 == n {
            return run;
        }
    }
    free.iter()
        .copied()
        .take(usize::try_from(n).unwrap_or(0))
        .collect()
}

/// Consecutive runs of sorted clusters, as (first, count).
pub(super) fn runs(clusters: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &c in clusters {
        match out.last_mut() {
            Some((f, n)) if *f + *n == c => *n += 1,
            _ => out.push((c, 1)),
        }
    }
    out
}

impl Lvs {
    /// Creates a volume.
    ///
    /// # Errors
    /// A bad or taken name, a zero size, too many volumes, not enough free clusters for a
    /// thick volume, metadata I/O errors.
    pub fn create_lvol(self: &Arc<Self>, o: LvolOptions) -> Result<Arc<LvolBdev>, LvolError> {
        check_name("volume", &o.name).map_err(LvolError::Invalid)?;
        if o.size_bytes == 0 {
            return Err(LvolError::Invalid("a volume's size must not be 0".into()));
        }
        let clusters = o.size_bytes.div_ceil(self.sb.cluster_size);
        if clusters.checked_mul(self.sb.cluster_size).is_none() {
            return Err(LvolError::Invalid("size too large".into()));
        }
        let lvs = self.clone();
        self.on_home(move |h, reply| create_on_home(h, lvs, o, clusters, reply))
    }

    /// Deletes a volume (its bdev must be closed or unused: the caller checks claims).
    ///
    /// # Errors
    /// No such volume, a volume with clones, metadata I/O errors.
    pub fn delete_lvol(&self, uuid: Uuid) -> Result<(), LvolError> {
        self.on_home(move |h, reply| {
            let mut hm = h.borrow_mut();
            let Some(meta) = hm.table.lvols.get(&uuid) else {
                return reply(Err(LvolError::NotFound(format!("volume {uuid}"))));
            };
            if hm.busy.contains(&uuid) {
                return reply(Err(LvolError::Busy(format!(
                    "volume {}: a snapshot, inflate, decouple or resize is in progress on it",
                    meta.header.name
                ))));
            }
            // SPDK's rule: a snapshot with one clone is deleted into it; with more, refused.
            let kids: Vec<(Uuid, String)> = hm
                .table
                .children(&uuid)
                .iter()
                .map(|m| (m.header.uuid, m.header.name.clone()))
                .collect();
            match kids.as_slice() {
                [] => {}
                [(clone, _)] => {
                    let clone = *clone;
                    drop(hm);
                    return super::snap::merge_on_home(h, uuid, clone, reply);
                }
                more => {
                    let names: Vec<&str> = more.iter().map(|k| k.1.as_str()).collect();
                    return reply(Err(LvolError::Busy(format!(
                        "cannot delete snapshot {}: it has more than one clone ({})",
                        meta.header.name,
                        names.join(", ")
                    ))));
                }
            }
            let phys: Vec<u64> = meta.map.values().copied().collect();
            let bdev = lock(&hm.lvs.lvols).remove(&uuid);
            let rno = hm.append(Record::DeleteLvol(uuid));
            if let Some(b) = bdev {
                b.info().close();
                b.shared.unmap_all();
                super::alloc::quarantine(&mut hm, &b.shared, phys, rno);
            }
            hm.when_durable(rno, reply);
            drop(hm);
            kick(h);
        })
    }

    /// Renames a volume.
    ///
    /// # Errors
    /// No such volume, a bad or taken name.
    pub fn rename_lvol(&self, uuid: Uuid, new: &str) -> Result<(), LvolError> {
        check_name("volume", new).map_err(LvolError::Invalid)?;
        let new = new.to_string();
        self.on_home(move |h, reply| {
            let mut hm = h.borrow_mut();
            if !hm.table.lvols.contains_key(&uuid) {
                return reply(Err(LvolError::NotFound(format!("volume {uuid}"))));
            }
            let same = hm
                .table
                .by_name(&new)
                .is_some_and(|m| m.header.uuid == uuid);
            if hm.name_taken(&new) && !same {
                let lvs = hm.lvs.name();
                return reply(Err(LvolError::Exists(format!(
                    "volume {lvs}/{new} already exists"
                ))));
            }
            let rno = hm.append(Record::RenameLvol(uuid, new.clone()));
            if let Some(b) = lock(&hm.lvs.lvols).get(&uuid) {
                *lock(&b.name) = new;
            }
            hm.when_durable(rno, reply);
            drop(hm);
            kick(h);
        })
    }

    /// Makes a volume read-only.
    ///
    /// # Errors
    /// No such volume; another operation in progress on it ([`LvolError::Busy`]: a resize,
    /// which checked that the volume was writable when it began, or a snapshot, merge,
    /// inflate or decouple).
    pub fn set_read_only(&self, uuid: Uuid) -> Result<(), LvolError> {
        self.on_home(move |h, reply| {
            let was = {
                let hm = h.borrow();
                if !hm.table.lvols.contains_key(&uuid) {
                    return reply(Err(LvolError::NotFound(format!("volume {uuid}"))));
                }
                if let Err(e) = super::snap::busy(&hm, &uuid) {
                    return reply(Err(e));
                }
                let b = lock(&hm.lvs.lvols).get(&uuid).cloned();
                b.map(|b| b.shared.read_only.swap(true, Ordering::AcqRel))
            };
            h.borrow_mut().busy.insert(uuid);
            // A write that passed the channel's read-only check before the flag was set may
            // still be out: wait for it (freeze), so that the volume never changes once this
            // answers (a clone made next shares its clusters). Writes held by the freeze see
            // the flag when they go on, and are refused.
            let hc = h.clone();
            let frozen: super::home::Done = Box::new(move |r| {
                let out = {
                    let mut hm = hc.borrow_mut();
                    hm.busy.remove(&uuid);
                    let flags = hm.table.lvols.get(&uuid).map(|m| m.header.flags);
                    match (r, flags) {
                        (Ok(()), Some(flags)) => {
                            Ok(hm.append(Record::SetFlags(uuid, flags | FLAG_READ_ONLY)))
                        }
                        (Err(e), _) => Err(e),
                        (Ok(()), None) => Err(LvolError::NotFound(format!("volume {uuid}"))),
                    }
                };
                thaw(&hc, &[uuid]);
                match out {
                    Ok(rno) => {
                        hc.borrow_mut().when_durable(rno, reply);
                        kick(&hc);
                    }
                    Err(e) => {
                        if was == Some(false)
                            && let Some(b) = lock(&hc.borrow().lvs.lvols).get(&uuid)
                        {
                            b.shared.read_only.store(false, Ordering::Release);
                        }
                        reply(Err(e));
                    }
                }
            });
            freeze(h, &[uuid], frozen);
        })
    }

    /// Renames the pool.
    ///
    /// # Errors
    /// A bad name.
    pub fn rename(&self, new: &str) -> Result<(), LvolError> {
        check_name("pool", new).map_err(LvolError::Invalid)?;
        let new = new.to_string();
        self.on_home(move |h, reply| {
            let mut hm = h.borrow_mut();
            let rno = hm.append(Record::RenameLvs(new.clone()));
            *lock(&hm.lvs.name) = new;
            hm.when_durable(rno, reply);
            drop(hm);
            kick(h);
        })
    }

    /// Makes every change so far durable.
    ///
    /// # Errors
    /// A failed journal.
    pub fn sync(&self) -> Result<(), LvolError> {
        self.on_home(sync)
    }

    /// Closes the pool (its base goes away, or the daemon stops): the journal is made durable,
    /// the volumes' bdevs are closed. The metadata stays.
    ///
    /// # Errors
    /// A failed journal (the pool is closed anyway).
    pub fn close(&self) -> Result<(), LvolError> {
        let id = self.id;
        let r = self.on_home(move |h, reply| {
            sync(
                h,
                Box::new(move |r| {
                    uninstall(id);
                    reply(r);
                }),
            );
        });
        self.mark_closed();
        r
    }

    fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
        for l in std::mem::take(&mut *lock(&self.lvols)).into_values() {
            l.info().close();
        }
    }

    /// Destroys the pool (`bdev_lvol_delete_lvstore`): both superblocks are zeroed durably,
    /// so the device holds no pool any more; every volume goes with it.
    ///
    /// # Errors
    /// Metadata I/O errors (the pool then stays).
    pub fn destroy(&self) -> Result<(), LvolError> {
        let id = self.id;
        let r = self.on_home(move |h, reply| {
            let hc = h.clone();
            sync(
                h,
                Box::new(move |r| {
                    if let Err(e) = r {
                        return reply(Err(e));
                    }
                    let hm = hc.borrow();
                    let bs = u64::from(hm.lvs.sb.block_size);
                    let io = BdevIo::write(
                        0,
                        2 * PAGE as u64 / bs,
                        SgList::from_buf([IoBuf::zeroed(2 * PAGE)]),
                    )
                    .with_flags(IoFlags::FUA);
                    submit(&hm.chan, io, move |_io, r| match r {
                        Ok(()) => {
                            uninstall(id);
                            reply(Ok(()));
                        }
                        Err(e) => reply(Err(LvolError::Io {
                            context: "zeroing the superblocks".into(),
                            source: e,
                        })),
                    });
                }),
            );
        });
        if r.is_ok() {
            self.mark_closed();
        }
        r
    }
}

fn create_on_home(
    h: &Rc<RefCell<Home>>,
    lvs: Arc<Lvs>,
    o: LvolOptions,
    clusters: u64,
    reply: Box<dyn FnOnce(Result<Arc<LvolBdev>, LvolError>)>,
) {
    let mut hm = h.borrow_mut();
    if let Some(why) = &hm.j.failed {
        return reply(Err(LvolError::Unavailable(why.clone())));
    }
    if hm.name_taken(&o.name) {
        let n = hm.lvs.name();
        return reply(Err(LvolError::Exists(format!(
            "volume {n}/{} already exists",
            o.name
        ))));
    }
    if hm.volume_count() >= MAX_LVOLS {
        return reply(Err(LvolError::NoSpace(format!(
            "pool {} holds {MAX_LVOLS} volumes, its most",
            hm.lvs.name()
        ))));
    }
    if usize::try_from(clusters).is_err() {
        return reply(Err(LvolError::Invalid("size too large".into())));
    }
    if let Err(e) = hm.check_clusters(clusters, &format!("a volume of {clusters} clusters")) {
        return reply(Err(e));
    }
    let header = LvolHeader {
        uuid: Uuid::new_v4(),
        name: o.name.clone(),
        num_clusters: clusters,
        flags: if o.thin { FLAG_THIN } else { 0 },
        clear: o.clear,
        parent: None,
    };
    if o.thin {
        let rno = hm.append(Record::CreateLvol(header.clone()));
        let hc = h.clone();
        hm.when_durable(
            rno,
            Box::new(move |r| {
                reply(r.map(|()| publish(&hc, &lvs, &header)));
            }),
        );
        drop(hm);
        return kick(h);
    }
    if (hm.free.len() as u64) < clusters {
        let free = hm.free.len();
        return reply(Err(LvolError::NoSpace(format!(
            "a thick volume of {clusters} clusters does not fit: pool {} has {free} free",
            hm.lvs.name()
        ))));
    }
    let mut taken = pick_clusters(&hm.free, clusters);
    taken.sort_unstable();
    for c in &taken {
        hm.free.remove(c);
    }
    hm.free_count_changed();
    // Its name and size count from now on, not from its record (module `home`, `Pending`).
    hm.pending.clusters += clusters;
    hm.pending.names.insert(header.name.clone());
    let sb = hm.lvs.sb;
    let bs = u64::from(sb.block_size);
    let cb = sb.cluster_size / bs;
    let chan = hm.chan.clone();
    drop(hm);
    let rs = runs(&taken);
    let hc = h.clone();
    let after_clear = move |r: Result<(), LvolError>| {
        let mut hm = hc.borrow_mut();
        hm.pending.clusters -= clusters;
        hm.pending.names.remove(&header.name);
        if let Err(e) = r {
            hm.free.extend(taken.iter().copied());
            hm.free_count_changed();
            return reply(Err(e));
        }
        let mut rno = hm.append(Record::CreateLvol(header.clone()));
        for (i, &p) in taken.iter().enumerate() {
            rno = hm.append(Record::Map {
                lvol: header.uuid,
                index: i as u64,
                phys: p,
            });
        }
        let h2 = hc.clone();
        hm.when_durable(
            rno,
            Box::new(move |r| reply(r.map(|()| publish(&h2, &lvs, &header)))),
        );
        drop(hm);
        kick(&hc);
    };
    if o.clear == ClearMethod::None {
        return after_clear(Ok(()));
    }
    // Zero the clusters (Shoal zeroes for `unmap` too: a deallocated block need not read
    // zeroes on every device, and a new volume must not show another's old data).
    clear_runs(chan, cb, sb.data_offset / bs, rs, Box::new(after_clear));
}

pub(super) fn clear_runs(
    chan: Rc<shoal_bdev::IoChannel>,
    cb: u64,
    data_block: u64,
    runs: Vec<(u64, u64)>,
    done: Box<dyn FnOnce(Result<(), LvolError>)>,
) {
    let Some((&(first, n), rest)) = runs.split_first() else {
        return done(Ok(()));
    };
    let rest = rest.to_vec();
    let io = BdevIo::write_zeroes(data_block + first * cb, n * cb).with_flags(IoFlags::FUA);
    let c2 = chan.clone();
    submit(&chan, io, move |_io, r| match r {
        Ok(()) => clear_runs(c2, cb, data_block, rest, done),
        Err(e) => done(Err(LvolError::Io {
            context: "zeroing a new volume's clusters".into(),
            source: e,
        })),
    });
}

/// Builds and registers a new volume's bdev from the table.
fn publish(h: &Rc<RefCell<Home>>, lvs: &Arc<Lvs>, header: &LvolHeader) -> Arc<LvolBdev> {
    let hm = h.borrow();
    let map = hm
        .table
        .lvols
        .get(&header.uuid)
        .map(|m| m.map.clone())
        .unwrap_or_default();
    let parent = header.parent.and_then(|p| lvs.lvol_shared(&p));
    let b = lvs.build_lvol(header, parent, &map);
    lock(&lvs.lvols).insert(header.uuid, b.clone());
    b
}
