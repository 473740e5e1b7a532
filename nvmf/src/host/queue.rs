//! The sans-IO core of a host queue pair: requests, the command slot table, command issue and
//! completion. No socket, no clock: the caller hands in `now`, bytes received
//! ([`super::rx`]) and takes the bytes to send ([`QueueCore::tx`]) and the finished requests.
//!
//! - A **request** is what a user submitted: a block I/O ([`Work::Io`]) or one raw command
//!   ([`Work::Raw`]). Requests wait in a FIFO until a slot is free.
//! - A **slot** is one command on the wire; its index is the command's CID (NVMe Base 2.0
//!   section 4.2: a CID is unique among the commands outstanding on a queue). A block I/O
//!   larger than the controller's transfer limit (MDTS) or than 65536 blocks is issued as
//!   several commands, each covering a byte range of the request's buffers.
//! - When the connection goes away, commands in flight are dropped and their block I/Os are
//!   issued again from the start on the next connection ([`QueueCore::reset`]); raw commands
//!   fail instead.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use shoal_bdev::{BdevError, BdevIo, IoBuf, IoFlags, IoSink, IoType, SgList};
use zerocopy::IntoBytes;

use super::cmd::{self, Dir};
use super::error::{HostError, to_bdev_error};
use crate::wire::pdu::{
    CapsuleCmd, DataDigest, Deframer, Digests, FrameOptions, IcReq, MAX_HEADER_SPACE, PduHeader,
    Role,
};
use crate::wire::spec::dsm::DsmRange;
use crate::wire::spec::opcode::io;
use crate::wire::spec::{Cqe, SglDescriptor, Sqe};
use crate::wire::txq::{HOST_ARENA, TxQueue};

/// Who hears about a finished request.
pub(crate) enum Waiter {
    /// A block I/O: the sink gets the `BdevIo` back with its tag (hot path, no allocation).
    Sink {
        /// The sink.
        sink: Rc<dyn IoSink>,
        /// The caller's tag.
        tag: u64,
    },
    /// A raw command (control path).
    Callback(Box<dyn FnOnce(Result<RawCompletion, HostError>)>),
}

/// The completion of a raw command: its CQE (whatever the status) and its data buffer.
#[derive(Debug)]
pub struct RawCompletion {
    /// The completion queue entry (synthesized when a C2HData carried SUCCESS).
    pub cqe: Cqe,
    /// The data buffers given with the command.
    pub data: SgList,
}

/// What a request does.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Work {
    /// A block I/O on namespace `nsid`.
    Io {
        /// The operation.
        io_type: IoType,
        /// Its flags (Force Unit Access goes out in every command of the request).
        flags: IoFlags,
        /// Namespace.
        nsid: u32,
        /// Its block size.
        block_size: u32,
        /// First block.
        offset_blocks: u64,
        /// Blocks (0 for a flush).
        num_blocks: u64,
        /// Blocks of the namespace (for the out-of-range error).
        capacity: u64,
    },
    /// One command built by the caller; the CID and SGL are filled in here.
    Raw {
        /// The command.
        sqe: Sqe,
        /// Its data direction.
        dir: Dir,
        /// Its data length (the buffers hold at least this much).
        len: u32,
        /// Fabrics Connect: issued before anything else, data always in-capsule.
        connect: bool,
    },
}

/// A finished request, to be delivered outside the queue's borrow.
pub(crate) struct Finished {
    pub(crate) waiter: Waiter,
    pub(crate) outcome: Outcome,
}

/// The result of a finished request.
pub(crate) enum Outcome {
    /// A block I/O and its result.
    Io(BdevIo, Result<(), BdevError>),
    /// A raw command's result.
    Raw(Result<RawCompletion, HostError>),
}

impl Finished {
    /// Calls the waiter.
    pub(crate) fn deliver(self) {
        match (self.waiter, self.outcome) {
            (Waiter::Sink { sink, tag }, Outcome::Io(io, r)) => sink.io_done(tag, io, r),
            (Waiter::Callback(cb), Outcome::Raw(r)) => cb(r),
            (Waiter::Callback(cb), Outcome::Io(..)) => cb(Err(HostError::Closed)),
            (Waiter::Sink { .. }, Outcome::Raw(_)) => {}
        }
    }
}

