//! Counters of a load run and the report printed at its end (`spdk_nvme_perf`'s layout).

use std::time::Duration;

/// What one job (one core) measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobStats {
    /// I/Os completed successfully within the run.
    pub ios: u64,
    /// Bytes they moved.
    pub bytes: u64,
    /// I/Os that completed with an error.
    pub errors: u64,
    /// Sum of the latencies of the successful I/Os, in nanoseconds.
    pub lat_sum_ns: u128,
    /// Shortest latency, in nanoseconds.
    pub lat_min_ns: u64,
    /// Longest latency, in nanoseconds.
    pub lat_max_ns: u64,
}

impl Default for JobStats {
    fn default() -> Self {
        JobStats {
            ios: 0,
            bytes: 0,
            errors: 0,
            lat_sum_ns: 0,
            lat_min_ns: u64::MAX,
            lat_max_ns: 0,
        }
    }
}

impl JobStats {
    /// Records one successful I/O of `bytes` bytes that took `lat`.
    #[inline]
    pub fn record(&mut self, bytes: u64, lat: Duration) {
        let ns = u64::try_from(lat.as_nanos()).unwrap_or(u64::MAX);
        self.ios += 1;
        self.bytes += bytes;
        self.lat_sum_ns += u128::from(ns);
        self.lat_min_ns = self.lat_min_ns.min(ns);
        self.lat_max_ns = self.lat_max_ns.max(ns);
    }

    /// Both jobs' counts together.
    pub fn merge(&self, o: &JobStats) -> JobStats {
        JobStats {
            ios: self.ios + o.ios,
            bytes: self.bytes + o.bytes,
            errors: self.errors + o.errors,
            lat_sum_ns: self.lat_sum_ns + o.lat_sum_ns,
            lat_min_ns: self.lat_min_ns.min(o.lat_min_ns),
            lat_max_ns: self.lat_max_ns.max(o.lat_max_ns),
        }
    }
}

/// What one reactor measured, with how it spent its time.
#[derive(Debug, Clone)]
pub struct CoreResult {
    /// The core it ran on.
    pub core: usize,
    /// The I/O counts.
    pub stats: JobStats,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// CPU time (user + system) of the reactor thread during the run.
    pub cpu: Duration,
    /// Reactor loop passes, and how many found work.
    pub passes: u64,
    /// Passes that found work.
    pub busy_passes: u64,
    /// Times the reactor slept in the kernel.
    pub sleeps: u64,
}

/// Rates derived from counts over a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// I/Os per second.
    pub iops: f64,
    /// Mebibytes per second.
    pub mib_s: f64,
    /// Mean latency in microseconds.
    pub avg_us: f64,
    /// Shortest latency in microseconds.
    pub min_us: f64,
    /// Longest latency in microseconds.
    pub max_us: f64,
}

// Counters fit comfortably in an f64 mantissa for any realistic run; precision loss past 2^53
// would only blur the last digits of a printed rate.
#[allow(clippy::cast_precision_loss)]
fn f(x: u64) -> f64 {
    x as f64
}

#[allow(clippy::cast_precision_loss)]
fn f128(x: u128) -> f64 {
    x as f64
}

impl Rates {
    /// The rates of `s` over `elapsed`.
    pub fn of(s: &JobStats, elapsed: Duration) -> Rates {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let n = f(s.ios.max(1));
        Rates {
            iops: f(s.ios) / secs,
            mib_s: f(s.bytes) / secs / f(1 << 20),
            avg_us: f128(s.lat_sum_ns) / n / 1e3,
            min_us: if s.ios == 0 {
                0.0
            } else {
                f(s.lat_min_ns) / 1e3
            },
            max_us: f(s.lat_max_ns) / 1e3,
        }
    }
}

fn line(label: &str, r: &Rates) -> String {
    format!(
        "{label:<35}: {:>12.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
        r.iops, r.mib_s, r.avg_us, r.min_us, r.max_us
    )
}

/// The whole run: per-core results and their total.
#[derive(Debug, Clone)]
pub struct Report {
    /// One entry per core.
    pub cores: Vec<CoreResult>,
}

impl Report {
    /// Counts summed over the cores.
    pub fn total(&self) -> JobStats {
        self.cores
            .iter()
            .fold(JobStats::default(), |acc, c| acc.merge(&c.stats))
    }

    /// Rates of the whole run (the longest window of any core).
    pub fn total_rates(&self) -> Rates {
        let elapsed = self
            .cores
            .iter()
            .map(|c| c.elapsed)
            .max()
            .unwrap_or_default();
        Rates::of(&self.total(), elapsed)
    }

    /// The report as `spdk_nvme_perf` lays it out, plus one line per reactor on its CPU use.
    /// The `Total` line is stable for scripts: `Total : IOPS MiB/s avg min max`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let sep = "=".repeat(96);
        out.push_str(&sep);
        out.push('\n');
        out.push_str(&format!("{:<37}{:>57}\n", "", "Latency(us)"));
        out.push_str(&format!(
            "{:<35}: {:>12} {:>10} {:>10} {:>10} {:>10}\n",
            "Device Information", "IOPS", "MiB/s", "Average", "min", "max"
        ));
        for c in &self.cores {
            let label = format!("core {}", c.core);
            out.push_str(&line(&label, &Rates::of(&c.stats, c.elapsed)));
            out.push('\n');
        }
        out.push_str(&sep);
        out.push('\n');
        out.push_str(&line("Total", &self.total_rates()));
        out.push('\n');
        for c in &self.cores {
            let secs = c.elapsed.as_secs_f64().max(1e-9);
            let busy = 100.0 * f(c.busy_passes) / f(c.passes.max(1));
            out.push_str(&format!(
                "reactor on core {}: cpu {:.1}%, {} passes ({busy:.1}% busy), {} sleeps, {} errors\n",
                c.core,
                100.0 * c.cpu.as_secs_f64() / secs,
                c.passes,
                c.sleeps,
                c.stats.errors,
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_from_counts() {
        let mut s = JobStats::default();
        s.record(4096, Duration::from_micros(10));
        s.record(4096, Duration::from_micros(30));
        let r = Rates::of(&s, Duration::from_secs(2));
        assert_eq!(r.iops, 1.0);
        assert!((r.avg_us - 20.0).abs() < 1e-9);
        assert_eq!((r.min_us, r.max_us), (10.0, 30.0));
        assert!((r.mib_s - 8192.0 / 2.0 / 1048576.0).abs() < 1e-12);
        let both = s.merge(&JobStats::default());
        assert_eq!(both, s, "merging with nothing changes nothing");
    }
}
