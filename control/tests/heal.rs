//! Healing with real processes: etcd, four `shoald` on 127.x.y.11-14 with uring pools on
//! files, their agents and `shoal-control --heal-after 2`. A published 3-replica volume
//! loses a replica to the nexus (faulted on purpose), then to a node killed with SIGKILL;
//! each time the control plane places a new replica on the free node, the nexus rebuilds it,
//! the old one leaves the nexus and its node (the killed node's once it comes back), and the
//! events say so. Then a leader killed in the middle of a replacement: the next one finishes
//! it from etcd. Every check of what a node holds asks the node.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const TTL: u32 = 2;

struct Cluster {
    slice: Slice,
    dir: TempDir,
    _etcd: Proc,
    etcd: String,
    control: Proc,
    api: String,
    nodes: Vec<Node>,
}

fn cluster(tag: &str) -> Cluster {
    let dir = TempDir::new(tag);
    let slice = Slice::new();
    let (etcd_p, etcd) = start_etcd(slice, &dir.0);
    let (control, api) = start_control_with(slice, 21, &etcd, &dir.0, TTL, &["--heal-after", "2"]);
    let nodes: Vec<Node> = ["a", "b", "c", "d"]
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
    wait_for("a leader", Duration::from_secs(10), || {
        !http("GET", &format!("{api}/v1/leader"), None).1["leader"].is_null()
    });
    let refs: Vec<&Node> = nodes.iter().collect();
    add_pools(&api, &dir.0, &refs, 128);
    Cluster {
        slice,
        dir,
        _etcd: etcd_p,
        etcd,
        control,
        api,
        nodes,
    }
}

fn node<'a>(c: &'a Cluster, id: &str) -> &'a Node {
    c.nodes.iter().find(|n| n.id == id).unwrap()
}

/// The nodes that hold an lvol of volume `id`, asked of each live node.
fn holders(c: &Cluster, id: &str, skip: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for n in c.nodes.iter().filter(|n| !skip.contains(&n.id.as_str())) {
        let lvols = node_call(n.rpc, "bdev_lvol_get_lvols", Value::Null);
        if lvols.as_array().unwrap().iter().any(|l| l["name"] == id) {
            out.push(n.id.clone());
        }
    }
    out.sort();
    out
}

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

fn all_online(v: &Value) -> bool {
    v["replica_list"]
        .as_array()
        .is_some_and(|a| a.len() == 3 && a.iter().all(|r| r["state"] == "online"))
}

/// Waits until every replica is online on the nodes `want`; answers the largest rebuild
/// progress below 100 seen on the way (the API's live view of the nexus).
fn wait_healed(api: &str, id: &str, want: &[String], limit: Duration) -> (Value, Option<u64>) {
    let mut last = Value::Null;
    let mut progress = None;
    wait_for("the volume healed", limit, || {
        last = http("GET", &format!("{api}/v1/volumes/{id}"), None).1;
        for r in last["replica_list"].as_array().into_iter().flatten() {
            if let Some(p) = r["rebuild_progress"].as_u64().filter(|p| *p < 100) {
                progress = Some(progress.map_or(p, |q: u64| q.max(p)));
            }
        }
        all_online(&last) && replica_nodes(&last) == want
    });
    (last, progress)
}

fn events(api: &str, id: &str) -> Vec<Value> {
    http(
        "GET",
        &format!("{api}/v1/events?volume={id}&limit=1000"),
        None,
    )
    .1["events"]
        .as_array()
        .unwrap()
        .clone()
}

/// Whether the events hold `kind` for `node`.
fn has(evs: &[Value], kind: &str, node: &str) -> bool {
    evs.iter().any(|e| e["kind"] == kind && e["node"] == node)
}

