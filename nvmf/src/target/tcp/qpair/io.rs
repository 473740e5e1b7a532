//! I/O commands of a queue pair: from capsule to block I/O and back. A command is parsed and
//! its namespace looked up once, when its capsule arrives; the slot keeps both.

use shoal_bdev::{BdevError, BdevIo, IoBuf, IoFlags, IoType, SgList};

use super::slots::SlotState;
use super::wire::{self, Fatal, H2CData};
use super::{Action, Phase, QueuePair};
use crate::target::controller::nvme_status_for;
use crate::wire::command::{DataTransfer, IoCommand, data_transfer, lba_range};
use crate::wire::spec::dsm::{self, DsmRange};
use crate::wire::spec::{Sqe, Status};

/// A namespace as one queue pair sees it: its channel and its device (whose size is read
/// at each command: it may change at run time, `BdevInfo::resize`).
struct NsEntry<C> {
    nsid: u32,
    chan: C,
    bdev: std::sync::Arc<dyn shoal_bdev::Bdev>,
}

/// The namespaces this queue pair has used, valid while the subsystem's generation holds.
pub(super) struct NsCache<C> {
    generation: u64,
    entries: Vec<NsEntry<C>>,
}

impl<C> Default for NsCache<C> {
    fn default() -> Self {
        NsCache {
            generation: 0,
            entries: Vec::new(),
        }
    }
}

impl<C: Clone> QueuePair<C> {
    /// The channel and geometry of namespace `nsid` (cached; re-read when the subsystem's
    /// generation moves: no lock on the I/O path otherwise).
    fn namespace(&mut self, nsid: u32) -> Result<(C, u32, u64), Status> {
        let Some(sub) = self.subsystem.as_ref() else {
            return Err(Status::COMMAND_SEQUENCE_ERROR);
        };
        let generation = sub.generation();
        if generation != self.ns_cache.generation {
            self.ns_cache.entries.clear();
            self.ns_cache.generation = generation;
        }
        if let Some(e) = self.ns_cache.entries.iter().find(|e| e.nsid == nsid) {
            let info = e.bdev.info();
            return Ok((e.chan.clone(), info.block_size, info.num_blocks()));
        }
        // NVMe Base 2.0, section 3.2.1.1: an inactive or invalid NSID is Invalid Namespace or
        // Format.
        let ns = sub
            .namespace(nsid)
            .ok_or(Status::INVALID_NAMESPACE.with_dnr())?;
        let chan = (self.open)(&ns.bdev).map_err(|_| Status::NAMESPACE_NOT_READY)?;
        let (bs, blocks) = (ns.bdev.info().block_size, ns.bdev.info().num_blocks());
        self.ns_cache.entries.push(NsEntry {
            nsid,
            chan: chan.clone(),
            bdev: ns.bdev,
        });
        Ok((chan, bs, blocks))
    }

