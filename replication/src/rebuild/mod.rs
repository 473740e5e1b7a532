//! Online rebuild: a task per rebuilding child on the home reactor copies the child's dirty
//! segments from an online child while host I/O continues.
//!
//! The rebuilding child already receives every host write (it is in the write path before the
//! task starts), so the copy only has to fill in what it missed. For each run of dirty
//! segments (up to [`MAX_COPY_BYTES`]) a worker takes a range lock (module `gate`): writes
//! to those segments wait, writes already running finish, then the worker reads the run from
//! an online child (local first), writes it to the rebuilding child, clears the bits and
//! unlocks. A host write to a segment being copied is therefore either entirely before the
//! copy's read (and copied) or entirely after its write (and applied on top): never lost.
//!
//! Copies are plain writes: the child is flushed every [`FLUSH_EVERY_BYTES`] copied and when
//! the rebuild ends, however it ends, and a copy's segments stay in the rebuild's `unflushed`
//! map until then. When that last flush fails they are marked dirty again, so that a child
//! that lost its volatile cache mid-rebuild (faulted, then re-added: a partial rebuild) copies
//! them again. The child cannot be re-added before (its rebuild is still stopping).
//!
//! [`COPY_WORKERS`] workers run per rebuild, so a read and a write are in flight at once.
//! A `Limiter` (token bucket on reactor timers) caps the copy rate; its default policy is
//! adaptive: full speed while the host is idle, [`DEFAULT_BUSY_MIB_PER_SEC`] while it is not.
//!
//! Here: the copy tasks (`start` and its workers) and the limiter's refill. What the nexus
//! holds of its rebuilds (the rate policy and the limiter's bucket, each rebuild's control and
//! progress, the status types) is in `ctl`, below the nexus, which this module uses.

pub(crate) mod ctl;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shoal_bdev::{BdevIo, IoBuf, IoChannel, SgList, open_channel};

use crate::dirty::DirtyMap;
use crate::exec::{self, LocalFuture};
use crate::gate::MAX_LOCK_SEGMENTS;
use crate::nexus::{Nexus, Op, State};
use crate::routing::{ChildShared, Role, nth_slot, slot_bit};
use crate::state::FaultReason;
use ctl::{Bucket, Limiter, RebuildCtl};
pub use ctl::{
    DEFAULT_BUSY_MIB_PER_SEC, RebuildOutcome, RebuildRate, RebuildStatus, RebuildSummary,
};

/// Largest copy, in bytes.
pub const MAX_COPY_BYTES: u64 = 1 << 20;
/// Copies in flight per rebuild.
pub const COPY_WORKERS: usize = 2;
/// The host counts as idle when it submitted nothing for this long.
const IDLE_AFTER: Duration = Duration::from_millis(20);
/// How often a paused rebuild looks whether it may go on.
/// A rebuilding child is flushed after this many bytes copied (and when the copy ends).
pub const FLUSH_EVERY_BYTES: u64 = 64 << 20;
const PAUSE_POLL: Duration = Duration::from_millis(5);

// The limiter's refill and wait (its state is in `ctl`).
impl Limiter {
    /// Bytes per second allowed now (`None`: unlimited).
    fn bytes_per_sec(&self, nx: &Nexus, b: &mut Bucket, now: Instant) -> Option<u64> {
        let mib = match self.rate() {
            RebuildRate::Unlimited => return None,
            RebuildRate::Fixed { mib_per_sec } => mib_per_sec,
            RebuildRate::Adaptive { busy_mib_per_sec } => {
                let s = nx.gate.submitted();
                if s != b.seen_submitted {
                    b.seen_submitted = s;
                    b.last_active = now;
                }
                if now.duration_since(b.last_active) >= IDLE_AFTER {
                    return None;
                }
                busy_mib_per_sec
            }
        };
        Some(mib.saturating_mul(1 << 20).max(1))
    }

    /// Waits until `bytes` may be copied.
    async fn acquire(&self, nx: &Nexus, bytes: u64) {
        loop {
            let wait = {
                let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let elapsed = now.duration_since(b.last).as_nanos();
                b.last = now;
                let Some(rate) = self.bytes_per_sec(nx, &mut b, now) else {
                    b.tokens = 0;
                    return;
                };
                // Refill, with a burst of 20 ms worth (at least one copy).
                let add = elapsed.saturating_mul(u128::from(rate)) / 1_000_000_000;
                let burst = (rate / 50).max(bytes);
                let tokens = u128::from(b.tokens)
                    .saturating_add(add)
                    .min(u128::from(burst));
                b.tokens = u64::try_from(tokens).unwrap_or(burst);
                if b.tokens >= bytes {
                    b.tokens -= bytes;
                    return;
                }
                let missing = u128::from(bytes - b.tokens);
                let ns = missing.saturating_mul(1_000_000_000) / u128::from(rate);
                Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
            };
            exec::sleep(wait.clamp(Duration::from_micros(50), Duration::from_millis(100))).await;
        }
    }
}

