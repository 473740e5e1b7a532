//! The I/O gate: how the control path knows that no host I/O started under an old view of
//! the nexus is still running, without a lock on the I/O path.
//!
//! It works like sleepable RCU. Every channel has its own pair of counters ([`ChanCounters`],
//! written only by the channel's reactor, so there is no cache-line bouncing). A host write
//! (write, write zeroes, deallocate, flush) enters the gate by incrementing the counter of the
//! current *parity* (the low bit of the gate's generation) and leaves it when its child I/Os
//! are done. A [`Gate::barrier`] bumps the generation, so new writes count under the other
//! parity, and waits until the old parity's counters of all channels are zero: then every
//! write that might have seen the state from before the barrier has finished. Reads stay out
//! of the gate: no barrier needs to wait for them.
//!
//! Entering is "increment, then re-read the generation; if it moved, undo and retry", with
//! sequentially consistent operations on both sides: either the I/O sees the new generation
//! (and with it everything published before the bump), or the barrier sees its increment.
//!
//! The same mechanism gives the rebuild its range locks: a rebuild stores the locked segments
//! in one of [`MAX_LOCKS`] slots and passes a barrier; writes entering later see the lock and
//! wait, writes that entered earlier have finished. Unlocking is a plain store.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::exec::sleep;

/// Range-lock slots (concurrent segment copies over all rebuilds of a nexus).
pub const MAX_LOCKS: usize = 8;
/// Longest range one lock covers, in segments.
pub const MAX_LOCK_SEGMENTS: u64 = 255;
/// How often a waiting barrier looks at the counters.
const BARRIER_POLL: Duration = Duration::from_micros(5);

/// The gate counters of one channel.
#[derive(Debug, Default)]
pub(crate) struct ChanCounters {
    inside: [AtomicU64; 2],
    /// Host I/Os submitted on the channel (for detecting an idle host).
    submitted: AtomicU64,
}

impl ChanCounters {
    /// Counts one submitted host I/O (single writer: load and store).
    #[inline]
    pub(crate) fn count_submit(&self) {
        let s = &self.submitted;
        s.store(s.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }
}

/// The gate of one nexus.
#[derive(Debug)]
pub(crate) struct Gate {
    generation: AtomicU64,
    chans: Mutex<Vec<Weak<ChanCounters>>>,
    busy: AtomicBool,
    locks: [AtomicU64; MAX_LOCKS],
    held: AtomicU32,
    /// Every host write held (a pause for a snapshot, module `pause`); counted in `held` too.
    paused: AtomicBool,
}

impl Default for Gate {
    fn default() -> Gate {
        Gate {
            generation: AtomicU64::new(0),
            chans: Mutex::new(Vec::new()),
            busy: AtomicBool::new(false),
            locks: [const { AtomicU64::new(0) }; MAX_LOCKS],
            held: AtomicU32::new(0),
            paused: AtomicBool::new(false),
        }
    }
}

fn encode(first: u64, n: u64) -> u64 {
    (first.saturating_add(1) << 8) | n.clamp(1, MAX_LOCK_SEGMENTS)
}

fn decode(v: u64) -> Option<(u64, u64)> {
    (v != 0).then(|| ((v >> 8).saturating_sub(1), v & 0xff))
}

impl Gate {
    /// Counters for a new channel.
    pub(crate) fn register(&self) -> Arc<ChanCounters> {
        let c = Arc::new(ChanCounters::default());
        let mut chans = self.chans.lock().unwrap_or_else(|e| e.into_inner());
        chans.retain(|w| w.strong_count() > 0);
        chans.push(Arc::downgrade(&c));
        c
    }

