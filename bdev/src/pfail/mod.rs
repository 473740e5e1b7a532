//! `pfail`: a device with a volatile write cache over a base device, and a power cut on
//! demand (product name `pfail`): the tool every crash test uses.
//!
//! It behaves like a disk whose write cache loses its contents when the power goes:
//! - a write (or write zeroes, or deallocate) completes as soon as it is in the cache; the base
//!   does not see it yet. Reads see it (the cache is overlaid on what the base returns);
//! - a **Flush** writes every block that was in the cache when it was submitted to the base,
//!   flushes the base, and only then completes: those writes are durable;
//! - a write or write zeroes with **Force Unit Access** goes to the base at once (with FUA) and
//!   completes when the base has it durably; a FUA read commits the cache first (a flush);
//! - a **power cut** ([`PfailBdev::cut`]) fails every further I/O as a dead disk does, lets the
//!   base operations already started end (a disk finishes the sector it is writing), then
//!   writes to the base what the cache could have written back before the power went: nothing
//!   ([`Keep::None`]), every block's newest data ([`Keep::All`]), or for each cached block, a
//!   seeded random choice among "none" and each version the block went through since it was last
//!   written to the base ([`Keep::Random`]): cached writes may reach the media in any order and
//!   torn at block boundaries, as a real disk's cache does. A version older than what was
//!   already sent to the base is never chosen: a disk does not write old data over new.
//!
//! Afterwards the base holds exactly what a disk would hold when the power came back.
//!
//! This is a test device: its state sits behind one mutex taken by every I/O on every
//! reactor, and every cached block is a separate allocation. A base write of a block waits
//! (parked) while another one of that block is in flight, and a flush's write-back of a
//! version is dropped when that version or a newer one reached the base meanwhile, so the
//! base never gets old data over new. A cut waits for every job, waiting ones included; jobs
//! still waiting send nothing more. Unmap is modelled as writing zeroes. Nothing here is on a
//! production I/O path.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::buf::{IoBuf, SgList, sg_copy_in, sg_copy_out};

mod job;

use crate::reactor::Reactor;
use crate::{
    Bdev, BdevChannel, BdevError, BdevInfo, BdevIo, IoChannel, IoFlags, IoSink, IoType,
    open_channel,
};
use job::{Job, Run};

/// SPDK-style product name.
pub const PRODUCT_NAME: &str = "pfail";
/// How often a base write waiting for an earlier one to the same block retries.
const PARK: Duration = Duration::from_micros(50);
/// How long a cut waits for the base operations already started.
const SETTLE: Duration = Duration::from_secs(30);

/// What a power cut keeps of the writes that were not yet durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Nothing: the base keeps its durable contents.
    None,
    /// Every cached block's newest data.
    All,
    /// A seeded random choice per block (see the module documentation).
    Random(u64),
}

/// What a power cut did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Blocks that had writes not yet durable.
    pub dirty_blocks: u64,
    /// Of those, blocks written to the base by the cut.
    pub kept_blocks: u64,
}

/// Counters and state for `bdev_get_bdevs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PfailStatus {
    /// Blocks in the cache (not yet durable).
    pub cached_blocks: u64,
    /// Whether the power was cut.
    pub cut: bool,
    /// The report of the cut, once cut.
    pub report: Option<CutReport>,
}

/// Blocks and their data, for a cut to write back.
type Blocks = Vec<(u64, Arc<[u8]>)>;

/// One version of a cached block.
struct Version {
    seq: u64,
    data: Arc<[u8]>,
}

#[derive(Default)]
struct Cache {
    /// Blocks with writes not yet durable: every version since the block last went to the
    /// base, oldest first.
    dirty: BTreeMap<u64, Vec<Version>>,
    /// The newest sequence number sent to the base per block: older versions can no longer
    /// reach the media.
    media_seq: HashMap<u64, u64>,
    /// Blocks with a base write in flight.
    busy: HashMap<u64, u32>,
    /// Base writes and flushes in flight.
    inflight: u64,
    /// Base-write jobs not finished (waiting ones included).
    jobs: u64,
    next_seq: u64,
    cut: bool,
    report: Option<CutReport>,
}

impl Cache {
    fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn media_seq(&self, block: u64) -> u64 {
        self.media_seq.get(&block).copied().unwrap_or(0)
    }

