//! Helpers for the nexus tests: a reactor on the test thread, RAM children, a nexus channel,
//! a closed-loop writer with a shadow copy of what it wrote, and checksums of children.
#![allow(dead_code, missing_docs)]

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::{Bdev, BdevError, BdevIo, IoBuf, IoChannel, IoSink, SgList, open_channel};
use shoal_reactor::{Reactor, ReactorConfig};
use shoal_replication::{ChildSpec, ChildState, ChildUri, META_BYTES, Nexus, NexusOptions};

/// Longest wait of any step.
pub const WAIT: Duration = Duration::from_secs(30);
pub const BS: u32 = 512;

/// Blocks of metadata at the start of each child.
pub fn meta(bs: u32) -> u64 {
    META_BYTES / u64::from(bs)
}

/// A reactor on this thread.
pub fn reactor() -> Reactor {
    Reactor::new(0, None, ReactorConfig::default()).expect("reactor")
}

/// A RAM child holding `data_blocks` blocks of nexus data (plus the metadata region).
pub fn ram(name: &str, data_blocks: u64) -> Arc<dyn Bdev> {
    ram_bs(name, data_blocks, BS)
}

pub fn ram_bs(name: &str, data_blocks: u64, bs: u32) -> Arc<dyn Bdev> {
    MallocBdev::create(name, None, data_blocks + meta(bs), bs).expect("malloc")
}

pub fn uri(b: &Arc<dyn Bdev>) -> ChildUri {
    ChildUri::Local {
        name: b.info().name.clone(),
    }
}

/// Options for a nexus of `blocks` blocks with a short I/O timeout for tests.
pub fn opts(name: &str, blocks: u64) -> NexusOptions {
    NexusOptions::new(name, blocks * u64::from(BS))
}

/// Creates a nexus over local children and waits for it.
pub fn create(r: &Reactor, o: NexusOptions, children: &[Arc<dyn Bdev>]) -> Arc<Nexus> {
    let specs = children.iter().cloned().map(ChildSpec::local).collect();
    Nexus::create(o, specs, &r.handle())
        .wait(WAIT)
        .expect("reactor")
        .expect("create the nexus")
}

/// Runs the reactor until `cond` holds.
#[track_caller]
pub fn until(r: &Reactor, what: &str, mut cond: impl FnMut() -> bool) {
    assert!(r.run_until(WAIT, &mut cond), "timed out waiting for {what}");
}

/// Waits until `uri` is online.
#[track_caller]
pub fn until_online(r: &Reactor, nx: &Nexus, u: &ChildUri) {
    until(r, &format!("{u} online"), || {
        nx.child_status(u)
            .is_some_and(|c| c.state == ChildState::Online)
    });
}

/// A recognisable pattern.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut i: u64 = 0;
    while v.len() < len {
        let w = seed.rotate_left(32) ^ i;
        v.extend_from_slice(&w.to_le_bytes());
        i += 8;
    }
    v.truncate(len);
    v
}

pub fn sg(data: &[u8]) -> SgList {
    let mut s = SgList::new();
    s.push(IoBuf::copy_from(data));
    s
}

pub fn flatten(bufs: &[IoBuf]) -> Vec<u8> {
    // Slice by slice: byte by byte is slow in a debug build.
    let mut out = Vec::with_capacity(bufs.iter().map(IoBuf::len).sum());
    for b in bufs {
        out.extend_from_slice(b.as_slice());
    }
    out
}

/// A completion: tag, I/O, result.
pub type Done = (u64, BdevIo, Result<(), BdevError>);

#[derive(Default)]
pub struct Collector {
    pub done: RefCell<Vec<Done>>,
}

impl IoSink for Collector {
    fn io_done(&self, tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        self.done.borrow_mut().push((tag, io, result));
    }
}

/// A channel to a bdev on the test reactor, with blocking helpers.
pub struct Io {
    pub r: Reactor,
    pub chan: IoChannel,
    pub sink: Rc<Collector>,
    pub bs: usize,
}

impl Io {
    pub fn new(r: &Reactor, b: &Arc<dyn Bdev>) -> Io {
        Io {
            r: r.clone(),
            chan: open_channel(b).expect("open channel"),
            sink: Rc::new(Collector::default()),
            bs: usize::try_from(b.info().block_size).unwrap(),
        }
    }

    pub fn run(&self, io: BdevIo) -> (BdevIo, Result<(), BdevError>) {
        self.chan.submit(io, self.sink.clone(), 0);
        until(&self.r, "an I/O", || !self.sink.done.borrow().is_empty());
        let (_, io, r) = self.sink.done.borrow_mut().remove(0);
        (io, r)
    }

    pub fn write(&self, off: u64, data: &[u8]) -> Result<(), BdevError> {
        let blocks = (data.len() / self.bs) as u64;
        self.run(BdevIo::write(off, blocks, sg(data))).1
    }

