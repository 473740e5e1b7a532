//! Pools and volumes with real processes: etcd, four `shoald` on 127.x.y.11-14 (zones a, b,
//! c, c) with uring pools on files, their agents and `shoal-control`. Every check of what a
//! node holds asks the node itself (`bdev_lvol_get_lvols`, `nexus_get`,
//! `nvmf_get_subsystems`).

mod common;

use std::collections::BTreeSet;
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

fn cluster(tag: &str, zones: &[&str]) -> Cluster {
    let dir = TempDir::new(tag);
    let slice = Slice::new();
    let (etcd_p, etcd) = start_etcd(slice, &dir.0);
    let (control, api) = start_control(slice, 21, &etcd, &dir.0, TTL);
    let nodes: Vec<Node> = zones
        .iter()
        .enumerate()
        .map(|(i, z)| start_node(slice, 11 + u8::try_from(i).unwrap(), z, &etcd, &dir.0, TTL))
        .collect();
    wait_for("nodes online", Duration::from_secs(20), || {
        let (_, b) = http("GET", &format!("{api}/v1/nodes"), None);
        b["nodes"]
            .as_array()
            .is_some_and(|a| a.iter().filter(|n| n["status"] == "online").count() == zones.len())
    });
    wait_for("a leader", Duration::from_secs(10), || {
        !http("GET", &format!("{api}/v1/leader"), None).1["leader"].is_null()
    });
    let refs: Vec<&Node> = nodes.iter().collect();
    add_pools(&api, &dir.0, &refs, 256);
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

/// The lvol names on each node.
fn lvols(c: &Cluster) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for n in &c.nodes {
        for l in node_call(n.rpc, "bdev_lvol_get_lvols", Value::Null)
            .as_array()
            .unwrap()
        {
            out.push((n.id.clone(), l["name"].as_str().unwrap().to_owned()));
        }
    }
    out
}

fn subsystems(n: &Node) -> Vec<String> {
    node_call(n.rpc, "nvmf_get_subsystems", Value::Null)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["nqn"].as_str().unwrap().to_owned())
        .filter(|s| !s.contains("discovery"))
        .collect()
}