    /// Drops versions of `block` at or below `seq` (the base now has `seq` or newer).
    fn settle(&mut self, block: u64, seq: u64) {
        if let Some(v) = self.dirty.get_mut(&block) {
            v.retain(|x| x.seq > seq);
            if v.is_empty() {
                self.dirty.remove(&block);
            }
        }
    }
}

/// A device with a volatile write cache over `base`, and a power cut on demand.
pub struct PfailBdev {
    info: BdevInfo,
    base: Arc<dyn Bdev>,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for PfailBdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PfailBdev")
            .field("info", &self.info)
            .field("base", &self.base.info().name)
            .finish()
    }
}

fn power_cut() -> BdevError {
    BdevError::Os(std::io::Error::other(
        "the device lost its power (bdev_pfail_cut)",
    ))
}

/// A small seeded generator (splitmix64): the same seed gives the same cut.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl PfailBdev {
    /// A pfail device named `name` over `base`, with the base's geometry.
    pub fn create(name: &str, base: Arc<dyn Bdev>) -> Result<Arc<PfailBdev>, BdevError> {
        if name.is_empty() {
            return Err(BdevError::Invalid("a bdev name must not be empty".into()));
        }
        if !base.supports_flags(IoType::Write, IoFlags::FUA) {
            return Err(BdevError::Invalid(format!(
                "base bdev {} does not honour Force Unit Access",
                base.info().name
            )));
        }
        let b = base.info();
        let info = BdevInfo::new(name, None, b.block_size, b.num_blocks(), PRODUCT_NAME);
        Ok(Arc::new(PfailBdev {
            info,
            base,
            cache: Mutex::new(Cache::default()),
        }))
    }

    /// The base device.
    pub fn base(&self) -> &Arc<dyn Bdev> {
        &self.base
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bs(&self) -> usize {
        usize::try_from(self.info.block_size).unwrap_or(4096)
    }

    /// What `bdev_get_bdevs` shows.
    pub fn status(&self) -> PfailStatus {
        let c = self.lock();
        PfailStatus {
            cached_blocks: c.dirty.len() as u64,
            cut: c.cut,
            report: c.report,
        }
    }

    /// Whether the power was cut.
    pub fn is_cut(&self) -> bool {
        self.lock().cut
    }

    /// Cuts the power, on the current reactor: from now on every I/O fails; once the base
    /// operations already started have ended, the blocks `keep` chooses are written to the
    /// base and the base is flushed; then `done` hears what was kept. Must run on a reactor.
    ///
    /// # Errors
    /// `done` gets [`BdevError::Invalid`] if the power was already cut, or the base's error.
    pub fn cut(self: &Arc<Self>, keep: Keep, done: Box<dyn FnOnce(Result<CutReport, BdevError>)>) {
        let Some(reactor) = Reactor::current() else {
            return done(Err(BdevError::NoReactor));
        };
        {
            let mut c = self.lock();
            if c.cut {
                drop(c);
                return done(Err(BdevError::Invalid(format!(
                    "bdev {} has already lost its power",
                    self.info.name
                ))));
            }
            c.cut = true;
        }
        let dev = self.clone();
        let deadline = Instant::now() + SETTLE;
        wait_settled(reactor, dev, keep, deadline, done);
    }

    /// Takes the blocks a cut keeps, and empties the cache.
    fn take_kept(&self, keep: Keep) -> (CutReport, Blocks) {
        let mut c = self.lock();
        let dirty = std::mem::take(&mut c.dirty);
        let mut rng = match keep {
            Keep::Random(seed) => seed,
            _ => 0,
        };
        let mut kept = Vec::new();
        for (block, versions) in &dirty {
            let floor = c.media_seq(*block);
            let cands: Vec<&Version> = versions.iter().filter(|v| v.seq > floor).collect();
            let pick = match keep {
                Keep::None => None,
                Keep::All => cands.last(),
                Keep::Random(_) => {
                    let n = cands.len() as u64 + 1;
                    let k = splitmix(&mut rng) % n;
                    k.checked_sub(1)
                        .and_then(|i| usize::try_from(i).ok())
                        .and_then(|i| cands.get(i))
                }
            };
            if let Some(v) = pick {
                kept.push((*block, v.data.clone()));
            }
        }
        let report = CutReport {
            dirty_blocks: dirty.len() as u64,
            kept_blocks: kept.len() as u64,
        };
        c.report = Some(report);
        (report, kept)
    }

    /// The newest cached data of the blocks `[offset, offset + n)`, as (index in the range,
    /// data).
    fn overlay(&self, offset: u64, n: u64) -> Blocks {
        let c = self.lock();
        let end = offset.saturating_add(n);
        c.dirty
            .range(offset..end)
            .filter_map(|(b, v)| v.last().map(|x| (b - offset, x.data.clone())))
            .collect()
    }

    /// Puts a write's blocks in the cache.
    fn cache_write(&self, io: &BdevIo) {
        let bs = self.bs();
        let mut c = self.lock();
        let seq = c.next_seq();
        for i in 0..io.num_blocks {
            let mut data = vec![0u8; bs];
            if io.io_type == IoType::Write {
                let at = usize::try_from(i).unwrap_or(usize::MAX).saturating_mul(bs);
                sg_copy_out(&io.bufs, at, &mut data);
            }
            let block = io.offset_blocks + i;
            let v = Version {
                seq,
                data: Arc::from(data),
            };
            c.dirty.entry(block).or_default().push(v);
        }
    }
}

