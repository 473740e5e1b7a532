//! `error`: a fault-injecting device stacked on another one (SPDK's `vbdev_error`, named
//! `EE_<base>`, product name `Error Injection Disk`).
//!
//! Without injections it passes every request straight to its base device (the base completes
//! to the caller directly: no extra work per I/O beyond one relaxed atomic load). An
//! [`Injection`] chooses I/O types, optionally a block range, how many matching I/Os to let
//! through first (`skip`) and how many to act on (`count`, SPDK's `num`; `None` = until cleared),
//! and what to do to them ([`InjectKind`], SPDK's `error_type`):
//! - `Failure`: complete with [`BdevError::Injected`] without reaching the base;
//! - `Pending`: hold the I/O: it never completes until released ([`ErrorBdev::clear`],
//!   [`ErrorBdev::resume_pending`]: it goes on to the base; [`ErrorBdev::fail_pending`]: it fails,
//!   as SPDK's reset aborts it). [`ErrorBdev::hang`] holds everything: a device that went silent;
//! - `CorruptData`: XOR one byte of the data: of a write before it goes to the base, of a read
//!   after it comes back.
//!
//! Injections can be changed from any thread at any time. The rules sit behind a mutex that the
//! I/O path takes only while at least one rule exists (an atomic flag says so); that keeps
//! SPDK's exact counting across reactors. Held I/Os stay on the channel (reactor) that received
//! them; each such channel checks for release commands every millisecond while it holds any.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ops::Range;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use uuid::Uuid;

use crate::reactor::{Reactor, TimerId};
use crate::{
    Bdev, BdevChannel, BdevError, BdevInfo, BdevIo, IoChannel, IoFlags, IoSink, IoType, buf,
};

/// SPDK's product name for this device.
pub const PRODUCT_NAME: &str = "Error Injection Disk";
/// How often a channel holding I/Os looks for a release command.
const RELEASE_POLL: Duration = Duration::from_millis(1);

/// A set of I/O types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoTypeSet(u8);

impl IoTypeSet {
    /// No type.
    pub const NONE: IoTypeSet = IoTypeSet(0);
    /// Every type (SPDK's `all`).
    pub const ALL: IoTypeSet = IoTypeSet(0b1_1111);

    const fn bit(t: IoType) -> u8 {
        match t {
            IoType::Read => 1,
            IoType::Write => 2,
            IoType::Flush => 4,
            IoType::WriteZeroes => 8,
            IoType::Unmap => 16,
        }
    }

    /// The set holding only `t`.
    pub const fn only(t: IoType) -> IoTypeSet {
        IoTypeSet(Self::bit(t))
    }

    /// This set plus `t`.
    pub const fn with(self, t: IoType) -> IoTypeSet {
        IoTypeSet(self.0 | Self::bit(t))
    }

    /// Whether `t` is in the set.
    pub const fn contains(self, t: IoType) -> bool {
        self.0 & Self::bit(t) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl From<IoType> for IoTypeSet {
    fn from(t: IoType) -> IoTypeSet {
        IoTypeSet::only(t)
    }
}

/// What an injection does to the I/Os it catches (SPDK's `error_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectKind {
    /// Complete with [`BdevError::Injected`] without reaching the base device.
    Failure,
    /// Hold the I/O until released (SPDK's `pending`).
    Pending,
    /// XOR the data byte at `offset` (from the start of the I/O's data) with `value` (not 0):
    /// on writes before they reach the base, on reads after the base returns them. Other I/O
    /// types pass unchanged; an offset past the data changes nothing.
    CorruptData {
        /// Byte offset into the I/O's data.
        offset: u64,
        /// Value XORed into that byte.
        value: u8,
    },
}

/// One fault-injection rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// The I/O types it applies to.
    pub io_types: IoTypeSet,
    /// What it does.
    pub kind: InjectKind,
    /// Matching I/Os let through before it starts acting ("fail after N I/Os").
    pub skip: u64,
    /// Matching I/Os it acts on, after `skip` (SPDK's `num`); `None`: all of them until removed.
    pub count: Option<u64>,
    /// Only I/Os touching these blocks match (a flush touches the whole device); `None`: any.
    pub blocks: Option<Range<u64>>,
}

impl Injection {
    /// An injection of `kind` on `io_types`, acting on every matching I/O until removed.
    pub fn new(io_types: impl Into<IoTypeSet>, kind: InjectKind) -> Injection {
        Injection {
            io_types: io_types.into(),
            kind,
            skip: 0,
            count: None,
            blocks: None,
        }
    }

