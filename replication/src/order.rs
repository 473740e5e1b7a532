//! The write order: two writes that overlap and are in flight together reach every child in
//! the same order.
//!
//! The children of a nexus execute the writes they are given concurrently and in any order (an
//! io_uring file, a remote target over NVMe/TCP), so two overlapping writes sent to all of them
//! at once could end in a different order on each, and the replicas would hold different data
//! after the host's writes all succeeded. As DRBD does, the nexus keeps overlapping writes
//! apart instead: a write (write, write zeroes, deallocate) *claims* the blocks it covers
//! before its legs are sent, and gives them back once every leg has answered. A write that
//! finds any of its blocks claimed does not go out: it waits on its channel and tries again
//! (see `io`), so it is sent only after the earlier write has completed on every child, and
//! every child sees the two in that one order. Writes that do not overlap keep full
//! concurrency.
//!
//! **The table.** Claims are bits, one per 4 KiB unit of the volume (a smaller block is
//! claimed with its whole unit: two 512-byte writes in one unit wait for each other). The
//! bits live in [`TABLE_WORDS`] words; the volume wraps round them every
//! `TABLE_WORDS * 64` units (1 GiB), so two writes exactly a multiple of 1 GiB apart also
//! wait for each other, which costs a little concurrency and never correctness. A range
//! longer than the table claims all of it.
//!
//! **Across reactors, without a locked instruction per write.** Each reactor has its own table
//! (a *lane*), written only by that reactor's thread: a claim checks its own lane with a plain
//! load and publishes its bits with a plain store; a release is a plain store. When other
//! lanes are in use, the claim then passes a sequentially consistent fence and looks for the
//! same bits in them. This is Dekker's mutual exclusion: of two claims of the same bits on two
//! reactors, the one whose fence comes second in the single order of such fences sees the
//! other's bits, so at most one of them goes ahead (both may back off and retry).
//!
//! A reactor that is the only one writing to the volume (the usual case) has no other lane to
//! look at, and skips the fence too: its claim is a load and a store. That needs the rare side
//! to pay instead. A lane that joins makes every thread of the process pass a full memory
//! barrier ([`shoal_reactor::process_barrier`], `membarrier(2)`) before its reactor
//! claims anything: a claim made alone before that barrier is visible to the newcomer's
//! checks, and one made after it sees the new lane and takes the fenced path. Where the
//! process barrier is not available, every claim takes the fenced path.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, compiler_fence, fence};
use std::sync::{Mutex, OnceLock};
use std::thread::ThreadId;

use shoal_reactor::{process_barrier, process_barrier_available};

/// Words of one lane (64 units of 4 KiB each): 32 KiB per lane, covering 1 GiB.
pub(crate) const TABLE_WORDS: usize = 4096;
/// Lanes: one per thread with a channel to the nexus (a reactor's; `shoald` runs at most 128
/// reactors, one per core of its mask).
pub(crate) const MAX_LANES: usize = 128;
/// Bytes per claim bit.
const UNIT_BYTES: u64 = 4096;

/// One reactor's claims.
struct Lane {
    words: Box<[AtomicU64]>,
}

/// The write-order table of one nexus.
pub(crate) struct WriteOrder {
    /// Blocks per unit, as a shift.
    unit_shift: u32,
    lanes: Box<[OnceLock<Lane>]>,
    /// The thread of each lane given out (its only writer).
    owners: Mutex<Vec<ThreadId>>,
    /// Lanes in use (bit per lane).
    in_use: [AtomicU64; MAX_LANES / 64],
    /// Off only for measuring what the order costs (and showing what goes wrong without it).
    enabled: AtomicBool,
    /// Whether a lane alone may claim without a fence (a joining lane runs the process-wide
    /// barrier; module documentation).
    alone_unfenced: AtomicBool,
}

impl std::fmt::Debug for WriteOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteOrder")
            .field("lanes", &self.in_use)
            .field("enabled", &self.enabled())
            .finish()
    }
}

/// The words a range of units covers: (table slot, bits in it).
fn pieces(first: u64, last: u64) -> impl Iterator<Item = (usize, u64)> {
    let (w0, w1) = (first >> 6, last >> 6);
    let whole = w1 - w0 >= TABLE_WORDS as u64;
    let (from, to) = if whole {
        (0, TABLE_WORDS as u64 - 1)
    } else {
        (w0, w1)
    };
    (from..=to).map(move |w| {
        let bits = if whole {
            u64::MAX
        } else {
            let lo = if w == w0 { first & 63 } else { 0 };
            let hi = if w == w1 { last & 63 } else { 63 };
            (u64::MAX >> (63 - hi)) & (u64::MAX << lo)
        };
        // `TABLE_WORDS` is a power of two: the slot is the word index modulo the table.
        let slot = usize::try_from(w).unwrap_or(0) & (TABLE_WORDS - 1);
        (slot, bits)
    })
}

