//! An I/O worker: a thread with its own reactor that opens queue pairs of Shoal's NVMe/TCP
//! host and runs rounds of verified I/O on them, all lanes at once at depth [`DEPTH`].
//!
//! A round writes [`DEPTH`] requests (4 KiB, every fourth one 32 KiB, so in-capsule data
//! and R2T transfers both occur) to each lane's own slots, waits for all, reads them all
//! back and compares. A lane is `Verified` (every I/O must succeed and read back) or
//! `Doomed` (its namespace is about to be removed: an I/O may succeed until the removal,
//! must otherwise fail cleanly, and fails with Invalid Namespace or Format in every round
//! that starts after the test has set the worker's `removed` flag).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use shoal_bdev::{BdevError, BdevIo, IoBuf, IoSink, SgList};
use shoal_nvmf::host::{Controller, HostError, IoQueuePair, NamespaceInfo, QueueState, host_error};
use shoal_nvmf::wire::spec::Status;
use shoal_reactor::{Reactor, ReactorConfig};

/// Requests in flight per lane.
pub const DEPTH: u64 = 16;
/// Bytes each slot of a lane owns on its namespace.
pub const SLOT_BYTES: u64 = 32 << 10;
/// Bytes a lane owns: [`DEPTH`] slots.
pub const LANE_BYTES: u64 = DEPTH * SLOT_BYTES;
/// How long any wait of a worker may take.
const WAIT: Duration = Duration::from_secs(30);

/// What a lane expects of its namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Verified,
    Doomed,
}

/// A queue pair to open on the worker's reactor, and the lane it carries.
pub struct LaneSpec {
    pub ctrl: Arc<Controller>,
    pub nsid: u32,
    /// Where the lane's slots start, in bytes.
    pub base: u64,
    pub kind: Kind,
}

enum Cmd {
    Open(LaneSpec),
    Read(Arc<Controller>, u32, u64, usize),
    Rounds(u64),
    Run,
    Kill(Vec<(u16, u16)>),
    Stop,
}

/// What a worker answers.
#[derive(Debug)]
pub enum Reply {
    Opened { cntlid: u16, qid: u16 },
    Done(Report),
    Killed { outstanding: usize, closed: usize },
    Data(Vec<u8>),
}

/// What rounds of I/O found.
#[derive(Debug, Default)]
pub struct Report {
    pub rounds: u64,
    /// Successful I/Os (writes and verified reads).
    pub ios: u64,
    /// The seed of the last completed round: each slot holds `pattern(len, seed, lane, slot)`.
    pub last_seed: u32,
    /// Failures of a verified lane, or unclean failures of a doomed one.
    pub errors: Vec<String>,
    /// Doomed-lane I/Os that succeeded, and that failed with Invalid Namespace or Format.
    pub doomed_ok: u64,
    pub doomed_invalid_ns: u64,
}

struct Lane {
    /// `None` once killed.
    qp: Option<IoQueuePair>,
    qid: u16,
    /// Its controller: dropping the last handle would shut it down.
    _ctrl: Arc<Controller>,
    ns: NamespaceInfo,
    base_blocks: u64,
    kind: Kind,
    cntlid: u16,
    id: u32,
}

type Done = (u64, BdevIo, Result<(), BdevError>);

#[derive(Default)]
struct Collector(RefCell<Vec<Done>>);

impl IoSink for Collector {
    fn io_done(&self, tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        self.0.borrow_mut().push((tag, io, result));
    }
}

/// A worker thread; its progress counts completed rounds.
pub struct Worker {
    tx: Sender<Cmd>,
    rx: Receiver<Reply>,
    join: Option<JoinHandle<()>>,
    pub progress: Arc<AtomicU64>,
}