struct Request {
    work: Work,
    bufs: SgList,
    waiter: Waiter,
    /// Units (blocks; 1 for a flush or raw command) issued so far.
    issued: u64,
    /// Commands of this request in flight.
    inflight: u32,
    error: Option<HostError>,
    cqe: Option<Cqe>,
    /// In the pending FIFO.
    queued: bool,
}

impl Request {
    fn total(&self) -> u64 {
        match self.work {
            Work::Io {
                io_type: IoType::Flush,
                ..
            }
            | Work::Raw { .. } => 1,
            Work::Io { num_blocks, .. } => num_blocks,
        }
    }
}

/// One command on the wire; its index is the CID.
#[derive(Clone, Copy)]
pub(super) struct Slot {
    pub(super) active: bool,
    pub(super) req: u32,
    /// Byte offset of the command's data within the request's buffers.
    pub(super) data_off: u64,
    pub(super) len: u32,
    pub(super) dir: Dir,
    pub(super) in_capsule: bool,
    /// C2H bytes received.
    pub(super) received: u32,
    /// H2C bytes asked for by R2Ts so far.
    pub(super) r2t_end: u32,
    /// A Dataset Management range (the data of a deallocate), used instead of the buffers.
    pub(super) inline: Option<DsmRange>,
    pub(super) deadline: Instant,
}

/// Which requests may be issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gate {
    /// None (no connection, or ICResp not yet received).
    Closed,
    /// Only Fabrics Connect (NVMe-oF 1.1 section 3.3: Connect is the first command).
    Connect,
    /// Everything.
    Open,
}

/// What the connection settled: digests and data alignment from the IC exchange, transfer
/// limits from the controller.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) hdgst: bool,
    pub(crate) ddgst: bool,
    /// CPDA from the ICResp: data in the PDUs the host sends starts at a multiple of
    /// `(cpda + 1) * 4` bytes.
    pub(crate) cpda: u8,
    /// MAXH2CDATA from the ICResp.
    pub(crate) maxh2cdata: u32,
    /// Most in-capsule data bytes: 8192 on the admin queue (the NVMe/TCP 1.0a admin capsule
    /// size), IOCCSZ * 16 - 64 on I/O queues (NVMe-oF 1.1 Identify Controller).
    pub(crate) in_capsule: u32,
    /// Most data bytes in one command (MDTS and the host's own limit).
    pub(crate) max_xfer: u32,
    /// Connect disabled SQ flow control (C2HData SUCCESS allowed).
    pub(crate) sq_flow_disabled: bool,
}

/// The sans-IO state of one queue pair.
pub(crate) struct QueueCore {
    pub(crate) qid: u16,
    pub(super) slots: Vec<Slot>,
    free: Vec<u16>,
    reqs: Vec<Option<Request>>,
    free_reqs: Vec<u32>,
    pending: VecDeque<u32>,
    outstanding: usize,
    pub(crate) gate: Gate,
    pub(crate) limits: Limits,
    /// Digests asked for in the ICReq.
    pub(super) want: Digests,
    pub(super) deframer: Deframer,
    pub(crate) tx: TxQueue,
    pub(crate) timeout: Duration,
    /// Finished requests waiting to be delivered.
    pub(crate) done: Vec<Finished>,
}

impl QueueCore {
    /// A queue of `depth` command slots.
    pub(crate) fn new(qid: u16, depth: u16, limits: Limits, timeout: Duration) -> QueueCore {
        let idle = Slot {
            active: false,
            req: 0,
            data_off: 0,
            len: 0,
            dir: Dir::None,
            in_capsule: false,
            received: 0,
            r2t_end: 0,
            inline: None,
            deadline: Instant::now(),
        };
        QueueCore {
            qid,
            slots: vec![idle; usize::from(depth.max(1))],
            free: (0..depth.max(1)).rev().collect(),
            reqs: Vec::new(),
            free_reqs: Vec::new(),
            pending: VecDeque::new(),
            outstanding: 0,
            gate: Gate::Closed,
            limits,
            want: Digests::default(),
            deframer: Deframer::new(Role::Host),
            tx: TxQueue::new(HOST_ARENA),
            timeout,
            done: Vec::new(),
        }
    }

