//! `shoal-perf`: closed-loop I/O load in the manner of `spdk_nvme_perf`.
//!
//! ```text
//! shoal-perf --bdev uring:/var/tmp/disk -q 32 -o 4096 -w randread -t 10 -c 0x2
//! ```
//! See `shoal_benches::perf` for the options and the modes.

use clap::Parser;
use shoal_benches::perf::{Args, bdev};

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let result = match &args.bdev {
        Some(spec) => spec
            .parse::<bdev::BdevSpec>()
            .and_then(|spec| bdev::run(&args, &spec)),
        None => Err("nothing to drive: give --bdev SPEC (uring:PATH, malloc:MIB, null:MIB)".into()),
    };
    match result {
        Ok(report) => {
            print!("{}", report.render());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shoal-perf: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
