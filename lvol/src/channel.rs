//! A volume's I/O path on one reactor.
//!
//! An I/O is cut at cluster boundaries. When every cluster it touches is on one contiguous
//! run of the base (always within one cluster, and across clusters a thick volume allocated
//! in one run), it goes to the base as it is, its offset translated: no copy, no allocation.
//! Otherwise each piece is its own base I/O with a buffer of its own (copied), and the pieces
//! of a read that no cluster backs are zero-filled (or read from the parent of a clone).
//!
//! A write to a cluster without one asks the pool's home reactor to allocate it (a message;
//! the answer comes back as a message) and waits: the home writes the whole cluster (zeroes,
//! or the parent's data for a clone; a write that covers the cluster whole travels to the home
//! and is itself the fill) durably, makes the mapping durable in the journal, and
//! only then publishes it in the map, so that no write can be acknowledged (FUA or not) on a
//! cluster whose mapping a crash could lose. Write zeroes and deallocate over whole clusters of
//! a thin volume free them the same way.
//!
//! Every I/O counts itself in the channel's `started` before it reads the map (its number is
//! the count before it), and `finished` is the number of I/Os, counted in the order they
//! started, of which every one has completed (I/Os complete out of order: one slow I/O holds
//! `finished` back until it is done). The home reuses a freed cluster only once every
//! channel's `finished` has passed the `started` it saw after unmapping it (with a
//! process-wide barrier between, `shoal_reactor::process_barrier`, so that the I/O path
//! needs no locked instruction).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use shoal_bdev::buf::{sg_copy_in, sg_copy_out};
use shoal_bdev::{
    BdevChannel, BdevError, BdevIo, IoBuf, IoChannel, IoSink, IoType, SgList, open_channel,
};
use shoal_reactor::Reactor;

use crate::state::{ChanCounters, ClusterMap, LvolBdev, LvolShared, Lvs, chain_phys, map_phys};
use crate::store::FreeKind;

/// How often a write retries its allocation when the cluster was freed again meanwhile.
const MAX_ALLOC_ROUNDS: u32 = 8;
const FAST: u64 = 1 << 63;

thread_local! {
    static CHANS: RefCell<HashMap<u64, Weak<Chan>>> = RefCell::new(HashMap::new());
    /// Channels dropped by their user with I/O still out, kept until it has all come back.
    static DRAINING: RefCell<HashMap<u64, Rc<Chan>>> = RefCell::new(HashMap::new());
}
static NEXT_CHAN: AtomicU64 = AtomicU64::new(1);

/// The reactor's channel to a volume.
pub(crate) struct LvolChannel {
    chan: Rc<Chan>,
}

struct Slot {
    sink: Option<Rc<dyn IoSink>>,
    tag: u64,
    io: Option<BdevIo>,
    /// The user's offset (the fast path rewrites the request's offset for the base).
    offset: u64,
    /// Byte offset in the user's buffers of each part in flight.
    parts: Vec<usize>,
    outstanding: u32,
    result: Result<(), BdevError>,
    alloc_rounds: u32,
    /// The I/O's number in the channel's start order.
    seq: u64,
    /// Held while the volume is frozen; the home answers when it thaws.
    thawing: bool,
}

struct Chan {
    lvol: Arc<LvolBdev>,
    sh: Arc<LvolShared>,
    base: IoChannel,
    reactor: Reactor,
    counters: Arc<ChanCounters>,
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
    /// Whether each I/O from number `done_below` on has completed.
    window: RefCell<VecDeque<bool>>,
    /// Every I/O numbered below this has completed (published as `counters.finished`).
    done_below: Cell<u64>,
    id: u64,
    me: Weak<Chan>,
    bs: u64,
    /// Whether the process-wide barrier is available (else a full fence per I/O).
    asym: bool,
    /// The ancestors' maps (nearest first) as of `LvolShared::chain_gen`.
    chain: RefCell<(u64, Vec<ClusterMap>)>,
    /// The volume's map as of `LvolShared::map_gen`.
    map: RefCell<(u64, ClusterMap)>,
    /// Dropped by its user while I/O was out: leaves `DRAINING` once it has all finished.
    dropped: Cell<bool>,
}

