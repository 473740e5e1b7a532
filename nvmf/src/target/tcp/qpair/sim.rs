//! A deterministic driver for a [`QueuePair`] with no socket and no reactor, for unit tests
//! and the fuzz target (feature `test-utils`): a host that sends PDUs as bytes and decodes
//! what the target sends, block devices as byte vectors, and a clock the caller moves.
//!
//! It checks the queue pair's invariants as it goes (see [`Sim::violations`]): no answer to a
//! command ID the host has no unanswered command with, no C2HData or R2T beyond the command's
//! length, every command answered at most once and, when the queue is quiet, exactly once
//! ([`Sim::check_quiet`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shoal_bdev::{Bdev, BdevError, BdevIo, IoType, check_io};

use super::{Action, QueuePair, QueuePairConfig};
use crate::target::subsystem::{ListenAddress, Target};
use crate::wire::pdu::{
    CapsuleCmd, ConnectionParams, DataDigest, Deframed, Deframer, Digests, FrameOptions, IcReq,
    PduHeader, Role,
};

/// The listener every simulated connection arrives on.
pub fn listen_address() -> ListenAddress {
    ListenAddress::tcp("127.0.0.1", "4420")
}

/// The 1024-byte Connect data (NVMe-oF 1.1 section 3.3.1) for controller `cntlid`.
pub fn connect_data(cntlid: u16, subnqn: &str, hostnqn: &str) -> Vec<u8> {
    let cd = crate::wire::spec::fabrics::ConnectData::new([7; 16], cntlid, subnqn, hostnqn);
    zerocopy::IntoBytes::as_bytes(&cd).to_vec()
}

/// A namespace channel in the simulation: the device itself.
#[derive(Clone)]
pub struct SimChan(pub Arc<dyn Bdev>);

fn open(bdev: &Arc<dyn Bdev>) -> Result<SimChan, BdevError> {
    Ok(SimChan(bdev.clone()))
}

/// A block I/O the queue pair asked for and the simulation has not completed yet.
pub struct PendingIo {
    /// Its device.
    pub chan: SimChan,
    /// The request.
    pub io: BdevIo,
    /// The queue pair's tag.
    pub tag: u64,
}

/// What the host knows of the commands it sent with one CID.
#[derive(Default, Clone, Copy)]
struct CidBook {
    /// Capsules sent with this CID.
    sent: u32,
    /// Answers received (CapsuleResp, or C2HData with SUCCESS).
    answered: u32,
    /// The largest SGL length among them (the most data any of them may move).
    max_len: u32,
}

/// One queue pair driven by a simulated host.
pub struct Sim {
    /// The queue pair under test.
    pub qp: QueuePair<SimChan>,
    /// The simulated clock.
    pub now: Instant,
    /// Whether the host reads what the target sends (false: a host that never reads).
    pub host_reads: bool,
    /// Block I/O in flight, in submission order.
    pub pending: Vec<PendingIo>,
    /// PDUs the host received and the test has not taken yet.
    pub received: VecDeque<(PduHeader, Vec<u8>)>,
    /// The reason of the `Closed` action, once it came.
    pub closed: Option<String>,
    /// A `Shutdown` action came.
    pub shutdown: bool,
    /// Times the controller woke the queue pair.
    pub wakes: Arc<AtomicUsize>,
    /// Every invariant broken so far (empty when all is well).
    pub violations: Vec<String>,
    /// Whether the CID accounting holds (false once raw bytes were sent: they may parse as
    /// commands the host does not know it sent).
    pub strict: bool,
    opts: FrameOptions,
    host: Deframer,
    /// Bytes sent by the host and not consumed by the target.
    inbox: Vec<u8>,
    /// Bytes sent by the target and not decoded by the host.
    outbox: Vec<u8>,
    book: HashMap<u16, CidBook>,
    disks: HashMap<String, Vec<u8>>,
}

impl Sim {
    /// A new connection to `target` at `now`.
    pub fn new(target: &Arc<Target>, now: Instant) -> Sim {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        let cfg = QueuePairConfig {
            id: crate::target::tcp::next_conn_id(),
            target: target.clone(),
            listen: listen_address(),
            transport: target.transport(),
            waker: Arc::new(move || {
                w.fetch_add(1, Ordering::Relaxed);
            }),
            open,
        };
        Sim {
            qp: QueuePair::new(cfg, now),
            now,
            host_reads: true,
            pending: Vec::new(),
            received: VecDeque::new(),
            closed: None,
            shutdown: false,
            wakes,
            violations: Vec::new(),
            strict: true,
            opts: FrameOptions::default(),
            host: Deframer::new(Role::Host),
            inbox: Vec::new(),
            outbox: Vec::new(),
            book: HashMap::new(),
            disks: HashMap::new(),
        }
    }

