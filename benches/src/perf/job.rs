//! The closed loop of one job: `-q` I/Os kept in flight against one target (a bdev channel or
//! a namespace through its queue pairs). Every completion records its latency and submits the
//! next I/O under the same tag, with the same `BdevIo` and buffer: nothing is allocated per
//! I/O.
//!
//! With `-V` each I/O claims its slot in the namespace's [`VerifyMap`] while in flight (on
//! any core, no two I/Os touch the same blocks at once); writes carry headers, reads are
//! checked.

use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use shoal_bdev::{BdevError, BdevIo, IoBuf, IoSink, IoType, SgList};

use super::stats::{JobResult, JobStats, MAX_EXAMPLES, VerifyStats};
use super::verify::VerifyMap;

/// Where a job's I/Os go.
pub trait IoTarget {
    /// Submits `io`; `sink.io_done(tag, ..)` follows on a later reactor pass.
    fn submit(&self, io: BdevIo, sink: Rc<dyn IoSink>, tag: u64);
    /// Whether it can take I/O now (`Err`: it never will).
    fn ready(&self) -> Result<bool, String>;
}

/// Counters a job publishes for the progress line (read from the main thread).
#[derive(Debug, Default)]
pub struct Progress {
    /// I/Os completed in the window.
    pub ios: AtomicU64,
    /// Bytes they moved.
    pub bytes: AtomicU64,
}

/// What a job does.
#[derive(Clone)]
pub struct JobConfig {
    /// Its line in the report.
    pub label: String,
    /// The core it runs on.
    pub core: usize,
    /// Namespace ID (NVMe/TCP).
    pub nsid: Option<u32>,
    /// Block size of the target.
    pub block_size: u32,
    /// Blocks per I/O; I/Os are aligned to it.
    pub blocks_per_io: u64,
    /// I/O-sized slots of the target.
    pub slots: u64,
    /// I/Os in flight.
    pub queue_depth: u32,
    /// Percentage of reads.
    pub read_percent: u8,
    /// Random offsets (else sequential).
    pub random: bool,
    /// Seed of the offset generator.
    pub seed: u64,
    /// The namespace's write history (`-V`).
    pub verify: Option<Arc<VerifyMap>>,
    /// Published counters.
    pub progress: Arc<Progress>,
}

struct State {
    rng: u64,
    cursor: u64,
    stats: JobStats,
    verify: VerifyStats,
    first_error: Option<String>,
    stopping: bool,
    in_flight: u32,
    started_at: Option<Instant>,
    stopped_at: Option<Instant>,
}

impl State {
    /// xorshift64*: fast, and uniform enough for picking offsets.
    #[inline]
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[derive(Clone, Copy)]
struct Slot {
    started: Instant,
    slot: u64,
}

/// One closed loop. Runs on one reactor.
pub struct Job {
    me: Weak<Job>,
    cfg: JobConfig,
    target: Box<dyn IoTarget>,
    io_bytes: u64,
    st: RefCell<State>,
    tags: RefCell<Vec<Slot>>,
    on_drained: Box<dyn Fn()>,
}

impl Job {
    /// A job on `target`; `on_drained` runs (on a later pass) once it stopped and its last I/O
    /// came back.
    pub fn new(cfg: JobConfig, target: Box<dyn IoTarget>, on_drained: Box<dyn Fn()>) -> Rc<Job> {
        let now = Instant::now();
        let depth = usize::try_from(cfg.queue_depth).unwrap_or(0);
        let io_bytes = cfg.blocks_per_io * u64::from(cfg.block_size);
        Rc::new_cyclic(|me| Job {
            me: me.clone(),
            st: RefCell::new(State {
                rng: cfg.seed | 1,
                cursor: 0,
                stats: JobStats::default(),
                verify: VerifyStats::default(),
                first_error: None,
                stopping: false,
                in_flight: 0,
                started_at: None,
                stopped_at: None,
            }),
            tags: RefCell::new(vec![
                Slot {
                    started: now,
                    slot: 0
                };
                depth
            ]),
            io_bytes,
            cfg,
            target,
            on_drained,
        })
    }

    /// Whether its target can take I/O.
    pub fn ready(&self) -> Result<bool, String> {
        self.target.ready()
    }

    /// Starts the loop: submits `-q` I/Os.
    pub fn start(&self) -> Result<(), String> {
        let len = usize::try_from(self.io_bytes).map_err(|e| e.to_string())?;
        let now = Instant::now();
        self.st.borrow_mut().started_at = Some(now);
        for tag in 0..u64::from(self.cfg.queue_depth) {
            let mut bufs = SgList::new();
            bufs.push(IoBuf::zeroed(len));
            self.issue(BdevIo::read(0, self.cfg.blocks_per_io, bufs), tag, now);
        }
        Ok(())
    }

