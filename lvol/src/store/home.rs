//! The pool's state on its home reactor: the authoritative table, the free clusters (and the
//! freed ones in quarantine, returned to the free set here once safe), the writes waiting
//! for an allocation, and the journal writer with group commit and checkpoints. The
//! operations on the home (`alloc`, `freeze`, `ops`, `snap`, `resize`) use this module; it
//! uses none of them.
//!
//! Every change to the table is a [`Record`] appended here; it is applied to the table at
//! once, and its callers wait until the journal page holding it is durable. One journal write
//! is in flight at a time and carries every record queued meanwhile (group commit), written
//! with Force Unit Access. When half the ring has been written since the checkpoint in force,
//! the whole table is written to the other checkpoint area (while the journal goes on); a
//! journal page is written only if the slot it overwrites is older than the checkpoint in
//! force, so a torn checkpoint always leaves the older one and every page after it.
//!
//! A checkpoint holds exactly the records of the pages before its journal position: the home
//! keeps a second table, `journaled`, to which a record is applied when it is put into a page
//! (and a checkpoint starts only while no journal write is in flight). Replay therefore applies
//! each record once, which records that move clusters between volumes (`Snapshot`,
//! `MergeSnapshot`) need: applied twice, they would not be assignments.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use shoal_bdev::{BdevError, BdevIo, IoBuf, IoChannel, IoFlags, IoSink, SgList};
use shoal_reactor::Reactor;
use uuid::Uuid;

use crate::LvolError;
use crate::format::checkpoint::{CkptHeader, encode_table};
use crate::format::journal::{PAGE_ROOM, encode_page};
use crate::format::record::Record;
use crate::format::{MAX_POOL_CLUSTERS, PAGE};
use crate::state::{ChanCounters, Lvs};
use crate::table::Table;

/// A callback on the home reactor.
pub(crate) type Done = Box<dyn FnOnce(Result<(), LvolError>)>;

thread_local! {
    static HOMES: RefCell<HashMap<u64, Rc<RefCell<Home>>>> = RefCell::new(HashMap::new());
}

/// Runs `f` with the home state of pool `id` on this reactor, if it is here.
pub(crate) fn with_home<R>(id: u64, f: impl FnOnce(&Rc<RefCell<Home>>) -> R) -> Option<R> {
    let h = HOMES.with(|m| m.borrow().get(&id).cloned())?;
    Some(f(&h))
}

pub(crate) fn install(id: u64, home: Home) {
    HOMES.with(|m| m.borrow_mut().insert(id, Rc::new(RefCell::new(home))));
}

pub(crate) fn uninstall(id: u64) {
    HOMES.with(|m| m.borrow_mut().remove(&id));
}

/// A closure as an I/O sink (metadata path: one allocation per I/O).
pub(crate) struct FnSink(RefCell<Option<IoDone>>);

/// What an [`FnSink`] calls.
type IoDone = Box<dyn FnOnce(BdevIo, Result<(), BdevError>)>;

impl IoSink for FnSink {
    fn io_done(&self, _tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        let f = self.0.borrow_mut().take();
        if let Some(f) = f {
            f(io, result);
        }
    }
}

/// Submits `io` on `chan` and calls `f` with its completion.
pub(crate) fn submit(
    chan: &IoChannel,
    io: BdevIo,
    f: impl FnOnce(BdevIo, Result<(), BdevError>) + 'static,
) {
    chan.submit(io, Rc::new(FnSink(RefCell::new(Some(Box::new(f))))), 0);
}

pub(crate) struct Journal {
    pub next_seq: u64,
    pub prev_crc: u32,
    pub nonce: u64,
    pub pending: Vec<(u64, Record)>,
    pub next_rno: u64,
    pub durable_rno: u64,
    pub waiters: Vec<(u64, Done)>,
    pub writing: bool,
    pub ckpt_gen: u64,
    /// Journal position of the checkpoint in force (durable).
    pub ckpt_seq: u64,
    /// The area (0 or 1) of the checkpoint in force; the next checkpoint goes to the other
    /// one, so that a torn checkpoint never takes the one in force with it.
    pub ckpt_area: usize,
    pub ckpt_writing: bool,
    pub failed: Option<String>,
    pub pages_written: u64,
    pub checkpoints_written: u64,
}

