//! `shoal-perf -V` on a file through `--bdev uring:`: a second run accepts the first run's
//! data and catches a block corrupted in between, naming its LBA and failing the run.
#![allow(missing_docs)]

mod common;

use common::*;

#[test]
fn verify_catches_a_corrupted_block_from_an_earlier_run() {
    let dir = test_dir();
    let file = dir.path().join("disk.img");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let spec = format!("uring:{}", file.display());
    let base = [
        "--bdev",
        &spec,
        "--block-size",
        "4096",
        "-q",
        "4",
        "-t",
        "1",
        "-V",
    ];
    // Run 1 writes every block (256 of them, sequentially, many times over).
    let mut args = base.to_vec();
    args.extend_from_slice(&["-w", "write", "--json"]);
    let j = ok_json(&run_perf(&args));
    assert!(
        j["verify"]["writes"].as_u64().unwrap() > 256,
        "{}",
        j["verify"]
    );

    // Run 2 reads them back: another run's headers are valid data.
    let mut args = base.to_vec();
    args.extend_from_slice(&["-w", "read", "--json"]);
    let j = ok_json(&run_perf(&args));
    assert!(j["verify"]["reads_checked"].as_u64().unwrap() > 256);

    // Flip one byte in block 10: run 3 names it and fails.
    let mut data = std::fs::read(&file).unwrap();
    data[10 * 4096 + 1000] ^= 0x01;
    std::fs::write(&file, &data).unwrap();
    let out = run_perf(&args);
    let e = one_line_error(&out, 1);
    assert!(
        e.contains("verify failed") && e.contains("LBA 10: bad checksum"),
        "{e}"
    );
    let j = json_of(&out);
    assert!(j["verify"]["mismatches"].as_u64().unwrap() >= 1);
}
