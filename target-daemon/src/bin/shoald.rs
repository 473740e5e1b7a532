//! `shoald`: the Shoal storage daemon (an NVMe/TCP target driven over JSON-RPC).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use shoal_reactor::{Reactor, ReactorConfig, ReactorSet, parse_core_mask};
use shoal_target::config::ConfigDocument;
use shoal_target::daemon::Daemon;
use shoal_target::methods;
use shoal_target::rpc::{AuthToken, RpcServer, ServerConfig, TcpRpcServer, TcpServerConfig};

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
    /// Also serve JSON-RPC over TCP on HOST:PORT (for the control plane). A non-loopback
    /// address needs --rpc-token-file.
    #[arg(long = "rpc-listen", value_name = "HOST:PORT")]
    rpc_listen: Option<std::net::SocketAddr>,
    /// File holding the token TCP clients must send (`rpc_auth`) before anything else; mode
    /// 0600 or stricter.
    #[arg(long = "rpc-token-file", value_name = "PATH", requires = "rpc_listen")]
    rpc_token_file: Option<PathBuf>,
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
    // Checked before anything starts: a daemon that would be open to the network never runs.
    let token = args
        .rpc_token_file
        .as_deref()
        .map(AuthToken::from_file)
        .transpose()
        .map_err(|e| e.to_string())?;
    if let Some(addr) = args.rpc_listen {
        shoal_target::rpc::auth::check_listen_address(addr, token.as_ref())
            .map_err(|e| e.to_string())?;
    }
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
    let registry_for_tcp = Arc::clone(&registry);
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
    let tcp = match args.rpc_listen {
        None => None,
        Some(addr) => {
            let server = match TcpRpcServer::bind(
                TcpServerConfig::new(addr, token),
                Arc::clone(&registry_for_tcp),
                daemon.clone(),
            ) {
                Ok(s) => s,
                Err(e) => {
                    stop.shutdown();
                    let _ = rpc_thread.join();
                    set.shutdown();
                    return Err(format!("RPC on {addr}: {e}"));
                }
            };
            tracing::info!("JSON-RPC on tcp {}", server.local_addr());
            let handle = server.shutdown_handle();
            let thread = std::thread::Builder::new()
                .name("rpc-tcp".into())
                .spawn(move || server.run())
                .map_err(|e| e.to_string())?;
            Some((handle, thread))
        }
    };
    tracing::info!("shoald ready; JSON-RPC on {}", args.rpc_socket.display());

    let mut signals = signals;
    if let Some(sig) = signals.forever().next() {
        tracing::info!("signal {sig}: shutting down");
    }
    stop.shutdown();
    let _ = rpc_thread.join();
    if let Some((handle, thread)) = tcp {
        handle.shutdown();
        let _ = thread.join();
    }
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
