//! I/O commands of a queue pair: from capsule to block I/O and back.

use std::rc::Rc;

use shoal_bdev::{
    BdevError, BdevIo, IoBuf, IoChannel, IoFlags, IoSink, IoType, SgList, open_channel,
};

use super::capsule::{respond, send_data};
use super::slots::SlotState;
use super::wire::{self, Fatal, H2CData};
use super::{Conn, State};
use crate::command::{DataTransfer, IoCommand, data_transfer, lba_range};
use crate::controller::nvme_status_for;
use crate::spec::{Sqe, Status};

/// A namespace as one queue pair sees it: its channel on this reactor and its geometry.
struct NsEntry {
    nsid: u32,
    chan: Rc<IoChannel>,
    block_size: u32,
    num_blocks: u64,
}

/// The namespaces this queue pair has used, valid while the subsystem's generation holds.
#[derive(Default)]
pub(super) struct NsCache {
    generation: u64,
    entries: Vec<NsEntry>,
}

fn namespace(st: &mut State, nsid: u32) -> Result<(Rc<IoChannel>, u32, u64), Status> {
    let Some(generation) = st.subsystem.as_ref().map(|s| s.generation()) else {
        return Err(Status::COMMAND_SEQUENCE_ERROR);
    };
    if generation != st.ns_cache.generation {
        st.ns_cache.entries.clear();
        st.ns_cache.generation = generation;
    }
    if let Some(e) = st.ns_cache.entries.iter().find(|e| e.nsid == nsid) {
        return Ok((e.chan.clone(), e.block_size, e.num_blocks));
    }
    let Some(sub) = st.subsystem.clone() else {
        return Err(Status::COMMAND_SEQUENCE_ERROR);
    };
    // NVMe Base 2.0, section 3.2.1.1: an inactive or invalid NSID is Invalid Namespace or Format.
    let ns = sub
        .namespace(nsid)
        .ok_or(Status::INVALID_NAMESPACE.with_dnr())?;
    let chan = Rc::new(open_channel(&ns.bdev).map_err(|_| Status::NAMESPACE_NOT_READY)?);
    let (bs, blocks) = (ns.bdev.info().block_size, ns.bdev.info().num_blocks);
    st.ns_cache.entries.push(NsEntry {
        nsid,
        chan: chan.clone(),
        block_size: bs,
        num_blocks: blocks,
    });
    Ok((chan, bs, blocks))
}

