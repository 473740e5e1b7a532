//! The I/O path of the nexus: the nexus as a [`Bdev`] (what it supports, and its channels),
//! and one [`NexusChannel`] per reactor, holding a channel to every child that takes I/O.
//!
//! * **Writes** (write, write zeroes, deallocate, flush) go to every child that takes writes
//!   (online and rebuilding). The host's buffers go to the first child; the others get shared
//!   references to the same memory ([`IoBuf::share`]: no copy). The host's command succeeds
//!   once every leg has answered and at least one child that is in sync has the data. A
//!   failed leg takes its child out of the I/O path at once, marks the segments in the child's
//!   dirty map and asks the control task to fault it. The host's answer waits while any child
//!   that the metadata still records as in sync lacks the write (its leg failed, or it had
//!   already left the I/O path and its fault is not recorded yet), so that a restart can never
//!   pick as current a child without an acknowledged write.
//! * **Reads** go to one online child: a local one if there is any (spread over the local
//!   ones by segment, so that each region is read from one child and its cache and read-ahead
//!   stay warm, while the load still spreads over all of them), otherwise
//!   the one with the lowest recent latency (one read in 64 probes another). A failed read is
//!   retried on another online child before the host sees an error.
//! * **Timeouts**: a coarse tick per channel; a child I/O older than the nexus's I/O timeout is
//!   given up (abandoned), its child faulted (`timed_out`), and the host I/O completes from the
//!   other children. Parents with abandoned legs are not reused until those legs come back.
//! * **Range locks**: a write overlapping a segment that a rebuild is copying waits on the
//!   channel (retried every few microseconds) until the copy is done.
//! * **Write intent**: a write to a region whose bit in the write-intent bitmap is not durable
//!   yet waits the same way while the intent task writes it (see `crate::intent`).
//! * **Write order**: a write overlapping another write in flight (on any reactor) waits on
//!   the channel until that one has completed on every child (module `order`), so that every
//!   child applies overlapping writes in the same order. It is retried as soon as a write of
//!   its own channel completes, and every few microseconds otherwise. It claims its blocks
//!   last, once nothing else can make it wait.
//!
//! No lock per I/O, and no allocation but the small shared-memory handle of a write's buffer
//! (one per buffer, instead of a copy of the data per extra child): host I/Os live in a
//! per-channel slab of parents; the routing snapshot is refreshed only when its epoch moves;
//! gate counters are per channel.

mod complete;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_bdev::{
    Bdev, BdevChannel, BdevError, BdevInfo, BdevIo, IoBuf, IoChannel, IoFlags, IoSink, IoType,
    SgList,
};
use shoal_reactor::{Reactor, TimerId};

use crate::gate::{ChanCounters, Gate};
use crate::nexus::Nexus;
use crate::routing::{ChildShared, MAX_CHILDREN, Role, Routing, nth_slot, slot_bit, slots};
use crate::state::FaultReason;

/// How often parked I/Os (range-locked, or waiting for a fault to be recorded) are retried.
const PARK_POLL: Duration = Duration::from_micros(20);
/// Ticks of the timeout clock per I/O timeout: an I/O times out 3 to 4 ticks after it started.
const TICKS_PER_TIMEOUT: u64 = 4;
/// One read in this many goes to another child than the fastest (to notice it got faster).
const PROBE_EVERY: u64 = 64;
const NO_LEG: u8 = u8::MAX;

/// The leg tag: parent index (up to 42 bits), parent generation (16) and child slot (6). The
/// channel a leg went to is found from its parent's `ver_mark`.
#[inline]
fn leg_tag(pidx: u32, gen16: u16, slot: usize) -> u64 {
    (u64::from(pidx) << 22) | (u64::from(gen16) << 6) | (u64::try_from(slot).unwrap_or(0) & 63)
}

#[inline]
fn split_tag(tag: u64) -> (usize, u16, usize) {
    let pidx = usize::try_from(tag >> 22).unwrap_or(usize::MAX);
    let gen16 = u16::try_from((tag >> 6) & 0xffff).unwrap_or(0);
    let slot = usize::try_from(tag & 63).unwrap_or(0);
    (pidx, gen16, slot)
}

/// A host write waiting for a range lock: the I/O, its sink and tag.
type Parked = (BdevIo, Rc<dyn IoSink>, u64);