    /// Commands on the wire.
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Requests not finished (on the wire or waiting).
    pub(crate) fn requests(&self) -> usize {
        self.reqs.len() - self.free_reqs.len()
    }

    fn opts(&self) -> FrameOptions {
        FrameOptions {
            header_digest: self.limits.hdgst,
            data_digest: self.limits.ddgst,
            pda: self.limits.cpda,
        }
    }

    /// Adds a request; Connect goes to the head of the FIFO.
    pub(crate) fn push(&mut self, work: Work, bufs: SgList, waiter: Waiter) {
        let front = matches!(work, Work::Raw { connect: true, .. });
        let req = Request {
            work,
            bufs,
            waiter,
            issued: 0,
            inflight: 0,
            error: None,
            cqe: None,
            queued: true,
        };
        let id = match self.free_reqs.pop() {
            Some(id) => {
                if let Some(e) = self.reqs.get_mut(id as usize) {
                    *e = Some(req);
                }
                id
            }
            None => {
                self.reqs.push(Some(req));
                u32::try_from(self.reqs.len() - 1).unwrap_or(u32::MAX)
            }
        };
        if front {
            self.pending.push_front(id);
        } else {
            self.pending.push_back(id);
        }
    }

    /// Starts a connection: queues the ICReq (NVMe/TCP 1.0a section 3.6.2.2: HPDA 0, MAXR2T 0
    /// i.e. one outstanding R2T per command, the digests wanted) and forgets the old one's
    /// framing state.
    pub(crate) fn begin(&mut self, want: Digests) {
        self.want = want;
        self.deframer = Deframer::new(Role::Host);
        self.gate = Gate::Closed;
        let ic = IcReq {
            pfv: crate::wire::pdu::ic::PFV_1_0,
            hpda: 0,
            digests: want,
            maxr2t: 0,
        };
        let mut hdr = [0u8; MAX_HEADER_SPACE];
        if let Ok(e) = PduHeader::IcReq(ic).encode_header(0, &FrameOptions::default(), &mut hdr)
            && let Some(src) = hdr.get(..e.header_len)
        {
            self.tx.append(src.len()).copy_from_slice(src);
        }
    }

    /// Issues waiting requests while slots are free and the gate allows.
    pub(crate) fn issue(&mut self, now: Instant) {
        while let Some(&rid) = self.pending.front() {
            if self.gate == Gate::Closed || self.free.is_empty() {
                return;
            }
            let Some(Some(req)) = self.reqs.get_mut(rid as usize) else {
                self.pending.pop_front();
                continue;
            };
            let connect = matches!(req.work, Work::Raw { connect: true, .. });
            if self.gate == Gate::Connect && !connect {
                return;
            }
            let Some(cmd) = next_command(req, &self.limits) else {
                req.queued = false;
                self.pending.pop_front();
                continue;
            };
            req.issued += cmd.units;
            req.inflight += 1;
            if req.issued >= req.total() {
                req.queued = false;
                self.pending.pop_front();
            }
            let Some(cid) = self.free.pop() else { return };
            let in_capsule = cmd.dir == Dir::ToCtrl
                && cmd.len > 0
                && (connect || cmd.len <= self.limits.in_capsule);
            let slot = Slot {
                active: true,
                req: rid,
                data_off: cmd.data_off,
                len: cmd.len,
                dir: cmd.dir,
                in_capsule,
                received: 0,
                r2t_end: if in_capsule { cmd.len } else { 0 },
                inline: cmd.inline,
                deadline: now + self.timeout,
            };
            if let Some(s) = self.slots.get_mut(usize::from(cid)) {
                *s = slot;
            }
            self.outstanding += 1;
            let mut sqe = cmd.sqe;
            sqe.cid.set(cid);
            sqe.dptr = if cmd.len == 0 {
                SglDescriptor::null()
            } else if in_capsule {
                SglDescriptor::in_capsule(cmd.len)
            } else {
                SglDescriptor::transport(cmd.len)
            };
            self.encode_capsule(&sqe, &slot);
        }
    }