/// What one cluster-sized piece of an I/O maps to.
#[derive(Clone, Copy, Debug)]
struct Piece {
    /// Blocks into the I/O.
    at: u64,
    /// Blocks.
    len: u64,
    /// Base block, if the piece is backed (by the volume or, for a read, an ancestor).
    base: Option<u64>,
    /// Cluster index in the volume.
    index: u64,
    /// Whether the volume itself owns the cluster.
    own: bool,
    /// Whether the piece covers its whole cluster.
    whole: bool,
}

fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Release);
}

impl LvolChannel {
    pub(crate) fn open(
        lvol: Arc<LvolBdev>,
        reactor: &Reactor,
    ) -> Result<Box<dyn BdevChannel>, BdevError> {
        let lvs = lvol.lvs().ok_or(BdevError::Closed)?;
        let base = open_channel(lvs.base())?;
        let counters = Arc::new(ChanCounters::default());
        lvol.shared
            .chans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(counters.clone());
        let id = NEXT_CHAN.fetch_add(1, Ordering::Relaxed);
        let sh = lvol.shared.clone();
        let gen0 = sh.chain_gen.load(Ordering::Acquire);
        let chain = RefCell::new((gen0, chain_maps(&sh)));
        let map_gen = sh.map_gen.load(Ordering::Acquire);
        let map = RefCell::new((map_gen, sh.map()));
        let bs = u64::from(lvol.info.block_size);
        let chan = Rc::new_cyclic(|me| Chan {
            lvol,
            sh,
            base,
            reactor: reactor.clone(),
            counters,
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            window: RefCell::new(VecDeque::new()),
            done_below: Cell::new(0),
            id,
            me: me.clone(),
            bs,
            asym: shoal_reactor::process_barrier_available(),
            chain,
            map,
            dropped: Cell::new(false),
        });
        CHANS.with(|c| c.borrow_mut().insert(id, Rc::downgrade(&chan)));
        Ok(Box::new(LvolChannel { chan }))
    }
}

impl Drop for LvolChannel {
    fn drop(&mut self) {
        let c = &self.chan;
        if c.counters.started.load(Ordering::Acquire) == c.counters.finished.load(Ordering::Acquire)
        {
            c.forget();
        } else {
            // I/O still out (at the base, or at the home for an allocation): the channel
            // stays until it has all come back, so that the answers find it and its count
            // finishes (a freeze or a freed cluster waits for that count).
            c.dropped.set(true);
            DRAINING.with(|d| d.borrow_mut().insert(c.id, c.clone()));
        }
    }
}

impl BdevChannel for LvolChannel {
    fn submit(&self, io: BdevIo, sink: Rc<dyn IoSink>, tag: u64) {
        let c = &self.chan;
        let seq = c.counters.started.load(Ordering::Relaxed);
        bump(&c.counters.started);
        c.window.borrow_mut().push_back(false);
        // Pairs with the home's barrier after it unmaps a cluster: either it sees this I/O
        // started, or this I/O sees the cluster unmapped.
        if c.asym {
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
        } else {
            std::sync::atomic::fence(Ordering::SeqCst);
        }
        let slot = c.take_slot(sink, tag, io.offset_blocks, seq);
        c.admit(slot, io);
    }
}

impl Chan {
    fn take_slot(&self, sink: Rc<dyn IoSink>, tag: u64, offset: u64, seq: u64) -> u32 {
        let mut slots = self.slots.borrow_mut();
        let s = Slot {
            sink: Some(sink),
            tag,
            io: None,
            offset,
            parts: Vec::new(),
            outstanding: 0,
            result: Ok(()),
            alloc_rounds: 0,
            seq,
            thawing: false,
        };
        if let Some(i) = self.free.borrow_mut().pop()
            && let Some(x) = slots.get_mut(i as usize)
        {
            *x = s;
            return i;
        }
        slots.push(s);
        u32::try_from(slots.len() - 1).unwrap_or(u32::MAX)
    }

