//! The bdev methods against an in-process daemon: creation, listing, deletion, claims, error
//! codes, stacked bdevs and I/O through them.

mod methods_common;

use std::time::Duration;

use methods_common::{TempDir, TestDaemon};
use serde_json::{Value, json};
use shoal_target::methods::io;
use shoal_target::rpc::error::{EBUSY, EEXIST, EINVAL, ENODEV, ENOENT, ENOTSUP, INVALID_PARAMS};

fn neg(errno: i32) -> i32 {
    -errno
}

fn bdev(t: &TestDaemon, name: &str) -> Value {
    let list = t.ok("bdev_get_bdevs", json!({"name": name}));
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    list[0].clone()
}

#[test]
fn malloc_create_list_delete() {
    let t = TestDaemon::start();
    let uuid = "6b2f4ac2-3a4e-4c1b-9d27-1f0a3c5e7d91";
    let name = t.ok(
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 2048, "block_size": 4096, "uuid": uuid}),
    );
    assert_eq!(name, "M0");
    // A generated name, as SPDK: MallocN.
    assert_eq!(
        t.ok(
            "bdev_malloc_create",
            json!({"num_blocks": 16, "block_size": 512})
        ),
        "Malloc0"
    );
    let b = bdev(&t, "M0");
    assert_eq!(b["product_name"], "Malloc disk");
    assert_eq!(b["block_size"], 4096);
    assert_eq!(b["num_blocks"], 2048);
    assert_eq!(b["uuid"], uuid);
    assert_eq!(b["aliases"], json!([uuid]));
    assert_eq!(b["claimed"], false);
    assert_eq!(b["zoned"], false);
    assert_eq!(b["supported_io_types"]["read"], true);
    assert_eq!(b["supported_io_types"]["unmap"], true);
    assert_eq!(b["supported_io_types"]["nvme_admin"], false);
    assert_eq!(b["assigned_rate_limits"]["rw_ios_per_sec"], 0);
    assert_eq!(b["driver_specific"], json!({}));
    // Found by its UUID too.
    assert_eq!(bdev(&t, uuid)["name"], "M0");
    let all = t.ok("bdev_get_bdevs", Value::Null);
    assert_eq!(all.as_array().map(Vec::len), Some(2));

    // Duplicate name, unknown names, wrong kind.
    let m = t.err(
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 8, "block_size": 512}),
        neg(EEXIST),
    );
    assert!(m.contains("File exists") && m.contains("M0"), "{m}");
    let m = t.err("bdev_get_bdevs", json!({"name": "nope"}), neg(ENODEV));
    assert!(m.contains("No such device"), "{m}");
    t.err("bdev_malloc_delete", json!({"name": "nope"}), neg(ENODEV));
    t.err("bdev_null_delete", json!({"name": "M0"}), neg(ENODEV));
    assert_eq!(t.ok("bdev_malloc_delete", json!({"name": "M0"})), true);
    t.err("bdev_get_bdevs", json!({"name": "M0"}), neg(ENODEV));
}

#[test]
fn bad_params_are_refused_with_the_field_named() {
    let t = TestDaemon::start();
    let m = t.err(
        "bdev_malloc_create",
        json!({"block_size": 512}),
        INVALID_PARAMS,
    );
    assert!(m.contains("num_blocks"), "{m}");
    let m = t.err(
        "bdev_malloc_create",
        json!({"num_blocks": "8", "block_size": 512}),
        INVALID_PARAMS,
    );
    assert!(m.contains("num_blocks"), "{m}");
    let m = t.err(
        "bdev_malloc_create",
        json!({"num_blocks": 8, "block_size": 512, "colour": "red"}),
        INVALID_PARAMS,
    );
    assert!(m.contains("colour"), "{m}");
    t.err("bdev_malloc_delete", json!({}), INVALID_PARAMS);
    t.err("bdev_get_bdevs", json!({"name": 5}), INVALID_PARAMS);
    // Values the bdev layer refuses.
    let m = t.err(
        "bdev_malloc_create",
        json!({"name": "x", "num_blocks": 8, "block_size": 1000}),
        neg(EINVAL),
    );
    assert!(m.contains("block size"), "{m}");
    t.err(
        "bdev_malloc_create",
        json!({"name": "x", "num_blocks": 0, "block_size": 512}),
        neg(EINVAL),
    );
    t.err(
        "bdev_malloc_create",
        json!({"name": "", "num_blocks": 8, "block_size": 512}),
        neg(EINVAL),
    );
    t.err(
        "bdev_malloc_create",
        json!({"name": "x", "num_blocks": 8, "block_size": 512, "md_size": 8}),
        neg(ENOTSUP),
    );
    t.err(
        "bdev_null_create",
        json!({"name": "x", "num_blocks": 8, "block_size": 512, "physical_block_size": 768}),
        neg(EINVAL),
    );
    // Nothing was left behind by the failures.
    assert_eq!(t.ok("bdev_get_bdevs", json!({})), json!([]));
}

