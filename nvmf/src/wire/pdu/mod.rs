//! NVMe/TCP PDUs (NVMe-oF 1.1 section 7.4, "NVMe/TCP Transport Binding", from TP 8000).
//!
//! Every PDU starts with an 8-byte common header (type, flags, HLEN, PDO, PLEN), followed by
//! the PDU-specific header, an optional header digest, padding up to PDO, the data and an
//! optional data digest:
//!
//! ```text
//! | CH (8) | PSH (HLEN-8) | HDGST (4)? | PAD | DATA | DDGST (4)? |
//! 0                       HLEN                PDO                 PLEN
//! ```
//!
//! Sending: [`PduHeader::encode_header`] writes CH + PSH + HDGST + padding into a caller
//! buffer (at most [`MAX_HEADER_SPACE`] bytes, so a stack array does) and says whether a
//! data digest must follow the data; the caller sends the header, its data buffers and the
//! 4-byte [`DataDigest`] as separate iovecs. Nothing allocates.
//!
//! Receiving: [`Deframer`] validates and parses PDUs out of a caller-owned byte buffer.

pub mod capsule;
pub mod data;
pub mod deframe;
pub mod ic;
pub mod term;

#[cfg(test)]
mod tests;

use thiserror::Error;

use crate::wire::codec::{BufferTooSmall, Reader, Writer};

pub use capsule::{CapsuleCmd, CapsuleResp};
pub use data::{DataHeader, R2t};
pub use deframe::{
    ConnectionParams, DeframeError, Deframed, Deframer, Frame, FrameHeader, HeaderStatus,
    offending_header,
};
pub use ic::{Digests, IcReq, IcResp};
pub use term::{Fes, TermReq};

/// The PDU type (common header byte 0). Unknown values stay representable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PduType(pub u8);

impl PduType {
    /// Initialize Connection Request.
    pub const IC_REQ: PduType = PduType(0x00);
    /// Initialize Connection Response.
    pub const IC_RESP: PduType = PduType(0x01);
    /// Host to Controller Terminate Connection Request.
    pub const H2C_TERM_REQ: PduType = PduType(0x02);
    /// Controller to Host Terminate Connection Request.
    pub const C2H_TERM_REQ: PduType = PduType(0x03);
    /// Command Capsule.
    pub const CAPSULE_CMD: PduType = PduType(0x04);
    /// Response Capsule.
    pub const CAPSULE_RESP: PduType = PduType(0x05);
    /// Host to Controller Data.
    pub const H2C_DATA: PduType = PduType(0x06);
    /// Controller to Host Data.
    pub const C2H_DATA: PduType = PduType(0x07);
    /// Ready to Transfer.
    pub const R2T: PduType = PduType(0x09);

    /// The fixed HLEN of this PDU type, or `None` for an unknown type.
    pub fn header_len(self) -> Option<u8> {
        match self {
            Self::IC_REQ | Self::IC_RESP => Some(128),
            Self::CAPSULE_CMD => Some(72),
            Self::H2C_TERM_REQ
            | Self::C2H_TERM_REQ
            | Self::CAPSULE_RESP
            | Self::H2C_DATA
            | Self::C2H_DATA
            | Self::R2T => Some(24),
            _ => None,
        }
    }

    /// True if PDUs of this type carry a header digest when header digests are enabled (all
    /// but ICReq, ICResp and the termination requests).
    pub fn has_header_digest(self) -> bool {
        matches!(
            self,
            Self::CAPSULE_CMD | Self::CAPSULE_RESP | Self::H2C_DATA | Self::C2H_DATA | Self::R2T
        )
    }

    /// True if PDUs of this type may carry data located by PDO and covered by a data digest
    /// (CapsuleCmd, H2CData, C2HData). Termination requests carry data too, but right after
    /// the header and without digests.
    pub fn has_pdo_data(self) -> bool {
        matches!(self, Self::CAPSULE_CMD | Self::H2C_DATA | Self::C2H_DATA)
    }

    /// True for PDUs a host sends to a controller (even type values).
    pub fn is_host_to_controller(self) -> bool {
        self.0 & 1 == 0
    }
}

/// Common header flag bits (byte 1).
pub mod flags {
    /// HDGSTF: a header digest follows the PDU header.
    pub const HDGSTF: u8 = 0x01;
    /// DDGSTF: a data digest follows the PDU data.
    pub const DDGSTF: u8 = 0x02;
    /// LAST_PDU (H2CData / C2HData).
    pub const LAST_PDU: u8 = 0x04;
    /// SUCCESS (C2HData).
    pub const SUCCESS: u8 = 0x08;
}