/// A channel to one child.
struct ChildChan {
    chan: IoChannel,
    child: Arc<ChildShared>,
    /// Which opening of a child channel this is (counted over all slots, never reused).
    ver: u64,
    /// Recent read latency, nanoseconds (EWMA, 1/8).
    ewma_ns: Cell<u64>,
}

/// One host I/O in flight.
#[derive(Default)]
struct Parent {
    live: bool,
    seq: u16,
    sink: Option<Rc<dyn IoSink>>,
    tag: u64,
    io_type: Option<IoType>,
    offset: u64,
    blocks: u64,
    /// The host's `BdevIo` while no leg has it.
    host: Option<BdevIo>,
    /// The slot whose leg carries the host's buffers.
    host_leg: u8,
    pending: u64,
    ok: u64,
    /// Children tried (reads).
    tried: u64,
    /// Legs given up after a timeout, not back yet.
    abandoned: u64,
    /// The newest child channel version when the pending legs were sent: a leg went to the
    /// channel its slot had then (the newest version of that slot not above this one).
    ver_mark: u64,
    parity: u8,
    in_gate: bool,
    /// Holds its blocks in the write order (released when every leg has answered).
    ordered: bool,
    tick: u64,
    started: Option<Instant>,
    err: Option<BdevError>,
}

impl Parent {
    /// What every free parent is (a new one, or one that `retire` ended and whose abandoned
    /// legs all came back): a read counts on it instead of writing these fields again.
    fn debug_check_free(&self) {
        debug_assert!(!self.live && self.sink.is_none() && self.host.is_none());
        debug_assert!(self.err.is_none() && self.started.is_none());
        debug_assert!(self.abandoned == 0 && !self.in_gate && !self.ordered);
    }

    /// Whether this write must not be answered yet: a child still recorded in the metadata as
    /// in sync (`online`, the nexus's `online_mask`) does not have it, because its leg failed,
    /// or because the child had already left the I/O path when the write started (the window
    /// between the I/O path taking a failed child out and the control task recording it). Were
    /// the write answered, a crash now could restart the volume from that child without it.
    fn lacks_recorded(&self, online: u64) -> bool {
        self.io_type != Some(IoType::Read) && online & !self.ok != 0
    }

    /// Ends a parent whose host I/O is answered now: its sink and tag, and whether its slot is
    /// free again (not while legs given up after a timeout are still out).
    fn retire(&mut self) -> (Option<Rc<dyn IoSink>>, u64, bool) {
        self.live = false;
        self.err = None;
        self.started = None;
        (self.sink.take(), self.tag, self.abandoned == 0)
    }
}

impl Bdev for Nexus {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn supports(&self, io_type: IoType) -> bool {
        match io_type {
            IoType::Read | IoType::Write | IoType::Flush => true,
            IoType::WriteZeroes => self.write_zeroes,
            IoType::Unmap => self.unmap,
        }
    }

    fn supports_flags(&self, io_type: IoType, flags: IoFlags) -> bool {
        // Every leg carries the host's flags to its child, and a FUA write is answered only
        // when every in-sync child has answered its FUA leg. Children are checked for FUA
        // when they join (`types::check_spec`).
        flags == IoFlags::FUA
            && matches!(io_type, IoType::Read | IoType::Write | IoType::WriteZeroes)
    }

    fn create_channel(
        self: Arc<Self>,
        reactor: &Reactor,
    ) -> Result<Box<dyn BdevChannel>, BdevError> {
        Ok(Box::new(crate::io::NexusChannel::new(self, reactor)))
    }
}

/// The nexus's channel on one reactor.
pub(crate) struct NexusChannel(Rc<Chan>);

pub(crate) struct Chan {
    me: Weak<Chan>,
    reactor: Reactor,
    nexus: Arc<Nexus>,
    counters: Arc<ChanCounters>,
    routing: RefCell<Arc<Routing>>,
    epoch: Cell<u64>,
    children: RefCell<Vec<Option<ChildChan>>>,
    /// Slots with an open child channel.
    open_mask: Cell<u64>,
    next_ver: Cell<u64>,
    /// Child channels replaced or closed, kept for legs still out on them.
    retired: RefCell<VecDeque<(usize, u64, Arc<ChildShared>)>>,
    parents: RefCell<Vec<Parent>>,
    free: RefCell<Vec<u32>>,
    /// Writes waiting for a rebuild's range lock.
    parked_lock: RefCell<VecDeque<Parked>>,
    /// Writes waiting for an overlapping write in flight (the write order).
    parked_order: RefCell<VecDeque<Parked>>,
    /// This reactor's lane in the write order (`None`: no lane left, writes unordered).
    lane: Option<usize>,
    /// Parents waiting for a fault to be recorded before they answer.
    parked_ack: RefCell<Vec<u32>>,
    /// Abandoned legs by tag, with their child.
    abandoned: RefCell<Vec<(u64, Arc<ChildShared>)>>,
    park_timer: Cell<Option<TimerId>>,
    timeout_timer: Cell<Option<TimerId>>,
    tick: Cell<u64>,
    rr: Cell<u64>,
}