impl WriteOrder {
    /// The table of a nexus with `block_size`-byte blocks; `enabled` as the nexus starts.
    pub(crate) fn new(block_size: u32, enabled: bool) -> WriteOrder {
        WriteOrder::with_barrier(block_size, enabled, process_barrier_available())
    }

    /// The same, `alone_unfenced` saying whether a lone lane may skip the fence.
    fn with_barrier(block_size: u32, enabled: bool, alone_unfenced: bool) -> WriteOrder {
        let per_unit = (UNIT_BYTES / u64::from(block_size.max(1))).max(1);
        WriteOrder {
            unit_shift: per_unit.trailing_zeros(),
            lanes: (0..MAX_LANES).map(|_| OnceLock::new()).collect(),
            owners: Mutex::new(Vec::new()),
            in_use: [const { AtomicU64::new(0) }; MAX_LANES / 64],
            enabled: AtomicBool::new(enabled),
            alone_unfenced: AtomicBool::new(alone_unfenced),
        }
    }

    /// Whether writes are ordered.
    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Turns the order on or off (for benchmarks and tests only; see `Nexus::set_write_order`).
    pub(crate) fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }

    /// The lane of this thread (a reactor's), made ready for claims (once per channel, when
    /// it opens); `None` once [`MAX_LANES`] threads have one. Lanes go by thread, not by
    /// reactor index: two reactors with the same index (tests make them) must not share one.
    pub(crate) fn lane(&self) -> Option<usize> {
        let me = std::thread::current().id();
        let lane = {
            let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
            match owners.iter().position(|t| *t == me) {
                Some(i) => i,
                None if owners.len() < MAX_LANES => {
                    owners.push(me);
                    owners.len() - 1
                }
                None => return None,
            }
        };
        self.open_lane(lane)
    }

    /// Makes lane `reactor` ready for claims by the calling thread, its only writer.
    fn open_lane(&self, reactor: usize) -> Option<usize> {
        let l = self.lanes.get(reactor)?;
        l.get_or_init(|| Lane {
            words: (0..TABLE_WORDS).map(|_| AtomicU64::new(0)).collect(),
        });
        let bit = 1u64 << (reactor % 64);
        let before = self
            .in_use
            .get(reactor / 64)?
            .fetch_or(bit, Ordering::SeqCst);
        if before & bit == 0 && self.alone_unfenced.load(Ordering::SeqCst) && !process_barrier() {
            // Registered but failing now: should not happen. Fence every claim from here on.
            tracing::error!("write order: the process-wide barrier failed; claims are fenced now");
            self.alone_unfenced.store(false, Ordering::SeqCst);
        }
        Some(reactor)
    }

    fn words(&self, lane: usize) -> Option<&[AtomicU64]> {
        self.lanes
            .get(lane)
            .and_then(OnceLock::get)
            .map(|l| &l.words[..])
    }

    /// Units covered by `blocks` blocks at `offset` (first, last).
    #[inline]
    fn units(&self, offset: u64, blocks: u64) -> (u64, u64) {
        let last = offset.saturating_add(blocks.max(1) - 1);
        (offset >> self.unit_shift, last >> self.unit_shift)
    }

    /// Claims blocks `offset..offset + blocks` for a write on `lane` (a lane given by
    /// [`WriteOrder::lane`] on this thread); false if a write in flight holds any of them
    /// (then nothing is claimed). Only the lane's own reactor may call it.
    #[inline]
    pub(crate) fn claim(&self, lane: usize, offset: u64, blocks: u64) -> bool {
        let Some(own) = self.words(lane) else {
            return true;
        };
        let (first, last) = self.units(offset, blocks);
        // 1. Our own lane: a plain check and a plain store (only this thread writes it).
        for (i, (slot, bits)) in pieces(first, last).enumerate() {
            let Some(w) = own.get(slot) else { continue };
            let cur = w.load(Ordering::Relaxed);
            if cur & bits != 0 {
                undo(own, pieces(first, last).take(i));
                return false;
            }
            w.store(cur | bits, Ordering::Relaxed);
        }
        // 2. Alone: done (a lane joining runs the process barrier first). The stores above
        //    stay before the loads below in the program; the barrier orders them in the CPU.
        compiler_fence(Ordering::SeqCst);
        if self.alone_unfenced.load(Ordering::Relaxed) && self.alone(lane) {
            return true;
        }
        // 3. Otherwise Dekker: our bits before the fence, the other lanes' after it.
        fence(Ordering::SeqCst);
        for (k, set) in self.in_use.iter().enumerate() {
            let mut others = set.load(Ordering::Relaxed);
            if k == lane / 64 {
                others &= !(1u64 << (lane % 64));
            }
            while others != 0 {
                let other = k * 64 + others.trailing_zeros() as usize;
                others &= others - 1;
                if self.held_in(other, first, last) {
                    undo(own, pieces(first, last));
                    return false;
                }
            }
        }
        true
    }

    /// Whether `lane` is the only lane in use.
    #[inline]
    fn alone(&self, lane: usize) -> bool {
        self.in_use.iter().enumerate().all(|(k, set)| {
            let own = if k == lane / 64 {
                1u64 << (lane % 64)
            } else {
                0
            };
            set.load(Ordering::Relaxed) & !own == 0
        })
    }

    /// Whether lane `other` holds any of units `first..=last`.
    fn held_in(&self, other: usize, first: u64, last: u64) -> bool {
        let Some(ws) = self.words(other) else {
            return false;
        };
        pieces(first, last).any(|(slot, bits)| {
            ws.get(slot)
                .is_some_and(|w| w.load(Ordering::Relaxed) & bits != 0)
        })
    }

    /// Gives back what a successful [`WriteOrder::claim`] with the same arguments took.
    #[inline]
    pub(crate) fn release(&self, lane: usize, offset: u64, blocks: u64) {
        if let Some(own) = self.words(lane) {
            let (first, last) = self.units(offset, blocks);
            undo(own, pieces(first, last));
        }
    }
}

