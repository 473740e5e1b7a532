//! The incremental, bounded NVMe/TCP deframer.
//!
//! The caller owns the receive buffer. It hands the deframer the bytes received so far (the
//! start of the next PDU first) and gets back one of:
//!
//! - `NeedMore(n)`: at least `n` more bytes are needed. `n` never exceeds what the header
//!   fields allow after they were checked against the PDU type and the connection limits,
//!   so the caller never buffers more than a valid PDU.
//! - a [`Frame`]: the typed header, the byte range of the data in the buffer and the PDU
//!   length to drop from the buffer; header and data digests are already verified.
//! - [`Deframed::DataDigestMismatch`]: a well-framed PDU whose data failed its digest. This
//!   is not fatal: the command it belongs to completes with Transient Transport Error
//!   (NVMe Base 2.0 "Generic Command Status", 22h, added with NVMe/TCP by TP 8000; SPDK's
//!   target and host do exactly this), and the connection goes on. The frame says which
//!   command.
//! - a [`DeframeError`]: a fatal transport error. [`DeframeError::term_req`] gives the FES
//!   and FEI of the termination request to send (NVMe-oF 1.1 section 7.4.7), or `None` when
//!   the connection must just be closed.
//!
//! The deframer keeps no partial-PDU state: calling it again with a longer buffer re-reads
//! the header (a few dozen bytes) and gives the same answer as calling it once with all the
//! bytes. For zero-copy receive, [`Deframer::decode_header`] stops once the header is
//! complete and tells where the data starts, so the caller can read the data straight into
//! its own buffer and check it with [`DataDigest`].
//!
//! Checks run in the order of the fields in the header, so the lowest bad field is the one
//! reported.

use core::ops::Range;

use thiserror::Error;

use super::ic::{IcReq, IcResp, MAX_PDA, MIN_MAXH2CDATA, PFV_1_0};
use super::term::{Fes, MAX_TERM_REQ_DATA, MAX_TERM_REQ_PLEN, TermReq};
use super::{
    COMMON_HEADER_LEN, CommonHeader, DIGEST_LEN, DataDigest, DataHeader, PduHeader, PduType, Role,
    flags, header_digest,
};
use crate::wire::codec::Reader;

/// What the IC exchange settled and the limits this end enforces on what it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionParams {
    /// Header digests enabled (ICResp DGST bit 0).
    pub header_digest: bool,
    /// Data digests enabled (ICResp DGST bit 1).
    pub data_digest: bool,
    /// Alignment required of the data in PDUs this end receives, 0's based dwords: a
    /// controller's CPDA, a host's HPDA. At most 31.
    pub rx_pda: u8,
    /// Controller: the most in-capsule data bytes accepted in a CapsuleCmd. The admin queue
    /// takes at least 8192 (NVMe/TCP); an I/O queue `IOCCSZ * 16 - 64`. Until Connect says
    /// which queue this is, use the larger.
    pub max_in_capsule_data: u32,
    /// Controller: MAXH2CDATA as sent in the ICResp, the most data bytes in one H2CData.
    pub max_h2c_data: u32,
    /// Host: the most data bytes accepted in one C2HData (its largest command transfer).
    pub max_c2h_data: u32,
}

impl Default for ConnectionParams {
    /// No digests, no extra alignment, 8 KiB in-capsule data, 128 KiB data PDUs.
    fn default() -> Self {
        Self {
            header_digest: false,
            data_digest: false,
            rx_pda: 0,
            max_in_capsule_data: 8192,
            max_h2c_data: 128 * 1024,
            max_c2h_data: 128 * 1024,
        }
    }
}

