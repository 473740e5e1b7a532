//! `shoal-agent`: registers the `shoald` next to it in etcd and keeps it online while it
//! answers (see `shoal_control::agent`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use shoal_control::agent::{self, AgentConfig};
use shoal_control::node_rpc::read_token;
use shoal_control::store::Store;
use tokio::sync::watch;

/// Registers a Shoal node with the control plane.
#[derive(Parser, Debug)]
#[command(name = "shoal-agent", version, about)]
struct Args {
    /// etcd endpoint(s), `http://host:port`.
    #[arg(long, required = true, value_delimiter = ',')]
    etcd: Vec<String>,
    /// The node's id (letters, digits, '.', '_', '-').
    #[arg(long)]
    node_id: String,
    /// The NVMe/TCP address hosts and other nodes use.
    #[arg(long)]
    nvmf_addr: SocketAddr,
    /// `shoald --rpc-listen` address.
    #[arg(long)]
    rpc_endpoint: SocketAddr,
    /// `shoald --rpc-token-file` (the same file).
    #[arg(long)]
    rpc_token_file: Option<PathBuf>,
    /// Topology label KEY=VALUE (repeatable), e.g. `--label zone=a`.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Seconds of the node's lease: how long a dead agent's node stays online.
    #[arg(long, default_value_t = 5)]
    lease_ttl: i64,
    /// Log filter (RUST_LOG syntax).
    #[arg(long, env = "SHOAL_LOG", default_value = "info")]
    log: String,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected KEY=VALUE")?;
    Ok((k.to_owned(), v.to_owned()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let log = args.log.clone();
    shoal_control::binary::run(
        "shoal-agent",
        &log,
        shoal_control::binary::Runtime::CurrentThread,
        run(args),
    )
}

async fn run(args: Args) -> Result<(), String> {
    let token = args
        .rpc_token_file
        .as_deref()
        .map(read_token)
        .transpose()
        .map_err(|e| format!("token file: {e}"))?;
    let cfg = AgentConfig {
        node_id: args.node_id,
        nvmf_addr: args.nvmf_addr,
        rpc_endpoint: args.rpc_endpoint,
        token,
        labels: args.labels.into_iter().collect::<BTreeMap<_, _>>(),
        ttl_secs: args.lease_ttl,
    };
    cfg.validate().map_err(|e| e.to_string())?;
    let store = Store::connect(&args.etcd, Duration::from_secs(3))
        .await
        .map_err(|e| format!("etcd {:?}: {e}", args.etcd))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(agent::run(store, cfg, stop_rx));
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    stop_tx.send_replace(true);
    let _ = task.await;
    // Give the lease revocation spawned by the guard a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}