impl NexusChannel {
    pub(crate) fn new(nexus: Arc<Nexus>, reactor: &Reactor) -> NexusChannel {
        let counters = nexus.gate.register();
        let routing = RefCell::new(Arc::new(Routing::default()));
        let lane = nexus.order.lane();
        if lane.is_none() {
            tracing::error!(
                nexus = %nexus.info.name,
                reactor = reactor.index(),
                "nexus: no write-order lane left for this reactor: its overlapping writes are not ordered"
            );
        }
        let chan = Rc::new_cyclic(|me| Chan {
            me: me.clone(),
            reactor: reactor.clone(),
            nexus,
            counters,
            routing,
            epoch: Cell::new(0),
            children: RefCell::new(Vec::new()),
            open_mask: Cell::new(0),
            next_ver: Cell::new(0),
            retired: RefCell::default(),
            parents: RefCell::default(),
            free: RefCell::default(),
            parked_lock: RefCell::default(),
            parked_order: RefCell::default(),
            lane,
            parked_ack: RefCell::default(),
            abandoned: RefCell::default(),
            park_timer: Cell::new(None),
            timeout_timer: Cell::new(None),
            tick: Cell::new(0),
            rr: Cell::new(0),
        });
        chan.refresh();
        chan.start_timeout_clock();
        NexusChannel(chan)
    }
}

impl BdevChannel for NexusChannel {
    // The submission path down to the child's channel is inlined into this one frame, so that
    // the request is not copied from frame to frame on its way (in-process nexus null reads +2%).
    #[inline(always)]
    fn submit(&self, io: BdevIo, sink: Rc<dyn IoSink>, tag: u64) {
        self.0.counters.count_submit();
        self.0.submit(io, sink, tag);
    }
}

// Dropping a `NexusChannel` drops its `Chan` once no leg is out any more (legs hold it as
// their sink). Its timers hold weak references and stop by themselves then; until then the
// timeout clock keeps running, so a leg stuck on a hung child is still given up (and leaves
// the gate, which barriers wait on).

/// The error of a host I/O when no child can take it.
pub(crate) fn faulted_error(nexus: &Nexus) -> BdevError {
    BdevError::Os(std::io::Error::other(format!(
        "nexus {} is faulted: no healthy child",
        nexus.info.name
    )))
}

impl Chan {
    /// Takes the latest routing snapshot if it changed, opening and closing child channels.
    fn refresh(&self) {
        let e = self.nexus.epoch.load(std::sync::atomic::Ordering::SeqCst);
        if e == self.epoch.get() {
            return;
        }
        let r = self.nexus.routing();
        self.epoch.set(e);
        let mut failed: Vec<(usize, u64)> = Vec::new();
        {
            let mut children = self.children.borrow_mut();
            if children.len() < MAX_CHILDREN {
                children.resize_with(MAX_CHILDREN, || None);
            }
            let mut open = 0u64;
            for (slot, cc) in children.iter_mut().enumerate() {
                let want = r
                    .route(slot)
                    .filter(|rt| rt.role != Role::Track)
                    .map(|rt| rt.child.clone());
                let keep = match (&want, cc.as_ref()) {
                    (Some(w), Some(c)) => w.id == c.child.id,
                    (None, None) => true,
                    _ => false,
                };
                if !keep {
                    if let Some(old) = cc.take() {
                        let mut ret = self.retired.borrow_mut();
                        ret.push_back((slot, old.ver, old.child));
                        while ret.len() > 4 * MAX_CHILDREN {
                            ret.pop_front();
                        }
                    }
                    if let Some(w) = want {
                        match shoal_bdev::open_channel(&w.bdev) {
                            Ok(chan) => {
                                let ver = self.next_ver.get() + 1;
                                self.next_ver.set(ver);
                                *cc = Some(ChildChan {
                                    chan,
                                    child: w,
                                    ver,
                                    ewma_ns: Cell::new(0),
                                });
                            }
                            Err(e) => {
                                tracing::warn!(slot, "nexus: cannot open a child channel: {e}");
                                failed.push((slot, w.id));
                            }
                        }
                    }
                }
                if cc.is_some() {
                    open |= slot_bit(slot);
                }
            }
            self.open_mask.set(open);
        }
        *self.routing.borrow_mut() = r;
        for (slot, id) in failed {
            self.nexus.child_failed(slot, id, FaultReason::Disconnected);
        }
    }

