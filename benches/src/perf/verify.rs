//! `-V`: data verification. Every block written carries a header at its start and a
//! pseudo-random fill derived from it; reads check them against what this run last wrote.
//!
//! Block layout (little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `SHPV` |
//! | 4..8 | CRC32C of the whole block, computed with these four bytes zero |
//! | 8..16 | LBA |
//! | 16..20 | sequence number of the write to this block (1, 2, ...) |
//! | 20..24 | reserved, zero |
//! | 24..32 | run identifier (random per `shoal-perf` run) |
//! | 32.. | splitmix64 stream seeded from (run, LBA, sequence) |
//!
//! [`VerifyMap`] keeps, per block of the namespace, the last sequence number written (one
//! `u32`, 0: never written in this run), and per I/O slot a busy bit: an I/O claims its slot
//! for the time it is in flight, so no two I/Os (on any core) touch the same blocks at once,
//! and a read always knows the exact sequence number it must find.
//!
//! A read of a block never written in this run is accepted if it is all zeroes or carries a
//! valid header for its LBA (from an earlier run). A write that fails leaves its blocks
//! uncertain (old or new contents): until the next write, reads accept either.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Bytes of the header at the start of each block.
pub const HEADER_LEN: usize = 32;
const MAGIC: [u8; 4] = *b"SHPV";
/// Set in a block's sequence number when a write to it failed: its contents are the previous
/// or the attempted write.
const UNCERTAIN: u32 = 1 << 31;
/// Bytes read buffers are filled with before a read, so that a read that delivers no data
/// is noticed.
const POISON: u8 = 0xA5;
/// Largest table (sequence numbers + busy bits) `-V` allocates.
const MAX_TABLE_BYTES: u64 = 2 << 30;

/// What a read found wrong in a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// Neither zeroes nor a header: garbage, or data that never arrived.
    NoHeader,
    /// The CRC of the block does not match its header.
    BadChecksum {
        /// CRC in the header.
        stored: u32,
        /// CRC of what was read.
        computed: u32,
    },
    /// The header is for another block.
    WrongLba(u64),
    /// Zeroes where this run wrote data.
    Zeroes {
        /// The sequence number expected.
        expected: u32,
    },
    /// Older (or newer) data than the last write of this run.
    Stale {
        /// The sequence number found.
        found: u32,
        /// The sequence number expected.
        expected: u32,
        /// Whether the header came from another run.
        other_run: bool,
    },
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::NoHeader => write!(f, "no valid header (garbage or missing data)"),
            Mismatch::BadChecksum { stored, computed } => {
                write!(
                    f,
                    "bad checksum: header {stored:#010x}, data {computed:#010x}"
                )
            }
            Mismatch::WrongLba(l) => write!(f, "block carries the header of LBA {l}"),
            Mismatch::Zeroes { expected } => {
                write!(f, "zeroes where write {expected} was acknowledged")
            }
            Mismatch::Stale {
                found,
                expected,
                other_run,
            } => {
                let run = if *other_run { " of another run" } else { "" };
                write!(f, "stale data: write {found}{run}, expected {expected}")
            }
        }
    }
}

/// A mismatch at a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadBlock {
    /// The block.
    pub lba: u64,
    /// What was wrong.
    pub what: Mismatch,
}

impl std::fmt::Display for BadBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LBA {}: {}", self.lba, self.what)
    }
}

/// splitmix64: a fast generator whose every output depends on the whole seed.
#[inline]
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn seed(run: u64, lba: u64, seq: u32) -> u64 {
    let mut s = run ^ lba.rotate_left(17) ^ (u64::from(seq) << 40);
    splitmix(&mut s)
}

