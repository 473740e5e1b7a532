//! Snapshots, clones, the deletion of a snapshot into its only clone, inflating and
//! decoupling, as SPDK's blobstore does them (ARCHITECTURE.md, "Snapshots and clones").
//!
//! - **Snapshot** of a writable volume: its I/O is frozen ([`super::freeze`]), one
//!   `Snapshot` record moves its clusters to the new read-only snapshot and makes the volume a
//!   thin clone of it, then its I/O goes on. Every write is wholly before (in the snapshot) or
//!   wholly after (in a cluster of the volume's own, filled from the snapshot first).
//! - **Clone** of a read-only volume (a snapshot, or one made read-only): one `CreateLvol`
//!   record of a thin volume whose parent it is.
//! - **Deleting a snapshot** with one clone: the clone's I/O is frozen and one
//!   `MergeSnapshot` record gives the clone every cluster of the snapshot that it does not
//!   own and the snapshot's parent; the clone's I/O goes on only once that record is durable
//!   (a crash before brings the snapshot back owning those clusters, and a write to one of
//!   them must not have changed it). With more than one clone it is refused (SPDK: `-EBUSY`).
//! - **Inflate** allocates every cluster the volume does not own (a copy of its nearest
//!   ancestor's, or zeroes), then drops the parent and the thin flag; **decouple** allocates
//!   those its parent owns and takes its parent's parent. The clusters are allocated as writes
//!   allocate them (each durable before its mapping); the parent changes only once the volume
//!   owns them all, with its I/O frozen.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use uuid::Uuid;

use super::freeze::{freeze, thaw};
use super::home::{Done, Home, kick};
use super::{Lvs, lock};
use crate::LvolError;
use crate::format::record::{FLAG_READ_ONLY, FLAG_SNAPSHOT, FLAG_THIN, LvolHeader, Record};
use crate::format::{MAX_LVOLS, check_name};
use crate::state::LvolBdev;
use shoal_bdev::Bdev;

/// Clusters allocated at a time by inflate and decouple.
const BATCH: usize = 8;

type Reply<T> = Box<dyn FnOnce(Result<T, LvolError>)>;

impl Lvs {
    /// Takes a snapshot named `name` of volume `origin` (`bdev_lvol_snapshot`).
    ///
    /// # Errors
    /// A bad or taken name, a read-only origin, an operation in progress on it, metadata
    /// I/O errors.
    pub fn snapshot(
        self: &Arc<Self>,
        origin: Uuid,
        name: &str,
    ) -> Result<Arc<LvolBdev>, LvolError> {
        check_name("snapshot", name).map_err(LvolError::Invalid)?;
        let name = name.to_string();
        let lvs = self.clone();
        self.on_home(move |h, reply| snapshot_on_home(h, lvs, origin, name, reply))
    }

    /// Makes a clone named `name` of the read-only volume `parent` (`bdev_lvol_clone`).
    ///
    /// # Errors
    /// A bad or taken name, a parent that is not read-only, metadata I/O errors.
    pub fn clone_lvol(
        self: &Arc<Self>,
        parent: Uuid,
        name: &str,
    ) -> Result<Arc<LvolBdev>, LvolError> {
        check_name("clone", name).map_err(LvolError::Invalid)?;
        let name = name.to_string();
        let lvs = self.clone();
        self.on_home(move |h, reply| clone_on_home(h, &lvs, parent, &name, reply))
    }

    /// Allocates every cluster of the volume and drops its parent (`bdev_lvol_inflate`).
    ///
    /// # Errors
    /// No such volume, a read-only one, too few free clusters, I/O errors.
    pub fn inflate(&self, uuid: Uuid) -> Result<(), LvolError> {
        self.on_home(move |h, reply| detach_on_home(h, uuid, true, reply))
    }

    /// Allocates the clusters the volume's parent owns and takes its parent's parent
    /// (`bdev_lvol_decouple_parent`).
    ///
    /// # Errors
    /// No such volume, one without a parent or read-only, too few free clusters, I/O errors.
    pub fn decouple_parent(&self, uuid: Uuid) -> Result<(), LvolError> {
        self.on_home(move |h, reply| detach_on_home(h, uuid, false, reply))
    }

    /// The volumes whose parent is `uuid` (a snapshot's clones), by name.
    pub fn clones_of(&self, uuid: Uuid) -> Vec<String> {
        self.lvols()
            .into_iter()
            .filter(|l| l.parent_uuid() == Some(uuid))
            .map(|l| l.lvol_name())
            .collect()
    }
}

