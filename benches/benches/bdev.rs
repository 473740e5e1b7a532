//! Criterion benches of the submit-to-completion path of each block-device backend: a batch of
//! 32 random 4 KiB reads is submitted on a reactor driven on the bench thread, and the batch is
//! timed until its last completion. Buffers and `BdevIo`s are reused from batch to batch.
//!
//! Also the sharing of a write buffer between a nexus's legs (`iobuf/`).
//!
//! Run with `cargo bench -p shoal-benches --bench bdev`. The `uring` bench uses a 64 MiB file
//! in /var/tmp (a disk file system, so `O_DIRECT` applies); its numbers measure the disk as
//! much as the code.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shoal_bdev::delay::{DelayBdev, DelayLatencies};
use shoal_bdev::error_bdev::ErrorBdev;
use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::null::NullBdev;
use shoal_bdev::uring::UringBdev;
use shoal_bdev::{Bdev, BdevError, BdevIo, IoBuf, IoSink, SgList, open_channel};
use shoal_reactor::{Reactor, ReactorConfig};

const BATCH: usize = 32;
const IO: usize = 4096;
const DEV_BYTES: u64 = 64 << 20;

/// Takes completed I/Os back for the next batch.
#[derive(Default)]
struct Returned {
    ios: RefCell<Vec<BdevIo>>,
    errors: RefCell<u64>,
}

impl IoSink for Returned {
    fn io_done(&self, _tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        if result.is_err() {
            *self.errors.borrow_mut() += 1;
        }
        self.ios.borrow_mut().push(io);
    }
}

fn bench_backend(c: &mut Criterion, name: &str, bdev: Arc<dyn Bdev>) {
    let reactor = Reactor::new(0, None, ReactorConfig::default()).expect("reactor");
    let chan = open_channel(&bdev).expect("channel");
    let sink = Rc::new(Returned::default());
    let blocks = u64::try_from(IO).unwrap_or(1) / u64::from(bdev.info().block_size);
    let slots = bdev.info().num_blocks() / blocks;
    for _ in 0..BATCH {
        let mut bufs = SgList::new();
        bufs.push(IoBuf::zeroed(IO));
        sink.ios.borrow_mut().push(BdevIo::read(0, blocks, bufs));
    }
    let mut rng: u64 = 0x2545_F491_4F6C_DD1D;
    let mut group = c.benchmark_group("bdev");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(format!("{name}/randread_4k_x{BATCH}"), |b| {
        b.iter(|| {
            let ios: Vec<BdevIo> = std::mem::take(&mut *sink.ios.borrow_mut());
            for (tag, mut io) in (0u64..).zip(ios) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                io.offset_blocks = (rng % slots) * blocks;
                chan.submit(io, sink.clone(), tag);
            }
            let done =
                reactor.run_until(Duration::from_secs(10), || sink.ios.borrow().len() == BATCH);
            assert!(done, "{name}: batch did not complete");
        });
    });
    group.finish();
    assert_eq!(*sink.errors.borrow(), 0, "{name}: I/O errors");
}

fn malloc() -> Arc<dyn Bdev> {
    MallocBdev::create("Malloc0", None, DEV_BYTES / 4096, 4096).expect("malloc")
}

fn backends(c: &mut Criterion) {
    bench_backend(c, "malloc", malloc());
    bench_backend(
        c,
        "null",
        NullBdev::create("Null0", None, DEV_BYTES / 4096, 4096).expect("null"),
    );
    bench_backend(
        c,
        "error",
        ErrorBdev::create(malloc(), None).expect("error"),
    );
    let delay = DelayBdev::create("Delay0", malloc(), None, DelayLatencies::default());
    bench_backend(c, "delay0", delay.expect("delay"));

    let dir = tempfile::Builder::new()
        .prefix("shoal-bench")
        .tempdir_in("/var/tmp")
        .expect("dir");
    let path = dir.path().join("disk");
    // Written (not sparse), so reads reach the disk as they would on a real volume.
    let chunk = vec![0xA5u8; 1 << 20];
    let mut f = std::fs::File::create(&path).expect("file");
    for _ in 0..DEV_BYTES >> 20 {
        std::io::Write::write_all(&mut f, &chunk).expect("fill");
    }
    f.sync_all().expect("sync");
    drop(f);
    bench_backend(
        c,
        "uring",
        UringBdev::create("Uring0", &path, Some(4096), None).expect("uring"),
    );
}

/// What a nexus does with a host write's buffer: take a fresh pooled 4 KiB buffer (a new
/// command's data), share it with a second leg, and drop both once the legs are done.
fn buffers(c: &mut Criterion) {
    let mut group = c.benchmark_group("iobuf");
    group.throughput(Throughput::Elements(1));
    group.bench_function("share_and_drop_fresh_4k", |b| {
        b.iter(|| {
            let mut a = IoBuf::with_capacity(IO);
            a.set_len(IO);
            let leg = a.share();
            std::hint::black_box(&leg);
            drop(leg);
            drop(a);
        });
    });
    group.finish();
}

// The macro defines an undocumented `pub fn benches`.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group! {
        name = benches;
        config = Criterion::default()
            .sample_size(30)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        targets = backends, buffers
    }
}
criterion_main!(group::benches);