    fn me(&self) -> Rc<Chan> {
        // The channel is alive while a method of it runs: the upgrade cannot fail.
        self.me
            .upgrade()
            .unwrap_or_else(|| unreachable!("channel used after drop"))
    }

    /// Completes slot `slot` with `io` to its user.
    fn finish(&self, slot: u32, mut io: BdevIo, result: Result<(), BdevError>) {
        let (sink, tag, seq) = {
            let mut slots = self.slots.borrow_mut();
            let Some(s) = slots.get_mut(slot as usize) else {
                return;
            };
            io.offset_blocks = s.offset;
            s.io = None;
            s.parts.clear();
            (s.sink.take(), s.tag, s.seq)
        };
        self.free.borrow_mut().push(slot);
        self.count_finished(seq);
        if let Some(sink) = sink {
            sink.io_done(tag, io, result);
        }
    }

    /// Marks I/O number `seq` completed and publishes how many I/Os, in start order, have all
    /// completed: a freed cluster must wait for the oldest I/O still out, not for as many
    /// completions as there were I/Os started.
    fn count_finished(&self, seq: u64) {
        let mut w = self.window.borrow_mut();
        let mut below = self.done_below.get();
        if let Some(done) = usize::try_from(seq.wrapping_sub(below))
            .ok()
            .and_then(|i| w.get_mut(i))
        {
            *done = true;
        }
        while w.front() == Some(&true) {
            w.pop_front();
            below += 1;
        }
        self.done_below.set(below);
        self.counters.finished.store(below, Ordering::Release);
        if self.dropped.get() && below == self.counters.started.load(Ordering::Relaxed) {
            // The last I/O of a dropped channel: let it go (on a later pass, not under
            // this call, which a strong reference of its caller keeps alive).
            self.dropped.set(false);
            let id = self.id;
            self.reactor.defer(move || {
                if let Some(c) = DRAINING.with(|d| d.borrow_mut().remove(&id)) {
                    c.forget();
                }
            });
        }
    }

    /// The channel is gone and has no I/O out: its answers and counters are no longer needed.
    fn forget(&self) {
        CHANS.with(|c| c.borrow_mut().remove(&self.id));
        let mut chans = self.sh.chans.lock().unwrap_or_else(|e| e.into_inner());
        chans.retain(|x| !Arc::ptr_eq(x, &self.counters));
    }

    /// Completes on a later pass (never from inside `submit`).
    fn finish_later(&self, slot: u32, io: BdevIo, result: Result<(), BdevError>) {
        self.reactor
            .complete_io(self.me(), slot_tag(slot) | FAST, io, result);
    }

    /// Dispatches an I/O that has counted itself started, unless the volume is frozen: then
    /// it is held (counted finished, so that the freeze can complete) until the home thaws it.
    fn admit(&self, slot: u32, io: BdevIo) {
        if io.io_type == IoType::Flush || !self.sh.frozen.load(Ordering::Acquire) {
            return self.dispatch(slot, io);
        }
        let seq = {
            let mut slots = self.slots.borrow_mut();
            let Some(s) = slots.get_mut(slot as usize) else {
                return;
            };
            s.io = Some(io);
            s.thawing = true;
            s.seq
        };
        self.count_finished(seq);
        self.ask_home(slot, HomeAsk::Thaw);
    }

    /// A held I/O (counted finished) counts itself started again, under a new number.
    fn restart(&self, slot: u32) {
        let seq = self.counters.started.load(Ordering::Relaxed);
        bump(&self.counters.started);
        self.window.borrow_mut().push_back(false);
        if let Some(s) = self.slots.borrow_mut().get_mut(slot as usize) {
            s.seq = seq;
        }
    }

    /// A held I/O goes on: it counts itself started again.
    fn resume(&self, slot: u32, io: BdevIo) {
        self.restart(slot);
        if self.asym {
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
        } else {
            std::sync::atomic::fence(Ordering::SeqCst);
        }
        self.admit(slot, io);
    }

