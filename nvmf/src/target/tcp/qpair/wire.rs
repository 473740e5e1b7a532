//! The target's view of the PDU layer: what a controller receives, and the few PDUs it sends,
//! encoded straight into caller buffers.

use crate::target::subsystem::TransportConfig;
use crate::wire::pdu::{
    self, CapsuleResp, ConnectionParams, DataDigest, DataHeader, DeframeError, Deframed, Digests,
    FrameOptions, IcResp, PduHeader, R2t, Role, TermReq, term::Fes,
};
use crate::wire::spec::{Cqe, Sqe};

/// The ICReq fields the controller acts on.
#[derive(Debug, Clone, Copy)]
pub(super) struct IcReqInfo {
    pub(super) hpda: u8,
    pub(super) hdgst: bool,
    pub(super) ddgst: bool,
    pub(super) maxr2t: u32,
}

/// An H2CData PDU with its data.
#[derive(Debug, Clone, Copy)]
pub(super) struct H2CData<'a> {
    pub(super) cccid: u16,
    pub(super) ttag: u16,
    pub(super) datao: u32,
    pub(super) data: &'a [u8],
}

/// A PDU a controller acts on.
pub(super) enum Incoming<'a> {
    IcReq(IcReqInfo),
    Capsule {
        sqe: Sqe,
        data: &'a [u8],
    },
    H2CData(H2CData<'a>),
    H2CTermReq {
        fes: u16,
    },
    /// A capsule or H2CData whose data digest is wrong: the command fails with Transient
    /// Transport Error and the connection carries on (the DDGST of NVMe/TCP 1.0a sections 3.6.2.6
    /// and 3.6.2.8).
    DataDigestError {
        cid: u16,
        ttag: Option<u16>,
    },
}

/// A fatal error: the connection ends with a C2HTermReq (NVMe/TCP 1.0a, section 3.6.2.5).
#[derive(Debug, Clone, Copy)]
pub(super) struct Fatal(TermOrClose);

#[derive(Debug, Clone, Copy)]
enum TermOrClose {
    Deframe(DeframeError),
    Term(TermReq),
}

impl Fatal {
    /// FES Invalid PDU Header Field at byte `fei`.
    pub(super) fn invalid_header_field(fei: u32) -> Fatal {
        Fatal(TermOrClose::Term(TermReq {
            fes: Fes::INVALID_HEADER_FIELD,
            fei,
        }))
    }

    /// FES Data Transfer Out of Range.
    pub(super) fn out_of_range() -> Fatal {
        Fatal(TermOrClose::Term(TermReq {
            fes: Fes::DATA_TRANSFER_OUT_OF_RANGE,
            fei: 0,
        }))
    }

    fn term_req(&self) -> Option<TermReq> {
        match self.0 {
            TermOrClose::Deframe(e) => e.term_req(),
            TermOrClose::Term(t) => Some(t),
        }
    }
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            TermOrClose::Deframe(e) => write!(f, "{e}"),
            TermOrClose::Term(t) => {
                write!(f, "fatal error status {:#x} at byte {}", t.fes.0, t.fei)
            }
        }
    }
}

/// Byte offset of TTAG in an H2CData PDU (FEI for a bad transfer tag).
pub(super) const H2C_TTAG_OFFSET: u32 = DataHeader::TTAG_OFFSET;

/// The receive-side framer of a target connection.
pub(super) struct Deframer {
    inner: pdu::Deframer,
    params: ConnectionParams,
}

impl Deframer {
    /// A framer for a new connection with the transport's limits.
    pub(super) fn target(t: &TransportConfig) -> Deframer {
        Deframer {
            inner: pdu::Deframer::new(Role::Controller),
            params: ConnectionParams {
                header_digest: false,
                data_digest: false,
                rx_pda: 0,
                // The admin queue takes 8 KiB in-capsule (NVMe/TCP 1.0a, section 3.2); the
                // queue type is unknown until Connect, so accept the larger of the two.
                max_in_capsule_data: t.in_capsule_data_size.max(8192),
                max_h2c_data: t.io_unit_size,
                max_c2h_data: 0,
            },
        }
    }

    /// The IC exchange is done with these digests.
    pub(super) fn set_digests(&mut self, hdgst: bool, ddgst: bool) {
        self.params.header_digest = hdgst;
        self.params.data_digest = ddgst;
        self.inner.establish(self.params);
    }

