//! SPDK's own `rpc.py` (the `spdk` Python package, e.g. `pip install spdk==26.9`, or
//! `SHOAL_SPDK_PYTHONPATH=<dir holding spdk/>`) driving the real `shoald`: the main methods
//! with rpc.py's exact requests and its parsing of the results, then `save_config` /
//! `load_config` into a second daemon. Skipped (with a note) when the package is missing.

mod shoalctl_common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use shoalctl_common::{Shoald, TempDir, free_port};

const NQN: &str = "nqn.2016-06.io.spdk:cnode1";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:5b6a1b9e-0000-4000-8000-00000000000b";

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

#[test]
fn spdk_rpc_py_drives_shoald() {
    if !spdk_available() {
        eprintln!("SPDK's rpc.py is not importable (pip install spdk==26.9); test skipped");
        return;
    }
    let dir = TempDir::new("rpcpy");
    let mut d = Shoald::start_with(dir.path(), &["--empty"]);
    let rpc = Rpc(&d.socket);
    let image = dir.path().join("disk.img");
    std::fs::write(&image, vec![0u8; 4 << 20]).expect("image");
    let image = image.to_str().expect("utf-8");
    let (port, disc) = (free_port(), free_port());
    let (port_s, disc_s) = (port.to_string(), disc.to_string());

    // Bdevs.
    assert_eq!(
        rpc.ok(&["bdev_malloc_create", "-b", "Malloc1", "8", "512"])
            .trim(),
        "Malloc1"
    );
    assert_eq!(
        rpc.ok(&["bdev_null_create", "Null1", "8", "4096"]).trim(),
        "Null1"
    );
    assert_eq!(
        rpc.ok(&["bdev_uring_create", image, "Uring1", "512"])
            .trim(),
        "Uring1"
    );
    rpc.ok(&["bdev_error_create", "Malloc1"]);
    rpc.ok(&[
        "bdev_error_inject_error",
        "EE_Malloc1",
        "write",
        "failure",
        "-n",
        "2",
    ]);
    rpc.ok(&["bdev_error_inject_error", "EE_Malloc1", "clear", "failure"]);
    let delay = [
        "bdev_delay_create",
        "-b",
        "Null1",
        "-d",
        "Delay1",
        "-r",
        "10",
        "-t",
        "20",
        "-w",
        "30",
        "-n",
        "40",
    ];
    assert_eq!(rpc.ok(&delay).trim(), "Delay1");
    rpc.ok(&["bdev_delay_update_latency", "Delay1", "avg_read", "15"]);
    let all = rpc.json(&["bdev_get_bdevs"]);
    assert_eq!(all.as_array().map(Vec::len), Some(5), "{all}");
    let one = rpc.json(&["bdev_get_bdevs", "-b", "Delay1"]);
    assert_eq!(one[0]["driver_specific"]["delay"]["avg_read_latency"], 15);
    assert_eq!(one[0]["block_size"], 4096);
    let st = rpc.json(&["bdev_get_iostat", "--names", "Uring1"]);
    assert_eq!(st["bdevs"][0]["name"], "Uring1");
    // An error: exit status 1, SPDK's code and text.
    let dup = rpc.run(&["bdev_malloc_create", "-b", "Malloc1", "8", "512"], b"");
    assert_eq!(dup.status.code(), Some(1));
    let text = String::from_utf8_lossy(&dup.stdout);
    assert!(
        text.contains("-17") && text.contains("File exists"),
        "{text}"
    );

    // NVMe-oF.
    rpc.ok(&[
        "nvmf_create_transport",
        "-t",
        "TCP",
        "-q",
        "64",
        "-m",
        "8",
        "-c",
        "8192",
    ]);
    let tr = rpc.json(&["nvmf_get_transports"]);
    assert_eq!(tr[0]["trtype"], "TCP");
    assert_eq!(tr[0]["max_io_qpairs_per_ctrlr"], 8);
    rpc.ok(&[
        "nvmf_create_subsystem",
        NQN,
        "-a",
        "-s",
        "SPDK00000000000001",
        "-d",
        "Model1",
        "-m",
        "16",
    ]);
    rpc.ok(&[
        "nvmf_subsystem_add_ns",
        NQN,
        "EE_Malloc1",
        "-n",
        "2",
        "-g",
        "00112233445566778899AABBCCDDEEFF",
        "-e",
        "0011223344556677",
    ]);
    rpc.ok(&["nvmf_subsystem_add_ns", NQN, "Delay1"]);
    rpc.ok(&[
        "nvmf_subsystem_add_listener",
        NQN,
        "-t",
        "tcp",
        "-a",
        "127.0.0.1",
        "-s",
        &port_s,
    ]);
    rpc.ok(&[
        "nvmf_subsystem_add_listener",
        "discovery",
        "-t",
        "tcp",
        "-a",
        "127.0.0.1",
        "-s",
        &disc_s,
    ]);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(TcpStream::connect(("127.0.0.1", disc)).is_ok());
    rpc.ok(&["nvmf_subsystem_add_host", NQN, HOST]);
    let subs = rpc.json(&["nvmf_get_subsystems"]);
    let s = &subs[1];
    assert_eq!(s["nqn"], NQN);
    assert_eq!(s["serial_number"], "SPDK00000000000001");
    assert_eq!(s["listen_addresses"][0]["trsvcid"], port_s.as_str());
    assert_eq!(s["hosts"], json!([{"nqn": HOST}]));
    assert_eq!(s["namespaces"][0]["nsid"], 1);
    assert_eq!(
        s["namespaces"][1]["nguid"],
        "00112233445566778899AABBCCDDEEFF"
    );
    assert_eq!(
        rpc.json(&["nvmf_subsystem_get_controllers", NQN]),
        json!([])
    );
    assert_eq!(rpc.json(&["nvmf_subsystem_get_qpairs", NQN]), json!([]));
    let l = rpc.json(&["nvmf_subsystem_get_listeners", NQN]);
    assert_eq!(l[0]["address"]["traddr"], "127.0.0.1");
    assert!(rpc.json(&["nvmf_get_stats"])["poll_groups"].is_array());

    // save_config, load_config into a second daemon, save again: the same document.
    let saved = rpc.ok(&["save_config"]);
    let saved_v: Value = serde_json::from_str(&saved).expect("saved config is JSON");
    rpc.ok(&["spdk_kill_instance", "SIGTERM"]);
    let status = d.wait(Duration::from_secs(30));
    assert!(status.success(), "shoald: {status}: {}", d.log_text());

    let dir2 = TempDir::new("rpcpy2");
    let mut d2 = Shoald::start_with(dir2.path(), &["--empty"]);
    let rpc2 = Rpc(&d2.socket);
    let out = rpc2.run(&["load_config"], saved.as_bytes());
    assert!(
        out.status.success(),
        "load_config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rpc2.json(&["save_config"]), saved_v);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());

    // Tear down with rpc.py.
    rpc2.ok(&[
        "nvmf_subsystem_remove_listener",
        NQN,
        "-t",
        "tcp",
        "-a",
        "127.0.0.1",
        "-s",
        &port_s,
    ]);
    rpc2.ok(&["nvmf_subsystem_remove_host", NQN, HOST]);
    rpc2.ok(&["nvmf_subsystem_remove_ns", NQN, "2"]);
    rpc2.ok(&["nvmf_delete_subsystem", NQN]);
    rpc2.ok(&["bdev_error_delete", "EE_Malloc1"]);
    rpc2.ok(&["bdev_delay_delete", "Delay1"]);
    rpc2.ok(&["bdev_malloc_delete", "Malloc1"]);
    rpc2.ok(&["bdev_null_delete", "Null1"]);
    rpc2.ok(&["bdev_uring_delete", "Uring1"]);
    assert_eq!(rpc2.json(&["bdev_get_bdevs"]), json!([]));
    d2.signal(libc::SIGTERM);
    assert!(
        d2.wait(Duration::from_secs(30)).success(),
        "{}",
        d2.log_text()
    );
}