/// Starts the rebuild of child `idx` (already rebuilding, in the write path).
pub(crate) fn start(nx: &Arc<Nexus>, st: &mut State, idx: usize) {
    let Some(entry) = st.children.get_mut(idx) else {
        return;
    };
    // Segments past the end of the child's map (the nexus grew since it was made) are
    // copied whatever the map says.
    let segments = nx.geo_now().segments;
    let map = &entry.shared.dirty;
    let total = map.count() + segments.saturating_sub(map.segments());
    let ctl = Arc::new(RebuildCtl {
        full: total >= segments,
        total: AtomicU64::new(total),
        copied: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        paused: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        finished: AtomicBool::new(false),
        started: Instant::now(),
        unflushed: DirtyMap::new(nx.geo.segments, false),
    });
    entry.rebuild = Some(ctl.clone());
    let (nx, slot, child) = (nx.clone(), entry.slot, entry.shared.clone());
    exec::spawn(async move {
        let outcome = copy_all(&nx, slot, &child, &ctl).await;
        ctl.finished.store(true, Ordering::Release);
        let s = ctl.status();
        let summary = RebuildSummary {
            full: s.full,
            outcome,
            segments_total: s.segments_total,
            segments_copied: s.segments_copied,
            bytes_copied: s.bytes_copied,
            duration: ctl.started.elapsed(),
        };
        tracing::info!(nexus = %nx.info.name, slot, ?outcome, copied = s.segments_copied,
            "rebuild ended");
        nx.push_op(Op::RebuildEnded {
            slot,
            child: child.id,
            outcome,
            summary,
        });
    });
}

struct Job<'a> {
    nx: &'a Nexus,
    slot: usize,
    child: &'a Arc<ChildShared>,
    ctl: &'a RebuildCtl,
    dst: IoChannel,
    /// Next segment to look at (shared by the workers: one pass over the map).
    cursor: std::cell::Cell<u64>,
    /// Bytes copied since the child was last flushed.
    since_flush: std::cell::Cell<u64>,
}

