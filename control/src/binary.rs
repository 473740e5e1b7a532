//! What every binary of this crate does around its own work: logs to standard error, a Tokio
//! runtime, and an exit code with the error named after the program.

use std::future::Future;
use std::process::ExitCode;

/// The runtime a binary asks for.
pub enum Runtime {
    /// One thread (the agent, the simulated nodes).
    CurrentThread,
    /// Worker threads (the control plane's HTTP API and leader).
    MultiThread(usize),
}

/// Sets up logging to standard error with `log` as the filter, runs `main` on a runtime of the
/// kind asked for, and turns its outcome into the exit code (an error is printed as
/// `NAME: error`).
pub fn run<F>(name: &str, log: &str, runtime: Runtime, main: F) -> ExitCode
where
    F: Future<Output = Result<(), String>>,
{
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(log))
        .with_writer(std::io::stderr)
        .init();
    let built = match runtime {
        Runtime::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Runtime::MultiThread(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let rt = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}
