//! Shoal's reactors: one pinned thread per core, each polling its own io_uring, for block
//! devices and sockets alike, and the I/O buffers they move.
//!
//! This crate is the bottom of the data path; it depends on no other Shoal crate. It holds:
//! - the [`Reactor`] (this module) and its parts: the ring operations and the buffers they own
//!   until completion ([`ops`]), timers, pollers, messages from other threads ([`ReactorHandle`])
//!   and the set of pinned reactor threads ([`ReactorSet`]);
//! - [`buf`]: aligned I/O buffers recycled through per-thread pools (no allocation per I/O),
//!   shared without a copy when one write goes to several places;
//! - [`io`]: the block-I/O request ([`io::BdevIo`]) that the reactor completes to its
//!   [`io::IoSink`], with its result ([`io::BdevError`]). `shoal-bdev` builds its devices on
//!   these and re-exports them (and this whole crate, as `shoal_bdev::reactor`) unchanged. They
//!   live here rather than behind a trait so that a ring slot and the deferred-completion queue
//!   hold the request by value, with no generic parameter on `Reactor` (whose thread-local
//!   [`Reactor::current`] could not be generic) and no boxing per I/O.
//!
//! A reactor owns an io_uring, a slab of in-flight operations (see [`ops`]), timers, pollers,
//! a queue of deferred block-I/O completions and a channel of messages from other threads. Its
//! loop does, in order: submit the entries queued during the last pass (one `io_uring_enter`
//! for all of them), reap completions straight from the shared ring memory, deliver deferred
//! completions, run expired timers, run pollers, and run messages. File and disk operations
//! (`disk.rs`) are by default handed to the kernel as soon as they are queued
//! ([`ReactorConfig::disk_submit_at_once`]); socket operations (receive, send, accept, poll)
//! complete to an [`ops::OpHandler`] with their buffers.
//!
//! **Adaptive polling.** While passes find work, the loop spins. After [`ReactorConfig::idle_spin`]
//! without work it sleeps in `io_uring_enter` until a completion arrives, the next timer is due,
//! or another thread sends a message (which writes the reactor's eventfd, read by an operation
//! kept armed in the ring). An idle reactor therefore costs nothing. `idle_spin: None` busy-polls
//! forever, as SPDK does, for comparison.
//!
//! **Rules** (see `ARCHITECTURE.md`): nothing here blocks except the deliberate sleep; nothing is
//! shared with other reactors but the message channel; completions are never delivered from
//! inside the call that submitted the work (always from the loop), so a handler may submit more
//! work from its completion without re-entering itself.

pub mod buf;
mod config;
mod disk;
mod fence;
mod handle;
pub mod io;
mod membarrier;
pub mod ops;
mod set;
mod timer;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use io_uring::IoUring;

use crate::buf::{IoBuf, SgList};
pub use config::{PollStatus, ReactorConfig, ReactorStats};
use disk::DeferredIo;
use fence::StoreFence;
pub use handle::ReactorHandle;
use handle::Shared;
pub use membarrier::{process_barrier, process_barrier_available};
use ops::{OpDesc, OpHandler, Payload, Slots, Target};
use set::new_ring;
pub use set::{ReactorSet, parse_core_mask, set_listen_backlog, shutdown_socket};
pub use timer::TimerId;
use timer::{Expired, Timers};

/// A message run on a reactor thread.
pub type Message = Box<dyn FnOnce() + Send>;

type Poller = Rc<dyn Fn() -> PollStatus>;

struct Inner {
    ring: RefCell<IoUring>,
    slots: RefCell<Slots>,
    /// Entries that did not fit in the submission queue; pushed on the next pass.
    backlog: RefCell<VecDeque<io_uring::squeue::Entry>>,
    deferred: RefCell<VecDeque<DeferredIo>>,
    deferred_calls: RefCell<VecDeque<Box<dyn FnOnce()>>>,
    timers: RefCell<Timers>,
    pollers: RefCell<Vec<(u64, Poller)>>,
    next_poller: Cell<u64>,
    rx: Receiver<Message>,
    handle: ReactorHandle,
    wake_armed: Cell<bool>,
    /// The reactor's own operations in flight (wake-up read, sleep timeouts).
    internal_ops: Cell<usize>,
    /// File and disk operations in flight: while there are some, the reactor keeps spinning
    /// (their completions are due soon), whatever `idle_spin` says.
    disk_in_flight: Cell<usize>,
    /// A poller said [`PollStatus::Waiting`] in the last pass.
    peer_waiting: Cell<bool>,
    /// The reactor is stopping: new operations are dropped instead of submitted.
    stopping: Cell<bool>,
    /// The earliest deadline a sleep timeout is armed for.
    sleep_timeout_armed: Cell<Option<Instant>>,
    /// Streaming stores waiting for their fence (see `fence.rs`).
    fence: StoreFence,
    config: ReactorConfig,
}

