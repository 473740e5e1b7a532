//! Nexus benchmarks (a plain `harness = false` bench: it prints a table of ratios).
//!
//! On one reactor driven by the bench thread:
//! 1. 4 KiB random writes and reads at queue depth 32 on one RAM bdev, and on a nexus over two
//!    RAM children; the nexus's IOPS as a share of the single bdev's;
//! 2. the rebuild of a RAM replica with an idle host, against a plain sequential copy of the
//!    same bytes (1 MiB copies, two in flight, as the rebuild);
//! 3. 4 KiB random writes on the nexus while a replica rebuilds with the default (adaptive)
//!    rate limit, as a share of the same load without a rebuild.
//!
//! 4. with `NEXUS_BENCH_SHOALD=PATH` (a built `shoald`): the same rebuild and plain copy between
//!    two nodes: this process (pinned to core 0) holds the source RAM replica, a `shoald` it
//!    starts on 127.0.0.2 (core 1) exports the destination RAM replica over NVMe/TCP; the copy
//!    and the rebuild both write to it through the NVMe/TCP host (`RemoteBdev`).
//!    `hack/bench-nexus.sh rebuild` runs this part.
//!
//! 5. `NEXUS_BENCH_ONLY=intent`: the write-intent bitmap's cost: 4 KiB random writes at depth
//!    32 on a nexus over two RAM children with the bitmap and on one without, alternating for
//!    `NEXUS_BENCH_ROUNDS` rounds (default 5), medians and their ratio.
//!
//! 6. with `NEXUS_BENCH_ONLY=order` only: what the write order costs (module `order` of the
//!    crate): 4 KiB random writes at depth 32 on a nexus over two RAM children (then two null
//!    ones), the order switched on and off every `NEXUS_BENCH_ORDER_MS` (250) under one load,
//!    `NEXUS_BENCH_ROUNDS` (40) pairs.
//!
//! `cargo bench -p shoal-replication --bench nexus`. Environment: `NEXUS_BENCH_SECS` (seconds
//! per load, default 3), `NEXUS_BENCH_MIB` (device size for the IOPS runs, default 256),
//! `NEXUS_BENCH_REBUILD_MIB` (replica size, default 1024), `NEXUS_BENCH_ONLY=iops|during|
//! remote|intent|order`, `NEXUS_BENCH_ROUNDS` (rounds of parts 4 and 5, default 3 and 5;
//! pairs of part 6),
//! `NEXUS_BENCH_PORT` (4523).

#[path = "support/remote.rs"]
mod remote;

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::null::NullBdev;
use shoal_bdev::{Bdev, BdevError, BdevIo, IoBuf, IoChannel, IoSink, IoType, SgList, open_channel};
use shoal_reactor::{Reactor, ReactorConfig};
use shoal_replication::{ChildSpec, ChildState, META_BYTES, Nexus, NexusOptions};

const IO: u64 = 4096;
const DEPTH: u64 = 32;
pub(crate) const WAIT: Duration = Duration::from_secs(600);

pub(crate) fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A closed loop of `DEPTH` I/Os at random 4 KiB offsets.
struct Job {
    me: RefCell<Weak<Job>>,
    chan: IoChannel,
    slots: u64,
    rng: Cell<u64>,
    stop: Cell<bool>,
    inflight: Cell<u64>,
    done: Cell<u64>,
    errors: Cell<u64>,
}

impl Job {
    fn start(bdev: &Arc<dyn Bdev>, io_type: IoType) -> Rc<Job> {
        let bs = u64::from(bdev.info().block_size);
        let job = Rc::new(Job {
            me: RefCell::new(Weak::new()),
            chan: open_channel(bdev).expect("channel"),
            slots: bdev.info().num_blocks() * bs / IO,
            rng: Cell::new(0x2545_F491_4F6C_DD1D),
            stop: Cell::new(false),
            inflight: Cell::new(0),
            done: Cell::new(0),
            errors: Cell::new(0),
        });
        *job.me.borrow_mut() = Rc::downgrade(&job);
        for tag in 0..DEPTH {
            let mut bufs = SgList::new();
            bufs.push(IoBuf::zeroed(usize::try_from(IO).unwrap_or(4096)));
            let io = BdevIo {
                io_type,
                flags: shoal_bdev::IoFlags::NONE,
                offset_blocks: 0,
                num_blocks: IO / bs,
                bufs,
            };
            job.inflight.set(job.inflight.get() + 1);
            job.next(io, tag);
        }
        job
    }