/// A fatal transport error found while deframing (NVMe-oF 1.1 section 7.4.7; the FES values
/// of the NVMe/TCP termination request).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum DeframeError {
    /// FES 01h, Invalid PDU Header Field: `fei` is the byte offset of the field.
    #[error("invalid PDU header field at byte {fei}: {reason}")]
    InvalidHeaderField {
        /// Byte offset of the bad field in the PDU.
        fei: u32,
        /// What was wrong.
        reason: &'static str,
    },
    /// FES 02h, PDU Sequence Error: a valid PDU that is not allowed at this point.
    #[error("PDU sequence error: {pdu_type:?} not allowed here")]
    SequenceError {
        /// The PDU type received.
        pdu_type: PduType,
    },
    /// FES 03h, Header Digest Error.
    #[error("header digest mismatch: received {received:#010x}, computed {computed:#010x}")]
    HeaderDigest {
        /// HDGST in the PDU.
        received: u32,
        /// CRC32C of the header.
        computed: u32,
    },
    /// FES 04h, Data Transfer Out of Range: a C2HData carrying more than the host accepts.
    #[error("{len} data bytes exceed the {limit}-byte limit")]
    DataOutOfRange {
        /// Data bytes in the PDU.
        len: u32,
        /// The limit.
        limit: u32,
    },
    /// FES 05h, Data Transfer Limit Exceeded: in-capsule data above the capsule size or an
    /// H2CData above MAXH2CDATA.
    #[error("{len} data bytes exceed the {limit}-byte limit")]
    DataLimitExceeded {
        /// Data bytes in the PDU.
        len: u32,
        /// The limit.
        limit: u32,
    },
    /// FES 06h, Unsupported Parameter: `fei` is the byte offset of the parameter.
    #[error("unsupported parameter at byte {fei}: {reason}")]
    UnsupportedParameter {
        /// Byte offset of the parameter in the PDU.
        fei: u32,
        /// What was unsupported.
        reason: &'static str,
    },
    /// A termination request with a PLEN outside 24..=152: close the connection without
    /// sending a termination request (NVMe-oF 1.1 section 7.4.7).
    #[error("termination request with invalid PLEN {plen}")]
    InvalidTermReqLength {
        /// PLEN received.
        plen: u32,
    },
}

impl DeframeError {
    fn field(fei: u32, reason: &'static str) -> Self {
        Self::InvalidHeaderField { fei, reason }
    }

    /// The FES and FEI of the termination request to send before closing, or `None` if the
    /// connection must be closed without one.
    pub fn term_req(&self) -> Option<TermReq> {
        let (fes, fei) = match *self {
            Self::InvalidHeaderField { fei, .. } => (Fes::INVALID_HEADER_FIELD, fei),
            Self::SequenceError { .. } => (Fes::PDU_SEQUENCE_ERROR, 0),
            Self::HeaderDigest { .. } => (Fes::HEADER_DIGEST_ERROR, 0),
            Self::DataOutOfRange { .. } => (Fes::DATA_TRANSFER_OUT_OF_RANGE, 0),
            Self::DataLimitExceeded { .. } => (Fes::DATA_TRANSFER_LIMIT_EXCEEDED, 0),
            Self::UnsupportedParameter { fei, .. } => (Fes::UNSUPPORTED_PARAMETER, fei),
            Self::InvalidTermReqLength { .. } => return None,
        };
        Some(TermReq { fes, fei })
    }

    /// The termination request PDU this end sends for the error (C2HTermReq from a
    /// controller, H2CTermReq from a host). Its data is [`offending_header`] of the input.
    pub fn term_req_pdu(&self, role: Role) -> Option<PduHeader> {
        let t = self.term_req()?;
        Some(match role {
            Role::Controller => PduHeader::C2HTermReq(t),
            Role::Host => PduHeader::H2CTermReq(t),
        })
    }
}

/// The header of the PDU in error, to send as a termination request's data: HLEN bytes of
/// the input (or what arrived of them), at most 128.
pub fn offending_header(input: &[u8]) -> &[u8] {
    let hlen = input.get(2).map_or(0, |&h| usize::from(h));
    let n = hlen.min(input.len()).min(MAX_TERM_REQ_DATA);
    input.get(..n).unwrap_or(&[])
}

