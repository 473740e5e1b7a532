//! `shoal-perf`: a closed-loop load generator in the manner of SPDK's `spdk_nvme_perf`.
//!
//! Each core of the mask runs one pinned reactor that keeps `-q` I/Os of `-o` bytes in flight
//! for `-t` seconds and records how many completed and how long each took. The options follow
//! `spdk_nvme_perf` (`-q -o -w -M -t -c`). What the I/Os go to is the mode:
//! - `--bdev SPEC`: a local block device ([`bdev`]), e.g. `uring:/var/tmp/disk`, `malloc:256`
//!   (MiB) or `null:1024` (MiB).
//!
//! The loop reuses each I/O's buffer and its `BdevIo` for the next I/O, so the measurement does
//! not allocate per I/O.

pub mod bdev;
pub mod stats;

use std::time::Duration;

use shoal_bdev::reactor::ReactorConfig;

/// The access pattern (`-w`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Random reads.
    Randread,
    /// Random writes.
    Randwrite,
    /// Sequential reads and writes mixed by `-M`.
    Rw,
    /// Random reads and writes mixed by `-M`.
    Randrw,
}

impl Workload {
    /// Whether offsets are random (else sequential).
    pub fn random(self) -> bool {
        matches!(
            self,
            Workload::Randread | Workload::Randwrite | Workload::Randrw
        )
    }

    /// Percentage of reads, given the `-M` mix for mixed workloads.
    pub fn read_percent(self, rwmixread: u8) -> u8 {
        match self {
            Workload::Read | Workload::Randread => 100,
            Workload::Write | Workload::Randwrite => 0,
            Workload::Rw | Workload::Randrw => rwmixread.min(100),
        }
    }
}

/// Command-line options of `shoal-perf`.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "shoal-perf",
    version,
    about = "Closed-loop I/O load generator (spdk_nvme_perf style)"
)]
pub struct Args {
    /// Drive a local block device: `uring:PATH`, `malloc:MIB` or `null:MIB`.
    #[arg(long, value_name = "SPEC")]
    pub bdev: Option<String>,
    /// I/Os kept in flight per core.
    #[arg(short = 'q', long = "io-depth", default_value_t = 32)]
    pub queue_depth: u32,
    /// Bytes per I/O.
    #[arg(short = 'o', long = "io-size", default_value_t = 4096)]
    pub io_size: u32,
    /// Access pattern.
    #[arg(
        short = 'w',
        long = "io-pattern",
        value_enum,
        default_value = "randread"
    )]
    pub workload: Workload,
    /// Percentage of reads for `rw` and `randrw`.
    #[arg(short = 'M', long = "rwmixread", default_value_t = 50)]
    pub rwmixread: u8,
    /// Seconds to run.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub time_secs: u64,
    /// Cores to run on, as an SPDK core mask (`0x2` is core 1) or a list (`[0,1]`).
    #[arg(short = 'c', long = "core-mask", default_value = "0x1")]
    pub core_mask: String,
    /// Block size of the device (uring: at least the device's logical block; default: it).
    #[arg(long)]
    pub block_size: Option<u32>,
    /// Busy-poll forever (SPDK's behaviour) instead of sleeping when idle.
    #[arg(long)]
    pub busy_poll: bool,
    /// Microseconds an idle reactor keeps spinning before it sleeps (adaptive polling).
    #[arg(long, value_name = "US")]
    pub idle_spin_us: Option<u64>,
    /// Submit disk I/O once per reactor pass instead of as each I/O is queued (see
    /// `ReactorConfig::disk_submit_at_once`).
    #[arg(long)]
    pub batched_submit: bool,
}

impl Args {
    /// The reactor settings these options ask for.
    pub fn reactor_config(&self) -> ReactorConfig {
        let mut config = ReactorConfig::default();
        if self.busy_poll {
            config.idle_spin = None;
        } else if let Some(us) = self.idle_spin_us {
            config.idle_spin = Some(Duration::from_micros(us));
        }
        config.disk_submit_at_once = !self.batched_submit;
        config
    }

    /// A one-line description of the polling mode.
    pub fn polling_mode(&self) -> String {
        let config = self.reactor_config();
        let polling = match config.idle_spin {
            None => "busy polling".to_string(),
            Some(d) => format!("adaptive polling (idle spin {} us)", d.as_micros()),
        };
        let submit = if config.disk_submit_at_once {
            "at once"
        } else {
            "per pass"
        };
        format!("{polling}, disk I/O submitted {submit}")
    }

    /// Checks the options that do not depend on the target.
    pub fn validate(&self) -> Result<(), String> {
        if self.queue_depth == 0 {
            return Err("-q must be at least 1".into());
        }
        if self.io_size == 0 {
            return Err("-o must be at least 1".into());
        }
        if self.time_secs == 0 {
            return Err("-t must be at least 1".into());
        }
        if self.rwmixread > 100 {
            return Err("-M is a percentage (0-100)".into());
        }
        Ok(())
    }
}
