//! Runs jobs on a set of pinned reactors, one per core of `-c`, for `-t` seconds, and
//! gathers what they measured.
//!
//! The sequence, driven from the main thread: build each core's jobs on its reactor
//! ([`Setup::jobs`]); wait until every target is ready (queue pairs connected); start every
//! core; print the progress line once per second while waiting for the cores' results. Each
//! core stops its jobs after `-t` seconds, lets their I/Os drain, and sends back its
//! [`CoreResult`] (its CPU time over the window) with its jobs' results.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shoal_reactor::{Reactor, ReactorSet};

use super::cpu;
use super::job::{IoTarget, Job, JobConfig, Progress};
use super::stats::{CoreResult, JobResult, f};

/// Builds the jobs of each reactor, on that reactor.
pub trait Setup: Send + Sync {
    /// The jobs of the reactor at `index` of the set (pinned to `core`).
    #[allow(clippy::type_complexity)]
    fn jobs(
        &self,
        index: usize,
        core: usize,
    ) -> Result<Vec<(JobConfig, Box<dyn IoTarget>)>, String>;
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Per job.
    pub jobs: Vec<JobResult>,
    /// Per core.
    pub cores: Vec<CoreResult>,
}

/// How the run is watched.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Length of the measured window.
    pub time: Duration,
    /// How long targets may take to become ready.
    pub ready_timeout: Duration,
    /// How long I/Os may take to drain after the window.
    pub drain_timeout: Duration,
    /// Print a progress line every second on stderr.
    pub progress: bool,
}

type CoreDone = (CoreResult, Vec<JobResult>);

struct CoreCtx {
    core: usize,
    jobs: Vec<Rc<Job>>,
    drained: usize,
    cpu0: cpu::CpuTime,
    start: Option<Instant>,
    stats0: (u64, u64, u64),
    tx: mpsc::Sender<CoreDone>,
}

thread_local! {
    static CTX: RefCell<Option<CoreCtx>> = const { RefCell::new(None) };
}

fn reactor_counts() -> (u64, u64, u64) {
    Reactor::current().map_or((0, 0, 0), |r| {
        let h = r.handle();
        let s = h.stats();
        (
            s.passes.load(Ordering::Relaxed),
            s.busy_passes.load(Ordering::Relaxed),
            s.sleeps.load(Ordering::Relaxed),
        )
    })
}

/// A job of this core drained; the last one sends the core's results.
fn job_drained() {
    let Some(r) = Reactor::current() else { return };
    // Out of the completion that drained it: the jobs (and their queue pairs) may go.
    r.defer(|| {
        let done = CTX.with(|c| {
            let mut c = c.borrow_mut();
            let ctx = c.as_mut()?;
            ctx.drained += 1;
            (ctx.drained == ctx.jobs.len()).then(|| c.take()).flatten()
        });
        let Some(ctx) = done else { return };
        let cpu = cpu::thread().since(ctx.cpu0);
        let jobs: Vec<JobResult> = ctx.jobs.iter().map(|j| j.result()).collect();
        let elapsed = jobs.iter().map(|j| j.elapsed).max().unwrap_or_default();
        let (p1, b1, s1) = reactor_counts();
        let (p0, b0, s0) = ctx.stats0;
        let core = CoreResult {
            core: ctx.core,
            elapsed,
            cpu_user: cpu.user,
            cpu_sys: cpu.sys,
            passes: p1 - p0,
            busy_passes: b1 - b0,
            sleeps: s1 - s0,
        };
        let _ = ctx.tx.send((core, jobs));
        drop(ctx.jobs);
    });
}

fn build(
    setup: &dyn Setup,
    index: usize,
    core: usize,
    tx: mpsc::Sender<CoreDone>,
) -> Result<(), String> {
    let jobs = setup
        .jobs(index, core)?
        .into_iter()
        .map(|(cfg, target)| Job::new(cfg, target, Box::new(job_drained)))
        .collect();
    CTX.with(|c| {
        *c.borrow_mut() = Some(CoreCtx {
            core,
            jobs,
            drained: 0,
            cpu0: cpu::CpuTime::default(),
            start: None,
            stats0: (0, 0, 0),
            tx,
        });
    });
    Ok(())
}

fn ready() -> Result<bool, String> {
    CTX.with(|c| {
        let c = c.borrow();
        let Some(ctx) = c.as_ref() else {
            return Ok(false);
        };
        for j in &ctx.jobs {
            if !j.ready()? {
                return Ok(false);
            }
        }
        Ok(true)
    })
}

fn start(time: Duration) -> Result<(), String> {
    let jobs = CTX.with(|c| {
        let mut c = c.borrow_mut();
        let ctx = c.as_mut().ok_or("no jobs on this reactor")?;
        ctx.cpu0 = cpu::thread();
        ctx.stats0 = reactor_counts();
        ctx.start = Some(Instant::now());
        Ok::<_, String>(ctx.jobs.clone())
    })?;
    if jobs.is_empty() {
        job_drained_empty();
        return Ok(());
    }
    for j in &jobs {
        j.start()?;
    }
    let r = Reactor::current().ok_or("not on a reactor")?;
    r.call_after(time, move || {
        for j in &jobs {
            j.stop();
        }
    });
    Ok(())
}