/// Length of the common header.
pub const COMMON_HEADER_LEN: usize = 8;

/// Length of a header or data digest (CRC32C, little-endian).
pub const DIGEST_LEN: usize = 4;

/// The most bytes [`PduHeader::encode_header`] ever writes: a CapsuleCmd header (72) plus
/// digest (4) rounded up to a 72-byte data alignment (PDA 17) is 144. Alignments are any
/// multiple of 4 up to 128, not only powers of two.
pub const MAX_HEADER_SPACE: usize = 144;

/// The 8-byte common header (CH).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CommonHeader {
    /// PDU type.
    pub pdu_type: PduType,
    /// Flags (see [`flags`]).
    pub flags: u8,
    /// Header length: CH + PSH, excluding the header digest.
    pub hlen: u8,
    /// PDU data offset from the start of the PDU (0 when there is no data).
    pub pdo: u8,
    /// Total PDU length including header, digests, padding and data.
    pub plen: u32,
}

impl CommonHeader {
    /// Byte offset of the flags field (FEI for flag errors).
    pub const FLAGS_OFFSET: u32 = 1;
    /// Byte offset of HLEN.
    pub const HLEN_OFFSET: u32 = 2;
    /// Byte offset of PDO.
    pub const PDO_OFFSET: u32 = 3;
    /// Byte offset of PLEN.
    pub const PLEN_OFFSET: u32 = 4;

    /// Decodes a common header from 8 bytes.
    pub fn decode(bytes: &[u8; COMMON_HEADER_LEN]) -> Self {
        let [pdu_type, flags, hlen, pdo, p0, p1, p2, p3] = *bytes;
        Self {
            pdu_type: PduType(pdu_type),
            flags,
            hlen,
            pdo,
            plen: u32::from_le_bytes([p0, p1, p2, p3]),
        }
    }

    /// Appends the 8 encoded bytes.
    pub fn encode(&self, w: &mut Writer<'_>) -> Result<(), BufferTooSmall> {
        w.put_u8(self.pdu_type.0)?;
        w.put_u8(self.flags)?;
        w.put_u8(self.hlen)?;
        w.put_u8(self.pdo)?;
        w.put_u32_le(self.plen)
    }
}

/// Which end of the connection this is; decides which PDU types may be received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The NVMe controller (target): receives ICReq, H2CTermReq, CapsuleCmd, H2CData.
    Controller,
    /// The host: receives ICResp, C2HTermReq, CapsuleResp, C2HData, R2T.
    Host,
}

/// CRC32C of a PDU header, the value of HDGST (NVMe/TCP: header digest is CRC32C over the
/// HLEN bytes of CH + PSH).
pub fn header_digest(header: &[u8]) -> u32 {
    crc32c::crc32c(header)
}

/// Incremental CRC32C over PDU data that may be spread over several buffers (DDGST covers
/// the data bytes only, not padding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataDigest {
    crc: u32,
}

impl DataDigest {
    /// A digest over no data yet.
    pub fn new() -> Self {
        Self { crc: 0 }
    }

    /// Adds the next chunk of data.
    pub fn update(&mut self, chunk: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, chunk);
    }

    /// The digest value.
    pub fn value(&self) -> u32 {
        self.crc
    }

    /// The 4 DDGST bytes to send after the data.
    pub fn to_bytes(&self) -> [u8; DIGEST_LEN] {
        self.crc.to_le_bytes()
    }

    /// The DDGST value of one contiguous buffer.
    pub fn of(data: &[u8]) -> u32 {
        crc32c::crc32c(data)
    }
}

/// What the sender knows about the connection when encoding a PDU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FrameOptions {
    /// Header digests negotiated.
    pub header_digest: bool,
    /// Data digests negotiated.
    pub data_digest: bool,
    /// PDU data alignment the receiver asked for, 0's based dwords: the host's HPDA when a
    /// controller sends, the controller's CPDA when a host sends. At most 31.
    pub pda: u8,
}