/// The pool's state on its home reactor.
pub(crate) struct Home {
    pub lvs: Arc<Lvs>,
    pub chan: Rc<IoChannel>,
    pub reactor: Reactor,
    pub table: Table,
    /// The table as of the records put into journal pages (what a checkpoint writes).
    pub journaled: Table,
    pub free: BTreeSet<u64>,
    pub j: Journal,
    pub allocating: HashMap<(Uuid, u64), Allocating>,
    pub quarantine: Vec<Quarantined>,
    pub quarantine_timer: bool,
    /// Volumes whose I/O is held (a snapshot, merge or decoupling changes them), with the
    /// channels' requests to hear when it may go on.
    pub frozen: HashMap<Uuid, Vec<Done>>,
    /// Volumes in a long operation (snapshot, merge, inflate, decouple): another is refused.
    pub busy: BTreeSet<Uuid>,
    /// What thick creations and growths in flight will add to the table: their records are
    /// appended only once their clusters are zeroed, and every check of a new name, volume or
    /// size counts them meanwhile.
    pub pending: Pending,
}

/// Writes waiting for one cluster's allocation (`alloc`).
pub(crate) struct Allocating {
    pub(super) waiters: Vec<Done>,
}

/// Clusters freed but not yet reusable (put there by `alloc::quarantine`, released by
/// [`release_quarantine`]).
pub(crate) struct Quarantined {
    pub clusters: Vec<u64>,
    pub rno: u64,
    pub quiesce: Vec<(Arc<ChanCounters>, u64)>,
}

/// See [`Home::pending`].
#[derive(Default)]
pub(crate) struct Pending {
    /// Clusters of volume size (creations and growths).
    pub clusters: u64,
    /// Names of volumes being created.
    pub names: BTreeSet<String>,
}

impl Home {
    /// Whether a volume has `name`, or one being created will.
    pub fn name_taken(&self, name: &str) -> bool {
        self.table.by_name(name).is_some() || self.pending.names.contains(name)
    }

    /// Volumes, with those being created.
    pub fn volume_count(&self) -> usize {
        self.table.lvols.len() + self.pending.names.len()
    }

    /// Refuses `extra` clusters of volume size beyond [`MAX_POOL_CLUSTERS`] for all the
    /// volumes together (those in flight included): `what` says what asked.
    pub fn check_clusters(&self, extra: u64, what: &str) -> Result<(), LvolError> {
        let sizes: u64 = self
            .table
            .lvols
            .values()
            .map(|m| m.header.num_clusters)
            .sum();
        let have = sizes.saturating_add(self.pending.clusters);
        if extra > MAX_POOL_CLUSTERS.saturating_sub(have) {
            return Err(LvolError::Invalid(format!(
                "{what} does not fit: the volumes of pool {} may have {MAX_POOL_CLUSTERS} \
                 clusters together (each takes 8 bytes of memory, allocated or not), and have \
                 {have} (with those being made)",
                self.lvs.name()
            )));
        }
        Ok(())
    }

    /// Appends a record: the table changes now; the record's number is returned for
    /// [`Home::when_durable`].
    pub fn append(&mut self, rec: Record) -> u64 {
        self.table.apply(&rec);
        self.j.next_rno += 1;
        let rno = self.j.next_rno;
        self.j.pending.push((rno, rec));
        rno
    }

    /// Calls `f` once record `rno` is durable (or the journal failed).
    pub fn when_durable(&mut self, rno: u64, f: Done) {
        if let Some(why) = &self.j.failed {
            let e = LvolError::Unavailable(why.clone());
            self.reactor.defer(move || f(Err(e)));
            return;
        }
        if rno <= self.j.durable_rno {
            self.reactor.defer(move || f(Ok(())));
            return;
        }
        self.j.waiters.push((rno, f));
    }