    /// Starts an I/O command.
    pub(super) fn on_io_command(&mut self, sqe: &Sqe, data: &[u8]) {
        let cid = sqe.cid();
        let cmd = IoCommand::parse(sqe);
        if let IoCommand::Unknown(_) = cmd {
            return self.respond(cid, Status::INVALID_OPCODE.with_dnr(), 0);
        }
        let (chan, bs, blocks) = match self.namespace(sqe.nsid()) {
            Ok(x) => x,
            Err(s) => return self.respond(cid, s, 0),
        };
        // NVMe/TCP 1.0a section 3.3 (data transfer): data comes in the capsule or through
        // R2T / H2CData, as the command's SGL descriptor says.
        let xfer = match data_transfer(sqe, data.len()) {
            Ok(x) => x,
            Err(s) => return self.respond(cid, s, 0),
        };
        // How many bytes the command moves, as its own fields say.
        let want: u64 = match &cmd {
            IoCommand::Read { slba, nlb, .. }
            | IoCommand::Write { slba, nlb, .. }
            | IoCommand::Compare { slba, nlb } => {
                if let Err(s) = lba_range(*slba, *nlb, blocks) {
                    return self.respond(cid, s, 0);
                }
                u64::from(*nlb) * u64::from(bs)
            }
            IoCommand::WriteZeroes { slba, nlb, .. } => {
                if let Err(s) = lba_range(*slba, *nlb, blocks) {
                    return self.respond(cid, s, 0);
                }
                0
            }
            IoCommand::DatasetManagement { nr, .. } => u64::from(dsm::data_len(*nr)),
            _ => 0,
        };
        if want > u64::from(self.transport.max_io_size) {
            // The transfer exceeds MDTS (Base 2.0, section 5.17.2.1): Invalid Field.
            return self.respond(cid, Status::INVALID_FIELD.with_dnr(), 0);
        }
        let sgl_len = match xfer {
            DataTransfer::None => 0,
            DataTransfer::InCapsule { len } | DataTransfer::Transport { len } => u64::from(len),
        };
        if sgl_len < want {
            // Section 4.1.3 of Base 2.0: the SGL describes less data than the command transfers.
            return self.respond(cid, Status::DATA_SGL_LENGTH_INVALID.with_dnr(), 0);
        }
        let Some(idx) = self.slots.alloc(cid, cmd, chan, bs, blocks) else {
            // The host exceeded the queue size it connected with; let it retry later.
            return self.respond(cid, Status::TRANSIENT_TRANSPORT_ERROR, 0);
        };
        let len = u32::try_from(want).unwrap_or(u32::MAX);
        let ulen = usize::try_from(len).unwrap_or(0);
        match cmd {
            IoCommand::Write { .. }
            | IoCommand::Compare { .. }
            | IoCommand::DatasetManagement { .. } => {
                let mut buf = IoBuf::with_capacity(ulen.max(1));
                buf.set_len(ulen);
                if let DataTransfer::InCapsule { .. } = xfer {
                    // In-capsule data (NVMe/TCP 1.0a section 3.6.2.6): the capsule carries at
                    // least the command's bytes (checked against the SGL above).
                    let Some(src) = data.get(..ulen) else {
                        self.slots.release(idx);
                        return self.respond(cid, Status::DATA_SGL_LENGTH_INVALID.with_dnr(), 0);
                    };
                    buf.as_mut_slice().copy_from_slice(src);
                    if let Some(slot) = self.slots.get(idx) {
                        slot.data_len = len;
                        slot.data.push(buf);
                        slot.received = len;
                    }
                    self.execute(idx);
                } else {
                    if let Some(slot) = self.slots.get(idx) {
                        slot.data_len = len;
                        slot.data.push(buf);
                        slot.state = SlotState::AwaitData;
                    }
                    self.send_r2t(idx);
                }
            }
            IoCommand::Read { slba, nlb, fua } => {
                let mut buf = IoBuf::with_capacity(ulen);
                buf.set_len(ulen);
                if let Some(slot) = self.slots.get(idx) {
                    slot.data_len = len;
                }
                // NVM Command Set 1.0, section 3.2.4: a FUA read commits the blocks to
                // non-volatile media and returns what the media holds.
                let io = BdevIo::read(slba, u64::from(nlb), SgList::from_buf([buf]))
                    .with_flags(IoFlags::from_fua(fua));
                self.submit(idx, io);
            }
            IoCommand::Flush => self.submit(idx, BdevIo::flush()),
            IoCommand::WriteZeroes { slba, nlb, fua, .. } => {
                // Section 3.2.8: FUA as for a write.
                let io =
                    BdevIo::write_zeroes(slba, u64::from(nlb)).with_flags(IoFlags::from_fua(fua));
                self.submit(idx, io);
            }
            IoCommand::Fabrics(_) | IoCommand::Unknown(_) => {
                self.finish(idx, Status::INVALID_OPCODE.with_dnr());
            }
        }
    }

    /// Asks the caller to run `io` for slot `idx`.
    fn submit(&mut self, idx: u16, io: BdevIo) {
        let Some(slot) = self.slots.get(idx) else {
            return;
        };
        let Some(chan) = slot.chan.clone() else {
            return;
        };
        slot.pending += 1;
        slot.state = SlotState::Executing;
        self.actions.push_back(Action::Submit {
            chan,
            io,
            tag: u64::from(idx),
        });
    }

    /// Host data for a command that got an R2T (NVMe/TCP 1.0a section 3.6.2.8).
    pub(super) fn on_h2c_data(&mut self, h: &H2CData<'_>) -> Result<(), Fatal> {
        let Some(slot) = self
            .slots
            .get(h.ttag)
            .filter(|s| s.state == SlotState::AwaitData && s.cid == h.cccid)
        else {
            // Section 3.6.2.8: TTAG and CCCID shall name a command the controller sent an R2T
            // for; anything else is an Invalid PDU Header Field at TTAG.
            return Err(Fatal::invalid_header_field(wire::H2C_TTAG_OFFSET));
        };
        let datal = u32::try_from(h.data.len()).unwrap_or(u32::MAX);
        let end = h.datao.checked_add(datal);
        // Section 3.6.2.8: DATAO shall be the next byte expected and the data shall stay
        // inside the range the R2T asked for (section 3.6.2.10); otherwise Data Transfer Out
        // of Range.
        if h.datao != slot.received || end.is_none_or(|e| e > slot.r2t_end) {
            return Err(Fatal::out_of_range());
        }
        let at = usize::try_from(h.datao).unwrap_or(usize::MAX);
        shoal_bdev::buf::sg_copy_in(&mut slot.data, at, h.data);
        slot.received += datal;
        let complete_range = slot.received == slot.r2t_end;
        let all = slot.received == slot.data_len;
        if all {
            self.execute(h.ttag);
        } else if complete_range {
            self.send_r2t(h.ttag);
        }
        Ok(())
    }

