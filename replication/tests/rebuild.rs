//! Online rebuild: full and partial, under concurrent writes, with rate limits, pause,
//! resume, stop and removal; children identical at the end (checksums).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use shoal_bdev::error_bdev::{ErrorBdev, Injection};
use shoal_bdev::{Bdev, IoType};
use shoal_replication::{ChildSpec, ChildState, FaultReason, NexusState, RebuildOutcome};

const BLOCKS: u64 = 64 << 11; // 64 MiB of 512-byte blocks

#[test]
fn full_rebuild_under_concurrent_writes() {
    let r = reactor();
    let a = ram("a", BLOCKS);
    let nx = create(&r, opts("nx", BLOCKS), std::slice::from_ref(&a));
    let nxb: Arc<dyn Bdev> = nx.clone();
    let fill = Loader::start(&nxb, BLOCKS, 64, 8, 1);
    until(&r, "some data", || fill.done.get() >= 2000);
    fill.finish(&r);
    // Writes keep coming (in the same units) while the new child is rebuilt.
    let load = Loader::start(&nxb, BLOCKS, 64, 8, 1);
    r.run_until(Duration::from_millis(20), || false);
    let b = ram("b", BLOCKS);
    nx.add_child(ChildSpec::local(b.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    let c = nx.child_status(&uri(&b)).unwrap();
    assert_eq!(c.state, ChildState::Rebuilding);
    assert_eq!(nx.status().state, NexusState::Degraded);
    let reads_before = b.info().iostat().num_read_ops;
    until_online(&r, &nx, &uri(&b));
    let during = load.done.get();
    load.finish(&r);
    assert_eq!(load.errors.get(), 0);
    assert!(
        during > 100,
        "host writes went on during the rebuild ({during})"
    );
    let last = nx.child_status(&uri(&b)).unwrap().last_rebuild.unwrap();
    assert_eq!(last.outcome, RebuildOutcome::Completed);
    assert!(last.full);
    assert_eq!(last.segments_copied, BLOCKS * 512 / (128 << 10));
    // While rebuilding, b served no reads (host reads here only go through a).
    assert_eq!(b.info().iostat().num_read_ops, reads_before);
    assert_eq!(child_sum(&r, &a, BLOCKS), child_sum(&r, &b, BLOCKS));
    load.verify(&r, &nxb);
    assert_eq!(nx.status().state, NexusState::Online);
}

#[test]
fn partial_rebuild_copies_only_dirty_segments() {
    let r = reactor();
    let a = ram("a", BLOCKS);
    let b = ram("b", BLOCKS);
    let mut o = opts("nx", BLOCKS);
    o.intent_clean = Duration::from_millis(50);
    let nx = create(&r, o, &[a.clone(), b.clone()]);
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    for i in 0..64u64 {
        io.write(i * 1000, &pattern(4096, i)).unwrap();
    }
    // Those writes are flushed and their regions cleared: otherwise the fault marks them
    // dirty (b could have held them only in a cache it then lost: tests/cache_loss.rs).
    until(&r, "the bitmap cleaned", || {
        nx.status()
            .write_intent
            .is_some_and(|w| w.marked_regions == 0)
    });
    nx.fault_child(&uri(&b)).wait(WAIT).unwrap().unwrap();
    let c = nx.child_status(&uri(&b)).unwrap();
    assert_eq!(c.state, ChildState::Faulted(FaultReason::Admin));
    // Writes to 5 distinct segments (256 blocks each), one of them spanning two.
    let seg = 256u64;
    for (i, off) in [0u64, 10 * seg + 3, 10 * seg + 100, 77 * seg, 200 * seg - 4]
        .iter()
        .enumerate()
    {
        io.write(*off, &pattern(8 * 512, 100 + i as u64)).unwrap();
    }
    io.run(shoal_bdev::BdevIo::write_zeroes(300 * seg, 4))
        .1
        .unwrap();
    let dirty = nx.child_status(&uri(&b)).unwrap().dirty_segments;
    assert_eq!(dirty, 6, "segments 0, 10, 77, 199, 200, 300");
    assert_ne!(child_sum(&r, &a, BLOCKS), child_sum(&r, &b, BLOCKS));
    nx.add_child(ChildSpec::local(b.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    until_online(&r, &nx, &uri(&b));
    let last = nx.child_status(&uri(&b)).unwrap().last_rebuild.unwrap();
    assert!(!last.full);
    assert_eq!(last.segments_total, 6);
    assert_eq!(
        last.segments_copied, 6,
        "only the dirty segments are copied"
    );
    assert_eq!(child_sum(&r, &a, BLOCKS), child_sum(&r, &b, BLOCKS));
}

#[test]
fn partial_rebuild_after_io_errors_under_load() {
    let r = reactor();
    let a = ram("a", BLOCKS);
    let b = ErrorBdev::create(ram("b", BLOCKS), None).unwrap();
    let bb: Arc<dyn Bdev> = b.clone();
    let nx = create(&r, opts("nx", BLOCKS), &[a.clone(), bb.clone()]);
    let nxb: Arc<dyn Bdev> = nx.clone();
    // Writes to the first eighth only: when b faults, every region written since the last
    // flush is dirty for it too (tests/cache_loss.rs), which is all of them under a load
    // spread over the whole volume; here they stay an eighth.
    let load = Loader::start(&nxb, BLOCKS / 8, 16, 16, 3);
    until(&r, "some writes", || load.done.get() >= 500);
    b.inject(Injection::failure(IoType::Write).count(1))
        .unwrap();
    until(&r, "b faulted", || {
        nx.child_status(&uri(&bb))
            .is_some_and(|c| c.state != ChildState::Online)
    });
    let at_fault = load.done.get();
    until(&r, "more writes", || load.done.get() >= at_fault + 100);
    let dirty = nx.child_status(&uri(&bb)).unwrap().dirty_segments;
    assert!(dirty > 0 && dirty < BLOCKS / 256, "{dirty} dirty segments");
    nx.add_child(ChildSpec::local(bb.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    until_online(&r, &nx, &uri(&bb));
    load.finish(&r);
    assert_eq!(load.errors.get(), 0);
    let last = nx.child_status(&uri(&bb)).unwrap().last_rebuild.unwrap();
    assert!(!last.full && last.segments_copied >= dirty, "{last:?}");
    assert!(
        last.segments_copied < BLOCKS / 256 / 2,
        "a partial rebuild: {last:?}"
    );
    assert_eq!(child_sum(&r, &a, BLOCKS), child_sum(&r, &bb, BLOCKS));
    load.verify(&r, &nxb);
}

#[test]
fn rate_limit_pause_resume_and_stop() {
    let r = reactor();
    let a = ram("a", BLOCKS);
    let nx = create(&r, opts("nx", BLOCKS), std::slice::from_ref(&a));
    nx.set_rebuild_rate(16);
    let b = ram("b", BLOCKS);
    let t0 = Instant::now();
    nx.add_child(ChildSpec::local(b.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    r.run_until(Duration::from_millis(500), || false);
    let s = nx.child_status(&uri(&b)).unwrap().rebuild.unwrap();
    let ms = u64::try_from(t0.elapsed().as_millis()).unwrap().max(1);
    let kib_per_s = s.bytes_copied / ms * 1000 / 1024;
    assert!(
        kib_per_s < 24 << 10 && kib_per_s > 4 << 10,
        "copy rate {kib_per_s} KiB/s with a 16 MiB/s limit"
    );
    nx.pause_rebuild(Some(&uri(&b))).unwrap();
    r.run_until(Duration::from_millis(30), || false);
    let p1 = nx.child_status(&uri(&b)).unwrap().rebuild.unwrap();
    assert!(p1.paused);
    r.run_until(Duration::from_millis(200), || false);
    let p2 = nx.child_status(&uri(&b)).unwrap().rebuild.unwrap();
    assert_eq!(
        p1.segments_copied, p2.segments_copied,
        "a paused rebuild copies nothing"
    );
    nx.resume_rebuild(None).unwrap();
    r.run_until(Duration::from_millis(200), || false);
    let p3 = nx.child_status(&uri(&b)).unwrap().rebuild.unwrap();
    assert!(p3.segments_copied > p2.segments_copied);
    assert!(p3.progress > 0 && p3.progress < 100);
    // Stop: the child is faulted, the rest of its segments still dirty.
    nx.stop_rebuild(&uri(&b)).wait(WAIT).unwrap().unwrap();
    let c = nx.child_status(&uri(&b)).unwrap();
    assert_eq!(c.state, ChildState::Faulted(FaultReason::RebuildStopped));
    until(&r, "the rebuild task to end", || {
        nx.child_status(&uri(&b)).unwrap().last_rebuild.is_some()
    });
    let c = nx.child_status(&uri(&b)).unwrap();
    assert_eq!(
        c.last_rebuild.as_ref().unwrap().outcome,
        RebuildOutcome::Stopped
    );
    let left = c.dirty_segments;
    let copied = c.last_rebuild.unwrap().segments_copied;
    assert_eq!(left + copied, BLOCKS / 256);
    assert!(nx.stop_rebuild(&uri(&b)).wait(WAIT).unwrap().is_err());
    assert!(nx.pause_rebuild(Some(&uri(&b))).is_err());
    // Back at full speed, only what is left is copied.
    nx.set_rebuild_rate(0);
    nx.add_child(ChildSpec::local(b.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    until_online(&r, &nx, &uri(&b));
    let last = nx.child_status(&uri(&b)).unwrap().last_rebuild.unwrap();
    assert_eq!(last.segments_copied, left);
    assert_eq!(child_sum(&r, &a, BLOCKS), child_sum(&r, &b, BLOCKS));
}

#[test]
fn remove_a_rebuilding_child_and_fail_a_rebuild() {
    let r = reactor();
    let a = ram("a", BLOCKS);
    let nx = create(&r, opts("nx", BLOCKS), std::slice::from_ref(&a));
    nx.set_rebuild_rate(8);
    let b = ram("b", BLOCKS);
    nx.add_child(ChildSpec::local(b.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    r.run_until(Duration::from_millis(50), || false);
    nx.remove_child(&uri(&b)).wait(WAIT).unwrap().unwrap();
    assert!(nx.child_status(&uri(&b)).is_none());
    assert_eq!(nx.status().state, NexusState::Online);
    // A rebuild whose target fails ends with the child faulted.
    nx.set_rebuild_rate(0);
    let c = ErrorBdev::create(ram("c", BLOCKS), None).unwrap();
    let cb: Arc<dyn Bdev> = c.clone();
    c.inject(Injection::failure(IoType::Write).skip(20))
        .unwrap();
    nx.add_child(ChildSpec::local(cb.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    until(&r, "c faulted", || {
        nx.child_status(&uri(&cb))
            .is_some_and(|s| matches!(s.state, ChildState::Faulted(_)) && s.last_rebuild.is_some())
    });
    let s = nx.child_status(&uri(&cb)).unwrap();
    assert_eq!(s.fault_reason, Some(FaultReason::IoError));
    assert_eq!(s.last_rebuild.unwrap().outcome, RebuildOutcome::Failed);
    c.clear();
    nx.add_child(ChildSpec::local(cb.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    until_online(&r, &nx, &uri(&cb));
    assert_eq!(child_sum(&r, &a, BLOCKS), child_sum(&r, &cb, BLOCKS));
    nx.destroy().wait(WAIT).unwrap().unwrap();
}

#[test]
fn hot_writes_into_the_segments_being_copied_are_not_lost() {
    // A small volume, slow children and many writes in flight: writes keep landing in the
    // segments the rebuild is copying (it holds a lock on 1 MiB runs of them).
    let r = reactor();
    const SMALL: u64 = 4 << 11; // 4 MiB
    let slow = |n: &str| -> Arc<dyn Bdev> {
        let lat = shoal_bdev::delay::DelayLatencies {
            avg_read_us: 50,
            p99_read_us: 400,
            avg_write_us: 80,
            p99_write_us: 600,
        };
        shoal_bdev::delay::DelayBdev::create(n, ram(&format!("{n}_base"), SMALL), None, lat)
            .unwrap()
    };
    let a = slow("a");
    let nx = create(&r, opts("nx", SMALL), std::slice::from_ref(&a));
    let nxb: Arc<dyn Bdev> = nx.clone();
    let load = Loader::start(&nxb, SMALL, 8, 32, 11);
    until(&r, "some writes", || load.done.get() >= 2000);
    for round in 0..3 {
        let b = slow(&format!("b{round}"));
        nx.add_child(ChildSpec::local(b.clone()))
            .wait(WAIT)
            .unwrap()
            .unwrap();
        until_online(&r, &nx, &uri(&b));
        let before = load.done.get();
        until(&r, "writes after the rebuild", || {
            load.done.get() >= before + 200
        });
        load.finish(&r);
        assert_eq!(load.errors.get(), 0);
        assert_eq!(
            child_sum(&r, &a, SMALL),
            child_sum(&r, &b, SMALL),
            "round {round}"
        );
        load.verify(&r, &nxb);
        nx.remove_child(&uri(&b)).wait(WAIT).unwrap().unwrap();
        load.stop.set(false);
        for k in 0..32 {
            load.restart(k);
        }
    }
    load.finish(&r);
}

#[test]
fn writes_in_flight_when_a_copy_starts_are_not_lost() {
    // The source applies writes 300 us late, the new child at once: a copy that read the
    // source while a write was still landing there, then overwrote the new child after that
    // write reached it, would leave the new child stale. The range lock's barrier and the
    // barrier when the child joins the write path prevent both.
    let r = reactor();
    const SMALL: u64 = 2 << 11; // 2 MiB
    let a: Arc<dyn Bdev> = LateWrite::create("a", ram("a_base", SMALL), Duration::from_micros(300));
    let mut o = opts("nx", SMALL);
    o.segment_bytes = 16 << 10;
    let nx = create(&r, o, std::slice::from_ref(&a));
    let nxb: Arc<dyn Bdev> = nx.clone();
    let load = Loader::start(&nxb, SMALL, 8, 32, 5);
    until(&r, "some writes", || load.done.get() >= 1000);
    for round in 0..4 {
        let b = ram(&format!("b{round}"), SMALL);
        nx.add_child(ChildSpec::local(b.clone()))
            .wait(WAIT)
            .unwrap()
            .unwrap();
        until_online(&r, &nx, &uri(&b));
        load.finish(&r);
        assert_eq!(load.errors.get(), 0);
        assert_eq!(
            child_sum(&r, &a, SMALL),
            child_sum(&r, &b, SMALL),
            "round {round}"
        );
        nx.remove_child(&uri(&b)).wait(WAIT).unwrap().unwrap();
        load.stop.set(false);
        for k in 0..32 {
            load.restart(k);
        }
        until(&r, "more writes", || load.done.get() >= 1000 * (round + 2));
    }
    load.finish(&r);
    load.verify(&r, &nxb);
}