    /// Enters the gate; returns the parity to leave with.
    #[inline]
    pub(crate) fn enter(&self, c: &ChanCounters) -> u8 {
        loop {
            let g = self.generation.load(Ordering::SeqCst);
            let p = usize::from(g & 1 == 1);
            c.inside[p].fetch_add(1, Ordering::SeqCst);
            if self.generation.load(Ordering::SeqCst) == g {
                return u8::from(p == 1);
            }
            c.inside[p].fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Leaves the gate. Only the channel's own reactor writes its counters, so a load and a
    /// releasing store do (no locked read-modify-write on every host write): the store
    /// publishes everything the write did before it to the barrier that reads the count.
    #[inline]
    pub(crate) fn leave(c: &ChanCounters, parity: u8) {
        if let Some(a) = c.inside.get(usize::from(parity == 1)) {
            a.store(a.load(Ordering::Relaxed).wrapping_sub(1), Ordering::Release);
        }
    }

    fn inside(&self, parity: usize) -> u64 {
        let chans = self.chans.lock().unwrap_or_else(|e| e.into_inner());
        chans
            .iter()
            .filter_map(Weak::upgrade)
            .map(|c| c.inside.get(parity).map_or(0, |a| a.load(Ordering::SeqCst)))
            .sum()
    }

    /// Host I/Os submitted so far over all live channels.
    pub(crate) fn submitted(&self) -> u64 {
        let chans = self.chans.lock().unwrap_or_else(|e| e.into_inner());
        chans
            .iter()
            .filter_map(Weak::upgrade)
            .map(|c| c.submitted.load(Ordering::Relaxed))
            .fold(0u64, u64::wrapping_add)
    }

    /// Waits until every host write that entered before this call has left. Call it after
    /// publishing a change; writes entering afterwards see the change.
    pub(crate) async fn barrier(&self) {
        while self.busy.swap(true, Ordering::AcqRel) {
            sleep(BARRIER_POLL).await;
        }
        let old = self.generation.fetch_add(1, Ordering::SeqCst);
        let parity = usize::from(old & 1 == 1);
        while self.inside(parity) != 0 {
            sleep(BARRIER_POLL).await;
        }
        self.busy.store(false, Ordering::Release);
    }

    /// Whether a write to segments `first..=last` must wait for a rebuild copy. Cheap when
    /// no lock is held (one load).
    #[inline]
    pub(crate) fn is_locked(&self, first: u64, last: u64) -> bool {
        if self.held.load(Ordering::Acquire) == 0 {
            return false;
        }
        if self.paused.load(Ordering::Acquire) {
            return true;
        }
        self.locks.iter().any(|l| {
            decode(l.load(Ordering::Acquire))
                .is_some_and(|(f, n)| f <= last && first < f.saturating_add(n))
        })
    }

    /// Locks segments `first..first + n` (`n` at most [`MAX_LOCK_SEGMENTS`]) against host
    /// writes and waits until writes already running have finished. Returns the slot to pass
    /// to [`Gate::unlock`].
    pub(crate) async fn lock(&self, first: u64, n: u64) -> usize {
        let v = encode(first, n);
        let slot = loop {
            let free = self.locks.iter().position(|l| {
                l.compare_exchange(0, v, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            });
            if let Some(s) = free {
                break s;
            }
            sleep(BARRIER_POLL).await;
        };
        self.held.fetch_add(1, Ordering::SeqCst);
        self.barrier().await;
        slot
    }

    /// Holds every host write from now on (as a lock of the whole volume); the caller then
    /// passes a [`Gate::barrier`] to wait for the writes already running. `false` releases
    /// them. Answers whether it changed anything.
    pub(crate) fn set_paused(&self, on: bool) -> bool {
        if self.paused.swap(on, Ordering::SeqCst) == on {
            return false;
        }
        if on {
            self.held.fetch_add(1, Ordering::SeqCst);
        } else {
            self.held.fetch_sub(1, Ordering::SeqCst);
        }
        true
    }

    /// Releases a lock; waiting writes go on.
    pub(crate) fn unlock(&self, slot: usize) {
        if let Some(l) = self.locks.get(slot)
            && l.swap(0, Ordering::SeqCst) != 0
        {
            self.held.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::run_on;
    use shoal_reactor::{Reactor, ReactorConfig};

    #[test]
    fn lock_encoding_and_overlap() {
        assert_eq!(decode(encode(0, 1)), Some((0, 1)));
        assert_eq!(decode(encode(1 << 40, 300)), Some((1 << 40, 255)));
        assert_eq!(decode(0), None);
        let g = Gate::default();
        g.locks[3].store(encode(10, 4), Ordering::SeqCst);
        g.held.store(1, Ordering::SeqCst);
        assert!(g.is_locked(13, 20));
        assert!(g.is_locked(0, 10));
        assert!(!g.is_locked(14, 20));
        assert!(!g.is_locked(0, 9));
    }

    #[test]
    fn barrier_waits_for_io_inside() {
        let reactor = Reactor::new(0, None, ReactorConfig::default()).unwrap();
        let gate = Arc::new(Gate::default());
        let c = gate.register();
        let p = gate.enter(&c);
        let g2 = gate.clone();
        let t = run_on(&reactor.handle(), move || async move {
            g2.barrier().await;
            Ok(())
        });
        reactor.run_until(Duration::from_millis(20), || false);
        assert!(
            t.try_take().is_none(),
            "the barrier waits for the I/O inside"
        );
        // I/O entering now counts under the other parity and does not hold the barrier.
        let p2 = gate.enter(&c);
        assert_ne!(p, p2);
        Gate::leave(&c, p);
        t.wait(Duration::from_secs(5)).unwrap().unwrap();
        Gate::leave(&c, p2);
    }
}