fn block_crc(block: &[u8]) -> u32 {
    let head = block.get(..4).unwrap_or(&[]);
    let tail = block.get(8..).unwrap_or(&[]);
    crc32c::crc32c_append(crc32c::crc32c_append(crc32c::crc32c(head), &[0; 4]), tail)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

/// Writes the contents of write `seq` of run `run` to `lba` into `block`.
pub fn fill_block(block: &mut [u8], run: u64, lba: u64, seq: u32) {
    let mut s = seed(run, lba, seq);
    let (head, body) = block.split_at_mut(HEADER_LEN.min(block.len()));
    let mut chunks = body.chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&splitmix(&mut s).to_le_bytes());
    }
    let rest = chunks.into_remainder();
    let last = splitmix(&mut s).to_le_bytes();
    rest.copy_from_slice(last.get(..rest.len()).unwrap_or(&[]));
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC);
    h[8..16].copy_from_slice(&lba.to_le_bytes());
    h[16..20].copy_from_slice(&seq.to_le_bytes());
    h[24..32].copy_from_slice(&run.to_le_bytes());
    head.copy_from_slice(h.get(..head.len()).unwrap_or(&[]));
    let crc = block_crc(block);
    if let Some(c) = block.get_mut(4..8) {
        c.copy_from_slice(&crc.to_le_bytes());
    }
}

/// What a block holds, as far as its own contents tell: `None` if all zeroes, else the run
/// and sequence number of a valid header for `lba`.
pub fn parse_block(block: &[u8], lba: u64) -> Result<Option<(u64, u32)>, Mismatch> {
    if block.get(..4) != Some(&MAGIC[..]) {
        return if block.iter().all(|&b| b == 0) {
            Ok(None)
        } else {
            Err(Mismatch::NoHeader)
        };
    }
    let stored = le_u32(block, 4);
    let computed = block_crc(block);
    if stored != computed {
        return Err(Mismatch::BadChecksum { stored, computed });
    }
    let found = le_u64(block, 8);
    if found != lba {
        return Err(Mismatch::WrongLba(found));
    }
    Ok(Some((le_u64(block, 24), le_u32(block, 16))))
}

/// The write history of one namespace during a run, shared by every job on it.
#[derive(Debug)]
pub struct VerifyMap {
    run: u64,
    block_size: usize,
    blocks_per_slot: u64,
    /// Per block: sequence number of the last acknowledged write (0: none), maybe UNCERTAIN.
    seq: Box<[AtomicU32]>,
    /// Per I/O slot: set while an I/O on it is in flight.
    busy: Box<[AtomicU64]>,
    slots: u64,
}

impl VerifyMap {
    /// A map for `slots` I/O slots of `blocks_per_slot` blocks of `block_size` bytes.
    pub fn new(
        run: u64,
        block_size: u32,
        blocks_per_slot: u64,
        slots: u64,
    ) -> Result<VerifyMap, String> {
        let blocks = slots
            .checked_mul(blocks_per_slot)
            .ok_or("-V: the namespace is too large")?;
        let bytes = blocks.saturating_mul(4).saturating_add(slots / 8);
        if bytes > MAX_TABLE_BYTES {
            return Err(format!(
                "-V: {blocks} blocks need {} MiB of sequence numbers (limit {} MiB)",
                bytes >> 20,
                MAX_TABLE_BYTES >> 20
            ));
        }
        let n = usize::try_from(blocks).map_err(|e| e.to_string())?;
        let words = usize::try_from(slots.div_ceil(64)).map_err(|e| e.to_string())?;
        Ok(VerifyMap {
            run,
            block_size: usize::try_from(block_size).map_err(|e| e.to_string())?,
            blocks_per_slot,
            seq: (0..n).map(|_| AtomicU32::new(0)).collect(),
            busy: (0..words).map(|_| AtomicU64::new(0)).collect(),
            slots,
        })
    }

    /// I/O slots.
    pub fn slots(&self) -> u64 {
        self.slots
    }

    fn word_bit(slot: u64) -> (usize, u64) {
        (
            usize::try_from(slot / 64).unwrap_or(usize::MAX),
            1 << (slot % 64),
        )
    }

    /// Claims `slot` if it is free.
    #[inline]
    pub fn try_claim(&self, slot: u64) -> bool {
        let (w, bit) = Self::word_bit(slot);
        slot < self.slots
            && self
                .busy
                .get(w)
                .is_some_and(|a| a.fetch_or(bit, Ordering::AcqRel) & bit == 0)
    }