    pub fn read(&self, off: u64, blocks: u64) -> Result<Vec<u8>, BdevError> {
        let len = usize::try_from(blocks).unwrap() * self.bs;
        let mut b = SgList::new();
        b.push(IoBuf::zeroed(len));
        let (io, r) = self.run(BdevIo::read(off, blocks, b));
        r.map(|()| flatten(&io.bufs))
    }
}

/// CRC-32C of `blocks` blocks at `offset` of `b` (read in 1 MiB pieces).
pub fn checksum(r: &Reactor, b: &Arc<dyn Bdev>, offset: u64, blocks: u64) -> u32 {
    let io = Io::new(r, b);
    let step = (1u64 << 20) / u64::from(b.info().block_size);
    let mut crc = 0u32;
    let mut at = offset;
    while at < offset + blocks {
        let n = step.min(offset + blocks - at);
        let data = io.read(at, n).expect("read for checksum");
        crc = crc32c::crc32c_append(crc, &data);
        at += n;
    }
    crc
}

/// Checksum of the nexus data region of a child.
pub fn child_sum(r: &Reactor, child: &Arc<dyn Bdev>, nexus_blocks: u64) -> u32 {
    checksum(r, child, meta(child.info().block_size), nexus_blocks)
}

/// A closed-loop writer: `depth` writes of `io_blocks` blocks in flight at random offsets.
/// Writer slot `k` only writes I/O-sized units whose index is `k` modulo `depth`, so writes in
/// flight never overlap and `shadow` (unit -> seed) says what each unit must hold.
pub struct Loader {
    me: RefCell<Weak<Loader>>,
    chan: IoChannel,
    depth: u64,
    io_blocks: u64,
    units: u64,
    bs: usize,
    rng: Cell<u64>,
    seq: Cell<u64>,
    pub stop: Cell<bool>,
    pub in_flight: Cell<u64>,
    pub done: Cell<u64>,
    pub errors: Cell<u64>,
    pending: RefCell<HashMap<u64, (u64, u64)>>,
    pub shadow: RefCell<HashMap<u64, u64>>,
}

impl Loader {
    /// Starts writing to `b` (blocks `0..blocks`).
    pub fn start(
        b: &Arc<dyn Bdev>,
        blocks: u64,
        io_blocks: u64,
        depth: u64,
        seed: u64,
    ) -> Rc<Loader> {
        let l = Rc::new(Loader {
            me: RefCell::new(Weak::new()),
            chan: open_channel(b).expect("open channel"),
            depth,
            io_blocks,
            units: blocks / io_blocks,
            bs: usize::try_from(b.info().block_size).unwrap(),
            rng: Cell::new(seed | 1),
            seq: Cell::new(seed << 20),
            stop: Cell::new(false),
            in_flight: Cell::new(0),
            done: Cell::new(0),
            errors: Cell::new(0),
            pending: RefCell::default(),
            shadow: RefCell::default(),
        });
        *l.me.borrow_mut() = Rc::downgrade(&l);
        for k in 0..depth {
            l.issue(k);
        }
        l
    }

    fn rand(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        x
    }

    fn issue(&self, k: u64) {
        let Some(me) = self.me.borrow().upgrade() else {
            return;
        };
        let per_slot = (self.units / self.depth).max(1);
        let unit = (self.rand() % per_slot) * self.depth + k;
        if unit >= self.units {
            return self.issue(k);
        }
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        let len = usize::try_from(self.io_blocks).unwrap() * self.bs;
        let io = BdevIo::write(
            unit * self.io_blocks,
            self.io_blocks,
            sg(&pattern(len, seq)),
        );
        self.pending.borrow_mut().insert(k, (unit, seq));
        self.in_flight.set(self.in_flight.get() + 1);
        self.chan.submit(io, me, k);
    }

    /// Issues a write from slot `k` again (after [`Loader::finish`]).
    pub fn restart(&self, k: u64) {
        self.issue(k);
    }

    /// Asks it to stop and waits for the writes in flight.
    pub fn finish(&self, r: &Reactor) {
        self.stop.set(true);
        until(r, "the loader to drain", || self.in_flight.get() == 0);
    }

    /// Checks the shadow against what `b` reads back.
    pub fn verify(&self, r: &Reactor, b: &Arc<dyn Bdev>) {
        let io = Io::new(r, b);
        let len = usize::try_from(self.io_blocks).unwrap() * self.bs;
        for (&unit, &seq) in self.shadow.borrow().iter() {
            let got = io
                .read(unit * self.io_blocks, self.io_blocks)
                .expect("read back");
            assert!(
                got == pattern(len, seq),
                "unit {unit} does not hold write {seq}"
            );
        }
    }
}

