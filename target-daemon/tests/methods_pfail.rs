//! `bdev_pfail_*` against an in-process daemon: creation on a base it claims, the state
//! `bdev_get_bdevs` shows, a cut and what it answers, and every bad call with its error.

mod methods_common;

use methods_common::TestDaemon;
use serde_json::{Value, json};
use shoal_target::rpc::error::{EBUSY, EEXIST, EINVAL, ENODEV, INVALID_PARAMS};

fn bdev(t: &TestDaemon, name: &str) -> Value {
    t.ok("bdev_get_bdevs", json!({"name": name}))[0].clone()
}

#[test]
fn create_cut_and_delete() {
    let t = TestDaemon::start();
    t.ok(
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 128, "block_size": 4096}),
    );
    let name = t.ok(
        "bdev_pfail_create",
        json!({"name": "P0", "base_bdev_name": "M0"}),
    );
    assert_eq!(name, json!("P0"));
    let p = bdev(&t, "P0");
    assert_eq!(p["product_name"], json!("pfail"));
    assert_eq!(p["num_blocks"], json!(128));
    assert_eq!(p["driver_specific"]["pfail"]["base_bdev_name"], json!("M0"));
    assert_eq!(p["driver_specific"]["pfail"]["state"], json!("powered"));
    assert_eq!(bdev(&t, "M0")["claimed"], json!(true));

    // The base is claimed: no second pfail, no namespace, no deletion.
    let m = t.err(
        "bdev_pfail_create",
        json!({"name": "P1", "base_bdev_name": "M0"}),
        -EBUSY,
    );
    assert!(m.contains("claimed by bdev P0"), "{m}");
    t.err("bdev_malloc_delete", json!({"name": "M0"}), -EBUSY);

    let r = t.ok(
        "bdev_pfail_cut",
        json!({"name": "P0", "keep": "random", "seed": 7}),
    );
    assert_eq!(r, json!({"dirty_blocks": 0, "kept_blocks": 0, "seed": 7}));
    let p = bdev(&t, "P0");
    assert_eq!(p["driver_specific"]["pfail"]["state"], json!("cut"));
    let m = t.err(
        "bdev_pfail_cut",
        json!({"name": "P0", "keep": "none"}),
        -EINVAL,
    );
    assert!(m.contains("already lost its power"), "{m}");

    t.ok("bdev_pfail_delete", json!({"name": "P0"}));
    assert_eq!(bdev(&t, "M0")["claimed"], json!(false));
    t.ok("bdev_malloc_delete", json!({"name": "M0"}));
}

#[test]
fn bad_calls() {
    let t = TestDaemon::start();
    t.ok(
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 128, "block_size": 512}),
    );
    t.err(
        "bdev_pfail_create",
        json!({"name": "P0", "base_bdev_name": "nope"}),
        -ENODEV,
    );
    t.err(
        "bdev_pfail_create",
        json!({"name": "M0", "base_bdev_name": "M0"}),
        -EEXIST,
    );
    t.err("bdev_pfail_create", json!({"name": "P0"}), INVALID_PARAMS);
    t.err(
        "bdev_pfail_cut",
        json!({"name": "nope", "keep": "all"}),
        -ENODEV,
    );
    let m = t.err(
        "bdev_pfail_cut",
        json!({"name": "P0", "keep": "some"}),
        INVALID_PARAMS,
    );
    assert!(m.contains("unknown variant `some`"), "{m}");
    t.err("bdev_pfail_delete", json!({"name": "nope"}), -ENODEV);
    // A pfail name is not another kind's.
    t.err("bdev_pfail_delete", json!({"name": "M0"}), -ENODEV);
}
