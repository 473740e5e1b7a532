//! The power-failure device: what a cut keeps of writes that were not durable, and that
//! Flush and Force Unit Access make writes survive it. The base device is read directly after
//! each cut: it must hold exactly what a disk would hold when the power came back.

#![allow(clippy::cast_possible_truncation)]

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use common::{Harness, WAIT, flatten, pattern, sg, sg_zeroed};
use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::pfail::{CutReport, Keep, PfailBdev};
use shoal_bdev::{Bdev, BdevError, BdevIo, ErrorKind, IoChannel, IoFlags, open_channel};

const BLOCKS: u64 = 64;
const BS: usize = 4096;

struct Rig {
    h: Harness,
    dev: Arc<PfailBdev>,
    base: IoChannel,
}

fn rig() -> Rig {
    let base: Arc<dyn Bdev> = MallocBdev::create("M", None, BLOCKS, BS as u32).unwrap();
    let dev = PfailBdev::create("P", base.clone()).unwrap();
    let as_bdev: Arc<dyn Bdev> = dev.clone();
    let h = Harness::new(&as_bdev);
    let base = open_channel(&base).unwrap();
    Rig { h, dev, base }
}

/// Compares block contents without printing megabytes when they differ.
#[track_caller]
fn same(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: {} bytes against {}, first difference at {at:?}",
            got.len(),
            want.len()
        );
    }
}

impl Rig {
    fn cut(&self, keep: Keep) -> Result<CutReport, BdevError> {
        let slot = Rc::new(RefCell::new(None));
        let s = slot.clone();
        self.dev
            .cut(keep, Box::new(move |r| *s.borrow_mut() = Some(r)));
        assert!(
            self.h.reactor.run_until(WAIT, || slot.borrow().is_some()),
            "the cut did not end"
        );
        slot.borrow_mut().take().unwrap()
    }

    /// Reads the base device directly (with its own collector: the rig's may hold
    /// completions a test has not taken yet).
    fn base_read(&self, offset: u64, blocks: u64) -> Vec<u8> {
        let sink = Rc::new(common::Collector::default());
        let io = BdevIo::read(offset, blocks, sg_zeroed(&[blocks as usize * BS]));
        self.base.submit(io, sink.clone(), 0);
        assert!(
            self.h
                .reactor
                .run_until(WAIT, || !sink.done.borrow().is_empty())
        );
        let (_, io, r) = sink.done.borrow_mut().pop().unwrap();
        r.unwrap();
        flatten(&io.bufs)
    }

    fn fua_write(&self, offset: u64, data: &[u8]) -> Result<(), BdevError> {
        let io = BdevIo::write(offset, (data.len() / BS) as u64, sg(&[data]));
        self.h.run(io.with_flags(IoFlags::FUA)).1
    }
}

