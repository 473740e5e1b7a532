//! Completions of child I/Os (legs), read retries, timeouts, and parked host I/Os.

use std::sync::atomic::Ordering;

use shoal_bdev::{BdevError, BdevIo, IoBuf, IoSink, IoType, SgList};

use super::{Chan, NO_LEG, TICKS_PER_TIMEOUT, faulted_error, split_tag};
use crate::gate::Gate;
use crate::routing::{slot_bit, slots};
use crate::state::FaultReason;

/// What a leg's failure asks for once the parents are no longer borrowed.
struct Failure {
    slot: usize,
    child: u64,
    reason: FaultReason,
}

impl IoSink for Chan {
    fn io_done(&self, tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        let (pidx, gen16, slot) = split_tag(tag);
        let bit = slot_bit(slot);
        let mut failure = None;
        let mut host_io = None;
        let (is_read, finished) = {
            let mut parents = self.parents.borrow_mut();
            let Some(p) = parents
                .get_mut(pidx)
                .filter(|p| p.live && p.seq == gen16 && p.pending & bit != 0)
            else {
                drop(parents);
                self.late(pidx, gen16, slot);
                return;
            };
            p.pending &= !bit;
            if usize::from(p.host_leg) == slot {
                let mut h = io;
                h.offset_blocks = p.offset;
                h.num_blocks = p.blocks;
                host_io = Some(h);
                p.host_leg = NO_LEG;
            }
            let is_read = p.io_type == Some(IoType::Read);
            match result {
                Ok(()) => {
                    p.ok |= bit;
                    if let Some(t0) = p.started.take() {
                        let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        // The slot's current channel, if the leg went to it.
                        if let Some(Some(c)) = self.children.borrow().get(slot)
                            && c.ver <= p.ver_mark
                        {
                            let old = c.ewma_ns.get();
                            let new = if old == 0 { ns } else { old - old / 8 + ns / 8 };
                            c.ewma_ns.set(new);
                        }
                    }
                }
                Err(e) => {
                    let reason = FaultReason::from_bdev_error(&e);
                    let child = self.leg_child_at(slot, p.ver_mark);
                    if child.is_none() {
                        tracing::error!(pidx, slot, "nexus: the child of a failed I/O is unknown");
                    }
                    if let Some(child) = child {
                        if !is_read && p.io_type != Some(IoType::Flush) {
                            let (first, last) = self.nexus.geo.segs(p.offset, p.blocks);
                            child.dirty.mark(first, last);
                        }
                        failure = Some(Failure {
                            slot,
                            child: child.id,
                            reason,
                        });
                    }
                    p.err = Some(e);
                }
            }
            let finished = p.pending == 0;
            // The common case, a read that succeeded: answer the host now, without going
            // through `finish` (reads take no gate and wait for no fault to be recorded).
            if finished && is_read && failure.is_none() && p.ok & bit != 0 && host_io.is_some() {
                let (sink, tag, free) = p.retire();
                drop(parents);
                if free {
                    self.free
                        .borrow_mut()
                        .push(u32::try_from(pidx).unwrap_or(u32::MAX));
                }
                if let (Some(sink), Some(io)) = (sink, host_io) {
                    sink.io_done(tag, io, Ok(()));
                }
                return;
            }
            // The host's buffers stay in hand when the parent ends here (no round trip through
            // the slab); otherwise they wait in it (other legs, or a read retry, need them).
            if (!finished || (is_read && failure.is_some())) && host_io.is_some() {
                p.host = host_io.take();
            }
            (is_read, finished)
        };
        if let Some(f) = &failure {
            self.nexus.child_failed(f.slot, f.child, f.reason);
            if is_read && self.retry_read(pidx) {
                return;
            }
        }
        if finished {
            self.finish(u32::try_from(pidx).unwrap_or(u32::MAX), false, host_io);
        }
    }
}

