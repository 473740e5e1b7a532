//! Part 4 of the nexus bench: a rebuild between two nodes against a plain copy over the same
//! path. This process is node 1 (core 0): the source RAM replica, the nexus, and the NVMe/TCP
//! host. Node 2 is a real `shoald` (`NEXUS_BENCH_SHOALD`) on 127.0.0.2, core 1, exporting an
//! empty RAM replica. Each round first copies the replica's bytes to node 2 with a plain copy
//! (1 MiB pieces, two in flight: read locally, write over NVMe/TCP), then adds node 2's replica
//! to the nexus as a new child (a full rebuild with the default rate policy, host idle) and
//! times it until the child is online; the child is removed again for the next round.

use std::cell::RefCell;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_bdev::Bdev;
use shoal_nvmf::host::{Controller, NvmfUri, RemoteBdev};
use shoal_reactor::Reactor;
use shoal_replication::{ChildSpec, ChildState, ChildUri, META_BYTES};

use super::{WAIT, env_u64, nexus, pct, plain_copy, ram};

const NQN: &str = "nqn.2016-06.io.shoal:bench-replica";

/// Node 2: a `shoald` process, killed when dropped.
struct Node {
    child: Child,
    dir: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_node(shoald: &str, port: u16, bytes: u64) -> Node {
    let dir = std::env::temp_dir().join(format!("shoal-nexus-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let blocks = (bytes + META_BYTES) / 4096;
    let config = format!(
        r#"{{"subsystems": [
 {{"subsystem": "bdev", "config": [{{"method": "bdev_malloc_create", "params": {{"name": "Replica", "num_blocks": {blocks}, "block_size": 4096}}}}]}},
 {{"subsystem": "nvmf", "config": [{{"method": "nvmf_create_transport", "params": {{"trtype": "TCP"}}}},
  {{"method": "nvmf_create_subsystem", "params": {{"nqn": "{NQN}", "allow_any_host": true}}}},
  {{"method": "nvmf_subsystem_add_ns", "params": {{"nqn": "{NQN}", "namespace": {{"bdev_name": "Replica", "nsid": 1}}}}}},
  {{"method": "nvmf_subsystem_add_listener", "params": {{"nqn": "{NQN}", "listen_address": {{"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.2", "trsvcid": "{port}"}}}}}}]}}]}}"#
    );
    let cfg = dir.join("node2.json");
    std::fs::write(&cfg, config).expect("write node 2's config");
    let child = Command::new(shoald)
        .arg("-m")
        .arg("0x2")
        .arg("-c")
        .arg(&cfg)
        .arg("-r")
        .arg(dir.join("rpc.sock"))
        .args(["--log", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {shoald}: {e}"));
    let node = Node { child, dir };
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.2", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "node 2 does not listen on 127.0.0.2:{port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    node
}

/// Connects to node 2's namespace from this reactor (the admin queue runs here too).
fn connect(r: &Reactor, uri: &str) -> Arc<dyn Bdev> {
    let u = NvmfUri::parse(uri).expect("uri");
    let name = u.name().map_or_else(|| u.default_name(), str::to_owned);
    let slot = Rc::new(RefCell::new(None));
    let s2 = slot.clone();
    Controller::connect_async(u.connect_options(), move |res| *s2.borrow_mut() = Some(res));
    r.run_until(WAIT, || slot.borrow().is_some());
    let ctrl = slot
        .borrow_mut()
        .take()
        .expect("connect timed out")
        .expect("connect to node 2");
    RemoteBdev::new(ctrl, u.nsid(), &name).expect("node 2's namespace")
}

/// Runs part 4 if `NEXUS_BENCH_SHOALD` names a `shoald` binary.
pub(crate) fn run(r: &Reactor) {
    let Ok(shoald) = std::env::var("NEXUS_BENCH_SHOALD") else {
        println!("\n(rebuild between two nodes: set NEXUS_BENCH_SHOALD to a shoald binary)");
        return;
    };
    let mib = env_u64("NEXUS_BENCH_REBUILD_MIB", 1024);
    let rounds = env_u64("NEXUS_BENCH_ROUNDS", 3);
    let port = u16::try_from(env_u64("NEXUS_BENCH_PORT", 4523)).expect("port");
    let bytes = mib << 20;
    let _node = start_node(&shoald, port, bytes);
    let uri = format!("nvmf://127.0.0.2:{port}/{NQN}");
    let src = ram("remote-src", bytes);
    let nx = nexus(r, "nx-remote", bytes, std::slice::from_ref(&src));
    let copy_dst = connect(r, &uri);
    // Once unmeasured: node 2's RAM pages are faulted in by the first write to them.
    plain_copy(r, &src, &copy_dst, bytes);
    let mibs = |d: Duration| mib * 1000 / u64::try_from(d.as_millis()).unwrap_or(1).max(1);
    println!();
    println!(
        "copy of a {mib} MiB replica to node 2 (shoald on 127.0.0.2, core 1) over NVMe/TCP, host idle"
    );
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let plain = plain_copy(r, &src, &copy_dst, bytes);
        let child_uri = ChildUri::parse(&uri).expect("child uri");
        let spec = ChildSpec::new(child_uri.clone(), connect(r, &uri));
        let t0 = Instant::now();
        nx.add_child(spec).wait(WAIT).unwrap().expect("add child");
        r.run_until(WAIT, || {
            nx.child_status(&child_uri)
                .is_some_and(|c| c.state == ChildState::Online)
        });
        let rebuild = t0.elapsed();
        let last = nx
            .child_status(&child_uri)
            .and_then(|c| c.last_rebuild)
            .expect("a rebuild summary");
        assert!(
            last.full && last.bytes_copied == bytes,
            "expected a full rebuild of {bytes} bytes: {last:?}"
        );
        nx.remove_child(&child_uri)
            .wait(WAIT)
            .unwrap()
            .expect("remove child");
        let ratio = pct(mibs(rebuild), mibs(plain));
        ratios.push(ratio);
        println!(
            "round {round}: plain copy {:>5} ms ({:>5} MiB/s), rebuild {:>5} ms ({:>5} MiB/s): rebuild at {ratio}% of the copy rate",
            plain.as_millis(),
            mibs(plain),
            rebuild.as_millis(),
            mibs(rebuild),
        );
    }
    ratios.sort_unstable();
    if let Some(m) = ratios.get(ratios.len() / 2) {
        println!("median: rebuild between two nodes at {m}% of the plain copy rate (target 80%)");
    }
}
