//! Data transfer PDUs: H2CData / C2HData (shared 24-byte header) and R2T.

use crate::wire::codec::{BufferTooSmall, Reader, Writer};

/// The header of an H2CData or C2HData PDU. Which one it is comes from the PDU type
/// ([`super::PduHeader::H2CData`] / [`super::PduHeader::C2HData`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DataHeader {
    /// Command Capsule CID: the command this data belongs to.
    pub cccid: u16,
    /// Transfer Tag: for H2CData, the tag from the R2T being answered; reserved in C2HData.
    pub ttag: u16,
    /// Data Offset from the start of the command's data.
    pub datao: u32,
    /// Data Length: bytes of data in this PDU.
    pub datal: u32,
    /// LAST_PDU flag: the last data PDU of this transfer (of the R2T for H2CData, of the
    /// command for C2HData).
    pub last_pdu: bool,
    /// SUCCESS flag (C2HData only): the command completed successfully and no CapsuleResp
    /// follows. Requires `last_pdu`.
    pub success: bool,
}

impl DataHeader {
    /// Byte offset of CCCID in the PDU.
    pub const CCCID_OFFSET: u32 = 8;
    /// Byte offset of TTAG.
    pub const TTAG_OFFSET: u32 = 10;
    /// Byte offset of DATAO.
    pub const DATAO_OFFSET: u32 = 12;
    /// Byte offset of DATAL.
    pub const DATAL_OFFSET: u32 = 16;

    pub(crate) fn decode_psh(r: &mut Reader<'_>, flags: u8) -> Option<Self> {
        let cccid = r.u16_le()?;
        let ttag = r.u16_le()?;
        let datao = r.u32_le()?;
        let datal = r.u32_le()?;
        r.skip(4)?;
        Some(Self {
            cccid,
            ttag,
            datao,
            datal,
            last_pdu: flags & super::flags::LAST_PDU != 0,
            success: flags & super::flags::SUCCESS != 0,
        })
    }

    pub(crate) fn encode_psh(&self, w: &mut Writer<'_>) -> Result<(), BufferTooSmall> {
        w.put_u16_le(self.cccid)?;
        w.put_u16_le(self.ttag)?;
        w.put_u32_le(self.datao)?;
        w.put_u32_le(self.datal)?;
        w.put_zeros(4)
    }
}

/// R2T, Ready to Transfer (controller to host): asks the host for `r2tl` bytes of the
/// command's data starting at `r2to`, to be sent in H2CData PDUs tagged `ttag`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct R2t {
    /// Command Capsule CID.
    pub cccid: u16,
    /// Transfer Tag, chosen by the controller.
    pub ttag: u16,
    /// R2T Offset.
    pub r2to: u32,
    /// R2T Length.
    pub r2tl: u32,
}

impl R2t {
    pub(crate) fn decode_psh(r: &mut Reader<'_>) -> Option<Self> {
        let cccid = r.u16_le()?;
        let ttag = r.u16_le()?;
        let r2to = r.u32_le()?;
        let r2tl = r.u32_le()?;
        r.skip(4)?;
        Some(Self {
            cccid,
            ttag,
            r2to,
            r2tl,
        })
    }

    pub(crate) fn encode_psh(&self, w: &mut Writer<'_>) -> Result<(), BufferTooSmall> {
        w.put_u16_le(self.cccid)?;
        w.put_u16_le(self.ttag)?;
        w.put_u32_le(self.r2to)?;
        w.put_u32_le(self.r2tl)?;
        w.put_zeros(4)
    }
}