#[test]
fn null_and_uring_bdevs() {
    let t = TestDaemon::start();
    assert_eq!(
        t.ok(
            "bdev_null_create",
            json!({"name": "N0", "num_blocks": 100, "block_size": 512})
        ),
        "N0"
    );
    assert_eq!(bdev(&t, "N0")["product_name"], "Null disk");
    t.err(
        "bdev_null_create",
        json!({"name": "N0", "num_blocks": 100, "block_size": 512}),
        neg(EEXIST),
    );
    t.err(
        "bdev_null_create",
        json!({"num_blocks": 1, "block_size": 512}),
        INVALID_PARAMS,
    );

    let dir = TempDir::new("uring");
    let file = dir.path().join("disk.img");
    std::fs::write(&file, vec![0u8; 1 << 20]).expect("create image");
    let path = file.to_str().expect("utf-8 path");
    assert_eq!(
        t.ok("bdev_uring_create", json!({"name": "U0", "filename": path})),
        "U0"
    );
    let b = bdev(&t, "U0");
    assert_eq!(b["product_name"], "URING bdev");
    assert_eq!(b["driver_specific"], json!({"uring": {"filename": path}}));
    let bs = b["block_size"].as_u64().expect("block size");
    assert_eq!(b["num_blocks"].as_u64().map(|n| n * bs), Some(1 << 20));
    let missing = dir.path().join("missing.img");
    let m = t.err(
        "bdev_uring_create",
        json!({"name": "U1", "filename": missing.to_str().expect("utf-8")}),
        neg(ENOENT),
    );
    assert!(m.contains("missing.img"), "{m}");
    t.err(
        "bdev_uring_create",
        json!({"name": "U0", "filename": path}),
        neg(EEXIST),
    );
    // A flush goes through the reactor and the file's fdatasync.
    let u0 = t.daemon.bdevs.get("U0").expect("U0");
    io::flush(&t.daemon, &u0, Duration::from_secs(10)).expect("flush");
    assert_eq!(t.ok("bdev_uring_delete", json!({"name": "U0"})), true);
    assert_eq!(t.ok("bdev_null_delete", json!({"name": "N0"})), true);
}

#[test]
fn iostat_counts_io() {
    let t = TestDaemon::start();
    t.ok(
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 64, "block_size": 512}),
    );
    t.ok(
        "bdev_malloc_create",
        json!({"name": "M1", "num_blocks": 64, "block_size": 512}),
    );
    let m0 = t.daemon.bdevs.get("M0").expect("M0");
    io::flush(&t.daemon, &m0, Duration::from_secs(10)).expect("flush");
    io::flush(&t.daemon, &m0, Duration::from_secs(10)).expect("flush");
    let st = t.ok("bdev_get_iostat", json!({"name": "M0"}));
    assert_eq!(st["tick_rate"], 1_000_000_000u64);
    assert!(st["ticks"].as_u64().is_some());
    assert_eq!(st["bdevs"][0]["name"], "M0");
    assert_eq!(st["bdevs"][0]["num_flush_ops"], 2);
    // One read: examine looked for a pool's superblocks when the bdev was created (SPDK's
    // examine reads too).
    assert_eq!(st["bdevs"][0]["num_read_ops"], 1);
    assert_eq!(st["bdevs"][0]["bytes_written"], 0);
    let all = t.ok("bdev_get_iostat", json!({}));
    assert_eq!(all["bdevs"].as_array().map(Vec::len), Some(2));
    let two = t.ok("bdev_get_iostat", json!({"names": ["M1", "M0"]}));
    assert_eq!(two["bdevs"][0]["name"], "M1");
    t.err("bdev_get_iostat", json!({"name": "zz"}), neg(ENODEV));
    t.err(
        "bdev_get_iostat",
        json!({"name": "M0", "names": ["M1"]}),
        INVALID_PARAMS,
    );
    t.err(
        "bdev_get_iostat",
        json!({"reset_mode": "all"}),
        neg(ENOTSUP),
    );
    t.err(
        "bdev_get_iostat",
        json!({"reset_mode": "sometimes"}),
        INVALID_PARAMS,
    );
    t.ok("bdev_get_iostat", json!({"reset_mode": "none"}));
}

