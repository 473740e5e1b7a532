//! The command line of `shoalctl` (clap definitions).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use shoal_target::rpc::server::DEFAULT_SOCKET_PATH;

/// Control a running shoald over its JSON-RPC socket.
#[derive(Parser, Debug)]
#[command(name = "shoalctl", version, about)]
pub struct Cli {
    /// The daemon's JSON-RPC socket.
    #[arg(short = 's', long = "socket", global = true, default_value = DEFAULT_SOCKET_PATH)]
    pub socket: PathBuf,
    /// Print the raw JSON result instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for an answer.
    #[arg(short = 't', long = "timeout", global = true, default_value_t = 60)]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Block devices.
    #[command(subcommand)]
    Bdev(BdevCmd),
    /// Replicated volumes (nexuses) and their rebuilds.
    #[command(subcommand)]
    Nexus(crate::nexus::NexusCmd),
    /// Pools (lvstores) that logical volumes are carved from.
    #[command(subcommand)]
    Pool(crate::lvol::PoolCmd),
    /// Logical volumes: thin or thick, snapshots and clones.
    #[command(subcommand)]
    Volume(crate::lvol::VolumeCmd),
    /// The NVMe-over-TCP target.
    #[command(subcommand)]
    Nvmf(NvmfCmd),
    /// The daemon's configuration (SPDK JSON format).
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Call any RPC method; PARAMS is a JSON object, or `-` to read it from stdin.
    Rpc {
        method: String,
        params: Option<String>,
    },
    /// The daemon's version.
    Version,
    /// The RPC methods the daemon serves.
    Methods,
}

#[derive(Subcommand, Debug)]
pub enum BdevCmd {
    /// List block devices (or one).
    List { name: Option<String> },
    /// RAM disks.
    #[command(subcommand)]
    Malloc(SizedCmd),
    /// Devices that discard writes and read zeroes.
    #[command(subcommand)]
    Null(SizedCmd),
    /// Files and block devices through io_uring.
    #[command(subcommand)]
    Uring(UringCmd),
    /// Fault-injecting devices stacked on another (named EE_<base>).
    #[command(subcommand)]
    Error(ErrorCmd),
    /// Latency-adding devices stacked on another.
    #[command(subcommand)]
    Delay(DelayCmd),
    /// Delete a block device of any kind.
    Delete { name: String },
    /// I/O counters of every device (or of those named).
    Iostat { names: Vec<String> },
}