impl IoSink for Loader {
    fn io_done(&self, tag: u64, _io: BdevIo, result: Result<(), BdevError>) {
        self.in_flight.set(self.in_flight.get() - 1);
        self.done.set(self.done.get() + 1);
        let p = self.pending.borrow_mut().remove(&tag);
        match result {
            Ok(()) => {
                if let Some((unit, seq)) = p {
                    self.shadow.borrow_mut().insert(unit, seq);
                }
            }
            Err(e) => {
                self.errors.set(self.errors.get() + 1);
                eprintln!("loader: write failed: {e}");
            }
        }
        if !self.stop.get() {
            self.issue(tag);
        }
    }
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A device that, while stalled, holds writes even after its channel is gone (like a remote
/// target that went silent), until [`Stall::release`] is called on the same thread.
pub struct Stall {
    info: shoal_bdev::BdevInfo,
    base: Arc<dyn Bdev>,
    pub stalled: std::sync::atomic::AtomicBool,
}

type Held = (BdevIo, Rc<dyn IoSink>, u64, Rc<IoChannel>);

thread_local! {
    static HELD: RefCell<Vec<Held>> = const { RefCell::new(Vec::new()) };
}

impl Stall {
    pub fn create(name: &str, base: Arc<dyn Bdev>) -> Arc<Stall> {
        let b = base.info();
        let info = shoal_bdev::BdevInfo::new(name, None, b.block_size, b.num_blocks(), "stall");
        Arc::new(Stall {
            info,
            base,
            stalled: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// I/Os held on this thread.
    pub fn held() -> usize {
        HELD.with(|h| h.borrow().len())
    }

    /// Fails the held I/Os (like a target that answers with an error once it wakes up).
    pub fn fail_held() -> usize {
        let held: Vec<Held> = HELD.with(|h| h.borrow_mut().drain(..).collect());
        let n = held.len();
        for (io, sink, tag, _) in held {
            sink.io_done(tag, io, Err(BdevError::Closed));
        }
        n
    }

    /// Sends the held I/Os on to the base device.
    pub fn release() {
        let held: Vec<Held> = HELD.with(|h| h.borrow_mut().drain(..).collect());
        for (io, sink, tag, chan) in held {
            chan.submit(io, sink, tag);
        }
    }
}

struct StallChannel {
    dev: Arc<Stall>,
    base: Rc<IoChannel>,
}

impl shoal_bdev::BdevChannel for StallChannel {
    fn submit(&self, io: BdevIo, sink: Rc<dyn IoSink>, tag: u64) {
        if self.dev.stalled.load(std::sync::atomic::Ordering::Acquire) {
            HELD.with(|h| h.borrow_mut().push((io, sink, tag, self.base.clone())));
        } else {
            self.base.submit(io, sink, tag);
        }
    }
}

impl Bdev for Stall {
    fn info(&self) -> &shoal_bdev::BdevInfo {
        &self.info
    }

    fn supports(&self, t: shoal_bdev::IoType) -> bool {
        self.base.supports(t)
    }

    fn supports_flags(&self, t: shoal_bdev::IoType, f: shoal_bdev::IoFlags) -> bool {
        self.base.supports_flags(t, f)
    }

    fn create_channel(
        self: Arc<Self>,
        _reactor: &Reactor,
    ) -> Result<Box<dyn shoal_bdev::BdevChannel>, BdevError> {
        let base = Rc::new(open_channel(&self.base)?);
        Ok(Box::new(StallChannel { dev: self, base }))
    }
}

/// A device whose writes reach its base only `delay` after submission (reads go at once):
/// like a disk, a write's data lands late, so a write in flight is not yet visible to reads.
pub struct LateWrite {
    info: shoal_bdev::BdevInfo,
    base: Arc<dyn Bdev>,
    delay: Duration,
}

impl LateWrite {
    pub fn create(name: &str, base: Arc<dyn Bdev>, delay: Duration) -> Arc<LateWrite> {
        let b = base.info();
        let info = shoal_bdev::BdevInfo::new(name, None, b.block_size, b.num_blocks(), "late");
        Arc::new(LateWrite { info, base, delay })
    }
}

struct LateChannel {
    delay: Duration,
    reactor: Reactor,
    base: Rc<IoChannel>,
}

impl shoal_bdev::BdevChannel for LateChannel {
    fn submit(&self, io: BdevIo, sink: Rc<dyn IoSink>, tag: u64) {
        if io.io_type == shoal_bdev::IoType::Read {
            return self.base.submit(io, sink, tag);
        }
        let base = self.base.clone();
        self.reactor
            .call_after(self.delay, move || base.submit(io, sink, tag));
    }
}

impl Bdev for LateWrite {
    fn info(&self) -> &shoal_bdev::BdevInfo {
        &self.info
    }

    fn supports(&self, t: shoal_bdev::IoType) -> bool {
        self.base.supports(t)
    }

    fn supports_flags(&self, t: shoal_bdev::IoType, f: shoal_bdev::IoFlags) -> bool {
        self.base.supports_flags(t, f)
    }

    fn create_channel(
        self: Arc<Self>,
        reactor: &Reactor,
    ) -> Result<Box<dyn shoal_bdev::BdevChannel>, BdevError> {
        let base = Rc::new(open_channel(&self.base)?);
        Ok(Box::new(LateChannel {
            delay: self.delay,
            reactor: reactor.clone(),
            base,
        }))
    }
}