/// Why a PDU header could not be encoded. These are caller mistakes, never peer input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The output buffer is too small (use [`MAX_HEADER_SPACE`] bytes).
    #[error(transparent)]
    BufferTooSmall(#[from] BufferTooSmall),
    /// The PDA is above 31.
    #[error("PDU data alignment {0} is above 31")]
    InvalidPda(u8),
    /// This PDU type carries no data but a data length was given.
    #[error("{0:?} PDUs carry no data")]
    UnexpectedData(PduType),
    /// DATAL of a data PDU differs from the data length given.
    #[error("DATAL {datal} differs from data length {data_len}")]
    DataLengthMismatch {
        /// DATAL in the header.
        datal: u32,
        /// Data length given.
        data_len: usize,
    },
    /// The data is longer than a PDU can describe (PLEN is 32 bits; a termination request
    /// carries at most 128 bytes).
    #[error("data length {0} too large for this PDU")]
    DataTooLong(usize),
    /// SUCCESS set without LAST_PDU in a C2HData PDU.
    #[error("C2HData SUCCESS requires LAST_PDU")]
    SuccessWithoutLast,
}

/// Where the parts of an encoded PDU go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodedHeader {
    /// Bytes written to the output buffer: CH, PSH, HDGST and padding. The data starts here.
    pub header_len: usize,
    /// True if a 4-byte data digest ([`DataDigest`]) must be sent after the data.
    pub data_digest: bool,
    /// PLEN: total bytes of the PDU on the wire.
    pub plen: u32,
}

/// A typed PDU header of any type: what [`Deframer`] returns and what senders encode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PduHeader {
    /// ICReq.
    IcReq(IcReq),
    /// ICResp.
    IcResp(IcResp),
    /// H2CTermReq.
    H2CTermReq(TermReq),
    /// C2HTermReq.
    C2HTermReq(TermReq),
    /// CapsuleCmd.
    CapsuleCmd(CapsuleCmd),
    /// CapsuleResp.
    CapsuleResp(CapsuleResp),
    /// H2CData.
    H2CData(DataHeader),
    /// C2HData.
    C2HData(DataHeader),
    /// R2T.
    R2t(R2t),
}

impl PduHeader {
    /// The PDU type.
    pub fn pdu_type(&self) -> PduType {
        match self {
            Self::IcReq(_) => PduType::IC_REQ,
            Self::IcResp(_) => PduType::IC_RESP,
            Self::H2CTermReq(_) => PduType::H2C_TERM_REQ,
            Self::C2HTermReq(_) => PduType::C2H_TERM_REQ,
            Self::CapsuleCmd(_) => PduType::CAPSULE_CMD,
            Self::CapsuleResp(_) => PduType::CAPSULE_RESP,
            Self::H2CData(_) => PduType::H2C_DATA,
            Self::C2HData(_) => PduType::C2H_DATA,
            Self::R2t(_) => PduType::R2T,
        }
    }

    /// Type-specific flag bits (LAST_PDU, SUCCESS), without the digest flags.
    fn type_flags(&self) -> u8 {
        match self {
            Self::H2CData(d) if d.last_pdu => flags::LAST_PDU,
            Self::C2HData(d) => {
                let last = if d.last_pdu { flags::LAST_PDU } else { 0 };
                let success = if d.success { flags::SUCCESS } else { 0 };
                last | success
            }
            _ => 0,
        }
    }

    /// Parses the PDU-specific header of a PDU of type `pdu_type` from `r`, positioned just
    /// after the common header. `None` for an unknown type or too few bytes.
    pub(crate) fn decode_psh(pdu_type: PduType, flags: u8, r: &mut Reader<'_>) -> Option<Self> {
        Some(match pdu_type {
            PduType::IC_REQ => Self::IcReq(IcReq::decode_psh(r)?),
            PduType::IC_RESP => Self::IcResp(IcResp::decode_psh(r)?),
            PduType::H2C_TERM_REQ => Self::H2CTermReq(TermReq::decode_psh(r)?),
            PduType::C2H_TERM_REQ => Self::C2HTermReq(TermReq::decode_psh(r)?),
            PduType::CAPSULE_CMD => Self::CapsuleCmd(CapsuleCmd::decode_psh(r)?),
            PduType::CAPSULE_RESP => Self::CapsuleResp(CapsuleResp::decode_psh(r)?),
            // SUCCESS is defined for C2HData only; in H2CData that bit is reserved.
            PduType::H2C_DATA => Self::H2CData(DataHeader::decode_psh(r, flags & !flags::SUCCESS)?),
            PduType::C2H_DATA => Self::C2HData(DataHeader::decode_psh(r, flags)?),
            PduType::R2T => Self::R2t(R2t::decode_psh(r)?),
            _ => return None,
        })
    }

