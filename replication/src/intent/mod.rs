//! The write-intent bitmap (Linux md's bitmap, kept on every replica): which regions of the
//! volume may hold writes that not every replica has, recorded durably before such a write
//! reaches any child, so that after a crash of the nexus only those regions are resynced.
//!
//! # Rules
//! - A host write (write, write zeroes, deallocate) to region `r` is sent to the children only
//!   once `r`'s bit is durable on the children in the write path (a FUA write of the bitmap).
//!   A write that finds its bit clear asks the intent task to persist it and waits, parked as
//!   a range-locked write is. Writes to a region already marked pay one load.
//! - A bit is cleared lazily: a region not written for a whole period (`intent_clean`) is
//!   cleared in memory; a gate barrier then waits for every write that could have seen the bit
//!   set, a flush makes those writes durable on every child, and only then is the cleared
//!   bitmap written. A write arriving after the clear finds the bit clear and sets it again
//!   first (bitmap writes are made one at a time, by one task).
//! - The bitmap is written again, to every child then in the write path, whenever the labels
//!   move to a new generation (creation, a child faulted, removed or joining); a restart
//!   trusts a bitmap only at its labels' generation.
//! - After an unclean stop, the union of the current children's bitmaps is what `create`
//!   resynchronises from the chosen replica; an unreadable, foreign or older bitmap means a
//!   full resync.
//!
//! # On-disk layout (in the reserved metadata region of every child, see [`crate::label`])
//! At byte [`INTENT_OFFSET`] (64 KiB) a header (magic `SHOALWIB`, version, volume UUID, the
//! label generation it was written at, region size, number of regions, CRC-32C of the
//! header); from byte [`BITS_OFFSET`] (68 KiB) the
//! bits, one per region, as little-endian 64-bit words, up to the end of the region (956 KiB:
//! 7.8 million regions, so regions grow beyond 1 MiB only past 7.4 TiB). The bits are not
//! checksummed: a torn bitmap write leaves each sector old or new, and both agree on every bit
//! but those the write changed. A bit being set guards no data yet (the data waits for it);
//! a bit being cleared guards only data already flushed everywhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shoal_bdev::{BdevError, BdevIo, IoBuf, IoChannel, IoFlags, SgList};
use uuid::Uuid;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::dirty::DirtyMap;
use crate::exec::{self, Signal};
use crate::label::META_BYTES;
use crate::routing::ChildShared;
use crate::types::Geometry;

pub(crate) mod task;

/// Byte offset of the bitmap's header in a child.
pub const INTENT_OFFSET: u64 = 64 << 10;
/// Byte offset of the bits.
pub const BITS_OFFSET: u64 = INTENT_OFFSET + 4096;
/// The header magic.
pub const INTENT_MAGIC: [u8; 8] = *b"SHOALWIB";
/// The format version.
pub const INTENT_VERSION: u32 = 1;
/// The smallest region.
pub const MIN_REGION_BYTES: u64 = 1 << 20;
/// The most regions the reserved space holds.
pub const MAX_REGIONS: u64 = (META_BYTES - BITS_OFFSET) * 8;
/// How long a region must go unwritten before its bit is cleared (by default).
pub const DEFAULT_CLEAN_PERIOD: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct RawHeader {
    magic: [u8; 8],
    version: U32,
    header_len: U32,
    volume: [u8; 16],
    /// The label generation current when it was written: a bitmap is trusted only at the
    /// generation of the labels it is read with (see [`decode`]).
    generation: U64,
    region_bytes: U64,
    regions: U64,
    crc: U32,
    _pad: U32,
}

const HEADER_LEN: usize = size_of::<RawHeader>();
const HEADER_CRC_AT: usize = HEADER_LEN - 8;
const _: () = assert!(HEADER_LEN == 64);