    /// The bytes of one PDU as the host sends it (digests as negotiated; `bad_ddgst` sends a
    /// wrong data digest).
    pub fn encode(&self, h: &PduHeader, data: &[u8], bad_ddgst: bool) -> Vec<u8> {
        let mut out = vec![0u8; 256];
        let Ok(e) = h.encode_header(data.len(), &self.opts, &mut out) else {
            return Vec::new();
        };
        out.truncate(e.header_len);
        out.extend_from_slice(data);
        if e.data_digest {
            let d = DataDigest::of(data) ^ u32::from(bad_ddgst);
            out.extend_from_slice(&d.to_le_bytes());
        }
        out
    }

    /// Sends one PDU and lets the target handle it.
    pub fn send(&mut self, h: PduHeader, data: &[u8]) {
        self.send_with(h, data, false);
    }

    /// [`Sim::send`], with a wrong data digest if `bad_ddgst`.
    pub fn send_with(&mut self, h: PduHeader, data: &[u8], bad_ddgst: bool) {
        let bytes = self.encode(&h, data, bad_ddgst);
        if let PduHeader::CapsuleCmd(c) = &h {
            let b = self.book.entry(c.sqe.cid()).or_default();
            b.sent += 1;
            b.max_len = b.max_len.max(c.sqe.dptr.len());
        }
        self.send_raw(&bytes);
        if let PduHeader::IcReq(ic) = h {
            self.host_established(ic.digests);
        }
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.inbox.extend_from_slice(bytes);
        self.pump();
    }

    /// Sends bytes that are not one well-formed PDU (the CID accounting stops).
    pub fn send_garbage(&mut self, bytes: &[u8]) {
        self.strict = false;
        self.send_raw(bytes);
    }

    /// The ICReq (HPDA 0, MAXR2T 0) with these digests.
    pub fn ic_req(&mut self, header: bool, data: bool) {
        let req = IcReq {
            pfv: 0,
            hpda: 0,
            digests: Digests { header, data },
            maxr2t: 0,
        };
        self.send(PduHeader::IcReq(req), &[]);
    }

    /// The host uses the digests it asked for from now on (its ICReq is out; the target
    /// grants what is asked).
    fn host_established(&mut self, d: Digests) {
        self.opts = FrameOptions {
            header_digest: d.header,
            data_digest: d.data,
            pda: 0,
        };
        // The ICResp comes before anything else and is decoded with the initial state; the
        // host deframer is established once it was seen (see `decode_out`).
    }

    /// Sends a capsule.
    pub fn capsule(&mut self, sqe: crate::wire::spec::Sqe, data: &[u8]) {
        self.send(PduHeader::CapsuleCmd(CapsuleCmd { sqe }), data);
    }