    fn next(&self, mut io: BdevIo, tag: u64) {
        let Some(me) = self.me.borrow().upgrade() else {
            return;
        };
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        io.offset_blocks = (x % self.slots) * io.num_blocks;
        self.chan.submit(io, me, tag);
    }
}

impl IoSink for Job {
    fn io_done(&self, tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        self.done.set(self.done.get() + 1);
        if result.is_err() {
            self.errors.set(self.errors.get() + 1);
        }
        if self.stop.get() {
            self.inflight.set(self.inflight.get() - 1);
            return;
        }
        self.next(io, tag);
    }
}

/// Runs `io_type` on `bdev` for `secs` seconds; IOPS.
fn load(r: &Reactor, bdev: &Arc<dyn Bdev>, io_type: IoType, secs: u64) -> u64 {
    load_cpu(r, bdev, io_type, secs).0
}

/// [`load`], also as I/Os per second of this thread's CPU time (which preemption by other
/// processes does not move).
fn load_cpu(r: &Reactor, bdev: &Arc<dyn Bdev>, io_type: IoType, secs: u64) -> (u64, u64) {
    let job = Job::start(bdev, io_type);
    r.run_until(Duration::from_millis(200), || false);
    let (d0, t0, c0) = (job.done.get(), Instant::now(), thread_cpu_ns());
    r.run_until(Duration::from_secs(secs), || false);
    let (d1, t1, c1) = (job.done.get(), t0.elapsed(), thread_cpu_ns());
    job.stop.set(true);
    r.run_until(WAIT, || job.inflight.get() == 0);
    assert_eq!(job.errors.get(), 0, "I/O errors");
    let ns = u64::try_from(t1.as_nanos()).unwrap_or(u64::MAX).max(1);
    let per = |n: u64| (d1 - d0).saturating_mul(1_000_000_000) / n.max(1);
    (per(ns), per(c1.saturating_sub(c0)))
}

/// A RAM device with every page touched (first-touch page faults would otherwise dominate
/// whatever runs first on it).
pub(crate) fn ram(name: &str, bytes: u64) -> Arc<dyn Bdev> {
    let b: Arc<dyn Bdev> =
        MallocBdev::create(name, None, (bytes + META_BYTES) / 4096, 4096).expect("malloc");
    let r = Reactor::current().expect("a reactor");
    let chan = open_channel(&b).expect("channel");
    let sink = Rc::new(Count::default());
    let step = (4u64 << 20) / 4096;
    let mut at = 0;
    while at < b.info().num_blocks() {
        let n = step.min(b.info().num_blocks() - at);
        let mut bufs = SgList::new();
        bufs.push(IoBuf::zeroed(usize::try_from(n * 4096).unwrap_or(0)));
        chan.submit(BdevIo::write(at, n, bufs), sink.clone(), 0);
        at += n;
        r.run_until(WAIT, || sink.0.get() > 0);
        sink.0.set(0);
    }
    b
}

#[derive(Default)]
struct Count(Cell<u64>);

impl IoSink for Count {
    fn io_done(&self, _tag: u64, _io: BdevIo, result: Result<(), BdevError>) {
        result.expect("prefault write");
        self.0.set(self.0.get() + 1);
    }
}

pub(crate) fn nexus(r: &Reactor, name: &str, bytes: u64, children: &[Arc<dyn Bdev>]) -> Arc<Nexus> {
    let specs = children.iter().cloned().map(ChildSpec::local).collect();
    Nexus::create(NexusOptions::new(name, bytes), specs, &r.handle())
        .wait(WAIT)
        .expect("reactor")
        .expect("nexus")
}

pub(crate) fn pct(a: u64, b: u64) -> u64 {
    a.saturating_mul(100) / b.max(1)
}