    /// Queues a CapsuleCmd PDU (NVMe/TCP 1.0a section 3.6.2.6), with its in-capsule data.
    fn encode_capsule(&mut self, sqe: &Sqe, slot: &Slot) {
        let data_len = if slot.in_capsule { slot.len } else { 0 };
        let data_len = usize::try_from(data_len).unwrap_or(0);
        let opts = self.opts();
        let mut hdr = [0u8; MAX_HEADER_SPACE];
        let Ok(e) = PduHeader::CapsuleCmd(CapsuleCmd { sqe: *sqe })
            .encode_header(data_len, &opts, &mut hdr)
        else {
            return;
        };
        let bufs = self.reqs.get(slot.req as usize).and_then(Option::as_ref);
        write_pdu(
            &mut self.tx,
            &hdr,
            e.header_len,
            e.data_digest,
            data_len,
            |dst| copy_out(bufs, slot, 0, dst),
        );
    }

    /// The slot of an outstanding command.
    pub(super) fn active_slot(&self, cid: u16) -> Option<Slot> {
        self.slots
            .get(usize::from(cid))
            .copied()
            .filter(|s| s.active)
    }

    /// Mutable access to an outstanding command's slot.
    pub(super) fn active_slot_mut(&mut self, cid: u16) -> Option<&mut Slot> {
        self.slots.get_mut(usize::from(cid)).filter(|s| s.active)
    }

    /// The buffers of the request a slot belongs to.
    pub(super) fn bufs_mut(&mut self, slot: &Slot) -> Option<&mut SgList> {
        Some(&mut self.reqs.get_mut(slot.req as usize)?.as_mut()?.bufs)
    }

    /// Queues one PDU whose data comes from a command's buffers at byte `at` of its data.
    pub(super) fn write_data_pdu(&mut self, hdr: &PduHeader, slot: &Slot, at: u32, len: usize) {
        let opts = self.opts();
        let mut h = [0u8; MAX_HEADER_SPACE];
        let Ok(e) = hdr.encode_header(len, &opts, &mut h) else {
            return;
        };
        let req = self.reqs.get(slot.req as usize).and_then(Option::as_ref);
        write_pdu(&mut self.tx, &h, e.header_len, e.data_digest, len, |dst| {
            copy_out(req, slot, at, dst)
        });
    }

    /// A command completed: with a CQE, or (SUCCESS flag) without one.
    pub(super) fn complete(&mut self, cid: u16, cqe: Cqe) {
        let Some(slot) = self.slots.get_mut(usize::from(cid)) else {
            return;
        };
        if !slot.active {
            return;
        }
        slot.active = false;
        let rid = slot.req;
        self.free.push(cid);
        self.outstanding -= 1;
        let Some(Some(req)) = self.reqs.get_mut(rid as usize) else {
            return;
        };
        req.inflight = req.inflight.saturating_sub(1);
        let status = cqe.status();
        match req.work {
            Work::Raw { .. } => req.cqe = Some(cqe),
            Work::Io { .. } if !status.is_success() => {
                if req.error.is_none() {
                    req.error = Some(HostError::Status { status });
                }
                // Issue nothing more of a failed request.
                req.issued = req.total();
                if req.queued {
                    req.queued = false;
                    self.pending.retain(|&r| r != rid);
                }
            }
            Work::Io { .. } => {}
        }
        if req.inflight == 0 && req.issued >= req.total() {
            self.finish(rid);
        }
    }

    fn finish(&mut self, rid: u32) {
        let Some(req) = self.reqs.get_mut(rid as usize).and_then(Option::take) else {
            return;
        };
        self.free_reqs.push(rid);
        let outcome = match req.work {
            Work::Io {
                io_type,
                flags,
                offset_blocks,
                num_blocks,
                capacity,
                ..
            } => {
                let io = BdevIo {
                    io_type,
                    flags,
                    offset_blocks,
                    num_blocks,
                    bufs: req.bufs,
                };
                let r = match &req.error {
                    None => Ok(()),
                    Some(e) => Err(to_bdev_error(
                        e,
                        io_type,
                        (offset_blocks, num_blocks, capacity),
                    )),
                };
                Outcome::Io(io, r)
            }
            Work::Raw { .. } => Outcome::Raw(match (req.error, req.cqe) {
                (Some(e), _) => Err(e),
                (None, Some(cqe)) => Ok(RawCompletion {
                    cqe,
                    data: req.bufs,
                }),
                (None, None) => Err(HostError::ConnectionClosed),
            }),
        };
        self.done.push(Finished {
            waiter: req.waiter,
            outcome,
        });
    }