#[test]
fn error_bdev_injects_and_claims_its_base() {
    let t = TestDaemon::start();
    t.ok(
        "bdev_malloc_create",
        json!({"name": "B", "num_blocks": 64, "block_size": 512}),
    );
    t.err(
        "bdev_error_create",
        json!({"base_name": "nope"}),
        neg(ENODEV),
    );
    assert_eq!(t.ok("bdev_error_create", json!({"base_name": "B"})), true);
    let ee = bdev(&t, "EE_B");
    assert_eq!(ee["product_name"], "Error Injection Disk");
    assert_eq!(
        ee["driver_specific"],
        json!({"error_disk": {"base_bdev": "B"}})
    );
    assert_eq!(bdev(&t, "B")["claimed"], true);
    assert_eq!(bdev(&t, "B")["claim_type"], "exclusive_write");
    // The base is claimed: a second stacked bdev or a deletion is refused.
    let m = t.err("bdev_error_create", json!({"base_name": "B"}), neg(EBUSY));
    assert!(m.contains("EE_B"), "{m}");
    let m = t.err("bdev_malloc_delete", json!({"name": "B"}), neg(EBUSY));
    assert!(m.contains("EE_B"), "{m}");

    // Flush failures on the error bdev, then cleared.
    let dev = t.daemon.bdevs.get("EE_B").expect("EE_B");
    let flush = || io::flush(&t.daemon, &dev, Duration::from_secs(10));
    flush().expect("no injection yet");
    t.ok(
        "bdev_error_inject_error",
        json!({"name": "EE_B", "io_type": "flush", "error_type": "failure", "num": 2}),
    );
    assert!(flush().is_err());
    // A new injection on the same type replaces the old one (SPDK's model): num 1 now.
    t.ok(
        "bdev_error_inject_error",
        json!({"name": "EE_B", "io_type": "flush", "error_type": "failure"}),
    );
    assert!(flush().is_err());
    flush().expect("the injection was used up");
    t.ok(
        "bdev_error_inject_error",
        json!({"name": "EE_B", "io_type": "all", "error_type": "failure", "num": 100}),
    );
    assert!(flush().is_err());
    t.ok(
        "bdev_error_inject_error",
        json!({"name": "EE_B", "io_type": "clear", "error_type": "failure"}),
    );
    flush().expect("cleared");

    // Bad injections.
    t.err(
        "bdev_error_inject_error",
        json!({"name": "B", "io_type": "read", "error_type": "failure"}),
        neg(ENODEV),
    );
    t.err(
        "bdev_error_inject_error",
        json!({"name": "EE_B", "io_type": "sideways", "error_type": "failure"}),
        INVALID_PARAMS,
    );
    t.err(
        "bdev_error_inject_error",
        json!({"name": "EE_B", "io_type": "read", "error_type": "nomem"}),
        neg(ENOTSUP),
    );
    t.err(
        "bdev_error_inject_error",
        json!({"name": "EE_B", "io_type": "read", "error_type": "corrupt_data"}),
        neg(EINVAL),
    );
    t.err(
        "bdev_error_inject_error",
        json!({"name": "EE_B", "io_type": "read", "error_type": "failure", "num": 0}),
        neg(EINVAL),
    );
    t.ok(
        "bdev_error_inject_error",
        json!({"name": "EE_B", "io_type": "read", "error_type": "corrupt_data",
               "corrupt_offset": 3, "corrupt_value": 255}),
    );

    // Wrong deletion method, then the right one; the base is free again.
    t.err("bdev_delay_delete", json!({"name": "EE_B"}), neg(ENODEV));
    assert_eq!(t.ok("bdev_error_delete", json!({"name": "EE_B"})), true);
    assert_eq!(bdev(&t, "B")["claimed"], false);
    assert_eq!(t.ok("bdev_malloc_delete", json!({"name": "B"})), true);
}

