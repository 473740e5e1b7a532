//! SPDK's own `rpc.py` driving pools and logical volumes in the real `shoald` (skipped, with a
//! note, when the `spdk` Python package is missing; CI installs it).

mod shoalctl_common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use shoalctl_common::{Shoald, TempDir};

const NQN: &str = "nqn.2016-06.io.spdk:cnode9";

fn python(args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = Command::new("python3");
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Ok(p) = std::env::var("SHOAL_SPDK_PYTHONPATH") {
        cmd.env("PYTHONPATH", p);
    }
    let Ok(mut child) = cmd.spawn() else {
        return Output {
            status: Command::new("false").status().expect("false"),
            stdout: Vec::new(),
            stderr: b"python3 is not installed".to_vec(),
        };
    };
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin).expect("stdin");
    }
    child.wait_with_output().expect("python3 output")
}

/// What rpc.py printed (its error report goes to either stream, by version).
fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn spdk_available() -> bool {
    python(&["-c", "import spdk.spdk_rpc"], b"")
        .status
        .success()
}

struct Rpc<'a>(&'a Path);

impl Rpc<'_> {
    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let sock = self.0.to_str().expect("utf-8");
        let mut all = vec!["-m", "spdk.spdk_rpc", "-s", sock];
        all.extend_from_slice(args);
        python(&all, stdin)
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, b"");
        assert!(
            out.status.success(),
            "rpc.py {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    #[track_caller]
    fn json(&self, args: &[&str]) -> Value {
        let text = self.ok(args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("rpc.py {args:?}: {e}: {text}"))
    }
}