    fn encode_psh(&self, w: &mut Writer<'_>) -> Result<(), BufferTooSmall> {
        match self {
            Self::IcReq(p) => p.encode_psh(w),
            Self::IcResp(p) => p.encode_psh(w),
            Self::H2CTermReq(p) | Self::C2HTermReq(p) => p.encode_psh(w),
            Self::CapsuleCmd(p) => p.encode_psh(w),
            Self::CapsuleResp(p) => p.encode_psh(w),
            Self::H2CData(p) | Self::C2HData(p) => p.encode_psh(w),
            Self::R2t(p) => p.encode_psh(w),
        }
    }

    /// Encodes CH + PSH (+ HDGST) (+ padding to PDO) into `out` for a PDU carrying
    /// `data_len` bytes of data, which the caller sends right after the returned
    /// `header_len` bytes, followed by the data digest if `data_digest` is set.
    ///
    /// Digest flags and PDO follow `opts`: HDGSTF on every type that has header digests when
    /// they are enabled; DDGSTF when data digests are enabled and the PDU has data; PDO
    /// rounded up to `(pda + 1) * 4` bytes when there is data, 0 otherwise (as Linux does).
    /// Termination requests carry `data_len` bytes (at most 128) right after their header,
    /// never with digests.
    pub fn encode_header(
        &self,
        data_len: usize,
        opts: &FrameOptions,
        out: &mut [u8],
    ) -> Result<EncodedHeader, EncodeError> {
        let pdu_type = self.pdu_type();
        if opts.pda > ic::MAX_PDA {
            return Err(EncodeError::InvalidPda(opts.pda));
        }
        match self {
            Self::H2CData(d) | Self::C2HData(d) => {
                if usize::try_from(d.datal).ok() != Some(data_len) {
                    return Err(EncodeError::DataLengthMismatch {
                        datal: d.datal,
                        data_len,
                    });
                }
                if d.success && !d.last_pdu {
                    return Err(EncodeError::SuccessWithoutLast);
                }
            }
            Self::H2CTermReq(_) | Self::C2HTermReq(_) if data_len > term::MAX_TERM_REQ_DATA => {
                return Err(EncodeError::DataTooLong(data_len));
            }
            Self::H2CTermReq(_) | Self::C2HTermReq(_) => {}
            Self::CapsuleCmd(_) => {}
            _ if data_len > 0 => return Err(EncodeError::UnexpectedData(pdu_type)),
            _ => {}
        }
        // Every known type has a fixed HLEN.
        let hlen = usize::from(pdu_type.header_len().unwrap_or(0));
        let hdgst = opts.header_digest && pdu_type.has_header_digest();
        let has_data = data_len > 0;
        let ddgst = opts.data_digest && pdu_type.has_pdo_data() && has_data;
        let header_end = hlen + if hdgst { DIGEST_LEN } else { 0 };
        let (pdo, header_len) = if has_data && pdu_type.has_pdo_data() {
            let align = (usize::from(opts.pda) + 1) * 4;
            let pdo = header_end.div_ceil(align) * align;
            (pdo, pdo)
        } else {
            (0, header_end)
        };
        let plen = header_len
            .checked_add(data_len)
            .and_then(|n| n.checked_add(if ddgst { DIGEST_LEN } else { 0 }))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(EncodeError::DataTooLong(data_len))?;
        let mut pdu_flags = self.type_flags();
        if hdgst {
            pdu_flags |= flags::HDGSTF;
        }
        if ddgst {
            pdu_flags |= flags::DDGSTF;
        }
        let ch = CommonHeader {
            pdu_type,
            flags: pdu_flags,
            hlen: u8::try_from(hlen).unwrap_or(u8::MAX),
            pdo: u8::try_from(pdo).unwrap_or(u8::MAX),
            plen,
        };
        let available = out.len();
        let mut w = Writer::new(out);
        ch.encode(&mut w)?;
        self.encode_psh(&mut w)?;
        if hdgst {
            let digest = header_digest(w.written());
            w.put_u32_le(digest)?;
        }
        let padding = header_len.saturating_sub(w.len());
        w.put_zeros(padding)?;
        debug_assert_eq!(w.len(), header_len, "header length bookkeeping");
        if w.len() != header_len {
            return Err(EncodeError::BufferTooSmall(BufferTooSmall {
                needed: header_len,
                available,
            }));
        }
        Ok(EncodedHeader {
            header_len,
            data_digest: ddgst,
            plen,
        })
    }
}
