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
//! **Across reactors, without a read-modify-write per write.** Each reactor has its own table
//! (a *lane*), written only by that reactor's thread: a claim checks its own lane with a plain
//! load, publishes its bits with one sequentially consistent store, then looks for the same
//! bits in the other lanes in use; a release is a plain store. This is Dekker's mutual
//! exclusion: of two claims of the same bits on two reactors, the one whose store comes second
//! in the single order of sequentially consistent operations sees the other's bits, so at
//! most one of them goes ahead (both may back off and retry). On one reactor (the usual case)
//! there is no other lane to look at, and the only locked instruction is the store.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Words of one lane (64 units of 4 KiB each): 32 KiB per lane, covering 1 GiB.
pub(crate) const TABLE_WORDS: usize = 4096;
/// Lanes: one per reactor index (`shoald` numbers at most 128 reactors, one per core of its
/// mask).
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
    /// Lanes in use (bit per lane).
    in_use: [AtomicU64; MAX_LANES / 64],
    /// Off only for measuring what the order costs (and showing what goes wrong without it).
    enabled: AtomicBool,
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
        let per_unit = (UNIT_BYTES / u64::from(block_size.max(1))).max(1);
        WriteOrder {
            unit_shift: per_unit.trailing_zeros(),
            lanes: (0..MAX_LANES).map(|_| OnceLock::new()).collect(),
            in_use: [const { AtomicU64::new(0) }; MAX_LANES / 64],
            enabled: AtomicBool::new(enabled),
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

    /// The lane of the reactor with index `reactor`, made ready for claims (once per
    /// channel, when it opens); `None` beyond [`MAX_LANES`].
    pub(crate) fn lane(&self, reactor: usize) -> Option<usize> {
        let l = self.lanes.get(reactor)?;
        l.get_or_init(|| Lane {
            words: (0..TABLE_WORDS).map(|_| AtomicU64::new(0)).collect(),
        });
        self.in_use
            .get(reactor / 64)?
            .fetch_or(1 << (reactor % 64), Ordering::SeqCst);
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
        // 1. Our own lane: a plain check (only this thread writes it), then publish.
        for (i, (slot, bits)) in pieces(first, last).enumerate() {
            let Some(w) = own.get(slot) else { continue };
            let cur = w.load(Ordering::Relaxed);
            if cur & bits != 0 {
                undo(own, pieces(first, last).take(i));
                return false;
            }
            w.store(cur | bits, Ordering::SeqCst);
        }
        // 2. The other lanes, read after our bits are published (sequentially consistent on
        //    both sides: see the module's documentation).
        for (k, set) in self.in_use.iter().enumerate() {
            let mut others = set.load(Ordering::SeqCst);
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

    /// Whether lane `other` holds any of units `first..=last`.
    fn held_in(&self, other: usize, first: u64, last: u64) -> bool {
        let Some(ws) = self.words(other) else {
            return false;
        };
        pieces(first, last).any(|(slot, bits)| {
            ws.get(slot)
                .is_some_and(|w| w.load(Ordering::SeqCst) & bits != 0)
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
        assert!(o.lane(MAX_LANES).is_none());
        let a = o.lane(0).unwrap();
        assert!(o.claim(a, 0, 8));
        assert!(!o.claim(a, 7, 1), "same unit");
        assert!(o.claim(a, 8, 16), "next units");
        assert!(!o.claim(a, 0, 1 << 20), "a long range over both");
        o.release(a, 0, 8);
        assert!(o.claim(a, 0, 1), "free again");
        assert!(!o.claim(a, 16, 1), "still held by the second");
        // Another reactor's lane sees them too.
        let b = o.lane(1).unwrap();
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
        // Two threads claim the same unit over and over: never both at once.
        let o = std::sync::Arc::new(WriteOrder::new(4096, true));
        let inside = std::sync::Arc::new(AtomicU64::new(0));
        let run = |lane_of: usize| {
            let (o, inside) = (o.clone(), inside.clone());
            std::thread::spawn(move || {
                let lane = o.lane(lane_of).unwrap();
                let mut got = 0u32;
                while got < 20_000 {
                    if o.claim(lane, 5, 1) {
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "both inside");
                        inside.fetch_sub(1, Ordering::SeqCst);
                        o.release(lane, 5, 1);
                        got += 1;
                    }
                }
            })
        };
        let (t1, t2) = (run(0), run(MAX_LANES - 1));
        t1.join().unwrap();
        t2.join().unwrap();
    }
}