    /// Fails `io_types` with [`BdevError::Injected`].
    pub fn failure(io_types: impl Into<IoTypeSet>) -> Injection {
        Injection::new(io_types, InjectKind::Failure)
    }

    /// Holds `io_types` until released.
    pub fn pending(io_types: impl Into<IoTypeSet>) -> Injection {
        Injection::new(io_types, InjectKind::Pending)
    }

    /// Corrupts the data of `io_types` (see [`InjectKind::CorruptData`]).
    pub fn corrupt(io_types: impl Into<IoTypeSet>, offset: u64, value: u8) -> Injection {
        Injection::new(io_types, InjectKind::CorruptData { offset, value })
    }

    /// Acts on the next `n` matching I/Os only.
    pub fn count(mut self, n: u64) -> Injection {
        self.count = Some(n);
        self
    }

    /// Lets the first `n` matching I/Os through.
    pub fn skip(mut self, n: u64) -> Injection {
        self.skip = n;
        self
    }

    /// Applies only to I/Os touching `blocks`.
    pub fn blocks(mut self, blocks: Range<u64>) -> Injection {
        self.blocks = Some(blocks);
        self
    }

    fn validate(&self) -> Result<(), BdevError> {
        if self.io_types.is_empty() {
            return Err(BdevError::Invalid(
                "an injection needs at least one I/O type".into(),
            ));
        }
        if let InjectKind::CorruptData { value: 0, .. } = self.kind {
            return Err(BdevError::Invalid(
                "corrupt value must not be 0 (XOR with 0)".into(),
            ));
        }
        if self.count == Some(0) {
            return Err(BdevError::Invalid(
                "an injection count must be at least 1".into(),
            ));
        }
        if self.blocks.as_ref().is_some_and(|b| b.start >= b.end) {
            return Err(BdevError::Invalid(
                "an injection block range must not be empty".into(),
            ));
        }
        Ok(())
    }

    fn matches(&self, io: &BdevIo) -> bool {
        if !self.io_types.contains(io.io_type) {
            return false;
        }
        match &self.blocks {
            None => true,
            Some(_) if io.io_type == IoType::Flush => true,
            Some(r) => {
                let end = io.offset_blocks.saturating_add(io.num_blocks);
                io.offset_blocks < r.end && end > r.start
            }
        }
    }
}

/// Identifies an injection rule, to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(u64);

struct Rule {
    id: u64,
    inj: Injection,
    skipped: u64,
    hits: u64,
}

impl Rule {
    fn exhausted(&self) -> bool {
        self.inj.count.is_some_and(|n| self.hits >= n)
    }
}

/// What happens to one I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Act(InjectKind),
}

/// What a release command does to held I/Os.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    Resume,
    Fail,
}

struct Control {
    rules: Vec<Rule>,
    next_id: u64,
    /// The latest release command.
    release: Release,
}

/// A device that injects faults into the I/O of its base device.
pub struct ErrorBdev {
    info: BdevInfo,
    base: Arc<dyn Bdev>,
    /// Whether any rule exists (read without the lock on every I/O).
    armed: AtomicBool,
    control: Mutex<Control>,
    /// Number of release commands so far; channels compare it with what they last applied.
    release_epoch: AtomicU64,
    held: AtomicUsize,
    injected: AtomicU64,
}

impl std::fmt::Debug for ErrorBdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorBdev")
            .field("info", &self.info)
            .field("base", &self.base.info().name)
            .finish()
    }
}

impl ErrorBdev {
    /// Stacks an error-injection device named `EE_<base name>` on `base`, with no injection.
    pub fn create(base: Arc<dyn Bdev>, uuid: Option<Uuid>) -> Result<Arc<ErrorBdev>, BdevError> {
        let b = base.info();
        if b.is_closed() {
            return Err(BdevError::Closed);
        }
        let info = BdevInfo::new(
            format!("EE_{}", b.name),
            uuid,
            b.block_size,
            b.num_blocks(),
            PRODUCT_NAME,
        );
        Ok(Arc::new(ErrorBdev {
            info,
            base,
            armed: AtomicBool::new(false),
            control: Mutex::new(Control {
                rules: Vec::new(),
                next_id: 0,
                release: Release::Resume,
            }),
            release_epoch: AtomicU64::new(0),
            held: AtomicUsize::new(0),
            injected: AtomicU64::new(0),
        }))
    }

