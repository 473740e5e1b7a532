//! The 16-byte completion queue entry (NVMe Base 2.0, "Completion Queue Entry").

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::status::Status;

/// Size of a completion queue entry in bytes.
pub const CQE_SIZE: usize = 16;

/// A completion queue entry, as carried in a CapsuleResp PDU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Cqe {
    /// Command specific DW0 (e.g. the controller ID of a Connect response).
    pub dw0: U32,
    /// Command specific DW1.
    pub dw1: U32,
    /// SQ head pointer.
    pub sqhd: U16,
    /// SQ identifier.
    pub sqid: U16,
    /// Command identifier of the completed command.
    pub cid: U16,
    /// Phase tag (bit 0) and status field (bits 15:1), see [`Status::to_field`].
    pub status: U16,
}

const _: () = assert!(size_of::<Cqe>() == CQE_SIZE);

impl Cqe {
    /// A completion for command `cid` with the given status; DW0/DW1 zero, phase 0 (fabrics
    /// do not use the phase tag).
    pub fn new(cid: u16, sqid: u16, sqhd: u16, status: Status) -> Self {
        Self {
            dw0: U32::new(0),
            dw1: U32::new(0),
            sqhd: U16::new(sqhd),
            sqid: U16::new(sqid),
            cid: U16::new(cid),
            status: U16::new(status.to_field(false)),
        }
    }

    /// The same completion with DW0 set.
    pub fn with_dw0(mut self, dw0: u32) -> Self {
        self.dw0 = U32::new(dw0);
        self
    }

    /// The same completion with DW1 set.
    pub fn with_dw1(mut self, dw1: u32) -> Self {
        self.dw1 = U32::new(dw1);
        self
    }

    /// Reads a CQE from exactly 16 bytes. Any bit pattern is a valid `Cqe`.
    pub fn from_array(bytes: &[u8; CQE_SIZE]) -> Self {
        // `FromBytes` accepts every bit pattern and the length is fixed by the type, so the
        // read cannot fail; fall back to zero rather than panic regardless.
        Self::read_from_bytes(bytes).unwrap_or_else(|_| zerocopy::FromZeros::new_zeroed())
    }

    /// The raw 16 bytes.
    pub fn to_bytes(&self) -> [u8; CQE_SIZE] {
        let mut out = [0u8; CQE_SIZE];
        out.copy_from_slice(self.as_bytes());
        out
    }

    /// The command identifier.
    pub fn cid(&self) -> u16 {
        self.cid.get()
    }

    /// The decoded status.
    pub fn status(&self) -> Status {
        Status::from_field(self.status.get())
    }

    /// The phase tag.
    pub fn phase(&self) -> bool {
        self.status.get() & 1 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn cqe_layout_and_roundtrip() {
        assert_eq!(offset_of!(Cqe, sqhd), 8);
        assert_eq!(offset_of!(Cqe, sqid), 10);
        assert_eq!(offset_of!(Cqe, cid), 12);
        assert_eq!(offset_of!(Cqe, status), 14);
        let cqe = Cqe::new(0xBEEF, 1, 7, Status::LBA_OUT_OF_RANGE.with_dnr()).with_dw0(0x1234_5678);
        let bytes = cqe.to_bytes();
        assert_eq!(&bytes[0..4], &[0x78, 0x56, 0x34, 0x12]);
        assert_eq!(&bytes[12..14], &[0xEF, 0xBE]);
        let back = Cqe::from_array(&bytes);
        assert_eq!(back, cqe);
        assert_eq!(back.status(), Status::LBA_OUT_OF_RANGE.with_dnr());
        assert!(!back.phase());
        assert_eq!(back.cid(), 0xBEEF);
    }
}
