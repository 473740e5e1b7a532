//! `delay`: a device that adds latency to the I/O of its base device (SPDK's `vbdev_delay`,
//! product name `delay`).
//!
//! Each read and write goes to the base device at once; when the base completes it, the
//! completion is held for the read or write latency before the caller hears of it. As in SPDK,
//! one I/O in a hundred (chosen at random) gets the p99 latency instead of the average, and
//! flush, unmap and write zeroes are not delayed. Latencies are in microseconds and can be
//! changed at run time from any thread ([`DelayBdev::update_latency`]); held completions keep
//! the deadline they were given, and each kind of completion is released in order, so lowering
//! a latency makes new I/Os wait behind older ones until those have gone (SPDK's "dam").
//!
//! Held completions wait in per-channel queues; one reactor timer, armed for the earliest
//! deadline, releases them (no timer and no allocation per I/O).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::reactor::{Reactor, TimerId};
use crate::{Bdev, BdevChannel, BdevError, BdevInfo, BdevIo, IoChannel, IoFlags, IoSink, IoType};

/// SPDK's product name for this device.
pub const PRODUCT_NAME: &str = "delay";
/// The largest latency accepted: one day, in microseconds.
pub const MAX_LATENCY_US: u64 = 86_400_000_000;

/// Which latency to set (SPDK's `latency_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LatencyType {
    /// Latency of most reads (`avg_read`).
    AvgRead,
    /// Latency of one read in a hundred (`p99_read`).
    P99Read,
    /// Latency of most writes (`avg_write`).
    AvgWrite,
    /// Latency of one write in a hundred (`p99_write`).
    P99Write,
}

impl LatencyType {
    const ALL: [LatencyType; 4] = [
        LatencyType::AvgRead,
        LatencyType::P99Read,
        LatencyType::AvgWrite,
        LatencyType::P99Write,
    ];

    fn index(self) -> usize {
        match self {
            LatencyType::AvgRead => 0,
            LatencyType::P99Read => 1,
            LatencyType::AvgWrite => 2,
            LatencyType::P99Write => 3,
        }
    }
}

/// The four latencies of a delay device, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DelayLatencies {
    /// Latency of most reads.
    pub avg_read_us: u64,
    /// Latency of one read in a hundred.
    pub p99_read_us: u64,
    /// Latency of most writes.
    pub avg_write_us: u64,
    /// Latency of one write in a hundred.
    pub p99_write_us: u64,
}

impl DelayLatencies {
    /// The same latency for every read and write.
    pub fn uniform(us: u64) -> DelayLatencies {
        DelayLatencies {
            avg_read_us: us,
            p99_read_us: us,
            avg_write_us: us,
            p99_write_us: us,
        }
    }

    fn get(&self, t: LatencyType) -> u64 {
        match t {
            LatencyType::AvgRead => self.avg_read_us,
            LatencyType::P99Read => self.p99_read_us,
            LatencyType::AvgWrite => self.avg_write_us,
            LatencyType::P99Write => self.p99_write_us,
        }
    }
}

fn check_latency(us: u64) -> Result<(), BdevError> {
    if us > MAX_LATENCY_US {
        return Err(BdevError::Invalid(format!(
            "latency {us} us is above the maximum of {MAX_LATENCY_US} us"
        )));
    }
    Ok(())
}

/// A device that delays the completions of its base device.
pub struct DelayBdev {
    info: BdevInfo,
    base: Arc<dyn Bdev>,
    /// Microseconds, indexed by [`LatencyType::index`].
    latency_us: [AtomicU64; 4],
}

impl std::fmt::Debug for DelayBdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayBdev")
            .field("info", &self.info)
            .field("base", &self.base.info().name)
            .field("latencies", &self.latencies())
            .finish()
    }
}

