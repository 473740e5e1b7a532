//! The bdev conformance checks (as in `bdev/tests/conformance.rs`) run against the nexus over
//! one RAM child, two RAM children, and an error child plus a delay child, at 512- and
//! 4096-byte blocks: whatever a bdev promises, a nexus promises too.

// Test arithmetic on small constants (block counts, sizes, seeds): a truncating cast cannot
// happen here, and if it did the data comparisons would fail.
#![allow(clippy::cast_possible_truncation)]

mod common;

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use common::{Collector, Io, WAIT, flatten, pattern, ram_bs, reactor, until};
use shoal_bdev::delay::{DelayBdev, DelayLatencies};
use shoal_bdev::error_bdev::ErrorBdev;
use shoal_bdev::reactor::Reactor;
use shoal_bdev::{Bdev, BdevError, BdevIo, ErrorKind, IoBuf, IoChannel, IoSink, IoType, SgList};
use shoal_replication::{ChildSpec, Nexus, NexusOptions};

const NUM_BLOCKS: u64 = 256;

struct Fixture {
    r: Reactor,
    bdev: Arc<dyn Bdev>,
}

fn make(kind: u8, bs: u32) -> Fixture {
    let r = reactor();
    let children: Vec<Arc<dyn Bdev>> = match kind {
        1 => vec![ram_bs("m0", NUM_BLOCKS, bs)],
        2 => vec![ram_bs("m0", NUM_BLOCKS, bs), ram_bs("m1", NUM_BLOCKS, bs)],
        _ => {
            let e: Arc<dyn Bdev> = ErrorBdev::create(ram_bs("m0", NUM_BLOCKS, bs), None).unwrap();
            let lat = DelayLatencies {
                avg_read_us: 30,
                p99_read_us: 200,
                avg_write_us: 50,
                p99_write_us: 300,
            };
            let d: Arc<dyn Bdev> =
                DelayBdev::create("d0", ram_bs("m1", NUM_BLOCKS, bs), None, lat).unwrap();
            vec![e, d]
        }
    };
    let specs = children.into_iter().map(ChildSpec::local).collect();
    let o = NexusOptions::new("nx", NUM_BLOCKS * u64::from(bs));
    let nx = Nexus::create(o, specs, &r.handle())
        .wait(WAIT)
        .unwrap()
        .unwrap();
    Fixture { r, bdev: nx }
}

fn sg_zeroed(lens: &[usize]) -> SgList {
    lens.iter().map(|&l| IoBuf::zeroed(l)).collect()
}

fn sg(parts: &[&[u8]]) -> SgList {
    parts.iter().map(|p| IoBuf::copy_from(p)).collect()
}

fn geometry(kind: u8, bs: u32) {
    let f = make(kind, bs);
    let info = f.bdev.info();
    assert_eq!((info.block_size, info.num_blocks()), (bs, NUM_BLOCKS));
    assert_eq!(info.size_bytes(), NUM_BLOCKS * u64::from(bs));
    assert!(!info.is_closed());
    for t in [
        IoType::Read,
        IoType::Write,
        IoType::Flush,
        IoType::WriteZeroes,
        IoType::Unmap,
    ] {
        assert!(f.bdev.supports(t), "{t:?}");
    }
}

fn write_then_read(kind: u8, bs: u32) {
    let f = make(kind, bs);
    let h = Io::new(&f.r, &f.bdev);
    let b = bs as usize;
    for (i, &(off, n)) in [(3u64, 1u64), (10, 8), (100, 33)].iter().enumerate() {
        let data = pattern(n as usize * b, i as u64 + 1);
        h.write(off, &data).unwrap();
        assert_eq!(h.read(off, n).unwrap(), data, "blocks {off}+{n}");
    }
    let first = pattern(4 * b, 7);
    let second = pattern(b, 8);
    h.write(50, &first).unwrap();
    h.write(51, &second).unwrap();
    let mut want = first.clone();
    want[b..2 * b].copy_from_slice(&second);
    assert_eq!(h.read(50, 4).unwrap(), want);
    // First and last block, and the whole device in one I/O.
    h.write(NUM_BLOCKS - 1, &pattern(b, 12)).unwrap();
    assert_eq!(h.read(NUM_BLOCKS - 1, 1).unwrap(), pattern(b, 12));
    let all = pattern(NUM_BLOCKS as usize * b, 13);
    h.write(0, &all).unwrap();
    assert_eq!(h.read(0, NUM_BLOCKS).unwrap(), all);
}