/// A core without jobs reports at once.
fn job_drained_empty() {
    CTX.with(|c| {
        if let Some(ctx) = c.borrow_mut().take() {
            let core = CoreResult {
                core: ctx.core,
                elapsed: Duration::ZERO,
                cpu_user: Duration::ZERO,
                cpu_sys: Duration::ZERO,
                passes: 0,
                busy_passes: 0,
                sleeps: 0,
            };
            let _ = ctx.tx.send((core, Vec::new()));
        }
    });
}

/// Drops whatever a failed run left on a reactor.
fn clear() {
    CTX.with(|c| c.borrow_mut().take());
}

/// Runs the jobs of `setup` on `set` (one reactor per entry of `cores`).
pub fn run(
    set: &ReactorSet,
    cores: &[usize],
    setup: Arc<dyn Setup>,
    progress: &[Arc<Progress>],
    opts: RunOptions,
) -> Result<Measured, String> {
    let result = run_inner(set, cores, setup, progress, opts);
    if result.is_err() {
        for h in set.handles() {
            h.call(clear);
        }
    }
    result
}

fn run_inner(
    set: &ReactorSet,
    cores: &[usize],
    setup: Arc<dyn Setup>,
    progress: &[Arc<Progress>],
    opts: RunOptions,
) -> Result<Measured, String> {
    let (tx, rx) = mpsc::channel();
    for (index, (h, &core)) in set.handles().iter().zip(cores).enumerate() {
        let (setup, tx) = (setup.clone(), tx.clone());
        h.call(move || build(setup.as_ref(), index, core, tx))
            .ok_or("a reactor stopped")??;
    }
    drop(tx);
    let deadline = Instant::now() + opts.ready_timeout;
    loop {
        let mut all = true;
        for h in set.handles() {
            all &= h.call(ready).ok_or("a reactor stopped")??;
        }
        if all {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the I/O queues did not connect within {:?}",
                opts.ready_timeout
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for h in set.handles() {
        h.call(move || start(opts.time))
            .ok_or("a reactor stopped")??;
    }
    let started = Instant::now();
    let give_up = started + opts.time + opts.drain_timeout;
    let mut line = ProgressLine::new(opts.progress);
    let mut results = Vec::new();
    while results.len() < cores.len() {
        let now = Instant::now();
        if now > give_up {
            return Err(format!(
                "the run did not end: I/Os still in flight {:?} after the {:?} window",
                opts.drain_timeout, opts.time
            ));
        }
        let wait = line
            .next_due()
            .saturating_duration_since(now)
            .min(give_up - now);
        match rx.recv_timeout(wait) {
            Ok(r) => results.push(r),
            Err(mpsc::RecvTimeoutError::Timeout) => line.print(started, progress),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("a reactor ended without its results".into());
            }
        }
    }
    line.finish();
    results.sort_by_key(|(c, _)| c.core);
    let mut m = Measured {
        jobs: Vec::new(),
        cores: Vec::new(),
    };
    for (c, j) in results {
        m.cores.push(c);
        m.jobs.extend(j);
    }
    Ok(m)
}

/// The once-a-second line on stderr.
struct ProgressLine {
    enabled: bool,
    tty: bool,
    next: Instant,
    last: (u64, u64, Instant),
    printed: bool,
}

impl ProgressLine {
    fn new(enabled: bool) -> ProgressLine {
        let now = Instant::now();
        ProgressLine {
            enabled,
            tty: std::io::stderr().is_terminal(),
            next: now + Duration::from_secs(1),
            last: (0, 0, now),
            printed: false,
        }
    }

    fn next_due(&self) -> Instant {
        if self.enabled {
            self.next
        } else {
            Instant::now() + Duration::from_secs(3600)
        }
    }

    fn print(&mut self, started: Instant, progress: &[Arc<Progress>]) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        self.next += Duration::from_secs(1);
        let ios: u64 = progress.iter().map(|p| p.ios.load(Ordering::Relaxed)).sum();
        let bytes: u64 = progress
            .iter()
            .map(|p| p.bytes.load(Ordering::Relaxed))
            .sum();
        let secs = (now - self.last.2).as_secs_f64().max(1e-9);
        let iops = f(ios.saturating_sub(self.last.0)) / secs;
        let mib = f(bytes.saturating_sub(self.last.1)) / secs / f(1 << 20);
        self.last = (ios, bytes, now);
        let text = format!(
            "[{:>4.0} s] {iops:>12.0} IOPS {mib:>10.2} MiB/s",
            (now - started).as_secs_f64()
        );
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r{text}")
        } else {
            writeln!(err, "{text}")
        };
        let _ = err.flush();
        self.printed = true;
    }

    fn finish(&self) {
        if self.printed && self.tty {
            eprintln!();
        }
    }
}