    /// Claims the first free slot at or after `from` (wrapping around). Spins over the table
    /// until one frees up: callers keep fewer I/Os in flight than there are slots.
    pub fn claim_from(&self, from: u64) -> u64 {
        let words = self.busy.len();
        let start = usize::try_from(from / 64).unwrap_or(0) % words.max(1);
        loop {
            for i in 0..words {
                let w = (start + i) % words;
                let Some(word) = self.busy.get(w) else {
                    continue;
                };
                let mut cur = word.load(Ordering::Relaxed);
                loop {
                    let base = u64::try_from(w).unwrap_or(0) * 64;
                    // Bits of slots that exist and are free.
                    let valid = match self.slots.saturating_sub(base) {
                        n if n >= 64 => u64::MAX,
                        n => (1u64 << n) - 1,
                    };
                    let free = !cur & valid;
                    if free == 0 {
                        break;
                    }
                    let bit = free & free.wrapping_neg();
                    match word.compare_exchange_weak(
                        cur,
                        cur | bit,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return base + u64::from(bit.trailing_zeros()),
                        Err(now) => cur = now,
                    }
                }
            }
            std::hint::spin_loop();
        }
    }

    /// Releases a slot claimed by [`VerifyMap::try_claim`] or [`VerifyMap::claim_from`].
    #[inline]
    pub fn release(&self, slot: u64) {
        let (w, bit) = Self::word_bit(slot);
        if let Some(a) = self.busy.get(w) {
            a.fetch_and(!bit, Ordering::Release);
        }
    }

    fn blocks(&self, slot: u64) -> impl Iterator<Item = (u64, &AtomicU32)> {
        let first = slot * self.blocks_per_slot;
        let idx = usize::try_from(first).unwrap_or(usize::MAX);
        let n = usize::try_from(self.blocks_per_slot).unwrap_or(0);
        (first..).zip(self.seq.iter().skip(idx).take(n))
    }

    /// Fills `buf` with the next write to the claimed `slot`.
    pub fn fill_write(&self, slot: u64, buf: &mut [u8]) {
        for ((lba, seq), block) in self.blocks(slot).zip(buf.chunks_mut(self.block_size)) {
            let next = next_seq(seq.load(Ordering::Relaxed));
            fill_block(block, self.run, lba, next);
        }
    }

    /// Fills a read buffer with a pattern that no check accepts.
    pub fn poison(buf: &mut [u8]) {
        buf.fill(POISON);
    }

    /// Records the end of the write to the claimed `slot`: acknowledged or failed.
    pub fn write_done(&self, slot: u64, ok: bool) {
        for (_, seq) in self.blocks(slot) {
            let next = next_seq(seq.load(Ordering::Relaxed));
            seq.store(if ok { next } else { next | UNCERTAIN }, Ordering::Relaxed);
        }
    }

    /// Checks what a read of the claimed `slot` returned; the first bad block, if any.
    pub fn check_read(&self, slot: u64, buf: &[u8]) -> Result<(), BadBlock> {
        for ((lba, seq), block) in self.blocks(slot).zip(buf.chunks(self.block_size)) {
            let last = seq.load(Ordering::Relaxed);
            self.check_block(block, lba, last)
                .map_err(|what| BadBlock { lba, what })?;
        }
        Ok(())
    }

    fn check_block(&self, block: &[u8], lba: u64, last: u32) -> Result<(), Mismatch> {
        let expected = last & !UNCERTAIN;
        // Acceptable sequence numbers: the last write, or the one before if it failed.
        let previous = if last & UNCERTAIN != 0 {
            expected.checked_sub(1)
        } else {
            None
        };
        let accepts = |s: u32| s == expected || previous == Some(s);
        match parse_block(block, lba)? {
            None if accepts(0) => Ok(()),
            None => Err(Mismatch::Zeroes { expected }),
            // Never written in this run (or maybe not): anything valid for this LBA.
            Some(_) if accepts(0) => Ok(()),
            Some((run, found)) if run == self.run && accepts(found) => Ok(()),
            Some((run, found)) => Err(Mismatch::Stale {
                found,
                expected,
                other_run: run != self.run,
            }),
        }
    }
}