/// Copies `bytes` from `src` to `dst` in 1 MiB pieces, two in flight; the time it took.
pub(crate) fn plain_copy(
    r: &Reactor,
    src: &Arc<dyn Bdev>,
    dst: &Arc<dyn Bdev>,
    bytes: u64,
) -> Duration {
    type Done = (u64, BdevIo, Result<(), BdevError>);
    #[derive(Default)]
    struct Sink(RefCell<Vec<Done>>);
    impl IoSink for Sink {
        fn io_done(&self, tag: u64, io: BdevIo, result: Result<(), BdevError>) {
            self.0.borrow_mut().push((tag, io, result));
        }
    }
    let (s, d) = (open_channel(src).unwrap(), open_channel(dst).unwrap());
    let sink = Rc::new(Sink::default());
    let piece = 1u64 << 20;
    let blocks = piece / 4096;
    let pieces = bytes / piece;
    let t0 = Instant::now();
    let mut next = 0u64;
    let mut done = 0u64;
    let read = |at: u64, buf: IoBuf| {
        let mut bufs = SgList::new();
        bufs.push(buf);
        s.submit(BdevIo::read(at * blocks, blocks, bufs), sink.clone(), 0);
    };
    for _ in 0..2 {
        read(next, IoBuf::zeroed(usize::try_from(piece).unwrap_or(0)));
        next += 1;
    }
    while done < pieces {
        r.run_until(WAIT, || !sink.0.borrow().is_empty());
        let batch: Vec<_> = sink.0.borrow_mut().drain(..).collect();
        for (tag, io, res) in batch {
            res.expect("copy I/O");
            if tag == 0 {
                let at = io.offset_blocks;
                d.submit(BdevIo::write(at, blocks, io.bufs), sink.clone(), 1);
            } else {
                done += 1;
                let mut bufs = io.bufs;
                if next < pieces {
                    read(next, bufs.pop().unwrap());
                    next += 1;
                }
            }
        }
    }
    t0.elapsed()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs = env_u64("NEXUS_BENCH_SECS", 3);
    // With a second node (part 4) this process stays on core 0 and the node on core 1.
    let core = std::env::var_os("NEXUS_BENCH_SHOALD").map(|_| 0);
    let r = Reactor::new(0, core, ReactorConfig::default()).expect("reactor");
    let size = env_u64("NEXUS_BENCH_MIB", 256) << 20;
    let only_iops = std::env::var("NEXUS_BENCH_ONLY").is_ok_and(|v| v == "iops");

    let only_during = std::env::var("NEXUS_BENCH_ONLY").is_ok_and(|v| v == "during");
    let only_remote = std::env::var("NEXUS_BENCH_ONLY").is_ok_and(|v| v == "remote");
    if std::env::var("NEXUS_BENCH_ONLY").is_ok_and(|v| v == "order") {
        order_cost(&r, size);
        return;
    }
    if std::env::var("NEXUS_BENCH_ONLY").is_ok_and(|v| v == "intent") {
        intent(&r, size, secs);
        return;
    }
    if only_remote {
        remote::run(&r);
        return;
    }
    if !only_during {
        iops(&r, size, secs, only_iops);
    }
    if only_iops {
        return;
    }
    rebuilds(&r, secs, only_during);
    if !only_during {
        remote::run(&r);
    }
}

/// Part 1: one RAM (and null) bdev against a nexus over two.
fn iops(r: &Reactor, size: u64, secs: u64, only_iops: bool) {
    let r = r.clone();
    // 1. IOPS: one RAM bdev against a nexus over two.
    let single = ram("single", size);
    let (a, b) = (ram("a", size), ram("b", size));
    let nx: Arc<dyn Bdev> = nexus(&r, "nx", size, &[a, b]);
    let null = |n: &str| -> Arc<dyn Bdev> {
        NullBdev::create(n, None, (size + META_BYTES) / 4096, 4096).expect("null")
    };
    let single_null = null("null");
    let nx_null: Arc<dyn Bdev> = nexus(&r, "nxn", size, &[null("n0"), null("n1")]);
    println!(
        "4 KiB random I/O, queue depth {DEPTH}, one reactor, {} MiB devices, {secs} s per run",
        size >> 20
    );
    println!(
        "{:<16} {:>12} {:>12} {:>7}",
        "load", "1 x bdev", "nexus 2x", "ratio"
    );
    let which = std::env::var("NEXUS_BENCH_LOAD").unwrap_or_default();
    let runs = [
        ("RAM randwrite", IoType::Write, &single, &nx),
        ("RAM randread", IoType::Read, &single, &nx),
        ("null randwrite", IoType::Write, &single_null, &nx_null),
        ("null randread", IoType::Read, &single_null, &nx_null),
    ];
    for (name, t, one_dev, two_dev) in runs {
        if !which.is_empty() && !name.contains(which.as_str()) {
            continue;
        }
        let one = load(&r, one_dev, t, secs);
        let two = load(&r, two_dev, t, secs);
        println!("{name:<16} {one:>12} {two:>12} {:>6}%", pct(two, one));
    }

    let _ = only_iops;
}

