//! `--bdev` mode: load on a local block device, one job per core of `-c`, each on its own
//! channel.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::null::NullBdev;
use shoal_bdev::uring::UringBdev;
use shoal_bdev::{Bdev, BdevError, BdevIo, IoChannel, IoSink, open_channel};
use shoal_reactor::{Reactor, ReactorSet, parse_core_mask};

use super::job::{IoTarget, JobConfig, Progress};
use super::report::Report;
use super::runner::{self, Setup};
use super::verify::VerifyMap;
use super::{Args, cpu, job_seed, run_id};

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

/// Opens a channel to the device on each reactor.
struct BdevSetup {
    bdev: Arc<dyn Bdev>,
    jobs: Vec<JobConfig>,
}

/// A bdev channel as a job's target.
struct ChannelTarget(IoChannel);

impl IoTarget for ChannelTarget {
    fn submit(&self, io: BdevIo, sink: Rc<dyn IoSink>, tag: u64) {
        self.0.submit(io, sink, tag);
    }

    fn ready(&self) -> Result<bool, String> {
        Ok(true)
    }
}

impl Setup for BdevSetup {
    fn jobs(
        &self,
        index: usize,
        _core: usize,
    ) -> Result<Vec<(JobConfig, Box<dyn IoTarget>)>, String> {
        let chan = open_channel(&self.bdev).map_err(|e| format!("cannot open a channel: {e}"))?;
        let cfg = self
            .jobs
            .get(index)
            .cloned()
            .ok_or("no job for this core")?;
        Ok(vec![(cfg, Box::new(ChannelTarget(chan)))])
    }
}

/// Runs the load of `args` on the device `spec` and returns what it measured.
pub fn run(args: &Args, spec: &BdevSpec) -> Result<Report, String> {
    args.validate()?;
    let cores = parse_core_mask(&args.core_mask)?;
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
    let slots = info.num_blocks() / blocks_per_io;
    if slots == 0 {
        return Err(format!("-o {} is larger than the device", args.io_size));
    }
    let verify = if args.verify {
        let in_flight = u64::from(args.queue_depth) * u64::try_from(cores.len()).unwrap_or(1);
        if slots <= in_flight {
            return Err(format!(
                "-V needs more I/O slots ({slots}) than I/Os in flight ({in_flight})"
            ));
        }
        Some(Arc::new(VerifyMap::new(
            run_id(),
            bs,
            blocks_per_io,
            slots,
        )?))
    } else {
        None
    };
    let header = format!(
        "shoal-perf: {} ({}, {} blocks of {bs} B), {:?}, {} B, qd {}, {} s, cores {cores:?}, {}{}",
        info.name,
        info.product_name,
        info.num_blocks(),
        args.workload,
        args.io_size,
        args.queue_depth,
        args.time_secs,
        args.polling_mode(),
        if args.verify { ", verify" } else { "" },
    );
    let mut progress = Vec::new();
    let jobs = cores
        .iter()
        .map(|&core| {
            let p = Arc::new(Progress::default());
            progress.push(p.clone());
            JobConfig {
                label: format!("{} from core {core:>2}", info.name),
                core,
                nsid: None,
                block_size: bs,
                blocks_per_io,
                slots,
                queue_depth: args.queue_depth,
                read_percent: args.workload.read_percent(args.rwmixread),
                random: args.workload.random(),
                seed: job_seed(core, 0),
                verify: verify.clone(),
                progress: p,
            }
        })
        .collect();
    let setup = Arc::new(BdevSetup {
        bdev: bdev.clone(),
        jobs,
    });
    let set = ReactorSet::start(&cores, args.reactor_config(), Arc::new(|_: &Reactor| {}))
        .map_err(|e| format!("cannot start reactors: {e}"))?;
    let cpu0 = cpu::process();
    let measured = runner::run(&set, &cores, setup, &progress, args.run_options());
    set.shutdown();
    let measured = measured?;
    Ok(Report::new(
        header,
        args,
        measured,
        cpu::process().since(cpu0),
    ))
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

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["shoal-perf"];
        v.extend_from_slice(extra);
        Args::parse_from(v)
    }

    #[test]
    fn a_short_run_on_a_ram_disk_completes_ios() {
        let args = args(&["-q", "8", "-o", "4096", "-w", "randrw", "-t", "1"]);
        let report = run(&args, &BdevSpec::Malloc(16)).unwrap();
        let total = report.total();
        assert!(total.ios > 1000, "{total:?}");
        assert_eq!(total.errors, 0);
        assert_eq!(total.bytes, total.ios * 4096);
        assert_eq!(total.hist.count(), total.ios);
        let text = report.render();
        assert!(text.lines().any(|l| l.starts_with("Total")), "{text}");
        assert!(text.contains("us per I/O"), "{text}");
        assert!(report.cores[0].elapsed >= std::time::Duration::from_secs(1));
        assert!(report.cores[0].cpu() > std::time::Duration::ZERO);
        assert_eq!(report.failure(), None);
        let json = report.to_json();
        assert_eq!(json["total"]["ios"], total.ios);
        assert!(json["cpu"]["per_io_us"].as_f64().unwrap() > 0.0);
    }

    #[test]
    fn verify_on_a_ram_disk_checks_reads_on_two_cores() {
        let args = args(&[
            "-q", "16", "-o", "8192", "-w", "randrw", "-M", "50", "-t", "1", "-V", "-c", "[0,1]",
        ]);
        // 1 MiB: 128 slots for 32 I/Os in flight, so that slots are often busy.
        let report = run(&args, &BdevSpec::Malloc(1)).unwrap();
        let v = report.verify_total();
        assert!(v.reads_checked > 1000 && v.writes > 1000, "{v:?}");
        assert_eq!(v.mismatches, 0, "{v:?}");
        assert_eq!(report.failure(), None);
        assert!(report.render().contains("0 mismatches"));
    }

    #[test]
    fn verify_refuses_more_ios_in_flight_than_slots() {
        let args = args(&["-q", "300", "-t", "1", "-V"]);
        let e = run(&args, &BdevSpec::Malloc(1)).unwrap_err();
        assert!(e.contains("-V needs more I/O slots"), "{e}");
    }
}