impl Chan {
    /// A leg of a parent that gave it up after a timeout came back.
    fn late(&self, pidx: usize, gen16: u16, slot: usize) {
        let bit = slot_bit(slot);
        {
            let mut parents = self.parents.borrow_mut();
            if let Some(p) = parents
                .get_mut(pidx)
                .filter(|p| p.seq == gen16 && p.abandoned & bit != 0)
            {
                p.abandoned &= !bit;
                if !p.live && p.abandoned == 0 {
                    self.free
                        .borrow_mut()
                        .push(u32::try_from(pidx).unwrap_or(u32::MAX));
                }
            } else {
                tracing::error!(pidx, slot, "nexus: completion of an unknown child I/O");
                return;
            }
        }
        let key = (u64::try_from(pidx).unwrap_or(u64::MAX) << 6)
            | (u64::try_from(slot).unwrap_or(0) & 63);
        let mut ab = self.abandoned.borrow_mut();
        if let Some(i) = ab.iter().position(|(k, _)| *k == key) {
            let (_, child) = ab.swap_remove(i);
            child.abandoned.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Sends a failed read to another online child; false if there is none left.
    fn retry_read(&self, pidx: usize) -> bool {
        self.refresh();
        let r = self.routing.borrow().clone();
        let (tried, gen16, offset) = match self.parents.borrow().get(pidx) {
            Some(p) if p.live => (p.tried, p.seq, p.offset),
            _ => return false,
        };
        let cand = r.read_mask & self.open_mask.get() & !tried;
        if cand == 0 {
            return false;
        }
        let slot = self.pick_read(cand, cand & r.local_mask, offset);
        let remote = r.local_mask & slot_bit(slot) == 0;
        let io = {
            let mut parents = self.parents.borrow_mut();
            let Some(p) = parents.get_mut(pidx) else {
                return false;
            };
            let mut io = p.host.take().unwrap_or_else(|| {
                substitute(IoType::Read, p.offset, p.blocks, self.nexus.info.block_size)
            });
            io.offset_blocks = p.offset + self.nexus.geo.meta_blocks;
            p.tried |= slot_bit(slot);
            p.pending |= slot_bit(slot);
            p.host_leg = u8::try_from(slot).unwrap_or(NO_LEG);
            p.started = remote.then(std::time::Instant::now);
            p.tick = self.tick.get();
            p.ver_mark = self.next_ver.get();
            io
        };
        self.send_leg(u32::try_from(pidx).unwrap_or(u32::MAX), gen16, slot, io);
        true
    }

    /// Every leg of `pidx` has answered: leave the gate and answer the host, unless a child
    /// that failed is still recorded as in sync (then wait for the control task to record the
    /// fault). `deferred`: called from a submission, so the answer goes through the loop.
    pub(super) fn finish(&self, pidx: u32, deferred: bool, host_io: Option<BdevIo>) {
        let (wait, released) = {
            let mut parents = self.parents.borrow_mut();
            let Some(p) = parents.get_mut(pidx as usize) else {
                return;
            };
            if p.in_gate {
                Gate::leave(&self.counters, p.parity);
                p.in_gate = false;
            }
            // Every child has answered (or its leg was given up, and the child faulted and
            // marked dirty there): overlapping writes may go now.
            let released = std::mem::take(&mut p.ordered);
            self.unclaim(released, p.offset, p.blocks);
            let wait = p.lacks_recorded(self.nexus.online_mask.load(Ordering::Acquire));
            (wait, released)
        };
        if released && !deferred && !self.parked_order.borrow().is_empty() {
            self.retry_parked_order();
        }
        if wait {
            if let Some(h) = host_io
                && let Some(p) = self.parents.borrow_mut().get_mut(pidx as usize)
            {
                p.host = Some(h);
            }
            self.parked_ack.borrow_mut().push(pidx);
            self.arm_park_timer();
            return;
        }
        self.complete(pidx, deferred, host_io);
    }

    fn complete(&self, pidx: u32, deferred: bool, host_io: Option<BdevIo>) {
        let bs = self.nexus.info.block_size;
        let done = {
            let mut parents = self.parents.borrow_mut();
            let Some(p) = parents.get_mut(pidx as usize).filter(|p| p.live) else {
                return;
            };
            let io_type = p.io_type.unwrap_or(IoType::Read);
            let good = if io_type == IoType::Read {
                p.ok != 0
            } else {
                p.ok & self.nexus.online_mask.load(Ordering::Acquire) != 0
            };
            let result = if good {
                Ok(())
            } else {
                Err(p.err.take().unwrap_or_else(|| faulted_error(&self.nexus)))
            };
            let io = host_io
                .or_else(|| p.host.take())
                .unwrap_or_else(|| substitute(io_type, p.offset, p.blocks, bs));
            let (sink, tag, free) = p.retire();
            if free {
                self.free.borrow_mut().push(pidx);
            }
            sink.map(|s| (s, tag, io, result))
        };
        if let Some((sink, tag, io, result)) = done {
            if deferred {
                self.reactor.complete_io(sink, tag, io, result);
            } else {
                sink.io_done(tag, io, result);
            }
        }
    }

    /// One tick of the timeout clock: gives up legs older than the I/O timeout.
    pub(super) fn on_tick(&self) -> bool {
        let now = self.tick.get().wrapping_add(1);
        self.tick.set(now);
        let expired: Vec<(usize, u64)> = self
            .parents
            .borrow()
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.live && p.pending != 0 && now.wrapping_sub(p.tick) >= TICKS_PER_TIMEOUT
            })
            .map(|(i, p)| (i, p.pending))
            .collect();
        for (pidx, legs) in expired {
            for slot in slots(legs) {
                self.abandon(pidx, slot);
            }
        }
        true
    }