/// Whether a new volume named `name` may be made.
fn check_new(hm: &Home, name: &str) -> Result<(), LvolError> {
    if let Some(why) = &hm.j.failed {
        return Err(LvolError::Unavailable(why.clone()));
    }
    if hm.name_taken(name) {
        return Err(LvolError::Exists(format!(
            "volume {}/{name} already exists",
            hm.lvs.name()
        )));
    }
    if hm.volume_count() >= MAX_LVOLS {
        return Err(LvolError::NoSpace(format!(
            "pool {} holds {MAX_LVOLS} volumes, its most",
            hm.lvs.name()
        )));
    }
    Ok(())
}

pub(super) fn busy(hm: &Home, u: &Uuid) -> Result<(), LvolError> {
    if hm.busy.contains(u) {
        return Err(LvolError::Busy(format!(
            "volume {u}: a snapshot, merge, inflate, decouple or resize is in progress on it"
        )));
    }
    Ok(())
}

/// Bumps the chain generation of `u` and every volume that reads through it.
pub(super) fn chain_changed(hm: &Home, u: &Uuid) {
    for d in hm.table.descendants(u) {
        if let Some(sh) = hm.lvs.lvol_shared(&d) {
            sh.chain_gen.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Answers `reply` with `v` once record `rno` is durable.
fn reply_when_durable<T: 'static>(h: &Rc<RefCell<Home>>, rno: u64, v: T, reply: Reply<T>) {
    h.borrow_mut()
        .when_durable(rno, Box::new(move |r| reply(r.map(|()| v))));
    kick(h);
}

fn snapshot_on_home(
    h: &Rc<RefCell<Home>>,
    lvs: Arc<Lvs>,
    origin: Uuid,
    name: String,
    reply: Reply<Arc<LvolBdev>>,
) {
    let check = move |hm: &Home, name: &str| -> Result<(), LvolError> {
        check_new(hm, name)?;
        let m = hm
            .table
            .lvols
            .get(&origin)
            .ok_or_else(|| LvolError::NotFound(format!("volume {origin}")))?;
        if m.header.flags & (FLAG_READ_ONLY | FLAG_SNAPSHOT) != 0 {
            return Err(LvolError::Invalid(format!(
                "volume {} is read-only: a snapshot is taken of a writable volume",
                m.header.name
            )));
        }
        // The snapshot is a volume of the origin's size: it counts towards the pool's bound.
        hm.check_clusters(m.header.num_clusters, &format!("snapshot {name}"))
    };
    {
        let mut hm = h.borrow_mut();
        if let Err(e) = check(&hm, &name).and_then(|()| busy(&hm, &origin)) {
            return reply(Err(e));
        }
        hm.busy.insert(origin);
    }
    let hc = h.clone();
    let frozen: Done = Box::new(move |_| {
        let r = (|| {
            let mut hm = hc.borrow_mut();
            // Checked again: the name may have been taken meanwhile.
            check(&hm, &name)?;
            let osh = lvs
                .lvol_shared(&origin)
                .ok_or_else(|| LvolError::NotFound(format!("volume {origin}")))?;
            let om = hm
                .table
                .lvols
                .get(&origin)
                .ok_or_else(|| LvolError::NotFound(format!("volume {origin}")))?;
            let header = LvolHeader {
                uuid: Uuid::new_v4(),
                name: name.clone(),
                num_clusters: om.header.num_clusters,
                flags: FLAG_THIN | FLAG_READ_ONLY | FLAG_SNAPSHOT,
                clear: om.header.clear,
                parent: om.header.parent,
            };
            let rno = hm.append(Record::Snapshot {
                origin,
                snap: header.clone(),
            });
            let map = hm
                .table
                .lvols
                .get(&header.uuid)
                .map(|m| m.map.clone())
                .unwrap_or_default();
            let snap = lvs.build_lvol(&header, osh.parent(), &map);
            osh.unmap_all();
            *lock(&osh.parent) = Some(snap.shared.clone());
            osh.thin.store(true, Ordering::Release);
            chain_changed(&hm, &origin);
            lock(&lvs.lvols).insert(header.uuid, snap.clone());
            tracing::info!(lvs = %lvs.name(), origin = %origin, snapshot = %header.uuid,
                clusters = map.len(), "snapshot taken");
            Ok((rno, snap))
        })();
        thaw(&hc, &[origin]);
        hc.borrow_mut().busy.remove(&origin);
        match r {
            Ok((rno, snap)) => reply_when_durable(&hc, rno, snap, reply),
            Err(e) => reply(Err(e)),
        }
    });
    freeze(h, &[origin], frozen);
}

fn clone_on_home(
    h: &Rc<RefCell<Home>>,
    lvs: &Arc<Lvs>,
    parent: Uuid,
    name: &str,
    reply: Reply<Arc<LvolBdev>>,
) {
    let r = (|| {
        let mut hm = h.borrow_mut();
        check_new(&hm, name)?;
        busy(&hm, &parent)?;
        let pm = hm
            .table
            .lvols
            .get(&parent)
            .ok_or_else(|| LvolError::NotFound(format!("volume {parent}")))?;
        if pm.header.flags & FLAG_READ_ONLY == 0 {
            return Err(LvolError::Invalid(format!(
                "volume {} is not read-only: a clone is made of a snapshot or a read-only volume",
                pm.header.name
            )));
        }
        hm.check_clusters(pm.header.num_clusters, &format!("clone {name}"))?;
        let header = LvolHeader {
            uuid: Uuid::new_v4(),
            name: name.to_string(),
            num_clusters: pm.header.num_clusters,
            flags: FLAG_THIN,
            clear: pm.header.clear,
            parent: Some(parent),
        };
        let rno = hm.append(Record::CreateLvol(header.clone()));
        let b = lvs.build_lvol(&header, lvs.lvol_shared(&parent), &BTreeMap::new());
        lock(&lvs.lvols).insert(header.uuid, b.clone());
        Ok((rno, b))
    })();
    match r {
        Ok((rno, b)) => reply_when_durable(h, rno, b, reply),
        Err(e) => reply(Err(e)),
    }
}

/// Deletes snapshot `snap` into its only clone `clone` (called by `delete_lvol`).
pub(crate) fn merge_on_home(h: &Rc<RefCell<Home>>, snap: Uuid, clone: Uuid, reply: Reply<()>) {
    {
        let mut hm = h.borrow_mut();
        if let Err(e) = busy(&hm, &snap).and_then(|()| busy(&hm, &clone)) {
            return reply(Err(e));
        }
        hm.busy.insert(snap);
        hm.busy.insert(clone);
    }
    let hc = h.clone();
    let frozen: Done = Box::new(move |_| {
        let r = (|| {
            let mut hm = hc.borrow_mut();
            let kids: Vec<Uuid> = hm
                .table
                .children(&snap)
                .iter()
                .map(|m| m.header.uuid)
                .collect();
            if kids != [clone] {
                return Err(LvolError::Busy(format!(
                    "snapshot {snap}: its clones changed while it was being deleted"
                )));
            }
            let lvs = hm.lvs.clone();
            let (Some(ssh), Some(csh)) = (lvs.lvol_shared(&snap), lvs.lvol_shared(&clone)) else {
                return Err(LvolError::NotFound(format!("volume {snap} or {clone}")));
            };
            let (moved, freed) = hm.table.merge_plan(&snap, &clone);
            let rno = hm.append(Record::MergeSnapshot { snap, clone });
            for &(i, p) in &moved {
                csh.set_phys(i, p);
            }
            *lock(&csh.parent) = ssh.parent();
            chain_changed(&hm, &clone);
            if let Some(b) = lock(&lvs.lvols).remove(&snap) {
                b.info().close();
            }
            ssh.unmap_all();
            tracing::info!(lvs = %lvs.name(), snapshot = %snap, clone = %clone,
                moved = moved.len(), freed = freed.len(), "snapshot deleted into its clone");
            super::alloc::quarantine(&mut hm, &ssh, freed, rno);
            Ok(rno)
        })();
        let end = move |h: &Rc<RefCell<Home>>| {
            thaw(h, &[clone]);
            let mut hm = h.borrow_mut();
            hm.busy.remove(&snap);
            hm.busy.remove(&clone);
        };
        match r {
            // The clone's I/O stays held until the record is durable: before, a crash brings
            // the snapshot back owning the moved clusters, and a write to one of them would
            // have changed it.
            Ok(rno) => {
                let h2 = hc.clone();
                hc.borrow_mut().when_durable(
                    rno,
                    Box::new(move |r| {
                        end(&h2);
                        reply(r);
                    }),
                );
                kick(&hc);
            }
            Err(e) => {
                end(&hc);
                reply(Err(e));
            }
        }
    });
    freeze(h, &[clone], frozen);
}

/// The clusters that inflate (`all`) or decouple must still allocate.
fn needed(hm: &Home, u: &Uuid, all: bool) -> Vec<u64> {
    let Some(m) = hm.table.lvols.get(u) else {
        return Vec::new();
    };
    let parent = m.header.parent.and_then(|p| hm.table.lvols.get(&p));
    (0..m.header.num_clusters)
        .filter(|i| {
            !m.map.contains_key(i) && (all || parent.is_some_and(|p| p.map.contains_key(i)))
        })
        .collect()
}

fn detach_on_home(h: &Rc<RefCell<Home>>, u: Uuid, all: bool, reply: Reply<()>) {
    let r = (|| {
        let mut hm = h.borrow_mut();
        if let Some(why) = &hm.j.failed {
            return Err(LvolError::Unavailable(why.clone()));
        }
        let m = hm
            .table
            .lvols
            .get(&u)
            .ok_or_else(|| LvolError::NotFound(format!("volume {u}")))?;
        let what = if all { "inflate" } else { "decouple" };
        if m.header.flags & FLAG_READ_ONLY != 0 {
            return Err(LvolError::Invalid(format!(
                "volume {} is read-only: cannot {what} it",
                m.header.name
            )));
        }
        if !all && m.header.parent.is_none() {
            return Err(LvolError::Invalid(format!(
                "volume {} has no parent to decouple from",
                m.header.name
            )));
        }
        if all && m.header.flags & FLAG_THIN == 0 {
            return Ok(false); // a thick volume is wholly allocated already (SPDK: success)
        }
        busy(&hm, &u)?;
        let need = needed(&hm, &u, all).len();
        if need > hm.free.len() {
            return Err(LvolError::NoSpace(format!(
                "{what} {}: {need} clusters are needed, the pool has {} free",
                m.header.name,
                hm.free.len()
            )));
        }
        hm.busy.insert(u);
        // Rounds of allocation allowed: every batch, and a few more for clusters freed
        // again meanwhile (whole-cluster write zeroes on the volume).
        Ok(true)
    })();
    match r {
        Ok(true) => {
            let rounds = needed(&h.borrow(), &u, all).len() / BATCH + 16;
            detach_step(h.clone(), u, all, reply, rounds);
        }
        Ok(false) => reply(Ok(())),
        Err(e) => reply(Err(e)),
    }
}

fn detach_fail(h: &Rc<RefCell<Home>>, u: Uuid, e: LvolError, reply: Reply<()>) {
    h.borrow_mut().busy.remove(&u);
    reply(Err(e));
}

fn detach_step(h: Rc<RefCell<Home>>, u: Uuid, all: bool, reply: Reply<()>, rounds: usize) {
    if rounds == 0 {
        let e = LvolError::Busy(format!(
            "volume {u}: its clusters kept being freed while it was being detached"
        ));
        return detach_fail(&h, u, e, reply);
    }
    let need = needed(&h.borrow(), &u, all);
    if need.is_empty() {
        return detach_finish(h, u, all, reply, rounds);
    }
    let batch: Vec<u64> = need.into_iter().take(BATCH).collect();
    let hc = h.clone();
    super::alloc::alloc(
        &h,
        u,
        batch,
        Box::new(move |r| match r {
            Ok(()) => detach_step(hc, u, all, reply, rounds - 1),
            Err(e) => detach_fail(&hc, u, e, reply),
        }),
    );
}

fn detach_finish(h: Rc<RefCell<Home>>, u: Uuid, all: bool, reply: Reply<()>, rounds: usize) {
    let vols = h.borrow().table.descendants(&u);
    let to_freeze = vols.clone();
    let hc = h.clone();
    let frozen: Done = Box::new(move |_| {
        if !needed(&hc.borrow(), &u, all).is_empty() {
            thaw(&hc, &vols);
            return detach_step(hc, u, all, reply, rounds - 1);
        }
        let r = (|| {
            let mut hm = hc.borrow_mut();
            let m = hm
                .table
                .lvols
                .get(&u)
                .ok_or_else(|| LvolError::NotFound(format!("volume {u}")))?;
            let flags = m.header.flags;
            let parent = m.header.parent;
            let new_parent = if all {
                None
            } else {
                parent.and_then(|p| hm.table.lvols.get(&p)?.header.parent)
            };
            let lvs = hm.lvs.clone();
            let sh = lvs
                .lvol_shared(&u)
                .ok_or_else(|| LvolError::NotFound(format!("volume {u}")))?;
            let mut rno = hm.j.next_rno;
            if parent != new_parent {
                rno = hm.append(Record::SetParent(u, new_parent));
                *lock(&sh.parent) = new_parent.and_then(|p| lvs.lvol_shared(&p));
                chain_changed(&hm, &u);
            }
            if all {
                rno = hm.append(Record::SetFlags(u, flags & !FLAG_THIN));
                sh.thin.store(false, Ordering::Release);
            }
            Ok(rno)
        })();
        thaw(&hc, &vols);
        hc.borrow_mut().busy.remove(&u);
        match r {
            Ok(rno) => reply_when_durable(&hc, rno, (), reply),
            Err(e) => reply(Err(e)),
        }
    });
    freeze(&h, &to_freeze, frozen);
}
