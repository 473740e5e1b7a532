//! `shoal-control`: the control-plane service (`serve`) and its command-line client.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use shoal_control::api::router;
use shoal_control::ctx::Ctx;
use shoal_control::model::InstanceInfo;
use shoal_control::store::Store;
use shoal_control::{cli, leader};
use tokio::sync::watch;

/// Shoal's control plane.
#[derive(Parser, Debug)]
#[command(name = "shoal-control", version, about)]
struct Args {
    /// The API to talk to (client commands).
    #[arg(
        long,
        env = "SHOAL_API",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    api: String,
    /// Print JSON instead of tables (client commands).
    #[arg(long, global = true)]
    json: bool,
    /// Log filter (RUST_LOG syntax).
    #[arg(long, env = "SHOAL_LOG", default_value = "info", global = true)]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service: join the leader election and serve the API.
    Serve(ServeArgs),
    /// Nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Which instance leads.
    Leader,
    /// Volumes, with their replicas' states.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Events (node offline/online, replica faulted/replaced/removed, rebuilds).
    #[command(subcommand)]
    Event(EventCommand),
    /// Snapshots of volumes (every in-sync replica at one point of the writes).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

#[derive(Subcommand, Debug)]
enum SnapshotCommand {
    /// Every snapshot (or one volume's), with its replicas' lvols.
    List {
        /// Only this volume's.
        #[arg(long)]
        volume: Option<String>,
    },
    /// One snapshot.
    Get {
        /// The snapshot's id.
        id: String,
    },
    /// Takes a snapshot of a volume (the same name again answers the same snapshot).
    Create {
        /// The volume's id.
        volume: String,
        /// The snapshot's name.
        name: String,
    },
    /// Deletes a snapshot from every node.
    Delete {
        /// The snapshot's id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum VolumeCommand {
    /// Every volume, each replica's state (a progress bar for a rebuilding one).
    List,
    /// One volume.
    Get {
        /// The volume's id.
        id: String,
        /// Redraw every second while a replica is not online (a rebuild's progress bar).
        #[arg(long)]
        watch: bool,
    },
}

#[derive(Subcommand, Debug)]
enum EventCommand {
    /// The newest events, oldest first.
    List {
        /// Only this volume's.
        #[arg(long)]
        volume: Option<String>,
        /// Only this node's.
        #[arg(long)]
        node: Option<String>,
        /// Only this kind (node_offline, replica_faulted, rebuild_started, ...).
        #[arg(long)]
        kind: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// etcd endpoint(s), `http://host:port`.
    #[arg(long, required = true, value_delimiter = ',')]
    etcd: Vec<String>,
    /// Where the API listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Serve the API (which has no authentication yet) on a non-loopback address anyway.
    #[arg(long)]
    allow_unauthenticated_api: bool,
    /// This instance's id (default: host name and PID).
    #[arg(long)]
    id: Option<String>,
    /// Seconds of the leader lease: how long a dead leader holds on.
    #[arg(long, default_value_t = 5)]
    lease_ttl: i64,
    /// The nodes' `shoald --rpc-token-file` (the same token on every node).
    #[arg(long)]
    rpc_token_file: Option<std::path::PathBuf>,
    /// Seconds a node call may take.
    #[arg(long, default_value_t = 30)]
    rpc_timeout: u64,
    /// Seconds a replica's node may stay offline before the replica is replaced by a new
    /// one elsewhere (a node back sooner gets its replica re-added and partly rebuilt).
    #[arg(long, default_value_t = 10)]
    heal_after: u64,
}

#[derive(Subcommand, Debug)]
enum NodeCommand {
    /// Every registered node with its status.
    List,
    /// One node.
    Get {
        /// The node id.
        id: String,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let log = args.log.clone();
    shoal_control::binary::run(
        "shoal-control",
        &log,
        shoal_control::binary::Runtime::MultiThread(2),
        run(args),
    )
}

async fn run(args: Args) -> Result<(), String> {
    match args.command {
        Command::Serve(s) => serve(s).await,
        Command::Node(NodeCommand::List) => {
            let body = cli::get(&args.api, "/v1/nodes")
                .await
                .map_err(|e| e.to_string())?;
            if args.json {
                println!("{body:#}");
            } else {
                print!("{}", cli::node_table(&body).map_err(|e| e.to_string())?);
            }
            Ok(())
        }
        Command::Node(NodeCommand::Get { id }) => {
            let body = cli::get(&args.api, &format!("/v1/nodes/{id}"))
                .await
                .map_err(|e| e.to_string())?;
            println!("{body:#}");
            Ok(())
        }
        Command::Volume(VolumeCommand::List) => {
            let body = cli::get(&args.api, "/v1/volumes")
                .await
                .map_err(|e| e.to_string())?;
            if args.json {
                println!("{body:#}");
                return Ok(());
            }
            let mut vols = body["volumes"].as_array().cloned().unwrap_or_default();
            // The list comes from etcd; a rebuilding volume's progress from its nexus.
            for v in &mut vols {
                let rebuilding = v["replica_list"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|r| r["state"] == "rebuilding"));
                if rebuilding
                    && let Some(id) = v["id"].as_str()
                    && let Ok(one) = cli::get(&args.api, &format!("/v1/volumes/{id}")).await
                {
                    *v = one;
                }
            }
            print!("{}", cli::volume_table(&vols));
            Ok(())
        }
        Command::Volume(VolumeCommand::Get { id, watch }) => {
            let path = format!("/v1/volumes/{id}");
            let mut v = cli::get(&args.api, &path)
                .await
                .map_err(|e| e.to_string())?;
            if args.json {
                println!("{v:#}");
                return Ok(());
            }
            print!("{}", cli::volume_table(std::slice::from_ref(&v)));
            if !watch {
                return Ok(());
            }
            let healthy = |v: &serde_json::Value| {
                v["replica_list"]
                    .as_array()
                    .is_some_and(|a| a.iter().all(|r| r["state"] == "online"))
            };
            while !healthy(&v) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                v = cli::get(&args.api, &path)
                    .await
                    .map_err(|e| e.to_string())?;
                for r in v["replica_list"].as_array().into_iter().flatten() {
                    if r["state"] != "online" {
                        print!("{}", cli::replica_line(r));
                    }
                }
            }
            println!("every replica online");
            Ok(())
        }
        Command::Event(EventCommand::List {
            volume,
            node,
            kind,
            limit,
        }) => {
            let mut q = format!("/v1/events?limit={limit}");
            for (k, v) in [("volume", volume), ("node", node), ("kind", kind)] {
                if let Some(v) = v {
                    q.push_str(&format!("&{k}={v}"));
                }
            }
            let body = cli::get(&args.api, &q).await.map_err(|e| e.to_string())?;
            if args.json {
                println!("{body:#}");
            } else {
                let evs = body["events"].as_array().cloned().unwrap_or_default();
                print!("{}", cli::event_table(&evs));
            }
            Ok(())
        }
        Command::Snapshot(c) => snapshot(&args.api, args.json, c).await,
        Command::Leader => {
            let body = cli::get(&args.api, "/v1/leader")
                .await
                .map_err(|e| e.to_string())?;
            if args.json {
                println!("{body:#}");
            } else {
                match body["leader"]["id"].as_str() {
                    Some(id) => println!("{id} ({})", body["leader"]["api"].as_str().unwrap_or("")),
                    None => println!("no leader"),
                }
            }
            Ok(())
        }
    }
}

async fn snapshot(api: &str, json: bool, c: SnapshotCommand) -> Result<(), String> {
    use reqwest::Method;
    let (list, body) = match c {
        SnapshotCommand::List { volume } => {
            let q = volume.map_or(String::new(), |v| format!("?volume_id={v}"));
            let b = cli::get(api, &format!("/v1/snapshots{q}")).await;
            (true, b)
        }
        SnapshotCommand::Get { id } => (false, cli::get(api, &format!("/v1/snapshots/{id}")).await),
        SnapshotCommand::Create { volume, name } => {
            let req = serde_json::json!({ "name": name, "volume_id": volume });
            let b = cli::send(api, Method::POST, "/v1/snapshots", Some(req)).await;
            (false, b)
        }
        SnapshotCommand::Delete { id } => {
            let path = format!("/v1/snapshots/{id}");
            cli::send(api, Method::DELETE, &path, None)
                .await
                .map_err(|e| e.to_string())?;
            if !json {
                println!("snapshot {id} deleted");
            }
            return Ok(());
        }
    };
    let body = body.map_err(|e| e.to_string())?;
    if json {
        println!("{body:#}");
    } else if list {
        let all = body["snapshots"].as_array().cloned().unwrap_or_default();
        print!("{}", cli::snapshot_table(&all));
    } else {
        print!("{}", cli::snapshot_table(std::slice::from_ref(&body)));
    }
    Ok(())
}

async fn serve(s: ServeArgs) -> Result<(), String> {
    if !s.listen.ip().is_loopback() && !s.allow_unauthenticated_api {
        return Err(format!(
            "refusing to serve the API on {} without authentication; use a loopback address or --allow-unauthenticated-api",
            s.listen
        ));
    }
    if !(2..=3600).contains(&s.lease_ttl) {
        return Err(format!("--lease-ttl {}: 2 to 3600 seconds", s.lease_ttl));
    }
    let store = Store::connect(&s.etcd, Duration::from_secs(3))
        .await
        .map_err(|e| format!("etcd {:?}: {e}", s.etcd))?;
    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", s.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let info = InstanceInfo {
        id: s
            .id
            .unwrap_or_else(|| format!("{}-{}", host.trim(), std::process::id())),
        api: format!("http://{local}"),
    };
    let token = s
        .rpc_token_file
        .as_deref()
        .map(shoal_control::node_rpc::read_token)
        .transpose()
        .map_err(|e| format!("--rpc-token-file: {e}"))?;
    let (state_tx, state_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = std::sync::Arc::new(Ctx {
        store,
        instance: info.clone(),
        leading: state_rx,
        token,
        rpc_timeout: Duration::from_secs(s.rpc_timeout.clamp(1, 3600)),
        ops: tokio::sync::Mutex::new(()),
        heal_after: Duration::from_secs(s.heal_after),
    });
    let election = tokio::spawn(leader::run(
        ctx.clone(),
        info.clone(),
        s.lease_ttl,
        state_tx,
        stop_rx.clone(),
    ));
    let app = router(ctx);
    tracing::info!(id = %info.id, api = %info.api, "shoal-control serving");
    let mut stop_api = stop_rx.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop_api.wait_for(|s| *s).await;
    });
    let server = tokio::spawn(async move { server.await });
    wait_for_signal().await;
    tracing::info!("stopping: resigning leadership");
    stop_tx.send_replace(true);
    let _ = election.await;
    let _ = server.await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
