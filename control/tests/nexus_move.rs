//! Moving a nexus whose node died, with real processes: etcd, four `shoald` on
//! 127.x.y.11-14 with uring pools on files, their agents and `shoal-control --heal-after 2`.
//! A published 3-replica volume is under verified random reads and writes from `shoal-perf`
//! (an NVMe/TCP host that reconnects, with a controller-loss timeout) when the nexus's node
//! is killed with SIGKILL (`shoald` and agent): the nexus comes back on a node that held a
//! current replica, with the same NQN, address and namespace UUID, the host's I/O goes on
//! and every read (of data written before the kill too) returns the last write. Then the dead
//! node's replica is replaced and rebuilt, and the node, back, holds nothing of the volume.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const TTL: u32 = 2;

fn replica_nodes(v: &Value) -> Vec<String> {
    let mut n: Vec<String> = v["replica_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["node"].as_str().unwrap().to_owned())
        .collect();
    n.sort();
    n
}

fn lvols_of(rpc: std::net::SocketAddr, id: &str) -> usize {
    node_call(rpc, "bdev_lvol_get_lvols", Value::Null)
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["name"] == id)
        .count()
}

fn exports(rpc: std::net::SocketAddr) -> Vec<String> {
    let mut out: Vec<String> = node_call(rpc, "nvmf_get_subsystems", Value::Null)
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["subtype"] != "Discovery")
        .map(|s| s["nqn"].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

#[test]
fn a_dead_nodes_nexus_moves_to_a_current_replica_and_the_host_goes_on() {
    let dir = TempDir::new("nexmove");
    let slice = Slice::new();
    let (_etcd_p, etcd) = start_etcd(slice, &dir.0);
    let (mut control, api) =
        start_control_with(slice, 21, &etcd, &dir.0, TTL, &["--heal-after", "2"]);
    let mut nodes: Vec<Node> = ["a", "b", "c", "d"]
        .iter()
        .enumerate()
        .map(|(i, z)| start_node(slice, 11 + u8::try_from(i).unwrap(), z, &etcd, &dir.0, TTL))
        .collect();
    wait_for("nodes online", Duration::from_secs(20), || {
        let (_, b) = http("GET", &format!("{api}/v1/nodes"), None);
        b["nodes"]
            .as_array()
            .is_some_and(|a| a.iter().filter(|n| n["status"] == "online").count() == 4)
    });
    let refs: Vec<&Node> = nodes.iter().collect();
    add_pools(&api, &dir.0, &refs, 128);
    let perf = perf_bin();

    let (st, v) = http(
        "POST",
        &format!("{api}/v1/volumes"),
        Some(json!({"name": "moveme", "size_bytes": 16 << 20, "replicas": 3})),
    );
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let first = replica_nodes(&v);
    let old = first[0].clone();
    let (st, t) = http(
        "POST",
        &format!("{api}/v1/volumes/{id}/publish"),
        Some(json!({"node": old})),
    );
    assert_eq!(st, 200, "{t}");
    let oi = nodes.iter().position(|n| n.id == old).unwrap();

    // The host: random 4 KiB reads and writes, each read checked against the last write of
    // its block; it reconnects every 200 ms and gives up only after 60 s.
    let trid = format!(
        "trtype:TCP adrfam:IPv4 traddr:{} trsvcid:{} subnqn:{}",
        t["traddr"].as_str().unwrap(),
        t["trsvcid"].as_str().unwrap(),
        t["nqn"].as_str().unwrap()
    );
    let out = std::fs::File::create(dir.0.join("perf.json")).unwrap();
    let err = std::fs::File::create(dir.0.join("perf.err")).unwrap();
    let mut host = Command::new(&perf)
        .args([
            "-r", &trid, "-q", "8", "-o", "4096", "-w", "randrw", "-M", "50",
        ])
        .args(["-t", "30", "-V", "--json", "--ctrl-loss-tmo", "60"])
        .args(["--reconnect-delay-ms", "200"])
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert!(host.try_wait().unwrap().is_none(), "shoal-perf ended early");

    // The nexus's node dies.
    let killed = Instant::now();
    nodes[oi].shoald.kill9();
    nodes[oi].agent.kill9();
    let mut v = Value::Null;
    wait_for("the nexus moved", Duration::from_secs(60), || {
        v = http("GET", &format!("{api}/v1/volumes/{id}"), None).1;
        v["target"]["node"].is_string() && v["target"]["node"] != old.as_str()
    });
    let moved_after = killed.elapsed();
    let new = v["target"]["node"].as_str().unwrap().to_owned();
    assert!(
        first.contains(&new),
        "the nexus went to {new}, which held no replica: {v}"
    );
    for k in ["nqn", "traddr", "trsvcid"] {
        assert_eq!(v["target"][k], t[k], "the target's {k} changed: {v}");
    }
    let nrpc = nodes.iter().find(|n| n.id == new).unwrap().rpc;
    let nx = node_call(nrpc, "nexus_get", json!({ "name": id }));
    let bdev = node_call(nrpc, "bdev_get_bdevs", json!({ "name": id }));
    assert_eq!(bdev[0]["uuid"], id.as_str(), "namespace identity: {bdev}");
    let evs = http(
        "GET",
        &format!("{api}/v1/events?volume={id}&limit=1000"),
        None,
    )
    .1["events"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        evs.iter()
            .any(|e| e["kind"] == "nexus_moved" && e["node"] == new.as_str()),
        "{evs:#?}"
    );
    eprintln!("nexus moved {old} -> {new} {moved_after:?} after the kill; nexus: {nx}");

    // The host's I/O went on: no error, every read the last write.
    let st = loop {
        if let Some(st) = host.try_wait().unwrap() {
            break st;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(120),
            "shoal-perf hangs"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let report = std::fs::read_to_string(dir.0.join("perf.json")).unwrap();
    let stderr = std::fs::read_to_string(dir.0.join("perf.err")).unwrap();
    assert!(st.success(), "shoal-perf: {st}: {stderr}\n{report}");
    let r: Value = serde_json::from_str(&report).unwrap();
    let verify = &r["verify"];
    assert_eq!(r["total"]["errors"], 0, "{report}");
    eprintln!("shoal-perf verify: {verify}");
    assert_eq!(verify["mismatches"], 0, "{report}");
    assert!(verify["reads_checked"].as_u64().unwrap() > 100, "{report}");

    // The dead node's replica is replaced (on the free node) and rebuilt.
    let free = nodes
        .iter()
        .map(|n| n.id.clone())
        .find(|n| !first.contains(n))
        .unwrap();
    let mut want: Vec<String> = first.iter().filter(|n| **n != old).cloned().collect();
    want.push(free.clone());
    want.sort();
    wait_for("the volume healed", Duration::from_secs(60), || {
        v = http("GET", &format!("{api}/v1/volumes/{id}"), None).1;
        replica_nodes(&v) == want
            && v["replica_list"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["state"] == "online")
    });
    let kids = node_call(nrpc, "nexus_get", json!({ "name": id }))[0]["children"].clone();
    assert_eq!(kids.as_array().unwrap().len(), 3, "{kids}");

    // The old node comes back: no nexus, no export; its stale replica is deleted.
    let _ = std::fs::remove_file(dir.0.join(format!("shoald-{}.sock", 11 + oi)));
    nodes[oi] = start_node(
        slice,
        11 + u8::try_from(oi).unwrap(),
        ["a", "b", "c", "d"][oi],
        &etcd,
        &dir.0,
        TTL,
    );
    let orpc = nodes[oi].rpc;
    wait_for("the stale replica deleted", Duration::from_secs(30), || {
        let evs = http(
            "GET",
            &format!("{api}/v1/events?volume={id}&kind=replica_removed"),
            None,
        )
        .1;
        evs["events"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["node"] == old.as_str()))
    });
    assert_eq!(lvols_of(orpc, &id), 0);
    assert_eq!(
        node_call(orpc, "nexus_get", Value::Null),
        json!([]),
        "the old node serves a nexus"
    );
    assert!(exports(orpc).is_empty(), "{:?}", exports(orpc));

    // Every node holds what etcd says: the nexus (and its export) on the new node only, a
    // replica export on each other replica node.
    for n in &nodes {
        let nxs = node_call(n.rpc, "nexus_get", Value::Null);
        let want_nx = usize::from(n.id == new);
        assert_eq!(nxs.as_array().unwrap().len(), want_nx, "{}: {nxs}", n.id);
        let holds = usize::from(want.contains(&n.id));
        assert_eq!(lvols_of(n.rpc, &id), holds, "{}", n.id);
        let want_exports: Vec<String> = if n.id == new {
            vec![t["nqn"].as_str().unwrap().to_owned()]
        } else if want.contains(&n.id) {
            vec![format!("nqn.2016-06.io.shoal:replica:{id}:{}", n.id)]
        } else {
            vec![]
        };
        assert_eq!(exports(n.rpc), want_exports, "{}", n.id);
    }

    let (st, b) = http("DELETE", &format!("{api}/v1/volumes/{id}"), None);
    assert_eq!(st, 204, "{b}");
    control.assert_running();
}