    /// The child of a pending leg of a parent whose legs were sent at `ver_mark` (see
    /// [`Parent::ver_mark`]): the slot's current channel if it is not newer than the mark,
    /// otherwise the newest retired one that is not. Never a child that took the slot later.
    fn leg_child_at(&self, slot: usize, ver_mark: u64) -> Option<Arc<ChildShared>> {
        let children = self.children.borrow();
        if let Some(Some(c)) = children.get(slot)
            && c.ver <= ver_mark
        {
            return Some(c.child.clone());
        }
        self.retired
            .borrow()
            .iter()
            .filter(|(s, v, _)| *s == slot && *v <= ver_mark)
            .max_by_key(|(_, v, _)| *v)
            .map(|(_, _, c)| c.clone())
    }

    fn alloc_parent(&self) -> u32 {
        if let Some(i) = self.free.borrow_mut().pop() {
            return i;
        }
        let mut parents = self.parents.borrow_mut();
        parents.push(Parent::default());
        u32::try_from(parents.len() - 1).unwrap_or(u32::MAX)
    }

    fn sink(&self) -> Option<Rc<dyn IoSink>> {
        self.me.upgrade().map(|c| c as Rc<dyn IoSink>)
    }

    #[inline(always)]
    fn submit(&self, io: BdevIo, sink: Rc<dyn IoSink>, tag: u64) {
        if io.io_type == IoType::Read {
            // Reads stay out of the gate: nothing waits for them (they take no range lock, and
            // a read still out on a removed child is recognised by its tag when it returns).
            self.refresh();
            self.start_read(io, sink, tag);
        } else {
            let parity = self.nexus.gate.enter(&self.counters);
            self.refresh();
            self.start_write(io, sink, tag, parity);
        }
    }

    fn fail_now(&self, io: BdevIo, sink: Rc<dyn IoSink>, tag: u64, parity: Option<u8>) {
        if let Some(p) = parity {
            Gate::leave(&self.counters, p);
        }
        let e = faulted_error(&self.nexus);
        self.reactor.complete_io(sink, tag, io, Err(e));
    }

    /// Picks a child to read from among `cand` (online, open, not tried yet; `local`: the
    /// local ones among them) for a read at nexus block `offset`.
    #[inline]
    fn pick_read(&self, cand: u64, local: u64, offset: u64) -> usize {
        if local.is_power_of_two() {
            // One local child (the usual case): no choice to make.
            return usize::try_from(local.trailing_zeros()).unwrap_or(0);
        }
        if local != 0 {
            return nth_slot(local, self.nexus.geo.seg_of(offset));
        }
        self.pick_fastest(cand)
    }

    /// Among remote children `cand`: the one with the lowest recent latency, or every
    /// `PROBE_EVERY`-th read another one.
    fn pick_fastest(&self, cand: u64) -> usize {
        let n = self.rr.get().wrapping_add(1);
        self.rr.set(n);
        if n.is_multiple_of(PROBE_EVERY) {
            return nth_slot(cand, n / PROBE_EVERY);
        }
        let children = self.children.borrow();
        slots(cand)
            .min_by_key(|&s| {
                children
                    .get(s)
                    .and_then(Option::as_ref)
                    .map_or(u64::MAX, |c| c.ewma_ns.get())
            })
            .unwrap_or(0)
    }