/// Clears `pieces` in a lane (its own thread only: a load and a releasing store, no locked
/// instruction).
#[inline]
fn undo(own: &[AtomicU64], pieces: impl Iterator<Item = (usize, u64)>) {
    for (slot, bits) in pieces {
        if let Some(w) = own.get(slot) {
            w.store(w.load(Ordering::Relaxed) & !bits, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_units() {
        let p: Vec<_> = pieces(0, 0).collect();
        assert_eq!(p, vec![(0, 1)]);
        let p: Vec<_> = pieces(62, 65).collect();
        assert_eq!(p, vec![(0, 0b11 << 62), (1, 0b11)]);
        let p: Vec<_> = pieces(64, 127).collect();
        assert_eq!(p, vec![(1, u64::MAX)]);
        // Wraps round the table.
        let w = TABLE_WORDS as u64 * 64;
        assert_eq!(pieces(w + 3, w + 3).collect::<Vec<_>>(), vec![(0, 1 << 3)]);
        // Longer than the table: all of it.
        let all: Vec<_> = pieces(5, 5 + w).collect();
        assert_eq!(all.len(), TABLE_WORDS);
        assert!(all.iter().all(|&(_, b)| b == u64::MAX));
    }

    #[test]
    fn overlapping_claims_exclude_each_other() {
        // 512-byte blocks: 8 blocks per unit.
        let o = WriteOrder::new(512, true);
        assert!(o.open_lane(MAX_LANES).is_none());
        let a = o.lane().unwrap();
        assert_eq!(o.lane(), Some(a), "one lane per thread");
        assert!(o.claim(a, 0, 8));
        assert!(!o.claim(a, 7, 1), "same unit");
        assert!(o.claim(a, 8, 16), "next units");
        assert!(!o.claim(a, 0, 1 << 20), "a long range over both");
        o.release(a, 0, 8);
        assert!(o.claim(a, 0, 1), "free again");
        assert!(!o.claim(a, 16, 1), "still held by the second");
        // Another reactor's lane sees them too.
        // Another thread's lane (opened here to drive both from one thread).
        let b = o.open_lane(1).unwrap();
        assert!(!o.claim(b, 20, 1));
        assert!(o.claim(b, 24, 8));
        assert!(!o.claim(a, 31, 1));
        o.release(b, 24, 8);
        assert!(o.claim(a, 31, 1));
        // A failed claim left nothing behind.
        o.release(a, 0, 1);
        o.release(a, 8, 16);
        o.release(a, 31, 1);
        assert!(o.claim(b, 0, 1 << 20));
    }

    #[test]
    fn claims_race_across_threads() {
        // With the process barrier (if this kernel has it) and with fences only.
        race(WriteOrder::new(4096, true));
        race(WriteOrder::with_barrier(4096, true, false));
    }

    /// Two threads claim the same unit over and over: never both at once. The first starts
    /// alone (unfenced claims, if allowed) and goes on until the second, which joins while it
    /// runs, has had its turns.
    fn race(o: WriteOrder) {
        use std::sync::Arc;
        let o = Arc::new(o);
        let inside = Arc::new(AtomicU64::new(0));
        let second_done = Arc::new(AtomicBool::new(false));
        let run = |until_second: bool| {
            let (o, inside, second_done) = (o.clone(), inside.clone(), second_done.clone());
            std::thread::spawn(move || {
                let lane = o.lane().unwrap();
                let mut got = 0u32;
                while got < 20_000 || (until_second && !second_done.load(Ordering::SeqCst)) {
                    if o.claim(lane, 5, 1) {
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "both inside");
                        // Stay a moment, so that a broken claim shows.
                        for _ in 0..50 {
                            std::hint::spin_loop();
                        }
                        assert_eq!(inside.fetch_sub(1, Ordering::SeqCst), 1, "both inside");
                        o.release(lane, 5, 1);
                        got += 1;
                    }
                }
                if !until_second {
                    second_done.store(true, Ordering::SeqCst);
                }
            })
        };
        let t1 = run(true);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let t2 = run(false);
        t2.join().unwrap();
        t1.join().unwrap();
    }
}