    /// Gives up the leg of `pidx` on `slot` (timed out).
    fn abandon(&self, pidx: usize, slot: usize) {
        let bit = slot_bit(slot);
        // The leg's own child, even if its channel was closed since (its child faulted by an
        // earlier failure) or its slot taken by another child: the segment must be marked in
        // that child's dirty map and the leg counted against it.
        let Some(mark) = self.parents.borrow().get(pidx).map(|p| p.ver_mark) else {
            return;
        };
        let child = self.leg_child_at(slot, mark);
        if child.is_none() {
            tracing::error!(pidx, slot, "nexus: the child of a timed-out I/O is unknown");
        }
        let (is_read, finished) = {
            let mut parents = self.parents.borrow_mut();
            let Some(p) = parents
                .get_mut(pidx)
                .filter(|p| p.live && p.pending & bit != 0)
            else {
                return;
            };
            p.pending &= !bit;
            p.abandoned |= bit;
            if usize::from(p.host_leg) == slot {
                p.host_leg = NO_LEG;
            }
            let is_read = p.io_type == Some(IoType::Read);
            if !is_read
                && p.io_type != Some(IoType::Flush)
                && let Some(c) = &child
            {
                let (first, last) = self.nexus.geo.segs(p.offset, p.blocks);
                c.dirty.mark(first, last);
            }
            p.err = Some(BdevError::TimedOut);
            (is_read, p.pending == 0)
        };
        if let Some(c) = child {
            c.abandoned.fetch_add(1, Ordering::AcqRel);
            let key = (u64::try_from(pidx).unwrap_or(u64::MAX) << 6)
                | (u64::try_from(slot).unwrap_or(0) & 63);
            self.abandoned.borrow_mut().push((key, c.clone()));
            tracing::warn!(nexus = %self.nexus.info.name, slot, "child I/O timed out");
            self.nexus.child_failed(slot, c.id, FaultReason::TimedOut);
        }
        if is_read && self.retry_read(pidx) {
            return;
        }
        if finished {
            self.finish(u32::try_from(pidx).unwrap_or(u32::MAX), false, None);
        }
    }

    /// Retries the writes that wait for an overlapping write in flight, in the order they
    /// came (those still overlapping one park again).
    fn retry_parked_order(&self) {
        let waiting = std::mem::take(&mut *self.parked_order.borrow_mut());
        for (io, sink, tag) in waiting {
            self.submit(io, sink, tag);
        }
    }

    /// Retries parked writes and answers parked acknowledgements; false once none is left.
    pub(super) fn poll_parked(&self) -> bool {
        self.retry_parked_order();
        let waiting = std::mem::take(&mut *self.parked_lock.borrow_mut());
        let closed = self.nexus.info.is_closed();
        for (io, sink, tag) in waiting {
            if closed {
                // Destroyed while the write waited: it must not reach the children after the
                // clean labels.
                self.reactor
                    .complete_io(sink, tag, io, Err(BdevError::Closed));
                continue;
            }
            self.submit(io, sink, tag);
        }
        let acks = std::mem::take(&mut *self.parked_ack.borrow_mut());
        if !acks.is_empty() {
            let mask = self.nexus.online_mask.load(Ordering::Acquire);
            let mut keep = Vec::new();
            for pidx in acks {
                let blocked = self
                    .parents
                    .borrow()
                    .get(pidx as usize)
                    .is_some_and(|p| p.live && p.lacks_recorded(mask));
                if blocked {
                    keep.push(pidx);
                } else {
                    self.complete(pidx, false, None);
                }
            }
            self.parked_ack.borrow_mut().extend(keep);
        }
        let more = !self.parked_lock.borrow().is_empty()
            || !self.parked_order.borrow().is_empty()
            || !self.parked_ack.borrow().is_empty();
        if !more {
            self.park_timer.set(None);
        }
        more
    }
}

impl Drop for Chan {
    fn drop(&mut self) {
        if let Some(id) = self.park_timer.take() {
            self.reactor.cancel_timer(id);
        }
        let parked = self.parked_lock.get_mut().drain(..);
        for (io, sink, tag) in parked.chain(self.parked_order.get_mut().drain(..)) {
            self.reactor
                .complete_io(sink, tag, io, Err(BdevError::Closed));
        }
        let acks = std::mem::take(self.parked_ack.get_mut());
        for pidx in acks {
            let Some(p) = self.parents.get_mut().get_mut(pidx as usize) else {
                continue;
            };
            let io = p.host.take().unwrap_or_else(|| {
                substitute(
                    p.io_type.unwrap_or(IoType::Write),
                    p.offset,
                    p.blocks,
                    self.nexus.info.block_size,
                )
            });
            if let Some(sink) = p.sink.take() {
                self.reactor
                    .complete_io(sink, p.tag, io, Err(BdevError::Closed));
            }
        }
    }
}

/// A `BdevIo` standing in for the host's when its buffers are out on a leg that was given up.
fn substitute(io_type: IoType, offset: u64, blocks: u64, bs: u32) -> BdevIo {
    let mut bufs = SgList::new();
    if matches!(io_type, IoType::Read | IoType::Write) {
        let len = blocks
            .checked_mul(u64::from(bs))
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(0);
        bufs.push(IoBuf::zeroed(len));
    }
    BdevIo {
        io_type,
        flags: shoal_bdev::IoFlags::NONE,
        offset_blocks: offset,
        num_blocks: blocks,
        bufs,
    }
}