#[test]
fn a_cut_loses_what_was_only_in_the_cache() {
    let r = rig();
    let a = pattern(2 * BS, 1);
    r.h.write(4, &a).unwrap();
    same(&r.h.read(4, 2).unwrap(), &a, "reads see the cache");
    same(
        &r.base_read(4, 2),
        &[0; 2 * BS],
        "the base does not have it yet",
    );
    let report = r.cut(Keep::None).unwrap();
    assert_eq!(report.dirty_blocks, 2);
    assert_eq!(report.kept_blocks, 0);
    same(&r.base_read(4, 2), &[0; 2 * BS], "lost with the power");
    // A dead disk fails everything, with an I/O error (a write fault or read error on the wire).
    let e = r.h.read(4, 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert_eq!(r.h.write(0, &a[..BS]).unwrap_err().kind(), ErrorKind::Io);
    assert_eq!(
        r.h.run(BdevIo::flush()).1.unwrap_err().kind(),
        ErrorKind::Io
    );
    // A second cut is refused.
    match r.cut(Keep::All) {
        Err(BdevError::Invalid(m)) => assert!(m.contains("already lost its power"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn flush_and_fua_make_writes_survive() {
    let r = rig();
    let (a, b, c, d) = (
        pattern(BS, 2),
        pattern(BS, 3),
        pattern(BS, 4),
        pattern(3 * BS, 5),
    );
    r.h.write(1, &a).unwrap();
    r.h.run(BdevIo::flush()).1.unwrap();
    same(
        &r.base_read(1, 1),
        &a,
        "a flush writes the cache to the base",
    );
    // Write zeroes with FUA too.
    r.h.write(10, &d).unwrap();
    r.h.run(BdevIo::flush()).1.unwrap();
    let wz = BdevIo::write_zeroes(11, 1).with_flags(IoFlags::FUA);
    r.h.run(wz).1.unwrap();
    r.h.write(2, &b).unwrap();
    r.fua_write(3, &c).unwrap();
    same(
        &r.base_read(3, 1),
        &c,
        "a FUA write is on the base when it completes",
    );
    r.cut(Keep::None).unwrap();
    same(&r.base_read(1, 1), &a, "flushed");
    same(
        &r.base_read(2, 1),
        &[0; BS],
        "written after the flush, not durable",
    );
    same(&r.base_read(3, 1), &c, "FUA");
    let mut want = d.clone();
    want[BS..2 * BS].fill(0);
    same(&r.base_read(10, 3), &want, "FUA write zeroes");
}

#[test]
fn a_fua_write_supersedes_older_cached_data() {
    let r = rig();
    let (old, new) = (pattern(BS, 6), pattern(BS, 7));
    r.h.write(5, &old).unwrap();
    r.fua_write(5, &new).unwrap();
    same(&r.h.read(5, 1).unwrap(), &new, "read");
    // Even a cut that writes back everything must not put the older data over it.
    r.cut(Keep::All).unwrap();
    same(&r.base_read(5, 1), &new, "after the cut");
}

#[test]
fn keep_all_writes_back_the_newest_data() {
    let r = rig();
    r.h.write(0, &pattern(4 * BS, 8)).unwrap();
    let newer = pattern(BS, 9);
    r.h.write(2, &newer).unwrap();
    let report = r.cut(Keep::All).unwrap();
    assert_eq!(
        report,
        CutReport {
            dirty_blocks: 4,
            kept_blocks: 4
        }
    );
    let mut want = pattern(4 * BS, 8);
    want[2 * BS..3 * BS].copy_from_slice(&newer);
    same(&r.base_read(0, 4), &want, "newest data");
}

/// What a random cut leaves in block 0 after versions v1 then v2 were cached over a durable
/// v0, and block 1 after one cached write over zeroes.
fn random_outcome(seed: u64) -> (Vec<u8>, Vec<u8>) {
    let r = rig();
    r.h.write(0, &pattern(BS, 10)).unwrap();
    r.h.run(BdevIo::flush()).1.unwrap();
    r.h.write(0, &pattern(BS, 11)).unwrap();
    r.h.write(0, &pattern(BS, 12)).unwrap();
    r.h.write(1, &pattern(BS, 13)).unwrap();
    r.cut(Keep::Random(seed)).unwrap();
    (r.base_read(0, 1), r.base_read(1, 1))
}

#[test]
fn a_random_cut_keeps_any_version_and_is_repeatable() {
    let versions = [pattern(BS, 10), pattern(BS, 11), pattern(BS, 12)];
    let mut seen = [false; 3];
    let mut kept_second = [false; 2];
    for seed in 0..40 {
        let (b0, b1) = random_outcome(seed);
        let i = versions
            .iter()
            .position(|v| *v == b0)
            .unwrap_or_else(|| panic!("seed {seed}: block 0 holds data never written"));
        seen[i] = true;
        if b1 == pattern(BS, 13) {
            kept_second[1] = true;
        } else {
            same(&b1, &[0; BS], &format!("seed {seed}: block 1"));
            kept_second[0] = true;
        }
        assert!(random_outcome(seed) == (b0, b1), "seed {seed} repeats");
    }
    assert_eq!(seen, [true; 3], "the durable version and each cached one");
    assert_eq!(kept_second, [true; 2]);
}

#[test]
fn writes_in_flight_during_a_flush_are_not_covered_by_it() {
    let r = rig();
    let (a, b) = (pattern(BS, 14), pattern(BS, 15));
    r.h.write(7, &a).unwrap();
    // The flush and a later write to the same block, in flight together.
    r.h.submit(BdevIo::flush(), 1);
    r.h.submit(BdevIo::write(7, 1, sg(&[&b])), 2);
    let done = r.h.wait(2);
    assert!(done.iter().all(|(_, _, res)| res.is_ok()));
    same(&r.h.read(7, 1).unwrap(), &b, "reads see the newest write");
    r.cut(Keep::None).unwrap();
    same(
        &r.base_read(7, 1),
        &a,
        "the flush made the first write durable only",
    );
}

// Concurrency: jobs that wait for a block another base write holds (found by review).

/// Two flushes with a newer cached write between them: the second flush's base write of the
/// block must wait for the first's (busy), so its job parks with nothing outstanding.
#[test]
fn a_flush_that_parks_completes() {
    let r = rig();
    let (a, b) = (pattern(BS, 20), pattern(BS, 21));
    r.h.write(7, &a).unwrap();
    r.h.submit(BdevIo::flush(), 1);
    r.h.submit(BdevIo::write(7, 1, sg(&[&b])), 2);
    r.h.submit(BdevIo::flush(), 3);
    r.h.run_for(std::time::Duration::from_millis(500));
    let tags: Vec<u64> = r.h.sink.done.borrow().iter().map(|d| d.0).collect();
    assert_eq!(
        tags.len(),
        3,
        "completed only {tags:?}: the second flush was lost"
    );
}

/// A FUA write to a block the cache is writing back (a flush in flight).
#[test]
fn a_fua_write_that_parks_completes() {
    let r = rig();
    let (a, b) = (pattern(BS, 22), pattern(BS, 23));
    r.h.write(7, &a).unwrap();
    r.h.submit(BdevIo::flush(), 1);
    r.h.submit(BdevIo::write(7, 1, sg(&[&b])).with_flags(IoFlags::FUA), 2);
    r.h.run_for(std::time::Duration::from_millis(500));
    let tags: Vec<u64> = r.h.sink.done.borrow().iter().map(|d| d.0).collect();
    assert_eq!(
        tags.len(),
        2,
        "completed only {tags:?}: the FUA write was lost"
    );
}

/// A FUA write and a flush carrying an OLDER cached version of the same block, both waiting
/// for an earlier flush's write of it: the older version must never go to the base after the
/// newer FUA data.
#[test]
fn a_flush_never_writes_older_data_over_a_fua_write() {
    let r = rig();
    let (v1, v2, v3) = (pattern(BS, 30), pattern(BS, 31), pattern(BS, 32));
    r.h.write(7, &v1).unwrap();
    r.h.submit(BdevIo::flush(), 1); // base write of v1 in flight: block 7 busy
    r.h.submit(BdevIo::write(7, 1, sg(&[&v2])), 2); // cached
    r.h.submit(BdevIo::write(7, 1, sg(&[&v3])).with_flags(IoFlags::FUA), 3); // waits
    r.h.submit(BdevIo::flush(), 4); // snapshot holds v2 (the FUA data is not cached); waits
    let done = r.h.wait(4);
    assert!(
        done.iter().all(|d| d.2.is_ok()),
        "{:?}",
        done.iter().map(|d| &d.2).collect::<Vec<_>>()
    );
    let base = r.base_read(7, 1);
    same(
        &base,
        &v3,
        "the base after the FUA write (v2 = older cached data)",
    );
    same(
        &r.h.read(7, 1).unwrap(),
        &v3,
        "read after an acknowledged FUA write",
    );
}

/// A cut while a flush waits for a busy block: nothing may reach the base after the cut
/// reported what it kept.
#[test]
fn nothing_reaches_the_base_after_a_cut() {
    use shoal_bdev::IoSink;
    struct CutOnDone(
        Arc<PfailBdev>,
        Rc<RefCell<Option<Result<CutReport, BdevError>>>>,
    );
    impl IoSink for CutOnDone {
        fn io_done(&self, _t: u64, _io: BdevIo, res: Result<(), BdevError>) {
            res.unwrap();
            let s = self.1.clone();
            self.0
                .cut(Keep::All, Box::new(move |r| *s.borrow_mut() = Some(r)));
        }
    }
    let r = rig();
    let (v1, v2, v3) = (pattern(BS, 40), pattern(BS, 41), pattern(BS, 42));
    r.h.write(7, &v1).unwrap();
    let slot = Rc::new(RefCell::new(None));
    r.h.chan.submit(
        BdevIo::flush(),
        Rc::new(CutOnDone(r.dev.clone(), slot.clone())),
        1,
    );
    r.h.submit(BdevIo::write(7, 1, sg(&[&v2])), 2);
    r.h.submit(BdevIo::flush(), 3); // v2: waits for the first flush's write
    r.h.submit(BdevIo::write(7, 1, sg(&[&v3])), 4); // newest, cached
    assert!(r.h.reactor.run_until(WAIT, || slot.borrow().is_some()));
    let rep = slot.borrow_mut().take().unwrap().unwrap();
    let after_cut = r.base_read(7, 1);
    r.h.run_for(std::time::Duration::from_millis(200));
    let later = r.base_read(7, 1);
    assert_eq!(rep.dirty_blocks, 1, "{rep:?}");
    same(&after_cut, &v3, "keep all: the newest cached data");
    same(
        &later,
        &after_cut,
        "the base changed after the cut had ended",
    );
}

/// A Flush's write-back parked behind a busy block must not reach the base after a newer FUA
/// write of that block did (a disk never writes old data over new): the base, and reads,
/// must end with the FUA write's data.
#[test]
fn a_parked_flush_write_back_never_lands_over_a_newer_fua_write() {
    use shoal_bdev::delay::{DelayBdev, DelayLatencies};
    let m: Arc<dyn Bdev> = MallocBdev::create("M", None, BLOCKS, BS as u32).unwrap();
    let lat = DelayLatencies {
        avg_read_us: 0,
        p99_read_us: 0,
        avg_write_us: 2000,
        p99_write_us: 2000,
    };
    let base: Arc<dyn Bdev> = DelayBdev::create("D", m.clone(), None, lat).unwrap();
    let dev = PfailBdev::create("P", base).unwrap();
    let as_bdev: Arc<dyn Bdev> = dev.clone();
    let h = Harness::new(&as_bdev);
    let media = open_channel(&m).unwrap();
    let mut bad = Vec::new();
    for b in 0..32u64 {
        let s = u32::try_from(b).unwrap() * 3;
        let (v0, old, new) = (
            pattern(BS, 100 + s),
            pattern(BS, 101 + s),
            pattern(BS, 102 + s),
        );
        h.write(b, &v0).unwrap();
        // F1 writes v0 back: the block is busy on the base for 2 ms.
        h.submit(BdevIo::flush(), 1);
        // A cached write, then F2, whose write-back of it parks behind F1's.
        h.submit(BdevIo::write(b, 1, sg(&[&old])), 2);
        h.submit(BdevIo::flush(), 3);
        // A newer FUA write of the block parks too; which of the two goes first is up to
        // their timers.
        h.submit(BdevIo::write(b, 1, sg(&[&new])).with_flags(IoFlags::FUA), 4);
        let all = h
            .reactor
            .run_until(std::time::Duration::from_secs(5), || h.collected() >= 4);
        let tags: Vec<u64> = h.sink.done.borrow().iter().map(|d| d.0).collect();
        assert!(
            all,
            "block {b}: only {tags:?} completed: a parked request was dropped"
        );
        let done = h.wait(4);
        assert!(done.iter().all(|(_, _, r)| r.is_ok()), "{done:?}");
        let io = BdevIo::read(b, 1, sg_zeroed(&[BS]));
        media.submit(io, h.sink.clone(), 9);
        let (_, io, r) = h.wait(1).pop().unwrap();
        r.unwrap();
        if flatten(&io.bufs) != new || h.read(b, 1).unwrap() != new {
            bad.push(b);
        }
    }
    assert!(
        bad.is_empty(),
        "older data written over a completed FUA write at blocks {bad:?}"
    );
}