async fn copy_all(
    nx: &Nexus,
    slot: usize,
    child: &Arc<ChildShared>,
    ctl: &RebuildCtl,
) -> RebuildOutcome {
    let dst = match open_channel(&child.bdev) {
        Ok(c) => c,
        Err(e) => {
            nx.child_failed(slot, child.id, FaultReason::from_bdev_error(&e));
            return RebuildOutcome::Failed;
        }
    };
    let job = Job {
        nx,
        slot,
        child,
        ctl,
        dst,
        cursor: std::cell::Cell::new(0),
        since_flush: std::cell::Cell::new(0),
    };
    let workers: Vec<LocalFuture<'_, RebuildOutcome>> = (0..COPY_WORKERS)
        .map(|_| -> LocalFuture<'_, RebuildOutcome> { Box::pin(job.worker()) })
        .collect();
    let outcomes = exec::join_all(workers).await;
    let outcome = if outcomes.contains(&RebuildOutcome::Failed) {
        RebuildOutcome::Failed
    } else if outcomes.contains(&RebuildOutcome::Stopped) {
        RebuildOutcome::Stopped
    } else {
        RebuildOutcome::Completed
    };
    // Every copy has come back (or was given up, its segments left dirty): a flush makes them
    // durable, or they are copied again by the next rebuild.
    if let Err(o) = job.flush().await {
        child.dirty.merge(&ctl.unflushed);
        return if outcome == RebuildOutcome::Completed {
            o
        } else {
            outcome
        };
    }
    outcome
}

impl Job<'_> {
    /// Whether the rebuild must end now.
    fn stopped(&self) -> bool {
        self.ctl.stop.load(Ordering::Acquire)
            || !self
                .nx
                .routing()
                .route(self.slot)
                .is_some_and(|r| r.child.id == self.child.id && r.role == Role::Write)
    }

    /// Waits while the rebuild is paused; true if it must stop.
    async fn wait_while_paused(&self) -> bool {
        loop {
            if self.stopped() {
                return true;
            }
            if !self.ctl.paused.load(Ordering::Acquire) {
                return false;
            }
            exec::sleep(PAUSE_POLL).await;
        }
    }

    async fn worker(&self) -> RebuildOutcome {
        let geo = self.nx.geo;
        let bs = u64::from(geo.block_size);
        let max_run = (MAX_COPY_BYTES / (geo.seg_blocks * bs)).clamp(1, MAX_LOCK_SEGMENTS);
        let mut sources: HashMap<u64, IoChannel> = HashMap::new();
        let mut buf = Some(IoBuf::with_capacity(
            usize::try_from(max_run * geo.seg_blocks * bs).unwrap_or(0),
        ));
        loop {
            if self.wait_while_paused().await {
                return RebuildOutcome::Stopped;
            }
            let dirty = &self.child.dirty;
            // The size now: the nexus may have grown since the rebuild started. A segment
            // past the end of the child's map (made before a growth) is always copied: writes
            // the child missed there were not recorded.
            let now = self.nx.geo_now();
            let past_map = |s: u64| s >= dirty.segments() && s < now.segments;
            let cursor = self.cursor.get();
            let first = match dirty.next_dirty(cursor) {
                Some(f) => f,
                None if past_map(cursor.max(dirty.segments())) => cursor.max(dirty.segments()),
                None => return RebuildOutcome::Completed,
            };
            let mut n = 1;
            while n < max_run && (dirty.is_dirty(first + n) || past_map(first + n)) {
                n += 1;
            }
            self.cursor.set(first + n);
            let start = first * geo.seg_blocks;
            let blocks = (n * geo.seg_blocks).min(now.data_blocks.saturating_sub(start));
            if blocks == 0 {
                return RebuildOutcome::Completed;
            }
            self.nx.limiter.acquire(self.nx, blocks * bs).await;
            if self.wait_while_paused().await {
                return RebuildOutcome::Stopped;
            }
            let lock = self.nx.gate.lock(first, n).await;
            let r = self.copy(&mut sources, &mut buf, start, blocks).await;
            if r.is_ok() {
                self.ctl.unflushed.mark(first, first + n - 1);
                for s in first..first + n {
                    dirty.clear(s);
                }
            }
            self.nx.gate.unlock(lock);
            if let Err(o) = r {
                return o;
            }
            self.ctl.copied.fetch_add(n, Ordering::AcqRel);
            self.ctl.bytes.fetch_add(blocks * bs, Ordering::AcqRel);
            let since = self.since_flush.get() + blocks * bs;
            self.since_flush.set(since);
            if since >= FLUSH_EVERY_BYTES
                && let Err(o) = self.flush().await
            {
                return o;
            }
        }
    }

    /// Flushes the rebuilding child: the copies completed before are durable there.
    async fn flush(&self) -> Result<(), RebuildOutcome> {
        self.since_flush.set(0);
        let copied = self.ctl.unflushed.snapshot();
        if let Err(e) = crate::persist::flush(&self.dst, self.nx.io_timeout).await {
            self.nx
                .child_failed(self.slot, self.child.id, FaultReason::from_bdev_error(&e));
            return Err(RebuildOutcome::Failed);
        }
        self.ctl.unflushed.clear_words(&copied);
        Ok(())
    }

    /// Copies `blocks` blocks at nexus block `start` from an online child to the rebuilding one.
    async fn copy(
        &self,
        sources: &mut HashMap<u64, IoChannel>,
        buf: &mut Option<IoBuf>,
        start: u64,
        blocks: u64,
    ) -> Result<(), RebuildOutcome> {
        let geo = self.nx.geo;
        let len = usize::try_from(blocks * u64::from(geo.block_size)).unwrap_or(0);
        let at = start + geo.meta_blocks;
        let mut tried = 0u64;
        let data = loop {
            let r = self.nx.routing();
            let cand = r.read_mask & !tried;
            if cand == 0 || self.stopped() {
                return Err(if cand == 0 {
                    RebuildOutcome::Failed
                } else {
                    RebuildOutcome::Stopped
                });
            }
            let local = cand & r.local_mask;
            let src_slot = nth_slot(if local != 0 { local } else { cand }, 0);
            tried |= slot_bit(src_slot);
            let Some(src) = r.route(src_slot).map(|rt| rt.child.clone()) else {
                continue;
            };
            if let std::collections::hash_map::Entry::Vacant(v) = sources.entry(src.id) {
                match open_channel(&src.bdev) {
                    Ok(c) => {
                        v.insert(c);
                    }
                    Err(e) => {
                        self.nx
                            .child_failed(src_slot, src.id, FaultReason::from_bdev_error(&e));
                        continue;
                    }
                }
            }
            let Some(chan) = sources.get(&src.id) else {
                continue;
            };
            let mut b = buf.take().unwrap_or_else(|| IoBuf::with_capacity(len));
            b.set_len(len);
            let mut bufs = SgList::new();
            bufs.push(b);
            let (mut io, res) =
                exec::io(chan, BdevIo::read(at, blocks, bufs), self.nx.io_timeout).await;
            match res {
                Ok(()) => break io.bufs,
                Err(e) => {
                    *buf = io.bufs.pop();
                    self.nx
                        .child_failed(src_slot, src.id, FaultReason::from_bdev_error(&e));
                }
            }
        };
        let (mut io, res) = exec::write_to(
            self.child,
            &self.dst,
            BdevIo::write(at, blocks, data),
            self.nx.io_timeout,
        )
        .await;
        *buf = io.bufs.pop();
        if let Err(e) = res {
            self.nx
                .child_failed(self.slot, self.child.id, FaultReason::from_bdev_error(&e));
            return Err(RebuildOutcome::Failed);
        }
        Ok(())
    }
}
