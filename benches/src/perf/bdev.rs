//! `--bdev` mode: load on a local block device, one pinned reactor per core.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::null::NullBdev;
use shoal_bdev::reactor::{Reactor, ReactorHandle, parse_core_mask};
use shoal_bdev::uring::UringBdev;
use shoal_bdev::{Bdev, BdevError, BdevIo, IoBuf, IoChannel, IoSink, IoType, SgList, open_channel};

use super::Args;
use super::stats::{CoreResult, JobStats, Report};

/// A device named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BdevSpec {
    /// `uring:PATH`: a file or block device through io_uring.
    Uring(PathBuf),
    /// `malloc:MIB`: a RAM disk.
    Malloc(u64),
    /// `null:MIB`: a device that stores nothing.
    Null(u64),
}

impl std::str::FromStr for BdevSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<BdevSpec, String> {
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}`: expected uring:PATH, malloc:MIB or null:MIB"))?;
        let mib = || {
            rest.parse::<u64>()
                .ok()
                .filter(|&m| m > 0)
                .ok_or_else(|| format!("`{rest}` is not a size in MiB"))
        };
        match kind {
            "uring" if !rest.is_empty() => Ok(BdevSpec::Uring(PathBuf::from(rest))),
            "malloc" => Ok(BdevSpec::Malloc(mib()?)),
            "null" => Ok(BdevSpec::Null(mib()?)),
            _ => Err(format!(
                "`{s}`: expected uring:PATH, malloc:MIB or null:MIB"
            )),
        }
    }
}

impl BdevSpec {
    /// Creates the device.
    pub fn open(&self, block_size: Option<u32>) -> Result<Arc<dyn Bdev>, BdevError> {
        let bs = block_size.unwrap_or(4096);
        let blocks = |mib: u64| mib.saturating_mul(1 << 20) / u64::from(bs);
        Ok(match self {
            BdevSpec::Uring(path) => UringBdev::create("perf0", path, block_size, None)?,
            BdevSpec::Malloc(mib) => MallocBdev::create("perf0", None, blocks(*mib), bs)?,
            BdevSpec::Null(mib) => NullBdev::create("perf0", None, blocks(*mib), bs)?,
        })
    }
}

/// The closed loop of one reactor: every completion submits the next I/O with the same tag,
/// `BdevIo` and buffer.
struct Job {
    me: Weak<Job>,
    chan: IoChannel,
    handle: ReactorHandle,
    /// Blocks per I/O, and how many I/O-sized slots the device holds.
    blocks_per_io: u64,
    slots: u64,
    io_bytes: u64,
    read_percent: u8,
    random: bool,
    state: RefCell<JobState>,
    /// Submission time of the I/O in flight under each tag.
    started: RefCell<Vec<Instant>>,
}

struct JobState {
    rng: u64,
    next_seq: u64,
    stats: JobStats,
    stopping: bool,
    in_flight: u32,
    stopped_at: Option<Instant>,
}

impl JobState {
    /// xorshift64*: fast, and uniform enough for picking offsets.
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl Job {
    /// The type and first block of the next I/O.
    fn next(&self, st: &mut JobState) -> (IoType, u64) {
        let slot = if self.random {
            st.random() % self.slots
        } else {
            let s = st.next_seq;
            st.next_seq = (s + 1) % self.slots;
            s
        };
        let io_type = match self.read_percent {
            100 => IoType::Read,
            0 => IoType::Write,
            p => {
                if st.random() % 100 < u64::from(p) {
                    IoType::Read
                } else {
                    IoType::Write
                }
            }
        };
        (io_type, slot * self.blocks_per_io)
    }

    fn submit(&self, mut io: BdevIo, tag: u64, now: Instant) {
        let Some(me) = self.me.upgrade() else { return };
        let (io_type, offset) = self.next(&mut self.state.borrow_mut());
        io.io_type = io_type;
        io.offset_blocks = offset;
        let idx = usize::try_from(tag).unwrap_or(usize::MAX);
        if let Some(slot) = self.started.borrow_mut().get_mut(idx) {
            *slot = now;
        }
        self.chan.submit(io, me, tag);
    }

    fn stop(&self) {
        let mut st = self.state.borrow_mut();
        st.stopping = true;
        st.stopped_at = Some(Instant::now());
    }
}

impl IoSink for Job {
    fn io_done(&self, tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        let now = Instant::now();
        {
            let mut st = self.state.borrow_mut();
            if st.stopping {
                st.in_flight -= 1;
                if st.in_flight == 0 {
                    self.handle.stop();
                }
                return;
            }
            let started = usize::try_from(tag)
                .ok()
                .and_then(|i| self.started.borrow().get(i).copied())
                .unwrap_or(now);
            match result {
                Ok(()) => st.stats.record(self.io_bytes, now - started),
                Err(_) => st.stats.errors += 1,
            }
        }
        self.submit(io, tag, now);
    }
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu_time() -> Duration {
    // SAFETY: `rusage` is a plain C struct; all-zero bytes are a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only into `ru`, a live local of the right type.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &raw mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        let secs = u64::try_from(t.tv_sec).unwrap_or(0);
        let micros = u32::try_from(t.tv_usec).unwrap_or(0);
        Duration::from_secs(secs) + Duration::from_micros(u64::from(micros))
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs the load of `args` on the device `spec` and returns what it measured.
pub fn run(args: &Args, spec: &BdevSpec) -> Result<Report, String> {
    args.validate()?;
    let bdev = spec
        .open(args.block_size)
        .map_err(|e| format!("cannot open the device: {e}"))?;
    let info = bdev.info();
    let bs = info.block_size;
    if !args.io_size.is_multiple_of(bs) {
        return Err(format!(
            "-o {} is not a multiple of the {bs}-byte block",
            args.io_size
        ));
    }
    let blocks_per_io = u64::from(args.io_size / bs);
    let slots = info.num_blocks / blocks_per_io;
    if slots == 0 {
        return Err(format!("-o {} is larger than the device", args.io_size));
    }
    let cores = parse_core_mask(&args.core_mask)?;
    println!(
        "shoal-perf: {} ({}, {} blocks of {bs} B), {:?}, {} B, qd {}, {} s, cores {cores:?}, {}",
        info.name,
        info.product_name,
        info.num_blocks,
        args.workload,
        args.io_size,
        args.queue_depth,
        args.time_secs,
        args.polling_mode()
    );
    let available = core_affinity::get_core_ids().unwrap_or_default();
    let barrier = Arc::new(Barrier::new(cores.len()));
    let mut threads = Vec::new();
    for (index, &core) in cores.iter().enumerate() {
        let core_id = available.iter().copied().find(|c| c.id == core);
        let (bdev, barrier, args) = (bdev.clone(), barrier.clone(), args.clone());
        let t = std::thread::Builder::new()
            .name(format!("perf_{core}"))
            .spawn(move || {
                if !core_id.is_some_and(core_affinity::set_for_current) {
                    tracing::warn!("could not pin to core {core}");
                }
                run_core(index, core, &bdev, &args, (blocks_per_io, slots), &barrier)
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        threads.push(t);
    }
    let mut results = Vec::new();
    for t in threads {
        results.push(
            t.join()
                .map_err(|_| "a reactor thread panicked".to_string())??,
        );
    }
    Ok(Report { cores: results })
}

fn run_core(
    index: usize,
    core: usize,
    bdev: &Arc<dyn Bdev>,
    args: &Args,
    (blocks_per_io, slots): (u64, u64),
    barrier: &Barrier,
) -> Result<CoreResult, String> {
    let reactor = Reactor::new(index, Some(core), args.reactor_config())
        .map_err(|e| format!("cannot create a reactor: {e}"))?;
    let chan = open_channel(bdev).map_err(|e| format!("cannot open a channel: {e}"))?;
    let qd = args.queue_depth;
    let seed = 0x9E37_79B9_7F4A_7C15_u64 ^ u64::try_from(core).unwrap_or(0).wrapping_add(1);
    let job = Rc::new_cyclic(|me| Job {
        me: me.clone(),
        chan,
        handle: reactor.handle(),
        blocks_per_io,
        slots,
        io_bytes: u64::from(args.io_size),
        read_percent: args.workload.read_percent(args.rwmixread),
        random: args.workload.random(),
        state: RefCell::new(JobState {
            rng: seed,
            next_seq: 0,
            stats: JobStats::default(),
            stopping: false,
            in_flight: qd,
            stopped_at: None,
        }),
        started: RefCell::new(vec![Instant::now(); usize::try_from(qd).unwrap_or(0)]),
    });
    let io_len = usize::try_from(args.io_size).map_err(|e| e.to_string())?;
    barrier.wait();
    let cpu0 = thread_cpu_time();
    let start = Instant::now();
    for tag in 0..u64::from(qd) {
        let mut bufs = SgList::new();
        bufs.push(IoBuf::zeroed(io_len));
        let io = BdevIo::read(0, blocks_per_io, bufs);
        job.submit(io, tag, Instant::now());
    }
    let stopper = Rc::downgrade(&job);
    reactor.call_after(Duration::from_secs(args.time_secs), move || {
        if let Some(j) = stopper.upgrade() {
            j.stop();
        }
    });
    reactor.run();
    let cpu = thread_cpu_time().saturating_sub(cpu0);
    let st = job.state.borrow();
    let elapsed = st.stopped_at.unwrap_or_else(Instant::now) - start;
    let rs = reactor.handle();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    Ok(CoreResult {
        core,
        stats: st.stats,
        elapsed,
        cpu,
        passes: load(&rs.stats().passes),
        busy_passes: load(&rs.stats().busy_passes),
        sleeps: load(&rs.stats().sleeps),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn specs_parse() {
        assert_eq!(
            "uring:/var/tmp/x".parse(),
            Ok(BdevSpec::Uring("/var/tmp/x".into()))
        );
        assert_eq!("malloc:64".parse(), Ok(BdevSpec::Malloc(64)));
        assert_eq!("null:1".parse(), Ok(BdevSpec::Null(1)));
        for bad in ["uring:", "malloc:0", "malloc:x", "nvme:1", "plain"] {
            assert!(bad.parse::<BdevSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_short_run_on_a_ram_disk_completes_ios() {
        let args = Args::parse_from([
            "shoal-perf",
            "-q",
            "8",
            "-o",
            "4096",
            "-w",
            "randrw",
            "-t",
            "1",
        ]);
        let report = run(&args, &BdevSpec::Malloc(16)).unwrap();
        let total = report.total();
        assert!(total.ios > 1000, "{total:?}");
        assert_eq!(total.errors, 0);
        assert_eq!(total.bytes, total.ios * 4096);
        assert!(report.render().lines().any(|l| l.starts_with("Total")));
        assert!(report.cores[0].elapsed >= Duration::from_secs(1));
    }
}
