//! `shoal-perf`: a closed-loop load generator in the manner of SPDK's `spdk_nvme_perf`, with
//! the same options for what both do, so that results compare one to one.
//!
//! Each core of the mask runs one pinned reactor; each of its jobs keeps `-q` I/Os of `-o`
//! bytes in flight for `-t` seconds ([`job`], [`runner`]) and records how many completed and
//! how long each took (a log-linear histogram per job: [`histogram`]). What the I/Os go to is
//! the mode:
//! - `-r TRID` (repeatable): NVMe/TCP namespaces through Shoal's host library ([`nvme`]), e.g.
//!   `-r 'trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:NQN ns:1'` ([`trid`]);
//!   one job per namespace per core, each on `-P` queue pairs of its own.
//! - `--bdev SPEC`: a local block device ([`bdev`]), e.g. `uring:/var/tmp/disk`, `malloc:256`
//!   (MiB) or `null:1024` (MiB).
//!
//! `-V` verifies data ([`verify`]). The report ([`report`]) has `spdk_nvme_perf`'s table plus
//! p50 / p99 / p99.9, the CPU time per I/O, and with `--json` is one JSON document.
//!
//! The loop reuses each I/O's buffer and its `BdevIo` for the next I/O, so the measurement does
//! not allocate per I/O.

pub mod bdev;
pub mod cpu;
pub mod histogram;
pub mod job;
pub mod nvme;
pub mod report;
pub mod runner;
pub mod stats;
pub mod trid;
pub mod verify;

use std::time::Duration;

use shoal_reactor::ReactorConfig;

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

/// An identifier of this run, written into every block with `-V` (the clock's nanoseconds
/// mixed with the process ID).
pub fn run_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            u64::try_from(d.as_nanos() & u128::from(u64::MAX)).unwrap_or(0)
        });
    nanos.rotate_left(20) ^ u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The seed of the offset generator of job `index` on `core`.
pub fn job_seed(core: usize, index: usize) -> u64 {
    let c = u64::try_from(core).unwrap_or(0);
    let i = u64::try_from(index).unwrap_or(0);
    0x9E37_79B9_7F4A_7C15_u64
        ^ c.wrapping_add(1).wrapping_mul(0xBF58_476D_1CE4_E5B9)
        ^ i.wrapping_add(1).wrapping_mul(0x94D0_49BB_1331_11EB)
}

/// Command-line options of `shoal-perf`.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "shoal-perf",
    version,
    disable_version_flag = true,
    about = "Closed-loop I/O load generator with spdk_nvme_perf's options"
)]
pub struct Args {
    /// Print the version.
    #[arg(long, action = clap::ArgAction::Version)]
    version: Option<bool>,
    /// NVMe/TCP target, as SPDK writes it: 'trtype:TCP adrfam:IPv4 traddr:127.0.0.1
    /// trsvcid:4420 subnqn:NQN', optionally with ns:N and hostnqn:NQN. Repeatable. Without ns:
    /// every active namespace; without subnqn: every subsystem of the discovery log there.
    #[arg(
        short = 'r',
        long = "transport",
        value_name = "TRID",
        conflicts_with = "bdev"
    )]
    pub transport_ids: Vec<String>,
    /// Drive a local block device: `uring:PATH`, `malloc:MIB` or `null:MIB`.
    #[arg(long, value_name = "SPEC")]
    pub bdev: Option<String>,
    /// I/Os kept in flight per namespace (device) per core.
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
    /// Queue pairs (TCP connections) per namespace per core; the `-q` I/Os are spread over
    /// them.
    #[arg(short = 'P', long = "num-qpairs", default_value_t = 1)]
    pub connections: u32,
    /// NVMe/TCP header digests (CRC32C of every PDU header).
    #[arg(short = 'H', long = "enable-tcp-hdgst")]
    pub header_digest: bool,
    /// NVMe/TCP data digests (CRC32C of every PDU's data).
    #[arg(short = 'I', long = "enable-tcp-ddgst")]
    pub data_digest: bool,
    /// This host's NQN (default: a random `nqn.2014-08.org.nvmexpress:uuid:...`).
    #[arg(long, value_name = "NQN")]
    pub hostnqn: Option<String>,
    /// Verify data: writes carry a header (LBA, sequence number, CRC32C) and a seeded fill,
    /// reads are checked against the last write; a mismatch fails the run.
    #[arg(short = 'V', long = "verify")]
    pub verify: bool,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Print a progress line every second on stderr (default: when stderr is a terminal).
    #[arg(long)]
    pub progress: bool,
    /// NVMe/TCP: wait between reconnect attempts after the target went away.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub reconnect_delay_ms: u64,
    /// NVMe/TCP: how long to keep reconnecting before failing I/O (controller-loss timeout).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub ctrl_loss_tmo: u64,
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

    /// How the run is watched.
    pub fn run_options(&self) -> runner::RunOptions {
        use std::io::IsTerminal;
        runner::RunOptions {
            time: Duration::from_secs(self.time_secs),
            ready_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(self.ctrl_loss_tmo + 40),
            progress: self.progress || (!self.json && std::io::stderr().is_terminal()),
        }
    }

    /// The options, for the JSON report.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "transport_ids": self.transport_ids, "bdev": self.bdev,
            "queue_depth": self.queue_depth, "io_size": self.io_size,
            "workload": format!("{:?}", self.workload).to_lowercase(),
            "read_percent": self.workload.read_percent(self.rwmixread),
            "time_s": self.time_secs, "core_mask": self.core_mask,
            "connections": self.connections, "header_digest": self.header_digest,
            "data_digest": self.data_digest, "verify": self.verify,
            "polling": self.polling_mode(),
        })
    }

    /// Checks the options that do not depend on the target.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("-P must be at least 1".into());
        }
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