/// Polls until the base operations already started have ended, then writes back what the
/// cut keeps.
fn wait_settled(
    reactor: Reactor,
    dev: Arc<PfailBdev>,
    keep: Keep,
    deadline: Instant,
    done: Box<dyn FnOnce(Result<CutReport, BdevError>)>,
) {
    let busy = {
        let c = dev.lock();
        c.inflight > 0 || c.jobs > 0
    };
    if busy {
        if Instant::now() > deadline {
            return done(Err(BdevError::TimedOut));
        }
        let r = reactor.clone();
        reactor.call_after(PARK, move || wait_settled(r, dev, keep, deadline, done));
        return;
    }
    let (report, kept) = dev.take_kept(keep);
    let base = match open_channel(&dev.base) {
        Ok(b) => Rc::new(b),
        Err(e) => return done(Err(e)),
    };
    let runs = kept
        .into_iter()
        .map(|(block, data)| Run {
            block,
            blocks: 1,
            seq: 0,
            data: SgList::from_buf([IoBuf::copy_from(&data)]),
            write_back: false,
        })
        .collect();
    // The cut's own writes bypass the cache's bookkeeping (nothing else runs any more).
    Job::start(
        &dev,
        base,
        reactor,
        runs,
        true,
        false,
        Box::new(move |r| done(r.map(|()| report))),
    );
}

impl Bdev for PfailBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn supports(&self, _io_type: IoType) -> bool {
        // Write zeroes and deallocate are cached as zeroes and written back as data.
        true
    }

    fn supports_flags(&self, io_type: IoType, flags: IoFlags) -> bool {
        flags == IoFlags::FUA
            && matches!(io_type, IoType::Read | IoType::Write | IoType::WriteZeroes)
    }

    fn create_channel(
        self: Arc<Self>,
        reactor: &Reactor,
    ) -> Result<Box<dyn BdevChannel>, BdevError> {
        let base = Rc::new(open_channel(&self.base)?);
        Ok(Box::new(PfailChannel {
            dev: self,
            base,
            reactor: reactor.clone(),
        }))
    }
}

struct PfailChannel {
    dev: Arc<PfailBdev>,
    base: Rc<IoChannel>,
    reactor: Reactor,
}