/// Starts an I/O command.
pub(super) fn on_io_command(conn: &Conn, st: &mut State, sqe: &Sqe, data: &[u8]) {
    let cid = sqe.cid();
    let cmd = IoCommand::parse(sqe);
    if let IoCommand::Unknown(_) = cmd {
        respond(st, cid, Status::INVALID_OPCODE.with_dnr(), 0);
        return;
    }
    let (chan, bs, blocks) = match namespace(st, sqe.nsid()) {
        Ok(x) => x,
        Err(s) => return respond(st, cid, s, 0),
    };
    let xfer = match data_transfer(sqe, data.len()) {
        Ok(x) => x,
        Err(s) => return respond(st, cid, s, 0),
    };
    // How many bytes the command moves, as its own fields say.
    let want: u64 = match &cmd {
        IoCommand::Read { slba, nlb, .. }
        | IoCommand::Write { slba, nlb, .. }
        | IoCommand::Compare { slba, nlb } => {
            if let Err(s) = lba_range(*slba, *nlb, blocks) {
                return respond(st, cid, s, 0);
            }
            u64::from(*nlb) * u64::from(bs)
        }
        IoCommand::WriteZeroes { slba, nlb, .. } => {
            if let Err(s) = lba_range(*slba, *nlb, blocks) {
                return respond(st, cid, s, 0);
            }
            0
        }
        IoCommand::DatasetManagement { nr, .. } => u64::from(*nr) * 16,
        _ => 0,
    };
    if want > u64::from(conn.transport.max_io_size) {
        // The transfer exceeds MDTS (Base 2.0, section 5.17.2.1): Invalid Field.
        return respond(st, cid, Status::INVALID_FIELD.with_dnr(), 0);
    }
    let sgl_len = match xfer {
        DataTransfer::None => 0,
        DataTransfer::InCapsule { len } | DataTransfer::Transport { len } => u64::from(len),
    };
    if sgl_len < want {
        // Section 4.1.3 of Base 2.0: the SGL describes less data than the command transfers.
        return respond(st, cid, Status::DATA_SGL_LENGTH_INVALID.with_dnr(), 0);
    }
    let Some(idx) = st.slots.alloc(sqe) else {
        // The host exceeded the queue size it connected with; let it retry later.
        return respond(st, cid, Status::TRANSIENT_TRANSPORT_ERROR, 0);
    };
    let len = u32::try_from(want).unwrap_or(u32::MAX);
    let needs_host_data = matches!(
        cmd,
        IoCommand::Write { .. } | IoCommand::Compare { .. } | IoCommand::DatasetManagement { .. }
    );
    if needs_host_data {
        let mut buf = IoBuf::with_capacity(usize::try_from(len).unwrap_or(0).max(1));
        buf.set_len(usize::try_from(len).unwrap_or(0));
        let in_capsule = matches!(xfer, DataTransfer::InCapsule { .. });
        let Some(slot) = st.slots.get(idx) else {
            return;
        };
        slot.data_len = len;
        if in_capsule {
            let n = buf.len();
            match data.get(..n) {
                Some(src) => buf.as_mut_slice().copy_from_slice(src),
                None => {
                    st.slots.release(idx);
                    return respond(st, cid, Status::DATA_SGL_LENGTH_INVALID.with_dnr(), 0);
                }
            }
            slot.data.push(buf);
            slot.received = len;
            execute(conn, st, idx, &chan, bs);
        } else {
            slot.data.push(buf);
            slot.state = SlotState::AwaitData;
            send_r2t(conn, st, idx);
        }
        return;
    }
    let io = match cmd {
        IoCommand::Read { slba, nlb, fua } => {
            let mut buf = IoBuf::with_capacity(usize::try_from(len).unwrap_or(0));
            buf.set_len(usize::try_from(len).unwrap_or(0));
            // NVM Command Set 1.0, section 3.2.4: a FUA read commits the blocks to
            // non-volatile media and returns what the media holds.
            BdevIo::read(slba, u64::from(nlb), SgList::from_buf([buf]))
                .with_flags(IoFlags::from_fua(fua))
        }
        IoCommand::Flush => BdevIo::flush(),
        IoCommand::WriteZeroes { slba, nlb, fua, .. } => {
            // Section 3.2.8: FUA as for a write.
            BdevIo::write_zeroes(slba, u64::from(nlb)).with_flags(IoFlags::from_fua(fua))
        }
        _ => {
            st.slots.release(idx);
            return respond(st, cid, Status::INVALID_OPCODE.with_dnr(), 0);
        }
    };
    submit(conn, st, idx, &chan, io);
}

fn submit(conn: &Conn, st: &mut State, idx: u16, chan: &IoChannel, io: BdevIo) {
    if let Some(slot) = st.slots.get(idx) {
        slot.pending += 1;
        slot.state = SlotState::Executing;
    }
    let Some(me) = conn.rc() else { return };
    chan.submit(io, me as Rc<dyn IoSink>, u64::from(idx));
}

/// Asks the host for the next part of a command's data (NVMe/TCP 1.0, section 3.3.4): one R2T
/// of at most MAXH2CDATA bytes at a time, as many as MAXR2T allows.
fn send_r2t(conn: &Conn, st: &mut State, idx: u16) {
    let hdgst = st.hdgst;
    let maxh2c = conn.transport.io_unit_size.max(4096);
    let Some(slot) = st.slots.get(idx) else {
        return;
    };
    let off = slot.r2t_end;
    let len = (slot.data_len - off).min(maxh2c);
    slot.r2t_end = off + len;
    let cid = slot.cid;
    let mut out = [0u8; 64];
    let n = wire::encode_r2t(&mut out, cid, idx, off, len, hdgst);
    st.tx.push_hdr(&out[..n]);
}

/// Host data for a command that got an R2T.
pub(super) fn on_h2c_data(conn: &Conn, st: &mut State, h: &H2CData<'_>) -> Result<(), Fatal> {
    let Some(slot) = st
        .slots
        .get(h.ttag)
        .filter(|s| s.state == SlotState::AwaitData && s.cid == h.cccid)
    else {
        // Section 3.6.2.7: data for a transfer tag that asked for none.
        return Err(Fatal::invalid_header_field(wire::H2C_TTAG_OFFSET));
    };
    let datal = u32::try_from(h.data.len()).unwrap_or(u32::MAX);
    let end = h.datao.checked_add(datal);
    // Section 3.6.2.7: DATAO shall be the next byte expected and the data shall stay inside
    // the range the R2T asked for; otherwise Data Transfer Out of Range.
    if h.datao != slot.received || end.is_none_or(|e| e > slot.r2t_end) {
        return Err(Fatal::out_of_range());
    }
    let at = usize::try_from(h.datao).unwrap_or(usize::MAX);
    shoal_bdev::buf::sg_copy_in(&mut slot.data, at, h.data);
    slot.received += datal;
    let complete_range = slot.received == slot.r2t_end;
    let all = slot.received == slot.data_len;
    if complete_range && !all {
        send_r2t(conn, st, h.ttag);
    } else if all {
        let nsid = slot.sqe.nsid();
        match namespace(st, nsid) {
            Ok((chan, bs, _)) => execute(conn, st, h.ttag, &chan, bs),
            Err(s) => finish(st, h.ttag, s),
        }
    }
    Ok(())
}