fn nexuses(n: &Node) -> usize {
    node_call(n.rpc, "nexus_get", json!({}))
        .as_array()
        .unwrap()
        .len()
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[test]
fn pools_are_declared_created_and_checked() {
    let c = cluster("pools", &["a", "b"]);
    let api = &c.api;
    let (st, b) = http("GET", &format!("{api}/v1/pools"), None);
    assert_eq!(st, 200);
    let pools = b["pools"].as_array().unwrap();
    assert_eq!(pools.len(), 2);
    for p in pools {
        assert_eq!(p["state"], "online", "{p}");
        assert!(p["capacity_bytes"].as_u64().unwrap() > 200 << 20, "{p}");
        assert_eq!(p["free_bytes"], p["capacity_bytes"], "{p}");
        assert_eq!(p["node_status"], "online");
    }
    // On the node: the lvstore exists.
    let lvs = node_call(c.nodes[0].rpc, "bdev_lvol_get_lvstores", Value::Null);
    assert_eq!(lvs[0]["name"], "pool", "{lvs}");
    // The same declaration again: 200; another disk under the same name: 409.
    let disk0 = c.dir.0.join(format!("{}.img", c.nodes[0].id));
    let same =
        json!({"node": "node-11", "name": "pool", "disk": format!("uring://{}", disk0.display())});
    let (st, _) = http("POST", &format!("{api}/v1/pools"), Some(same));
    assert_eq!(st, 200);
    let other = json!({"node": "node-11", "name": "pool", "disk": "malloc:///?size_mib=64"});
    let (st, b) = http("POST", &format!("{api}/v1/pools"), Some(other));
    assert_eq!((st, code(&b)), (409, "already_exists"), "{b}");
    for (body, want) in [
        (
            json!({"node": "nobody", "name": "p", "disk": "malloc:///?size_mib=64"}),
            404,
        ),
        (
            json!({"node": "node-11", "name": "p", "disk": "nvme://x"}),
            400,
        ),
        (
            json!({"node": "node-11", "name": "a/b", "disk": "malloc:///?size_mib=64"}),
            400,
        ),
        (json!({"node": "node-11", "name": "p"}), 400),
    ] {
        let (st, b) = http("POST", &format!("{api}/v1/pools"), Some(body.clone()));
        assert_eq!(st, want, "{body}: {b}");
    }
    // A malloc pool, then removed: gone from the node.
    let m = json!({"node": "node-12", "name": "mem", "disk": "malloc:///?size_mib=64"});
    let (st, b) = http("POST", &format!("{api}/v1/pools"), Some(m));
    assert_eq!(st, 201, "{b}");
    assert_eq!(b["state"], "online", "{b}");
    let (st, _) = http("DELETE", &format!("{api}/v1/pools/node-12/mem"), None);
    assert_eq!(st, 204);
    let lvs = node_call(c.nodes[1].rpc, "bdev_lvol_get_lvstores", Value::Null);
    assert_eq!(lvs.as_array().unwrap().len(), 1, "{lvs}");
    let (st, _) = http("GET", &format!("{api}/v1/pools/node-12/mem"), None);
    assert_eq!(st, 404);

    // shoald restarts (its bdevs are gone): the leader re-creates the disk's bdev and the
    // pool comes back by examine, with the same UUID.
    let uuid = http("GET", &format!("{api}/v1/pools/node-11/pool"), None).1["uuid"].clone();
    let vol = json!({"name": "survivor", "size_bytes": 8 << 20, "replicas": 1,
                     "topology": {"nodes": ["node-11"]}});
    let (st, b) = http("POST", &format!("{api}/v1/volumes"), Some(vol));
    assert_eq!(st, 201, "{b}");
    let mut nodes = c.nodes;
    let slice_rpc = nodes[0].rpc;
    nodes[0].shoald.kill9();
    wait_for("node-11 offline", Duration::from_secs(15), || {
        http("GET", &format!("{api}/v1/nodes/node-11"), None).1["status"] == "offline"
    });
    let token = token_file(&c.dir.0);
    let mut again = Proc::spawn(
        "shoald-11-again",
        &c.dir.0,
        std::process::Command::new(shoald_bin())
            .arg("-r")
            .arg(c.dir.0.join("shoald-11b.sock"))
            .args([
                "--empty",
                "--rpc-listen",
                &slice_rpc.to_string(),
                "--rpc-token-file",
            ])
            .arg(&token),
    );
    wait_for("the pool back on node-11", Duration::from_secs(30), || {
        again.assert_running();
        let l =
            std::panic::catch_unwind(|| node_call(slice_rpc, "bdev_lvol_get_lvols", Value::Null));
        l.is_ok_and(|l| l.as_array().is_some_and(|a| a.len() == 1))
    });
    let p = http("GET", &format!("{api}/v1/pools/node-11/pool"), None).1;
    assert_eq!(p["uuid"], uuid, "{p}");
    assert_eq!(p["state"], "online", "{p}");
    let _ = c.etcd;
}

#[test]
fn volumes_are_placed_published_and_deleted_without_leftovers() {
    // The two nodes of zone c come first by free space and id: zones spread the replicas anyway.
    let c = cluster("volumes", &["c", "c", "a", "b"]);
    let api = &c.api;
    let url = format!("{api}/v1/volumes");
    let spec = json!({"name": "vol-a", "size_bytes": 64 << 20, "replicas": 3});
    let (st, v) = http("POST", &url, Some(spec.clone()));
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["state"], "online", "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let reps = v["replica_list"].as_array().unwrap();
    assert_eq!(reps.len(), 3);
    let nodes: BTreeSet<&str> = reps.iter().map(|r| r["node"].as_str().unwrap()).collect();
    assert_eq!(nodes.len(), 3, "distinct nodes: {v}");
    // Zones c, c, a, b: three replicas land in three distinct zones.
    let want: BTreeSet<&str> = ["node-11", "node-13", "node-14"].into();
    assert_eq!(nodes, want, "{v}");
    for r in reps {
        assert_eq!(r["state"], "online");
        assert_eq!(r["lvol_uuid"].as_str().unwrap().len(), 36);
    }
    let on_nodes: Vec<_> = lvols(&c);
    assert_eq!(on_nodes.len(), 3);
    assert!(on_nodes.iter().all(|(_, name)| *name == id));
    // The pools' free space went down by the replica (64 MiB + 1 MiB of labels, in 4 MiB clusters).
    let p = http("GET", &format!("{api}/v1/pools/node-11/pool"), None).1;
    assert_eq!(
        p["capacity_bytes"].as_u64().unwrap() - p["free_bytes"].as_u64().unwrap(),
        68 << 20,
        "{p}"
    );

    // Idempotent by name; a conflicting request is refused and changes nothing.
    let (st, again) = http("POST", &url, Some(spec));
    assert_eq!((st, again["id"].as_str()), (200, Some(id.as_str())));
    let (st, b) = http(
        "POST",
        &url,
        Some(json!({"name": "vol-a", "size_bytes": 32 << 20})),
    );
    assert_eq!((st, code(&b)), (409, "already_exists"), "{b}");
    for (body, want, c_) in [
        (
            json!({"name": "big", "size_bytes": 64 << 20, "replicas": 5}),
            507,
            "resource_exhausted",
        ),
        (
            json!({"name": "huge", "size_bytes": 1u64 << 30, "replicas": 1}),
            507,
            "resource_exhausted",
        ),
        (
            json!({"name": "z", "size_bytes": 0}),
            400,
            "invalid_argument",
        ),
        (
            json!({"name": "odd", "size_bytes": 1000}),
            400,
            "invalid_argument",
        ),
        (
            json!({"name": "in-d", "size_bytes": 4096, "topology": {"zones": ["d"]}}),
            507,
            "resource_exhausted",
        ),
        (
            json!({"name": "bad name", "size_bytes": 4096}),
            400,
            "invalid_argument",
        ),
        (
            json!({"name": "src", "size_bytes": 4096, "source": {"snapshot_id": "x"}}),
            400,
            "invalid_argument",
        ),
        (
            json!({"name": "src", "size_bytes": 4096,
                "source": {"snapshot_id": "6a1f3e56-0000-4000-8000-000000000000"}}),
            404,
            "not_found",
        ),
        (
            json!({"name": "src", "size_bytes": 4096, "source": {"volume_id": "x"}}),
            412,
            "failed_precondition",
        ),
    ] {
        let (st, b) = http("POST", &url, Some(body.clone()));
        assert_eq!((st, code(&b)), (want, c_), "{body}: {b}");
    }
    assert_eq!(lvols(&c).len(), 3, "a refused request left something");
    let (_, list) = http("GET", &url, None);
    assert_eq!(list["volumes"].as_array().unwrap().len(), 1, "{list}");

    // Topology: only node-14.
    let (st, v14) = http(
        "POST",
        &url,
        Some(
            json!({"name": "pinned", "size_bytes": 8 << 20, "replicas": 1, "thin": true,
                    "topology": {"nodes": ["node-14"]}}),
        ),
    );
    assert_eq!(st, 201, "{v14}");
    assert_eq!(v14["replica_list"][0]["node"], "node-14");
    // Two more, then pages of two.
    for n in ["p1", "p2"] {
        let (st, b) = http(
            "POST",
            &url,
            Some(json!({"name": n, "size_bytes": 4 << 20, "replicas": 2})),
        );
        assert_eq!(st, 201, "{b}");
    }
    let mut seen = BTreeSet::new();
    let mut start = String::new();
    let mut pages = 0;
    loop {
        let (st, page) = http("GET", &format!("{url}?limit=2&start={start}"), None);
        assert_eq!(st, 200, "{page}");
        pages += 1;
        for v in page["volumes"].as_array().unwrap() {
            assert!(seen.insert(v["id"].as_str().unwrap().to_owned()));
        }
        match page["next"].as_str() {
            Some(n) => start = n.to_owned(),
            None => break,
        }
    }
    assert_eq!((seen.len(), pages), (4, 2));
    let (st, _) = http("GET", &format!("{url}?limit=0"), None);
    assert_eq!(st, 400);

    // Publish: the nexus on a replica node, the replicas exported to it, the volume exported.
    let purl = format!("{url}/{id}/publish");
    let (st, t) = http("POST", &purl, Some(json!({})));
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["nqn"], format!("nqn.2016-06.io.shoal:volume:{id}"));
    let tnode = t["node"].as_str().unwrap().to_owned();
    assert!(nodes.contains(tnode.as_str()));
    let target = c.nodes.iter().find(|n| n.id == tnode).unwrap();
    let nx = node_call(target.rpc, "nexus_get", json!({"name": id}));
    assert_eq!(nx[0]["state"], "online", "{nx}");
    assert_eq!(nx[0]["children"].as_array().unwrap().len(), 3, "{nx}");
    assert!(subsystems(target).contains(&t["nqn"].as_str().unwrap().to_owned()));
    for n in c
        .nodes
        .iter()
        .filter(|n| n.id != tnode && nodes.contains(n.id.as_str()))
    {
        let subs = subsystems(n);
        assert_eq!(subs.len(), 1, "{subs:?}");
        assert!(subs[0].contains(&id));
    }
    let (st, t2) = http("POST", &purl, Some(json!({"node": tnode})));
    assert_eq!((st, &t2), (200, &t), "publishing twice");
    let other = if tnode == "node-11" {
        "node-12"
    } else {
        "node-11"
    };
    let (st, b) = http("POST", &purl, Some(json!({"node": other})));
    assert_eq!((st, code(&b)), (412, "failed_precondition"), "{b}");
    let (_, got) = http("GET", &format!("{url}/{id}"), None);
    assert_eq!(got["target"], t);

    // Resize: larger is not possible yet, smaller never.
    let (st, b) = http(
        "POST",
        &format!("{url}/{id}/resize"),
        Some(json!({"size_bytes": 128 << 20})),
    );
    assert_eq!((st, code(&b)), (412, "failed_precondition"), "{b}");
    let (st, b) = http(
        "POST",
        &format!("{url}/{id}/resize"),
        Some(json!({"size_bytes": 32 << 20})),
    );
    assert_eq!((st, code(&b)), (416, "out_of_range"), "{b}");

    // Unpublish (twice), then nothing of the export is left.
    for _ in 0..2 {
        let (st, b) = http("POST", &format!("{url}/{id}/unpublish"), Some(json!({})));
        assert_eq!(st, 204, "{b}");
    }
    for n in &c.nodes {
        assert_eq!(nexuses(n), 0, "{}", n.id);
        assert!(subsystems(n).is_empty(), "{}: {:?}", n.id, subsystems(n));
    }
    // Published again, then deleted while published: nothing left anywhere.
    let (st, _) = http("POST", &purl, Some(json!({"node": "node-12"})));
    assert_eq!(st, 200);
    for v in seen {
        let (st, b) = http("DELETE", &format!("{url}/{v}"), None);
        assert_eq!(st, 204, "{b}");
    }
    let (st, b) = http("DELETE", &format!("{url}/{id}"), None);
    assert_eq!((st, code(&b)), (404, "not_found"));
    assert!(lvols(&c).is_empty(), "{:?}", lvols(&c));
    for n in &c.nodes {
        assert_eq!(nexuses(n), 0);
        assert!(subsystems(n).is_empty());
    }
    let (_, cap) = http("GET", &format!("{api}/v1/capacity"), None);
    let (_, pools) = http("GET", &format!("{api}/v1/pools"), None);
    let total: u64 = pools["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["capacity_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(cap["available_bytes"].as_u64().unwrap(), total);
    let (_, cap_c) = http("GET", &format!("{api}/v1/capacity?zone=c"), None);
    assert_eq!(cap_c["available_bytes"].as_u64().unwrap(), total / 2);
}

/// Waits until `f` holds for the volume `id` as the API shows it.
fn wait_volume(api: &str, id: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    wait_for(what, Duration::from_secs(20), || {
        last = http("GET", &format!("{api}/v1/volumes/{id}"), None).1;
        f(&last)
    });
    last
}

#[test]
fn interrupted_operations_are_finished_by_the_leader_and_followers_forward() {
    let c = cluster("reconcile", &["a", "b", "c"]);
    let (mut control2, api2) = start_control(c.slice, 22, &c.etcd, &c.dir.0, TTL);
    // control-21 leads (it started first); control-22 forwards changes to it.
    let (_, inst) = http("GET", &format!("{api2}/v1/instance"), None);
    assert_eq!(inst["leader"], false, "{inst}");
    let (st, v) = http(
        "POST",
        &format!("{api2}/v1/volumes"),
        Some(json!({"name": "fwd", "size_bytes": 8 << 20, "replicas": 2})),
    );
    assert_eq!(st, 201, "through the follower: {v}");
    let fwd = v["id"].as_str().unwrap().to_owned();

    // What a leader killed after writing an intent leaves in etcd, written the same way.
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
    let put = |k: String, v: Value| {
        let mut kv = store.client().kv_client();
        rt.block_on(kv.put(k, serde_json::to_vec(&v).unwrap(), None))
            .unwrap();
    };
    let prefix = shoal_control::keys::PREFIX;
    // 1. create: the intent recorded, one replica made, then the crash.
    let id = "6a1f3e56-0000-4000-8000-00000000c0de";
    let lvol = node_call(
        c.nodes[0].rpc,
        "bdev_lvol_create",
        json!({"lvs_name": "pool", "lvol_name": id, "size": 12 << 20}),
    );
    let intent = json!({"id": id, "name": "crashed", "size_bytes": 8 << 20, "replicas": 2,
        "thin": false, "topology": null, "source": null, "state": "creating",
        "replica_list": [
            {"node": "node-11", "pool": "pool", "lvol_uuid": null, "state": "creating"},
            {"node": "node-12", "pool": "pool", "lvol_uuid": null, "state": "creating"}],
        "target": null, "created_ms": 1});
    put(format!("{prefix}volumes/{id}"), intent);
    put(format!("{prefix}volume-names/crashed"), json!(id));
    let v = wait_volume(&c.api, id, "the interrupted create finished", |v| {
        v["state"] == "online"
    });
    assert_eq!(
        v["replica_list"][0]["lvol_uuid"], lvol,
        "the lvol made before the crash is kept: {v}"
    );
    let on_nodes = lvols(&c);
    assert_eq!(
        on_nodes.iter().filter(|(_, n)| n == id).count(),
        2,
        "{on_nodes:?}"
    );
    // The same create from the client, retried: the same volume.
    let (st, again) = http(
        "POST",
        &format!("{}/v1/volumes", c.api),
        Some(json!({"name": "crashed", "size_bytes": 8 << 20, "replicas": 2})),
    );
    assert_eq!((st, again["id"].as_str()), (200, Some(id)), "{again}");

    // 2. publish: the target recorded, then the crash.
    let (_, mut rec) = http("GET", &format!("{}/v1/volumes/{fwd}", c.api), None);
    let node = rec["replica_list"][0]["node"].as_str().unwrap().to_owned();
    let n = c.nodes.iter().find(|n| n.id == node).unwrap();
    let raw = rt
        .block_on(store.get::<Value>(&format!("{prefix}volumes/{fwd}")))
        .unwrap()
        .unwrap()
        .0;
    rec = raw;
    rec["target"] = json!({"node": node, "nqn": format!("nqn.2016-06.io.shoal:volume:{fwd}"),
        "traddr": n.rpc.ip().to_string(), "trsvcid": "4420", "state": "publishing"});
    put(format!("{prefix}volumes/{fwd}"), rec);
    let v = wait_volume(&c.api, &fwd, "the interrupted publish finished", |v| {
        !v["target"].is_null()
    });
    assert_eq!(v["target"]["node"], node.as_str());
    let nx = node_call(n.rpc, "nexus_get", json!({"name": fwd}));
    assert_eq!(nx[0]["children"].as_array().unwrap().len(), 2, "{nx}");

    // 3. delete: marked deleting, then the crash.
    let mut raw = rt
        .block_on(store.get::<Value>(&format!("{prefix}volumes/{id}")))
        .unwrap()
        .unwrap()
        .0;
    raw["state"] = json!("deleting");
    put(format!("{prefix}volumes/{id}"), raw);
    wait_for(
        "the interrupted delete finished",
        Duration::from_secs(20),
        || http("GET", &format!("{}/v1/volumes/{id}", c.api), None).0 == 404,
    );
    assert!(lvols(&c).iter().all(|(_, n)| n != id), "{:?}", lvols(&c));
    let name = rt
        .block_on(store.get::<Value>(&format!("{prefix}volume-names/crashed")))
        .unwrap();
    assert!(name.is_none());

    // The leader dies: the follower takes over with the state intact and acts.
    let mut c = c;
    c.control.kill9();
    wait_for("control-22 leads", Duration::from_secs(15), || {
        http("GET", &format!("{api2}/v1/instance"), None).1["leader"] == true
    });
    let (_, list) = http("GET", &format!("{api2}/v1/volumes"), None);
    assert_eq!(list["volumes"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(
        list["volumes"][0]["target"]["node"],
        node.as_str(),
        "{list}"
    );
    let (st, b) = http("POST", &format!("{api2}/v1/volumes/{fwd}/unpublish"), None);
    assert_eq!(st, 204, "{b}");
    let (st, b) = http("DELETE", &format!("{api2}/v1/volumes/{fwd}"), None);
    assert_eq!(st, 204, "{b}");
    assert!(lvols(&c).is_empty());
    control2.assert_running();
}