/// Pools and volumes driven by rpc.py: create, list, errors, claims, rename, read-only, then a
/// restart: `bdev_uring_create` on the same file brings the pool and its volumes back.
#[test]
fn spdk_rpc_py_drives_pools_and_volumes() {
    if !spdk_available() {
        eprintln!("SPDK's rpc.py is not importable (pip install spdk==26.9); test skipped");
        return;
    }
    let dir = TempDir::new("lvolpy");
    let image = dir.path().join("pool.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(64 << 20))
        .expect("image");
    let image = image.to_str().expect("utf-8").to_string();
    let (uuid, ua, ub) = {
        let mut d = Shoald::start_with(dir.path(), &["--empty"]);
        let rpc = Rpc(&d.socket);
        rpc.ok(&["bdev_uring_create", &image, "U0", "4096"]);
        let uuid = rpc
            .ok(&["bdev_lvol_create_lvstore", "U0", "lvs", "-c", "1048576"])
            .trim()
            .to_string();
        let l = rpc.json(&["bdev_lvol_get_lvstores", "-l", "lvs"]);
        assert_eq!(l[0]["uuid"], uuid.as_str());
        assert_eq!(l[0]["base_bdev"], "U0");
        assert_eq!(l[0]["cluster_size"], 1 << 20);
        assert_eq!(l[0]["block_size"], 4096);
        let total = l[0]["total_data_clusters"].as_u64().expect("total");
        assert_eq!(l[0]["free_clusters"].as_u64(), Some(total));
        // The base is claimed: no second pool, no deletion.
        let again = rpc.run(&["bdev_lvol_create_lvstore", "U0", "lvs2"], b"");
        assert!(!again.status.success());
        let del = rpc.run(&["bdev_uring_delete", "U0"], b"");
        assert!(!del.status.success(), "the pool claims its base");
        let ua = rpc.ok(&["bdev_lvol_create", "-l", "lvs", "a", "8"]);
        let ua = ua.trim().to_string();
        let ub = rpc.ok(&["bdev_lvol_create", "-u", &uuid, "-t", "b", "200"]);
        let ub = ub.trim().to_string();
        let dup = rpc.run(&["bdev_lvol_create", "-l", "lvs", "a", "1"], b"");
        assert!(!dup.status.success(), "a name in use");
        assert!(text(&dup).contains("already exists"));
        let big = rpc.run(&["bdev_lvol_create", "-l", "lvs", "c", "1000"], b"");
        assert!(!big.status.success(), "a thick volume larger than the pool");
        let l = rpc.json(&["bdev_lvol_get_lvstores"]);
        assert_eq!(l[0]["free_clusters"].as_u64(), Some(total - 8));
        let vols = rpc.json(&["bdev_lvol_get_lvols", "-l", "lvs"]);
        assert_eq!(vols.as_array().map(Vec::len), Some(2), "{vols}");
        let b = vols
            .as_array()
            .and_then(|v| v.iter().find(|x| x["name"] == "b"))
            .expect("b");
        assert_eq!(b["alias"], "lvs/b");
        assert_eq!(b["uuid"], ub.as_str());
        assert_eq!(b["is_thin_provisioned"], true);
        assert_eq!(b["lvs"]["uuid"], uuid.as_str());
        let bd = rpc.json(&["bdev_get_bdevs", "-b", &ub]);
        assert_eq!(bd[0]["aliases"][0], "lvs/b");
        assert_eq!(bd[0]["product_name"], "Logical Volume");
        assert_eq!(bd[0]["num_blocks"], 200 * 256);
        let lv = &bd[0]["driver_specific"]["lvol"];
        assert_eq!(lv["lvol_store_uuid"], uuid.as_str());
        assert_eq!(lv["base_bdev"], "U0");
        assert_eq!(lv["thin_provision"], true);
        assert_eq!(lv["num_allocated_clusters"], 0);
        let bd = rpc.json(&["bdev_get_bdevs"]);
        let u0 = bd
            .as_array()
            .and_then(|v| v.iter().find(|x| x["name"] == "U0"))
            .expect("U0");
        assert_eq!(u0["claimed"], true);
        rpc.ok(&["bdev_lvol_rename", "lvs/b", "b2"]);
        rpc.ok(&["bdev_lvol_set_read_only", &ua]);
        rpc.ok(&["bdev_lvol_rename_lvstore", "lvs", "pool"]);
        // bdev_lvol_resize {"name", "size_in_mib"}: thin growth and shrink of an unused
        // volume, thick growth within the pool and beyond it (-28, nothing changed), a
        // read-only volume (-1).
        let blocks = |rpc: &Rpc<'_>, b: &str| {
            rpc.json(&["bdev_get_bdevs", "-b", b])[0]["num_blocks"].clone()
        };
        rpc.ok(&["bdev_lvol_resize", "pool/b2", "300"]);
        assert_eq!(blocks(&rpc, &ub), 300 * 256);
        rpc.ok(&["bdev_lvol_resize", &ub, "100"]);
        assert_eq!(blocks(&rpc, &ub), 100 * 256);
        let uc = rpc.ok(&["bdev_lvol_create", "-l", "pool", "c", "4"]);
        let uc = uc.trim().to_string();
        let free = |rpc: &Rpc<'_>| {
            rpc.json(&["bdev_lvol_get_lvstores"])[0]["free_clusters"]
                .as_u64()
                .expect("free")
        };
        let f0 = free(&rpc);
        rpc.ok(&["bdev_lvol_resize", "pool/c", "6"]);
        assert_eq!(free(&rpc), f0 - 2);
        let too_big = (6 + f0).to_string();
        let out = rpc.run(&["bdev_lvol_resize", "pool/c", &too_big], b"");
        assert!(!out.status.success());
        assert!(
            text(&out).contains("-28") && text(&out).contains("free"),
            "{}",
            text(&out)
        );
        assert_eq!((free(&rpc), blocks(&rpc, &uc)), (f0 - 2, json!(6 * 256)));
        let ro = rpc.run(&["bdev_lvol_resize", &ua, "16"], b"");
        assert!(!ro.status.success());
        assert!(text(&ro).contains("read-only"), "{}", text(&ro));
        let none = rpc.run(&["bdev_lvol_resize", "pool/nope", "16"], b"");
        assert!(text(&none).contains("-19"), "{}", text(&none));
        rpc.ok(&["bdev_lvol_delete", "pool/c"]);
        // An exported volume keeps its pool and itself from deletion.
        rpc.ok(&["nvmf_create_transport", "-t", "TCP"]);
        rpc.ok(&["nvmf_create_subsystem", NQN, "-a"]);
        rpc.ok(&["nvmf_subsystem_add_ns", NQN, &ua]);
        // An exported volume grows, and is not shrunk (-16), as SPDK refuses for an open bdev.
        rpc.ok(&["nvmf_subsystem_add_ns", NQN, &ub]);
        rpc.ok(&["bdev_lvol_resize", &ub, "120"]);
        let shrink = rpc.run(&["bdev_lvol_resize", &ub, "50"], b"");
        assert!(!shrink.status.success());
        assert!(
            text(&shrink).contains("-16") && text(&shrink).contains("in use"),
            "{}",
            text(&shrink)
        );
        assert_eq!(blocks(&rpc, &ub), 120 * 256);
        // An invalid size is -22 (EINVAL), not -16, for a volume in use.
        let zero = rpc.run(&["bdev_lvol_resize", &ub, "0"], b"");
        assert!(!zero.status.success());
        assert!(text(&zero).contains("-22"), "{}", text(&zero));
        assert_eq!(blocks(&rpc, &ub), 120 * 256);
        for args in [
            &["bdev_lvol_delete_lvstore", "-l", "pool"][..],
            &["bdev_lvol_delete", "pool/a"][..],
        ] {
            let out = rpc.run(args, b"");
            assert!(!out.status.success(), "{args:?}");
            assert!(text(&out).contains("in use"), "{args:?}");
        }
        rpc.ok(&["nvmf_delete_subsystem", NQN]);
        d.signal(libc::SIGTERM);
        assert!(d.wait(Duration::from_secs(20)).success());
        (uuid, ua, ub)
    };
    // A new daemon: the same file, examined.
    let d = Shoald::start_with(dir.path(), &["--empty"]);
    let rpc = Rpc(&d.socket);
    rpc.ok(&["bdev_uring_create", &image, "U1", "4096"]);
    let l = rpc.json(&["bdev_lvol_get_lvstores", "-u", &uuid]);
    assert_eq!(l[0]["name"], "pool");
    assert_eq!(l[0]["base_bdev"], "U1");
    let vols = rpc.json(&["bdev_lvol_get_lvols"]);
    let mut names: Vec<(String, String)> = vols
        .as_array()
        .expect("array")
        .iter()
        .map(|v| {
            (
                v["alias"].as_str().unwrap_or("").to_string(),
                v["uuid"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("pool/a".to_string(), ua.clone()),
            ("pool/b2".to_string(), ub.clone())
        ]
    );
    let bd = rpc.json(&["bdev_get_bdevs", "-b", &ub]);
    assert_eq!(bd[0]["num_blocks"], 120 * 256, "the size came back");
    rpc.ok(&["bdev_lvol_delete", "pool/b2"]);
    let gone = rpc.run(&["bdev_get_bdevs", "-b", &ub], b"");
    assert!(!gone.status.success());
    rpc.ok(&["bdev_lvol_delete_lvstore", "-l", "pool"]);
    assert_eq!(rpc.json(&["bdev_lvol_get_lvstores"]), json!([]));
    rpc.ok(&["bdev_uring_delete", "U1"]);
}

/// Snapshots and clones driven by rpc.py: SPDK's results and `driver_specific.lvol` fields
/// (snapshot, clone, base_snapshot, clones), its refusals (a clone of a writable volume, the
/// deletion of a snapshot with two clones), the deletion of a snapshot into its only clone,
/// decouple and inflate; then a restart brings the relations back.
#[test]
fn spdk_rpc_py_drives_snapshots_and_clones() {
    if !spdk_available() {
        eprintln!("SPDK's rpc.py is not importable (pip install spdk==26.9); test skipped");
        return;
    }
    let dir = TempDir::new("lvolsnap");
    let image = dir.path().join("pool.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(64 << 20))
        .expect("image");
    let image = image.to_str().expect("utf-8").to_string();
    let lvol = |rpc: &Rpc<'_>, name: &str| -> Value {
        let bd = rpc.json(&["bdev_get_bdevs", "-b", name]);
        bd[0]["driver_specific"]["lvol"].clone()
    };
    let (us, uc) = {
        let mut d = Shoald::start_with(dir.path(), &["--empty"]);
        let rpc = Rpc(&d.socket);
        rpc.ok(&["bdev_uring_create", &image, "U0", "4096"]);
        rpc.ok(&["bdev_lvol_create_lvstore", "U0", "lvs", "-c", "1048576"]);
        let total = rpc.json(&["bdev_lvol_get_lvstores"])[0]["free_clusters"]
            .as_u64()
            .expect("free");
        let uv = rpc.ok(&["bdev_lvol_create", "-l", "lvs", "v", "4"]);
        let uv = uv.trim().to_string();
        let us = rpc
            .ok(&["bdev_lvol_snapshot", "lvs/v", "s"])
            .trim()
            .to_string();
        assert_eq!(us.len(), 36, "the snapshot's UUID: {us}");
        let s = lvol(&rpc, &us);
        assert_eq!(s["snapshot"], true);
        assert_eq!(s["clone"], false);
        assert_eq!(s["num_allocated_clusters"], 4);
        assert_eq!(s["clones"], json!(["v"]));
        let v = lvol(&rpc, &uv);
        assert_eq!(
            (v["clone"].clone(), v["snapshot"].clone()),
            (json!(true), json!(false))
        );
        assert_eq!(v["base_snapshot"], "s");
        assert_eq!(v["thin_provision"], true);
        let bad = rpc.run(&["bdev_lvol_clone", "lvs/v", "x"], b"");
        assert!(!bad.status.success(), "a clone of a writable volume");
        let bad = rpc.run(&["bdev_lvol_snapshot", "lvs/s", "x"], b"");
        assert!(!bad.status.success(), "a snapshot of a snapshot");
        let uc = rpc
            .ok(&["bdev_lvol_clone", "lvs/s", "c"])
            .trim()
            .to_string();
        let c = lvol(&rpc, &uc);
        assert_eq!(c["base_snapshot"], "s");
        assert_eq!(c["num_allocated_clusters"], 0);
        let vols = rpc.json(&["bdev_lvol_get_lvols"]);
        let sj = vols
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == "s"))
            .expect("s");
        assert_eq!(
            (sj["is_snapshot"].clone(), sj["is_clone"].clone()),
            (json!(true), json!(false))
        );
        let two = rpc.run(&["bdev_lvol_delete", "lvs/s"], b"");
        assert!(!two.status.success(), "a snapshot with two clones");
        assert!(text(&two).contains("more than one clone"), "{}", text(&two));
        // Inflate v: it owns every cluster and has no parent; s keeps one clone.
        rpc.ok(&["bdev_lvol_inflate", "lvs/v"]);
        let v = lvol(&rpc, &uv);
        assert_eq!(
            (v["clone"].clone(), v["thin_provision"].clone()),
            (json!(false), json!(false))
        );
        assert_eq!(v["num_allocated_clusters"], 4);
        let nop = rpc.run(&["bdev_lvol_decouple_parent", "lvs/v"], b"");
        assert!(!nop.status.success(), "no parent to decouple from");
        assert_eq!(lvol(&rpc, &us)["clones"], json!(["c"]));
        let free = rpc.json(&["bdev_lvol_get_lvstores"])[0]["free_clusters"]
            .as_u64()
            .expect("free");
        assert_eq!(free, total - 8);
        d.signal(libc::SIGTERM);
        assert!(d.wait(Duration::from_secs(20)).success());
        (us, uc)
    };
    let d = Shoald::start_with(dir.path(), &["--empty"]);
    let rpc = Rpc(&d.socket);
    rpc.ok(&["bdev_uring_create", &image, "U1", "4096"]);
    assert_eq!(lvol(&rpc, &uc)["base_snapshot"], "s");
    assert_eq!(lvol(&rpc, &us)["clones"], json!(["c"]));
    // One clone: the snapshot is deleted into it.
    rpc.ok(&["bdev_lvol_delete", "lvs/s"]);
    assert!(
        !rpc.run(&["bdev_get_bdevs", "-b", &us], b"")
            .status
            .success()
    );
    let c = lvol(&rpc, &uc);
    assert_eq!(
        (c["clone"].clone(), c["num_allocated_clusters"].clone()),
        (json!(false), json!(4))
    );
    let c2 = rpc
        .ok(&["bdev_lvol_snapshot", "lvs/c", "s2"])
        .trim()
        .to_string();
    let c3 = rpc.ok(&["bdev_lvol_clone", &c2, "c3"]).trim().to_string();
    assert_eq!(lvol(&rpc, &c3)["base_snapshot"], "s2");
    rpc.ok(&["bdev_lvol_decouple_parent", "lvs/c3"]);
    assert_eq!(lvol(&rpc, &c3)["clone"], false);
    assert_eq!(
        lvol(&rpc, &c2)["clones"],
        json!(["c"]),
        "the decoupled clone is no longer listed"
    );
}