    /// The device underneath.
    pub fn base(&self) -> &Arc<dyn Bdev> {
        &self.base
    }

    fn lock(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an injection rule. Rules are tried in the order they were added; the first that
    /// acts on an I/O decides its fate. A rule whose `count` is used up disappears.
    pub fn inject(&self, injection: Injection) -> Result<RuleId, BdevError> {
        injection.validate()?;
        let mut c = self.lock();
        c.next_id += 1;
        let id = c.next_id;
        c.rules.push(Rule {
            id,
            inj: injection,
            skipped: 0,
            hits: 0,
        });
        self.armed.store(true, Ordering::Release);
        Ok(RuleId(id))
    }

    /// Holds every I/O from now on: the device stops answering until [`ErrorBdev::clear`].
    pub fn hang(&self) -> RuleId {
        let mut c = self.lock();
        c.next_id += 1;
        let id = c.next_id;
        let inj = Injection::pending(IoTypeSet::ALL);
        c.rules.push(Rule {
            id,
            inj,
            skipped: 0,
            hits: 0,
        });
        self.armed.store(true, Ordering::Release);
        RuleId(id)
    }

    /// Removes one rule; returns whether it still existed. Held I/Os stay held.
    pub fn remove(&self, id: RuleId) -> bool {
        let mut c = self.lock();
        let before = c.rules.len();
        c.rules.retain(|r| r.id != id.0);
        self.armed.store(!c.rules.is_empty(), Ordering::Release);
        c.rules.len() != before
    }

    /// Removes every rule and lets held I/Os go on to the base device (SPDK's `clear`).
    pub fn clear(&self) {
        let mut c = self.lock();
        c.rules.clear();
        self.armed.store(false, Ordering::Release);
        self.release(c, Release::Resume);
    }

    /// Lets the I/Os held so far go on to the base device; the rules stay.
    pub fn resume_pending(&self) {
        let c = self.lock();
        self.release(c, Release::Resume);
    }

    /// Fails the I/Os held so far with [`BdevError::Injected`] (what SPDK's reset does to
    /// them); the rules stay.
    pub fn fail_pending(&self) {
        let c = self.lock();
        self.release(c, Release::Fail);
    }

    /// A channel applies the latest command to every I/O it held before that command (two
    /// commands within a millisecond: the second wins).
    fn release(&self, mut c: MutexGuard<'_, Control>, what: Release) {
        c.release = what;
        self.release_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// I/Os held now, over all channels.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// I/Os a rule has acted on so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// The rules in force, in order.
    pub fn rules(&self) -> Vec<(RuleId, Injection)> {
        self.lock()
            .rules
            .iter()
            .map(|r| (RuleId(r.id), r.inj.clone()))
            .collect()
    }

    fn decide(&self, io: &BdevIo) -> Verdict {
        if !self.armed.load(Ordering::Acquire) {
            return Verdict::Pass;
        }
        let mut c = self.lock();
        let mut verdict = Verdict::Pass;
        for rule in c.rules.iter_mut() {
            if !rule.inj.matches(io) || rule.exhausted() {
                continue;
            }
            if rule.skipped < rule.inj.skip {
                rule.skipped += 1;
                continue;
            }
            rule.hits += 1;
            verdict = Verdict::Act(rule.inj.kind);
            break;
        }
        if verdict != Verdict::Pass {
            self.injected.fetch_add(1, Ordering::Relaxed);
            c.rules.retain(|r| !r.exhausted());
            self.armed.store(!c.rules.is_empty(), Ordering::Release);
        }
        verdict
    }
}

impl Bdev for ErrorBdev {
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
        let seen = self.release_epoch.load(Ordering::Acquire);
        let inner = Rc::new_cyclic(|me| ChanInner {
            me: me.clone(),
            reactor: reactor.clone(),
            dev: self,
            base,
            held: RefCell::default(),
            seen_epoch: Cell::new(seen),
            timer: Cell::new(None),
        });
        Ok(Box::new(ErrorChannel(inner)))
    }
}

/// An I/O held by a `Pending` rule.
struct Held {
    io: BdevIo,
    sink: Rc<dyn IoSink>,
    tag: u64,
    /// The device's release epoch when it was held: a later command releases it.
    epoch: u64,
}

struct ErrorChannel(Rc<ChanInner>);

struct ChanInner {
    me: Weak<ChanInner>,
    reactor: Reactor,
    dev: Arc<ErrorBdev>,
    base: IoChannel,
    held: RefCell<VecDeque<Held>>,
    seen_epoch: Cell<u64>,
    timer: Cell<Option<TimerId>>,
}

impl BdevChannel for ErrorChannel {
    fn submit(&self, mut io: BdevIo, sink: Rc<dyn IoSink>, tag: u64) {
        let ch = &self.0;
        match ch.dev.decide(&io) {
            Verdict::Pass => ch.base.submit(io, sink, tag),
            Verdict::Act(InjectKind::Failure) => {
                ch.reactor
                    .complete_io(sink, tag, io, Err(BdevError::Injected));
            }
            Verdict::Act(InjectKind::Pending) => ch.hold(io, sink, tag),
            Verdict::Act(InjectKind::CorruptData { offset, value }) => match io.io_type {
                IoType::Write => {
                    corrupt(&mut io.bufs, offset, value);
                    ch.base.submit(io, sink, tag);
                }
                IoType::Read => {
                    let after = Rc::new(CorruptRead {
                        sink,
                        tag,
                        offset,
                        value,
                    });
                    ch.base.submit(io, after, tag);
                }
                _ => ch.base.submit(io, sink, tag),
            },
        }
    }
}

impl ChanInner {
    fn hold(&self, io: BdevIo, sink: Rc<dyn IoSink>, tag: u64) {
        let epoch = self.dev.release_epoch.load(Ordering::Acquire);
        self.held.borrow_mut().push_back(Held {
            io,
            sink,
            tag,
            epoch,
        });
        self.dev.held.fetch_add(1, Ordering::AcqRel);
        if self.timer.get().is_none() {
            let me = self.me.clone();
            let id = self.reactor.every(RELEASE_POLL, move || {
                me.upgrade().is_some_and(|ch| ch.poll_release())
            });
            self.timer.set(Some(id));
        }
    }

