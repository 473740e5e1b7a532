//! The 64-byte submission queue entry (NVMe Base 2.0 "Common Command Format") and
//! the SGL descriptor carried in its DPTR field ("Scatter Gather List (SGL)").

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::opcode::{FabricsType, Opcode};

/// Size of a submission queue entry in bytes.
pub const SQE_SIZE: usize = 64;

/// A submission queue entry as received in a command capsule.
///
/// Fields a peer controls are only interpreted through accessors that cannot overflow; the
/// raw command dwords stay available for command-specific parsing (see `crate::wire::command`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Sqe {
    /// CDW0 bits 7:0, the opcode.
    pub opcode: u8,
    /// CDW0 bits 15:8: FUSE (bits 1:0) and PSDT (bits 7:6).
    pub flags: u8,
    /// CDW0 bits 31:16, the command identifier.
    pub cid: U16,
    /// Namespace identifier (for fabrics commands, byte 4 is FCTYPE instead).
    pub nsid: U32,
    /// Command dword 2.
    pub cdw2: U32,
    /// Command dword 3.
    pub cdw3: U32,
    /// Metadata pointer.
    pub mptr: U64,
    /// Data pointer: for NVMe over Fabrics, always SGL descriptor 1.
    pub dptr: SglDescriptor,
    /// Command dword 10.
    pub cdw10: U32,
    /// Command dword 11.
    pub cdw11: U32,
    /// Command dword 12.
    pub cdw12: U32,
    /// Command dword 13.
    pub cdw13: U32,
    /// Command dword 14.
    pub cdw14: U32,
    /// Command dword 15.
    pub cdw15: U32,
}

const _: () = assert!(size_of::<Sqe>() == SQE_SIZE);

/// Values of the FUSE field (NVMe Base 2.0 "Common Command Format", CDW0 bits 9:8).
pub mod fuse {
    /// Normal operation.
    pub const NORMAL: u8 = 0b00;
    /// First command of a fused operation.
    pub const FIRST: u8 = 0b01;
    /// Second command of a fused operation.
    pub const SECOND: u8 = 0b10;
}

/// Values of the PSDT field (NVMe Base 2.0 "Common Command Format", CDW0 bits 15:14).
pub mod psdt {
    /// PRPs are used for this transfer.
    pub const PRP: u8 = 0b00;
    /// SGLs are used; MPTR holds the address of a contiguous metadata buffer. NVMe-oF 1.1
    /// ("Capsules and Data Transfer") requires SGLs for every capsule and this
    /// value in particular; the Linux target rejects any other PSDT with Invalid Field.
    pub const SGL_MPTR_CONTIGUOUS: u8 = 0b01;
    /// SGLs are used; MPTR holds the address of an SGL segment.
    pub const SGL_MPTR_SEGMENT: u8 = 0b10;
}

impl Sqe {
    /// Reads an SQE from exactly 64 bytes. Any bit pattern is a valid `Sqe`.
    pub fn from_array(bytes: &[u8; SQE_SIZE]) -> Self {
        // `FromBytes` accepts every bit pattern and the length is fixed by the type, so the
        // read cannot fail; fall back to zero rather than panic regardless.
        Self::read_from_bytes(bytes).unwrap_or_else(|_| Self::new_zeroed_sqe())
    }

