//! The checks, each a function of a [`Backend`] and a block size. Every check makes its own
//! device, so each runs alone.

use std::sync::Arc;

use crate::harness::{self, Harness, flatten, pattern, sg, sg_zeroed};
use shoal_bdev::{Bdev, BdevError, BdevIo, ErrorKind, IoBuf, SgList, open_channel};

/// Blocks of every device under test.
pub const NUM_BLOCKS: u64 = 256;

/// A device under test and what keeps it working.
pub struct Fixture {
    /// The device.
    pub bdev: Arc<dyn Bdev>,
    /// What must outlive the device: its backing file's directory, its pool, the target and
    /// host reactors of a remote device, the home reactor of a nexus. Dropped after it.
    pub keep: Option<Box<dyn std::any::Any>>,
}

/// A backend: how to make one, and what it promises.
pub struct Backend {
    /// Makes one at this block size.
    pub make: fn(u32) -> Fixture,
    /// Reads return what was written (false for `null`, which reads zeroes).
    pub stores_data: bool,
    /// Unmapped blocks read back as zeroes.
    pub unmap_zeroes: bool,
}

/// What reading `data` back from the backend must give.
pub fn expect(b: &Backend, data: &[u8]) -> Vec<u8> {
    if b.stores_data {
        data.to_vec()
    } else {
        vec![0; data.len()]
    }
}

/// Size, block size, state and the operations every device supports.
pub fn geometry(b: &Backend, bs: u32) {
    let f = (b.make)(bs);
    let info = f.bdev.info();
    assert_eq!(info.block_size, bs);
    assert_eq!(info.num_blocks(), NUM_BLOCKS);
    assert_eq!(info.size_bytes(), NUM_BLOCKS * u64::from(bs));
    assert!(!info.is_closed());
    assert!(f.bdev.supports(shoal_bdev::IoType::Read));
    assert!(f.bdev.supports(shoal_bdev::IoType::Write));
    assert!(f.bdev.supports(shoal_bdev::IoType::Flush));
}

/// Writes read back; an overwrite of part of a range leaves the rest.
pub fn write_then_read(b: &Backend, bs: u32) {
    let f = (b.make)(bs);
    let h = Harness::new(&f.bdev);
    let bsz = bs as usize;
    for (i, &(off, blocks)) in [(3u64, 1u64), (10, 8), (100, 33)].iter().enumerate() {
        let data = pattern(blocks as usize * bsz, i as u32 + 1);
        h.write(off, &data).unwrap();
        assert_eq!(
            h.read(off, blocks).unwrap(),
            expect(b, &data),
            "blocks {off}+{blocks}"
        );
    }
    // Overwrite part of a written range; the rest keeps its data.
    let first = pattern(4 * bsz, 7);
    let second = pattern(bsz, 8);
    h.write(50, &first).unwrap();
    h.write(51, &second).unwrap();
    let mut want = first.clone();
    want[bsz..2 * bsz].copy_from_slice(&second);
    assert_eq!(h.read(50, 4).unwrap(), expect(b, &want));
}

/// The first and the last block, and the whole device in one I/O.
pub fn first_and_last_block(b: &Backend, bs: u32) {
    let f = (b.make)(bs);
    let h = Harness::new(&f.bdev);
    let first = pattern(bs as usize, 11);
    let last = pattern(bs as usize, 12);
    h.write(0, &first).unwrap();
    h.write(NUM_BLOCKS - 1, &last).unwrap();
    assert_eq!(h.read(0, 1).unwrap(), expect(b, &first));
    assert_eq!(h.read(NUM_BLOCKS - 1, 1).unwrap(), expect(b, &last));
    // The whole device in one I/O.
    let all = pattern(NUM_BLOCKS as usize * bs as usize, 13);
    h.write(0, &all).unwrap();
    assert_eq!(h.read(0, NUM_BLOCKS).unwrap(), expect(b, &all));
}

/// Asserts that `r` is an `OutOfRange` error.
pub fn assert_out_of_range(r: Result<(), BdevError>) {
    match r {
        Err(e @ BdevError::OutOfRange { .. }) => assert_eq!(e.kind(), ErrorKind::OutOfRange),
        other => panic!("expected OutOfRange, got {other:?}"),
    }
}