/// Part 5: random writes with and without the write-intent bitmap, side by side.
fn intent(r: &Reactor, size: u64, secs: u64) {
    let rounds = env_u64("NEXUS_BENCH_ROUNDS", 5);
    let make = |name: &str, on: bool| -> Arc<dyn Bdev> {
        let kids = [
            ram(&format!("{name}a"), size),
            ram(&format!("{name}b"), size),
        ];
        let specs = kids.iter().cloned().map(ChildSpec::local).collect();
        let mut o = NexusOptions::new(name, size);
        o.write_intent = on;
        Nexus::create(o, specs, &r.handle())
            .wait(WAIT)
            .expect("reactor")
            .expect("nexus")
    };
    let (with, without) = (make("wi", true), make("wo", false));
    println!(
        "4 KiB random writes, queue depth {DEPTH}, nexus over two RAM children, {} MiB, {secs} s \
         per run, {rounds} alternating rounds (IOPS, and I/Os per CPU-second of the reactor)",
        size >> 20
    );
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        // Alternate which goes first.
        let ((xw, xc), (yw, yc)) = if i % 2 == 0 {
            let x = load_cpu(r, &with, IoType::Write, secs);
            (x, load_cpu(r, &without, IoType::Write, secs))
        } else {
            let y = load_cpu(r, &without, IoType::Write, secs);
            (load_cpu(r, &with, IoType::Write, secs), y)
        };
        println!(
            "round {i}: with the bitmap {xw:>9} IOPS ({xc:>9}/CPU-s), without {yw:>9} IOPS \
             ({yc:>9}/CPU-s): {}%, per CPU-s {}%",
            pct(xw, yw),
            pct(xc, yc)
        );
        wall.push(pml(xw, yw));
        cpu.push(pml(xc, yc));
    }
    // Medians of the rounds' ratios: each pair ran within seconds, so the machine's drift over
    // the whole run cancels out.
    wall.sort_unstable();
    cpu.sort_unstable();
    let (mw, mc) = (wall[wall.len() / 2], cpu[cpu.len() / 2]);
    println!(
        "median of the rounds' ratios, with / without the bitmap: IOPS {}.{}%, per CPU-second {}.{}%",
        mw / 10,
        mw % 10,
        mc / 10,
        mc % 10
    );
}