    /// The ancestors' maps, nearest first (refreshed when the home changed them).
    fn chain(&self) -> std::cell::Ref<'_, Vec<ClusterMap>> {
        let g = self.sh.chain_gen.load(Ordering::Acquire);
        if self.chain.borrow().0 != g {
            *self.chain.borrow_mut() = (g, chain_maps(&self.sh));
        }
        std::cell::Ref::map(self.chain.borrow(), |c| &c.1)
    }

    /// The volume's map (refreshed when a resize replaced it).
    fn own_map(&self) -> std::cell::Ref<'_, ClusterMap> {
        let g = self.sh.map_gen.load(Ordering::Acquire);
        if self.map.borrow().0 != g {
            *self.map.borrow_mut() = (g, self.sh.map());
        }
        std::cell::Ref::map(self.map.borrow(), |m| &m.1)
    }

    /// The data cluster of `index` in the nearest ancestor that has it, unless an ancestor
    /// too short to have it comes first ([`chain_phys`]).
    fn ancestor_phys(&self, index: u64) -> Option<u64> {
        chain_phys(self.chain().iter().map(|m| &m[..]), index)
    }

    /// Cuts `[offset, offset + n)` at cluster boundaries.
    fn pieces(&self, offset: u64, n: u64, for_read: bool) -> Vec<Piece> {
        let cb = self.sh.cluster_blocks;
        let map = self.own_map();
        let mut out = Vec::new();
        let mut at = 0;
        while at < n {
            let blk = offset + at;
            let index = blk / cb;
            let within = blk % cb;
            let len = (cb - within).min(n - at);
            let own = map_phys(&map, index);
            let backing = match own {
                Some(p) => Some(p),
                None if for_read => self.ancestor_phys(index),
                None => None,
            };
            out.push(Piece {
                at,
                len,
                base: backing.map(|p| self.sh.data_block + p * cb + within),
                index,
                own: own.is_some(),
                whole: within == 0 && len == cb,
            });
            at += len;
        }
        out
    }

    /// The base block of the whole range, if it is one contiguous backed run.
    fn contiguous(pieces: &[Piece]) -> Option<u64> {
        let first = pieces.first()?.base?;
        let mut next = first;
        for p in pieces {
            if p.base != Some(next) {
                return None;
            }
            next = next.checked_add(p.len)?;
        }
        Some(first)
    }

    fn dispatch(&self, slot: u32, io: BdevIo) {
        let (offset, n) = (io.offset_blocks, io.num_blocks);
        // An I/O checked against the size before a resize and held while it happened is
        // checked again: it must not reach past the new end (one plain load per I/O).
        if io.io_type != IoType::Flush {
            let capacity = self.lvol.info.num_blocks();
            if offset.checked_add(n).is_none_or(|e| e > capacity) {
                let e = BdevError::OutOfRange {
                    offset,
                    count: n,
                    capacity,
                };
                return self.finish_later(slot, io, Err(e));
            }
        }
        match io.io_type {
            IoType::Flush => {
                // Every mapping an I/O relied on was durable before that I/O completed, and
                // every change of the table waits for the journal before it completes: a
                // flush of the base is all that is left to do.
                self.base.submit(io, self.me(), slot_tag(slot) | FAST);
            }
            IoType::Read => {
                let pieces = self.pieces(offset, n, true);
                if let Some(base) = Self::contiguous(&pieces) {
                    let mut io = io;
                    io.offset_blocks = base;
                    return self.base.submit(io, self.me(), slot_tag(slot) | FAST);
                }
                if pieces.iter().all(|p| p.base.is_none()) {
                    let mut io = io;
                    zero_fill(&mut io.bufs, 0, self.bytes(n));
                    return self.finish_later(slot, io, Ok(()));
                }
                self.split(slot, io, &pieces);
            }
            IoType::Write | IoType::WriteZeroes | IoType::Unmap if self.lvol.is_read_only() => {
                self.finish_later(slot, io, Err(BdevError::ReadOnly));
            }
            IoType::Write => {
                let pieces = self.pieces(offset, n, false);
                let missing: Vec<u64> = pieces
                    .iter()
                    .filter(|p| p.base.is_none())
                    .map(|p| p.index)
                    .collect();
                if !missing.is_empty() {
                    // A write of one whole cluster without one is that cluster's fill.
                    if let [p] = pieces.as_slice()
                        && p.whole
                    {
                        return self.write_new_cluster(slot, io, p.index);
                    }
                    return self.allocate(slot, io, missing);
                }
                if let Some(base) = Self::contiguous(&pieces) {
                    let mut io = io;
                    io.offset_blocks = base;
                    return self.base.submit(io, self.me(), slot_tag(slot) | FAST);
                }
                self.split(slot, io, &pieces);
            }
            IoType::WriteZeroes | IoType::Unmap => self.zero(slot, io),
        }
    }

    fn bytes(&self, blocks: u64) -> usize {
        usize::try_from(blocks.saturating_mul(self.bs)).unwrap_or(usize::MAX)
    }

    /// Write zeroes and deallocate. On a thin volume whole clusters are freed (they read
    /// zeroes once unmapped); the rest goes to the base where a cluster backs it. A clone's
    /// cluster that it does not own yet is allocated first (its parent's data must not show
    /// through the zeroes).
    fn zero(&self, slot: u32, io: BdevIo) {
        let pieces = self.pieces(io.offset_blocks, io.num_blocks, false);
        let has_parent = !self.chain().is_empty();
        let thin = self.sh.is_thin();
        if has_parent {
            let missing: Vec<u64> = pieces
                .iter()
                .filter(|p| !(p.own || p.whole && thin))
                .map(|p| p.index)
                .collect();
            if !missing.is_empty() {
                return self.allocate(slot, io, missing);
            }
        }
        let mut to_free = Vec::new();
        let mut parts = Vec::new();
        for p in &pieces {
            if thin && p.whole {
                if p.own || has_parent {
                    to_free.push(p.index);
                }
            } else if let Some(b) = p.base {
                parts.push((b, p.len));
            }
        }
        if to_free.is_empty() && parts.is_empty() {
            return self.finish_later(slot, io, Ok(()));
        }
        let io_type = io.io_type;
        let flags = io.flags;
        {
            let mut slots = self.slots.borrow_mut();
            let Some(s) = slots.get_mut(slot as usize) else {
                return;
            };
            s.outstanding =
                u32::try_from(parts.len() + usize::from(!to_free.is_empty())).unwrap_or(u32::MAX);
            s.parts = vec![0; parts.len()];
            s.io = Some(io);
        }
        for (i, (b, len)) in parts.into_iter().enumerate() {
            let part = BdevIo {
                io_type,
                flags,
                offset_blocks: b,
                num_blocks: len,
                bufs: SgList::new(),
            };
            self.base
                .submit(part, self.me(), slot_tag(slot) | part_tag(i));
        }
        if !to_free.is_empty() {
            let kind = if has_parent {
                FreeKind::CloneZero
            } else {
                FreeKind::Unmap
            };
            self.ask_home(slot, HomeAsk::Free(to_free, kind));
        }
    }

    /// Sends the pieces of an I/O that is not one contiguous run, each with its own buffer.
    fn split(&self, slot: u32, mut io: BdevIo, pieces: &[Piece]) {
        let is_read = io.io_type == IoType::Read;
        let mut parts = Vec::new();
        for p in pieces {
            let at = self.bytes(p.at);
            let len = self.bytes(p.len);
            match p.base {
                Some(b) => parts.push((at, len, b, p.len)),
                None => zero_fill(&mut io.bufs, at, len),
            }
        }
        let flags = io.flags;
        let io_type = io.io_type;
        let mut bufs_out = Vec::with_capacity(parts.len());
        for &(at, len, _, _) in &parts {
            let mut buf = IoBuf::zeroed(len);
            if !is_read {
                sg_copy_out(&io.bufs, at, buf.as_mut_slice());
            }
            bufs_out.push(buf);
        }
        {
            let mut slots = self.slots.borrow_mut();
            let Some(s) = slots.get_mut(slot as usize) else {
                return;
            };
            s.outstanding = u32::try_from(parts.len()).unwrap_or(u32::MAX);
            s.parts = parts.iter().map(|p| p.0).collect();
            s.io = Some(io);
        }
        for (i, ((_, _, b, nb), buf)) in parts.into_iter().zip(bufs_out).enumerate() {
            let part = BdevIo {
                io_type,
                flags,
                offset_blocks: b,
                num_blocks: nb,
                bufs: SgList::from_buf([buf]),
            };
            self.base
                .submit(part, self.me(), slot_tag(slot) | part_tag(i));
        }
    }

    /// One part of a split I/O (or a freeing request) is done.
    fn part_done(
        &self,
        slot: u32,
        part: Option<usize>,
        pio: Option<BdevIo>,
        r: Result<(), BdevError>,
    ) {
        let done = {
            let mut slots = self.slots.borrow_mut();
            let Some(s) = slots.get_mut(slot as usize) else {
                return;
            };
            if let Err(e) = r
                && s.result.is_ok()
            {
                s.result = Err(e);
            }
            if let (Some(i), Some(pio)) = (part, pio)
                && let Some(&at) = s.parts.get(i)
                && pio.io_type == IoType::Read
                && let Some(uio) = s.io.as_mut()
            {
                for b in &pio.bufs {
                    sg_copy_in(&mut uio.bufs, at, b.as_slice());
                }
            }
            s.outstanding = s.outstanding.saturating_sub(1);
            if s.outstanding == 0 {
                let r = std::mem::replace(&mut s.result, Ok(()));
                s.io.take().map(|io| (io, r))
            } else {
                None
            }
        };
        if let Some((io, r)) = done {
            self.finish(slot, io, r);
        }
    }

    /// Parks the I/O and asks the home to allocate `missing` clusters.
    fn allocate(&self, slot: u32, io: BdevIo, missing: Vec<u64>) {
        let rounds = {
            let mut slots = self.slots.borrow_mut();
            let Some(s) = slots.get_mut(slot as usize) else {
                return;
            };
            s.alloc_rounds += 1;
            s.io = Some(io);
            s.alloc_rounds
        };
        if rounds > MAX_ALLOC_ROUNDS {
            let io = self.take_io(slot);
            if let Some(io) = io {
                let e = BdevError::Os(std::io::Error::other(
                    "the clusters of this write were freed again while it was allocating them",
                ));
                self.finish_later(slot, io, Err(e));
            }
            return;
        }
        self.ask_home(slot, HomeAsk::Alloc(missing));
    }

    /// Sends a write of cluster `index` whole, a cluster without one, to the home, which
    /// allocates the cluster with the write as its fill (`store::alloc::alloc_write`).
    fn write_new_cluster(&self, slot: u32, io: BdevIo, index: u64) {
        let Some(lvs) = self.lvol.lvs() else {
            return self.finish_later(slot, io, Err(BdevError::Closed));
        };
        let back = self.reactor.handle();
        let chan_id = self.id;
        let reply = move |io: BdevIo, r: Result<bool, BdevError>| {
            back.send(move || {
                let chan = CHANS.with(|c| c.borrow().get(&chan_id).and_then(Weak::upgrade));
                if let Some(chan) = chan {
                    chan.new_cluster_written(slot, io, index, r);
                }
            });
        };
        if let Err(io) =
            Lvs::request_alloc_write(&lvs, self.lvol.uuid(), index, io, Box::new(reply))
        {
            self.finish_later(slot, io, Err(BdevError::Closed));
        }
    }

    /// The home answered a whole-cluster write: done, or (the cluster is mapped or being
    /// allocated by another write) to go the common way.
    fn new_cluster_written(&self, slot: u32, io: BdevIo, index: u64, r: Result<bool, BdevError>) {
        match r {
            Ok(true) => self.finish(slot, io, Ok(())),
            Ok(false) => self.allocate(slot, io, vec![index]),
            Err(e) => {
                if matches!(e, BdevError::NoSpace(_)) {
                    self.sh.nospace_errors.fetch_add(1, Ordering::Relaxed);
                }
                self.finish(slot, io, Err(e));
            }
        }
    }

    fn take_io(&self, slot: u32) -> Option<BdevIo> {
        self.slots
            .borrow_mut()
            .get_mut(slot as usize)
            .and_then(|s| s.io.take())
    }

    fn ask_home(&self, slot: u32, ask: HomeAsk) {
        // A held I/O counted itself finished: it counts itself started again to finish.
        let held = matches!(ask, HomeAsk::Thaw);
        let Some(lvs) = self.lvol.lvs() else {
            if let Some(io) = self.take_io(slot) {
                if held {
                    self.restart(slot);
                }
                self.finish_later(slot, io, Err(BdevError::Closed));
            }
            return;
        };
        let back = self.reactor.handle();
        let chan_id = self.id;
        let lvol = self.lvol.uuid();
        let reply = move |r: Result<(), BdevError>| {
            back.send(move || {
                let chan = CHANS.with(|c| c.borrow().get(&chan_id).and_then(Weak::upgrade));
                if let Some(chan) = chan {
                    chan.home_answered(slot, r);
                }
            });
        };
        let sent = match ask {
            HomeAsk::Alloc(idx) => Lvs::request_alloc(&lvs, lvol, idx, Box::new(reply)),
            HomeAsk::Free(idx, kind) => Lvs::request_free(&lvs, lvol, idx, kind, Box::new(reply)),
            HomeAsk::Thaw => Lvs::request_thaw(&lvs, lvol, Box::new(reply)),
        };
        if !sent && let Some(io) = self.take_io(slot) {
            if held {
                self.restart(slot);
            }
            self.finish_later(slot, io, Err(BdevError::Closed));
        }
    }

    /// The home answered an allocation (retry the I/O) or a freeing (one part done).
    fn home_answered(&self, slot: u32, r: Result<(), BdevError>) {
        let (alloc, io) = {
            let mut slots = self.slots.borrow_mut();
            let Some(s) = slots.get_mut(slot as usize) else {
                return;
            };
            if s.thawing {
                s.thawing = false;
                let io = s.io.take();
                drop(slots);
                if let Some(io) = io {
                    match r {
                        Ok(()) => self.resume(slot, io),
                        Err(e) => {
                            self.restart(slot);
                            self.finish(slot, io, Err(e));
                        }
                    }
                }
                return;
            }
            // A freeing is one of the slot's outstanding parts; an allocation parks the I/O
            // with none.
            if s.outstanding > 0 {
                (false, None)
            } else {
                (true, s.io.take())
            }
        };
        if !alloc {
            return self.part_done(slot, None, None, r);
        }
        let Some(io) = io else { return };
        match r {
            Ok(()) => self.dispatch(slot, io),
            Err(e) => {
                if matches!(e, BdevError::NoSpace(_)) {
                    self.sh.nospace_errors.fetch_add(1, Ordering::Relaxed);
                }
                self.finish(slot, io, Err(e));
            }
        }
    }
}