    /// Reads an SQE from the start of `bytes`, or `None` if fewer than 64 bytes are given.
    pub fn from_prefix(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(sqe, _)| sqe)
    }

    /// An all-zero SQE.
    pub fn new_zeroed_sqe() -> Self {
        <Self as zerocopy::FromZeros>::new_zeroed()
    }

    /// A new SQE with the given opcode and command identifier, PSDT set to SGL as fabrics
    /// require, and everything else zero.
    pub fn new(opcode: Opcode, cid: u16) -> Self {
        let mut sqe = Self::new_zeroed_sqe();
        sqe.opcode = opcode.0;
        sqe.cid = U16::new(cid);
        sqe.set_psdt(psdt::SGL_MPTR_CONTIGUOUS);
        sqe
    }

    /// A new fabrics command (opcode 0x7F) with the given command type.
    pub fn new_fabrics(fctype: FabricsType, cid: u16) -> Self {
        let mut sqe = Self::new(Opcode::FABRICS, cid);
        sqe.set_fctype(fctype);
        sqe
    }

    /// The raw 64 bytes.
    pub fn to_bytes(&self) -> [u8; SQE_SIZE] {
        let mut out = [0u8; SQE_SIZE];
        out.copy_from_slice(self.as_bytes());
        out
    }

    /// The opcode.
    pub fn opcode(&self) -> Opcode {
        Opcode(self.opcode)
    }

    /// The command identifier.
    pub fn cid(&self) -> u16 {
        self.cid.get()
    }

    /// The namespace identifier.
    pub fn nsid(&self) -> u32 {
        self.nsid.get()
    }

    /// The FUSE field (see [`fuse`]).
    pub fn fuse(&self) -> u8 {
        self.flags & 0b11
    }

    /// The PSDT field (see [`psdt`]).
    pub fn psdt(&self) -> u8 {
        self.flags >> 6
    }

    /// Sets the PSDT field.
    pub fn set_psdt(&mut self, value: u8) {
        self.flags = (self.flags & 0x3F) | ((value & 0b11) << 6);
    }

    /// For a fabrics command (opcode 0x7F), the command type in byte 4 (NVMe-oF 1.1
    /// "Fabrics Command": FCTYPE).
    pub fn fctype(&self) -> FabricsType {
        let [b4, ..] = self.nsid.get().to_le_bytes();
        FabricsType(b4)
    }

    /// Sets the fabrics command type (byte 4).
    pub fn set_fctype(&mut self, fctype: FabricsType) {
        let mut bytes = self.nsid.get().to_le_bytes();
        bytes[0] = fctype.0;
        self.nsid = U32::new(u32::from_le_bytes(bytes));
    }
}

/// SGL descriptor types (NVMe Base 2.0 "SGL Descriptor Type").
pub mod sgl_type {
    /// SGL Data Block descriptor.
    pub const DATA_BLOCK: u8 = 0x0;
    /// SGL Bit Bucket descriptor.
    pub const BIT_BUCKET: u8 = 0x1;
    /// SGL Segment descriptor.
    pub const SEGMENT: u8 = 0x2;
    /// SGL Last Segment descriptor.
    pub const LAST_SEGMENT: u8 = 0x3;
    /// Keyed SGL Data Block descriptor (RDMA).
    pub const KEYED_DATA_BLOCK: u8 = 0x4;
    /// Transport SGL Data Block descriptor.
    pub const TRANSPORT_DATA_BLOCK: u8 = 0x5;
    /// Vendor specific.
    pub const VENDOR_SPECIFIC: u8 = 0xF;
}

/// SGL descriptor sub types (NVMe Base 2.0 "SGL Descriptor Sub Type").
pub mod sgl_subtype {
    /// The Address field is a memory address.
    pub const ADDRESS: u8 = 0x0;
    /// The Address field is an offset (used for in-capsule data).
    pub const OFFSET: u8 = 0x1;
    /// Transport specific: for NVMe/TCP, data moves in C2HData / R2T + H2CData PDUs
    /// (NVMe-oF 1.1 section 7.4, "NVMe/TCP Transport Binding": SGL descriptors).
    pub const TRANSPORT: u8 = 0xA;
}

/// A 16-byte SGL descriptor (NVMe Base 2.0 "Generic SGL Descriptor Format").
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SglDescriptor {
    /// Address or offset, depending on the sub type.
    pub address: U64,
    /// Length in bytes.
    pub length: U32,
    /// Reserved for the unkeyed descriptor types used by NVMe/TCP.
    pub reserved: [u8; 3],
    /// SGL identifier: descriptor type in bits 7:4, sub type in bits 3:0.
    pub sgl_id: u8,
}

const _: () = assert!(size_of::<SglDescriptor>() == 16);

