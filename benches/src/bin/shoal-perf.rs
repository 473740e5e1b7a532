//! `shoal-perf`: closed-loop I/O load with `spdk_nvme_perf`'s options.
//!
//! ```text
//! shoal-perf -r 'trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:NQN' \
//!     -q 32 -o 4096 -w randread -t 10 -c 0x2
//! shoal-perf --bdev uring:/var/tmp/disk -q 32 -o 4096 -w randread -t 10 -c 0x2 -V
//! ```
//! See `shoal_benches::perf` for the options and the modes. Exits 0 on success, 1 when the
//! run could not be done or failed (I/O errors, `-V` mismatches), 2 on bad arguments; every
//! error is one line on stderr.

use std::process::ExitCode;

use clap::Parser;
use shoal_benches::perf::{Args, bdev, nvme};

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("shoal-perf: {first} (see --help)");
            return ExitCode::from(2);
        }
    };
    let result = match (&args.bdev, args.transport_ids.is_empty()) {
        (Some(spec), _) => spec
            .parse::<bdev::BdevSpec>()
            .and_then(|spec| bdev::run(&args, &spec)),
        (None, false) => nvme::run(&args),
        (None, true) => Err(
            "nothing to drive: give -r 'trtype:TCP traddr:.. trsvcid:.. subnqn:..' or --bdev SPEC"
                .into(),
        ),
    };
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shoal-perf: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!("{:#}", report.to_json());
    } else {
        print!("{}", report.render());
    }
    match report.failure() {
        Some(why) => {
            eprintln!("shoal-perf: {why}");
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    }
}
