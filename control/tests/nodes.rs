//! Node registration with real processes: etcd, three `shoald` on 127.x.y.11-13 with a token
//! on their TCP JSON-RPC, an agent each, and `shoal-control`. Every node shows online with
//! its labels; `kill -9` of a `shoald` makes its node offline within two probe periods;
//! `kill -9` of an agent makes its node offline after the lease TTL.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const TTL: u32 = 2;

fn statuses(api: &str) -> Vec<(String, String)> {
    ctl_json(api, &["node", "list"])["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_owned(),
                n["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn status_of(api: &str, id: &str) -> String {
    statuses(api)
        .into_iter()
        .find(|(n, _)| n == id)
        .map(|(_, s)| s)
        .unwrap_or_default()
}

#[test]
fn nodes_register_and_go_offline_when_shoald_or_the_agent_dies() {
    let dir = TempDir::new("nodes");
    let slice = Slice::new();
    let (_etcd, etcd) = start_etcd(slice, &dir.0);
    let (_control, api) = start_control(slice, 21, &etcd, &dir.0, TTL);
    let mut nodes: Vec<Node> = [(11, "a"), (12, "b"), (13, "c")]
        .into_iter()
        .map(|(n, zone)| start_node(slice, n, zone, &etcd, &dir.0, TTL))
        .collect();
    wait_for("three nodes online", Duration::from_secs(20), || {
        statuses(&api).iter().filter(|(_, s)| s == "online").count() == 3
    });

    let list = ctl_json(&api, &["node", "list"]);
    let n12 = list["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "node-12")
        .unwrap()
        .clone();
    assert_eq!(n12["labels"]["zone"], "b");
    assert_eq!(n12["rpc_endpoint"], slice.addr(12, 5260).to_string());
    assert_eq!(n12["nvmf_addr"], slice.addr(12, 4420).to_string());
    assert!(!n12["shoald_version"].as_str().unwrap().is_empty(), "{n12}");
    let table = ctl_text(&api, &["node", "list"]);
    assert!(
        table.contains("node-13") && table.contains("zone=c"),
        "{table}"
    );
    let one = ctl_json(&api, &["node", "get", "node-11"]);
    assert_eq!(one["status"], "online");

    // kill -9 shoald: its agent's probes fail and it revokes the lease.
    nodes[1].shoald.kill9();
    let t0 = Instant::now();
    wait_for("node-12 offline", Duration::from_secs(10), || {
        status_of(&api, "node-12") == "offline"
    });
    let shoald_gone = t0.elapsed();

    // kill -9 the agent: its lease expires after the TTL.
    nodes[2].agent.kill9();
    let t0 = Instant::now();
    wait_for("node-13 offline", Duration::from_secs(15), || {
        status_of(&api, "node-13") == "offline"
    });
    let agent_gone = t0.elapsed();
    eprintln!(
        "offline after kill -9: of shoald {shoald_gone:?}, of the agent {agent_gone:?} (lease TTL {TTL} s)"
    );
    assert!(
        agent_gone < Duration::from_secs(u64::from(TTL) + 3),
        "{agent_gone:?}"
    );
    assert!(
        shoald_gone < Duration::from_secs(u64::from(TTL) + 3),
        "{shoald_gone:?}"
    );
    assert_eq!(status_of(&api, "node-11"), "online");

    // The leader recorded the transitions, with a time.
    wait_for(
        "the leader's record of node-13",
        Duration::from_secs(5),
        || {
            ctl_json(&api, &["node", "get", "node-13"])["status_since_ms"]
                .as_u64()
                .is_some()
        },
    );
    let log = std::fs::read_to_string(dir.0.join("control-21.log")).unwrap();
    assert!(log.contains("event: node node-13 is offline"), "{log}");
    // And through the API, as a structured event.
    let (st, evs) = http(
        "GET",
        &format!("{api}/v1/events?node=node-13&kind=node_offline"),
        None,
    );
    assert_eq!(st, 200, "{evs}");
    assert_eq!(evs["events"].as_array().unwrap().len(), 1, "{evs}");
    nodes[0].shoald.assert_running();
}

#[test]
fn unknown_and_malformed_node_ids_are_answered_clearly() {
    let dir = TempDir::new("nodes-bad");
    let slice = Slice::new();
    let (_etcd, etcd) = start_etcd(slice, &dir.0);
    let (_control, api) = start_control(slice, 21, &etcd, &dir.0, TTL);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(shoal_control::cli::get(&api, "/v1/nodes/nobody"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("404") && err.contains("nobody"), "{err}");
    let err = rt
        .block_on(shoal_control::cli::get(&api, "/v1/nodes/a%20b"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("400"), "{err}");
    let body: Value = rt
        .block_on(shoal_control::cli::get(&api, "/v1/nodes"))
        .unwrap();
    assert_eq!(body["nodes"], Value::Array(vec![]));
}

#[test]
fn the_node_client_authenticates_and_a_wrong_token_is_refused() {
    let dir = TempDir::new("node-rpc");
    let slice = Slice::new();
    let (_etcd, etcd) = start_etcd(slice, &dir.0);
    let node = start_node(slice, 11, "a", &etcd, &dir.0, TTL);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use shoal_control::node_rpc::{NodeClient, NodeRpcError};
        let t = Duration::from_secs(5);
        let mut c = NodeClient::connect(node.rpc, Some(TOKEN), t).await.unwrap();
        let v = c.call("bdev_get_bdevs", Value::Null).await.unwrap();
        assert_eq!(v, Value::Array(vec![]));
        let err = NodeClient::connect(node.rpc, Some("not-the-cluster-token!"), t)
            .await
            .unwrap_err();
        assert!(matches!(err, NodeRpcError::Auth { .. }), "{err}");
        // Without a token: the first call is refused with the auth error.
        let mut c = NodeClient::connect(node.rpc, None, t).await.unwrap();
        let err = c.call("bdev_get_bdevs", Value::Null).await.unwrap_err();
        assert!(
            matches!(err, NodeRpcError::Rpc { code: -32001, .. }),
            "{err}"
        );
    });
}