impl DelayBdev {
    /// Stacks a delay device named `name` on `base`.
    pub fn create(
        name: &str,
        base: Arc<dyn Bdev>,
        uuid: Option<Uuid>,
        latencies: DelayLatencies,
    ) -> Result<Arc<DelayBdev>, BdevError> {
        for t in LatencyType::ALL {
            check_latency(latencies.get(t))?;
        }
        let b = base.info();
        if b.is_closed() {
            return Err(BdevError::Closed);
        }
        let info = BdevInfo::new(name, uuid, b.block_size, b.num_blocks(), PRODUCT_NAME);
        let latency_us = LatencyType::ALL.map(|t| AtomicU64::new(latencies.get(t)));
        Ok(Arc::new(DelayBdev {
            info,
            base,
            latency_us,
        }))
    }

    /// The device underneath.
    pub fn base(&self) -> &Arc<dyn Bdev> {
        &self.base
    }

    /// Sets one latency, in microseconds; I/Os completed by the base from now on get it.
    pub fn update_latency(&self, which: LatencyType, us: u64) -> Result<(), BdevError> {
        check_latency(us)?;
        self.latency_us[which.index()].store(us, Ordering::Relaxed);
        Ok(())
    }

    /// The current latencies.
    pub fn latencies(&self) -> DelayLatencies {
        let l = |t: LatencyType| self.latency_us[t.index()].load(Ordering::Relaxed);
        DelayLatencies {
            avg_read_us: l(LatencyType::AvgRead),
            p99_read_us: l(LatencyType::P99Read),
            avg_write_us: l(LatencyType::AvgWrite),
            p99_write_us: l(LatencyType::P99Write),
        }
    }

    fn latency(&self, t: LatencyType) -> Duration {
        Duration::from_micros(self.latency_us[t.index()].load(Ordering::Relaxed))
    }
}

impl Bdev for DelayBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn supports(&self, io_type: IoType) -> bool {
        self.base.supports(io_type)
    }

    fn supports_flags(&self, io_type: IoType, flags: IoFlags) -> bool {
        // Requests pass through to the base with their flags.
        self.base.supports_flags(io_type, flags)
    }

    fn create_channel(
        self: Arc<Self>,
        reactor: &Reactor,
    ) -> Result<Box<dyn BdevChannel>, BdevError> {
        let base = crate::open_channel(&self.base)?;
        // Seed the p99 choice differently per channel; any non-zero value will do.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let seed = u64::from(now.map(|d| d.subsec_nanos()).unwrap_or(0))
            ^ u64::try_from(reactor.index()).unwrap_or(0).rotate_left(32);
        let inner = Rc::new_cyclic(|me| ChanInner {
            me: me.clone(),
            reactor: reactor.clone(),
            dev: self,
            base,
            slots: RefCell::default(),
            free: RefCell::default(),
            queues: RefCell::default(),
            timer: Cell::new(None),
            rng: Cell::new(seed | 0x9E37_79B9_0000_0001),
        });
        Ok(Box::new(DelayChannel(inner)))
    }
}

/// The caller of an I/O in flight to the base.
struct Caller {
    sink: Rc<dyn IoSink>,
    tag: u64,
    /// The latency it gets, `None` for flush, unmap and write zeroes.
    class: Option<LatencyType>,
}

/// A completion waiting for its deadline.
struct HeldDone {
    at: Instant,
    sink: Rc<dyn IoSink>,
    tag: u64,
    io: BdevIo,
    result: Result<(), BdevError>,
}

struct DelayChannel(Rc<ChanInner>);

struct ChanInner {
    me: Weak<ChanInner>,
    reactor: Reactor,
    dev: Arc<DelayBdev>,
    base: IoChannel,
    /// Callers of I/Os at the base, indexed by the tag given to the base.
    slots: RefCell<Vec<Option<Caller>>>,
    free: RefCell<Vec<usize>>,
    /// Held completions, one FIFO per latency type.
    queues: RefCell<[VecDeque<HeldDone>; 4]>,
    /// The armed release timer and its deadline.
    timer: Cell<Option<(TimerId, Instant)>>,
    rng: Cell<u64>,
}