    /// Moves the clock by `d` and lets deadlines expire.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.qp.handle_timeout(self.now);
        self.pump();
    }

    /// The controller woke the queue pair: run [`QueuePair::poke`].
    pub fn poke(&mut self) {
        self.qp.poke(self.now);
        self.pump();
    }

    /// Runs the queue pair until it waits for the host, a device or the clock.
    pub fn pump(&mut self) {
        loop {
            if self.qp.wants_read() && !self.inbox.is_empty() {
                let used = self.qp.handle_rx(&self.inbox, self.now);
                self.inbox.drain(..used.min(self.inbox.len()));
            }
            while let Some(a) = self.qp.poll_action() {
                match a {
                    Action::Submit { chan, io, tag } => {
                        self.pending.push(PendingIo { chan, io, tag })
                    }
                    Action::Closed { reason } => {
                        if self.closed.is_some() {
                            self.violations.push("Closed twice".into());
                        }
                        self.closed = Some(reason);
                    }
                    Action::Shutdown => self.shutdown = true,
                }
            }
            if !self.host_reads {
                return;
            }
            let mut resumed = false;
            while let Some((bufs, skip)) = self.qp.poll_transmit() {
                let mut n = 0usize;
                for (i, b) in bufs.iter().enumerate() {
                    let s = b.as_slice();
                    let s = if i == 0 {
                        s.get(skip..).unwrap_or(&[])
                    } else {
                        s
                    };
                    self.outbox.extend_from_slice(s);
                    n += s.len();
                }
                let n = i32::try_from(n).unwrap_or(i32::MAX);
                resumed |= self.qp.handle_sent(bufs, n, self.now);
            }
            self.decode_out();
            if !resumed || self.inbox.is_empty() {
                return;
            }
        }
    }

    fn decode_out(&mut self) {
        loop {
            let frame = match self.host.decode(&self.outbox) {
                Ok(Deframed::Frame(f)) => f,
                Ok(Deframed::NeedMore(_)) => return,
                Ok(Deframed::DataDigestMismatch { .. }) => {
                    self.violations
                        .push("the target sent a wrong data digest".into());
                    return;
                }
                Err(e) => {
                    self.violations
                        .push(format!("the target sent a malformed PDU: {e}"));
                    self.outbox.clear();
                    return;
                }
            };
            let data = frame.data(&self.outbox).to_vec();
            self.outbox.drain(..frame.len);
            if let PduHeader::IcResp(r) = frame.header {
                self.host.establish(ConnectionParams {
                    header_digest: r.digests.header,
                    data_digest: r.digests.data,
                    rx_pda: 0,
                    max_in_capsule_data: 0,
                    max_h2c_data: 0,
                    max_c2h_data: 1 << 24,
                });
            }
            self.check(&frame.header, data.len());
            self.received.push_back((frame.header, data));
        }
    }

    /// Checks one PDU from the target against what the host sent.
    fn check(&mut self, h: &PduHeader, data_len: usize) {
        let strict = self.strict;
        match h {
            PduHeader::CapsuleResp(r) => self.answer(r.cqe.cid()),
            PduHeader::C2HData(d) => {
                let b = self.book.get(&d.cccid).copied().unwrap_or_default();
                let end = u64::from(d.datao) + data_len as u64;
                if strict && (b.answered >= b.sent || end > u64::from(b.max_len)) {
                    self.violations.push(format!(
                        "C2HData for CID {:#x} ends at {end}, beyond {} (or no command)",
                        d.cccid, b.max_len
                    ));
                }
                if d.success {
                    self.answer(d.cccid);
                }
            }
            PduHeader::R2t(r) => {
                let b = self.book.get(&r.cccid).copied().unwrap_or_default();
                let end = u64::from(r.r2to) + u64::from(r.r2tl);
                if strict && (b.answered >= b.sent || end > u64::from(b.max_len) || r.r2tl == 0) {
                    self.violations.push(format!(
                        "R2T for CID {:#x} asks for {}..{end}, beyond {} (or no command)",
                        r.cccid, r.r2to, b.max_len
                    ));
                }
            }
            _ => {}
        }
    }

    /// Counts an answer for `cid`.
    fn answer(&mut self, cid: u16) {
        let b = self.book.entry(cid).or_default();
        if b.answered >= b.sent && self.strict {
            self.violations.push(format!(
                "answer for CID {cid:#x}: {} sent, {} answered already",
                b.sent, b.answered
            ));
        }
        b.answered += 1;
    }

    /// The queue is quiet (host reading, nothing in flight, every byte handled): every command
    /// the host sent is answered or is still held by the queue pair (waiting for data, or a
    /// parked Asynchronous Event Request), so none is lost or answered twice.
    pub fn check_quiet(&mut self) {
        if !self.strict || self.closed.is_some() || !self.pending.is_empty() || !self.host_reads {
            return;
        }
        if !self.inbox.is_empty() {
            // A partial PDU waits for its end.
            return;
        }
        let open: u64 = self
            .book
            .values()
            .map(|b| u64::from(b.sent.saturating_sub(b.answered)))
            .sum();
        let held = self.qp.outstanding() as u64;
        if open != held {
            self.violations.push(format!(
                "{open} commands unanswered but the queue pair holds {held}"
            ));
        }
    }

    /// Completes the pending I/O at `i` with `fail` as its result, or by running it on the
    /// simulated device if `fail` is `None`.
    pub fn complete(&mut self, i: usize, fail: Option<BdevError>) {
        if i >= self.pending.len() {
            return;
        }
        let PendingIo { chan, mut io, tag } = self.pending.remove(i);
        let result = match fail {
            Some(e) => Err(e),
            None => self.run(&chan.0, &mut io),
        };
        self.qp.handle_io_done(tag, io, result);
        self.pump();
    }

    /// Completes every pending I/O on the simulated devices, oldest first.
    pub fn complete_all(&mut self) {
        while !self.pending.is_empty() {
            self.complete(0, None);
        }
    }

    /// Runs `io` against the byte vector standing for `bdev`, after the checks a real
    /// channel makes.
    fn run(&mut self, bdev: &Arc<dyn Bdev>, io: &mut BdevIo) -> Result<(), BdevError> {
        check_io(bdev.as_ref(), io)?;
        let info = bdev.info();
        let bs = u64::from(info.block_size);
        let size = usize::try_from(info.num_blocks() * bs).unwrap_or(0);
        let disk = self
            .disks
            .entry(info.name.clone())
            .or_insert_with(|| vec![0; size]);
        let at = usize::try_from(io.offset_blocks * bs).unwrap_or(usize::MAX);
        let len = usize::try_from(io.num_blocks * bs).unwrap_or(usize::MAX);
        match io.io_type {
            IoType::Read => {
                shoal_bdev::buf::sg_copy_in(&mut io.bufs, 0, disk.get(at..at + len).unwrap_or(&[]));
            }
            IoType::Write => {
                let mut data = vec![0u8; len];
                shoal_bdev::buf::sg_copy_out(&io.bufs, 0, &mut data);
                if let Some(d) = disk.get_mut(at..at + len) {
                    d.copy_from_slice(&data);
                }
            }
            IoType::WriteZeroes | IoType::Unmap => {
                if let Some(d) = disk.get_mut(at..at + len) {
                    d.fill(0);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The bytes of device `name` (zeroes until something was written).
    pub fn disk(&self, name: &str) -> Option<&[u8]> {
        self.disks.get(name).map(Vec::as_slice)
    }

    /// Takes the next PDU the host received.
    pub fn next_pdu(&mut self) -> Option<(PduHeader, Vec<u8>)> {
        self.received.pop_front()
    }
}
