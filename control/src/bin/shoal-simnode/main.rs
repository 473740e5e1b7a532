//! `shoal-simnode`: many SIMULATED Shoal nodes in one process, for measuring the control
//! plane's own cost at a scale this machine cannot hold in real `shoald` processes
//! (`hack/bench-control-scale.sh`, issue 16's scale benchmark). Not a storage node: it stores
//! nothing and serves no NVMe/TCP.
//!
//! Each simulated node has its own JSON-RPC endpoint on TCP (`<ip-prefix>.<n>`, an ephemeral
//! port), with the same framing and token step as `shoald --rpc-listen`, answering the methods
//! the control plane calls from state kept in memory ([`state::SimNode`]: pools with capacity,
//! lvols, exports, nexuses whose added children rebuild for `--rebuild-ms`). Each registers
//! exactly as a real node does: through `shoal_control::agent` (the code of `shoal-agent`),
//! with its own etcd lease, probing its endpoint before every renewal. Its version says
//! `SIMULATED`, so `shoal-control node list` shows what it is.
//!
//! Each node also listens on its NVMe/TCP address (port 4420), accepting and closing every
//! connection: no NVMe/TCP is spoken there, it only tells the other simulated nodes that it is
//! up. Every half second the process tries to connect to the addresses of its nexuses'
//! remote children, and a child whose address refuses is faulted (`disconnected`), as a real
//! nexus faults a child whose node died.
//!
//! Taking nodes offline: `kill -9` of the process (leases expire after their TTL, endpoints
//! close), as a crash of those nodes; SIGTERM stops them cleanly (leases revoked). SIGUSR1
//! prints the calls received so far, by method, as one JSON line on stdout.

mod state;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};
use shoal_control::agent::{self, AgentConfig};
use shoal_control::node_rpc::read_token;
use shoal_control::store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use state::SimNode;

/// Largest request accepted on a connection.
const MAX_REQUEST_BYTES: usize = 1 << 20;
/// `shoald`'s code for a refused authentication.
const AUTH_FAILED: i64 = -32001;

/// SIMULATED Shoal nodes (for the control plane's scale benchmark; they store nothing).
#[derive(Parser, Debug)]
#[command(name = "shoal-simnode", version, about)]
struct Args {
    /// etcd endpoint(s), `http://host:port`.
    #[arg(long, required = true, value_delimiter = ',')]
    etcd: Vec<String>,
    /// The numbers of the nodes this process simulates, 1 to 254: a comma-separated list
    /// of numbers and ranges (`1-9,11-19`); node n is `<id-prefix>-<nnn>` on `<ip-prefix>.<n>`.
    #[arg(long, default_value = "1-10", value_parser = parse_numbers)]
    numbers: BTreeSet<u8>,
    /// The first three octets of the nodes' loopback addresses.
    #[arg(long, default_value = "127.77.0")]
    ip_prefix: String,
    /// Node ids are this, a dash and the node's number.
    #[arg(long, default_value = "sim")]
    id_prefix: String,
    /// Token file (the control plane's `--rpc-token-file`).
    #[arg(long)]
    rpc_token_file: Option<PathBuf>,
    /// Zones: node n gets `zone=z<n mod zones>` (0: no zone label).
    #[arg(long, default_value_t = 5)]
    zones: u8,
    /// Seconds of each node's lease.
    #[arg(long, default_value_t = 3)]
    lease_ttl: i64,
    /// Cluster size of the simulated pools, in MiB.
    #[arg(long, default_value_t = 4)]
    cluster_mib: u64,
    /// Size a simulated `uring` disk pretends to have, in GiB.
    #[arg(long, default_value_t = 1024)]
    uring_gib: u64,
    /// How long a child added to a simulated nexus stays `rebuilding`, in milliseconds.
    #[arg(long, default_value_t = 0)]
    rebuild_ms: u64,
    /// Log filter (RUST_LOG syntax).
    #[arg(long, env = "SHOAL_LOG", default_value = "warn")]
    log: String,
}

