//! The receive side: PDUs cut from the received bytes and dispatched by type and phase.

use std::time::Instant;

use super::wire::{self, Incoming};
use super::{Phase, QueuePair};
use crate::wire::spec::{Opcode, Sqe, Status};

impl<C: Clone> QueuePair<C> {
    /// Handles every complete PDU at the start of `input` (the bytes received and not yet
    /// consumed); returns how many bytes it consumed. It stops early when the connection
    /// closes, or when the send queue reaches its bound: then the rest waits, and the caller
    /// reads nothing more until [`QueuePair::handle_sent`] says so (back-pressure: a host that
    /// never reads its socket cannot make the target queue without end).
    pub fn handle_rx(&mut self, input: &[u8], now: Instant) -> usize {
        let limit = self.unsent_limit();
        let mut used = 0;
        loop {
            if self.phase == Phase::Closing {
                return used;
            }
            if self.tx.held() >= limit {
                self.paused = true;
                return used;
            }
            let rest = input.get(used..).unwrap_or(&[]);
            let fatal = match self.deframer.next(rest) {
                Ok(None) => return used,
                Ok(Some((pdu, n))) => match self.handle_pdu(pdu, now) {
                    Ok(()) => {
                        used += n;
                        continue;
                    }
                    Err(fatal) => fatal,
                },
                Err(fatal) => fatal,
            };
            // NVMe/TCP 1.0a section 3.6.2.5 (C2HTermReq) and NVMe-oF 1.1 section 7.4.7: a
            // fatal error ends the connection with a termination request naming it and
            // carrying the offending PDU header.
            super::super::limits::note_protocol_error(self.id, &fatal);
            let mut hdr = [0u8; 160];
            let n = wire::encode_term_req(&mut hdr, &fatal, rest);
            self.tx.push_hdr(hdr.get(..n).unwrap_or(&[]));
            self.close("fatal protocol error", now);
            return used;
        }
    }

    fn handle_pdu(&mut self, pdu: Incoming<'_>, now: Instant) -> Result<(), wire::Fatal> {
        match pdu {
            Incoming::IcReq(ic) => {
                if self.phase != Phase::AwaitIcReq {
                    // NVMe/TCP 1.0a section 3.6.2.2: one ICReq per connection; a second is a
                    // PDU sequence error. The deframer already refuses it once established,
                    // this is belt and braces.
                    return Err(wire::Fatal::invalid_header_field(0));
                }
                // Section 3.6.2.2: PFV, HPDA and MAXR2T were checked by the deframer; the
                // digests asked for are granted (section 3.6.2.3: ICResp echoes them).
                self.hpda = ic.hpda;
                self.hdgst = ic.hdgst;
                self.ddgst = ic.ddgst;
                self.maxr2t = ic.maxr2t.saturating_add(1);
                self.deframer.set_digests(ic.hdgst, ic.ddgst);
                let mut out = [0u8; 128];
                let n = wire::encode_ic_resp(&mut out, &self.transport, ic.hdgst, ic.ddgst);
                self.tx.push_hdr(out.get(..n).unwrap_or(&[]));
                self.phase = Phase::Ready;
            }
            Incoming::Capsule { sqe, data } => self.on_capsule(&sqe, data, now),
            Incoming::H2CData(h) => self.on_h2c_data(&h)?,
            Incoming::H2CTermReq { fes } => {
                // NVMe/TCP 1.0a section 3.6.2.4: the host ends the connection; the controller
                // sends nothing more on it.
                tracing::debug!(
                    conn = self.id,
                    "host terminated the connection (FES {fes:#x})"
                );
                self.close("H2CTermReq from the host", now);
            }
            Incoming::DataDigestError { cid, ttag } => self.on_data_digest_error(cid, ttag)?,
        }
        Ok(())
    }

    /// A command capsule took its SQ entry: SQHD moves on (NVMe Base 2.0 section 3.3.1.2).
    fn consume_sqe(&mut self) {
        self.sqhd = self.sqhd.wrapping_add(1) % self.sqsize.max(1);
        self.since_sqhd = self.since_sqhd.saturating_add(1);
    }

    /// A capsule or H2CData whose data digest (DDGST, NVMe/TCP 1.0a sections 3.6.2.6 and
    /// 3.6.2.8) is wrong: the command fails with Transient Transport Error and the connection
    /// carries on.
    fn on_data_digest_error(&mut self, cid: u16, ttag: Option<u16>) -> Result<(), wire::Fatal> {
        match ttag {
            None => {
                // The capsule took its SQ entry all the same.
                self.consume_sqe();
                self.respond(cid, Status::TRANSIENT_TRANSPORT_ERROR, 0);
            }
            Some(t) => {
                // H2CData: it must name a command that is waiting for data, as any H2CData
                // must (section 3.6.2.8); that command ends here, answered once.
                let Some(slot) = self
                    .slots
                    .get(t)
                    .filter(|s| s.state == super::slots::SlotState::AwaitData && s.cid == cid)
                else {
                    return Err(wire::Fatal::invalid_header_field(wire::H2C_TTAG_OFFSET));
                };
                let cid = slot.cid;
                self.slots.release(t);
                self.respond(cid, Status::TRANSIENT_TRANSPORT_ERROR, 0);
            }
        }
        Ok(())
    }

    fn on_capsule(&mut self, sqe: &Sqe, data: &[u8], now: Instant) {
        let cid = sqe.cid();
        self.consume_sqe();
        if sqe.opcode() == Opcode::FABRICS {
            self.on_fabrics(sqe, data, now);
            return;
        }
        // Borrowed, not cloned: no locked instruction on the I/O path (see
        // `ControllerShared::is_ready`).
        let (Some(qid), Some(ready)) = (self.qid, self.ctrl.as_ref().map(|c| c.is_ready())) else {
            // NVMe-oF 1.1, section 3.3: the first command on a queue shall be Connect.
            self.respond(cid, Status::COMMAND_SEQUENCE_ERROR, 0);
            return;
        };
        if self.slots.cid_busy(cid) {
            // NVMe Base 2.0, section 4.2: a CID in use on this queue is a Command ID Conflict.
            self.respond(cid, Status::COMMAND_ID_CONFLICT, 0);
            return;
        }
        if !ready {
            // Commands other than fabrics ones need CC.EN = 1 and CSTS.RDY = 1 (Base 2.0 3.5.1).
            self.respond(cid, Status::COMMAND_SEQUENCE_ERROR, 0);
            return;
        }
        if qid == 0 {
            self.on_admin(sqe);
        } else {
            self.on_io_command(sqe, data);
        }
    }
}