    #[inline(always)]
    fn start_read(&self, mut io: BdevIo, sink: Rc<dyn IoSink>, tag: u64) {
        // The leg's offset in the child, set first: written just before the request is handed
        // on, the new offset would still sit in the store buffer when the move reloads the
        // request in wider pieces, and that reload would wait for it (store forwarding fails).
        let offset = io.offset_blocks;
        io.offset_blocks = offset.saturating_add(self.nexus.geo.meta_blocks);
        let (cand, local) = {
            let r = self.routing.borrow();
            let cand = r.read_mask & self.open_mask.get();
            (cand, cand & r.local_mask)
        };
        if cand == 0 {
            io.offset_blocks = offset;
            return self.fail_now(io, sink, tag, None);
        }
        let slot = self.pick_read(cand, local, offset);
        let remote = local & slot_bit(slot) == 0;
        let pidx = self.alloc_parent();
        let gen16 = {
            let mut parents = self.parents.borrow_mut();
            let Some(p) = parents.get_mut(pidx as usize) else {
                drop(parents);
                io.offset_blocks = offset;
                return self.fail_now(io, sink, tag, None);
            };
            p.debug_check_free();
            // Kept in a register: read back from the slot, the 16-bit counter would be loaded
            // together with the flags stored next to it, and that wider load waits for all
            // three stores to reach the cache (store forwarding fails).
            let seq = p.seq.wrapping_add(1);
            p.seq = seq;
            p.live = true;
            p.sink = Some(sink);
            p.tag = tag;
            p.io_type = Some(IoType::Read);
            p.offset = offset;
            p.blocks = io.num_blocks;
            p.host = None;
            p.host_leg = u8::try_from(slot).unwrap_or(NO_LEG);
            p.pending = slot_bit(slot);
            p.ok = 0;
            p.tried = slot_bit(slot);
            p.tick = self.tick.get();
            p.ver_mark = self.next_ver.get();
            // What a free parent already is (see `Parent::retire`) is not written again: no
            // error, no start time, no abandoned legs, not in the gate. A read does not consult
            // `parity`.
            if remote {
                p.started = Some(Instant::now());
            }
            seq
        };
        self.send_leg(pidx, gen16, slot, io);
    }

    /// Submits a leg to the child channel of `slot`.
    #[inline(always)]
    fn send_leg(&self, pidx: u32, gen16: u16, slot: usize, io: BdevIo) {
        let Some(sink) = self.sink() else { return };
        let children = self.children.borrow();
        match children.get(slot).and_then(Option::as_ref) {
            Some(c) => {
                let t = leg_tag(pidx, gen16, slot);
                // The host's I/O was checked on the nexus's channel; a child is at least the
                // nexus's size plus the metadata, so only its state and range are checked again.
                c.chan.submit_checked_above(io, sink, t);
            }
            None => {
                // The routing moved on between picking and sending: fail the leg through the
                // usual completion path (from the loop).
                let t = leg_tag(pidx, gen16, slot);
                self.reactor
                    .complete_io(sink, t, io, Err(BdevError::Closed));
            }
        }
    }

    fn start_write(&self, io: BdevIo, sink: Rc<dyn IoSink>, tag: u64, parity: u8) {
        let nx = &self.nexus;
        let is_flush = io.io_type == IoType::Flush;
        let (first, last) = nx.geo.segs(io.offset_blocks, io.num_blocks);
        if !is_flush && nx.gate.is_locked(first, last) {
            Gate::leave(&self.counters, parity);
            self.parked_lock.borrow_mut().push_back((io, sink, tag));
            self.arm_park_timer();
            return;
        }
        let r = self.routing.borrow();
        if r.read_mask == 0 {
            drop(r);
            return self.fail_now(io, sink, tag, Some(parity));
        }
        if !is_flush && !nx.intent.ready(first, last) {
            // Its write-intent bit is not durable yet: ask for it and wait (see `intent`).
            drop(r);
            nx.intent.request(first, last);
            Gate::leave(&self.counters, parity);
            self.parked_lock.borrow_mut().push_back((io, sink, tag));
            self.arm_park_timer();
            return;
        }
        // The write order last: from here on nothing parks the write, so a claim is always
        // released by `finish` (or below if the parent slab fails).
        let ordered = !is_flush && nx.order.enabled() && self.lane.is_some();
        if ordered && !self.claim(io.offset_blocks, io.num_blocks) {
            drop(r);
            Gate::leave(&self.counters, parity);
            self.parked_order.borrow_mut().push_back((io, sink, tag));
            self.arm_park_timer();
            return;
        }
        if !is_flush && r.track_mask != 0 {
            for s in slots(r.track_mask) {
                if let Some(rt) = r.route(s) {
                    rt.child.dirty.mark(first, last);
                }
            }
        }
        let open = self.open_mask.get();
        let targets = r.write_mask & open;
        // Children that should take the write but have no channel: as if the leg failed.
        let missing = r.write_mask & !open;
        if !is_flush {
            for s in slots(missing) {
                if let Some(rt) = r.route(s) {
                    rt.child.dirty.mark(first, last);
                }
            }
        }
        drop(r);
        let pidx = self.alloc_parent();
        let host_slot = slots(targets).next();
        let gen16 = {
            let mut parents = self.parents.borrow_mut();
            let Some(p) = parents.get_mut(pidx as usize) else {
                drop(parents);
                self.unclaim(ordered, io.offset_blocks, io.num_blocks);
                return self.fail_now(io, sink, tag, Some(parity));
            };
            p.debug_check_free();
            // In a register, as in `start_read`.
            let seq = p.seq.wrapping_add(1);
            p.seq = seq;
            p.live = true;
            p.sink = Some(sink);
            p.tag = tag;
            p.io_type = Some(io.io_type);
            p.offset = io.offset_blocks;
            p.blocks = io.num_blocks;
            p.host = None;
            p.host_leg = host_slot.map_or(NO_LEG, |s| u8::try_from(s).unwrap_or(NO_LEG));
            p.pending = targets;
            p.ok = 0;
            p.tried = 0;
            p.abandoned = 0;
            p.parity = parity;
            p.in_gate = true;
            p.ordered = ordered;
            p.tick = self.tick.get();
            p.ver_mark = self.next_ver.get();
            p.started = None;
            p.err = None;
            seq
        };
        let Some(host_slot) = host_slot else {
            // No child can take it: answer from the loop.
            self.finish(pidx, true, Some(io));
            return;
        };
        let meta = nx.geo.meta_blocks;
        let mut io = io;
        for s in slots(targets & !slot_bit(host_slot)) {
            let leg = copy_leg(&mut io, meta);
            self.send_leg(pidx, gen16, s, leg);
        }
        if !is_flush {
            io.offset_blocks += meta;
        }
        self.send_leg(pidx, gen16, host_slot, io);
    }

