//! `RemoteBdev` through the bdev layer, checked the way `bdev/tests/conformance.rs` checks
//! every local backend: geometry, write / read patterns, the whole device in one I/O (split
//! beyond MDTS), range and length errors, flush, write zeroes, unmap, closed devices,
//! scatter-gather, many I/Os in flight, buffer ownership and two reactors at once. The
//! device is a namespace of Shoal's target over loopback, reached through an `nvmf://` URI.
#![allow(missing_docs, clippy::cast_possible_truncation)]

mod common;
mod host_common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use host_common::{free_port, host_reactors, start_target};
use shoal_bdev::reactor::{Reactor, ReactorConfig, ReactorSet};
use shoal_bdev::{
    Bdev, BdevError, BdevIo, ErrorKind, IoBuf, IoChannel, IoSink, IoType, SgList, open_channel,
};
use shoal_nvmf::host::{PRODUCT_NAME, RemoteBdev};
use shoal_nvmf::target::subsystem::TransportConfig;

const NUM_BLOCKS: u64 = 256;

/// A remote namespace as a bdev, and what keeps it reachable.
struct Fixture {
    bdev: Arc<dyn Bdev>,
    _host: ReactorSet,
    _target: common::TestTarget,
}

fn remote(bs: u32) -> Fixture {
    let port = free_port();
    let target = start_target(&[(bs, NUM_BLOCKS)], TransportConfig::default(), port);
    let host = host_reactors();
    let uri = format!(
        "nvmf://127.0.0.1:{port}/{}?hostnqn={}&nsid=1&name=Remote0",
        common::NQN,
        common::HOSTNQN
    );
    let bdev = RemoteBdev::connect_uri(&host.handles()[0], &uri).unwrap();
    Fixture {
        bdev,
        _host: host,
        _target: target,
    }
}

type Done = (u64, BdevIo, Result<(), BdevError>);

#[derive(Default)]
struct Collector {
    done: RefCell<Vec<Done>>,
}

impl IoSink for Collector {
    fn io_done(&self, tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        self.done.borrow_mut().push((tag, io, result));
    }
}

/// A reactor on the current thread with a channel to the device.
struct Harness {
    reactor: Reactor,
    chan: IoChannel,
    sink: Rc<Collector>,
    bs: usize,
}