    /// Ends the measured window; I/Os in flight drain without being counted.
    pub fn stop(&self) {
        let drained = {
            let mut st = self.st.borrow_mut();
            st.stopping = true;
            st.stopped_at = Some(Instant::now());
            st.in_flight == 0
        };
        if drained {
            (self.on_drained)();
        }
    }

    /// What it measured (once drained).
    pub fn result(&self) -> JobResult {
        let st = self.st.borrow();
        let elapsed = match (st.started_at, st.stopped_at) {
            (Some(a), Some(b)) => b - a,
            _ => std::time::Duration::ZERO,
        };
        JobResult {
            label: self.cfg.label.clone(),
            core: self.cfg.core,
            nsid: self.cfg.nsid,
            stats: st.stats.clone(),
            elapsed,
            verify: st.verify.clone(),
            first_error: st.first_error.clone(),
        }
    }

    /// The type and slot of the next I/O (claimed, with `-V`).
    fn next(&self, st: &mut State) -> (IoType, u64) {
        let slots = self.cfg.slots;
        let io_type = match self.cfg.read_percent {
            100 => IoType::Read,
            0 => IoType::Write,
            p if st.random() % 100 < u64::from(p) => IoType::Read,
            _ => IoType::Write,
        };
        let slot = if self.cfg.random {
            st.random() % slots
        } else {
            let s = st.cursor;
            st.cursor = (s + 1) % slots;
            s
        };
        let Some(map) = &self.cfg.verify else {
            return (io_type, slot);
        };
        if map.try_claim(slot) {
            return (io_type, slot);
        }
        if self.cfg.random {
            for _ in 0..8 {
                let s = st.random() % slots;
                if map.try_claim(s) {
                    return (io_type, s);
                }
            }
        }
        let s = map.claim_from(slot);
        if !self.cfg.random {
            st.cursor = (s + 1) % slots;
        }
        (io_type, s)
    }

    fn issue(&self, mut io: BdevIo, tag: u64, now: Instant) {
        let Some(me) = self.me.upgrade() else { return };
        let (io_type, slot) = self.next(&mut self.st.borrow_mut());
        io.io_type = io_type;
        io.offset_blocks = slot * self.cfg.blocks_per_io;
        io.num_blocks = self.cfg.blocks_per_io;
        if let (Some(map), Some(buf)) = (&self.cfg.verify, io.bufs.first_mut()) {
            if io_type == IoType::Write {
                map.fill_write(slot, buf.as_mut_slice());
            } else {
                VerifyMap::poison(buf.as_mut_slice());
            }
        }
        let idx = usize::try_from(tag).unwrap_or(usize::MAX);
        if let Some(t) = self.tags.borrow_mut().get_mut(idx) {
            *t = Slot { started: now, slot };
        }
        self.st.borrow_mut().in_flight += 1;
        self.target.submit(io, me, tag);
    }

    /// Checks a read or records a write, and releases the slot (`-V`).
    fn verify_done(&self, st: &mut State, io: &BdevIo, slot: u64, ok: bool) {
        let Some(map) = &self.cfg.verify else { return };
        match io.io_type {
            IoType::Write => {
                map.write_done(slot, ok);
                st.verify.writes += 1;
            }
            _ if ok => {
                st.verify.reads_checked += 1;
                let data = io.bufs.first().map_or(&[][..], |b| b.as_slice());
                if let Err(bad) = map.check_read(slot, data) {
                    st.verify.mismatches += 1;
                    if st.verify.examples.len() < MAX_EXAMPLES {
                        st.verify.examples.push(bad.to_string());
                    }
                }
            }
            _ => {}
        }
        map.release(slot);
    }
}

impl IoSink for Job {
    fn io_done(&self, tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        let now = Instant::now();
        let Slot { started, slot } = usize::try_from(tag)
            .ok()
            .and_then(|i| self.tags.borrow().get(i).copied())
            .unwrap_or(Slot {
                started: now,
                slot: 0,
            });
        {
            let mut st = self.st.borrow_mut();
            st.in_flight -= 1;
            self.verify_done(&mut st, &io, slot, result.is_ok());
            if let Err(e) = &result {
                st.stats.errors += 1;
                if st.first_error.is_none() {
                    st.first_error = Some(format!(
                        "{:?} at block {}: {e}",
                        io.io_type, io.offset_blocks
                    ));
                }
            }
            if st.stopping {
                let drained = st.in_flight == 0;
                drop(st);
                if drained {
                    (self.on_drained)();
                }
                return;
            }
            if result.is_ok() {
                st.stats.record(self.io_bytes, now - started);
                let p = &self.cfg.progress;
                p.ios.store(st.stats.ios, Ordering::Relaxed);
                p.bytes.store(st.stats.bytes, Ordering::Relaxed);
            }
        }
        self.issue(io, tag, now);
    }
}
