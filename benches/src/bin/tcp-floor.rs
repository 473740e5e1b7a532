//! `tcp-floor`: the kernel's own cost of one NVMe/TCP 4 KiB read round trip, without NVMe.
//!
//! Two threads, pinned like `shoald -m 0x1` and `shoal-perf -c 0x2`, exchange the bytes of a
//! depth-1 4 KiB read over loopback TCP: a 72-byte command capsule one way, a C2HData PDU with
//! 4 KiB of data and a response capsule (4,144 bytes) the other, each side busy-polling
//! non-blocking `recv` as `spdk_nvme_perf` and SPDK's target do. The average round trip is the
//! floor under the depth-1 latency line of `hack/bench-table.sh`: what a target and a host
//! that did no work at all would measure on this machine at this minute. This VM's speed
//! changes by half for minutes at a time, so the line and its floor are measured together.
//!
//! ```text
//! tcp-floor [--secs 5] [--server-core 0] [--client-core 1] [--port 4599] [--json]
//! ```

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

/// CapsuleCmd PDU: 8-byte common header and a 64-byte submission queue entry.
const REQUEST: usize = 72;
/// C2HData PDU (24-byte header, 4 KiB of data) followed by a CapsuleResp PDU (8 + 16 bytes).
const RESPONSE: usize = 24 + 4096 + 24;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Loopback TCP round trip of a 4 KiB NVMe/TCP read, without NVMe"
)]
struct Args {
    /// Seconds to measure (after a short warm-up).
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Core of the answering side (where shoald runs).
    #[arg(long, default_value_t = 0)]
    server_core: usize,
    /// Core of the asking side (where shoal-perf runs).
    #[arg(long, default_value_t = 1)]
    client_core: usize,
    /// Loopback port to use.
    #[arg(long, default_value_t = 4599)]
    port: u16,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

fn pin(core: usize) {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        eprintln!("tcp-floor: cannot pin to core {core}; running unpinned");
    }
}

/// Reads exactly `buf.len()` bytes, spinning on a non-blocking socket. `Ok(false)` at EOF.
fn read_full(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) => return Ok(false),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn write_full(s: &mut TcpStream, buf: &[u8]) -> std::io::Result<()> {
    let mut put = 0;
    while put < buf.len() {
        match s.write(&buf[put..]) {
            Ok(n) => put += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                std::hint::spin_loop();
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn prepare(s: &TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    s.set_nonblocking(true)
}

fn serve(listener: TcpListener, core: usize) -> std::io::Result<()> {
    pin(core);
    let (mut s, _) = listener.accept()?;
    prepare(&s)?;
    let mut req = [0u8; REQUEST];
    let resp = vec![0u8; RESPONSE];
    while read_full(&mut s, &mut req)? {
        write_full(&mut s, &resp)?;
    }
    Ok(())
}

fn run(args: &Args) -> std::io::Result<(u64, Duration)> {
    let listener = TcpListener::bind(("127.0.0.1", args.port))?;
    let server_core = args.server_core;
    let server = std::thread::spawn(move || serve(listener, server_core));
    pin(args.client_core);
    let mut s = TcpStream::connect(("127.0.0.1", args.port))?;
    prepare(&s)?;
    let req = [0u8; REQUEST];
    let mut resp = vec![0u8; RESPONSE];
    let mut round = |s: &mut TcpStream| -> std::io::Result<()> {
        write_full(s, &req)?;
        if read_full(s, &mut resp)? {
            Ok(())
        } else {
            Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "server closed",
            ))
        }
    };
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(500) {
        round(&mut s)?;
    }
    let start = Instant::now();
    let want = Duration::from_secs(args.secs.max(1));
    let mut n = 0u64;
    loop {
        for _ in 0..1000 {
            round(&mut s)?;
        }
        n += 1000;
        if start.elapsed() >= want {
            break;
        }
    }
    let took = start.elapsed();
    drop(s);
    match server.join() {
        Ok(r) => r?,
        Err(_) => return Err(std::io::Error::other("server thread panicked")),
    }
    Ok((n, took))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok((n, took)) => {
            let avg_us = took.as_secs_f64() * 1e6 / f64::from(u32::try_from(n).unwrap_or(u32::MAX));
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"round_trips": n, "secs": took.as_secs_f64(), "avg_us": avg_us})
                );
            } else {
                println!(
                    "{n} round trips in {:.2} s: {avg_us:.2} us each",
                    took.as_secs_f64()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tcp-floor: {e}");
            ExitCode::FAILURE
        }
    }
}