fn nexus_children(c: &Cluster, target: &str, id: &str) -> Vec<Value> {
    let nx = node_call(node(c, target).rpc, "nexus_get", json!({ "name": id }));
    nx[0]["children"].as_array().unwrap().clone()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn faulted_and_lost_replicas_are_replaced_rebuilt_and_removed() {
    let mut c = cluster("heal");
    let api = c.api.clone();
    let (st, v) = http(
        "POST",
        &format!("{api}/v1/volumes"),
        Some(json!({"name": "healme", "size_bytes": 16 << 20, "replicas": 3})),
    );
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let first = replica_nodes(&v);
    let target = first[0].clone();
    let (st, t) = http(
        "POST",
        &format!("{api}/v1/volumes/{id}/publish"),
        Some(json!({"node": target})),
    );
    assert_eq!(st, 200, "{t}");
    // A slow rebuild (4 MiB/s: 4 s for the 16 MiB), so that its progress can be seen.
    node_call(
        node(&c, &target).rpc,
        "nexus_set_rebuild_rate",
        json!({"name": id, "mib_per_sec": 4}),
    );
    let free = c
        .nodes
        .iter()
        .map(|n| n.id.clone())
        .find(|n| !first.contains(n))
        .unwrap();

    // 1. The nexus faults a replica (as on an I/O error): replaced on the free node at once.
    let x = first[1].clone();
    let uri = nexus_children(&c, &target, &id)
        .iter()
        .find(|ch| ch["uri"].as_str().unwrap().contains(&format!(":{x}?")))
        .unwrap()["uri"]
        .as_str()
        .unwrap()
        .to_owned();
    node_call(
        node(&c, &target).rpc,
        "nexus_fault_child",
        json!({"name": id, "uri": uri}),
    );
    let want = sorted(vec![target.clone(), first[2].clone(), free.clone()]);
    let (v, progress) = wait_healed(&api, &id, &want, Duration::from_secs(40));
    assert!(
        progress.is_some(),
        "the rebuild's progress was never shown: {v}"
    );
    wait_for(
        "the faulted replica deleted from its node",
        Duration::from_secs(10),
        || holders(&c, &id, &[]) == want,
    );
    let kids = nexus_children(&c, &target, &id);
    assert_eq!(kids.len(), 3, "{kids:?}");
    assert!(kids.iter().all(|k| k["state"] == "online"), "{kids:?}");
    assert!(
        !kids
            .iter()
            .any(|k| k["uri"].as_str().unwrap().contains(&format!(":{x}?"))),
        "{kids:?}"
    );
    let evs = events(&api, &id);
    for (kind, n) in [
        ("replica_faulted", &x),
        ("replica_replaced", &x),
        ("rebuild_started", &free),
        ("rebuild_finished", &free),
        ("replica_removed", &x),
    ] {
        assert!(has(&evs, kind, n), "no {kind} for {n}: {evs:#?}");
    }
    // The command-line client shows it.
    let text = ctl_text(&api, &["volume", "get", &id]);
    assert!(text.contains("3/3"), "{text}");
    assert_eq!(text.matches(" online").count(), 4, "{text}");
    let text = ctl_text(&api, &["event", "list", "--volume", &id]);
    assert!(text.contains("rebuild_finished"), "{text}");
    let j = ctl_json(&api, &["volume", "list"]);
    assert_eq!(j["volumes"][0]["state"], "online", "{j}");

    // 2. A replica node killed (shoald and its agent): replaced once it has been offline for
    // --heal-after, on the node freed above.
    let y = first[2].clone();
    let yi = c.nodes.iter().position(|n| n.id == y).unwrap();
    c.nodes[yi].shoald.kill9();
    c.nodes[yi].agent.kill9();
    let want = sorted(vec![target.clone(), free.clone(), x.clone()]);
    let (v, _) = wait_healed(&api, &id, &want, Duration::from_secs(60));
    assert_eq!(v["state"], "online", "{v}");
    let evs = events(&api, &id);
    assert!(has(&evs, "replica_replaced", &y), "{evs:#?}");
    assert!(has(&evs, "rebuild_finished", &x), "{evs:#?}");
    let (_, node_evs) = http(
        "GET",
        &format!("{api}/v1/events?node={y}&kind=node_offline"),
        None,
    );
    assert_eq!(
        node_evs["events"].as_array().unwrap().len(),
        1,
        "{node_evs}"
    );
    // The volume still lists the old replica's node among its retired ones until it is back:
    // the node comes back with its pool (and the stale lvol in it), which is deleted.
    let _ = std::fs::remove_file(c.dir.0.join(format!("shoald-{}.sock", 11 + yi)));
    let n = start_node(
        c.slice,
        11 + u8::try_from(yi).unwrap(),
        "c",
        &c.etcd,
        &c.dir.0,
        TTL,
    );
    c.nodes[yi] = n;
    // (Until the leader brings its pool back, the node holds no lvol at all: wait for the
    // event, then look.)
    wait_for(
        "the stale replica deleted from the node back",
        Duration::from_secs(30),
        || has(&events(&api, &id), "replica_removed", &y),
    );
    let lvs = node_call(c.nodes[yi].rpc, "bdev_lvol_get_lvstores", Value::Null);
    assert_eq!(lvs[0]["name"], "pool", "the pool is back: {lvs}");
    assert_eq!(holders(&c, &id, &[]), want);
    let subs = node_call(c.nodes[yi].rpc, "nvmf_get_subsystems", Value::Null);
    assert!(
        !subs.to_string().contains(&id),
        "the stale replica is exported: {subs}"
    );

    // 3. A leader killed in the middle of a replacement: what it wrote (the old replica
    // retired, a new one placed) is in etcd, nothing done on the nodes; the next leader
    // finishes it.
    c.control.kill9();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt
        .block_on(shoal_control::store::Store::connect(
            std::slice::from_ref(&c.etcd),
            Duration::from_secs(3),
        ))
        .unwrap();
    let key = format!("{}volumes/{id}", shoal_control::keys::PREFIX);
    let mut rec = rt.block_on(store.get::<Value>(&key)).unwrap().unwrap().0;
    let reps = rec["replica_list"].as_array_mut().unwrap();
    let k = reps.iter().position(|r| r["node"] == x.as_str()).unwrap();
    let mut old = reps[k].clone();
    reps[k] = json!({"node": y, "pool": "pool", "lvol_uuid": null, "state": "creating",
                     "replaces": x});
    old["state"] = json!("retired");
    rec["retired"] = json!([old]);
    let mut kv = store.client().kv_client();
    rt.block_on(kv.put(key, serde_json::to_vec(&rec).unwrap(), None))
        .unwrap();
    let (mut control2, api2) =
        start_control_with(c.slice, 22, &c.etcd, &c.dir.0, TTL, &["--heal-after", "2"]);
    let want = sorted(vec![target.clone(), free.clone(), y.clone()]);
    let (v, _) = wait_healed(&api2, &id, &want, Duration::from_secs(60));
    assert_eq!(v["state"], "online", "{v}");
    wait_for(
        "the retired replica deleted",
        Duration::from_secs(20),
        || holders(&c, &id, &[]) == want,
    );
    let kids = nexus_children(&c, &target, &id);
    assert_eq!(kids.len(), 3, "{kids:?}");
    assert!(kids.iter().all(|k| k["state"] == "online"), "{kids:?}");

    // Deleted: nothing of it on any node.
    let (st, b) = http("DELETE", &format!("{api2}/v1/volumes/{id}"), None);
    assert_eq!(st, 204, "{b}");
    assert!(holders(&c, &id, &[]).is_empty());
    control2.assert_running();
}
