//! The metadata each replica carries: a label in a reserved region at the start of the child,
//! outside the blocks the host sees.
//!
//! # Layout
//! The first [`META_BYTES`] (1 MiB) of every child are reserved; the nexus's block 0 is the
//! child's byte `META_BYTES`. The reserved region holds two label slots of [`SLOT_BYTES`] at
//! byte 0 and byte 4096 (whole blocks at 512- and 4096-byte block sizes).
//!
//! # Crash safety
//! A label is only ever written with a new generation, into slot `generation % 2`, followed by
//! a flush. The slot holding the previous generation is untouched, so a torn write leaves the
//! older label readable (and the newer one fails its CRC-32C). A reader takes the valid slot of
//! highest generation.
//!
//! # What the generation means
//! The nexus bumps the generation whenever the set of in-sync children changes and writes it
//! to every child that is in sync at that point (with `in_sync` set) before it acknowledges
//! any host I/O that depends on the change. A child that missed a bump carries an older
//! generation: after a restart, the children whose label is `in_sync` at the highest such
//! generation are current; the others are stale. `clean` is set when the nexus was destroyed
//! in an orderly way; after a crash, current children may disagree on writes that were never
//! acknowledged, so the nexus resynchronises them from one of them.

use uuid::Uuid;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Bytes reserved at the start of each child.
pub const META_BYTES: u64 = 1 << 20;
/// Bytes of one label slot.
pub const SLOT_BYTES: usize = 4096;
/// Label slots.
pub const SLOTS: usize = 2;
/// The label magic.
pub const MAGIC: [u8; 8] = *b"SHOALNXS";
/// The label format version.
pub const VERSION: u32 = 1;
/// The highest generation a nexus takes over from a child it adds, unless it wrote it itself
/// (half the range: 2^63 changes of the in-sync set; every change adds one). A label above it
/// is corrupt or crafted.
pub const MAX_GENERATION: u64 = u64::MAX / 2;
/// The highest generation `nexus_create` takes over: the bound above plus 2^32 changes made
/// after taking over a label at it (so such a nexus can still restart), far from the top of
/// the range (so the generation can always advance).
pub const MAX_RESTART_GENERATION: u64 = MAX_GENERATION + (1 << 32);

const FLAG_IN_SYNC: u32 = 1;
const FLAG_CLEAN: u32 = 2;

/// The on-disk label (little-endian), at the start of its slot; the rest of the slot is zero.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct RawLabel {
    magic: [u8; 8],
    version: U32,
    /// Bytes covered by the checksum (this struct without `crc`).
    header_len: U32,
    volume_uuid: [u8; 16],
    replica_uuid: [u8; 16],
    generation: U64,
    flags: U32,
    block_size: U32,
    /// First block of the nexus's data on the child.
    data_offset_blocks: U64,
    /// Blocks of the nexus's data (the nexus's size).
    data_blocks: U64,
    /// CRC-32C of the bytes before it.
    crc: U32,
    _pad: U32,
}

const RAW_LEN: usize = size_of::<RawLabel>();
const CRC_OFFSET: usize = RAW_LEN - 8;
const _: () = assert!(RAW_LEN == 88);
const _: () = assert!(RAW_LEN <= SLOT_BYTES);

/// A replica's label, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label {
    /// The volume (nexus) this replica belongs to.
    pub volume_uuid: Uuid,
    /// This replica.
    pub replica_uuid: Uuid,
    /// Generation of the nexus's in-sync set when this label was written.
    pub generation: u64,
    /// Whether the replica held current data at that generation.
    pub in_sync: bool,
    /// Whether the nexus was destroyed in an orderly way after writing it.
    pub clean: bool,
    /// Block size of the child.
    pub block_size: u32,
    /// First block of the nexus's data on the child.
    pub data_offset_blocks: u64,
    /// Size of the nexus in blocks.
    pub data_blocks: u64,
}

/// Why a slot did not hold a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotError {
    /// No magic: never labelled (or not by Shoal).
    Blank,
    /// The slot is shorter than a label.
    Short,
    /// A label of a version this code does not know.
    Version(u32),
    /// The checksum does not match (a torn or corrupted write).
    Checksum,
}

impl Label {
    /// The slot this label goes to (`generation % 2`).
    pub fn slot(&self) -> usize {
        usize::from(self.generation % 2 == 1)
    }