#[derive(Subcommand, Debug)]
pub enum SizedCmd {
    /// Create one.
    Create {
        name: String,
        /// Size, e.g. 64MiB, 1G (binary units).
        #[arg(long)]
        size: String,
        /// Block size in bytes (512 or 4096).
        #[arg(long, default_value_t = 512)]
        block_size: u32,
        #[arg(long)]
        uuid: Option<String>,
    },
    /// Delete one.
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
pub enum UringCmd {
    /// Open a file or block device as a bdev.
    Create {
        name: String,
        path: String,
        /// Block size in bytes (default: the device's logical block).
        #[arg(long)]
        block_size: Option<u32>,
        #[arg(long)]
        uuid: Option<String>,
    },
    /// Delete one.
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
pub enum ErrorCmd {
    /// Stack an error device on BASE.
    Create {
        base: String,
        #[arg(long)]
        uuid: Option<String>,
    },
    /// Inject errors: TYPE is failure, pending or corrupt_data.
    Inject {
        name: String,
        /// read, write, unmap, flush or all.
        #[arg(long, default_value = "all")]
        io_type: String,
        #[arg(long = "type", default_value = "failure")]
        error_type: String,
        /// How many I/Os to affect.
        #[arg(long, default_value_t = 1)]
        num: u32,
        #[arg(long)]
        corrupt_offset: Option<u64>,
        #[arg(long)]
        corrupt_value: Option<u8>,
    },
    /// Remove every injection (held I/Os go on).
    Clear { name: String },
    /// Delete one.
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
pub enum DelayCmd {
    /// Stack a delay device NAME on BASE; latencies in microseconds.
    Create {
        name: String,
        base: String,
        #[arg(long, default_value_t = 0)]
        read_latency: u64,
        #[arg(long, default_value_t = 0)]
        write_latency: u64,
        /// Latency of 1% of reads (default: the read latency).
        #[arg(long)]
        p99_read_latency: Option<u64>,
        /// Latency of 1% of writes (default: the write latency).
        #[arg(long)]
        p99_write_latency: Option<u64>,
        #[arg(long)]
        uuid: Option<String>,
    },
    /// Change one latency: TYPE is avg_read, p99_read, avg_write or p99_write.
    Update {
        name: String,
        latency_type: String,
        latency_us: u64,
    },
    /// Delete one.
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
pub enum NvmfCmd {
    /// The TCP transport.
    #[command(subcommand)]
    Transport(TransportCmd),
    /// Subsystems.
    #[command(subcommand)]
    Subsystem(SubsystemCmd),
    /// Namespaces of a subsystem.
    #[command(subcommand)]
    Ns(NsCmd),
    /// Listen addresses of a subsystem (NQN `discovery` for the discovery service).
    #[command(subcommand)]
    Listener(ListenerCmd),
    /// Hosts allowed on a subsystem.
    #[command(subcommand)]
    Host(HostCmd),
    /// Controllers connected to a subsystem.
    Controllers { nqn: String },
    /// Queue pairs connected to a subsystem.
    Qpairs { nqn: String },
    /// Per-reactor statistics.
    Stats,
}

#[derive(Subcommand, Debug)]
pub enum TransportCmd {
    /// Create the TCP transport.
    Create {
        #[arg(long)]
        max_queue_depth: Option<u16>,
        #[arg(long)]
        max_io_qpairs_per_ctrlr: Option<u16>,
        #[arg(long)]
        in_capsule_data_size: Option<u32>,
        #[arg(long)]
        max_io_size: Option<u32>,
        #[arg(long)]
        max_aq_depth: Option<u32>,
        /// Listen backlog (0: /proc/sys/net/core/somaxconn).
        #[arg(long)]
        acceptor_backlog: Option<u32>,
        /// Unsent bytes a connection holds before it stops reading commands.
        #[arg(long)]
        max_unsent_bytes: Option<u32>,
        /// Milliseconds a new connection has to send its ICReq and connect (0: no limit).
        #[arg(long)]
        ic_timeout_ms: Option<u32>,
        /// Connections a listener holds at once (0: no limit).
        #[arg(long)]
        max_connections_per_listener: Option<u32>,
        /// Connections one host address holds at once on a listener (0: no limit).
        #[arg(long)]
        max_connections_per_host: Option<u32>,
    },
    /// Show the transport.
    List,
}

#[derive(Subcommand, Debug)]
pub enum SubsystemCmd {
    /// Create a subsystem.
    Create {
        nqn: String,
        #[arg(long)]
        allow_any_host: bool,
        #[arg(long)]
        serial: Option<String>,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        max_namespaces: Option<u32>,
    },
    /// List subsystems (or one).
    List { nqn: Option<String> },
    /// Delete a subsystem.
    Delete { nqn: String },
    /// Allow any host (`on`) or only the listed hosts (`off`).
    AllowAnyHost {
        nqn: String,
        #[arg(value_parser = ["on", "off"])]
        setting: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum NsCmd {
    /// Export BDEV as a namespace; prints its NSID.
    Add {
        nqn: String,
        bdev: String,
        #[arg(long)]
        nsid: Option<u32>,
        #[arg(long)]
        uuid: Option<String>,
        /// 32 hex digits.
        #[arg(long)]
        nguid: Option<String>,
        /// 16 hex digits.
        #[arg(long)]
        eui64: Option<String>,
    },
    /// Remove a namespace.
    Remove { nqn: String, nsid: u32 },
}

#[derive(Subcommand, Debug)]
pub enum ListenerCmd {
    /// Listen on ADDR:PORT (127.0.0.1:4420, [::1]:4420).
    Add { nqn: String, address: String },
    /// Stop listening on ADDR:PORT.
    Remove { nqn: String, address: String },
    /// List a subsystem's listeners.
    List { nqn: String },
}

#[derive(Subcommand, Debug)]
pub enum HostCmd {
    /// Allow HOSTNQN.
    Add { nqn: String, host: String },
    /// Disallow HOSTNQN (its controllers are disconnected).
    Remove { nqn: String, host: String },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Write the configuration to FILE (or stdout).
    Save { file: Option<PathBuf> },
    /// Apply a configuration file, call by call.
    Load { file: PathBuf },
}