/// Runs a command whose host data has all arrived.
fn execute(conn: &Conn, st: &mut State, idx: u16, chan: &IoChannel, bs: u32) {
    let Some(slot) = st.slots.get(idx) else {
        return;
    };
    let sqe = slot.sqe;
    match IoCommand::parse(&sqe) {
        IoCommand::Write { slba, nlb, fua } => {
            let data = std::mem::take(&mut slot.data);
            // NVM Command Set 1.0, section 3.2.6: with FUA the write completes only once its
            // data is on non-volatile media: the flag travels with the request to the device.
            let io = BdevIo::write(slba, u64::from(nlb), data).with_flags(IoFlags::from_fua(fua));
            submit(conn, st, idx, chan, io);
        }
        IoCommand::Compare { slba, nlb } => {
            let len = usize::try_from(u64::from(nlb) * u64::from(bs)).unwrap_or(0);
            let mut buf = IoBuf::with_capacity(len);
            buf.set_len(len);
            submit(
                conn,
                st,
                idx,
                chan,
                BdevIo::read(slba, u64::from(nlb), SgList::from_buf([buf])),
            );
        }
        IoCommand::DatasetManagement { nr, ad } => {
            if !ad {
                // Only the deallocate attribute does anything (Base 2.0 / NVM 1.0, 3.2.3).
                return finish(st, idx, Status::SUCCESS);
            }
            let mut ranges = [0u8; 16];
            let mut ios = Vec::with_capacity(usize::from(nr));
            for r in 0..nr {
                let at = usize::from(r) * 16;
                shoal_bdev::buf::sg_copy_out(&slot.data, at, &mut ranges);
                let nlb = u32::from_le_bytes([ranges[4], ranges[5], ranges[6], ranges[7]]);
                let mut slba_b = [0u8; 8];
                slba_b.copy_from_slice(&ranges[8..16]);
                let slba = u64::from_le_bytes(slba_b);
                if nlb == 0 {
                    continue;
                }
                ios.push(BdevIo::unmap(slba, u64::from(nlb)));
            }
            if ios.is_empty() {
                return finish(st, idx, Status::SUCCESS);
            }
            for io in ios {
                submit(conn, st, idx, chan, io);
            }
        }
        _ => finish(st, idx, Status::INVALID_OPCODE.with_dnr()),
    }
}

/// Answers a command and frees its slot.
fn finish(st: &mut State, idx: u16, status: Status) {
    let Some(slot) = st.slots.get(idx) else {
        return;
    };
    let cid = slot.cid;
    st.slots.release(idx);
    respond(st, cid, status, 0);
}

/// A block I/O of this queue pair completed.
pub(super) fn io_done(conn: &Conn, tag: u64, mut io: BdevIo, result: Result<(), BdevError>) {
    let mut guard = conn.st.borrow_mut();
    let st = &mut *guard;
    let Ok(idx) = u16::try_from(tag) else { return };
    if st.phase == super::Phase::Closing {
        st.slots.release(idx);
        return;
    }
    let Some(slot) = st.slots.get(idx) else {
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
    let is_compare = matches!(IoCommand::parse(&slot.sqe), IoCommand::Compare { .. });
    if let Some(c) = &st.counters
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
        return finish(st, idx, status);
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
        return finish(st, idx, s);
    }
    if io.io_type == IoType::Read {
        st.slots.release(idx);
        if let Some(buf) = io.bufs.pop() {
            send_data(conn, st, cid, buf);
        }
        return;
    }
    finish(st, idx, Status::SUCCESS);
}

fn flat_eq(a: &[IoBuf], b: &[IoBuf]) -> bool {
    let fa = a.iter().flat_map(|x| x.as_slice().iter());
    let fb = b.iter().flat_map(|x| x.as_slice().iter());
    fa.eq(fb)
}