/// Ranges past the end (or whose end overflows) are `OutOfRange`, counted as errors.
pub fn out_of_range(b: &Backend, bs: u32) {
    let f = (b.make)(bs);
    let h = Harness::new(&f.bdev);
    let one = || sg_zeroed(&[bs as usize]);
    let two = || sg_zeroed(&[2 * bs as usize]);
    assert_out_of_range(h.run(BdevIo::read(NUM_BLOCKS, 1, one())).1);
    assert_out_of_range(h.run(BdevIo::write(NUM_BLOCKS, 1, one())).1);
    assert_out_of_range(h.run(BdevIo::read(NUM_BLOCKS - 1, 2, two())).1);
    assert_out_of_range(h.run(BdevIo::write(NUM_BLOCKS - 1, 2, two())).1);
    assert_out_of_range(h.run(BdevIo::write_zeroes(NUM_BLOCKS - 1, 2)).1);
    assert_out_of_range(h.run(BdevIo::unmap(NUM_BLOCKS, 1)).1);
    // offset + count overflows u64.
    assert_out_of_range(h.run(BdevIo::read(u64::MAX, 2, two())).1);
    assert_out_of_range(h.run(BdevIo::write(1, u64::MAX, one())).1);
    assert_out_of_range(h.run(BdevIo::unmap(u64::MAX - 1, u64::MAX)).1);
    // Zero blocks is not a valid range either.
    assert_out_of_range(h.run(BdevIo::read(0, 0, SgList::new())).1);
    assert_eq!(
        h.chan.stats().num_errors,
        10,
        "refused requests are counted"
    );
    assert_eq!(h.chan.stats().num_read_ops, 0, "and not counted as I/O");
    // The buffers come back with the error.
    let (io, r) = h.run(BdevIo::read(NUM_BLOCKS, 1, one()));
    assert!(r.is_err());
    assert_eq!(io.bufs.len(), 1);
}