impl Harness {
    fn new(bdev: &Arc<dyn Bdev>) -> Harness {
        let reactor = Reactor::new(0, None, ReactorConfig::default()).unwrap();
        let chan = open_channel(bdev).unwrap();
        Harness {
            reactor,
            chan,
            sink: Rc::new(Collector::default()),
            bs: bdev.info().block_size as usize,
        }
    }
    fn submit(&self, io: BdevIo, tag: u64) {
        self.chan.submit(io, self.sink.clone(), tag);
    }
    fn wait(&self, n: usize) -> Vec<Done> {
        let ok = self
            .reactor
            .run_until(host_common::WAIT, || self.sink.done.borrow().len() >= n);
        assert!(ok, "timed out waiting for {n} completions");
        std::mem::take(&mut *self.sink.done.borrow_mut())
    }
    fn run(&self, io: BdevIo) -> (BdevIo, Result<(), BdevError>) {
        self.submit(io, 0);
        let (_, io, r) = self.wait(1).pop().unwrap();
        (io, r)
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BdevError> {
        let blocks = (data.len() / self.bs) as u64;
        self.run(BdevIo::write(offset, blocks, sg(&[data]))).1
    }
    fn read(&self, offset: u64, blocks: u64) -> Result<Vec<u8>, BdevError> {
        let len = blocks as usize * self.bs;
        let (io, r) = self.run(BdevIo::read(offset, blocks, sg_zeroed(&[len])));
        r.map(|()| flatten(&io.bufs))
    }
}

fn sg(parts: &[&[u8]]) -> SgList {
    parts.iter().map(|p| IoBuf::copy_from(p)).collect()
}

fn sg_zeroed(lens: &[usize]) -> SgList {
    lens.iter().map(|&l| IoBuf::zeroed(l)).collect()
}

fn flatten(bufs: &[IoBuf]) -> Vec<u8> {
    bufs.iter()
        .flat_map(|b| b.as_slice().iter().copied())
        .collect()
}

use host_common::pattern;

fn geometry(bs: u32) {
    let f = remote(bs);
    let info = f.bdev.info();
    assert_eq!(info.name, "Remote0");
    assert_eq!(info.block_size, bs);
    assert_eq!(info.num_blocks(), NUM_BLOCKS);
    assert_eq!(info.product_name, PRODUCT_NAME);
    assert!(!info.uuid.is_nil());
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

fn write_then_read(bs: u32) {
    let f = remote(bs);
    let h = Harness::new(&f.bdev);
    let bsz = bs as usize;
    for (i, &(off, blocks)) in [(3u64, 1u64), (10, 8), (100, 33)].iter().enumerate() {
        let data = pattern(blocks as usize * bsz, i as u32 + 1);
        h.write(off, &data).unwrap();
        assert!(
            h.read(off, blocks).unwrap() == data,
            "blocks {off}+{blocks}"
        );
    }
    let first = pattern(4 * bsz, 7);
    let second = pattern(bsz, 8);
    h.write(50, &first).unwrap();
    h.write(51, &second).unwrap();
    let mut want = first.clone();
    want[bsz..2 * bsz].copy_from_slice(&second);
    assert!(h.read(50, 4).unwrap() == want);
}

fn first_and_last_block(bs: u32) {
    let f = remote(bs);
    let h = Harness::new(&f.bdev);
    let first = pattern(bs as usize, 11);
    let last = pattern(bs as usize, 12);
    h.write(0, &first).unwrap();
    h.write(NUM_BLOCKS - 1, &last).unwrap();
    assert!(h.read(0, 1).unwrap() == first);
    assert!(h.read(NUM_BLOCKS - 1, 1).unwrap() == last);
    // The whole device in one I/O (1 MiB at 4 KiB blocks: split into MDTS-sized commands).
    let all = pattern(NUM_BLOCKS as usize * bs as usize, 13);
    h.write(0, &all).unwrap();
    assert!(h.read(0, NUM_BLOCKS).unwrap() == all);
}

fn assert_out_of_range(r: Result<(), BdevError>) {
    match r {
        Err(e @ BdevError::OutOfRange { .. }) => assert_eq!(e.kind(), ErrorKind::OutOfRange),
        other => panic!("expected OutOfRange, got {other:?}"),
    }
}

fn out_of_range(bs: u32) {
    let f = remote(bs);
    let h = Harness::new(&f.bdev);
    let one = || sg_zeroed(&[bs as usize]);
    let two = || sg_zeroed(&[2 * bs as usize]);
    assert_out_of_range(h.run(BdevIo::read(NUM_BLOCKS, 1, one())).1);
    assert_out_of_range(h.run(BdevIo::write(NUM_BLOCKS, 1, one())).1);
    assert_out_of_range(h.run(BdevIo::read(NUM_BLOCKS - 1, 2, two())).1);
    assert_out_of_range(h.run(BdevIo::write_zeroes(NUM_BLOCKS - 1, 2)).1);
    assert_out_of_range(h.run(BdevIo::unmap(NUM_BLOCKS, 1)).1);
    assert_out_of_range(h.run(BdevIo::read(u64::MAX, 2, two())).1);
    assert_out_of_range(h.run(BdevIo::write(1, u64::MAX, one())).1);
    assert_out_of_range(h.run(BdevIo::unmap(u64::MAX - 1, u64::MAX)).1);
    assert_out_of_range(h.run(BdevIo::read(0, 0, SgList::new())).1);
    assert_eq!(h.chan.stats().num_errors, 9);
    let (io, r) = h.run(BdevIo::read(NUM_BLOCKS, 1, one()));
    assert!(r.is_err());
    assert_eq!(io.bufs.len(), 1, "the buffers come back with the error");
}

fn bad_length(bs: u32) {
    let f = remote(bs);
    let h = Harness::new(&f.bdev);
    let bsz = bs as usize;
    for (blocks, lens) in [
        (1u64, vec![bsz - 1]),
        (1, vec![bsz + 512]),
        (2, vec![bsz]),
        (1, vec![]),
    ] {
        for write in [false, true] {
            let bufs = sg_zeroed(&lens);
            let io = if write {
                BdevIo::write(0, blocks, bufs)
            } else {
                BdevIo::read(0, blocks, bufs)
            };
            match h.run(io).1 {
                Err(e @ BdevError::BadLength { .. }) => {
                    assert_eq!(e.kind(), ErrorKind::InvalidRequest)
                }
                other => panic!("{blocks} blocks in {lens:?}: expected BadLength, got {other:?}"),
            }
        }
    }
}

fn flush(bs: u32) {
    let f = remote(bs);
    let h = Harness::new(&f.bdev);
    h.run(BdevIo::flush()).1.unwrap();
    h.write(5, &pattern(bs as usize, 3)).unwrap();
    h.run(BdevIo::flush()).1.unwrap();
    assert_eq!(h.chan.stats().num_flush_ops, 2);
}

fn write_zeroes(bs: u32) {
    let f = remote(bs);
    let h = Harness::new(&f.bdev);
    let bsz = bs as usize;
    let data = pattern(8 * bsz, 21);
    h.write(40, &data).unwrap();
    h.run(BdevIo::write_zeroes(42, 4)).1.unwrap();
    let mut want = data.clone();
    want[2 * bsz..6 * bsz].fill(0);
    assert!(h.read(40, 8).unwrap() == want);
}

fn unmap(bs: u32) {
    let f = remote(bs);
    let h = Harness::new(&f.bdev);
    let bsz = bs as usize;
    let data = pattern(16 * bsz, 22);
    h.write(64, &data).unwrap();
    h.run(BdevIo::unmap(66, 12)).1.unwrap();
    let got = h.read(64, 16).unwrap();
    assert!(
        got[..2 * bsz] == data[..2 * bsz],
        "before the unmapped range"
    );
    assert!(
        got[14 * bsz..] == data[14 * bsz..],
        "after the unmapped range"
    );
    assert!(
        got[2 * bsz..14 * bsz].iter().all(|&x| x == 0),
        "the target's RAM disk zeroes"
    );
}

fn closed(bs: u32) {
    let f = remote(bs);
    let h = Harness::new(&f.bdev);
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
    assert!(matches!(open_channel(&f.bdev), Err(BdevError::Closed)));
}

fn scatter_gather(bs: u32) {
    let f = remote(bs);
    let h = Harness::new(&f.bdev);
    let bsz = bs as usize;
    let data = pattern(6 * bsz, 31);
    let parts = [&data[..bsz], &data[bsz..4 * bsz], &data[4 * bsz..]];
    h.run(BdevIo::write(20, 6, sg(&parts))).1.unwrap();
    let (io, r) = h.run(BdevIo::read(
        20,
        6,
        sg_zeroed(&[2 * bsz, bsz, bsz, 2 * bsz]),
    ));
    r.unwrap();
    assert_eq!(io.bufs.len(), 4);
    assert_eq!(io.bufs[1].len(), bsz, "buffer lengths are kept");
    assert!(flatten(&io.bufs) == data);
}

fn many_in_flight(bs: u32) {
    let f = remote(bs);
    let h = Harness::new(&f.bdev);
    let bsz = bs as usize;
    let n = 64u64;
    for i in 0..n {
        h.submit(
            BdevIo::write(i * 2, 2, sg(&[&pattern(2 * bsz, i as u32)])),
            i,
        );
    }
    let done = h.wait(n as usize);
    let mut tags: Vec<u64> = done.iter().map(|d| d.0).collect();
    tags.sort_unstable();
    assert_eq!(tags, (0..n).collect::<Vec<_>>());
    assert!(done.iter().all(|d| d.2.is_ok()));
    for i in 0..n {
        h.submit(BdevIo::read(i * 2, 2, sg_zeroed(&[2 * bsz])), i);
    }
    for (tag, io, r) in h.wait(n as usize) {
        r.unwrap();
        assert_eq!(io.offset_blocks, tag * 2);
        assert!(flatten(&io.bufs) == pattern(2 * bsz, tag as u32));
    }
    let st = f.bdev.info().iostat();
    assert_eq!((st.num_write_ops, st.num_read_ops), (n, n));
    assert_eq!(st.bytes_read, n * 2 * u64::from(bs));
}

fn keeps_buffers(bs: u32) {
    let f = remote(bs);
    let h = Harness::new(&f.bdev);
    let bsz = bs as usize;
    let buf = IoBuf::copy_from(&pattern(bsz, 5));
    let ptr = buf.as_slice().as_ptr();
    let (io, r) = h.run(BdevIo::write(9, 1, [buf].into_iter().collect()));
    r.unwrap();
    assert_eq!(
        io.bufs[0].as_slice().as_ptr(),
        ptr,
        "the caller's own buffer comes back"
    );
    assert!(io.bufs[0].as_slice() == &pattern(bsz, 5)[..]);
    assert_eq!((io.offset_blocks, io.num_blocks), (9, 1));
}

fn two_reactors(bs: u32) {
    let f = remote(bs);
    let bsz = bs as usize;
    let half = NUM_BLOCKS / 2;
    let workers: Vec<_> = (0..2u64)
        .map(|t| {
            let bdev = f.bdev.clone();
            std::thread::spawn(move || {
                let h = Harness::new(&bdev);
                let range = t * half..(t + 1) * half;
                let mut inflight = 0;
                for blk in range.clone() {
                    let data = pattern(bsz, 1000 * t as u32 + blk as u32);
                    h.submit(BdevIo::write(blk, 1, sg(&[&data])), blk);
                    inflight += 1;
                    if inflight == 16 {
                        assert!(h.wait(16).iter().all(|d| d.2.is_ok()));
                        inflight = 0;
                    }
                }
                assert!(h.wait(inflight).iter().all(|d| d.2.is_ok()));
                for blk in range {
                    let want = pattern(bsz, 1000 * t as u32 + blk as u32);
                    assert!(
                        h.read(blk, 1).unwrap() == want,
                        "block {blk} from its writer"
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker thread");
    }
    let h = Harness::new(&f.bdev);
    let all = h.read(0, NUM_BLOCKS).unwrap();
    for blk in 0..NUM_BLOCKS {
        let want = pattern(bsz, 1000 * (blk / half) as u32 + blk as u32);
        let got = &all[blk as usize * bsz..(blk as usize + 1) * bsz];
        assert!(got == &want[..], "block {blk} as seen from a third reactor");
    }
}

macro_rules! conformance {
    ($($name:ident: $bs:expr;)*) => {$(
        mod $name {
            #[test] fn geometry() { super::geometry($bs) }
            #[test] fn write_then_read() { super::write_then_read($bs) }
            #[test] fn first_and_last_block() { super::first_and_last_block($bs) }
            #[test] fn out_of_range() { super::out_of_range($bs) }
            #[test] fn bad_length() { super::bad_length($bs) }
            #[test] fn flush() { super::flush($bs) }
            #[test] fn write_zeroes() { super::write_zeroes($bs) }
            #[test] fn unmap() { super::unmap($bs) }
            #[test] fn closed() { super::closed($bs) }
            #[test] fn scatter_gather() { super::scatter_gather($bs) }
            #[test] fn many_in_flight() { super::many_in_flight($bs) }
            #[test] fn keeps_buffers() { super::keeps_buffers($bs) }
            #[test] fn two_reactors() { super::two_reactors($bs) }
        }
    )*};
}

conformance! {
    remote_512: 512;
    remote_4096: 4096;
}