    /// Applies a new release command, if any; returns whether I/Os are still held.
    fn poll_release(&self) -> bool {
        let epoch = self.dev.release_epoch.load(Ordering::Acquire);
        if epoch != self.seen_epoch.get() {
            self.seen_epoch.set(epoch);
            let what = self.dev.lock().release;
            loop {
                let next = {
                    let mut held = self.held.borrow_mut();
                    match held.front() {
                        Some(h) if h.epoch < epoch => held.pop_front(),
                        _ => None,
                    }
                };
                let Some(h) = next else { break };
                self.dev.held.fetch_sub(1, Ordering::AcqRel);
                match what {
                    Release::Resume => self.base.submit(h.io, h.sink, h.tag),
                    Release::Fail => {
                        self.reactor
                            .complete_io(h.sink, h.tag, h.io, Err(BdevError::Injected));
                    }
                }
            }
        }
        let still = !self.held.borrow().is_empty();
        if !still {
            self.timer.set(None);
        }
        still
    }
}

impl Drop for ChanInner {
    fn drop(&mut self) {
        if let Some(id) = self.timer.take() {
            self.reactor.cancel_timer(id);
        }
        for h in self.held.get_mut().drain(..) {
            self.dev.held.fetch_sub(1, Ordering::AcqRel);
            self.reactor
                .complete_io(h.sink, h.tag, h.io, Err(BdevError::Closed));
        }
    }
}

/// XORs the byte at `offset` of the data in `bufs` with `value` (nothing past the end).
fn corrupt(bufs: &mut [crate::IoBuf], offset: u64, value: u8) {
    let Ok(offset) = usize::try_from(offset) else {
        return;
    };
    let mut byte = [0u8; 1];
    if buf::sg_copy_out(bufs, offset, &mut byte) == 1 {
        byte[0] ^= value;
        buf::sg_copy_in(bufs, offset, &byte);
    }
}

/// Completion of a read whose data is to be corrupted before the caller sees it.
struct CorruptRead {
    sink: Rc<dyn IoSink>,
    tag: u64,
    offset: u64,
    value: u8,
}

impl IoSink for CorruptRead {
    fn io_done(&self, _tag: u64, mut io: BdevIo, result: Result<(), BdevError>) {
        if result.is_ok() {
            corrupt(&mut io.bufs, self.offset, self.value);
        }
        self.sink.io_done(self.tag, io, result);
    }
}
