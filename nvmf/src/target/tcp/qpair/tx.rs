//! The send side: the PDUs a controller sends, queued in the send queue (headers packed into
//! arenas, data buffers as they are).

use shoal_bdev::IoBuf;

use super::QueuePair;
use super::wire;
use crate::wire::spec::{Cqe, Status};

impl<C: Clone> QueuePair<C> {
    /// Queues a response capsule for `cid` (NVMe/TCP 1.0a section 3.6.2.7), with the queue's
    /// SQHD.
    pub(super) fn respond(&mut self, cid: u16, status: Status, dw0: u32) {
        let cqe = Cqe::new(cid, self.qid.unwrap_or(0), self.sqhd, status).with_dw0(dw0);
        self.respond_cqe(&cqe);
    }

    /// Queues a response capsule carrying `cqe`.
    pub(super) fn respond_cqe(&mut self, cqe: &Cqe) {
        // Every response capsule carries the current SQHD.
        self.since_sqhd = 0;
        let mut out = [0u8; 32];
        let n = wire::encode_capsule_resp(&mut out, cqe, self.hdgst);
        self.tx.push_hdr(out.get(..n).unwrap_or(&[]));
    }

    /// Queues `data` as one C2HData PDU for `cid` (NVMe/TCP 1.0a section 3.6.2.9), followed by
    /// a response capsule unless the SUCCESS flag [stands for it](Self::success_may_answer).
    pub(super) fn send_data(&mut self, cid: u16, data: IoBuf) {
        let success = self.success_may_answer();
        let mut hdr = [0u8; 160];
        let n = wire::encode_c2h_header(
            &mut hdr,
            cid,
            data.len(),
            success,
            self.hdgst,
            self.ddgst,
            self.hpda,
        );
        self.tx.push_hdr(hdr.get(..n).unwrap_or(&[]));
        let digest = self.ddgst.then(|| wire::data_digest(data.as_slice()));
        self.tx.push_data(data);
        if let Some(d) = digest {
            self.tx.push_hdr(&d.to_le_bytes());
        }
        if !success {
            self.respond(cid, Status::SUCCESS, 0);
        }
    }

    /// Whether a read's C2HData may carry the SUCCESS flag in place of its response capsule.
    ///
    /// NVMe/TCP 1.0a section 3.6.2.9 allows it when the host disabled SQ flow control at
    /// Connect, since a response capsule would carry SQHD. Linux's and SPDK's hosts keep SQ
    /// flow control on by default and both accept the flag anyway; SPDK's target sets it on
    /// every queue, Linux's only when SQ flow control is off. Shoal also sets it on I/O queues
    /// with SQ flow control on (`c2h_success_sq_flow_control`, default on), but only while
    /// fewer than half a queue of commands arrived since the last response capsule: the next
    /// answer after that is a full response with the current SQHD. So a host that counts its
    /// free SQ entries from SQHD alone never finds its queue full with nothing left to
    /// answer: when its last command is answered, either that answer carries SQHD, or fewer
    /// than half a queue of commands arrived since the SQHD it has. (Not on the admin queue,
    /// where an Asynchronous Event Request may wait for ever.)
    fn success_may_answer(&self) -> bool {
        let t = &self.transport;
        t.c2h_success
            && (self.sq_flow_disabled
                || (t.c2h_success_sq_flow_control
                    && self.qid.is_some_and(|q| q != 0)
                    && self.since_sqhd < u32::from(self.sqsize / 2)))
    }

    /// Asks the host for the next part of a command's data (NVMe/TCP 1.0a section 3.6.2.10):
    /// one R2T of at most MAXH2CDATA bytes at a time (Shoal keeps one R2T outstanding per
    /// command, within any MAXR2T the host gave), never beyond the command's length.
    pub(super) fn send_r2t(&mut self, idx: u16) {
        let hdgst = self.hdgst;
        let maxh2c = self.transport.io_unit_size.max(4096);
        let Some(slot) = self.slots.get(idx) else {
            return;
        };
        let off = slot.r2t_end;
        let len = slot.data_len.saturating_sub(off).min(maxh2c);
        slot.r2t_end = off + len;
        let cid = slot.cid;
        let mut out = [0u8; 64];
        let n = wire::encode_r2t(&mut out, cid, idx, off, len, hdgst);
        self.tx.push_hdr(out.get(..n).unwrap_or(&[]));
    }
}
