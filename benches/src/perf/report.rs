//! The report printed at the end of a run: `spdk_nvme_perf`'s table (one line per job, then
//! the total) with latency percentiles, the CPU time per I/O, and what `-V` found; or, with
//! `--json`, the same as one JSON document.

use serde_json::{Value, json};

use super::Args;
use super::cpu::CpuTime;
use super::runner::Measured;
use super::stats::{CoreResult, JobResult, JobStats, Rates, VerifyStats, f};

/// A finished run.
#[derive(Debug, Clone)]
pub struct Report {
    /// One line saying what ran.
    pub header: String,
    /// Per job.
    pub jobs: Vec<JobResult>,
    /// Per core.
    pub cores: Vec<CoreResult>,
    /// CPU time of the whole process from reactor start to the end (set-up included).
    pub process_cpu: CpuTime,
    /// Whether `-V` was on.
    pub verify: bool,
    /// The options, for the JSON document.
    pub args: Value,
}

fn rates_json(r: &Rates) -> Value {
    json!({
        "iops": r.iops, "mib_s": r.mib_s, "avg_us": r.avg_us, "min_us": r.min_us,
        "max_us": r.max_us, "p50_us": r.p50_us, "p99_us": r.p99_us, "p99_9_us": r.p999_us,
    })
}

fn verify_json(v: &VerifyStats) -> Value {
    json!({
        "reads_checked": v.reads_checked, "writes": v.writes, "mismatches": v.mismatches,
        "examples": v.examples,
    })
}

impl Report {
    /// The report of `measured`.
    pub fn new(header: String, args: &Args, measured: Measured, process_cpu: CpuTime) -> Report {
        Report {
            header,
            jobs: measured.jobs,
            cores: measured.cores,
            process_cpu,
            verify: args.verify,
            args: args.to_json(),
        }
    }

    /// Counts summed over the jobs.
    pub fn total(&self) -> JobStats {
        let mut t = JobStats::default();
        for j in &self.jobs {
            t.merge(&j.stats);
        }
        t
    }

    /// Verification counts summed over the jobs.
    pub fn verify_total(&self) -> VerifyStats {
        let mut v = VerifyStats::default();
        for j in &self.jobs {
            v.merge(&j.verify);
        }
        v
    }

    /// Rates of the whole run (over the longest window of any job).
    pub fn total_rates(&self) -> Rates {
        let elapsed = self
            .jobs
            .iter()
            .map(|j| j.elapsed)
            .max()
            .unwrap_or_default();
        Rates::of(&self.total(), elapsed)
    }

    /// CPU time of the reactors over their windows.
    pub fn reactor_cpu(&self) -> CpuTime {
        self.cores.iter().fold(CpuTime::default(), |a, c| CpuTime {
            user: a.user + c.cpu_user,
            sys: a.sys + c.cpu_sys,
        })
    }

    /// Microseconds of CPU (user, system) per I/O completed, over the reactors' windows.
    pub fn cpu_per_io_us(&self) -> (f64, f64) {
        let n = f(self.total().ios.max(1));
        let c = self.reactor_cpu();
        (
            c.user.as_secs_f64() * 1e6 / n,
            c.sys.as_secs_f64() * 1e6 / n,
        )
    }

    /// Why the run failed (verify mismatches, I/O errors), if it did.
    pub fn failure(&self) -> Option<String> {
        let v = self.verify_total();
        if v.mismatches > 0 {
            let first = v.examples.first().cloned().unwrap_or_default();
            return Some(format!(
                "verify failed: {} of {} reads returned bad data (first: {first})",
                v.mismatches, v.reads_checked
            ));
        }
        let errors = self.total().errors;
        if errors > 0 {
            let first = self
                .jobs
                .iter()
                .find_map(|j| j.first_error.clone())
                .unwrap_or_default();
            return Some(format!("{errors} I/O errors (first: {first})"));
        }
        None
    }