    /// Encodes the label into a full slot.
    pub fn encode(&self) -> [u8; SLOT_BYTES] {
        let mut flags = 0;
        if self.in_sync {
            flags |= FLAG_IN_SYNC;
        }
        if self.clean {
            flags |= FLAG_CLEAN;
        }
        let mut raw = RawLabel {
            magic: MAGIC,
            version: U32::new(VERSION),
            header_len: U32::new(u32::try_from(CRC_OFFSET).unwrap_or(0)),
            volume_uuid: *self.volume_uuid.as_bytes(),
            replica_uuid: *self.replica_uuid.as_bytes(),
            generation: U64::new(self.generation),
            flags: U32::new(flags),
            block_size: U32::new(self.block_size),
            data_offset_blocks: U64::new(self.data_offset_blocks),
            data_blocks: U64::new(self.data_blocks),
            crc: U32::new(0),
            _pad: U32::new(0),
        };
        let crc = crc32c::crc32c(&raw.as_bytes()[..CRC_OFFSET]);
        raw.crc = U32::new(crc);
        let mut out = [0u8; SLOT_BYTES];
        out[..RAW_LEN].copy_from_slice(raw.as_bytes());
        out
    }

    /// Decodes one slot.
    pub fn decode(slot: &[u8]) -> Result<Label, SlotError> {
        let (raw, _) = RawLabel::read_from_prefix(slot).map_err(|_| SlotError::Short)?;
        if raw.magic != MAGIC {
            return Err(SlotError::Blank);
        }
        if raw.version.get() != VERSION {
            return Err(SlotError::Version(raw.version.get()));
        }
        let covered = raw.as_bytes().get(..CRC_OFFSET).ok_or(SlotError::Short)?;
        if raw.header_len.get() != u32::try_from(CRC_OFFSET).unwrap_or(0)
            || crc32c::crc32c(covered) != raw.crc.get()
        {
            return Err(SlotError::Checksum);
        }
        let flags = raw.flags.get();
        Ok(Label {
            volume_uuid: Uuid::from_bytes(raw.volume_uuid),
            replica_uuid: Uuid::from_bytes(raw.replica_uuid),
            generation: raw.generation.get(),
            in_sync: flags & FLAG_IN_SYNC != 0,
            clean: flags & FLAG_CLEAN != 0,
            block_size: raw.block_size.get(),
            data_offset_blocks: raw.data_offset_blocks.get(),
            data_blocks: raw.data_blocks.get(),
        })
    }

    /// The newest valid label among the slots of a reserved region's first
    /// `SLOTS * SLOT_BYTES` bytes; `Err` with the first slot's error if none is valid.
    pub fn newest(region: &[u8]) -> Result<Label, SlotError> {
        let mut best: Option<Label> = None;
        let mut first_err = SlotError::Blank;
        for i in 0..SLOTS {
            let slot = region
                .get(i * SLOT_BYTES..(i + 1) * SLOT_BYTES)
                .ok_or(SlotError::Short)?;
            match Label::decode(slot) {
                Ok(l) if best.is_none_or(|b| l.generation > b.generation) => best = Some(l),
                Ok(_) => {}
                Err(e) if i == 0 => first_err = e,
                Err(_) => {}
            }
        }
        best.ok_or(first_err)
    }
}

/// Blocks reserved at the start of a child of `block_size`.
pub fn meta_blocks(block_size: u32) -> u64 {
    META_BYTES / u64::from(block_size.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(generation: u64) -> Label {
        Label {
            volume_uuid: Uuid::from_u128(0x1234),
            replica_uuid: Uuid::from_u128(0x5678),
            generation,
            in_sync: true,
            clean: false,
            block_size: 512,
            data_offset_blocks: meta_blocks(512),
            data_blocks: 1 << 20,
        }
    }

    #[test]
    fn roundtrip() {
        let l = Label {
            clean: true,
            ..label(7)
        };
        assert_eq!(Label::decode(&l.encode()), Ok(l));
        assert_eq!(l.slot(), 1);
        assert_eq!(label(8).slot(), 0);
        assert_eq!(meta_blocks(4096), 256);
    }

    #[test]
    fn bad_slots() {
        assert_eq!(Label::decode(&[0u8; SLOT_BYTES]), Err(SlotError::Blank));
        assert_eq!(Label::decode(&[0u8; 10]), Err(SlotError::Short));
        let mut b = label(3).encode();
        b[40] ^= 1;
        assert_eq!(Label::decode(&b), Err(SlotError::Checksum));
        let mut b = label(3).encode();
        b[8] = 9;
        assert_eq!(Label::decode(&b), Err(SlotError::Version(9)));
    }

    #[test]
    fn newest_survives_a_torn_write() {
        let mut region = vec![0u8; SLOTS * SLOT_BYTES];
        assert_eq!(Label::newest(&region), Err(SlotError::Blank));
        for g in [4u64, 5] {
            let s = label(g).slot() * SLOT_BYTES;
            region[s..s + SLOT_BYTES].copy_from_slice(&label(g).encode());
        }
        assert_eq!(Label::newest(&region).map(|l| l.generation), Ok(5));
        // Generation 6 goes to slot 0 and tears: generation 5 is still there.
        region[20] ^= 0xff;
        assert_eq!(Label::newest(&region).map(|l| l.generation), Ok(5));
        assert_eq!(Label::newest(&region[..100]), Err(SlotError::Short));
    }
}