    /// Runs a command whose host data has all arrived.
    fn execute(&mut self, idx: u16) {
        let Some(slot) = self.slots.get(idx) else {
            return;
        };
        match slot.cmd {
            IoCommand::Write { slba, nlb, fua } => {
                let data = std::mem::take(&mut slot.data);
                // NVM Command Set 1.0, section 3.2.6: with FUA the write completes only once
                // its data is on non-volatile media: the flag travels with the request.
                let io =
                    BdevIo::write(slba, u64::from(nlb), data).with_flags(IoFlags::from_fua(fua));
                self.submit(idx, io);
            }
            IoCommand::Compare { slba, nlb } => {
                let len = usize::try_from(u64::from(nlb) * u64::from(slot.block_size)).unwrap_or(0);
                let mut buf = IoBuf::with_capacity(len);
                buf.set_len(len);
                let io = BdevIo::read(slba, u64::from(nlb), SgList::from_buf([buf]));
                self.submit(idx, io);
            }
            IoCommand::DatasetManagement { nr, ad } => {
                if !ad {
                    // Only the deallocate attribute does anything (NVM Command Set 1.0,
                    // section 3.2.3).
                    return self.finish(idx, Status::SUCCESS);
                }
                // Every range is checked before any is submitted: a command with a bad range
                // deallocates nothing.
                let mut ios = Vec::with_capacity(usize::from(nr));
                for r in 0..nr {
                    let copy =
                        |at, dst: &mut [u8]| shoal_bdev::buf::sg_copy_out(&slot.data, at, dst);
                    let len = usize::try_from(slot.data_len).unwrap_or(0);
                    let Some(range) = DsmRange::read(r, len, copy) else {
                        // The data was sized from NR when the capsule arrived.
                        return self.finish(idx, Status::DATA_SGL_LENGTH_INVALID.with_dnr());
                    };
                    if let Err(s) = range.check(slot.ns_blocks) {
                        return self.finish(idx, s);
                    }
                    if range.nlb() > 0 {
                        ios.push(BdevIo::unmap(range.slba(), u64::from(range.nlb())));
                    }
                }
                if ios.is_empty() {
                    return self.finish(idx, Status::SUCCESS);
                }
                for io in ios {
                    self.submit(idx, io);
                }
            }
            _ => self.finish(idx, Status::INVALID_OPCODE.with_dnr()),
        }
    }

    /// Answers a command and frees its slot.
    fn finish(&mut self, idx: u16, status: Status) {
        let Some(slot) = self.slots.get(idx) else {
            return;
        };
        let cid = slot.cid;
        self.slots.release(idx);
        self.respond(cid, status, 0);
    }

    /// A block I/O from an [`Action::Submit`] with `tag` completed.
    pub fn handle_io_done(&mut self, tag: u64, mut io: BdevIo, result: Result<(), BdevError>) {
        let Ok(idx) = u16::try_from(tag) else { return };
        if self.phase == Phase::Closing {
            self.slots.release(idx);
            return;
        }
        let Some(slot) = self.slots.get(idx) else {
            return;
        };
        slot.pending = slot.pending.saturating_sub(1);
        if let Err(e) = &result {
            tracing::debug!(cid = slot.cid, "I/O failed: {e}");
            if slot.status.is_success() {
                slot.status = nvme_status_for(e, io.io_type);
            }
        }
        if slot.pending > 0 {
            return;
        }
        let (cid, status) = (slot.cid, slot.status);
        let is_compare = matches!(slot.cmd, IoCommand::Compare { .. });
        if let Some(c) = &self.counters
            && status.is_success()
        {
            let bytes = shoal_bdev::buf::sg_len(&io.bufs) as u64;
            match io.io_type {
                IoType::Read if !is_compare => c.read(bytes),
                IoType::Write => c.write(bytes),
                _ => {}
            }
        }
        if !status.is_success() {
            return self.finish(idx, status);
        }
        if is_compare {
            let host = std::mem::take(&mut slot.data);
            let same = io
                .bufs
                .iter()
                .map(IoBuf::as_slice)
                .eq(host.iter().map(IoBuf::as_slice))
                || flat_eq(&io.bufs, &host);
            let s = if same {
                Status::SUCCESS
            } else {
                Status::COMPARE_FAILURE
            };
            return self.finish(idx, s);
        }
        if io.io_type == IoType::Read {
            let want = usize::try_from(slot.data_len).unwrap_or(usize::MAX);
            self.slots.release(idx);
            match io.bufs.pop() {
                // NVMe/TCP 1.0a section 3.6.2.9: a C2HData carries the command's data, never
                // more than the command transfers.
                Some(buf) if buf.len() == want && io.bufs.is_empty() => self.send_data(cid, buf),
                _ => self.respond(cid, Status::INTERNAL_ERROR, 0),
            }
            return;
        }
        self.finish(idx, Status::SUCCESS);
    }
}

fn flat_eq(a: &[IoBuf], b: &[IoBuf]) -> bool {
    let fa = a.iter().flat_map(|x| x.as_slice().iter());
    let fb = b.iter().flat_map(|x| x.as_slice().iter());
    fa.eq(fb)
}
