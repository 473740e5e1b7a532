//! Writes to the base device on behalf of the cache: a flush's write-back, a FUA write, and
//! the write-back of a power cut.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;

use super::{PARK, PfailBdev, power_cut};
use crate::buf::SgList;
use crate::reactor::Reactor;
use crate::{BdevError, BdevIo, IoChannel, IoFlags, IoSink};

/// Base writes to make, by block range.
pub(super) struct Run {
    pub(super) block: u64,
    pub(super) blocks: u64,
    /// The cache sequence it carries (0 for the cut's own writes, which are not tracked).
    pub(super) seq: u64,
    pub(super) data: SgList,
    /// A flush's write-back of a cached version: not sent if, by the time its blocks are free,
    /// that version or a newer one has already reached the base (a disk never writes old
    /// data over new). A FUA write is always sent.
    pub(super) write_back: bool,
}

pub(super) type Then = Box<dyn FnOnce(Result<(), BdevError>)>;

/// Writes runs to the base, one block range at a time per block (a range waits while another
/// base write to one of its blocks is in flight), then flushes the base if asked, then calls
/// `then`. `tracked`: the writes count as in flight for a cut, mark their blocks busy, and the
/// result is a power-cut error if the power went meanwhile.
pub(super) struct Job {
    me: Weak<Job>,
    dev: Arc<PfailBdev>,
    base: Rc<IoChannel>,
    reactor: Reactor,
    pending: RefCell<Vec<Run>>,
    /// Ranges submitted, by tag.
    sent: RefCell<Vec<(u64, u64)>>,
    outstanding: Cell<usize>,
    error: RefCell<Option<BdevError>>,
    flush_after: bool,
    tracked: bool,
    parked: Cell<bool>,
    /// Set while `start` runs: a job that ends there (the power was cut before it sent
    /// anything) completes on a later pass, never from inside its caller's `submit`.
    starting: Cell<bool>,
    then: RefCell<Option<Then>>,
}

const FLUSH_TAG: u64 = u64::MAX;

impl Job {
    pub(super) fn start(
        dev: &Arc<PfailBdev>,
        base: Rc<IoChannel>,
        reactor: Reactor,
        runs: Vec<Run>,
        flush_after: bool,
        tracked: bool,
        then: Then,
    ) {
        if tracked {
            // Counted until it ends: a cut waits for jobs that are still waiting too.
            dev.lock().jobs += 1;
        }
        let job = Rc::new_cyclic(|me| Job {
            me: me.clone(),
            dev: dev.clone(),
            base,
            reactor,
            pending: RefCell::new(runs),
            sent: RefCell::new(Vec::new()),
            outstanding: Cell::new(0),
            error: RefCell::new(None),
            flush_after,
            tracked,
            parked: Cell::new(false),
            starting: Cell::new(true),
            then: RefCell::new(Some(then)),
        });
        job.pump();
        job.starting.set(false);
    }

    /// Submits every pending run whose blocks are free; parks the rest.
    fn pump(&self) {
        self.parked.set(false);
        let Some(me) = self.me.upgrade() else { return };
        let mut go = Vec::new();
        {
            let mut c = self.dev.lock();
            let mut pending = self.pending.borrow_mut();
            if self.tracked && c.cut {
                // The power went: nothing more reaches the base.
                pending.clear();
                self.error.borrow_mut().get_or_insert_with(power_cut);
            }
            let mut i = 0;
            while i < pending.len() {
                let r = &pending[i];
                let range = r.block..r.block.saturating_add(r.blocks);
                if self.tracked && range.clone().any(|b| c.busy.contains_key(&b)) {
                    i += 1;
                    continue;
                }
                let superseded = r.write_back && range.clone().all(|b| c.media_seq(b) >= r.seq);
                let r = pending.swap_remove(i);
                if self.tracked && superseded {
                    continue;
                }
                if self.tracked {
                    for b in r.block..r.block.saturating_add(r.blocks) {
                        *c.busy.entry(b).or_default() += 1;
                        let m = c.media_seq.entry(b).or_default();
                        *m = (*m).max(r.seq);
                    }
                    c.inflight += 1;
                }
                go.push(r);
            }
        }
        for r in go {
            let tag = {
                let mut sent = self.sent.borrow_mut();
                sent.push((r.block, r.blocks));
                sent.len() as u64 - 1
            };
            self.outstanding.set(self.outstanding.get() + 1);
            let io = BdevIo::write(r.block, r.blocks, r.data).with_flags(if self.flush_after {
                IoFlags::NONE
            } else {
                IoFlags::FUA
            });
            self.base.submit(io, me.clone(), tag);
        }
        self.maybe_finish();
    }

    fn maybe_finish(&self) {
        if self.outstanding.get() > 0 {
            return;
        }
        if !self.pending.borrow().is_empty() {
            if !self.parked.replace(true) {
                // A strong reference: nothing else holds a job that waits with nothing of its
                // own in flight.
                if let Some(me) = self.me.upgrade() {
                    self.reactor.call_after(PARK, move || me.pump());
                }
            }
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        if self.flush_after && self.error.borrow().is_none() {
            if self.tracked {
                self.dev.lock().inflight += 1;
            }
            self.outstanding.set(1);
            // Only once: the flush's completion finishes the job.
            let job = Rc::new(FlushDone(me));
            self.base.submit(BdevIo::flush(), job, FLUSH_TAG);
            return;
        }
        self.finish();
    }

    fn finish(&self) {
        let Some(then) = self.then.borrow_mut().take() else {
            return;
        };
        let mut r = match self.error.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        };
        if self.tracked {
            let mut c = self.dev.lock();
            c.jobs = c.jobs.saturating_sub(1);
            if c.cut {
                r = Err(power_cut());
            }
        }
        if self.starting.get() {
            self.reactor.defer(move || then(r));
        } else {
            then(r);
        }
    }

    fn record(&self, result: Result<(), BdevError>) {
        if let Err(e) = result {
            self.error.borrow_mut().get_or_insert(e);
        }
    }
}

impl IoSink for Job {
    fn io_done(&self, tag: u64, _io: BdevIo, result: Result<(), BdevError>) {
        let range = usize::try_from(tag)
            .ok()
            .and_then(|i| self.sent.borrow().get(i).copied());
        if self.tracked {
            let mut c = self.dev.lock();
            c.inflight = c.inflight.saturating_sub(1);
            if let Some((first, n)) = range {
                for b in first..first.saturating_add(n) {
                    if let Some(k) = c.busy.get_mut(&b) {
                        *k -= 1;
                        if *k == 0 {
                            c.busy.remove(&b);
                        }
                    }
                }
            }
        }
        self.record(result);
        self.outstanding
            .set(self.outstanding.get().saturating_sub(1));
        if self.outstanding.get() == 0 && !self.pending.borrow().is_empty() {
            return self.pump();
        }
        self.maybe_finish();
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // A job dropped unfinished (its reactor stopped) no longer holds a cut back.
        if self.tracked && self.then.get_mut().is_some() {
            let mut c = self.dev.lock();
            c.jobs = c.jobs.saturating_sub(1);
        }
    }
}

/// The base flush at the end of a job.
struct FlushDone(Rc<Job>);

impl IoSink for FlushDone {
    fn io_done(&self, _tag: u64, _io: BdevIo, result: Result<(), BdevError>) {
        let job = &self.0;
        if job.tracked {
            let mut c = job.dev.lock();
            c.inflight = c.inflight.saturating_sub(1);
        }
        job.record(result);
        job.outstanding.set(0);
        job.finish();
    }
}