/// The region size for a volume of `data_bytes` with segments of `seg_bytes`: a power of two,
/// a whole number of segments, at least [`MIN_REGION_BYTES`], and small enough that the
/// regions fit the reserved space.
pub fn region_bytes(data_bytes: u64, seg_bytes: u64) -> u64 {
    let mut rb = MIN_REGION_BYTES.max(seg_bytes).next_power_of_two();
    while data_bytes.div_ceil(rb) > MAX_REGIONS {
        rb = rb.saturating_mul(2);
    }
    rb
}

/// Why a child's bitmap cannot be used (the resync then covers the whole volume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentError {
    /// Never written (a child from before the bitmap, or blank).
    Missing,
    /// The header is damaged, of another volume, or of an unknown version.
    Invalid(String),
}

/// A decoded bitmap: its region size and the set regions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnDisk {
    /// Bytes per region.
    pub region_bytes: u64,
    /// Regions.
    pub regions: u64,
    /// The bits, 64 regions a word.
    pub words: Vec<u64>,
}

/// What identifies a bitmap: its volume and the label generation it was written at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The volume.
    pub volume: Uuid,
    /// The label generation.
    pub generation: u64,
}

/// Encodes the header and `words` as written at [`INTENT_OFFSET`], padded to `bs`.
pub fn encode(stamp: Stamp, region_bytes: u64, regions: u64, words: &[u64], bs: u32) -> Vec<u8> {
    let mut h = RawHeader {
        magic: INTENT_MAGIC,
        version: U32::new(INTENT_VERSION),
        header_len: U32::new(u32::try_from(HEADER_CRC_AT).unwrap_or(0)),
        volume: *stamp.volume.as_bytes(),
        generation: U64::new(stamp.generation),
        region_bytes: U64::new(region_bytes),
        regions: U64::new(regions),
        crc: U32::new(0),
        _pad: U32::new(0),
    };
    let crc = crc32c::crc32c(&h.as_bytes()[..HEADER_CRC_AT]);
    h.crc = U32::new(crc);
    let gap = usize::try_from(BITS_OFFSET - INTENT_OFFSET).unwrap_or(4096);
    let mut out = vec![0u8; gap];
    out[..HEADER_LEN].copy_from_slice(h.as_bytes());
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    let bs = usize::try_from(bs.max(1)).unwrap_or(4096);
    out.resize(out.len().div_ceil(bs) * bs, 0);
    out
}

/// Decodes a bitmap read from [`INTENT_OFFSET`] (`data` holds at least the header block and
/// the bits it announces), for a volume of `data_bytes` whose current labels are at
/// `stamp.generation`. Any byte pattern gives a value or an error, never a panic.
///
/// A bitmap written at another generation is refused: the labels moved on without it (a life
/// of the nexus without the bitmap, or one that changed the in-sync set and stopped before
/// rewriting it), so it may not cover every region written since. Only the bitmap of the
/// same generation as the labels is complete for every child that holds those labels.
pub fn decode(data: &[u8], stamp: Stamp, data_bytes: u64) -> Result<OnDisk, IntentError> {
    let gap = usize::try_from(BITS_OFFSET - INTENT_OFFSET).unwrap_or(4096);
    let head = data.get(..HEADER_LEN).ok_or(IntentError::Missing)?;
    if head.iter().all(|&b| b == 0) {
        return Err(IntentError::Missing);
    }
    let h = RawHeader::read_from_bytes(head)
        .map_err(|_| IntentError::Invalid("short header".into()))?;
    if h.magic != INTENT_MAGIC {
        return Err(IntentError::Invalid("bad magic".into()));
    }
    if crc32c::crc32c(&head[..HEADER_CRC_AT]) != h.crc.get() {
        return Err(IntentError::Invalid("header checksum mismatch".into()));
    }
    if h.version.get() != INTENT_VERSION {
        return Err(IntentError::Invalid(format!(
            "version {} (this code knows {INTENT_VERSION})",
            h.version.get()
        )));
    }
    if h.volume != *stamp.volume.as_bytes() {
        return Err(IntentError::Invalid("another volume's bitmap".into()));
    }
    if h.generation.get() != stamp.generation {
        return Err(IntentError::Invalid(format!(
            "written at generation {}, the labels are at {}",
            h.generation.get(),
            stamp.generation
        )));
    }
    let (rb, regions) = (h.region_bytes.get(), h.regions.get());
    let fits = rb.is_power_of_two()
        && rb >= MIN_REGION_BYTES
        && regions <= MAX_REGIONS
        && regions == data_bytes.div_ceil(rb).max(1);
    if !fits {
        return Err(IntentError::Invalid(format!(
            "geometry: {regions} regions of {rb} bytes for a volume of {data_bytes} bytes"
        )));
    }
    let n = usize::try_from(regions.div_ceil(64)).unwrap_or(usize::MAX);
    let bits = data
        .get(gap..)
        .and_then(|b| b.get(..n.saturating_mul(8)))
        .ok_or_else(|| IntentError::Invalid("truncated bits".into()))?;
    let words = bits
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    Ok(OnDisk {
        region_bytes: rb,
        regions,
        words,
    })
}