fn out_of_range_and_bad_length(kind: u8, bs: u32) {
    let f = make(kind, bs);
    let h = Io::new(&f.r, &f.bdev);
    let b = bs as usize;
    let oor = |r: Result<(), BdevError>| match r {
        Err(e @ BdevError::OutOfRange { .. }) => assert_eq!(e.kind(), ErrorKind::OutOfRange),
        other => panic!("expected OutOfRange, got {other:?}"),
    };
    oor(h.run(BdevIo::read(NUM_BLOCKS, 1, sg_zeroed(&[b]))).1);
    oor(h
        .run(BdevIo::write(NUM_BLOCKS - 1, 2, sg_zeroed(&[2 * b])))
        .1);
    oor(h.run(BdevIo::write_zeroes(NUM_BLOCKS - 1, 2)).1);
    oor(h.run(BdevIo::unmap(u64::MAX - 1, u64::MAX)).1);
    oor(h.run(BdevIo::read(u64::MAX, 2, sg_zeroed(&[2 * b]))).1);
    oor(h.run(BdevIo::read(0, 0, SgList::new())).1);
    for (n, lens) in [
        (1u64, vec![b - 1]),
        (1, vec![b + 512]),
        (2, vec![b]),
        (1, vec![]),
    ] {
        let r = h.run(BdevIo::write(0, n, sg_zeroed(&lens))).1;
        assert!(
            matches!(r, Err(BdevError::BadLength { .. })),
            "{n} blocks in {lens:?}: {r:?}"
        );
    }
    assert_eq!(h.chan.stats().num_errors, 10);
}

fn zeroes_unmap_flush(kind: u8, bs: u32) {
    let f = make(kind, bs);
    let h = Io::new(&f.r, &f.bdev);
    let b = bs as usize;
    let data = pattern(16 * b, 21);
    h.write(40, &data).unwrap();
    h.run(BdevIo::write_zeroes(42, 4)).1.unwrap();
    h.run(BdevIo::unmap(48, 4)).1.unwrap();
    h.run(BdevIo::flush()).1.unwrap();
    let mut want = data.clone();
    want[2 * b..6 * b].fill(0);
    want[8 * b..12 * b].fill(0);
    assert_eq!(h.read(40, 16).unwrap(), want);
    assert_eq!(h.chan.stats().num_flush_ops, 1);
}

fn closed(kind: u8, bs: u32) {
    let f = make(kind, bs);
    let h = Io::new(&f.r, &f.bdev);
    h.write(0, &pattern(bs as usize, 1)).unwrap();
    f.bdev.info().close();
    for io in [
        BdevIo::read(0, 1, sg_zeroed(&[bs as usize])),
        BdevIo::write(0, 1, sg_zeroed(&[bs as usize])),
        BdevIo::flush(),
        BdevIo::unmap(0, 1),
        BdevIo::write_zeroes(0, 1),
    ] {
        assert!(matches!(h.run(io).1, Err(BdevError::Closed)));
    }
    assert!(matches!(
        shoal_bdev::open_channel(&f.bdev),
        Err(BdevError::Closed)
    ));
}

fn scatter_gather_and_buffers(kind: u8, bs: u32) {
    let f = make(kind, bs);
    let h = Io::new(&f.r, &f.bdev);
    let b = bs as usize;
    let data = pattern(6 * b, 31);
    let parts = [&data[..b], &data[b..4 * b], &data[4 * b..]];
    h.run(BdevIo::write(20, 6, sg(&parts))).1.unwrap();
    let (io, r) = h.run(BdevIo::read(20, 6, sg_zeroed(&[2 * b, b, b, 2 * b])));
    r.unwrap();
    assert_eq!(io.bufs.len(), 4);
    assert_eq!(io.bufs[1].len(), b, "buffer lengths are kept");
    assert_eq!(flatten(&io.bufs), data);
    // The caller's own buffer comes back, untouched, with the I/O's own geometry.
    let buf = IoBuf::copy_from(&pattern(b, 5));
    let ptr = buf.as_slice().as_ptr();
    let (io, r) = h.run(BdevIo::write(9, 1, [buf].into_iter().collect()));
    r.unwrap();
    assert_eq!(io.bufs[0].as_slice().as_ptr(), ptr);
    assert_eq!(io.bufs[0].as_slice(), &pattern(b, 5)[..]);
    assert_eq!((io.offset_blocks, io.num_blocks), (9, 1));
    let (io, r) = h.run(BdevIo::read(9, 1, sg_zeroed(&[b])));
    r.unwrap();
    assert_eq!((io.offset_blocks, io.num_blocks), (9, 1));
}

fn many_in_flight(kind: u8, bs: u32) {
    let f = make(kind, bs);
    let b = bs as usize;
    let chan = shoal_bdev::open_channel(&f.bdev).unwrap();
    let sink = Rc::new(Collector::default());
    let n = 64u64;
    for i in 0..n {
        chan.submit(
            BdevIo::write(i * 2, 2, sg(&[&pattern(2 * b, i)])),
            sink.clone(),
            i,
        );
    }
    until(&f.r, "writes", || sink.done.borrow().len() == n as usize);
    let mut tags: Vec<u64> = sink.done.borrow().iter().map(|d| d.0).collect();
    tags.sort_unstable();
    assert_eq!(tags, (0..n).collect::<Vec<_>>());
    assert!(sink.done.borrow().iter().all(|d| d.2.is_ok()));
    sink.done.borrow_mut().clear();
    for i in 0..n {
        chan.submit(BdevIo::read(i * 2, 2, sg_zeroed(&[2 * b])), sink.clone(), i);
    }
    until(&f.r, "reads", || sink.done.borrow().len() == n as usize);
    for (tag, io, r) in sink.done.borrow_mut().drain(..) {
        r.unwrap();
        assert_eq!(io.offset_blocks, tag * 2);
        assert_eq!(flatten(&io.bufs), pattern(2 * b, tag));
    }
    let st = f.bdev.info().iostat();
    assert_eq!((st.num_write_ops, st.num_read_ops), (n, n));
}