/// The maps of `sh`'s ancestors, nearest first.
fn chain_maps(sh: &LvolShared) -> Vec<ClusterMap> {
    sh.chain().iter().map(|p| p.map()).collect()
}

enum HomeAsk {
    Alloc(Vec<u64>),
    Free(Vec<u64>, FreeKind),
    Thaw,
}

fn slot_tag(slot: u32) -> u64 {
    u64::from(slot) << 32
}

fn part_tag(i: usize) -> u64 {
    u64::try_from(i).unwrap_or(0) & 0x7fff_ffff
}

fn zero_fill(bufs: &mut [IoBuf], mut at: usize, mut len: usize) {
    static ZERO: [u8; 4096] = [0; 4096];
    while len > 0 {
        let n = len.min(ZERO.len());
        sg_copy_in(bufs, at, &ZERO[..n]);
        at += n;
        len -= n;
    }
}

impl IoSink for Chan {
    fn io_done(&self, tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        let slot = u32::try_from((tag & !FAST) >> 32).unwrap_or(u32::MAX);
        if tag & FAST != 0 {
            return self.finish(slot, io, result);
        }
        let part = usize::try_from(tag & 0x7fff_ffff).unwrap_or(usize::MAX);
        self.part_done(slot, Some(part), Some(io), result);
    }
}
