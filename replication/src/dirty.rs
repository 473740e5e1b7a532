//! The dirty-segment map of a child (Mayastor's `nexus_io_log`): one bit per segment of the
//! nexus, set when a write to that segment did not reach the child (the child was out of the
//! write path, or the write failed on it), or when the child left the write path while a write
//! it acknowledged there may have been only in its volatile cache (the regions the
//! write-intent bitmap marks, and rebuild copies not flushed yet: see `control::fault_locked`). A rebuild copies the segments whose bit is set and
//! clears each one after copying it, so a child that returns after a short absence is rebuilt
//! only where it missed writes; a new or stale child starts with every bit set.
//!
//! Any reactor may set bits (relaxed atomics; a bit already set is only read); the rebuild on
//! the home reactor reads and clears them.

use std::sync::atomic::{AtomicU64, Ordering};

/// A bitmap of segments.
#[derive(Debug)]
pub struct DirtyMap {
    words: Box<[AtomicU64]>,
    segments: u64,
}

impl DirtyMap {
    /// A map of `segments` segments, all clean (`full == false`) or all dirty.
    pub fn new(segments: u64, full: bool) -> DirtyMap {
        let n = usize::try_from(segments.div_ceil(64)).unwrap_or(0);
        let words = (0..n).map(|_| AtomicU64::new(0)).collect();
        let m = DirtyMap { words, segments };
        if full {
            m.set_all();
        }
        m
    }

    /// Number of segments.
    pub fn segments(&self) -> u64 {
        self.segments
    }

    fn word(&self, seg: u64) -> Option<(&AtomicU64, u64)> {
        if seg >= self.segments {
            return None;
        }
        let w = self.words.get(usize::try_from(seg / 64).ok()?)?;
        Some((w, 1u64 << (seg % 64)))
    }

    /// Marks segments `first..=last` dirty.
    pub fn mark(&self, first: u64, last: u64) {
        let last = last.min(self.segments.saturating_sub(1));
        let mut s = first;
        while s <= last {
            let Some((w, _)) = self.word(s) else { return };
            let lo = s % 64;
            let hi = if last / 64 == s / 64 { last % 64 } else { 63 };
            let width = hi - lo + 1;
            let bits = if width == 64 {
                u64::MAX
            } else {
                ((1u64 << width) - 1) << lo
            };
            if w.load(Ordering::Relaxed) & bits != bits {
                w.fetch_or(bits, Ordering::AcqRel);
            }
            s = s - lo + 64;
        }
    }

    /// Marks every segment dirty.
    pub fn set_all(&self) {
        self.mark(0, self.segments.saturating_sub(1));
    }

    /// Whether `seg` is dirty.
    pub fn is_dirty(&self, seg: u64) -> bool {
        self.word(seg)
            .is_some_and(|(w, bit)| w.load(Ordering::Acquire) & bit != 0)
    }

    /// Clears `seg`.
    pub fn clear(&self, seg: u64) {
        if let Some((w, bit)) = self.word(seg) {
            w.fetch_and(!bit, Ordering::AcqRel);
        }
    }

    /// The first dirty segment at or after `from`.
    pub fn next_dirty(&self, from: u64) -> Option<u64> {
        let mut s = from;
        while s < self.segments {
            let (w, _) = self.word(s)?;
            let bits = w.load(Ordering::Acquire) >> (s % 64);
            if bits != 0 {
                let found = s + u64::from(bits.trailing_zeros());
                return (found < self.segments).then_some(found);
            }
            s = s - s % 64 + 64;
        }
        None
    }

    /// The bits, 64 segments a word.
    pub fn snapshot(&self) -> Vec<u64> {
        self.words
            .iter()
            .map(|w| w.load(Ordering::Acquire))
            .collect()
    }

    /// Clears the segments set in `words` (as [`DirtyMap::snapshot`] gives them).
    pub fn clear_words(&self, words: &[u64]) {
        for (w, &v) in self.words.iter().zip(words) {
            if v != 0 {
                w.fetch_and(!v, Ordering::AcqRel);
            }
        }
    }

    /// Marks every segment `other` (of the same size) marks.
    pub fn merge(&self, other: &DirtyMap) {
        for (w, o) in self.words.iter().zip(other.words.iter()) {
            let v = o.load(Ordering::Acquire);
            if v != 0 {
                w.fetch_or(v, Ordering::AcqRel);
            }
        }
    }

    /// Number of dirty segments.
    pub fn count(&self) -> u64 {
        self.words
            .iter()
            .map(|w| u64::from(w.load(Ordering::Acquire).count_ones()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_clear_scan() {
        let m = DirtyMap::new(200, false);
        assert_eq!(m.count(), 0);
        assert_eq!(m.next_dirty(0), None);
        m.mark(3, 3);
        m.mark(60, 130);
        assert_eq!(m.count(), 1 + 71);
        assert!(m.is_dirty(64) && m.is_dirty(130) && !m.is_dirty(131));
        assert_eq!(m.next_dirty(0), Some(3));
        assert_eq!(m.next_dirty(4), Some(60));
        m.clear(3);
        assert_eq!(m.next_dirty(0), Some(60));
        m.mark(190, 10_000);
        assert_eq!(m.count(), 71 + 10);
        assert!(!m.is_dirty(200));
        let f = DirtyMap::new(130, true);
        assert_eq!(f.count(), 130);
        assert_eq!(f.next_dirty(129), Some(129));
        assert_eq!(f.next_dirty(130), None);
        let g = DirtyMap::new(200, false);
        g.merge(&m);
        assert_eq!(g.count(), m.count());
        g.clear_words(&m.snapshot());
        assert_eq!(g.count(), 0);
    }
}