impl BdevChannel for PfailChannel {
    fn submit(&self, mut io: BdevIo, sink: Rc<dyn IoSink>, tag: u64) {
        let dev = &self.dev;
        if dev.is_cut() {
            return self.reactor.complete_io(sink, tag, io, Err(power_cut()));
        }
        let fua = io.flags.fua();
        match io.io_type {
            IoType::Read if fua => {
                // Commit first (NVM Command Set 1.0, section 3.2.4), then read.
                let (dev, base, reactor) = (dev.clone(), self.base.clone(), self.reactor.clone());
                let then = Box::new(move |r: Result<(), BdevError>| match r {
                    Ok(()) => read(&dev, &base, io, sink, tag),
                    Err(e) => sink.io_done(tag, io, Err(e)),
                });
                flush(&self.dev, self.base.clone(), reactor, then);
            }
            IoType::Read => read(dev, &self.base, io, sink, tag),
            IoType::Flush => {
                let then = Box::new(move |r| sink.io_done(tag, io, r));
                flush(dev, self.base.clone(), self.reactor.clone(), then);
            }
            IoType::Write | IoType::WriteZeroes if fua => {
                let seq = dev.lock().next_seq();
                // The host keeps its buffers: the base write reads shared handles to them.
                let data = if io.io_type == IoType::WriteZeroes {
                    let len = io.num_blocks.saturating_mul(dev.bs() as u64);
                    SgList::from_buf([IoBuf::zeroed(usize::try_from(len).unwrap_or(0))])
                } else {
                    io.bufs.iter_mut().map(IoBuf::share).collect()
                };
                let run = Run {
                    block: io.offset_blocks,
                    blocks: io.num_blocks,
                    seq,
                    data,
                    write_back: false,
                };
                let (d, first, n) = (dev.clone(), io.offset_blocks, io.num_blocks);
                let then = Box::new(move |r: Result<(), BdevError>| {
                    // The base has this write durably: older cached versions are superseded.
                    if r.is_ok() {
                        let mut c = d.lock();
                        for b in first..first.saturating_add(n) {
                            c.settle(b, seq);
                        }
                    }
                    sink.io_done(tag, io, r);
                });
                Job::start(
                    dev,
                    self.base.clone(),
                    self.reactor.clone(),
                    vec![run],
                    false,
                    true,
                    then,
                );
            }
            IoType::Write | IoType::WriteZeroes | IoType::Unmap => {
                dev.cache_write(&io);
                self.reactor.complete_io(sink, tag, io, Ok(()));
            }
        }
    }
}

/// Reads from the base and lays the cache over it.
fn read(dev: &Arc<PfailBdev>, base: &IoChannel, mut io: BdevIo, sink: Rc<dyn IoSink>, tag: u64) {
    let overlay = dev.overlay(io.offset_blocks, io.num_blocks);
    let flags = std::mem::take(&mut io.flags);
    let next = Rc::new(ReadDone {
        dev: dev.clone(),
        overlay,
        flags,
        sink,
    });
    base.submit(io, next, tag);
}

struct ReadDone {
    dev: Arc<PfailBdev>,
    overlay: Blocks,
    flags: IoFlags,
    sink: Rc<dyn IoSink>,
}

impl IoSink for ReadDone {
    fn io_done(&self, tag: u64, mut io: BdevIo, result: Result<(), BdevError>) {
        io.flags = self.flags;
        if self.dev.is_cut() {
            return self.sink.io_done(tag, io, Err(power_cut()));
        }
        if result.is_ok() {
            let bs = self.dev.bs();
            for (i, data) in &self.overlay {
                let at = usize::try_from(*i).unwrap_or(usize::MAX).saturating_mul(bs);
                sg_copy_in(&mut io.bufs, at, data);
            }
        }
        self.sink.io_done(tag, io, result);
    }
}

/// A flush: every block cached now goes to the base, then the base is flushed.
fn flush(
    dev: &Arc<PfailBdev>,
    base: Rc<IoChannel>,
    reactor: Reactor,
    then: Box<dyn FnOnce(Result<(), BdevError>)>,
) {
    let snapshot: Vec<(u64, u64, Arc<[u8]>)> = {
        let c = dev.lock();
        // Every cached block, also one whose newest version another job is writing now: the
        // flush must not end before that write has (the job waits for the block, then skips
        // a version already on the base).
        c.dirty
            .iter()
            .filter_map(|(b, v)| v.last().map(|x| (*b, x.seq, x.data.clone())))
            .collect()
    };
    let runs = snapshot
        .iter()
        .map(|(block, seq, data)| Run {
            block: *block,
            blocks: 1,
            seq: *seq,
            data: SgList::from_buf([IoBuf::copy_from(data)]),
            write_back: true,
        })
        .collect();
    let d = dev.clone();
    let done = Box::new(move |r: Result<(), BdevError>| {
        if r.is_ok() {
            let mut c = d.lock();
            for (b, seq, _) in &snapshot {
                c.settle(*b, *seq);
            }
        }
        then(r);
    });
    Job::start(dev, base, reactor, runs, true, true, done);
}
