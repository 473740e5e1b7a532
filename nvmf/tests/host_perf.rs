//! A closed-loop load through one I/O queue pair against Shoal's target on loopback, the way
//! `shoal-perf` will drive it. Ignored by default (it measures, it does not check much):
//!
//! ```text
//! cargo test --release -p shoal-nvmf --test host_perf -- --ignored --nocapture
//! ```
#![allow(
    missing_docs,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss
)]

mod common;
mod host_common;

use std::cell::Cell;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use host_common::*;
use shoal_bdev::{BdevError, BdevIo, IoBuf, IoSink};
use shoal_nvmf::host::{Controller, IoQueuePair, NamespaceInfo, QueueState};
use shoal_nvmf::target::subsystem::TransportConfig;

struct Loop {
    me: Weak<Loop>,
    qp: IoQueuePair,
    ns: NamespaceInfo,
    blocks_per_io: u64,
    done: Cell<u64>,
    stop: Cell<bool>,
    rng: Cell<u64>,
}

impl Loop {
    fn next_offset(&self) -> u64 {
        // xorshift64
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        let slots = self.ns.num_blocks / self.blocks_per_io;
        (x % slots) * self.blocks_per_io
    }
}

impl IoSink for Loop {
    fn io_done(&self, tag: u64, mut io: BdevIo, result: Result<(), BdevError>) {
        result.unwrap();
        self.done.set(self.done.get() + 1);
        if self.stop.get() {
            return;
        }
        io.offset_blocks = self.next_offset();
        let me: Rc<dyn IoSink> = self.me.upgrade().unwrap();
        self.qp.submit(&self.ns, io, me, tag);
    }
}

fn run(io_size: usize, depth: u64, write: bool, secs: u64) {
    let t = start_target(&[(4096, 65536)], TransportConfig::default(), free_port());
    let host = host_reactors();
    let mut o = options(t.addr);
    o.io_queue_depth = 128;
    let ctrl = Controller::connect(&host.handles()[0], o).unwrap();
    let ns = ctrl.namespace(1).unwrap();
    let d = Driver::new();
    let qp = IoQueuePair::open(&ctrl).unwrap();
    d.until("connect", || qp.state() == QueueState::Connected);
    let blocks = (io_size / 4096) as u64;
    let l = Rc::new_cyclic(|me| Loop {
        me: me.clone(),
        qp,
        ns: ns.clone(),
        blocks_per_io: blocks,
        done: Cell::new(0),
        stop: Cell::new(false),
        rng: Cell::new(0x9E37_79B9_7F4A_7C15),
    });
    for tag in 0..depth {
        let buf = IoBuf::zeroed(io_size);
        let off = l.next_offset();
        let io = if write {
            BdevIo::write(off, blocks, std::iter::once(buf).collect())
        } else {
            BdevIo::read(off, blocks, std::iter::once(buf).collect())
        };
        l.qp.submit(&ns, io, l.clone(), tag);
    }
    // Warm up, then measure.
    d.run_for(Duration::from_millis(500));
    let start_count = l.done.get();
    let start = Instant::now();
    d.run_for(Duration::from_secs(secs));
    let n = l.done.get() - start_count;
    let el = start.elapsed().as_secs_f64();
    l.stop.set(true);
    d.until("drain", || l.qp.outstanding() == 0);
    let iops = n as f64 / el;
    println!(
        "{} {} KiB depth {depth}: {:.0} IOPS, {:.0} MiB/s, {:.1} us average",
        if write { "write" } else { "read" },
        io_size / 1024,
        iops,
        iops * io_size as f64 / (1 << 20) as f64,
        depth as f64 / iops * 1e6
    );
}

#[test]
#[ignore = "measurement; run with --release --ignored --nocapture"]
fn perf_4k_randread_qd32() {
    run(4096, 32, false, 3);
}

#[test]
#[ignore = "measurement; run with --release --ignored --nocapture"]
fn perf_4k_randwrite_qd32() {
    run(4096, 32, true, 3);
}

#[test]
#[ignore = "measurement; run with --release --ignored --nocapture"]
fn perf_4k_randread_qd1() {
    run(4096, 1, false, 3);
}

#[test]
#[ignore = "measurement; run with --release --ignored --nocapture"]
fn perf_128k_read_qd32() {
    run(128 << 10, 32, false, 3);
}