fn parse_numbers(s: &str) -> Result<BTreeSet<u8>, String> {
    let mut out = BTreeSet::new();
    for part in s.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let num = |x: &str| {
            x.trim()
                .parse::<u8>()
                .ok()
                .filter(|n| (1..=254).contains(n))
                .ok_or_else(|| format!("{x:?}: a node number is 1 to 254"))
        };
        let (a, b) = (num(a)?, num(b)?);
        if a > b {
            return Err(format!("{part:?}: an empty range"));
        }
        out.extend(a..=b);
    }
    Ok(out)
}

type Counts = Arc<Mutex<BTreeMap<String, u64>>>;
/// The remote children's addresses found not answering.
type Down = Arc<Mutex<HashSet<String>>>;
/// Port of the simulated nodes' NVMe/TCP stand-in.
const NVMF_PORT: u16 = 4420;

fn main() -> ExitCode {
    let args = Args::parse();
    let log = args.log.clone();
    shoal_control::binary::run(
        "shoal-simnode",
        &log,
        shoal_control::binary::Runtime::CurrentThread,
        run(args),
    )
}

async fn run(args: Args) -> Result<(), String> {
    let prefix: Vec<u8> = args
        .ip_prefix
        .split('.')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--ip-prefix {:?}: {e}", args.ip_prefix))?;
    let [a, b, c] = prefix[..] else {
        return Err(format!("--ip-prefix {:?}: three octets", args.ip_prefix));
    };
    if a != 127 {
        return Err("--ip-prefix: simulated nodes listen on loopback (127.x.y) only".into());
    }
    let token = args
        .rpc_token_file
        .as_deref()
        .map(read_token)
        .transpose()
        .map_err(|e| format!("token file: {e}"))?;
    let store = Store::connect(&args.etcd, Duration::from_secs(3))
        .await
        .map_err(|e| format!("etcd {:?}: {e}", args.etcd))?;
    let counts: Counts = Arc::default();
    let down: Down = Arc::default();
    let mut all = Vec::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut agents = Vec::new();
    for &n in &args.numbers {
        let ip = Ipv4Addr::new(a, b, c, n);
        let listener = TcpListener::bind((ip, 0))
            .await
            .map_err(|e| format!("node {n}: cannot listen on {ip}: {e}"))?;
        let rpc = listener.local_addr().map_err(|e| e.to_string())?;
        let id = format!("{}-{n:03}", args.id_prefix);
        let node = Arc::new(Mutex::new(SimNode::new(
            &id,
            args.cluster_mib.saturating_mul(1 << 20),
            args.uring_gib.saturating_mul(1 << 30),
            Duration::from_millis(args.rebuild_ms),
        )));
        let nvmf = TcpListener::bind((ip, NVMF_PORT))
            .await
            .map_err(|e| format!("node {n}: cannot listen on {ip}:{NVMF_PORT}: {e}"))?;
        tokio::spawn(accept_and_close(nvmf));
        all.push(node.clone());
        let shared = Shared {
            token: token.clone(),
            counts: counts.clone(),
            down: down.clone(),
        };
        tokio::spawn(serve(listener, node, shared));
        let mut labels = BTreeMap::new();
        labels.insert("simulated".to_owned(), "true".to_owned());
        if args.zones > 0 {
            labels.insert("zone".to_owned(), format!("z{}", n % args.zones));
        }
        let cfg = AgentConfig {
            node_id: id,
            // Recorded for hosts; nothing listens there (a simulated node serves no NVMe/TCP).
            nvmf_addr: SocketAddr::from((ip, NVMF_PORT)),
            rpc_endpoint: rpc,
            token: token.clone(),
            labels,
            ttl_secs: args.lease_ttl,
        };
        cfg.validate().map_err(|e| e.to_string())?;
        agents.push(tokio::spawn(agent::run(
            store.clone(),
            cfg,
            stop_rx.clone(),
        )));
    }
    tokio::spawn(probe_peers(all, down));
    tracing::warn!(
        nodes = args.numbers.len(),
        "SIMULATED nodes serving (no data, no NVMe/TCP)"
    );
    wait_for_signals(&counts).await?;
    stop_tx.send_replace(true);
    for t in agents {
        let _ = t.await;
    }
    // The agents' lease revocations run on spawned tasks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}

async fn wait_for_signals(counts: &Counts) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = usr1.recv() => {
                let snapshot = counts.lock().map(|c| c.clone()).unwrap_or_default();
                println!("{}", json!({ "calls": snapshot }));
            }
        }
    }
}