    /// The CID of a command past its deadline, if any.
    pub(crate) fn expired(&self, now: Instant) -> Option<u16> {
        let i = self
            .slots
            .iter()
            .position(|s| s.active && s.deadline <= now)?;
        u16::try_from(i).ok()
    }

    /// Marks the request of command `cid` as failed with `err`; it finishes at the next
    /// [`QueueCore::reset`] instead of being issued again.
    pub(crate) fn fail_request_of(&mut self, cid: u16, err: HostError) {
        let Some(slot) = self.active_slot(cid) else {
            return;
        };
        if let Some(Some(req)) = self.reqs.get_mut(slot.req as usize) {
            req.error = Some(err);
        }
    }

    /// The connection is gone: commands in flight are dropped. Block I/Os start over on the
    /// next connection (their data is still in their buffers); raw commands and requests
    /// already marked failed finish with their error, or `raw_err`.
    pub(crate) fn reset(&mut self, raw_err: &HostError) {
        for s in &mut self.slots {
            s.active = false;
        }
        self.free.clear();
        let depth = u16::try_from(self.slots.len()).unwrap_or(u16::MAX);
        self.free.extend((0..depth).rev());
        self.outstanding = 0;
        self.tx.clear();
        self.gate = Gate::Closed;
        let mut retry: Vec<u32> = Vec::new();
        for rid in 0..self.reqs.len() {
            let rid32 = u32::try_from(rid).unwrap_or(u32::MAX);
            let Some(Some(req)) = self.reqs.get_mut(rid) else {
                continue;
            };
            req.inflight = 0;
            let give_up = match req.work {
                Work::Raw { .. } => {
                    if req.error.is_none() {
                        req.error = Some(raw_err.clone());
                    }
                    true
                }
                Work::Io { .. } => req.error.is_some(),
            };
            if give_up {
                self.finish(rid32);
                continue;
            }
            req.issued = 0;
            if !req.queued {
                req.queued = true;
                retry.push(rid32);
            }
        }
        self.pending
            .retain(|&r| matches!(self.reqs.get(r as usize), Some(Some(q)) if q.queued));
        for rid in retry.into_iter().rev() {
            self.pending.push_front(rid);
        }
    }

    /// Finishes every request with `err` (controller lost, queue closed).
    pub(crate) fn fail_all(&mut self, err: &HostError) {
        for rid in 0..self.reqs.len() {
            if let Some(Some(req)) = self.reqs.get_mut(rid) {
                if req.error.is_none() {
                    req.error = Some(err.clone());
                }
                self.finish(u32::try_from(rid).unwrap_or(u32::MAX));
            }
        }
        self.pending.clear();
        for s in &mut self.slots {
            s.active = false;
        }
        self.free.clear();
        let depth = u16::try_from(self.slots.len()).unwrap_or(u16::MAX);
        self.free.extend((0..depth).rev());
        self.outstanding = 0;
        self.tx.clear();
    }
}

/// One command of a request.
struct NextCmd {
    sqe: Sqe,
    dir: Dir,
    data_off: u64,
    len: u32,
    units: u64,
    inline: Option<DsmRange>,
}

