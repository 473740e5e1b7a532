//! Connection initialization PDUs: ICReq and ICResp (NVMe-oF 1.1 section 7.4 /
//! NVMe/TCP
//! "Initialize Connection Request" and "Initialize Connection Response", 128-byte headers).

use crate::wire::codec::{BufferTooSmall, Reader, Writer};

/// The only PDU format version defined (PFV 0h, NVMe/TCP 1.0).
pub const PFV_1_0: u16 = 0;

/// Largest HPDA / CPDA value: alignment is `(PDA + 1) * 4` bytes, so at most 128.
pub const MAX_PDA: u8 = 31;

/// Smallest MAXH2CDATA a controller may advertise; it must also be a multiple of 4 (NVMe/TCP
/// ICResp MAXH2CDATA; the Linux host rejects any other value).
pub const MIN_MAXH2CDATA: u32 = 4096;

/// Digest options of an ICReq (requested) or ICResp (granted), byte 11.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct Digests {
    /// HDGST_ENABLE (bit 0): PDU header digests.
    pub header: bool,
    /// DDGST_ENABLE (bit 1): PDU data digests.
    pub data: bool,
}

impl Digests {
    /// Decodes the DGST byte; reserved bits are ignored.
    pub fn from_byte(b: u8) -> Self {
        Self {
            header: b & 0x01 != 0,
            data: b & 0x02 != 0,
        }
    }

    /// Encodes the DGST byte.
    pub fn to_byte(self) -> u8 {
        u8::from(self.header) | (u8::from(self.data) << 1)
    }
}

/// ICReq, host to controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IcReq {
    /// PDU Format Version ([`PFV_1_0`]).
    pub pfv: u16,
    /// Host PDU Data Alignment: the controller aligns data in the PDUs it sends to
    /// `(hpda + 1) * 4` bytes; at most [`MAX_PDA`].
    pub hpda: u8,
    /// Digests the host asks for.
    pub digests: Digests,
    /// Maximum number of outstanding R2T PDUs per command, 0's based.
    pub maxr2t: u32,
}

impl IcReq {
    /// Byte offset of PFV in the PDU (FEI for errors in it).
    pub const PFV_OFFSET: u32 = 8;
    /// Byte offset of HPDA.
    pub const HPDA_OFFSET: u32 = 10;
    /// Byte offset of DGST.
    pub const DGST_OFFSET: u32 = 11;
    /// Byte offset of MAXR2T.
    pub const MAXR2T_OFFSET: u32 = 12;

    pub(crate) fn decode_psh(r: &mut Reader<'_>) -> Option<Self> {
        let pfv = r.u16_le()?;
        let hpda = r.u8()?;
        let digests = Digests::from_byte(r.u8()?);
        let maxr2t = r.u32_le()?;
        Some(Self {
            pfv,
            hpda,
            digests,
            maxr2t,
        })
    }

    pub(crate) fn encode_psh(&self, w: &mut Writer<'_>) -> Result<(), BufferTooSmall> {
        w.put_u16_le(self.pfv)?;
        w.put_u8(self.hpda)?;
        w.put_u8(self.digests.to_byte())?;
        w.put_u32_le(self.maxr2t)?;
        w.put_zeros(112)
    }
}

/// ICResp, controller to host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IcResp {
    /// PDU Format Version ([`PFV_1_0`]).
    pub pfv: u16,
    /// Controller PDU Data Alignment: the host aligns data in the PDUs it sends to
    /// `(cpda + 1) * 4` bytes; at most [`MAX_PDA`]. Linux hosts only accept 0.
    pub cpda: u8,
    /// Digests enabled for the connection.
    pub digests: Digests,
    /// Maximum data bytes in one H2CData PDU; at least [`MIN_MAXH2CDATA`], a multiple of 4.
    pub maxh2cdata: u32,
}

impl IcResp {
    /// Byte offset of PFV in the PDU.
    pub const PFV_OFFSET: u32 = 8;
    /// Byte offset of CPDA.
    pub const CPDA_OFFSET: u32 = 10;
    /// Byte offset of DGST.
    pub const DGST_OFFSET: u32 = 11;
    /// Byte offset of MAXH2CDATA.
    pub const MAXH2CDATA_OFFSET: u32 = 12;

    pub(crate) fn decode_psh(r: &mut Reader<'_>) -> Option<Self> {
        let pfv = r.u16_le()?;
        let cpda = r.u8()?;
        let digests = Digests::from_byte(r.u8()?);
        let maxh2cdata = r.u32_le()?;
        Some(Self {
            pfv,
            cpda,
            digests,
            maxh2cdata,
        })
    }

    pub(crate) fn encode_psh(&self, w: &mut Writer<'_>) -> Result<(), BufferTooSmall> {
        w.put_u16_le(self.pfv)?;
        w.put_u8(self.cpda)?;
        w.put_u8(self.digests.to_byte())?;
        w.put_u32_le(self.maxh2cdata)?;
        w.put_zeros(112)
    }
}
