//! `shoal-perf` against the real `shoald`: verified runs with and without digests, `shoald`
//! killed and restarted in the middle of a verified run on a file-backed namespace, and the
//! one-line errors for an unreachable target, a refused host and bad arguments.
#![allow(missing_docs)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn verify_counts(j: &serde_json::Value) -> (u64, u64, u64) {
    let v = &j["verify"];
    (
        v["reads_checked"].as_u64().unwrap(),
        v["writes"].as_u64().unwrap(),
        v["mismatches"].as_u64().unwrap(),
    )
}

#[test]
fn verified_runs_with_and_without_digests() {
    let dir = test_dir();
    let port = free_port();
    let _d = Shoald::start(
        dir.path(),
        &config(&Dev::Malloc { mib: 8 }, port, None),
        port,
    );
    let r = trid(port);
    for extra in [&[][..], &["-H", "-I", "-P", "2"][..]] {
        let mut args = vec![
            "-r", &r, "-q", "16", "-o", "8192", "-w", "randrw", "-M", "60",
        ];
        args.extend_from_slice(&["-t", "2", "-V", "--json"]);
        args.extend_from_slice(extra);
        let j = ok_json(&run_perf(&args));
        let (reads, writes, bad) = verify_counts(&j);
        assert!(reads > 1000 && writes > 1000, "{extra:?}: {}", j["verify"]);
        assert_eq!(bad, 0, "{extra:?}: {}", j["verify"]);
        assert_eq!(j["total"]["errors"], 0);
        assert!(j["total"]["rates"]["p99_us"].as_f64().unwrap() > 0.0);
        assert!(j["cpu"]["per_io_us"].as_f64().unwrap() > 0.0);
        assert_eq!(j["args"]["header_digest"], !extra.is_empty());
    }
}

#[test]
fn all_namespaces_and_the_text_report() {
    let dir = test_dir();
    let port = free_port();
    let _d = Shoald::start(
        dir.path(),
        &config(&Dev::Malloc { mib: 8 }, port, None),
        port,
    );
    // No ns: every namespace of the subsystem.
    let r = format!("trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{port} subnqn:{NQN}");
    let out = run_perf(&["-r", &r, "-q", "4", "-w", "read", "-o", "131072", "-t", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |start: &str| {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no `{start}` line in:\n{text}"))
            .to_string()
    };
    assert!(line("TCP (addr:127.0.0.1").contains(&format!("subnqn:{NQN}) NSID 1 from core")));
    // Total : IOPS MiB/s avg min max p50 p99 p99.9
    let total: Vec<f64> = line("Total")
        .split_whitespace()
        .skip(2)
        .map(|f| f.parse().unwrap())
        .collect();
    assert_eq!(total.len(), 8, "{text}");
    assert!(total[0] > 100.0, "IOPS: {text}");
    assert!(
        (total[1] - total[0] / 8.0).abs() < 1.0,
        "128 KiB I/Os: {text}"
    );
    assert!(
        total[3] <= total[2] && total[2] <= total[4],
        "min <= avg <= max: {text}"
    );
    assert!(total[5] <= total[6] && total[6] <= total[7] && total[7] <= total[4]);
    assert!(line("CPU:").contains("us per I/O"));
}

#[test]
fn shoald_killed_and_restarted_mid_run_keeps_verified_data() {
    let dir = test_dir();
    let file = dir.path().join("disk.img");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let port = free_port();
    let cfg = config(&Dev::Uring { path: &file }, port, None);
    let mut d = Shoald::start(dir.path(), &cfg, port);
    let r = trid(port);
    // 1024 blocks: after the restart, nearly every block written before the kill is read.
    let mut child = perf(&[
        "-r",
        &r,
        "-q",
        "16",
        "-o",
        "4096",
        "-w",
        "randrw",
        "-M",
        "50",
        "-t",
        "7",
        "-V",
        "--json",
        "--progress",
        "--reconnect-delay-ms",
        "100",
        "--ctrl-loss-tmo",
        "15",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Kill shoald once I/O flows (the progress line shows it), restart it 1 s later.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    // `[   1 s]       612345 IOPS    2392.00 MiB/s`
    let iops = |l: &str| -> f64 {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.iter()
            .position(|&t| t == "IOPS")
            .and_then(|i| w.get(i.checked_sub(1)?)?.parse().ok())
            .unwrap_or(-1.0)
    };
    let first = rx.recv_timeout(Duration::from_secs(10)).expect("progress");
    assert!(iops(&first) > 0.0, "{first}");
    d.kill();
    let killed = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let _d2 = Shoald::start(dir.path(), &cfg, port);
    let out = wait_output(child, Duration::from_secs(40));
    let lines: Vec<String> = rx.try_iter().collect();
    let j = ok_json(&out);
    let (reads, writes, bad) = verify_counts(&j);
    assert_eq!(bad, 0, "{}", j["verify"]);
    assert_eq!(j["total"]["errors"], 0, "{j}");
    assert!(reads > 2000 && writes > 2000, "{}", j["verify"]);
    // I/O stopped while shoald was down, and flowed again after the restart.
    let after: Vec<f64> = lines.iter().map(|l| iops(l)).collect();
    let max = after.iter().copied().fold(0.0, f64::max);
    assert!(
        after.iter().any(|&v| v < max / 10.0),
        "a second (nearly) without I/O: {lines:?}"
    );
    assert!(
        after.last().is_some_and(|&v| v > 0.0),
        "I/O again: {lines:?}"
    );
    assert!(killed.elapsed() < Duration::from_secs(20));
}

#[test]
fn unreachable_target_is_one_line_and_exit_1() {
    let port = free_port();
    let out = run_perf(&["-r", &trid(port), "-t", "1"]);
    let e = one_line_error(&out, 1);
    assert!(e.contains("cannot connect") && e.contains("refused"), "{e}");
}

#[test]
fn refused_host_is_one_line_and_exit_1() {
    let dir = test_dir();
    let port = free_port();
    let other = "nqn.2014-08.org.nvmexpress:uuid:0badc0de-0000-4000-8000-000000000002";
    let cfg = config(&Dev::Malloc { mib: 4 }, port, Some(&[other]));
    let _d = Shoald::start(dir.path(), &cfg, port);
    let out = run_perf(&["-r", &trid(port), "-t", "1", "--hostnqn", HOSTNQN]);
    let e = one_line_error(&out, 1);
    assert!(e.contains("not allowed"), "{e}");
    // The allowed host gets in (hostnqn in the transport ID, as spdk_nvme_perf takes it).
    let r = format!("{} hostnqn:{other}", trid(port));
    let out = run_perf(&["-r", &r, "-t", "1", "-q", "4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_arguments_are_one_line_and_exit_2() {
    for args in [&["-q", "lots"][..], &["--no-such-option"][..]] {
        one_line_error(&run_perf(args), 2);
    }
    for args in [
        &["-r", "trtype:RDMA traddr:10.0.0.1"][..],
        &["-r", "trtype:TCP traddr:127.0.0.1 subnqn:x", "-P", "0"][..],
        &["--bdev", "malloc:16", "-o", "1000"][..],
        &[][..],
    ] {
        one_line_error(&run_perf(args), 1);
    }
}
