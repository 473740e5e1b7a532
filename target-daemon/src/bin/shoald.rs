//! `shoald`: the Shoal storage daemon (an NVMe/TCP target driven over JSON-RPC).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use shoal_bdev::reactor::{Reactor, ReactorConfig, ReactorSet, parse_core_mask};
use shoal_target::config::ConfigDocument;
use shoal_target::daemon::Daemon;
use shoal_target::methods;
use shoal_target::rpc::{RpcServer, ServerConfig};

/// The configuration `shoald` runs when started without `-c`: a 64 MiB RAM namespace on
/// 127.0.0.1:4420 with discovery on 127.0.0.1:8009.
const DEFAULT_CONFIG: &str = include_str!("../../config/default.json");

/// Shoal's storage daemon: an NVMe-over-TCP target on io_uring reactors.
#[derive(Parser, Debug)]
#[command(name = "shoald", version, about)]
struct Args {
    /// Cores to run reactors on, as an SPDK core mask (0x3) or list ([0,1]).
    #[arg(short = 'm', long = "cpumask", default_value = "0x1")]
    cpumask: String,
    /// SPDK-format JSON configuration to start from (default: the built-in one).
    #[arg(short = 'c', long = "config", visible_alias = "json")]
    config: Option<PathBuf>,
    /// Start with no configuration at all (everything through RPC).
    #[arg(long, conflicts_with = "config")]
    empty: bool,
    /// JSON-RPC Unix socket.
    #[arg(
        short = 'r',
        long = "rpc-socket",
        default_value = "/var/tmp/shoal.sock"
    )]
    rpc_socket: PathBuf,
    /// Microseconds a reactor spins without work before sleeping in the kernel.
    #[arg(long, default_value_t = 100)]
    idle_spin_us: u64,
    /// Never sleep: poll continuously (as SPDK does), for comparison.
    #[arg(long)]
    busy_poll: bool,
    /// Log filter (RUST_LOG syntax), e.g. `info` or `shoal_nvmf=debug`.
    #[arg(long, env = "SHOAL_LOG", default_value = "info")]
    log: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoald: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let cores = parse_core_mask(&args.cpumask)?;
    let document = match (&args.config, args.empty) {
        (_, true) => None,
        (Some(p), _) => Some(ConfigDocument::load(p).map_err(|e| e.to_string())?),
        (None, _) => Some(ConfigDocument::parse(DEFAULT_CONFIG).map_err(|e| e.to_string())?),
    };
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let config = ReactorConfig {
        idle_spin: (!args.busy_poll).then(|| Duration::from_micros(args.idle_spin_us)),
        ..ReactorConfig::default()
    };
    let set = ReactorSet::start(&cores, config, Arc::new(|_: &Reactor| {}))
        .map_err(|e| format!("cannot start reactors: {e}"))?;
    tracing::info!("{} reactor(s) on cores {cores:?}", set.handles().len());
    let daemon = Arc::new(Daemon::new(set.handles().to_vec()));
    let registry = Arc::new(methods::registry());
    if let Some(doc) = document
        && let Err(e) = doc.apply(&registry, &daemon)
    {
        set.shutdown();
        return Err(format!("configuration: {e}"));
    }
    methods::finish_init(&registry);
    let server = RpcServer::bind(
        ServerConfig::with_path(&args.rpc_socket),
        registry,
        daemon.clone(),
    )
    .map_err(|e| format!("RPC socket {}: {e}", args.rpc_socket.display()))?;
    let stop = server.shutdown_handle();
    let rpc_thread = std::thread::Builder::new()
        .name("rpc".into())
        .spawn(move || server.run())
        .map_err(|e| e.to_string())?;
    tracing::info!("shoald ready; JSON-RPC on {}", args.rpc_socket.display());

    let mut signals = signals;
    if let Some(sig) = signals.forever().next() {
        tracing::info!("signal {sig}: shutting down");
    }
    stop.shutdown();
    let _ = rpc_thread.join();
    daemon.quiesce();
    // Close every nexus cleanly (its replicas' labels say so, and its connections to remote
    // replicas close), let in-flight I/O drain, then flush every bdev.
    methods::nexus::shutdown(&daemon);
    daemon.wait_drained();
    methods::flush_all(&daemon);
    set.shutdown();
    tracing::info!("shoald stopped");
    Ok(())
}
