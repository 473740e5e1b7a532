//! Connection termination PDUs: H2CTermReq and C2HTermReq (24-byte header followed by up to
//! 128 bytes of the PDU header that caused the error).

use crate::wire::codec::{BufferTooSmall, Reader, Writer};

/// Fatal Error Status of a termination request (NVMe/TCP "Fatal Error Status Values").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fes(pub u16);

impl Fes {
    /// Invalid PDU Header Field: FEI is the byte offset of the field.
    pub const INVALID_HEADER_FIELD: Fes = Fes(0x01);
    /// PDU Sequence Error.
    pub const PDU_SEQUENCE_ERROR: Fes = Fes(0x02);
    /// Header Digest Error.
    pub const HEADER_DIGEST_ERROR: Fes = Fes(0x03);
    /// Data Transfer Out of Range.
    pub const DATA_TRANSFER_OUT_OF_RANGE: Fes = Fes(0x04);
    /// Data Transfer Limit Exceeded (called R2T Limit Exceeded in NVMe-oF 1.1).
    pub const DATA_TRANSFER_LIMIT_EXCEEDED: Fes = Fes(0x05);
    /// Unsupported Parameter: FEI is the byte offset of the parameter.
    pub const UNSUPPORTED_PARAMETER: Fes = Fes(0x06);
}

/// Largest amount of offending-PDU data a termination request carries.
pub const MAX_TERM_REQ_DATA: usize = 128;

/// Largest PLEN of a termination request: 24-byte header plus 128 bytes of data.
pub const MAX_TERM_REQ_PLEN: u32 = 152;

/// An H2CTermReq or C2HTermReq header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TermReq {
    /// Fatal Error Status.
    pub fes: Fes,
    /// Fatal Error Information (a byte offset for FES 01h and 06h, else reserved).
    pub fei: u32,
}

impl TermReq {
    pub(crate) fn decode_psh(r: &mut Reader<'_>) -> Option<Self> {
        let fes = Fes(r.u16_le()?);
        let fei = r.u32_le()?;
        r.skip(10)?;
        Some(Self { fes, fei })
    }

    pub(crate) fn encode_psh(&self, w: &mut Writer<'_>) -> Result<(), BufferTooSmall> {
        w.put_u16_le(self.fes.0)?;
        w.put_u32_le(self.fei)?;
        w.put_zeros(10)
    }
}
