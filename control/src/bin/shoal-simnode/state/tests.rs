//! The simulated node's answers, without I/O.

use super::*;

fn node() -> SimNode {
    SimNode::new("n1", 4 << 20, 1 << 30, Duration::from_secs(2))
}

fn call(n: &mut SimNode, m: &str, p: Value) -> R {
    n.handle(m, &p, Instant::now())
}

#[test]
fn a_pool_fills_up_and_empties() {
    let mut n = node();
    call(
        &mut n,
        "bdev_malloc_create",
        json!({"name": "b", "num_blocks": 2560, "block_size": 4096}),
    )
    .unwrap();
    call(
        &mut n,
        "bdev_lvol_create_lvstore",
        json!({"bdev_name": "b", "lvs_name": "p"}),
    )
    .unwrap();
    let l = call(&mut n, "bdev_lvol_get_lvstores", Value::Null).unwrap();
    assert_eq!(l[0]["total_data_clusters"], 1);
    let uuid = call(
        &mut n,
        "bdev_lvol_create",
        json!({"lvs_name": "p", "lvol_name": "v", "size": 4 << 20}),
    )
    .unwrap();
    let e = call(
        &mut n,
        "bdev_lvol_create",
        json!({"lvs_name": "p", "lvol_name": "w", "size": 1}),
    )
    .unwrap_err();
    assert_eq!(e.0, ENOSPC);
    assert_eq!(
        call(
            &mut n,
            "bdev_lvol_create",
            json!({"lvs_name": "p", "lvol_name": "v", "size": 1})
        )
        .unwrap_err()
        .0,
        EEXIST
    );
    call(&mut n, "bdev_lvol_delete", json!({"name": uuid})).unwrap();
    let l = call(&mut n, "bdev_lvol_get_lvstores", Value::Null).unwrap();
    assert_eq!(l[0]["free_clusters"], 1);
    assert_eq!(
        call(&mut n, "bdev_lvol_get_lvols", json!({"lvs_name": "q"}))
            .unwrap_err()
            .0,
        ENODEV
    );
}

#[test]
fn a_child_rebuilds_then_is_online() {
    let mut n = node();
    let t0 = Instant::now();
    n.handle(
        "nexus_create",
        &json!({"name": "x", "uuid": "u", "size": 4096, "children": ["nvmf://a/b"]}),
        t0,
    )
    .unwrap();
    n.handle(
        "nexus_add_child",
        &json!({"name": "x", "uri": "nvmf://c/d"}),
        t0,
    )
    .unwrap();
    let g = n.handle("nexus_get", &json!({}), t0).unwrap();
    assert_eq!(g[0]["children"][1]["state"], "rebuilding");
    let g = n
        .handle("nexus_get", &json!({}), t0 + Duration::from_secs(3))
        .unwrap();
    assert_eq!(g[0]["children"][1]["state"], "online");
    assert_eq!(
        n.handle(
            "nexus_remove_child",
            &json!({"name": "x", "uri": "nvmf://a/b"}),
            t0
        )
        .unwrap_err()
        .0,
        EBUSY
    );
    n.handle(
        "nexus_remove_child",
        &json!({"name": "x", "uri": "nvmf://a/b"}),
        t0 + Duration::from_secs(3),
    )
    .unwrap();
}

#[test]
fn a_child_whose_node_is_down_is_faulted_until_added_again() {
    let mut n = node();
    let t0 = Instant::now();
    let a = "nvmf://127.0.0.2:4420/nqn.x:replica:v:n2?hostnqn=h";
    n.handle(
        "nexus_create",
        &json!({"name": "x", "size": 4096, "children": [a, "nvmf://127.0.0.3:4420/y"]}),
        t0,
    )
    .unwrap();
    assert_eq!(
        n.peers().into_iter().collect::<Vec<_>>(),
        ["127.0.0.2:4420", "127.0.0.3:4420"]
    );
    n.fault_unreachable(&HashSet::from(["127.0.0.2:4420".to_owned()]));
    n.fault_unreachable(&HashSet::new());
    let g = n.handle("nexus_get", &json!({"name": "x"}), t0).unwrap();
    assert_eq!(g[0]["state"], "degraded");
    assert_eq!(g[0]["children"][0]["state"], "faulted");
    assert_eq!(g[0]["children"][0]["fault_reason"], "disconnected");
    assert_eq!(g[0]["children"][1]["state"], "online");
    n.handle("nexus_add_child", &json!({"name": "x", "uri": a}), t0)
        .unwrap();
    let g = n
        .handle("nexus_get", &json!({}), t0 + Duration::from_secs(3))
        .unwrap();
    assert_eq!(g[0]["children"][0]["state"], "online");
}

#[test]
fn unknown_and_malformed_calls_are_errors() {
    let mut n = node();
    assert_eq!(
        call(&mut n, "bdev_nope", Value::Null).unwrap_err().0,
        METHOD_NOT_FOUND
    );
    assert_eq!(
        call(&mut n, "bdev_lvol_create", json!({"lvs_name": 3}))
            .unwrap_err()
            .0,
        INVALID_PARAMS
    );
    assert_eq!(
        call(&mut n, "nvmf_get_subsystems", json!({"nqn": "x"}))
            .unwrap_err()
            .0,
        ENODEV
    );
    assert_eq!(
        call(
            &mut n,
            "bdev_malloc_create",
            json!({"name": "b", "num_blocks": u64::MAX, "block_size": 4096})
        )
        .unwrap_err()
        .0,
        EINVAL
    );
}