/// Parts 2 and 3: rebuild speed with an idle host, host writes during a rebuild.
fn rebuilds(r: &Reactor, secs: u64, only_during: bool) {
    let r = r.clone();
    // 2. Rebuild with an idle host against a plain copy.
    let mib = env_u64("NEXUS_BENCH_REBUILD_MIB", 1024);
    let bytes = mib << 20;
    let src = ram("src", bytes);
    let copy_dst = ram("copy", bytes);
    let plain = if only_during {
        Duration::from_secs(1)
    } else {
        plain_copy(&r, &src, &copy_dst, bytes)
    };
    drop(copy_dst);
    let nx2 = nexus(&r, "nx2", bytes, std::slice::from_ref(&src));
    let dst = ram("dst", bytes);
    let t0 = Instant::now();
    nx2.add_child(ChildSpec::local(dst.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    let uri = ChildSpec::local(dst.clone()).uri;
    r.run_until(WAIT, || {
        nx2.child_status(&uri)
            .is_some_and(|c| c.state == ChildState::Online)
    });
    let rebuild = t0.elapsed();
    let mibs = |d: Duration| mib * 1000 / u64::try_from(d.as_millis()).unwrap_or(1).max(1);
    println!();
    println!("copy of a {mib} MiB replica, host idle");
    println!(
        "plain copy {:>6} ms ({} MiB/s), rebuild {:>6} ms ({} MiB/s): rebuild at {}% of the copy rate",
        plain.as_millis(),
        mibs(plain),
        rebuild.as_millis(),
        mibs(rebuild),
        pct(mibs(rebuild), mibs(plain))
    );

    // 3. Host writes during a rebuild with the default rate limit.
    let quiet = load(&r, &(nx2.clone() as Arc<dyn Bdev>), IoType::Write, secs);
    nx2.remove_child(&uri).wait(WAIT).unwrap().unwrap();
    let dst2 = ram("dst2", bytes);
    nx2.add_child(ChildSpec::local(dst2.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    let uri2 = ChildSpec::local(dst2).uri;
    let busy = load(&r, &(nx2.clone() as Arc<dyn Bdev>), IoType::Write, secs);
    let st = nx2.child_status(&uri2).unwrap();
    println!();
    println!(
        "randwrite on the nexus: {quiet} IOPS alone, {busy} IOPS during a rebuild ({}%); \
         rebuild at {}% after {secs} s ({:?})",
        pct(busy, quiet),
        st.rebuild_progress,
        nx2.status().rebuild_rate
    );
}

/// Part 6: 4 KiB random writes at depth 32 on one nexus, the write order switched on and off
/// every `NEXUS_BENCH_ORDER_MS` (250) under one running load, `NEXUS_BENCH_ROUNDS` (40) pairs
/// (which half comes first alternates): both halves of a pair see the same machine, so the
/// median of the pairs' ratios is what the order costs, not how the machine drifted. Each half
/// is counted in writes per second of wall time and per second of the reactor thread's CPU
/// time (from the scheduler: on a machine shared with other work, the thread is often
/// preempted, which moves the first and not the second).
fn order_cost(r: &Reactor, size: u64) {
    let pairs = env_u64("NEXUS_BENCH_ROUNDS", 40);
    let phase = Duration::from_millis(env_u64("NEXUS_BENCH_ORDER_MS", 250));
    let null = |n: &str| -> Arc<dyn Bdev> {
        NullBdev::create(n, None, (size + META_BYTES) / 4096, 4096).expect("null")
    };
    println!(
        "write order: 4 KiB random writes, queue depth {DEPTH}, one reactor, nexus over 2 \
         children of {} MiB; order on and off every {} ms, {pairs} pairs",
        size >> 20,
        phase.as_millis()
    );
    for kind in ["RAM", "null"] {
        let kids = if kind == "RAM" {
            [ram("o0", size), ram("o1", size)]
        } else {
            [null("z0"), null("z1")]
        };
        let nx = nexus(r, &format!("nx-order-{kind}"), size, &kids);
        let dev: Arc<dyn Bdev> = nx.clone();
        let job = Job::start(&dev, IoType::Write);
        r.run_until(Duration::from_millis(500), || false);
        let (mut ratios, mut on, mut off) = (Vec::new(), Vec::new(), Vec::new());
        let (mut cpu_ratios, mut cpu_on, mut cpu_off) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..pairs {
            let (mut pair, mut cpu_pair) = ([0u64; 2], [0u64; 2]);
            for ordered in [i % 2 == 0, i % 2 != 0] {
                nx.set_write_order(ordered);
                let (d0, t0, c0) = (job.done.get(), Instant::now(), thread_cpu_ns());
                r.run_until(phase, || false);
                let ns = u64::try_from(t0.elapsed().as_nanos())
                    .unwrap_or(u64::MAX)
                    .max(1);
                let cpu = thread_cpu_ns().saturating_sub(c0).max(1);
                let n = job.done.get() - d0;
                pair[usize::from(ordered)] = n.saturating_mul(1_000_000_000) / ns;
                cpu_pair[usize::from(ordered)] = n.saturating_mul(1_000_000_000) / cpu;
            }
            off.push(pair[0]);
            on.push(pair[1]);
            ratios.push(pml(pair[1], pair[0]));
            cpu_off.push(cpu_pair[0]);
            cpu_on.push(cpu_pair[1]);
            cpu_ratios.push(pml(cpu_pair[1], cpu_pair[0]));
        }
        job.stop.set(true);
        r.run_until(WAIT, || job.inflight.get() == 0);
        assert_eq!(job.errors.get(), 0, "I/O errors");
        nx.set_write_order(true);
        let wall = summary(&mut on, &mut off, &mut ratios);
        let cpu = summary(&mut cpu_on, &mut cpu_off, &mut cpu_ratios);
        println!("{kind:<5} per second of wall time: {wall}");
        println!("{kind:<5} per second of CPU time:  {cpu}");
    }
}

/// Medians and spread of the two halves and of the pairs' ratios, in one line.
fn summary(on: &mut [u64], off: &mut [u64], ratios: &mut [u64]) -> String {
    for v in [&mut *on, &mut *off, &mut *ratios] {
        v.sort_unstable();
    }
    let tenths = |x: u64| format!("{}.{}%", x / 10, x % 10);
    let q = |v: &[u64], k: usize| v[(v.len() - 1) * k / 4];
    format!(
        "ordered median {} ({}-{}), unordered median {} ({}-{}); ordered / unordered per \
         pair: median {}, quartiles {}-{}",
        q(on, 2),
        q(on, 0),
        q(on, 4),
        q(off, 2),
        q(off, 0),
        q(off, 4),
        tenths(q(ratios, 2)),
        tenths(q(ratios, 1)),
        tenths(q(ratios, 3)),
    )
}

/// CPU time of this thread so far, nanoseconds (`/proc/thread-self/schedstat`: time on a CPU,
/// as the scheduler counts it); 0 if unreadable.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// `a` in thousandths of `b`.
fn pml(a: u64, b: u64) -> u64 {
    a.saturating_mul(1000) / b.max(1)
}