/// Buffers that do not hold the I/O's blocks exactly are `BadLength`.
pub fn bad_length(b: &Backend, bs: u32) {
    let f = (b.make)(bs);
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

/// Flush succeeds, before and after writes, and is counted.
pub fn flush(b: &Backend, bs: u32) {
    let f = (b.make)(bs);
    let h = Harness::new(&f.bdev);
    h.run(BdevIo::flush()).1.unwrap();
    h.write(5, &pattern(bs as usize, 3)).unwrap();
    h.run(BdevIo::flush()).1.unwrap();
    assert_eq!(h.chan.stats().num_flush_ops, 2);
}

/// Force Unit Access is honoured or refused, never dropped: a request with it either does
/// what it says (and the device says it honours it) or fails with `UnsupportedFlags` (and the
/// device says it does not). Every backend here honours it on reads, writes and write zeroes;
/// none on flush or deallocate, where it means nothing.
pub fn force_unit_access(b: &Backend, bs: u32) {
    use shoal_bdev::{IoFlags, IoType};
    let f = (b.make)(bs);
    let h = Harness::new(&f.bdev);
    let bsz = bs as usize;
    let data = pattern(4 * bsz, 31);
    h.write(16, &pattern(4 * bsz, 30)).unwrap();
    for t in [
        IoType::Write,
        IoType::Read,
        IoType::WriteZeroes,
        IoType::Flush,
        IoType::Unmap,
    ] {
        let io = match t {
            IoType::Write => BdevIo::write(16, 4, sg(&[&data])),
            IoType::Read => BdevIo::read(16, 4, sg_zeroed(&[4 * bsz])),
            IoType::WriteZeroes => BdevIo::write_zeroes(18, 1),
            IoType::Flush => BdevIo::flush(),
            IoType::Unmap => BdevIo::unmap(40, 1),
        };
        let honours = f.bdev.supports_flags(t, IoFlags::FUA);
        let data_op = matches!(t, IoType::Read | IoType::Write | IoType::WriteZeroes);
        assert_eq!(honours, data_op, "{t:?}: which operations honour FUA");
        let (io, r) = h.run(io.with_flags(IoFlags::FUA));
        match (honours, r) {
            (true, Ok(())) => {}
            (false, Err(e @ BdevError::UnsupportedFlags(..))) => {
                assert_eq!(e.kind(), ErrorKind::InvalidRequest)
            }
            (h, r) => panic!("{t:?} with FUA: honours {h}, got {r:?}"),
        }
        if t == IoType::Read {
            assert_eq!(
                flatten(&io.bufs),
                expect(b, &data),
                "a FUA read reads the data"
            );
        }
    }
    let mut want = data.clone();
    want[2 * bsz..3 * bsz].fill(0);
    assert_eq!(
        h.read(16, 4).unwrap(),
        expect(b, &want),
        "FUA write and write zeroes"
    );
}

/// Write zeroes zeroes its range and only its range.
pub fn write_zeroes(b: &Backend, bs: u32) {
    let f = (b.make)(bs);
    let h = Harness::new(&f.bdev);
    let bsz = bs as usize;
    let data = pattern(8 * bsz, 21);
    h.write(40, &data).unwrap();
    h.run(BdevIo::write_zeroes(42, 4)).1.unwrap();
    let mut want = data.clone();
    want[2 * bsz..6 * bsz].fill(0);
    assert_eq!(h.read(40, 8).unwrap(), expect(b, &want));
}

/// Deallocate leaves the blocks around it; they read zeroes where the backend promises it.
pub fn unmap(b: &Backend, bs: u32) {
    let f = (b.make)(bs);
    let h = Harness::new(&f.bdev);
    let bsz = bs as usize;
    let data = pattern(16 * bsz, 22);
    h.write(64, &data).unwrap();
    h.run(BdevIo::unmap(66, 12)).1.unwrap();
    let got = h.read(64, 16).unwrap();
    assert_eq!(
        got[..2 * bsz],
        expect(b, &data[..2 * bsz]),
        "before the unmapped range"
    );
    assert_eq!(
        got[14 * bsz..],
        expect(b, &data[14 * bsz..]),
        "after the unmapped range"
    );
    if b.unmap_zeroes {
        assert!(
            got[2 * bsz..14 * bsz].iter().all(|&x| x == 0),
            "unmapped blocks read zeroes"
        );
    }
}

/// A closed device refuses every operation and every new channel.
pub fn closed(b: &Backend, bs: u32) {
    let f = (b.make)(bs);
    let h = Harness::new(&f.bdev);
    h.write(0, &pattern(bs as usize, 1)).unwrap();
    f.bdev.info().close();
    assert!(f.bdev.info().is_closed());
    let one = sg_zeroed(&[bs as usize]);
    for io in [
        BdevIo::read(0, 1, one),
        BdevIo::write(0, 1, sg_zeroed(&[bs as usize])),
        BdevIo::flush(),
        BdevIo::unmap(0, 1),
        BdevIo::write_zeroes(0, 1),
    ] {
        match h.run(io).1 {
            Err(e @ BdevError::Closed) => assert_eq!(e.kind(), ErrorKind::Closed),
            other => panic!("expected Closed, got {other:?}"),
        }
    }
    assert!(matches!(open_channel(&f.bdev), Err(BdevError::Closed)));
}

/// Several buffers of any whole-block sizes, written and read back.
pub fn scatter_gather(b: &Backend, bs: u32) {
    let f = (b.make)(bs);
    let h = Harness::new(&f.bdev);
    let bsz = bs as usize;
    let data = pattern(6 * bsz, 31);
    // Written as 1 + 3 + 2 blocks, read back as 2 + 1 + 1 + 2.
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
    assert_eq!(flatten(&io.bufs), expect(b, &data));
}

/// 64 I/Os in flight: each completes once, with its own tag and data.
pub fn many_in_flight(b: &Backend, bs: u32) {
    let f = (b.make)(bs);
    let h = Harness::new(&f.bdev);
    let bsz = bs as usize;
    let n = 64u64;
    for i in 0..n {
        let io = BdevIo::write(i * 2, 2, sg(&[&pattern(2 * bsz, i as u32)]));
        h.submit(io, i);
    }
    let done = h.wait(n as usize);
    assert_eq!(done.len(), n as usize);
    let mut tags: Vec<u64> = done.iter().map(|d| d.0).collect();
    tags.sort_unstable();
    assert_eq!(
        tags,
        (0..n).collect::<Vec<_>>(),
        "every tag completes exactly once"
    );
    assert!(done.iter().all(|d| d.2.is_ok()));
    for i in 0..n {
        h.submit(BdevIo::read(i * 2, 2, sg_zeroed(&[2 * bsz])), i);
    }
    for (tag, io, r) in h.wait(n as usize) {
        r.unwrap();
        assert_eq!(
            io.offset_blocks,
            tag * 2,
            "the I/O comes back with its own tag"
        );
        assert_eq!(flatten(&io.bufs), expect(b, &pattern(2 * bsz, tag as u32)));
    }
    let st = f.bdev.info().iostat();
    assert_eq!(st.num_write_ops, n);
    assert_eq!(st.num_read_ops, n);
    assert_eq!(st.bytes_read, n * 2 * u64::from(bs));
}

/// Two reactors write halves of the device at once; a third sees both.
pub fn two_reactors(b: &Backend, bs: u32) {
    let f = (b.make)(bs);
    let bsz = bs as usize;
    let half = NUM_BLOCKS / 2;
    let workers: Vec<_> = (0..2u64)
        .map(|t| {
            let bdev = f.bdev.clone();
            let stores = b.stores_data;
            std::thread::spawn(move || {
                let h = Harness::new(&bdev);
                let range = t * half..(t + 1) * half;
                // Keep up to 16 writes in flight on this reactor.
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
                    let want = if stores { want } else { vec![0; bsz] };
                    assert_eq!(h.read(blk, 1).unwrap(), want, "block {blk} from its writer");
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
        let t = blk / half;
        let want = pattern(bsz, 1000 * t as u32 + blk as u32);
        let got = &all[blk as usize * bsz..(blk as usize + 1) * bsz];
        assert_eq!(
            got,
            expect(b, &want),
            "block {blk} as seen from a third reactor"
        );
    }
}

/// The caller's own buffers come back, untouched by a write, with the I/O's geometry.
pub fn keeps_buffers(b: &Backend, bs: u32) {
    let f = (b.make)(bs);
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
    assert_eq!(
        io.bufs[0].as_slice(),
        &pattern(bsz, 5)[..],
        "a write leaves the data alone"
    );
    assert_eq!((io.offset_blocks, io.num_blocks), (9, 1));
    let (io, r) = h.run(BdevIo::read(9, 1, sg_zeroed(&[bsz])));
    r.unwrap();
    assert_eq!((io.offset_blocks, io.num_blocks), (9, 1));
    assert_eq!(flatten(&io.bufs), expect(b, &pattern(bsz, 5)));
}

/// A sink that resubmits every completion at once (a closed loop), until told to stop.
pub struct Looper {
    chan: shoal_bdev::IoChannel,
    me: std::cell::RefCell<std::rc::Weak<Looper>>,
    stop: std::cell::Cell<bool>,
    done: std::cell::Cell<u64>,
    errors: std::cell::Cell<u64>,
}

impl shoal_bdev::IoSink for Looper {
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

/// A sink that resubmits from its completion does not starve the reactor's timers.
pub fn closed_loop_leaves_room_for_timers(b: &Backend, bs: u32) {
    // A sink that resubmits from its completion must not keep the reactor from running its
    // timers (a synchronous device completes on the very next pass, every pass).
    let f = (b.make)(bs);
    let h = Harness::new(&f.bdev);
    let looper = std::rc::Rc::new(Looper {
        chan: open_channel(&f.bdev).unwrap(),
        me: Default::default(),
        stop: Default::default(),
        done: Default::default(),
        errors: Default::default(),
    });
    *looper.me.borrow_mut() = std::rc::Rc::downgrade(&looper);
    for tag in 0..8 {
        let io = BdevIo::read(tag, 1, sg_zeroed(&[bs as usize]));
        looper.chan.submit(io, looper.clone(), tag);
    }
    // The loop runs first (a remote device connects its queue in the background), then the
    // timer is armed and must fire while it runs.
    assert!(
        h.reactor
            .run_until(harness::WAIT, || looper.done.get() >= 8),
        "the loop never ran"
    );
    let fired = std::rc::Rc::new(std::cell::Cell::new(false));
    let flag = fired.clone();
    h.reactor
        .call_after(std::time::Duration::from_millis(20), move || flag.set(true));
    assert!(
        h.reactor.run_until(harness::WAIT, || fired.get()),
        "the timer never ran"
    );
    looper.stop.set(true);
    let before = looper.done.get();
    let drained = h
        .reactor
        .run_until(harness::WAIT, || looper.done.get() == before + 8);
    assert!(drained, "the 8 I/Os in flight complete once the loop stops");
    assert_eq!(looper.errors.get(), 0);
}