    pub fn free_count_changed(&self) {
        self.lvs.set_free(self.free.len() as u64);
    }
}

/// Starts the next journal write, or a checkpoint, if one is due and none is in flight.
pub(crate) fn kick(h: &Rc<RefCell<Home>>) {
    let mut hm = h.borrow_mut();
    let home = &mut *hm;
    if home.j.writing || home.j.failed.is_some() {
        return;
    }
    let n = home.lvs.sb.journal_pages;
    let used = home.j.next_seq.saturating_sub(home.j.ckpt_seq);
    if used >= n / 2 && !home.j.ckpt_writing {
        start_checkpoint(h.clone(), home);
    }
    if home.j.pending.is_empty() {
        return;
    }
    // Pages free in the ring: a slot may be overwritten only if its page is older than the
    // checkpoint in force.
    let room = (home.j.ckpt_seq + n).saturating_sub(home.j.next_seq);
    let to_end = n - home.j.next_seq % n;
    let max_pages = room.min(to_end);
    if max_pages == 0 {
        return; // the checkpoint in flight makes room
    }
    let mut pages = Vec::new();
    let mut last_rno = home.j.durable_rno;
    let mut prev = home.j.prev_crc;
    let mut taken = 0;
    let mut seq = home.j.next_seq;
    while taken < home.j.pending.len() && (pages.len() as u64) < max_pages {
        let mut used = 0;
        let mut recs = Vec::new();
        while let Some((rno, r)) = home.j.pending.get(taken) {
            let len = r.encoded_len();
            if used + len > PAGE_ROOM {
                break;
            }
            used += len;
            home.journaled.apply(r);
            recs.push(r.clone());
            last_rno = *rno;
            taken += 1;
        }
        let (page, crc) = encode_page(&home.lvs.sb.uuid, seq, home.j.nonce, prev, &recs);
        pages.push(page);
        prev = crc;
        seq += 1;
    }
    home.j.pending.drain(..taken);
    home.j.writing = true;
    let first = home.j.next_seq;
    let count = pages.len() as u64;
    let off = home.lvs.sb.journal_offset + (first % n) * PAGE as u64;
    let bs = u64::from(home.lvs.sb.block_size);
    let bufs: SgList = pages.iter().map(|p| IoBuf::copy_from(p)).collect();
    let io = BdevIo::write(off / bs, count * PAGE as u64 / bs, bufs).with_flags(IoFlags::FUA);
    let hc = h.clone();
    submit(&home.chan, io, move |_io, r| {
        journal_written(&hc, r, first + count, prev, last_rno, count);
    });
}

fn journal_written(
    h: &Rc<RefCell<Home>>,
    r: Result<(), BdevError>,
    next_seq: u64,
    prev_crc: u32,
    rno: u64,
    pages: u64,
) {
    let ready: Vec<(Result<(), LvolError>, Done)> = {
        let mut hm = h.borrow_mut();
        hm.j.writing = false;
        match r {
            Ok(()) => {
                hm.j.next_seq = next_seq;
                hm.j.prev_crc = prev_crc;
                hm.j.durable_rno = rno;
                hm.j.pages_written += pages;
                let (done, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut hm.j.waiters)
                    .into_iter()
                    .partition(|(w, _)| *w <= rno);
                hm.j.waiters = wait;
                done.into_iter().map(|(_, f)| (Ok(()), f)).collect()
            }
            Err(e) => fail(&mut hm, &format!("journal write failed: {e}")),
        }
    };
    for (r, f) in ready {
        f(r);
    }
    release_quarantine(h);
    kick(h);
}

