//! Dataset Management ranges: the data of a Dataset Management command (NVM Command Set 1.0,
//! section 3.2.3; it was section 6.7 of NVMe Base 1.4, before 2.0 moved the I/O commands to
//! the command set specifications).
//!
//! The command's data is a list of NR + 1 ranges (NR, CDW10 bits 7:0, is 0's based: 1 to 256
//! ranges) of 16 bytes each, laid out as the figure "Dataset Management – Range Definition"
//! gives: context attributes (bytes 03:00), length in logical blocks (07:04), starting LBA
//! (15:08). The host builds them with [`DsmRange::new`]; the target reads them from peer data
//! with [`DsmRange::read`] and checks each with [`DsmRange::check`], which never overflows.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::Status;

/// Size of one range, in bytes.
pub const DSM_RANGE_SIZE: usize = 16;

/// Most ranges one command carries: NR is 8 bits, 0's based.
pub const DSM_MAX_RANGES: u16 = 256;

/// One range of a Dataset Management command (NVM Command Set 1.0, section 3.2.3, figure
/// "Dataset Management – Range Definition").
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct DsmRange {
    /// Context Attributes (bytes 03:00): hints about the range's access; optional for the
    /// controller, which may ignore them.
    pub cattr: U32,
    /// Length in logical blocks (bytes 07:04). Not 0's based: 0 names no block.
    pub nlb: U32,
    /// Starting LBA (bytes 15:08).
    pub slba: U64,
}

const _: () = assert!(size_of::<DsmRange>() == DSM_RANGE_SIZE);

impl DsmRange {
    /// A range of `nlb` blocks from `slba`, without context attributes.
    pub fn new(slba: u64, nlb: u32) -> DsmRange {
        DsmRange {
            cattr: U32::new(0),
            nlb: U32::new(nlb),
            slba: U64::new(slba),
        }
    }

    /// Reads range `index` from a command's data of `len` bytes, which `copy(at, dst)` copies
    /// out (the data may lie in several buffers), returning the bytes it copied. `None` when
    /// the range is not wholly within the data.
    pub fn read(
        index: u16,
        len: usize,
        copy: impl FnOnce(usize, &mut [u8]) -> usize,
    ) -> Option<DsmRange> {
        let at = usize::from(index).checked_mul(DSM_RANGE_SIZE)?;
        if at.checked_add(DSM_RANGE_SIZE)? > len {
            return None;
        }
        let mut range = DsmRange::default();
        (copy(at, range.as_mut_bytes()) == DSM_RANGE_SIZE).then_some(range)
    }

    /// The starting LBA.
    pub fn slba(&self) -> u64 {
        self.slba.get()
    }

    /// The length in logical blocks.
    pub fn nlb(&self) -> u32 {
        self.nlb.get()
    }

    /// Checks that the range lies within a namespace of `ns_blocks` blocks. A range that
    /// reaches past the namespace's end is LBA Out of Range, as for every command that names
    /// LBAs (NVM Command Set 1.0, section 3.2.3 with the generic status of NVMe Base 2.0,
    /// "LBA Out of Range"); the sum is checked, so a starting LBA of 2^64 - 1 is a status,
    /// never an overflow. A range of no blocks names no LBA and always passes.
    pub fn check(&self, ns_blocks: u64) -> Result<(), Status> {
        if self.nlb() == 0 {
            return Ok(());
        }
        match self.slba().checked_add(u64::from(self.nlb())) {
            Some(end) if end <= ns_blocks => Ok(()),
            _ => Err(Status::LBA_OUT_OF_RANGE.with_dnr()),
        }
    }
}

/// The number of ranges a command carries, from its CDW10: NR (bits 7:0) is 0's based
/// (NVM Command Set 1.0, section 3.2.3), so 1 to [`DSM_MAX_RANGES`]; widened before the
/// `+ 1`.
pub fn range_count(cdw10: u32) -> u16 {
    u16::from(cdw10.to_le_bytes()[0]) + 1
}

/// The bytes of data `nr` ranges take.
pub fn data_len(nr: u16) -> u32 {
    u32::from(nr) * 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_follows_the_range_definition() {
        let r = DsmRange {
            cattr: U32::new(0x0A0B_0C0D),
            nlb: U32::new(9),
            slba: U64::new(0x0102_0304_0506_0708),
        };
        let b = r.as_bytes();
        assert_eq!(
            &b[0..4],
            &[0x0D, 0x0C, 0x0B, 0x0A],
            "context attributes, bytes 03:00"
        );
        assert_eq!(&b[4..8], &[9, 0, 0, 0], "length in blocks, bytes 07:04");
        assert_eq!(
            &b[8..16],
            &[8, 7, 6, 5, 4, 3, 2, 1],
            "starting LBA, bytes 15:08"
        );
        assert_eq!(DsmRange::read_from_bytes(b).unwrap(), r);
        assert_eq!(
            DsmRange::new(0x0102_0304_0506_0708, 9).as_bytes()[4..],
            b[4..]
        );
    }

    #[test]
    fn range_count_is_zeros_based_and_ignores_the_upper_bits() {
        assert_eq!(range_count(0), 1);
        assert_eq!(range_count(0xFF), DSM_MAX_RANGES);
        assert_eq!(range_count(0xFFFF_FF07), 8);
        assert_eq!(data_len(DSM_MAX_RANGES), 4096);
    }

    #[test]
    fn read_stays_within_the_data() {
        let data: Vec<u8> = (0..48u8).collect();
        let copy = |at: usize, dst: &mut [u8]| {
            dst.copy_from_slice(&data[at..at + dst.len()]);
            dst.len()
        };
        let r = DsmRange::read(2, data.len(), copy).unwrap();
        assert_eq!(r.as_bytes(), &data[32..48]);
        assert_eq!(DsmRange::read(3, data.len(), copy), None);
        assert_eq!(DsmRange::read(0, 15, copy), None);
        assert_eq!(
            DsmRange::read(u16::MAX, usize::MAX, |_, _| 16).map(|r| r.nlb()),
            Some(0)
        );
        assert_eq!(DsmRange::read(0, 16, |_, _| 15), None, "a short copy");
    }

    #[test]
    fn check_uses_checked_arithmetic() {
        let oor = Err(Status::LBA_OUT_OF_RANGE.with_dnr());
        assert_eq!(DsmRange::new(0, 8).check(8), Ok(()));
        assert_eq!(DsmRange::new(7, 1).check(8), Ok(()));
        assert_eq!(DsmRange::new(7, 2).check(8), oor);
        assert_eq!(DsmRange::new(8, 1).check(8), oor);
        assert_eq!(DsmRange::new(u64::MAX, 1).check(u64::MAX), oor);
        assert_eq!(DsmRange::new(u64::MAX - 1, u32::MAX).check(u64::MAX), oor);
        assert_eq!(
            DsmRange::new(u64::MAX, 0).check(8),
            Ok(()),
            "no block named"
        );
    }
}