    /// The report as `spdk_nvme_perf` lays it out, with three percentile columns added, then
    /// CPU use and verification. The `Total` line is stable for scripts:
    /// `Total : IOPS MiB/s avg min max p50 p99 p99.9` (latencies in microseconds).
    pub fn render(&self) -> String {
        let width = self
            .jobs
            .iter()
            .map(|j| j.label.len())
            .chain([18])
            .max()
            .unwrap_or(18);
        let line = |label: &str, r: &Rates| {
            format!(
                "{label:<width$} : {:>12.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2}\n",
                r.iops, r.mib_s, r.avg_us, r.min_us, r.max_us, r.p50_us, r.p99_us, r.p999_us
            )
        };
        let sep = "=".repeat(width + 3 + 13 + 11 * 7);
        let mut out = format!("{}\n{sep}\n", self.header);
        out.push_str(&format!(
            "{:>w$}\n",
            "Latency(us)",
            w = width + 3 + 13 + 11 * 7
        ));
        out.push_str(&format!(
            "{:<width$} : {:>12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
            "Device Information", "IOPS", "MiB/s", "Average", "min", "max", "p50", "p99", "p99.9"
        ));
        for j in &self.jobs {
            out.push_str(&line(&j.label, &Rates::of(&j.stats, j.elapsed)));
        }
        out.push_str(&sep);
        out.push('\n');
        out.push_str(&line("Total", &self.total_rates()));
        let (user, sys) = self.cpu_per_io_us();
        let cpu = self.reactor_cpu();
        let window = self
            .cores
            .iter()
            .map(|c| c.elapsed)
            .max()
            .unwrap_or_default();
        out.push_str(&format!(
            "CPU: {:.3} us per I/O (user {user:.3} + system {sys:.3}); {:.1}% of {} core(s) over {:.1} s\n",
            user + sys,
            100.0 * cpu.total().as_secs_f64()
                / window.as_secs_f64().max(1e-9)
                / f(u64::try_from(self.cores.len().max(1)).unwrap_or(1)),
            self.cores.len(),
            window.as_secs_f64(),
        ));
        for c in &self.cores {
            let secs = c.elapsed.as_secs_f64().max(1e-9);
            let busy = 100.0 * f(c.busy_passes) / f(c.passes.max(1));
            out.push_str(&format!(
                "reactor on core {}: cpu {:.1}% (user {:.1}%, system {:.1}%), {} passes ({busy:.1}% busy), {} sleeps\n",
                c.core,
                100.0 * c.cpu().as_secs_f64() / secs,
                100.0 * c.cpu_user.as_secs_f64() / secs,
                100.0 * c.cpu_sys.as_secs_f64() / secs,
                c.passes,
                c.sleeps,
            ));
        }
        if self.verify {
            let v = self.verify_total();
            out.push_str(&format!(
                "verify: {} reads checked, {} writes, {} mismatches\n",
                v.reads_checked, v.writes, v.mismatches
            ));
            for e in &v.examples {
                out.push_str(&format!("verify: {e}\n"));
            }
        }
        let errors = self.total().errors;
        if errors > 0 {
            out.push_str(&format!("errors: {errors} I/Os failed\n"));
            for j in &self.jobs {
                if let Some(e) = &j.first_error {
                    out.push_str(&format!("errors: {}: {e}\n", j.label));
                }
            }
        }
        out
    }

    /// The report as one JSON document.
    pub fn to_json(&self) -> Value {
        let jobs: Vec<Value> = self
            .jobs
            .iter()
            .map(|j| {
                json!({
                    "label": j.label, "core": j.core, "nsid": j.nsid,
                    "ios": j.stats.ios, "bytes": j.stats.bytes, "errors": j.stats.errors,
                    "elapsed_s": j.elapsed.as_secs_f64(),
                    "rates": rates_json(&Rates::of(&j.stats, j.elapsed)),
                    "verify": verify_json(&j.verify),
                    "first_error": j.first_error,
                })
            })
            .collect();
        let cores: Vec<Value> = self
            .cores
            .iter()
            .map(|c| {
                json!({
                    "core": c.core, "elapsed_s": c.elapsed.as_secs_f64(),
                    "cpu_user_s": c.cpu_user.as_secs_f64(), "cpu_sys_s": c.cpu_sys.as_secs_f64(),
                    "passes": c.passes, "busy_passes": c.busy_passes, "sleeps": c.sleeps,
                })
            })
            .collect();
        let t = self.total();
        let (user, sys) = self.cpu_per_io_us();
        let cpu = self.reactor_cpu();
        json!({
            "tool": "shoal-perf",
            "description": self.header,
            "args": self.args,
            "jobs": jobs,
            "cores": cores,
            "total": {
                "ios": t.ios, "bytes": t.bytes, "errors": t.errors,
                "rates": rates_json(&self.total_rates()),
            },
            "cpu": {
                "per_io_us": user + sys, "user_per_io_us": user, "sys_per_io_us": sys,
                "reactor_user_s": cpu.user.as_secs_f64(), "reactor_sys_s": cpu.sys.as_secs_f64(),
                "process_user_s": self.process_cpu.user.as_secs_f64(),
                "process_sys_s": self.process_cpu.sys.as_secs_f64(),
            },
            "verify": if self.verify { verify_json(&self.verify_total()) } else { Value::Null },
            "failure": self.failure(),
        })
    }
}