/// Marks the journal failed: every waiter hears it; the pool takes no further change.
fn fail(home: &mut Home, why: &str) -> Vec<(Result<(), LvolError>, Done)> {
    tracing::error!(lvs = %home.lvs.name(), "{why}; the pool refuses further changes");
    home.j.failed = Some(why.to_string());
    std::mem::take(&mut home.j.waiters)
        .into_iter()
        .map(|(_, f)| (Err(LvolError::Unavailable(why.to_string())), f))
        .collect()
}

fn start_checkpoint(h: Rc<RefCell<Home>>, home: &mut Home) {
    // No journal write is in flight (see `kick`): `journaled` holds exactly the records of
    // the pages before `next_seq`.
    let payload = encode_table(&home.journaled);
    let sb = home.lvs.sb;
    if payload.len() as u64 > sb.ckpt_bytes.saturating_sub(PAGE as u64) {
        let ready = fail(home, "the table outgrew its checkpoint area");
        for (r, f) in ready {
            home.reactor.defer(move || f(r));
        }
        return;
    }
    let generation = home.j.ckpt_gen + 1;
    let seq = home.j.next_seq;
    let hdr = CkptHeader {
        lvs: sb.uuid,
        generation,
        journal_seq: seq,
        journal_prev_crc: home.j.prev_crc,
        payload_len: payload.len() as u64,
        payload_crc: crc32c::crc32c(&payload),
    };
    let mut area = hdr.encode();
    area.extend_from_slice(&payload);
    area.resize(area.len().div_ceil(PAGE) * PAGE, 0);
    let bs = u64::from(sb.block_size);
    let to = 1 - home.j.ckpt_area.min(1);
    let off = sb.ckpt_offset[to];
    let bufs: SgList = area.chunks(1 << 20).map(IoBuf::copy_from).collect();
    let io = BdevIo::write(off / bs, area.len() as u64 / bs, bufs).with_flags(IoFlags::FUA);
    home.j.ckpt_writing = true;
    submit(&home.chan, io, move |_io, r| {
        {
            let mut hm = h.borrow_mut();
            hm.j.ckpt_writing = false;
            match r {
                Ok(()) => {
                    hm.j.ckpt_gen = generation;
                    hm.j.ckpt_seq = seq;
                    hm.j.ckpt_area = to;
                    hm.j.checkpoints_written += 1;
                }
                Err(e) => {
                    let ready = fail(&mut hm, &format!("checkpoint write failed: {e}"));
                    let reactor = hm.reactor.clone();
                    for (r, f) in ready {
                        reactor.defer(move || f(r));
                    }
                }
            }
        }
        kick(&h);
    });
}

/// Calls `f` once every record appended so far is durable.
pub(crate) fn sync(h: &Rc<RefCell<Home>>, f: Done) {
    let rno = h.borrow().j.next_rno;
    h.borrow_mut().when_durable(rno, f);
    kick(h);
}

/// Polls the quarantine every millisecond while it holds clusters.
pub(crate) fn arm_quarantine_timer(h: &Rc<RefCell<Home>>) {
    let mut hm = h.borrow_mut();
    if hm.quarantine_timer || hm.quarantine.is_empty() {
        return;
    }
    hm.quarantine_timer = true;
    let hc = h.clone();
    hm.reactor.call_after(Duration::from_millis(1), move || {
        hc.borrow_mut().quarantine_timer = false;
        release_quarantine(&hc);
    });
}

/// Returns to the free set the quarantined clusters that are safe to reuse.
pub(crate) fn release_quarantine(h: &Rc<RefCell<Home>>) {
    {
        let mut hm = h.borrow_mut();
        let durable = hm.j.durable_rno;
        let (ready, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut hm.quarantine)
            .into_iter()
            .partition(|q| {
                q.rno <= durable
                    && q.quiesce
                        .iter()
                        .all(|(c, s)| c.finished.load(Ordering::Acquire) >= *s)
            });
        hm.quarantine = wait;
        if !ready.is_empty() {
            for q in ready {
                hm.free.extend(q.clusters);
            }
            hm.free_count_changed();
        }
    }
    arm_quarantine_timer(h);
}
