//! `shoal-csi`: Shoal's CSI driver. `--mode controller` serves Identity + Controller and
//! drives `shoal-control`; `--mode node` serves Identity + Node and connects and mounts
//! volumes on this node. See the crate documentation (`shoal_csi`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use shoal_csi::control::ControlClient;
use shoal_csi::controller::ControllerService;
use shoal_csi::identity::IdentityService;
use shoal_csi::node::NodeService;
use shoal_csi::node::nvme::{ConnectOpts, Sysfs};
use shoal_csi::node::state::StateDir;
use shoal_csi::server::{self, Role};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Controller,
    Node,
}

/// Shoal's CSI driver (CSI spec v1.9).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Which services to serve.
    #[arg(long, value_enum)]
    mode: Mode,
    /// The CSI socket (unix:///path or a path).
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    endpoint: String,
    /// Controller: shoal-control's API.
    #[arg(
        long,
        env = "SHOAL_CONTROL_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    control_url: String,
    /// Controller: timeout of one API call, seconds.
    #[arg(long, default_value_t = 30)]
    control_timeout: u64,
    /// Node: this node's id (the control plane's node id, usually the Kubernetes node name).
    #[arg(long, env = "NODE_ID")]
    node_id: Option<String>,
    /// Node: this node's zone (published as topology.shoal.io/zone).
    #[arg(long, env = "NODE_ZONE")]
    zone: Option<String>,
    /// Node: where the records of staged volumes are kept (a host path).
    #[arg(long, default_value = "/var/lib/shoal-csi")]
    state_dir: PathBuf,
    /// Node: seconds the host keeps reconnecting a broken connection (nvme --ctrl-loss-tmo;
    /// -1 for ever). Long enough for the control plane to move a nexus.
    #[arg(long, default_value_t = 600)]
    ctrl_loss_tmo: i64,
    /// Node: seconds between reconnect attempts (nvme --reconnect-delay).
    #[arg(long, default_value_t = 2)]
    reconnect_delay: u32,
    /// Node: seconds to wait for a namespace to appear after connecting.
    #[arg(long, default_value_t = 30)]
    namespace_wait: u64,
    /// Log filter (tracing's env-filter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

fn main() -> std::process::ExitCode {
    let a = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(a.log.as_str())
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shoal-csi: tokio: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(a)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal-csi: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}

async fn run(a: Args) -> Result<(), String> {
    let path = server::socket_path(&a.endpoint).map_err(|e| e.to_string())?;
    let (identity, role) = match a.mode {
        Mode::Controller => {
            let c = ControlClient::new(&a.control_url, Duration::from_secs(a.control_timeout))
                .map_err(|e| e.to_string())?;
            let identity = IdentityService {
                control: Some(c.clone()),
            };
            (
                identity,
                Role::Controller(ControllerService {
                    control: c,
                    inflight: Default::default(),
                }),
            )
        }
        Mode::Node => {
            let node_id = a
                .node_id
                .clone()
                .filter(|n| !n.is_empty())
                .ok_or("--node-id is required in node mode")?;
            let n = NodeService {
                node_id,
                zone: a.zone.clone(),
                connect: ConnectOpts {
                    ctrl_loss_tmo: a.ctrl_loss_tmo,
                    reconnect_delay: a.reconnect_delay,
                },
                namespace_wait: Duration::from_secs(a.namespace_wait),
                sys: Sysfs::default(),
                state: StateDir(a.state_dir.clone()),
                inflight: Default::default(),
            };
            (IdentityService { control: None }, Role::Node(n))
        }
    };
    tracing::info!(endpoint = %path.display(), mode = ?a.mode, "serving CSI");
    server::serve(&path, identity, role, shutdown())
        .await
        .map_err(|e| e.to_string())
}