impl SglDescriptor {
    /// A descriptor with the given type, sub type, address and length.
    pub fn new(desc_type: u8, subtype: u8, address: u64, length: u32) -> Self {
        Self {
            address: U64::new(address),
            length: U32::new(length),
            reserved: [0; 3],
            sgl_id: ((desc_type & 0xF) << 4) | (subtype & 0xF),
        }
    }

    /// The NVMe/TCP descriptor for `len` bytes of in-capsule data: Data Block, Offset sub
    /// type, offset 0.
    pub fn in_capsule(len: u32) -> Self {
        Self::new(sgl_type::DATA_BLOCK, sgl_subtype::OFFSET, 0, len)
    }

    /// The NVMe/TCP descriptor for `len` bytes moved by C2HData / R2T + H2CData: Transport
    /// Data Block, Transport sub type.
    pub fn transport(len: u32) -> Self {
        Self::new(
            sgl_type::TRANSPORT_DATA_BLOCK,
            sgl_subtype::TRANSPORT,
            0,
            len,
        )
    }

    /// The null descriptor a host puts in a command that moves no data (a Transport Data
    /// Block of length 0, as the Linux and SPDK hosts do).
    pub fn null() -> Self {
        Self::transport(0)
    }

    /// The descriptor type (bits 7:4 of the SGL identifier).
    pub fn desc_type(&self) -> u8 {
        self.sgl_id >> 4
    }

    /// The descriptor sub type (bits 3:0 of the SGL identifier).
    pub fn subtype(&self) -> u8 {
        self.sgl_id & 0xF
    }

    /// The length field.
    pub fn len(&self) -> u32 {
        self.length.get()
    }

    /// True when the length is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn sqe_layout() {
        assert_eq!(offset_of!(Sqe, cid), 2);
        assert_eq!(offset_of!(Sqe, nsid), 4);
        assert_eq!(offset_of!(Sqe, cdw2), 8);
        assert_eq!(offset_of!(Sqe, mptr), 16);
        assert_eq!(offset_of!(Sqe, dptr), 24);
        assert_eq!(offset_of!(Sqe, cdw10), 40);
        assert_eq!(offset_of!(Sqe, cdw15), 60);
        assert_eq!(offset_of!(SglDescriptor, length), 8);
        assert_eq!(offset_of!(SglDescriptor, sgl_id), 15);
    }

    #[test]
    fn sqe_accessors() {
        let mut raw = [0u8; 64];
        raw[0] = 0x02;
        raw[1] = 0x41; // PSDT 01b, FUSE 01b
        raw[2] = 0x34;
        raw[3] = 0x12;
        raw[4] = 0x07;
        raw[39] = 0x5A;
        let sqe = Sqe::from_array(&raw);
        assert_eq!(sqe.opcode(), Opcode(0x02));
        assert_eq!(sqe.cid(), 0x1234);
        assert_eq!(sqe.psdt(), psdt::SGL_MPTR_CONTIGUOUS);
        assert_eq!(sqe.fuse(), fuse::FIRST);
        assert_eq!(sqe.nsid(), 7);
        assert_eq!(sqe.fctype(), FabricsType(7));
        assert_eq!(sqe.dptr.desc_type(), sgl_type::TRANSPORT_DATA_BLOCK);
        assert_eq!(sqe.dptr.subtype(), sgl_subtype::TRANSPORT);
        assert_eq!(sqe.to_bytes(), raw);
        assert_eq!(Sqe::from_prefix(&raw[..63]), None);
        assert_eq!(Sqe::from_prefix(&raw), Some(sqe));
    }

    #[test]
    fn fabrics_sqe() {
        let sqe = Sqe::new_fabrics(FabricsType::CONNECT, 9);
        assert_eq!(sqe.opcode, 0x7F);
        assert_eq!(sqe.fctype(), FabricsType::CONNECT);
        assert_eq!(sqe.to_bytes()[4], 0x01);
        assert_eq!(sqe.to_bytes()[1], 0x40);
    }
}