/// Accepts and closes connections: the node is up (its NVMe/TCP stand-in).
async fn accept_and_close(listener: TcpListener) {
    loop {
        if listener.accept().await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Every half second: which remote children's addresses refuse a connection.
async fn probe_peers(nodes: Vec<Arc<Mutex<SimNode>>>, down: Down) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let peers: BTreeSet<String> = nodes
            .iter()
            .filter_map(|n| n.lock().ok().map(|n| n.peers()))
            .flatten()
            .collect();
        let mut now_down = HashSet::new();
        for p in peers {
            let Ok(addr) = p.parse::<SocketAddr>() else {
                continue;
            };
            let up = tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr))
                .await
                .is_ok_and(|r| r.is_ok());
            if !up {
                now_down.insert(p);
            }
        }
        if let Ok(mut d) = down.lock() {
            *d = now_down;
        }
    }
}

/// What every connection of every node shares.
#[derive(Clone)]
struct Shared {
    token: Option<String>,
    counts: Counts,
    down: Down,
}

async fn serve(listener: TcpListener, node: Arc<Mutex<SimNode>>, shared: Shared) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(stream, node.clone(), shared.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// Serves one connection: bare JSON values in, one answer each; a token first when set.
async fn connection(mut stream: TcpStream, node: Arc<Mutex<SimNode>>, shared: Shared) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut authed = shared.token.is_none();
    loop {
        let mut answers = Vec::new();
        let mut close = false;
        {
            let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
            loop {
                match it.next() {
                    Some(Ok(req)) => {
                        let (answer, fatal) = answer(&req, &node, &shared, &mut authed);
                        answers.push(answer);
                        if fatal {
                            close = true;
                            break;
                        }
                    }
                    Some(Err(e)) if !e.is_eof() => {
                        answers.push(error(&Value::Null, -32700, &format!("Parse error: {e}")));
                        close = true;
                        break;
                    }
                    _ => break,
                }
            }
            let used = it.byte_offset();
            buf.drain(..used.min(buf.len()));
        }
        for a in answers {
            let bytes = serde_json::to_vec(&a).unwrap_or_default();
            if stream.write_all(&bytes).await.is_err() {
                return;
            }
        }
        if close || buf.len() > MAX_REQUEST_BYTES {
            return;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
    }
}

/// The answer to one request, and whether the connection must close.
fn answer(req: &Value, node: &Mutex<SimNode>, shared: &Shared, authed: &mut bool) -> (Value, bool) {
    let token = shared.token.as_deref();
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = req.get("method").and_then(Value::as_str) else {
        return (error(&id, -32600, "Invalid Request"), false);
    };
    let params = req.get("params").cloned().unwrap_or(Value::Null);
    if let Ok(mut c) = shared.counts.lock() {
        *c.entry(method.to_owned()).or_default() += 1;
    }
    if method == "rpc_auth" {
        let ok = token.is_some_and(|t| params.get("token").and_then(Value::as_str) == Some(t));
        if ok || token.is_none() {
            *authed = true;
            return (json!({"jsonrpc": "2.0", "id": id, "result": true}), false);
        }
        return (
            error(&Value::Null, AUTH_FAILED, "authentication failed"),
            true,
        );
    }
    if !*authed {
        return (
            error(&Value::Null, AUTH_FAILED, "authenticate first (rpc_auth)"),
            true,
        );
    }
    let result = match node.lock() {
        Ok(mut n) => {
            if let Ok(down) = shared.down.lock() {
                n.fault_unreachable(&down);
            }
            n.handle(method, &params, Instant::now())
        }
        Err(_) => Err(state::RpcErr(
            -32603,
            "simulated node state poisoned".into(),
        )),
    };
    match result {
        Ok(v) => (json!({"jsonrpc": "2.0", "id": id, "result": v}), false),
        Err(state::RpcErr(code, msg)) => (error(&id, code, &msg), false),
    }
}