thread_local! {
    static CURRENT: RefCell<Option<Reactor>> = const { RefCell::new(None) };
}

/// A reactor, usable only on the thread that created it.
#[derive(Clone)]
pub struct Reactor(Rc<Inner>);

impl Reactor {
    /// Creates a reactor on the current thread and makes it [`Reactor::current`].
    pub fn new(
        index: usize,
        core: Option<usize>,
        config: ReactorConfig,
    ) -> std::io::Result<Reactor> {
        let ring = new_ring(config.ring_entries)?;
        // SAFETY: eventfd(2) with valid flags has no memory-safety preconditions.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `efd` is a freshly created descriptor that nothing else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(efd) };
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            index,
            core,
            sleeping: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            eventfd,
            stats: ReactorStats::default(),
        });
        let r = Reactor(Rc::new(Inner {
            ring: RefCell::new(ring),
            slots: RefCell::default(),
            backlog: RefCell::default(),
            deferred: RefCell::default(),
            deferred_calls: RefCell::default(),
            timers: RefCell::default(),
            pollers: RefCell::default(),
            next_poller: Cell::new(0),
            rx,
            handle: ReactorHandle { tx, shared },
            wake_armed: Cell::new(false),
            internal_ops: Cell::new(0),
            stopping: Cell::new(false),
            disk_in_flight: Cell::new(0),
            peer_waiting: Cell::new(false),
            sleep_timeout_armed: Cell::new(None),
            fence: StoreFence::default(),
            config,
        }));
        CURRENT.with(|c| *c.borrow_mut() = Some(r.clone()));
        Ok(r)
    }

    /// The reactor of the current thread, if it has one.
    pub fn current() -> Option<Reactor> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// A `Send` handle to this reactor.
    pub fn handle(&self) -> ReactorHandle {
        self.0.handle.clone()
    }

    /// This reactor's index in its set.
    pub fn index(&self) -> usize {
        self.0.handle.shared.index
    }

    fn push(&self, entry: io_uring::squeue::Entry) {
        let mut ring = self.0.ring.borrow_mut();
        // SAFETY: every pointer in `entry` refers to memory owned by its slot in `self.0.slots`
        // (see `ops::Slots::prepare`), which is released only after the completion is reaped.
        let pushed = unsafe { ring.submission().push(&entry) };
        if pushed.is_err() {
            self.0.backlog.borrow_mut().push_back(entry);
        }
    }

    /// Queues a file or disk operation, and enters the kernel for it at once if so configured.
    fn submit_disk_op(&self, desc: OpDesc, target: Target) {
        if self.0.stopping.get() {
            return;
        }
        self.0.disk_in_flight.set(self.0.disk_in_flight.get() + 1);
        self.submit_op(desc, target, Payload::None);
        if self.0.config.disk_submit_at_once {
            self.submit_pending(false);
        }
    }

    fn submit_op(&self, desc: OpDesc, target: Target, payload: Payload) {
        if self.0.stopping.get() && !matches!(target, Target::CancelAll) {
            // Stopping: the operation is dropped with its buffers (the kernel never saw them).
            return;
        }
        let entry = self.0.slots.borrow_mut().prepare(desc, target, payload);
        self.push(entry);
    }

    /// Receives into the spare capacity of `buf` (from its length to its capacity). The handler
    /// gets the buffer back with its length grown by the bytes received (result 0: peer closed).
    pub fn recv(&self, fd: RawFd, buf: IoBuf, h: Rc<dyn OpHandler>, tag: u64) {
        self.submit_op(
            OpDesc::Recv { fd },
            Target::Handler(h, tag),
            Payload::Buf(buf),
        );
    }

    /// Sends the concatenation of `bufs`, skipping its first `skip` bytes, with one `sendmsg`
    /// (`MSG_NOSIGNAL`). The result may be a short count; the handler resubmits the rest.
    pub fn send(&self, fd: RawFd, bufs: SgList, skip: usize, h: Rc<dyn OpHandler>, tag: u64) {
        self.submit_op(
            OpDesc::SendMsg { fd, skip },
            Target::Handler(h, tag),
            Payload::Bufs(bufs),
        );
    }

    /// Like [`Reactor::send`] for a long queue of buffers kept in a reusable vector (at most
    /// [`ops::MAX_IOVECS`] buffers go in one `sendmsg`).
    pub fn send_vec(
        &self,
        fd: RawFd,
        bufs: Vec<IoBuf>,
        skip: usize,
        h: Rc<dyn OpHandler>,
        tag: u64,
    ) {
        self.submit_op(
            OpDesc::SendMsg { fd, skip },
            Target::Handler(h, tag),
            Payload::Vec(bufs),
        );
    }

    /// Accepts a connection on a listening socket. On success the result is 0 and the payload
    /// is [`Payload::Fd`] with the new connection; otherwise the result is a negated errno.
    pub fn accept(&self, fd: RawFd, h: Rc<dyn OpHandler>, tag: u64) {
        self.submit_op(
            OpDesc::Accept { fd },
            Target::Handler(h, tag),
            Payload::None,
        );
    }

    /// Waits until `fd` is readable.
    pub fn poll_readable(&self, fd: RawFd, h: Rc<dyn OpHandler>, tag: u64) {
        self.submit_op(
            OpDesc::PollIn { fd },
            Target::Handler(h, tag),
            Payload::None,
        );
    }

    /// Records that this thread issued streaming (non-temporal) stores: the reactor fences
    /// them before it delivers any completion (see [`Reactor::complete_io`]), so a device
    /// that writes with them completes through `complete_io` and needs no fence of its own.
    #[inline]
    pub fn owe_store_fence(&self) {
        self.0.fence.owe();
    }

    /// Fences the streaming stores recorded by [`Reactor::owe_store_fence`] now, if any: for
    /// a device about to read memory it may have written with them on this pass.
    #[inline]
    pub fn settle_store_fence(&self) {
        self.0.fence.settle();
    }

    /// Runs `f` on a later pass of the loop (control path: allocates).
    pub fn defer(&self, f: impl FnOnce() + 'static) {
        self.0.deferred_calls.borrow_mut().push_back(Box::new(f));
    }

    /// Runs `f` once after `after`.
    pub fn call_after(&self, after: Duration, f: impl FnOnce() + 'static) -> TimerId {
        self.0
            .timers
            .borrow_mut()
            .once(Instant::now() + after, Box::new(f))
    }

    /// Runs `f` every `period` for as long as it returns `true`.
    pub fn every(&self, period: Duration, f: impl Fn() -> bool + 'static) -> TimerId {
        self.0.timers.borrow_mut().every(period, Rc::new(f))
    }

    /// Cancels a timer (a no-op if it already ran).
    pub fn cancel_timer(&self, id: TimerId) {
        self.0.timers.borrow_mut().cancel(id);
    }

    /// Registers a poller, run on every pass; returns its id for [`Reactor::remove_poller`].
    /// A poller that keeps answering `Busy` keeps the reactor from sleeping.
    pub fn add_poller(&self, f: impl Fn() -> PollStatus + 'static) -> u64 {
        let id = self.0.next_poller.get() + 1;
        self.0.next_poller.set(id);
        self.0.pollers.borrow_mut().push((id, Rc::new(f)));
        id
    }

    /// Removes a poller.
    pub fn remove_poller(&self, id: u64) {
        self.0.pollers.borrow_mut().retain(|(i, _)| *i != id);
    }

    /// Ring operations in flight on behalf of users (the reactor's own are not counted).
    pub fn in_flight(&self) -> usize {
        self.0.slots.borrow().in_flight - self.0.internal_ops.get()
    }

    /// Runs one pass of the loop; returns whether it found work.
    pub fn poll_once(&self) -> bool {
        let inner = &self.0;
        let stats = &inner.handle.shared.stats;
        stats.passes.fetch_add(1, Ordering::Relaxed);
        let mut work = self.submit_pending(false);
        work |= self.reap() > 0;
        work |= self.run_deferred();
        work |= self.run_timers();
        let mut waiting = false;
        // By index, one poller at a time (a poller may add or remove pollers): no copy of the
        // list on every pass. A removal during the pass may skip one poller until the next.
        let mut i = 0;
        while let Some(p) = self.poller_at(i) {
            match p() {
                PollStatus::Busy => work = true,
                PollStatus::Waiting => waiting = true,
                PollStatus::Idle => {}
            }
            i += 1;
        }
        inner.peer_waiting.set(waiting);
        while let Ok(m) = inner.rx.try_recv() {
            m();
            work = true;
        }
        if work {
            stats.busy_passes.fetch_add(1, Ordering::Relaxed);
        }
        work
    }

    #[inline]
    fn poller_at(&self, i: usize) -> Option<Poller> {
        self.0.pollers.borrow().get(i).map(|(_, p)| p.clone())
    }

    /// Pushes the backlog and enters the kernel if entries are queued (or `wait` is set).
    fn submit_pending(&self, wait: bool) -> bool {
        let mut ring = self.0.ring.borrow_mut();
        {
            let mut backlog = self.0.backlog.borrow_mut();
            let mut sq = ring.submission();
            while let Some(e) = backlog.front() {
                // SAFETY: as in `push`: the entry's memory is owned by its slot until reaped.
                if unsafe { sq.push(e) }.is_err() {
                    break;
                }
                backlog.pop_front();
            }
        }
        let queued = !ring.submission().is_empty();
        // With deferred task running, completions wait in the kernel until an enter asks for
        // events; the kernel raises IORING_SQ_TASKRUN when some do (`submit` then asks).
        let taskrun = ring.submission().taskrun();
        if !queued && !wait && !taskrun {
            return false;
        }
        let res = if wait {
            ring.submit_and_wait(1)
        } else {
            ring.submit()
        };
        match res {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => tracing::error!("io_uring_enter failed: {e}"),
        }
        queued
    }

    fn reap(&self) -> usize {
        let mut n = 0;
        // Only the completions present now: handlers may submit, and an operation the kernel
        // completes inline (a read of a hole, a disk operation entered at once) would otherwise
        // keep this loop going forever and starve timers and messages.
        let mut budget = self.0.ring.borrow_mut().completion().len();
        while budget > 0 {
            // Take a batch out of the ring before calling handlers, which may submit.
            let mut batch: smallvec::SmallVec<[(u64, i32); 64]> = smallvec::SmallVec::new();
            {
                let mut ring = self.0.ring.borrow_mut();
                for cqe in ring.completion().take(budget.min(64)) {
                    batch.push((cqe.user_data(), cqe.result()));
                }
            }
            if batch.is_empty() {
                break;
            }
            budget -= batch.len();
            n += batch.len();
            for (data, res) in batch {
                let taken = self.0.slots.borrow_mut().finish(data, res);
                let Some((target, payload, res)) = taken else {
                    tracing::error!("completion for unknown ring slot {data}");
                    continue;
                };
                match target {
                    Target::Handler(h, tag) => h.op_done(tag, res, payload),
                    Target::Bdev {
                        sink,
                        tag,
                        io,
                        expect,
                    } => {
                        let n = self.0.disk_in_flight.get();
                        self.0.disk_in_flight.set(n.saturating_sub(1));
                        disk::complete_bdev(sink, tag, io, expect, res);
                    }
                    Target::CancelAll => {
                        self.0.internal_ops.set(self.0.internal_ops.get() - 1);
                    }
                    Target::Wake => {
                        self.0.wake_armed.set(false);
                        self.0.internal_ops.set(self.0.internal_ops.get() - 1);
                    }
                    Target::SleepTimeout(at) => {
                        self.0.internal_ops.set(self.0.internal_ops.get() - 1);
                        if self.0.sleep_timeout_armed.get() == Some(at) {
                            self.0.sleep_timeout_armed.set(None);
                        }
                    }
                }
            }
        }
        self.0
            .handle
            .shared
            .stats
            .completions
            .fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Runs the deferred completions and calls queued before this pass. Ones queued while they
    /// run wait for the next pass: a sink that resubmits to a synchronous device (malloc, null)
    /// from its completion would otherwise keep this loop busy forever and starve the ring,
    /// timers and messages.
    fn run_deferred(&self) -> bool {
        // No completion is seen before the streaming stores of the writes it reports.
        self.0.fence.settle();
        let n = self.0.deferred.borrow().len();
        for _ in 0..n {
            let next = self.0.deferred.borrow_mut().pop_front();
            let Some(d) = next else { break };
            d.sink.io_done(d.tag, d.io, d.result);
        }
        let m = self.0.deferred_calls.borrow().len();
        for _ in 0..m {
            let next = self.0.deferred_calls.borrow_mut().pop_front();
            let Some(f) = next else { break };
            f();
        }
        n + m > 0
    }

    fn run_timers(&self) -> bool {
        if self.0.timers.borrow().is_empty() {
            return false;
        }
        let now = Instant::now();
        let mut work = false;
        loop {
            let next = self.0.timers.borrow_mut().pop_expired(now);
            match next {
                None => break,
                Some(Expired::Once(f)) => f(),
                Some(Expired::Every { id, period, f }) => {
                    if f() {
                        self.0.timers.borrow_mut().rearm(id, period, f);
                    } else {
                        self.0.timers.borrow_mut().stopped(id);
                    }
                }
            }
            work = true;
        }
        work
    }

    /// Sleeps in the kernel until a completion, a message or the next timer.
    fn sleep(&self) {
        let inner = &self.0;
        let shared = &inner.handle.shared;
        if !inner.wake_armed.get() {
            let fd = shared.eventfd.as_raw_fd();
            self.submit_op(OpDesc::WakeRead { fd }, Target::Wake, Payload::None);
            inner.wake_armed.set(true);
            inner.internal_ops.set(inner.internal_ops.get() + 1);
        }
        let deadline = inner.timers.borrow_mut().next_deadline();
        if let Some(at) = deadline
            && inner
                .sleep_timeout_armed
                .get()
                .is_none_or(|armed| armed > at)
        {
            // No timeout armed early enough: arm one. A later one still pending just causes a
            // spurious wake-up when it fires.
            let nanos = at.saturating_duration_since(Instant::now()).as_nanos();
            let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
            if nanos == 0 {
                return;
            }
            self.submit_op(
                OpDesc::Timeout { nanos },
                Target::SleepTimeout(at),
                Payload::None,
            );
            inner.internal_ops.set(inner.internal_ops.get() + 1);
            inner.sleep_timeout_armed.set(Some(at));
        }
        shared.sleeping.store(true, Ordering::SeqCst);
        let must_stay_awake = !inner.rx.is_empty()
            || shared.stop.load(Ordering::SeqCst)
            || !inner.deferred.borrow().is_empty()
            || !inner.deferred_calls.borrow().is_empty();
        if !must_stay_awake {
            shared.stats.sleeps.fetch_add(1, Ordering::Relaxed);
            self.submit_pending(true);
        }
        shared.sleeping.store(false, Ordering::SeqCst);
    }

    /// Runs the loop until [`ReactorHandle::stop`] is called.
    pub fn run(&self) {
        let shared = self.0.handle.shared.clone();
        let mut last_work = Instant::now();
        while !shared.stop.load(Ordering::Relaxed) {
            if self.poll_once() {
                last_work = Instant::now();
                continue;
            }
            let idle = last_work.elapsed();
            if let Some(spin) = self.0.config.idle_spin
                && self.0.disk_in_flight.get() == 0
                && idle >= spin
                && !(self.0.peer_waiting.get() && idle < self.0.config.peer_wait_spin)
            {
                self.sleep();
                last_work = Instant::now();
            }
        }
        self.stop_and_drain();
    }

    /// Leaves the reactor with nothing in flight: cancels every operation in the ring, waits
    /// (at most 2 s) for the kernel to give their buffers back, then drops every handler,
    /// timer, poller and deferred completion. Handlers may hold the reactor (connections do),
    /// so this is also what lets them, and the sockets they own, be freed.
    fn stop_and_drain(&self) {
        let inner = &self.0;
        inner.stopping.set(true);
        // Whatever this thread wrote with streaming stores is fenced before it goes.
        inner.fence.settle();
        if inner.slots.borrow().in_flight > 0 {
            self.submit_op(OpDesc::CancelAll, Target::CancelAll, Payload::None);
            inner.internal_ops.set(inner.internal_ops.get() + 1);
            let deadline = Instant::now() + Duration::from_secs(2);
            while inner.slots.borrow().in_flight > 0 && Instant::now() < deadline {
                self.submit_pending(false);
                if self.reap() == 0 {
                    std::thread::yield_now();
                }
            }
        }
        let left = inner.slots.borrow().in_flight;
        if left > 0 {
            // The kernel may still write into these buffers: keep them alive for good.
            tracing::error!("reactor stopped with {left} operation(s) the kernel did not return");
            std::mem::forget(std::mem::take(&mut *inner.slots.borrow_mut()));
        } else {
            let slots = std::mem::take(&mut *inner.slots.borrow_mut());
            drop(slots);
        }
        inner.deferred.borrow_mut().clear();
        inner.deferred_calls.borrow_mut().clear();
        inner.pollers.borrow_mut().clear();
        *inner.timers.borrow_mut() = Timers::default();
    }

    /// Runs passes until `done` returns true or `timeout` passes; returns whether `done` held.
    /// For tests and tools that drive a reactor on their own thread.
    pub fn run_until(&self, timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        loop {
            if done() {
                return true;
            }
            if start.elapsed() > timeout {
                return false;
            }
            if !self.poll_once() {
                std::hint::spin_loop();
            }
        }
    }
}

#[cfg(test)]
mod tests;