impl OnDisk {
    /// Marks in `map` (segments of `seg_bytes`) every segment that a set region overlaps.
    pub(crate) fn mark(&self, map: &DirtyMap, seg_bytes: u64) {
        let seg_bytes = seg_bytes.max(1);
        for (wi, &w) in self.words.iter().enumerate() {
            let mut bits = w;
            while bits != 0 {
                let r = (wi as u64) * 64 + u64::from(bits.trailing_zeros());
                bits &= bits - 1;
                if r >= self.regions {
                    break;
                }
                let start = r.saturating_mul(self.region_bytes);
                let end = start.saturating_add(self.region_bytes);
                map.mark(start / seg_bytes, (end - 1) / seg_bytes);
            }
        }
    }
}

fn words(n: u64) -> Box<[AtomicU64]> {
    (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect()
}

/// The nexus's write-intent bitmap in memory.
pub(crate) struct IntentMap {
    /// False: no bitmap is kept (every write goes at once; a crash means a full resync).
    pub(crate) enabled: bool,
    /// Segments per region, as a shift.
    shift: u32,
    pub(crate) region_bytes: u64,
    pub(crate) regions: u64,
    /// Regions whose bit is durable on the children.
    marked: Box<[AtomicU64]>,
    /// Regions writes are waiting for.
    want: Box<[AtomicU64]>,
    /// Regions written since the last cleaning pass.
    touched: Box<[AtomicU64]>,
    /// Regions a cleaning pass cleared in memory whose flush has not completed yet: their
    /// writes may still be only in a child's volatile cache (see [`IntentMap::mark_unflushed`]).
    cleaning: Box<[AtomicU64]>,
    /// Wakes the intent task.
    pub(crate) wake: Signal,
    /// How long a region must go unwritten before it is cleared.
    pub(crate) clean_period: Duration,
    /// Bitmap writes made (for tests and status).
    pub(crate) writes: AtomicU64,
    /// The intent task has ended (or never runs: no bitmap).
    pub(crate) stopped: std::sync::atomic::AtomicBool,
}

impl IntentMap {
    pub(crate) fn new(geo: &Geometry, enabled: bool, clean_period: Duration) -> IntentMap {
        let bs = u64::from(geo.block_size);
        let seg_bytes = geo.seg_blocks.saturating_mul(bs);
        let data_bytes = geo.data_blocks.saturating_mul(bs);
        let rb = region_bytes(data_bytes, seg_bytes);
        let regions = data_bytes.div_ceil(rb).max(1);
        let shift = (rb / seg_bytes.max(1)).trailing_zeros();
        IntentMap {
            enabled,
            shift,
            region_bytes: rb,
            regions,
            marked: words(regions),
            want: words(regions),
            touched: words(regions),
            cleaning: words(regions),
            wake: Signal::default(),
            clean_period,
            writes: AtomicU64::new(0),
            stopped: std::sync::atomic::AtomicBool::new(!enabled),
        }
    }

    fn at(v: &[AtomicU64], r: u64) -> Option<(&AtomicU64, u64)> {
        let w = v.get(usize::try_from(r / 64).ok()?)?;
        Some((w, 1u64 << (r % 64)))
    }

    /// Whether writes to segments `first..=last` may go to the children now; notes them as
    /// written. Called inside the gate (the cleaning pass relies on it).
    #[inline]
    pub(crate) fn ready(&self, first: u64, last: u64) -> bool {
        if !self.enabled {
            return true;
        }
        let mut ok = true;
        for r in (first >> self.shift)..=(last >> self.shift) {
            // Past the regions of the bitmap (the nexus grew since it was made: see
            // `crate::resize`): nothing to mark. The bitmap on the children no longer fits
            // the labels' size, so a restart after a crash resynchronises in full.
            if r >= self.regions {
                continue;
            }
            if let Some((t, bit)) = Self::at(&self.touched, r)
                && t.load(Ordering::Relaxed) & bit == 0
            {
                t.fetch_or(bit, Ordering::Relaxed);
            }
            // Sequentially consistent: ordered after the gate entry, so that a cleaning pass
            // that cleared the bit before this load has this write in its barrier's view, or
            // this load sees the clear.
            ok &= Self::at(&self.marked, r)
                .is_some_and(|(m, bit)| m.load(Ordering::SeqCst) & bit != 0);
        }
        ok
    }

    /// Asks for segments `first..=last` to be marked, and wakes the intent task.
    pub(crate) fn request(&self, first: u64, last: u64) {
        for r in (first >> self.shift)..=(last >> self.shift) {
            if let Some((w, bit)) = Self::at(&self.want, r) {
                w.fetch_or(bit, Ordering::AcqRel);
            }
        }
        self.wake.notify();
    }

    /// Regions marked now, or being cleared (still marked on disk until the pass ends).
    pub(crate) fn marked_regions(&self) -> u64 {
        self.marked
            .iter()
            .zip(&self.cleaning)
            .map(|(m, c)| {
                u64::from((m.load(Ordering::Acquire) | c.load(Ordering::Acquire)).count_ones())
            })
            .sum()
    }

    /// Marks the regions a resync covers (set in memory and written with the first bitmap).
    pub(crate) fn preset(&self, on_disk: &[OnDisk], seg_bytes: u64) {
        let map = DirtyMap::new(self.regions.saturating_mul(1 << self.shift), false);
        for d in on_disk {
            d.mark(&map, seg_bytes);
        }
        let mut s = map.next_dirty(0);
        while let Some(seg) = s {
            if let Some((w, bit)) = Self::at(&self.marked, seg >> self.shift) {
                w.fetch_or(bit, Ordering::SeqCst);
            }
            s = map.next_dirty(seg + 1);
        }
    }

    /// The marked regions, as words.
    pub(crate) fn snapshot(&self) -> Vec<u64> {
        self.marked
            .iter()
            .map(|w| w.load(Ordering::SeqCst))
            .collect()
    }

    /// Takes the regions writes wait for.
    pub(crate) fn take_wanted(&self) -> Vec<u64> {
        self.want
            .iter()
            .map(|w| w.swap(0, Ordering::AcqRel))
            .collect()
    }

    /// Gives back regions that could not be persisted.
    pub(crate) fn put_back(&self, want: &[u64]) {
        for (w, &v) in self.want.iter().zip(want) {
            w.fetch_or(v, Ordering::AcqRel);
        }
    }

    /// Marks regions whose bits are now durable: writes waiting for them may go.
    pub(crate) fn set_marked(&self, regions: &[u64]) {
        for (m, &v) in self.marked.iter().zip(regions) {
            if v != 0 {
                m.fetch_or(v, Ordering::SeqCst);
            }
        }
    }

    /// Clears, in memory, the marked regions no write touched since the last call (and none
    /// waits for); starts a new period. Returns the regions cleared (as words), which stay
    /// in `cleaning` until [`IntentMap::cleaned`]. The caller must pass a gate barrier and
    /// flush every child before the cleared bitmap may be written, and mark them again
    /// ([`IntentMap::set_marked`]) if it cannot.
    pub(crate) fn clear_untouched(&self) -> Vec<u64> {
        let mut cleared = Vec::with_capacity(self.marked.len());
        let words = self.marked.iter().zip(&self.touched).zip(&self.want);
        for (((m, t), w), c) in words.zip(&self.cleaning) {
            let touched = t.swap(0, Ordering::Relaxed);
            let clear = m.load(Ordering::SeqCst) & !touched & !w.load(Ordering::Acquire);
            if clear != 0 {
                // In `cleaning` before it leaves `marked`: a region is always in one of them
                // until the flush that makes its writes durable has completed.
                c.fetch_or(clear, Ordering::SeqCst);
                m.fetch_and(!clear, Ordering::SeqCst);
            }
            cleared.push(clear);
        }
        cleared
    }

    /// Ends a cleaning pass: its regions are either flushed on every child then in the write
    /// path, or marked again.
    pub(crate) fn cleaned(&self, cleared: &[u64]) {
        for (c, &v) in self.cleaning.iter().zip(cleared) {
            if v != 0 {
                c.fetch_and(!v, Ordering::SeqCst);
            }
        }
    }

    /// Marks in `map` (segments) every region whose writes may not be durable on a child yet:
    /// the marked regions and those being cleaned. Every write a child acknowledged since its
    /// last flush lies in one of them (a write goes out only once its region is marked, and a
    /// region leaves `cleaning` only after a flush of every child in the write path), so a
    /// child that leaves the write path now and lost its volatile cache meanwhile is rebuilt
    /// there. Without a bitmap nothing says where those writes are: every segment.
    pub(crate) fn mark_unflushed(&self, map: &DirtyMap) {
        if !self.enabled {
            map.set_all();
            return;
        }
        for (wi, (m, c)) in self.marked.iter().zip(&self.cleaning).enumerate() {
            let mut bits = m.load(Ordering::SeqCst) | c.load(Ordering::SeqCst);
            while bits != 0 {
                let r = (wi as u64) * 64 + u64::from(bits.trailing_zeros());
                bits &= bits - 1;
                let first = r << self.shift;
                map.mark(first, first + (1u64 << self.shift) - 1);
            }
        }
    }
}

/// Reads a child's bitmap (`timeout` per I/O), for a volume of `data_bytes` whose labels are
/// at `stamp` (see [`decode`]).
pub(crate) async fn read(
    chan: &IoChannel,
    bs: u32,
    (stamp, data_bytes): (Stamp, u64),
    timeout: Duration,
) -> Result<OnDisk, IntentError> {
    let bs64 = u64::from(bs.max(1));
    let len = META_BYTES - INTENT_OFFSET;
    let mut bufs = SgList::new();
    bufs.push(IoBuf::zeroed(usize::try_from(len).unwrap_or(0)));
    let io = BdevIo::read(INTENT_OFFSET / bs64, len / bs64, bufs);
    let (io, r) = exec::io(chan, io, timeout).await;
    if let Err(e) = r {
        return Err(IntentError::Invalid(format!("cannot read it: {e}")));
    }
    decode(
        io.bufs.first().map(IoBuf::as_slice).unwrap_or(&[]),
        stamp,
        data_bytes,
    )
}

/// Writes `words` as the bitmap of `child` with Force Unit Access.
pub(crate) async fn write(
    child: &Arc<ChildShared>,
    chan: &IoChannel,
    map: &IntentMap,
    (stamp, bs): (Stamp, u32),
    words: &[u64],
    timeout: Duration,
) -> Result<(), BdevError> {
    let data = encode(stamp, map.region_bytes, map.regions, words, bs);
    let bs64 = u64::from(bs.max(1));
    let blocks = u64::try_from(data.len()).unwrap_or(0) / bs64;
    let mut bufs = SgList::new();
    bufs.push(IoBuf::copy_from(&data));
    let io = BdevIo::write(INTENT_OFFSET / bs64, blocks, bufs).with_flags(IoFlags::FUA);
    exec::write_to(child, chan, io, timeout).await.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_fit_the_reserved_space() {
        assert_eq!(region_bytes(1 << 30, 128 << 10), 1 << 20);
        assert_eq!(region_bytes(1 << 30, 16 << 20), 16 << 20);
        let ten_tib = 10u64 << 40;
        let rb = region_bytes(ten_tib, 128 << 10);
        assert!(ten_tib.div_ceil(rb) <= MAX_REGIONS && rb == 2 << 20, "{rb}");
        assert!(region_bytes(u64::MAX, 1).is_power_of_two());
    }

    #[test]
    fn encode_decode_round_trip() {
        let s = Stamp {
            volume: Uuid::new_v4(),
            generation: 7,
        };
        let size = 190 << 20;
        let words = [0b1011u64, 0, 1 << 63];
        for bs in [512, 4096] {
            let data = encode(s, 1 << 20, 190, &words, bs);
            assert_eq!(data.len() % bs as usize, 0);
            let d = decode(&data, s, size).unwrap();
            assert_eq!(d.region_bytes, 1 << 20);
            assert_eq!(d.regions, 190);
            assert_eq!(d.words, words);
        }
        let data = encode(s, 1 << 20, 190, &words, 512);
        let other = Stamp {
            volume: Uuid::new_v4(),
            ..s
        };
        let e = Err(IntentError::Invalid("another volume's bitmap".into()));
        assert_eq!(decode(&data, other, size), e);
        let later = Stamp { generation: 8, ..s };
        assert!(matches!(
            decode(&data, later, size),
            Err(IntentError::Invalid(_))
        ));
        assert!(matches!(
            decode(&data, s, size * 2),
            Err(IntentError::Invalid(_))
        ));
        assert_eq!(decode(&[0; 8192], s, size), Err(IntentError::Missing));
        let mut bad = data.clone();
        bad[20] ^= 1;
        assert!(matches!(
            decode(&bad, s, size),
            Err(IntentError::Invalid(_))
        ));
        assert!(matches!(
            decode(&data[..4100], s, size),
            Err(IntentError::Invalid(_))
        ));
    }

    /// Any bytes decode to a value or an error, never a panic.
    #[test]
    fn decoding_arbitrary_bytes_does_not_panic() {
        let s = Stamp {
            volume: Uuid::nil(),
            generation: 0,
        };
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in [0usize, 10, 63, 64, 4095, 4096, 4100, 9000] {
            for _ in 0..200 {
                let mut data: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x.to_le_bytes()[0]
                    })
                    .collect();
                if len >= 64 {
                    // A valid magic and checksum make the later checks run too.
                    data[..8].copy_from_slice(&INTENT_MAGIC);
                    data[8..12].copy_from_slice(&INTENT_VERSION.to_le_bytes());
                    let crc = crc32c::crc32c(&data[..HEADER_CRC_AT]);
                    data[HEADER_CRC_AT..HEADER_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
                }
                let _ = decode(&data, s, x);
            }
        }
    }

    #[test]
    fn a_set_region_marks_its_segments() {
        let d = OnDisk {
            region_bytes: 1 << 20,
            regions: 4,
            words: vec![0b1010],
        };
        let m = DirtyMap::new(32, false);
        d.mark(&m, 128 << 10);
        assert_eq!(m.count(), 16);
        assert!(m.is_dirty(8) && m.is_dirty(15) && !m.is_dirty(16) && m.is_dirty(24));
    }
}
