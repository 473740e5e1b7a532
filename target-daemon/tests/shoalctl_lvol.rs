//! `shoalctl pool ...` and `shoalctl volume ...` (the real binary) against the real `shoald`
//! with a pool on a file through io_uring: every subcommand, `--json`, the errors shoald
//! answers (printed with their message, exit status 1), a nexus over volumes named by their
//! alias (`bdev:///pool/vol`), and the volumes coming back after a restart.

mod shoalctl_common;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use shoalctl_common::{Shoald, TempDir, fails, ok};

fn json(s: &Path, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let text = ok(s, &a);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

/// The row of `table` whose first column is `name`, split on blanks.
fn row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|r| r.first().is_some_and(|c| c == name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{table}"))
}

/// The volume `alias` in `volume list --json`.
fn lvol<'a>(list: &'a Value, alias: &str) -> &'a Value {
    list.as_array()
        .and_then(|a| a.iter().find(|v| v["alias"] == alias))
        .unwrap_or_else(|| panic!("no volume {alias} in {list}"))
}

#[test]
fn pools_and_volumes_through_shoalctl() {
    let dir = TempDir::new("shoalctl-lvol");
    let image = dir.path().join("pool.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(256 << 20))
        .expect("image");
    let img = image.to_str().expect("utf-8");
    let mut d = Shoald::start_with(dir.path(), &["--empty"]);
    let s = d.socket.clone();
    let s = s.as_path();
    ok(
        s,
        &["bdev", "uring", "create", "U0", img, "--block-size", "4096"],
    );

    // Pools.
    let line = ok(
        s,
        &["pool", "create", "U0", "lvs", "--cluster-size", "1MiB"],
    );
    assert!(
        line.starts_with("created pool lvs (") && line.ends_with(") on U0\n"),
        "{line}"
    );
    let pools = ok(s, &["pool", "list"]);
    assert_eq!(
        row(&pools, "NAME"),
        ["NAME", "BDEV", "SIZE", "FREE", "USED", "CLUSTER", "UUID"]
    );
    let r = row(&pools, "lvs");
    assert_eq!(
        r[1..8],
        ["U0", "255", "MiB", "255", "MiB", "0%", "1"],
        "{pools}"
    );
    let pj = json(s, &["pool", "list", "lvs"]);
    assert_eq!(pj[0]["cluster_size"], 1 << 20);
    assert_eq!(pj[0]["total_data_clusters"], 255);
    let e = fails(s, &["pool", "create", "U0", "again"]);
    assert!(
        e.contains("bdev_lvol_create_lvstore") && e.contains("claimed"),
        "{e}"
    );
    let e = fails(s, &["pool", "list", "nope"]);
    assert!(e.contains("lvstore nope") && e.contains("-19"), "{e}");
    let e = fails(s, &["pool", "create", "U0", "x", "--cluster-size", "4XB"]);
    assert!(e.contains("unknown size unit"), "{e}");

    // Volumes: thick, thin, snapshot, clone.
    let line = ok(s, &["volume", "create", "lvs", "v1", "64MiB"]);
    assert!(
        line.starts_with("created thick volume lvs/v1 (") && line.ends_with(") of 64 MiB\n"),
        "{line}"
    );
    let uuid: Value = json(s, &["volume", "create", "lvs", "thin1", "1GiB", "--thin"]);
    assert!(uuid.as_str().is_some_and(|u| u.len() == 36), "{uuid}");
    let line = ok(s, &["volume", "snapshot", "lvs/v1", "snap1"]);
    assert!(
        line.starts_with("created snapshot lvs/snap1 (") && line.ends_with(") of lvs/v1\n"),
        "{line}"
    );
    let line = ok(s, &["volume", "clone", "lvs/snap1", "c1"]);
    assert!(
        line.starts_with("created clone lvs/c1 (") && line.ends_with(") of lvs/snap1\n"),
        "{line}"
    );
    let list = ok(s, &["volume", "list"]);
    assert_eq!(
        row(&list, "NAME"),
        [
            "NAME",
            "KIND",
            "PROVISION",
            "SIZE",
            "ALLOCATED",
            "PARENT",
            "UUID"
        ]
    );
    // As in SPDK, the snapshot's origin becomes its clone.
    assert_eq!(row(&list, "lvs/v1")[1..3], ["clone", "thin"], "{list}");
    assert_eq!(
        row(&list, "lvs/thin1")[1..6],
        ["volume", "thin", "1", "GiB", "0"]
    );
    assert_eq!(
        row(&list, "lvs/snap1")[1..7],
        ["snapshot", "thin", "64", "MiB", "64", "MiB"]
    );
    assert_eq!(row(&list, "lvs/c1")[1..4], ["clone", "thin", "64"]);
    assert_eq!(row(&list, "lvs/c1")[7], "snap1");
    let vj = json(s, &["volume", "list", "--pool", "lvs"]);
    assert_eq!(vj.as_array().map(Vec::len), Some(4), "{vj}");
    assert_eq!(lvol(&vj, "lvs/thin1")["uuid"], uuid);
    assert_eq!(lvol(&vj, "lvs/thin1")["is_thin_provisioned"], true);
    assert_eq!(lvol(&vj, "lvs/snap1")["is_snapshot"], true);
    assert_eq!(lvol(&vj, "lvs/c1")["is_clone"], true);
    // The pool's free space shows the thick allocation.
    let pj = json(s, &["pool", "list"]);
    assert_eq!(pj[0]["free_clusters"], 255 - 64);

    // Bad input: each one line, with shoald's message and code.
    let e = fails(s, &["volume", "create", "nope", "x", "1GiB"]);
    assert!(
        e.contains("bdev_lvol_create: ") && e.contains("lvstore nope"),
        "{e}"
    );
    let e = fails(s, &["volume", "create", "lvs", "v1", "8MiB"]);
    assert!(e.contains("already exists") && e.contains("-17"), "{e}");
    let e = fails(s, &["volume", "create", "lvs", "big", "10GiB"]);
    assert!(e.contains("does not fit") && e.contains("-28"), "{e}");
    for bad in ["1000", "0", "1.5G", "12 parsecs"] {
        let e = fails(s, &["volume", "create", "lvs", "x", bad]);
        assert!(e.contains(bad), "{e}");
    }
    let e = fails(s, &["volume", "snapshot", "lvs/nope", "s"]);
    assert!(e.contains("lvol lvs/nope") && e.contains("-19"), "{e}");
    let e = fails(s, &["volume", "snapshot", "lvs/v1", "c1"]);
    assert!(e.contains("already exists"), "{e}");
    let e = fails(s, &["volume", "delete", "lvs/snap1"]);
    assert!(e.contains("bdev_lvol_delete"), "{e}");
    let e = fails(s, &["volume", "resize", "lvs/v1", "100KiB"]);
    assert!(e.contains("whole, non-zero number of MiB"), "{e}");

    // Resize: the new size shows; a snapshot cannot be resized (SPDK's -EPERM).
    assert_eq!(
        ok(s, &["volume", "resize", "lvs/thin1", "2GiB"]),
        "resized lvs/thin1 to 2 GiB\n"
    );
    assert_eq!(
        row(&ok(s, &["volume", "list"]), "lvs/thin1")[3..5],
        ["2", "GiB"]
    );
    let e = fails(s, &["volume", "resize", "lvs/snap1", "2GiB"]);
    assert!(
        e.starts_with("shoalctl: bdev_lvol_resize: ") && e.contains("lvs/snap1"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");

    // Rename, read-only, inflate, decouple.
    assert_eq!(
        ok(s, &["volume", "rename", "lvs/thin1", "thin2"]),
        "renamed lvs/thin1 to thin2\n"
    );
    assert_eq!(
        ok(s, &["volume", "set-read-only", "lvs/thin2"]),
        "lvs/thin2 is read-only\n"
    );
    ok(s, &["volume", "clone", "lvs/snap1", "c2"]);
    assert_eq!(ok(s, &["volume", "inflate", "lvs/c1"]), "inflated lvs/c1\n");
    ok(s, &["volume", "decouple-parent", "lvs/c2"]);
    let list = ok(s, &["volume", "list"]);
    assert_eq!(
        row(&list, "lvs/c1")[1..5],
        ["volume", "thick", "64", "MiB"],
        "{list}"
    );
    assert_eq!(row(&list, "lvs/c2")[1], "volume", "{list}");
    assert!(!list.contains("lvs/thin1"), "{list}");

    // A nexus over two volumes named by their alias; the namespace and the bdev list take
    // the alias too.
    ok(s, &["volume", "create", "lvs", "r1", "32MiB"]);
    ok(s, &["volume", "create", "lvs", "r2", "32MiB", "--thin"]);
    let r1 = lvol(&json(s, &["volume", "list"]), "lvs/r1")["uuid"]
        .as_str()
        .expect("uuid")
        .to_owned();
    ok(
        s,
        &[
            "nexus",
            "create",
            "nx",
            "--size",
            "16MiB",
            "bdev:///lvs/r1",
            "bdev:///lvs/r2",
        ],
    );
    let nx = json(s, &["nexus", "list", "nx"]);
    assert_eq!(nx[0]["state"], "online", "{nx}");
    assert_eq!(nx[0]["children"][0]["uri"], format!("bdev:///{r1}"), "{nx}");
    let e = fails(s, &["volume", "delete", "lvs/r1"]);
    assert!(e.contains("in use by") && e.contains("nx"), "{e}");
    let e = fails(
        s,
        &["nexus", "create", "nx2", "--size", "8MiB", "bdev:///lvs/r1"],
    );
    assert!(e.contains("nexus nx"), "{e}");
    let e = fails(
        s,
        &[
            "nexus",
            "create",
            "nx3",
            "--size",
            "8MiB",
            "bdev:///lvs//r1",
        ],
    );
    assert!(e.contains("empty part"), "{e}");
    ok(s, &["nexus", "destroy", "nx"]);
    const NQN: &str = "nqn.2016-06.io.shoal:lvol";
    ok(s, &["nvmf", "transport", "create"]);
    ok(s, &["nvmf", "subsystem", "create", NQN]);
    ok(s, &["nvmf", "ns", "add", NQN, "lvs/r1"]);
    let b = json(s, &["bdev", "list", "lvs/r1"]);
    assert_eq!(b[0]["name"], r1.as_str(), "{b}");
    assert_eq!(b[0]["claimed"], true, "{b}");
    let e = fails(s, &["pool", "delete", "lvs"]);
    assert!(e.contains("in use"), "{e}");
    ok(s, &["nvmf", "subsystem", "delete", NQN]);

    // Pool rename: the aliases follow.
    assert_eq!(
        ok(s, &["pool", "rename", "lvs", "pool"]),
        "renamed pool lvs to pool\n"
    );
    let e = fails(s, &["pool", "rename", "lvs", "pool2"]);
    assert!(e.contains("lvstore lvs"), "{e}");
    assert_eq!(
        row(&ok(s, &["volume", "list"]), "pool/r1").last(),
        Some(&r1)
    );
    assert_eq!(ok(s, &["volume", "delete", "pool/c2"]), "deleted pool/c2\n");

    // A restart on the same file: the pool and its volumes come back (examine).
    let before = ok(s, &["volume", "list"]);
    d.signal(libc::SIGTERM);
    assert!(
        d.wait(Duration::from_secs(30)).success(),
        "{}",
        d.log_text()
    );
    let d2 = Shoald::start_with(dir.path(), &["--empty"]);
    ok(
        s,
        &["bdev", "uring", "create", "U0", img, "--block-size", "4096"],
    );
    let mut a: Vec<&str> = before.lines().collect();
    let after = ok(s, &["volume", "list"]);
    let mut b: Vec<&str> = after.lines().collect();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);

    // Delete the pool with what is left in it.
    assert_eq!(ok(s, &["pool", "delete", "pool"]), "deleted pool pool\n");
    assert_eq!(
        ok(s, &["pool", "list"]),
        "NAME  BDEV  SIZE  FREE  USED  CLUSTER  UUID\n"
    );
    assert_eq!(json(s, &["volume", "list"]), serde_json::json!([]));
    let e = fails(s, &["pool", "delete", "pool"]);
    assert!(e.contains("-19"), "{e}");
    drop(d2);
}
