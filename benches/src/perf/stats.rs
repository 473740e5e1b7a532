//! Counters of a load run: per job, per core (CPU time), and the rates derived from them.

use std::time::Duration;

use super::histogram::Histogram;

/// What one job (one namespace or device on one core) measured.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Latency distribution (nanoseconds).
    pub hist: Histogram,
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
            hist: Histogram::default(),
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
        self.hist.record(ns);
    }

    /// Adds `o`'s counts to these.
    pub fn merge(&mut self, o: &JobStats) {
        self.ios += o.ios;
        self.bytes += o.bytes;
        self.errors += o.errors;
        self.lat_sum_ns += o.lat_sum_ns;
        self.lat_min_ns = self.lat_min_ns.min(o.lat_min_ns);
        self.lat_max_ns = self.lat_max_ns.max(o.lat_max_ns);
        self.hist.merge(&o.hist);
    }

    /// Latency at quantile `q`, in nanoseconds.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        self.hist.quantile(q, self.lat_min_ns, self.lat_max_ns)
    }
}

/// What a verifying job found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyStats {
    /// Reads whose data was checked.
    pub reads_checked: u64,
    /// Writes whose data carried headers.
    pub writes: u64,
    /// Reads that found a bad block.
    pub mismatches: u64,
    /// The first few mismatches, as `LBA n: what`.
    pub examples: Vec<String>,
}

/// Mismatches kept as examples per job.
pub const MAX_EXAMPLES: usize = 8;

impl VerifyStats {
    /// Adds `o`'s counts (and examples, up to [`MAX_EXAMPLES`]).
    pub fn merge(&mut self, o: &VerifyStats) {
        self.reads_checked += o.reads_checked;
        self.writes += o.writes;
        self.mismatches += o.mismatches;
        for e in &o.examples {
            if self.examples.len() < MAX_EXAMPLES {
                self.examples.push(e.clone());
            }
        }
    }
}

/// The result of one job.
#[derive(Debug, Clone)]
pub struct JobResult {
    /// How the report names it (`spdk_nvme_perf`'s device line).
    pub label: String,
    /// The core it ran on.
    pub core: usize,
    /// Namespace ID (NVMe/TCP mode).
    pub nsid: Option<u32>,
    /// I/O counts.
    pub stats: JobStats,
    /// Length of its measured window.
    pub elapsed: Duration,
    /// Data verification (`-V`).
    pub verify: VerifyStats,
    /// The first I/O error, if any.
    pub first_error: Option<String>,
}

/// What one reactor (core) measured about itself over the run.
#[derive(Debug, Clone)]
pub struct CoreResult {
    /// The core it ran on.
    pub core: usize,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// User CPU time of the reactor thread during the window.
    pub cpu_user: Duration,
    /// System CPU time of the reactor thread during the window.
    pub cpu_sys: Duration,
    /// Reactor loop passes.
    pub passes: u64,
    /// Passes that found work.
    pub busy_passes: u64,
    /// Times the reactor slept in the kernel.
    pub sleeps: u64,
}

impl CoreResult {
    /// User + system CPU time.
    pub fn cpu(&self) -> Duration {
        self.cpu_user + self.cpu_sys
    }
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
    /// Median latency in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency in microseconds.
    pub p99_us: f64,
    /// 99.9th percentile latency in microseconds.
    pub p999_us: f64,
}

// Counters fit comfortably in an f64 mantissa for any realistic run; precision loss past 2^53
// would only blur the last digits of a printed rate.
#[allow(clippy::cast_precision_loss)]
pub(crate) fn f(x: u64) -> f64 {
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
        let us = |ns: u64| f(ns) / 1e3;
        Rates {
            iops: f(s.ios) / secs,
            mib_s: f(s.bytes) / secs / f(1 << 20),
            avg_us: f128(s.lat_sum_ns) / n / 1e3,
            min_us: if s.ios == 0 { 0.0 } else { us(s.lat_min_ns) },
            max_us: us(s.lat_max_ns),
            p50_us: us(s.quantile_ns(0.5)),
            p99_us: us(s.quantile_ns(0.99)),
            p999_us: us(s.quantile_ns(0.999)),
        }
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
        assert!((r.p50_us - 10.0).abs() < 0.2, "{r:?}");
        assert_eq!(r.p99_us, 30.0, "the top bucket is clamped to the max");
        let mut both = s.clone();
        both.merge(&JobStats::default());
        assert_eq!(both, s, "merging with nothing changes nothing");
        let empty = Rates::of(&JobStats::default(), Duration::from_secs(1));
        assert_eq!((empty.iops, empty.min_us, empty.p99_us), (0.0, 0.0, 0.0));
    }
}