impl Worker {
    /// Starts a worker; `removed` is the test's "the doomed namespace is gone" flag.
    pub fn start(name: &str, removed: Arc<AtomicBool>) -> Worker {
        let (tx, crx) = channel();
        let (rtx, rx) = channel();
        let progress = Arc::new(AtomicU64::new(0));
        let p = progress.clone();
        let join = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run(&crx, &rtx, &p, &removed))
            .expect("spawn a worker");
        Worker {
            tx,
            rx,
            join: Some(join),
            progress,
        }
    }

    fn send(&self, c: Cmd) {
        // A worker that has gone away says why in `reply`.
        let _ = self.tx.send(c);
    }

    /// The next reply; a worker that panicked passes its panic on.
    pub fn reply(&mut self) -> Reply {
        match self.rx.recv_timeout(2 * WAIT) {
            Ok(r) => r,
            Err(e) => {
                if let Some(Err(p)) = self.join.take().map(JoinHandle::join) {
                    std::panic::resume_unwind(p);
                }
                panic!("worker gave no reply: {e}");
            }
        }
    }

    /// Opens a queue pair for `lane` and waits until it is connected: (cntlid, qid).
    pub fn open(&mut self, lane: LaneSpec) -> (u16, u16) {
        self.send(Cmd::Open(lane));
        match self.reply() {
            Reply::Opened { cntlid, qid } => (cntlid, qid),
            r => panic!("unexpected {r:?}"),
        }
    }

    /// Reads `len` bytes at byte `offset` of namespace `nsid` of `ctrl` on a queue pair of
    /// its own (closed afterwards).
    pub fn read(&mut self, ctrl: &Arc<Controller>, nsid: u32, offset: u64, len: usize) -> Vec<u8> {
        self.send(Cmd::Read(ctrl.clone(), nsid, offset, len));
        match self.reply() {
            Reply::Data(d) => d,
            r => panic!("unexpected {r:?}"),
        }
    }

    /// Runs `n` rounds.
    pub fn rounds(&mut self, n: u64) -> Report {
        self.send(Cmd::Rounds(n));
        match self.reply() {
            Reply::Done(r) => r,
            r => panic!("unexpected {r:?}"),
        }
    }

    /// Runs rounds until [`Worker::stop`].
    pub fn run(&self) {
        self.send(Cmd::Run);
    }

    /// While running: drops the queue pairs of these (cntlid, qid) with their requests in
    /// flight, and carries on with the others: (requests outstanding when dropped, requests
    /// that completed with `Closed`).
    pub fn kill(&mut self, queues: Vec<(u16, u16)>) -> (usize, usize) {
        self.send(Cmd::Kill(queues));
        match self.reply() {
            Reply::Killed {
                outstanding,
                closed,
            } => (outstanding, closed),
            r => panic!("unexpected {r:?}"),
        }
    }

    /// Stops running; the report of every round since [`Worker::run`].
    pub fn stop(&mut self) -> Report {
        self.send(Cmd::Stop);
        match self.reply() {
            Reply::Done(r) => r,
            r => panic!("unexpected {r:?}"),
        }
    }

    /// Waits until `n` more rounds have completed.
    pub fn wait_rounds(&mut self, n: u64) {
        let start = self.progress.load(Ordering::SeqCst);
        let deadline = std::time::Instant::now() + WAIT;
        while self.progress.load(Ordering::SeqCst) < start + n {
            if std::time::Instant::now() > deadline
                || self.join.as_ref().is_some_and(|j| j.is_finished())
            {
                self.send(Cmd::Stop);
                panic!("worker stalled: {:?}", self.reply());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(std::mem::replace(&mut self.tx, channel().0));
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// The data of one slot in one round.
pub fn pattern(len: usize, seed: u32, lane: u32, slot: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut i: u32 = 0;
    while v.len() < len {
        let word = (u64::from(seed) << 48) ^ (u64::from(lane) << 32) ^ (slot << 24) ^ u64::from(i);
        v.extend_from_slice(&word.to_le_bytes());
        i = i.wrapping_add(1);
    }
    v.truncate(len);
    v
}

/// Bytes slot `slot` writes.
pub fn slot_len(slot: u64) -> usize {
    if slot.is_multiple_of(4) {
        SLOT_BYTES as usize
    } else {
        4096
    }
}

fn run(rx: &Receiver<Cmd>, tx: &Sender<Reply>, progress: &AtomicU64, removed: &AtomicBool) {
    let reactor = Reactor::new(0, None, ReactorConfig::default()).expect("a reactor");
    let sink = Rc::new(Collector::default());
    let mut lanes: Vec<Lane> = Vec::new();
    let mut seed = 0u32;
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Cmd::Open(spec) => {
                let qp = IoQueuePair::open(&spec.ctrl).expect("open an I/O queue");
                let ok = reactor.run_until(WAIT, || qp.state() == QueueState::Connected);
                assert!(ok, "I/O queue did not connect: {:?}", qp.state());
                let ns = spec.ctrl.namespace(spec.nsid).expect("the namespace");
                let bs = u64::from(ns.block_size);
                let (cntlid, qid) = (spec.ctrl.cntlid(), qp.qid());
                lanes.push(Lane {
                    qp: Some(qp),
                    qid,
                    _ctrl: spec.ctrl.clone(),
                    ns,
                    base_blocks: spec.base / bs,
                    kind: spec.kind,
                    cntlid,
                    id: lanes.len() as u32,
                });
                let _ = tx.send(Reply::Opened { cntlid, qid });
            }
            Cmd::Read(ctrl, nsid, offset, len) => {
                let qp = IoQueuePair::open(&ctrl).expect("open an I/O queue");
                let ns = ctrl.namespace(nsid).expect("the namespace");
                let bs = u64::from(ns.block_size);
                let buf: SgList = [IoBuf::zeroed(len)].into_iter().collect();
                let io = BdevIo::read(offset / bs, len as u64 / bs, buf);
                qp.submit(&ns, io, sink.clone(), 0);
                let (_, io, r) = collect(&reactor, &sink, 1).pop().expect("a completion");
                r.expect("a direct read");
                let data = io.bufs.iter().flat_map(|b| b.as_slice().iter().copied());
                let _ = tx.send(Reply::Data(data.collect()));
            }
            Cmd::Rounds(n) => {
                let mut rep = Report::default();
                for _ in 0..n {
                    seed += 1;
                    round(&reactor, &sink, &mut lanes, seed, removed, &mut rep, None);
                    progress.fetch_add(1, Ordering::SeqCst);
                }
                let _ = tx.send(Reply::Done(rep));
            }
            Cmd::Run => {
                let mut rep = Report::default();
                loop {
                    let mut kill = None;
                    match rx.try_recv() {
                        Ok(Cmd::Stop) | Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                        Ok(Cmd::Kill(q)) => kill = Some(q),
                        Ok(_) => panic!("only Kill and Stop while running"),
                        Err(_) => {}
                    }
                    seed += 1;
                    if let Some(q) = kill {
                        let k = round(
                            &reactor,
                            &sink,
                            &mut lanes,
                            seed,
                            removed,
                            &mut rep,
                            Some(&q),
                        );
                        lanes.retain(|l| l.qp.is_some());
                        // The killed queues' I/O has completed; their connections go now.
                        let _ = tx.send(k);
                    } else {
                        round(&reactor, &sink, &mut lanes, seed, removed, &mut rep, None);
                    }
                    progress.fetch_add(1, Ordering::SeqCst);
                }
                let _ = tx.send(Reply::Done(rep));
            }
            Cmd::Kill(_) => panic!("Kill only while running"),
            Cmd::Stop => {}
        }
    }
}

/// One round over every lane; with `kill`, the lanes of those queues lose their queue pair
/// right after the writes went out, and the round's reply is [`Reply::Killed`].
fn round(
    reactor: &Reactor,
    sink: &Rc<Collector>,
    lanes: &mut [Lane],
    seed: u32,
    removed: &AtomicBool,
    rep: &mut Report,
    kill: Option<&[(u16, u16)]>,
) -> Reply {
    let gone = removed.load(Ordering::SeqCst);
    let killed = |l: &Lane| kill.is_some_and(|k| k.contains(&(l.cntlid, l.qid)));
    let sink_dyn: Rc<dyn IoSink> = sink.clone();
    let mut n = 0;
    for (li, l) in lanes.iter().enumerate() {
        let qp = l.qp.as_ref().expect("a live lane");
        let bs = u64::from(l.ns.block_size);
        for s in 0..DEPTH {
            let len = slot_len(s);
            let buf: SgList = [IoBuf::copy_from(&pattern(len, seed, l.id, s))]
                .into_iter()
                .collect();
            let off = l.base_blocks + s * SLOT_BYTES / bs;
            let io = BdevIo::write(off, len as u64 / bs, buf);
            qp.submit(&l.ns, io, sink_dyn.clone(), ((li as u64) << 32) | s);
            n += 1;
        }
    }
    let mut reply = Reply::Killed {
        outstanding: 0,
        closed: 0,
    };
    let mut closed_tags = Vec::new();
    if kill.is_some() {
        // Let the writes reach the wire, then drop the killed lanes' connections under them.
        reactor.run_until(Duration::from_micros(200), || false);
        let mut outstanding = 0;
        for l in lanes.iter_mut().filter(|l| killed(l)) {
            // Dropping the queue pair closes its connection with the writes in flight.
            let qp = l.qp.take().expect("a live lane");
            outstanding += qp.outstanding();
        }
        reply = Reply::Killed {
            outstanding,
            closed: 0,
        };
    }
    let writes = collect(reactor, sink, n);
    let mut wrote = vec![vec![false; DEPTH as usize]; lanes.len()];
    for (tag, _io, r) in writes {
        let (li, s) = ((tag >> 32) as usize, tag & 0xffff_ffff);
        let l = &lanes[li];
        if killed(l) {
            match r {
                Ok(()) => {}
                Err(BdevError::Closed) => closed_tags.push(tag),
                Err(e) => rep.errors.push(format!("killed lane {li} write: {e}")),
            }
            continue;
        }
        wrote[li][s as usize] = check(l, "write", r, gone, rep);
    }
    if let Reply::Killed { outstanding, .. } = reply {
        reply = Reply::Killed {
            outstanding,
            closed: closed_tags.len(),
        };
    }
    let mut n = 0;
    for (li, l) in lanes.iter().enumerate() {
        let Some(qp) = l.qp.as_ref() else { continue };
        let bs = u64::from(l.ns.block_size);
        for s in 0..DEPTH {
            if !wrote[li][s as usize] && l.kind == Kind::Verified {
                continue;
            }
            let len = slot_len(s);
            let buf: SgList = [IoBuf::zeroed(len)].into_iter().collect();
            let off = l.base_blocks + s * SLOT_BYTES / bs;
            let io = BdevIo::read(off, len as u64 / bs, buf);
            qp.submit(&l.ns, io, sink_dyn.clone(), ((li as u64) << 32) | s);
            n += 1;
        }
    }
    for (tag, io, r) in collect(reactor, sink, n) {
        let (li, s) = ((tag >> 32) as usize, tag & 0xffff_ffff);
        let l = &lanes[li];
        if check(l, "read", r, gone, rep) && wrote[li][s as usize] {
            let got: Vec<u8> = io
                .bufs
                .iter()
                .flat_map(|b| b.as_slice().iter().copied())
                .collect();
            if got != pattern(slot_len(s), seed, l.id, s) {
                rep.errors
                    .push(format!("lane {li} slot {s} round {seed}: data differs"));
            }
        }
    }
    rep.rounds += 1;
    rep.last_seed = seed;
    reply
}

/// Runs the reactor until `n` completions arrived; takes them.
fn collect(reactor: &Reactor, sink: &Collector, n: usize) -> Vec<Done> {
    let ok = reactor.run_until(WAIT, || sink.0.borrow().len() >= n);
    assert!(
        ok,
        "{} of {n} I/Os completed in {WAIT:?}: a hang",
        sink.0.borrow().len()
    );
    std::mem::take(&mut *sink.0.borrow_mut())
}

/// Judges one result; whether the I/O succeeded.
fn check(l: &Lane, what: &str, r: Result<(), BdevError>, gone: bool, rep: &mut Report) -> bool {
    match (l.kind, r) {
        (Kind::Verified, Ok(())) => {
            rep.ios += 1;
            true
        }
        (Kind::Verified, Err(e)) => {
            rep.errors.push(format!("lane {} {what}: {e}", l.id));
            false
        }
        (Kind::Doomed, Ok(())) if !gone => {
            rep.doomed_ok += 1;
            true
        }
        (Kind::Doomed, Ok(())) => {
            rep.errors
                .push(format!("lane {} {what} succeeded after the removal", l.id));
            true
        }
        // A command that found the namespace before its removal and was still at the device
        // when the device was deleted: Namespace Not Ready (the host's `Closed`), also clean.
        (Kind::Doomed, Err(BdevError::Closed)) if !gone => false,
        (Kind::Doomed, Err(e)) => {
            // NVMe Base 2.0 section 3.3.1 / Figure 101: a command to an inactive NSID
            // completes with Invalid Namespace or Format.
            match host_error(&e) {
                Some(HostError::Status { status })
                    if status.sct == Status::INVALID_NAMESPACE.sct
                        && status.sc == Status::INVALID_NAMESPACE.sc =>
                {
                    rep.doomed_invalid_ns += 1;
                }
                _ => rep
                    .errors
                    .push(format!("lane {} {what}: unclean failure {e}", l.id)),
            }
            false
        }
    }
}
