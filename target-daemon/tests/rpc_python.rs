//! Python clients against a live server: a client framed exactly like SPDK's `rpc.py`
//! (`tests/rpc_mimic_client.py`, always run), and SPDK's real `rpc.py` when the `spdk` Python
//! package is importable (`pip install spdk`, or `SHOAL_SPDK_PYTHONPATH=<dir holding spdk/>`).

mod rpc_common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use rpc_common::{TempDir, start_server};
use serde_json::{Value, json};

fn python(args: &[&str], stdin: &[u8], pythonpath: Option<&str>) -> Output {
    let mut cmd = Command::new("python3");
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = pythonpath {
        cmd.env("PYTHONPATH", p);
    }
    let mut child = cmd
        .spawn()
        .expect("python3 must be installed to run the RPC tests");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("python3 output")
}

#[test]
fn rpc_py_framing_mimic() {
    let dir = TempDir::new("rpc-py");
    let (_server, path, _) = start_server(&dir);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rpc_mimic_client.py");
    let big = "z".repeat(100_000);
    let calls = json!({
        "pipelined": [
            ["rpc_get_methods", {"current": false, "include_aliases": false}],
            ["bdev_malloc_create", {"num_blocks": 131072, "block_size": 512, "name": "Malloc0",
                                    "md_interleave": false, "dif_is_head_of_md": false}],
            ["echo", {"big": big}],
            ["bdev_malloc_create", {"num_blocks": 8, "block_size": 512, "name": "Malloc0"}],
        ],
        "sequential": [
            ["spdk_get_version", null],
            ["nvmf_create_transport", {"trtype": "TCP", "no_srq": false, "c2h_success": true,
                                       "zcopy": false, "max_queue_depth": 64}],
            ["bdev_malloc_delete", {"name": "Nope"}],
        ],
    });
    let out = python(
        &[
            script.to_str().expect("utf-8 path"),
            path.to_str().expect("utf-8 path"),
        ],
        calls.to_string().as_bytes(),
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("client output");
    let p = v["pipelined"].as_array().expect("pipelined");
    assert_eq!(p.len(), 4);
    for (i, r) in p.iter().enumerate() {
        assert_eq!(r["id"], i + 1);
    }
    assert!(
        p[0]["result"]
            .as_array()
            .expect("methods")
            .contains(&json!("bdev_malloc_create"))
    );
    assert_eq!(p[1]["result"], "Malloc0");
    assert_eq!(p[2]["result"]["big"].as_str().map(str::len), Some(100_000));
    assert_eq!(p[3]["error"]["code"], -17);
    let s = v["sequential"].as_array().expect("sequential");
    assert!(
        s[0]["result"]["version"]
            .as_str()
            .expect("version")
            .starts_with("Shoal v")
    );
    assert_eq!(
        s[1]["result"],
        json!({"trtype": "TCP", "max_queue_depth": 64})
    );
    assert_eq!(s[2]["error"]["code"], -19);
}

/// The directory to put on `PYTHONPATH` for `import spdk`, if SPDK's package is available.
fn spdk_pythonpath() -> Option<Option<String>> {
    let env = std::env::var("SHOAL_SPDK_PYTHONPATH").ok();
    let probe = python(&["-c", "import spdk.spdk_rpc"], b"", env.as_deref());
    probe.status.success().then_some(env)
}

#[test]
fn real_rpc_py_when_installed() {
    let Some(pythonpath) = spdk_pythonpath() else {
        eprintln!(
            "SPDK's rpc.py is not importable (pip install spdk, or set SHOAL_SPDK_PYTHONPATH); \
             only the framing mimic ran"
        );
        return;
    };
    let dir = TempDir::new("rpc-real");
    let (_server, path, ctx) = start_server(&dir);
    let sock = path.to_str().expect("utf-8 path");
    let rpc = |args: &[&str], stdin: &[u8]| {
        let mut all = vec!["-m", "spdk.spdk_rpc", "-s", sock];
        all.extend_from_slice(args);
        python(&all, stdin, pythonpath.as_deref())
    };
    let ok = |args: &[&str]| {
        let out = rpc(args, b"");
        assert!(
            out.status.success(),
            "rpc.py {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    assert_eq!(
        ok(&["bdev_malloc_create", "-b", "Malloc0", "64", "512"]).trim(),
        "Malloc0"
    );
    let methods: Vec<String> = serde_json::from_str(&ok(&["rpc_get_methods"])).expect("list");
    assert!(methods.iter().any(|m| m == "nvmf_create_transport"));
    ok(&[
        "nvmf_create_transport",
        "-t",
        "TCP",
        "-q",
        "64",
        "-c",
        "8192",
    ]);
    assert!(ok(&["spdk_get_version"]).contains("Shoal v"));

    // An error response: rpc.py exits 1 and prints SPDK's code and message.
    let dup = rpc(&["bdev_malloc_create", "-b", "Malloc0", "64", "512"], b"");
    assert_eq!(dup.status.code(), Some(1));
    let text = String::from_utf8_lossy(&dup.stdout);
    assert!(
        text.contains("-17") && text.contains("File exists"),
        "{text}"
    );

    // Script mode and JSON-RPC batch mode (-b) read commands from stdin.
    let script = b"bdev_malloc_create -b Malloc1 8 512\nbdev_malloc_create -b Malloc2 8 512\n";
    let out = rpc(&[], script);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = rpc(
        &["-b"],
        b"bdev_malloc_create -b Malloc3 8 512\nbdev_malloc_delete Malloc1\n",
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        *ctx.bdevs.lock().expect("lock"),
        ["Malloc0", "Malloc2", "Malloc3"]
    );

    // save_config (framework_get_subsystems + framework_get_config) and load_config into a
    // fresh server.
    let saved = ok(&["save_config"]);
    let doc = shoal_target::config::ConfigDocument::parse(&saved).expect("rpc.py output parses");
    assert_eq!(doc.calls().len(), 3);
    let dir2 = TempDir::new("rpc-real2");
    let (_server2, path2, ctx2) = start_server(&dir2);
    let out = python(
        &[
            "-m",
            "spdk.spdk_rpc",
            "-s",
            path2.to_str().expect("utf-8"),
            "load_config",
        ],
        saved.as_bytes(),
        pythonpath.as_deref(),
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        *ctx2.bdevs.lock().expect("lock"),
        ["Malloc0", "Malloc2", "Malloc3"]
    );
}