fn two_reactors(kind: u8, bs: u32) {
    let f = make(kind, bs);
    let b = bs as usize;
    let half = NUM_BLOCKS / 2;
    let workers: Vec<_> = (0..2u64)
        .map(|t| {
            let bdev = f.bdev.clone();
            std::thread::spawn(move || {
                let r = reactor();
                let h = Io::new(&r, &bdev);
                for blk in t * half..(t + 1) * half {
                    h.write(blk, &pattern(b, 1000 * t + blk)).unwrap();
                }
                for blk in t * half..(t + 1) * half {
                    assert_eq!(h.read(blk, 1).unwrap(), pattern(b, 1000 * t + blk));
                }
            })
        })
        .collect();
    // The nexus's home reactor (this thread's) keeps running, as in a daemon: the first
    // write to a region waits for its write-intent bit, which the home reactor writes.
    let done = || workers.iter().all(|w| w.is_finished());
    assert!(f.r.run_until(WAIT, done), "the workers did not finish");
    for w in workers {
        w.join().expect("worker thread");
    }
    let h = Io::new(&f.r, &f.bdev);
    let all = h.read(0, NUM_BLOCKS).unwrap();
    for blk in 0..NUM_BLOCKS {
        let got = &all[blk as usize * b..(blk as usize + 1) * b];
        assert_eq!(
            got,
            &pattern(b, 1000 * (blk / half) + blk)[..],
            "block {blk}"
        );
    }
}

/// A sink that resubmits every completion at once, until told to stop.
struct Looper {
    chan: IoChannel,
    me: RefCell<Weak<Looper>>,
    stop: Cell<bool>,
    done: Cell<u64>,
    errors: Cell<u64>,
}

impl IoSink for Looper {
    fn io_done(&self, tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        self.done.set(self.done.get() + 1);
        if result.is_err() {
            self.errors.set(self.errors.get() + 1);
        }
        let me = self.me.borrow().upgrade();
        if let (false, Some(me)) = (self.stop.get(), me) {
            self.chan.submit(io, me, tag);
        }
    }
}

fn closed_loop_leaves_room_for_timers(kind: u8, bs: u32) {
    let f = make(kind, bs);
    let looper = Rc::new(Looper {
        chan: shoal_bdev::open_channel(&f.bdev).unwrap(),
        me: RefCell::default(),
        stop: Cell::new(false),
        done: Cell::new(0),
        errors: Cell::new(0),
    });
    *looper.me.borrow_mut() = Rc::downgrade(&looper);
    for tag in 0..8 {
        let io = BdevIo::read(tag, 1, sg_zeroed(&[bs as usize]));
        looper.chan.submit(io, looper.clone(), tag);
    }
    let fired = Rc::new(Cell::new(false));
    let flag = fired.clone();
    f.r.call_after(Duration::from_millis(20), move || flag.set(true));
    until(&f.r, "the timer", || fired.get());
    looper.stop.set(true);
    let before = looper.done.get();
    assert!(before > 0);
    until(&f.r, "the loop to drain", || {
        looper.done.get() == before + 8
    });
    assert_eq!(looper.errors.get(), 0);
}

macro_rules! conformance {
    ($($name:ident: $kind:expr, $bs:expr;)*) => {$(
        mod $name {
            #[test] fn geometry() { super::geometry($kind, $bs) }
            #[test] fn write_then_read() { super::write_then_read($kind, $bs) }
            #[test] fn out_of_range_and_bad_length() { super::out_of_range_and_bad_length($kind, $bs) }
            #[test] fn zeroes_unmap_flush() { super::zeroes_unmap_flush($kind, $bs) }
            #[test] fn closed() { super::closed($kind, $bs) }
            #[test] fn scatter_gather_and_buffers() { super::scatter_gather_and_buffers($kind, $bs) }
            #[test] fn many_in_flight() { super::many_in_flight($kind, $bs) }
            #[test] fn two_reactors() { super::two_reactors($kind, $bs) }
            #[test] fn closed_loop_leaves_room_for_timers() {
                super::closed_loop_leaves_room_for_timers($kind, $bs)
            }
        }
    )*};
}

conformance! {
    nexus1_512: 1, 512;
    nexus1_4096: 1, 4096;
    nexus2_512: 2, 512;
    nexus2_4096: 2, 4096;
    error_delay_512: 3, 512;
    error_delay_4096: 3, 4096;
}