/// A thick growth held at its device (an error bdev holding its zeroing) does not hold the
/// daemon's claims lock: another RPC that needs it (here the injection's `clear`, which lets
/// the growth go on) answers at once, and the growth then completes.
#[test]
fn a_long_growth_does_not_stall_other_rpcs() {
    if !spdk_available() {
        eprintln!("SPDK's rpc.py is not importable (pip install spdk==26.9); test skipped");
        return;
    }
    let dir = TempDir::new("lvolgrow");
    let mut d = Shoald::start_with(dir.path(), &["--empty"]);
    let rpc = Rpc(&d.socket);
    rpc.ok(&["bdev_malloc_create", "-b", "M0", "64", "4096"]);
    rpc.ok(&["bdev_error_create", "M0"]);
    rpc.ok(&["bdev_lvol_create_lvstore", "EE_M0", "lvs", "-c", "1048576"]);
    let uv = rpc.ok(&["bdev_lvol_create", "-l", "lvs", "v", "4"]);
    let uv = uv.trim();
    // The next I/O of the pool (the growth's zeroing) is held.
    rpc.ok(&[
        "bdev_error_inject_error",
        "EE_M0",
        "all",
        "pending",
        "-n",
        "1",
    ]);
    let sock = d.socket.to_str().expect("utf-8").to_string();
    let grow = std::thread::spawn(move || {
        let s = sock.as_str();
        python(
            &[
                "-m",
                "spdk.spdk_rpc",
                "-s",
                s,
                "bdev_lvol_resize",
                "lvs/v",
                "16",
            ],
            b"",
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(!grow.is_finished(), "the growth was not held");
    let t0 = std::time::Instant::now();
    rpc.ok(&[
        "-t",
        "20",
        "bdev_error_inject_error",
        "EE_M0",
        "clear",
        "failure",
    ]);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "an RPC waited {:?} for the growth",
        t0.elapsed()
    );
    let out = grow.join().expect("rpc.py");
    assert!(out.status.success(), "{}", text(&out));
    let b = rpc.json(&["bdev_get_bdevs", "-b", uv]);
    assert_eq!(b[0]["num_blocks"], 16 * 256);
    d.signal(libc::SIGTERM);
    assert!(d.wait(Duration::from_secs(20)).success());
}