#[test]
fn delay_bdev_create_update_delete() {
    let t = TestDaemon::start();
    t.ok(
        "bdev_null_create",
        json!({"name": "B", "num_blocks": 64, "block_size": 512}),
    );
    let p = json!({"base_bdev_name": "B", "name": "D", "avg_read_latency": 10,
                   "p99_read_latency": 20, "avg_write_latency": 30, "p99_write_latency": 40});
    assert_eq!(t.ok("bdev_delay_create", p.clone()), "D");
    t.err("bdev_delay_create", p.clone(), neg(EEXIST));
    let mut other = p.clone();
    other["name"] = json!("D2");
    t.err("bdev_delay_create", other, neg(EBUSY));
    let mut missing = p.clone();
    missing["name"] = json!("D3");
    missing["base_bdev_name"] = json!("zz");
    t.err("bdev_delay_create", missing, neg(ENODEV));
    let mut short = p;
    short.as_object_mut().map(|m| m.remove("p99_write_latency"));
    t.err("bdev_delay_create", short, INVALID_PARAMS);

    let d = bdev(&t, "D");
    assert_eq!(d["product_name"], "delay");
    assert_eq!(d["driver_specific"]["delay"]["base_bdev_name"], "B");
    assert_eq!(d["driver_specific"]["delay"]["p99_write_latency"], 40);
    t.ok(
        "bdev_delay_update_latency",
        json!({"delay_bdev_name": "D", "latency_type": "avg_read", "latency_us": 5000}),
    );
    assert_eq!(
        bdev(&t, "D")["driver_specific"]["delay"]["avg_read_latency"],
        5000
    );
    t.err(
        "bdev_delay_update_latency",
        json!({"delay_bdev_name": "B", "latency_type": "avg_read", "latency_us": 1}),
        neg(ENODEV),
    );
    t.err(
        "bdev_delay_update_latency",
        json!({"delay_bdev_name": "D", "latency_type": "p50_read", "latency_us": 1}),
        INVALID_PARAMS,
    );
    t.err(
        "bdev_delay_update_latency",
        json!({"delay_bdev_name": "D", "latency_type": "p99_read", "latency_us": u64::MAX}),
        neg(EINVAL),
    );
    // A flush is not delayed, and it passes through to the base.
    let dev = t.daemon.bdevs.get("D").expect("D");
    io::flush(&t.daemon, &dev, Duration::from_secs(10)).expect("flush");
    t.err("bdev_null_delete", json!({"name": "B"}), neg(EBUSY));
    assert_eq!(t.ok("bdev_delay_delete", json!({"name": "D"})), true);
    assert_eq!(t.ok("bdev_null_delete", json!({"name": "B"})), true);
}

#[test]
fn flush_all_flushes_every_bdev() {
    let t = TestDaemon::start();
    t.ok(
        "bdev_malloc_create",
        json!({"name": "A", "num_blocks": 64, "block_size": 512}),
    );
    t.ok(
        "bdev_null_create",
        json!({"name": "B", "num_blocks": 64, "block_size": 512}),
    );
    shoal_target::methods::flush_all(&t.daemon);
    let st = t.ok("bdev_get_iostat", json!({}));
    for b in st["bdevs"].as_array().expect("bdevs") {
        assert_eq!(b["num_flush_ops"], 1, "{b}");
    }
}