/// A fully validated PDU header and where its data is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// The typed header.
    pub header: PduHeader,
    /// Offset of the data from the start of the PDU (PDO, or HLEN for a termination
    /// request). Bytes between the header digest and here are padding to skip.
    pub data_offset: usize,
    /// Length of the data (without padding or digest).
    pub data_len: usize,
    /// True if a 4-byte data digest follows the data.
    pub data_digest: bool,
    /// PLEN: the whole PDU's length.
    pub len: usize,
}

impl FrameHeader {
    /// The data's byte range within the PDU.
    pub fn data_range(&self) -> Range<usize> {
        self.data_offset..self.data_offset.saturating_add(self.data_len)
    }
}

/// Progress of [`Deframer::decode_header`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderStatus {
    /// At least this many more bytes are needed to complete the header.
    NeedMore(usize),
    /// The header is complete and valid.
    Ready(FrameHeader),
}

/// A complete PDU found at the start of the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The typed header.
    pub header: PduHeader,
    /// The data's byte range within the input (empty if none).
    pub data: Range<usize>,
    /// Bytes the PDU occupies at the start of the input (PLEN): drop them before decoding
    /// the next PDU.
    pub len: usize,
}

impl Frame {
    /// The data bytes of this frame within `input`, the buffer it was decoded from.
    pub fn data<'a>(&self, input: &'a [u8]) -> &'a [u8] {
        input.get(self.data.clone()).unwrap_or(&[])
    }
}

/// Result of [`Deframer::decode`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deframed {
    /// At least this many more bytes are needed.
    NeedMore(usize),
    /// A complete PDU with verified digests.
    Frame(Frame),
    /// A complete, well-framed PDU whose data digest does not match. Complete the command it
    /// carries data for with Transient Transport Error; do not use the data.
    DataDigestMismatch {
        /// The PDU.
        frame: Frame,
        /// DDGST in the PDU.
        received: u32,
        /// CRC32C of the data.
        computed: u32,
    },
}

/// Where the data of a PDU is, computed from the common header alone.
#[derive(Clone, Copy, Debug)]
struct Layout {
    ch: CommonHeader,
    hlen: usize,
    /// HLEN plus the header digest, if any.
    header_end: usize,
    data_offset: usize,
    data_len: usize,
    data_digest: bool,
    len: usize,
}

/// The NVMe/TCP receive-side framer for one connection. See the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deframer {
    role: Role,
    params: Option<ConnectionParams>,
}

impl Deframer {
    /// A deframer for a new connection: only the IC PDU (ICReq for a controller, ICResp for
    /// a host) and termination requests are accepted until [`Deframer::establish`].
    pub fn new(role: Role) -> Self {
        Self { role, params: None }
    }

    /// A deframer for a connection whose IC exchange is done.
    pub fn established(role: Role, params: ConnectionParams) -> Self {
        Self {
            role,
            params: Some(params),
        }
    }

    /// Records the outcome of the IC exchange: from now on capsules and data PDUs are
    /// accepted and IC PDUs are sequence errors.
    pub fn establish(&mut self, params: ConnectionParams) {
        self.params = Some(params);
    }

    /// The connection parameters, once established; the controller can adjust
    /// `max_in_capsule_data` once Connect says which queue this is.
    pub fn params_mut(&mut self) -> Option<&mut ConnectionParams> {
        self.params.as_mut()
    }