impl BdevChannel for DelayChannel {
    fn submit(&self, io: BdevIo, sink: Rc<dyn IoSink>, tag: u64) {
        let ch = &self.0;
        let Some(me) = ch.me.upgrade() else { return };
        let p99 = ch.next_random().is_multiple_of(100);
        let class = match (io.io_type, p99) {
            (IoType::Read, false) => Some(LatencyType::AvgRead),
            (IoType::Read, true) => Some(LatencyType::P99Read),
            (IoType::Write, false) => Some(LatencyType::AvgWrite),
            (IoType::Write, true) => Some(LatencyType::P99Write),
            _ => None,
        };
        let caller = Caller { sink, tag, class };
        let idx = match ch.free.borrow_mut().pop() {
            Some(i) => {
                if let Some(s) = ch.slots.borrow_mut().get_mut(i) {
                    *s = Some(caller);
                }
                i
            }
            None => {
                let mut slots = ch.slots.borrow_mut();
                slots.push(Some(caller));
                slots.len() - 1
            }
        };
        ch.base.submit(io, me, idx as u64);
    }
}

impl ChanInner {
    /// xorshift64: cheap and good enough to pick one I/O in a hundred.
    fn next_random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        x
    }

    /// Makes sure the release timer fires no later than `at`.
    fn arm(&self, at: Instant) {
        if let Some((id, armed)) = self.timer.get() {
            if armed <= at {
                return;
            }
            self.reactor.cancel_timer(id);
        }
        let me = self.me.clone();
        let after = at.saturating_duration_since(Instant::now());
        let id = self.reactor.call_after(after, move || {
            if let Some(ch) = me.upgrade() {
                ch.timer.set(None);
                ch.release_due();
            }
        });
        self.timer.set(Some((id, at)));
    }

    /// Completes every held completion whose deadline has passed, then re-arms the timer.
    fn release_due(&self) {
        let now = Instant::now();
        for q in 0..4 {
            loop {
                let next = {
                    let mut queues = self.queues.borrow_mut();
                    match queues[q].front() {
                        Some(h) if h.at <= now => queues[q].pop_front(),
                        _ => None,
                    }
                };
                let Some(h) = next else { break };
                h.sink.io_done(h.tag, h.io, h.result);
            }
        }
        let earliest = self
            .queues
            .borrow()
            .iter()
            .filter_map(|q| q.front().map(|h| h.at))
            .min();
        if let Some(at) = earliest {
            self.arm(at);
        }
    }
}

impl IoSink for ChanInner {
    fn io_done(&self, tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        let idx = usize::try_from(tag).unwrap_or(usize::MAX);
        let caller = self.slots.borrow_mut().get_mut(idx).and_then(Option::take);
        let Some(caller) = caller else {
            tracing::error!("delay: completion for unknown slot {tag}");
            return;
        };
        self.free.borrow_mut().push(idx);
        let delay = caller.class.map(|c| (c, self.dev.latency(c)));
        match delay {
            Some((class, d)) if !d.is_zero() => {
                let now = Instant::now();
                // MAX_LATENCY_US keeps the deadline far from overflowing an Instant.
                let at = now.checked_add(d).unwrap_or(now);
                let held = HeldDone {
                    at,
                    sink: caller.sink,
                    tag: caller.tag,
                    io,
                    result,
                };
                self.queues.borrow_mut()[class.index()].push_back(held);
                self.arm(at);
            }
            // Called from the reactor loop (a base completion), so completing here is safe.
            _ => caller.sink.io_done(caller.tag, io, result),
        }
    }
}

impl Drop for ChanInner {
    fn drop(&mut self) {
        if let Some((id, _)) = self.timer.take() {
            self.reactor.cancel_timer(id);
        }
        for q in self.queues.get_mut().iter_mut() {
            for h in q.drain(..) {
                self.reactor.complete_io(h.sink, h.tag, h.io, h.result);
            }
        }
    }
}