/// The next command of `req`: a chunk of at most `max_xfer` bytes and 65536 blocks (NLB is
/// 16 bits, 0's based) for reads, writes and write zeroes; one range of up to 2^32 - 1
/// blocks for a deallocate.
fn next_command(req: &Request, limits: &Limits) -> Option<NextCmd> {
    let remaining = req.total().checked_sub(req.issued).filter(|&r| r > 0)?;
    match req.work {
        Work::Raw { sqe, dir, len, .. } => Some(NextCmd {
            sqe,
            dir,
            data_off: 0,
            len,
            units: 1,
            inline: None,
        }),
        Work::Io {
            io_type,
            flags,
            nsid,
            block_size,
            offset_blocks,
            ..
        } => {
            let slba = offset_blocks.checked_add(req.issued)?;
            let bs = u64::from(block_size.max(1));
            let max_blocks = (u64::from(limits.max_xfer) / bs).clamp(1, 65536);
            let (sqe, dir, blocks, inline) = match io_type {
                IoType::Read | IoType::Write => {
                    let n = remaining.min(max_blocks);
                    let nlb = u32::try_from(n).ok()?;
                    let (op, dir) = if io_type == IoType::Read {
                        (io::READ, Dir::ToHost)
                    } else {
                        (io::WRITE, Dir::ToCtrl)
                    };
                    let sqe = cmd::with_fua(cmd::read_write(op, nsid, slba, nlb), flags.fua());
                    (sqe, dir, n, None)
                }
                IoType::WriteZeroes => {
                    let n = remaining.min(65536);
                    let nlb = u32::try_from(n).ok()?;
                    let sqe = cmd::with_fua(cmd::write_zeroes(nsid, slba, nlb), flags.fua());
                    (sqe, Dir::None, n, None)
                }
                IoType::Unmap => {
                    let n = remaining.min(u64::from(u32::MAX));
                    let nlb = u32::try_from(n).ok()?;
                    let range = DsmRange::new(slba, nlb);
                    (cmd::deallocate(nsid), Dir::ToCtrl, n, Some(range))
                }
                IoType::Flush => (cmd::flush(nsid), Dir::None, 1, None),
            };
            let (data_off, len) = match (dir, inline) {
                (_, Some(r)) => (0, u32::try_from(r.as_bytes().len()).ok()?),
                (Dir::None, None) => (0, 0),
                _ => (
                    req.issued.checked_mul(bs)?,
                    u32::try_from(blocks.checked_mul(bs)?).ok()?,
                ),
            };
            Some(NextCmd {
                sqe,
                dir,
                data_off,
                len,
                units: blocks,
                inline,
            })
        }
    }
}

/// Copies a command's data from byte `at` of its data into `dst`.
fn copy_out(req: Option<&Request>, slot: &Slot, at: u32, dst: &mut [u8]) {
    if let Some(inline) = &slot.inline {
        let from = usize::try_from(at).unwrap_or(usize::MAX);
        if let Some(src) = inline.as_bytes().get(from..from.saturating_add(dst.len())) {
            dst.copy_from_slice(src);
        }
        return;
    }
    if let Some(req) = req {
        let off = slot.data_off.saturating_add(u64::from(at));
        let off = usize::try_from(off).unwrap_or(usize::MAX);
        shoal_bdev::buf::sg_copy_out(&req.bufs, off, dst);
    }
}

/// Appends a PDU to `tx`: `hdr[..header_len]`, `data_len` bytes filled by `fill`, and the data
/// digest (CRC32C of the data) when `ddgst`.
fn write_pdu(
    tx: &mut TxQueue,
    hdr: &[u8],
    header_len: usize,
    ddgst: bool,
    data_len: usize,
    fill: impl FnOnce(&mut [u8]),
) {
    let dg = if ddgst {
        crate::wire::pdu::DIGEST_LEN
    } else {
        0
    };
    let total = header_len + data_len + dg;
    let out = tx.append(total);
    let (Some(h), Some(src)) = (out.get_mut(..header_len), hdr.get(..header_len)) else {
        return;
    };
    h.copy_from_slice(src);
    let Some(data) = out.get_mut(header_len..header_len + data_len) else {
        return;
    };
    fill(data);
    if ddgst {
        let digest = DataDigest::of(data).to_le_bytes();
        if let Some(d) = out.get_mut(header_len + data_len..total) {
            d.copy_from_slice(&digest);
        }
    }
}

/// A buffer holding `data`, for a raw command.
pub(crate) fn sg_of(data: &[u8]) -> SgList {
    let mut sg = SgList::new();
    sg.push(IoBuf::copy_from(data));
    sg
}

/// A zeroed buffer of `len` bytes, for a raw command that receives data.
pub(crate) fn sg_zeroed(len: usize) -> SgList {
    let mut sg = SgList::new();
    sg.push(IoBuf::zeroed(len));
    sg
}