/// The sequence number after `last` (ignoring the uncertain mark); never 0.
fn next_seq(last: u32) -> u32 {
    match (last & !UNCERTAIN).wrapping_add(1) & !UNCERTAIN {
        0 => 1,
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: usize = 512;

    fn map(slots: u64) -> VerifyMap {
        VerifyMap::new(7, 512, 2, slots).unwrap()
    }

    #[test]
    fn written_blocks_read_back_and_corruption_is_caught() {
        let m = map(16);
        let mut buf = vec![0u8; 2 * BS];
        assert_eq!(
            m.check_read(3, &buf),
            Ok(()),
            "never written: zeroes are fine"
        );
        assert!(m.try_claim(3));
        m.fill_write(3, &mut buf);
        m.write_done(3, true);
        m.release(3);
        assert_eq!(m.check_read(3, &buf), Ok(()));
        let v1 = buf.clone();
        // A second write; the first one's data is now stale.
        m.fill_write(3, &mut buf);
        m.write_done(3, true);
        assert_eq!(m.check_read(3, &buf), Ok(()));
        let stale = m.check_read(3, &v1).unwrap_err();
        assert_eq!(stale.lba, 6);
        assert_eq!(
            stale.what,
            Mismatch::Stale {
                found: 1,
                expected: 2,
                other_run: false
            }
        );
        // One flipped bit anywhere in the block.
        for at in [0usize, 5, 9, 17, 30, 100, BS - 1] {
            let mut bad = buf.clone();
            bad[BS + at] ^= 0x10;
            let e = m.check_read(3, &bad).unwrap_err();
            assert_eq!(e.lba, 7, "byte {at}");
        }
        // Zeroes after a write, and the other slot's data.
        assert_eq!(
            m.check_read(3, &vec![0u8; 2 * BS]).unwrap_err().what,
            Mismatch::Zeroes { expected: 2 }
        );
        let mut other = vec![0u8; 2 * BS];
        m.fill_write(4, &mut other);
        assert!(matches!(
            m.check_read(3, &other).unwrap_err().what,
            Mismatch::WrongLba(8)
        ));
        let mut poisoned = vec![0u8; 2 * BS];
        VerifyMap::poison(&mut poisoned);
        assert_eq!(
            m.check_read(3, &poisoned).unwrap_err().what,
            Mismatch::NoHeader
        );
    }

    #[test]
    fn data_of_another_run_is_accepted_only_where_this_run_did_not_write() {
        let old = map(4);
        let mut buf = vec![0u8; 2 * BS];
        old.fill_write(1, &mut buf);
        old.write_done(1, true);
        let new = VerifyMap::new(8, 512, 2, 4).unwrap();
        assert_eq!(new.check_read(1, &buf), Ok(()));
        let mut mine = vec![0u8; 2 * BS];
        new.fill_write(1, &mut mine);
        new.write_done(1, true);
        assert!(matches!(
            new.check_read(1, &buf).unwrap_err().what,
            Mismatch::Stale {
                found: 1,
                expected: 1,
                other_run: true
            }
        ));
    }

    #[test]
    fn a_failed_write_leaves_either_version_acceptable() {
        let m = map(4);
        let mut v1 = vec![0u8; 2 * BS];
        m.fill_write(0, &mut v1);
        m.write_done(0, true);
        let mut v2 = vec![0u8; 2 * BS];
        m.fill_write(0, &mut v2);
        m.write_done(0, false);
        assert_eq!(m.check_read(0, &v1), Ok(()));
        assert_eq!(m.check_read(0, &v2), Ok(()));
        let mut v3 = vec![0u8; 2 * BS];
        m.fill_write(0, &mut v3);
        m.write_done(0, true);
        assert_eq!(m.check_read(0, &v3), Ok(()));
        assert!(m.check_read(0, &v1).is_err());
    }

    #[test]
    fn slots_are_claimed_once() {
        let m = map(70);
        assert!(m.try_claim(69));
        assert!(!m.try_claim(69));
        let mut got: Vec<u64> = (0..69).map(|i| m.claim_from(i * 7)).collect();
        got.sort_unstable();
        assert_eq!(got, (0..69).collect::<Vec<_>>(), "every free slot, once");
        m.release(12);
        assert_eq!(m.claim_from(60), 12, "the one free slot");
        assert!(!m.try_claim(70), "past the end");
    }

    #[test]
    fn oversized_tables_are_refused() {
        assert!(VerifyMap::new(1, 512, 1, 1 << 40).is_err());
    }
}