    /// Cuts the next PDU from `input`: `Ok(None)` when more bytes are needed.
    pub(super) fn next<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<Option<(Incoming<'a>, usize)>, Fatal> {
        let decoded = self
            .inner
            .decode(input)
            .map_err(|e| Fatal(TermOrClose::Deframe(e)))?;
        let frame = match decoded {
            Deframed::NeedMore(_) => return Ok(None),
            Deframed::Frame(f) => f,
            Deframed::DataDigestMismatch { frame, .. } => {
                let (cid, ttag) = match frame.header {
                    PduHeader::CapsuleCmd(c) => (c.sqe.cid(), None),
                    PduHeader::H2CData(d) => (d.cccid, Some(d.ttag)),
                    _ => return Err(Fatal::invalid_header_field(0)),
                };
                return Ok(Some((Incoming::DataDigestError { cid, ttag }, frame.len)));
            }
        };
        let data = frame.data(input);
        let pdu = match frame.header {
            PduHeader::IcReq(ic) => Incoming::IcReq(IcReqInfo {
                hpda: ic.hpda,
                hdgst: ic.digests.header,
                ddgst: ic.digests.data,
                maxr2t: ic.maxr2t,
            }),
            PduHeader::CapsuleCmd(c) => Incoming::Capsule { sqe: c.sqe, data },
            PduHeader::H2CData(d) => Incoming::H2CData(H2CData {
                cccid: d.cccid,
                ttag: d.ttag,
                datao: d.datao,
                data,
            }),
            PduHeader::H2CTermReq(t) => Incoming::H2CTermReq { fes: t.fes.0 },
            // The deframer only passes PDU types a controller may receive.
            _ => return Err(Fatal::invalid_header_field(0)),
        };
        Ok(Some((pdu, frame.len)))
    }
}

fn opts(hdgst: bool, ddgst: bool, pda: u8) -> FrameOptions {
    FrameOptions {
        header_digest: hdgst,
        data_digest: ddgst,
        pda,
    }
}

/// Encodes the C2HTermReq for `fatal` (with the offending header from `input`); 0 bytes when
/// the connection must close without one.
pub(super) fn encode_term_req(out: &mut [u8], fatal: &Fatal, input: &[u8]) -> usize {
    let Some(t) = fatal.term_req() else { return 0 };
    let hdr = pdu::deframe::offending_header(input);
    match PduHeader::C2HTermReq(t).encode_header(hdr.len(), &opts(false, false, 0), out) {
        Ok(e) => {
            let end = e.header_len + hdr.len();
            match out.get_mut(e.header_len..end) {
                Some(dst) => {
                    dst.copy_from_slice(hdr);
                    end
                }
                None => e.header_len,
            }
        }
        Err(_) => 0,
    }
}

/// Encodes the ICResp (CPDA 0, the digests the host asked for, MAXH2CDATA).
pub(super) fn encode_ic_resp(
    out: &mut [u8],
    t: &TransportConfig,
    hdgst: bool,
    ddgst: bool,
) -> usize {
    let ic = IcResp {
        pfv: pdu::ic::PFV_1_0,
        cpda: 0,
        digests: Digests {
            header: hdgst,
            data: ddgst,
        },
        maxh2cdata: t.io_unit_size,
    };
    PduHeader::IcResp(ic)
        .encode_header(0, &opts(false, false, 0), out)
        .map_or(0, |e| e.header_len)
}

/// Encodes a CapsuleResp.
pub(super) fn encode_capsule_resp(out: &mut [u8], cqe: &Cqe, hdgst: bool) -> usize {
    PduHeader::CapsuleResp(CapsuleResp { cqe: *cqe })
        .encode_header(0, &opts(hdgst, false, 0), out)
        .map_or(0, |e| e.header_len)
}

/// Encodes the header (and padding to PDO) of the one C2HData PDU carrying a whole read.
pub(super) fn encode_c2h_header(
    out: &mut [u8],
    cid: u16,
    data_len: usize,
    success: bool,
    hdgst: bool,
    ddgst: bool,
    hpda: u8,
) -> usize {
    let hdr = DataHeader {
        cccid: cid,
        ttag: 0,
        datao: 0,
        datal: u32::try_from(data_len).unwrap_or(u32::MAX),
        last_pdu: true,
        success,
    };
    PduHeader::C2HData(hdr)
        .encode_header(data_len, &opts(hdgst, ddgst, hpda), out)
        .map_or(0, |e| e.header_len)
}

/// Encodes an R2T.
pub(super) fn encode_r2t(
    out: &mut [u8],
    cccid: u16,
    ttag: u16,
    r2to: u32,
    r2tl: u32,
    hdgst: bool,
) -> usize {
    PduHeader::R2t(R2t {
        cccid,
        ttag,
        r2to,
        r2tl,
    })
    .encode_header(0, &opts(hdgst, false, 0), out)
    .map_or(0, |e| e.header_len)
}

/// The data digest (CRC32C) of a buffer.
pub(super) fn data_digest(data: &[u8]) -> u32 {
    DataDigest::of(data)
}
