//! The receive side of a host queue pair (sans-IO): PDUs cut from the received bytes by the
//! bounded [`Deframer`](crate::wire::pdu::Deframer) in the host role, every field a controller
//! controls checked before it is used.
//!
//! Nothing a controller sends can make the host write outside the buffers of the command it
//! names: data lands only at the next expected offset of an outstanding command that reads,
//! and never past that command's length. Any violation is a [`ProtocolError`], which ends the
//! connection.

use std::time::Instant;

use super::cmd::Dir;
use super::error::{HostError, ProtocolError};
use super::queue::{Gate, QueueCore};
use crate::wire::pdu::{
    ConnectionParams, DataHeader, Deframed, IcResp, PduHeader, R2t, ic::MIN_MAXH2CDATA,
};
use crate::wire::spec::{Cqe, Status};

impl QueueCore {
    /// The deframer limits of an established connection: a C2HData carries at most one
    /// command's worth of data (NVMe-oF 1.1 section 7.4.7: more is Data Transfer Out of
    /// Range); the host asks for no data alignment (HPDA 0).
    fn rx_params(&self) -> ConnectionParams {
        ConnectionParams {
            header_digest: self.limits.hdgst,
            data_digest: self.limits.ddgst,
            rx_pda: 0,
            max_in_capsule_data: 0,
            max_h2c_data: 0,
            max_c2h_data: self.limits.max_xfer,
        }
    }

    /// Bytes a receive buffer needs for the largest PDU this queue accepts.
    pub(crate) fn rx_capacity(&self) -> usize {
        let max = usize::try_from(self.limits.max_xfer).unwrap_or(1 << 20);
        (max + 512).next_power_of_two().max(16 * 1024)
    }

    /// Handles every complete PDU at the start of `input`; returns the bytes consumed.
    /// Finished requests are added to `self.done`.
    pub(crate) fn process_rx(&mut self, input: &[u8], now: Instant) -> Result<usize, HostError> {
        let mut used = 0;
        loop {
            let rest = input.get(used..).unwrap_or(&[]);
            let frame = match self.deframer.decode(rest).map_err(ProtocolError::from)? {
                Deframed::NeedMore(_) => return Ok(used),
                Deframed::Frame(f) => f,
                Deframed::DataDigestMismatch {
                    frame,
                    received,
                    computed,
                } => {
                    // NVMe/TCP 1.0a section 3.6.2.9: the data of this C2HData is corrupt. The
                    // connection is reset and the command issued again on the next one.
                    let cid = match frame.header {
                        PduHeader::C2HData(d) => d.cccid,
                        _ => 0,
                    };
                    return Err(ProtocolError::DataDigest {
                        cid,
                        received,
                        computed,
                    }
                    .into());
                }
            };
            let data = frame.data(rest);
            self.on_pdu(frame.header, data, now)?;
            used += frame.len;
        }
    }

    fn on_pdu(&mut self, header: PduHeader, data: &[u8], now: Instant) -> Result<(), HostError> {
        match header {
            PduHeader::IcResp(ic) => self.on_ic_resp(&ic, now)?,
            PduHeader::CapsuleResp(r) => self.on_response(&r.cqe)?,
            PduHeader::C2HData(d) => self.on_c2h_data(&d, data)?,
            PduHeader::R2t(r) => self.on_r2t(&r)?,
            PduHeader::C2HTermReq(t) => {
                return Err(HostError::Terminated {
                    fes: t.fes.0,
                    fei: t.fei,
                });
            }
            // The deframer in the host role passes nothing else.
            PduHeader::IcReq(_)
            | PduHeader::H2CTermReq(_)
            | PduHeader::CapsuleCmd(_)
            | PduHeader::H2CData(_) => {
                return Err(ProtocolError::UnexpectedPdu("host-to-controller").into());
            }
        }
        Ok(())
    }

    /// ICResp (NVMe/TCP 1.0a section 3.6.2.3). The deframer checked PFV 0, CPDA <= 31 and
    /// MAXH2CDATA (at least 4096, a multiple of 4). The digests shall be the ones asked for:
    /// a controller may not enable one the host did not ask for, and the Linux host treats a
    /// refused one as an error too.
    fn on_ic_resp(&mut self, ic: &IcResp, now: Instant) -> Result<(), ProtocolError> {
        if self.gate != Gate::Closed {
            return Err(ProtocolError::UnexpectedPdu("ICResp"));
        }
        if ic.digests != self.want {
            return Err(ProtocolError::DigestMismatch {
                header: ic.digests.header,
                data: ic.digests.data,
            });
        }
        self.limits.hdgst = ic.digests.header;
        self.limits.ddgst = ic.digests.data;
        self.limits.cpda = ic.cpda;
        self.limits.maxh2cdata = ic.maxh2cdata.max(MIN_MAXH2CDATA);
        let params = self.rx_params();
        self.deframer.establish(params);
        self.gate = Gate::Connect;
        self.issue(now);
        Ok(())
    }