    /// The connection parameters, once established.
    pub fn params(&self) -> Option<&ConnectionParams> {
        self.params.as_ref()
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Validates the header of the PDU at the start of `input` and, once all of the header
    /// (and its digest) is there, parses it. Does not look at the data.
    pub fn decode_header(&self, input: &[u8]) -> Result<HeaderStatus, DeframeError> {
        let Some(layout) = self.layout(input)? else {
            return Ok(HeaderStatus::NeedMore(COMMON_HEADER_LEN - input.len()));
        };
        match self.parse_header(&layout, input)? {
            None => Ok(HeaderStatus::NeedMore(layout.header_end - input.len())),
            Some(header) => Ok(HeaderStatus::Ready(FrameHeader {
                header,
                data_offset: layout.data_offset,
                data_len: layout.data_len,
                data_digest: layout.data_digest,
                len: layout.len,
            })),
        }
    }

    /// Decodes the PDU at the start of `input`.
    pub fn decode(&self, input: &[u8]) -> Result<Deframed, DeframeError> {
        let Some(layout) = self.layout(input)? else {
            return Ok(Deframed::NeedMore(COMMON_HEADER_LEN - input.len()));
        };
        // Check the header as soon as it is there, before waiting for the data.
        let header = self.parse_header(&layout, input)?;
        let (Some(header), Some(pdu)) = (header, input.get(..layout.len)) else {
            return Ok(Deframed::NeedMore(layout.len.saturating_sub(input.len())));
        };
        let data = layout.data_offset..layout.data_offset + layout.data_len;
        let frame = Frame {
            header,
            data: data.clone(),
            len: layout.len,
        };
        if layout.data_digest {
            let computed = DataDigest::of(pdu.get(data.clone()).unwrap_or(&[]));
            let mut r = Reader::new(pdu.get(data.end..).unwrap_or(&[]));
            let received = r.u32_le().unwrap_or(!computed);
            if received != computed {
                return Ok(Deframed::DataDigestMismatch {
                    frame,
                    received,
                    computed,
                });
            }
        }
        Ok(Deframed::Frame(frame))
    }

    /// Validates the common header against the PDU type, the role, the connection state
    /// and limits; `None` if fewer than 8 bytes are available.
    fn layout(&self, input: &[u8]) -> Result<Option<Layout>, DeframeError> {
        let mut r = Reader::new(input);
        let Some(ch_bytes) = r.array::<COMMON_HEADER_LEN>() else {
            return Ok(None);
        };
        let ch = CommonHeader::decode(&ch_bytes);
        let t = ch.pdu_type;

        // PDU-TYPE (byte 0): a type this end may receive. NVMe/TCP: even types flow host to
        // controller, odd ones controller to host; 08h and above 09h are undefined.
        let Some(expected_hlen) = t.header_len() else {
            return Err(DeframeError::field(0, "unknown PDU type"));
        };
        let from_host = t.is_host_to_controller();
        if from_host != (self.role == Role::Controller) {
            return Err(DeframeError::field(
                0,
                "PDU type sent in the wrong direction",
            ));
        }
        // Sequence (NVMe/TCP connection establishment): the IC PDU first and only once;
        // a termination request may come at any time.
        let is_ic = matches!(t, PduType::IC_REQ | PduType::IC_RESP);
        let is_term = matches!(t, PduType::H2C_TERM_REQ | PduType::C2H_TERM_REQ);
        if is_ic != self.params.is_none() && !is_term {
            return Err(DeframeError::SequenceError { pdu_type: t });
        }
        let params = self.params.unwrap_or_default();

        // A termination request whose PLEN is out of range is answered by closing the
        // connection without a termination request (NVMe-oF 1.1 section 7.4.7).
        if is_term && !(u32::from(expected_hlen)..=MAX_TERM_REQ_PLEN).contains(&ch.plen) {
            return Err(DeframeError::InvalidTermReqLength { plen: ch.plen });
        }

        // FLAGS (byte 1). HDGSTF shall be set exactly when header digests are enabled, on
        // the types that carry them; DDGSTF only when data digests are enabled and the PDU
        // has data (checked with PLEN below). Reserved flag bits are not checked (NVMe Base
        // 2.0 "Conventions": "the recipient is not required to check reserved bits").
        let hdgst = params.header_digest && t.has_header_digest();
        let hdgstf = ch.flags & flags::HDGSTF != 0;
        let ddgstf = ch.flags & flags::DDGSTF != 0;
        if t.has_header_digest() && hdgstf != hdgst {
            return Err(DeframeError::field(
                1,
                "HDGSTF does not match the negotiated digests",
            ));
        }
        if t.has_header_digest() && ddgstf && !(params.data_digest && t.has_pdo_data()) {
            return Err(DeframeError::field(
                1,
                "DDGSTF set where no data digest is allowed",
            ));
        }
        // NVMe-oF 1.1 section 7.4.5.2: SUCCESS in C2HData requires LAST_PDU.
        if t == PduType::C2H_DATA
            && ch.flags & flags::SUCCESS != 0
            && ch.flags & flags::LAST_PDU == 0
        {
            return Err(DeframeError::field(1, "C2HData SUCCESS without LAST_PDU"));
        }

        // HLEN (byte 2): fixed per PDU type.
        if ch.hlen != expected_hlen {
            return Err(DeframeError::field(
                2,
                "HLEN is not the size of this PDU type",
            ));
        }
        let hlen = usize::from(ch.hlen);
        let header_end = hlen + if hdgst { DIGEST_LEN } else { 0 };
        // PLEN fits in usize on every platform this builds for (32 bits or more).
        let plen =
            usize::try_from(ch.plen).map_err(|_| DeframeError::field(4, "PLEN too large"))?;

        let (data_offset, data_len, data_digest) = if is_term {
            // Termination requests: the offending header follows the 24-byte header.
            (hlen, plen - hlen, false)
        } else if !t.has_pdo_data() {
            // ICReq, ICResp, CapsuleResp, R2T carry no data: PLEN is the header. PDO is
            // reserved for them and not checked.
            if plen != header_end {
                return Err(DeframeError::field(
                    4,
                    "PLEN does not match a PDU without data",
                ));
            }
            (header_end, 0, false)
        } else {
            Self::data_layout(&ch, header_end, plen, &params)?
        };
        Ok(Some(Layout {
            ch,
            hlen,
            header_end,
            data_offset,
            data_len,
            data_digest,
            len: plen,
        }))
    }

    /// PDO and PLEN of a CapsuleCmd, H2CData or C2HData, and the connection's data limits.
    fn data_layout(
        ch: &CommonHeader,
        header_end: usize,
        plen: usize,
        params: &ConnectionParams,
    ) -> Result<(usize, usize, bool), DeframeError> {
        let pdo = usize::from(ch.pdo);
        let ddgstf = ch.flags & flags::DDGSTF != 0;
        if plen < header_end {
            return Err(DeframeError::field(4, "PLEN shorter than the header"));
        }
        // PDO (byte 3). NVMe/TCP: data starts at PDO, after the header digest and padding,
        // and PDO shall be a multiple of the receiver's PDU data alignment, (PDA + 1) * 4
        // bytes. A PDU without data may leave PDO 0.
        let align = (usize::from(params.rx_pda.min(MAX_PDA)) + 1) * 4;
        if plen == header_end {
            if pdo != 0 && (pdo != plen || pdo % align != 0) {
                return Err(DeframeError::field(3, "PDO invalid for a PDU without data"));
            }
            if ddgstf {
                return Err(DeframeError::field(
                    4,
                    "PLEN leaves no room for the data digest",
                ));
            }
            return Ok((header_end, 0, false));
        }
        if pdo < header_end || pdo > plen {
            return Err(DeframeError::field(3, "PDO outside the PDU"));
        }
        if pdo % align != 0 {
            return Err(DeframeError::field(
                3,
                "PDO not a multiple of the data alignment",
            ));
        }
        // FLAGS again: the PDU has data, so DDGSTF must match the negotiated data digest.
        if ddgstf != params.data_digest {
            return Err(DeframeError::field(
                1,
                "DDGSTF does not match the negotiated digests",
            ));
        }
        let region = plen - pdo;
        let data_len = if ddgstf {
            if region <= DIGEST_LEN {
                return Err(DeframeError::field(
                    4,
                    "PLEN leaves no room for data and digest",
                ));
            }
            region - DIGEST_LEN
        } else {
            region
        };
        // Connection limits, before anything is buffered.
        let len = u32::try_from(data_len).unwrap_or(u32::MAX);
        match ch.pdu_type {
            PduType::CAPSULE_CMD if len > params.max_in_capsule_data => {
                Err(DeframeError::DataLimitExceeded {
                    len,
                    limit: params.max_in_capsule_data,
                })
            }
            PduType::H2C_DATA if len > params.max_h2c_data => {
                Err(DeframeError::DataLimitExceeded {
                    len,
                    limit: params.max_h2c_data,
                })
            }
            PduType::C2H_DATA if len > params.max_c2h_data => Err(DeframeError::DataOutOfRange {
                len,
                limit: params.max_c2h_data,
            }),
            _ => Ok((pdo, data_len, ddgstf)),
        }
    }

    /// Verifies the header digest and parses the PDU-specific header, once `header_end`
    /// bytes are available (`None` before).
    fn parse_header(
        &self,
        layout: &Layout,
        input: &[u8],
    ) -> Result<Option<PduHeader>, DeframeError> {
        let Some(header) = input.get(..layout.header_end) else {
            return Ok(None);
        };
        let mut r = Reader::new(header);
        let psh_bytes = r.take(layout.hlen).unwrap_or(&[]);
        if layout.header_end > layout.hlen {
            let computed = header_digest(psh_bytes);
            let received = r.u32_le().unwrap_or(!computed);
            if received != computed {
                return Err(DeframeError::HeaderDigest { received, computed });
            }
        }
        let mut r = Reader::new(psh_bytes.get(COMMON_HEADER_LEN..).unwrap_or(&[]));
        let ch = &layout.ch;
        // The layout check fixed HLEN for a known type, so the PSH is all there.
        let header = PduHeader::decode_psh(ch.pdu_type, ch.flags, &mut r)
            .ok_or(DeframeError::field(2, "PDU header truncated"))?;
        check_psh(&header, layout.data_len)?;
        Ok(Some(header))
    }
}

/// Field checks inside PDU-specific headers.
fn check_psh(header: &PduHeader, data_len: usize) -> Result<(), DeframeError> {
    match header {
        PduHeader::IcReq(ic) => {
            if ic.pfv != PFV_1_0 {
                return Err(DeframeError::UnsupportedParameter {
                    fei: IcReq::PFV_OFFSET,
                    reason: "PDU format version not supported",
                });
            }
            if ic.hpda > MAX_PDA {
                return Err(DeframeError::field(IcReq::HPDA_OFFSET, "HPDA above 31"));
            }
        }
        PduHeader::IcResp(ic) => {
            if ic.pfv != PFV_1_0 {
                return Err(DeframeError::UnsupportedParameter {
                    fei: IcResp::PFV_OFFSET,
                    reason: "PDU format version not supported",
                });
            }
            if ic.cpda > MAX_PDA {
                return Err(DeframeError::field(IcResp::CPDA_OFFSET, "CPDA above 31"));
            }
            // NVMe/TCP ICResp: MAXH2CDATA is at least 4096 and a multiple of 4.
            if ic.maxh2cdata < MIN_MAXH2CDATA || ic.maxh2cdata % 4 != 0 {
                return Err(DeframeError::field(
                    IcResp::MAXH2CDATA_OFFSET,
                    "invalid MAXH2CDATA",
                ));
            }
        }
        // DATAL shall equal the data bytes the PDU carries, and a data PDU has data.
        PduHeader::H2CData(d) | PduHeader::C2HData(d)
            if usize::try_from(d.datal).ok() != Some(data_len) || data_len == 0 =>
        {
            return Err(DeframeError::field(
                DataHeader::DATAL_OFFSET,
                "DATAL does not match the PDU's data length",
            ));
        }
        _ => {}
    }
    Ok(())
}
