//! What a nexus holds of its rebuilds, below the copy tasks of [`super`]: the rate policy
//! and the token bucket its rebuilds share ([`RebuildRate`], `Limiter`; the bucket's refill is
//! in [`super`]), each running rebuild's control and progress (`RebuildCtl`), and how
//! rebuilds show in `nexus_get` ([`RebuildStatus`], [`RebuildSummary`], [`RebuildOutcome`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::dirty::DirtyMap;

/// Default copy rate while the host does I/O (adaptive policy).
pub const DEFAULT_BUSY_MIB_PER_SEC: u64 = 128;

/// How fast rebuilds may copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildRate {
    /// Unlimited while the host is idle, `busy_mib_per_sec` while it does I/O (the default).
    Adaptive {
        /// MiB/s while the host does I/O.
        busy_mib_per_sec: u64,
    },
    /// At most this many MiB/s, always.
    Fixed {
        /// MiB/s.
        mib_per_sec: u64,
    },
    /// No limit.
    Unlimited,
}

impl Default for RebuildRate {
    fn default() -> RebuildRate {
        RebuildRate::Adaptive {
            busy_mib_per_sec: DEFAULT_BUSY_MIB_PER_SEC,
        }
    }
}

pub(super) struct Bucket {
    pub(super) tokens: u64,
    pub(super) last: Instant,
    pub(super) seen_submitted: u64,
    pub(super) last_active: Instant,
}

/// The token bucket shared by the rebuilds of a nexus (used on the home reactor only).
pub(crate) struct Limiter {
    rate: Mutex<RebuildRate>,
    pub(super) bucket: Mutex<Bucket>,
}

impl Default for Limiter {
    fn default() -> Limiter {
        let now = Instant::now();
        Limiter {
            rate: Mutex::new(RebuildRate::default()),
            bucket: Mutex::new(Bucket {
                tokens: 0,
                last: now,
                seen_submitted: 0,
                last_active: now,
            }),
        }
    }
}

impl Limiter {
    pub(crate) fn set(&self, r: RebuildRate) {
        *self.rate.lock().unwrap_or_else(|e| e.into_inner()) = r;
    }

    pub(crate) fn rate(&self) -> RebuildRate {
        *self.rate.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How a rebuild ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildOutcome {
    /// Every dirty segment was copied.
    Completed,
    /// It was stopped (operator, fault of the child, removal, destroy).
    Stopped,
    /// The copy failed (the rebuilding child failed, or no online child was left).
    Failed,
}

/// A running rebuild, as `nexus_get` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildStatus {
    /// Whether every segment is copied (a new or stale child) or only dirty ones.
    pub full: bool,
    /// Whether it is paused.
    pub paused: bool,
    /// Segments to copy when it started.
    pub segments_total: u64,
    /// Segments copied so far.
    pub segments_copied: u64,
    /// Bytes copied so far.
    pub bytes_copied: u64,
    /// 0 to 100.
    pub progress: u8,
}

/// A finished rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildSummary {
    /// Full or partial.
    pub full: bool,
    /// How it ended.
    pub outcome: RebuildOutcome,
    /// Segments to copy when it started.
    pub segments_total: u64,
    /// Segments copied.
    pub segments_copied: u64,
    /// Bytes copied.
    pub bytes_copied: u64,
    /// How long it ran.
    pub duration: Duration,
}

/// Control and progress of one rebuild.
pub(crate) struct RebuildCtl {
    pub(super) full: bool,
    pub(super) total: AtomicU64,
    pub(super) copied: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub paused: AtomicBool,
    pub stop: AtomicBool,
    pub(super) finished: AtomicBool,
    pub(super) started: Instant,
    /// Segments copied whose copy is not known durable on the child yet (not flushed).
    pub(super) unflushed: DirtyMap,
}

impl RebuildCtl {
    pub(crate) fn status(&self) -> RebuildStatus {
        let total = self.total.load(Ordering::Acquire);
        let copied = self.copied.load(Ordering::Acquire);
        let progress = copied
            .min(total)
            .saturating_mul(100)
            .checked_div(total)
            .map_or(100, |p| u8::try_from(p).unwrap_or(100));
        RebuildStatus {
            full: self.full,
            paused: self.paused.load(Ordering::Acquire),
            segments_total: total,
            segments_copied: copied,
            bytes_copied: self.bytes.load(Ordering::Acquire),
            progress,
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }
}