    /// CapsuleResp (NVMe/TCP 1.0a section 3.6.2.7).
    fn on_response(&mut self, cqe: &Cqe) -> Result<(), ProtocolError> {
        let cid = cqe.cid();
        let slot = self.active_slot(cid).ok_or(ProtocolError::UnknownCid {
            pdu: "CapsuleResp",
            cid,
        })?;
        // A successful read has all its data before its completion (NVMe/TCP 1.0a section
        // 3.3: the response follows the last C2HData of the command).
        if cqe.status().is_success() && slot.dir == Dir::ToHost && slot.received != slot.len {
            return Err(ProtocolError::MissingData {
                cid,
                received: slot.received,
                len: slot.len,
            });
        }
        self.complete(cid, *cqe);
        Ok(())
    }

    /// C2HData (NVMe/TCP 1.0a section 3.6.2.9): in order, within the command, into the
    /// caller's buffers.
    fn on_c2h_data(&mut self, d: &DataHeader, data: &[u8]) -> Result<(), ProtocolError> {
        let cid = d.cccid;
        let slot = self.active_slot(cid).ok_or(ProtocolError::UnknownCid {
            pdu: "C2HData",
            cid,
        })?;
        if slot.dir != Dir::ToHost {
            return Err(ProtocolError::WrongDirection {
                pdu: "C2HData",
                cid,
            });
        }
        if d.datao != slot.received {
            return Err(ProtocolError::DataOffset {
                cid,
                offset: d.datao,
                expected: slot.received,
            });
        }
        // The deframer checked DATAL against the PDU's data length.
        let end = u64::from(d.datao) + u64::from(d.datal);
        if end > u64::from(slot.len) {
            return Err(ProtocolError::DataBeyondCommand {
                cid,
                end,
                len: slot.len,
            });
        }
        let at = slot.data_off.saturating_add(u64::from(d.datao));
        if let (Some(bufs), Ok(at)) = (self.bufs_mut(&slot), usize::try_from(at)) {
            shoal_bdev::buf::sg_copy_in(bufs, at, data);
        }
        let received = u32::try_from(end).unwrap_or(u32::MAX);
        if let Some(s) = self.active_slot_mut(cid) {
            s.received = received;
        }
        if d.success {
            // NVMe/TCP 1.0a section 3.6.2.9 lets a controller set SUCCESS only once the host
            // disabled SQ flow control, on the last PDU of the data (the deframer checked
            // LAST_PDU). SPDK's target sets it on every queue by default (`c2h_success`), the
            // admin queue included, and the Linux host accepts it there: so does Shoal, to
            // work with the targets users run. It loses nothing: this host never waits for an
            // SQHD to submit (at most the queue's depth of commands is ever out), so a
            // completion without a CQE leaves its flow control as it was. All of the data
            // must have arrived.
            if received != slot.len {
                return Err(ProtocolError::MissingData {
                    cid,
                    received,
                    len: slot.len,
                });
            }
            self.complete(cid, Cqe::new(cid, self.qid, 0, Status::SUCCESS));
        }
        Ok(())
    }

    /// R2T (NVMe/TCP 1.0a section 3.6.2.10): answered at once with H2CData PDUs of at most
    /// MAXH2CDATA bytes, the last one flagged LAST_PDU. R2TL shall not be 0, the range shall
    /// lie within the command's data and start where the previous R2T ended (the host
    /// advertised MAXR2T 0: one R2T at a time, each answered in full before the next).
    fn on_r2t(&mut self, r: &R2t) -> Result<(), ProtocolError> {
        let cid = r.cccid;
        let slot = self
            .active_slot(cid)
            .ok_or(ProtocolError::UnknownCid { pdu: "R2T", cid })?;
        if slot.dir != Dir::ToCtrl || slot.in_capsule {
            return Err(ProtocolError::WrongDirection { pdu: "R2T", cid });
        }
        let end = u64::from(r.r2to) + u64::from(r.r2tl);
        if r.r2tl == 0 || r.r2to != slot.r2t_end || end > u64::from(slot.len) {
            return Err(ProtocolError::BadR2t {
                cid,
                offset: r.r2to,
                len: r.r2tl,
                expected: slot.r2t_end,
                cmd_len: slot.len,
            });
        }
        let end = u32::try_from(end).unwrap_or(u32::MAX);
        if let Some(s) = self.active_slot_mut(cid) {
            s.r2t_end = end;
        }
        let max = self.limits.maxh2cdata.max(MIN_MAXH2CDATA);
        let mut at = r.r2to;
        while at < end {
            let n = (end - at).min(max);
            let hdr = PduHeader::H2CData(DataHeader {
                cccid: cid,
                ttag: r.ttag,
                datao: at,
                datal: n,
                last_pdu: at + n == end,
                success: false,
            });
            self.write_data_pdu(&hdr, &slot, at, usize::try_from(n).unwrap_or(0));
            at += n;
        }
        Ok(())
    }
}