    /// Claims a write's blocks in the write order (see module `order`).
    #[inline]
    fn claim(&self, offset: u64, blocks: u64) -> bool {
        self.lane
            .is_none_or(|l| self.nexus.order.claim(l, offset, blocks))
    }

    /// Gives back what [`Chan::claim`] took, if `ordered`.
    #[inline]
    fn unclaim(&self, ordered: bool, offset: u64, blocks: u64) {
        if ordered && let Some(l) = self.lane {
            self.nexus.order.release(l, offset, blocks);
        }
    }

    fn arm_park_timer(&self) {
        if self.park_timer.get().is_some() {
            return;
        }
        let me = self.me.clone();
        let id = self.reactor.every(PARK_POLL, move || {
            me.upgrade().is_some_and(|c| c.poll_parked())
        });
        self.park_timer.set(Some(id));
    }

    fn start_timeout_clock(&self) {
        let t = self.nexus.io_timeout;
        if t.is_zero() {
            return;
        }
        let period =
            (t / u32::try_from(TICKS_PER_TIMEOUT).unwrap_or(4)).max(Duration::from_millis(1));
        let me = self.me.clone();
        let id = self
            .reactor
            .every(period, move || me.upgrade().is_some_and(|c| c.on_tick()));
        self.timeout_timer.set(Some(id));
    }
}

/// A leg carrying a host write (or a data-less operation) for a second child. The data is
/// shared with the host's buffers, not copied: every leg only reads it, and a child that wants
/// to write into a buffer gets its own copy (`IoBuf` copies on write).
fn copy_leg(io: &mut BdevIo, meta: u64) -> BdevIo {
    match io.io_type {
        IoType::Write => {
            let bufs: SgList = match io.bufs.as_mut_slice() {
                // One buffer (the usual case): no iterator over the list.
                [one] => SgList::from_buf([one.share()]),
                many => many.iter_mut().map(IoBuf::share).collect(),
            };
            BdevIo::write(io.offset_blocks + meta, io.num_blocks, bufs).with_flags(io.flags)
        }
        IoType::Flush => BdevIo::flush(),
        t => BdevIo {
            io_type: t,
            flags: io.flags,
            offset_blocks: io.offset_blocks + meta,
            num_blocks: io.num_blocks,
            bufs: SgList::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_roundtrip() {
        let t = leg_tag(0xffab_cdef, 0xfedc, 63);
        assert_eq!(split_tag(t), (0xffab_cdef, 0xfedc, 63));
        assert_eq!(split_tag(leg_tag(0, 0, 0)), (0, 0, 0));
    }
}
