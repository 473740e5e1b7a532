//! The windows around a child's fault, promotion and re-add in which an acknowledged write
//! could be lost or an online child could hold stale data (found in review; each test failed
//! before its fix).

mod common;

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use shoal_bdev::error_bdev::{ErrorBdev, Injection};
use shoal_bdev::{Bdev, BdevIo, IoBuf, IoType, SgList, open_channel};
use shoal_replication::{ChildSpec, ChildState};

const BLOCKS: u64 = 8 << 11; // 8 MiB of 512-byte blocks

/// Adds `b`, retrying while the nexus answers busy (as an operator or the CSI plugin would).
fn add_when_free(r: &shoal_reactor::Reactor, nx: &shoal_replication::Nexus, b: &Arc<dyn Bdev>) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match nx
            .add_child(ChildSpec::local(b.clone()))
            .wait(WAIT)
            .unwrap()
        {
            Ok(()) => return,
            Err(shoal_replication::NexusError::Busy { .. })
                if std::time::Instant::now() < deadline =>
            {
                r.run_until(Duration::from_millis(20), || false);
            }
            Err(e) => panic!("add {}: {e:?}", uri(b)),
        }
    }
}

fn faulted(nx: &shoal_replication::Nexus, b: &Arc<dyn Bdev>) -> bool {
    nx.child_status(&uri(b))
        .is_some_and(|c| matches!(c.state, ChildState::Faulted(_)))
}

/// A nexus over `a` and `c` in which `a` has left the I/O path (a write, W1 at block 800,
/// failed on it) and the fault is not recorded (the metadata writes to `c` are held), with a
/// second write, W2 at block 1600, sent after it (to `c` only). Neither may be acknowledged
/// yet: `a` is still recorded in sync and lacks both. Block 0 holds pattern 1 on both.
fn hold_writes_in_the_window(
    r: &shoal_reactor::Reactor,
    a: &Arc<ErrorBdev>,
    c: &Arc<ErrorBdev>,
) -> (
    Arc<shoal_replication::Nexus>,
    shoal_bdev::IoChannel,
    Rc<Collector>,
) {
    let (ab, cb): (Arc<dyn Bdev>, Arc<dyn Bdev>) = (a.clone(), c.clone());
    let nx = create(r, opts("nx", BLOCKS), &[ab, cb]);
    let nxb: Arc<dyn Bdev> = nx.clone();
    Io::new(r, &nxb).write(0, &pattern(4096, 1)).unwrap();
    c.inject(Injection::pending(IoType::Write).blocks(0..16))
        .unwrap();
    a.inject(Injection::failure(IoType::Write).count(1))
        .unwrap();
    let chan = open_channel(&nxb).unwrap();
    let sink = Rc::new(Collector::default());
    chan.submit(
        BdevIo::write(800, 8, sg(&pattern(4096, 2))),
        sink.clone(),
        1,
    );
    r.run_until(Duration::from_millis(100), || false);
    chan.submit(
        BdevIo::write(1600, 8, sg(&pattern(4096, 3))),
        sink.clone(),
        2,
    );
    r.run_until(Duration::from_millis(100), || false);
    assert!(
        sink.done.borrow().is_empty(),
        "a write was acknowledged while a, which lacks it, is still recorded in sync"
    );
    (nx, chan, sink)
}

/// A nexus over `a` and `c` restarted after a "crash" (the first life ran on its own thread).
fn restart(a: &Arc<ErrorBdev>, c: &Arc<ErrorBdev>) -> (shoal_reactor::Reactor, Io) {
    a.clear();
    c.clear();
    let (ab, cb): (Arc<dyn Bdev>, Arc<dyn Bdev>) = (a.clone(), c.clone());
    let r = reactor();
    let nx = create(&r, opts("nx", BLOCKS), &[ab, cb]);
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    (r, io)
}

/// A child taken out of the I/O path (its write failed) stays recorded as in sync until the
/// control task writes the new generation. A write submitted in that window goes to the other
/// child only, and must not be acknowledged before the fault is recorded: a crash would
/// otherwise restart the volume from either child, possibly the one without the write.
#[test]
fn a_write_is_not_acknowledged_while_a_child_without_it_is_recorded_in_sync() {
    let a = ErrorBdev::create(ram("a", BLOCKS), None).unwrap();
    let c = ErrorBdev::create(ram("c", BLOCKS), None).unwrap();
    let (a2, c2) = (a.clone(), c.clone());
    std::thread::spawn(move || {
        let r = reactor();
        let _held = hold_writes_in_the_window(&r, &a2, &c2);
        // The daemon "crashes" here.
    })
    .join()
    .unwrap();
    // Whatever it picks at restart, every write it acknowledged is there (only block 0).
    let (_r, io) = restart(&a, &c);
    assert!(io.read(0, 8).unwrap() == pattern(4096, 1));
}

/// The same window, seen through to the end: once the fault is recorded, the held writes are
/// acknowledged, and a restart finds them.
#[test]
fn writes_held_in_the_window_are_acknowledged_once_the_fault_is_recorded() {
    let a = ErrorBdev::create(ram("a", BLOCKS), None).unwrap();
    let c = ErrorBdev::create(ram("c", BLOCKS), None).unwrap();
    let (a2, c2) = (a.clone(), c.clone());
    std::thread::spawn(move || {
        let r = reactor();
        let (nx, _chan, sink) = hold_writes_in_the_window(&r, &a2, &c2);
        c2.resume_pending();
        until(&r, "both writes answered", || sink.done.borrow().len() == 2);
        assert!(sink.done.borrow().iter().all(|d| d.2.is_ok()));
        let ab: Arc<dyn Bdev> = a2.clone();
        assert!(faulted(&nx, &ab));
        // The daemon "crashes" here.
    })
    .join()
    .unwrap();
    let (_r, io) = restart(&a, &c);
    assert!(io.read(800, 8).unwrap() == pattern(4096, 2));
    assert!(io.read(1600, 8).unwrap() == pattern(4096, 3));
}

/// A rebuilt child's label is written `in_sync` at a new generation; if a host write fails on
/// it before it joins, the promotion is dropped, and a newer generation on the online children
/// must supersede that label.
#[test]
fn a_dropped_promotion_is_superseded_in_the_metadata() {
    let a = ram("a", BLOCKS);
    let b = ErrorBdev::create(ram("b", BLOCKS), None).unwrap();
    let bb: Arc<dyn Bdev> = b.clone();
    let (a2, b2, bb2) = (a.clone(), b.clone(), bb.clone());
    std::thread::spawn(move || {
        let r = reactor();
        let nx = create(&r, opts("nx", BLOCKS), std::slice::from_ref(&a2));
        let nxb: Arc<dyn Bdev> = nx.clone();
        let io = Io::new(&r, &nxb);
        io.write(0, &pattern(4096, 1)).unwrap();
        // The add's own label write goes through; the promotion's label write is held.
        b2.inject(Injection::pending(IoType::Write).blocks(0..16).skip(1))
            .unwrap();
        nx.add_child(ChildSpec::local(bb2.clone()))
            .wait(WAIT)
            .unwrap()
            .unwrap();
        until(&r, "promotion label held", || b2.held() > 0);
        b2.inject(
            Injection::failure(IoType::Write)
                .blocks(2048..1 << 40)
                .count(1),
        )
        .unwrap();
        io.write(1600, &pattern(4096, 3)).unwrap(); // fails on b, acknowledged from a
        b2.resume_pending();
        until(&r, "b faulted", || faulted(&nx, &bb2));
        r.run_until(Duration::from_millis(100), || false);
        // The daemon "crashes" here.
    })
    .join()
    .unwrap();
    b.clear();
    let r = reactor();
    let nx = create(&r, opts("nx", BLOCKS), &[bb, a]);
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    assert!(
        io.read(1600, 8).unwrap() == pattern(4096, 3),
        "an acknowledged write was lost: the restart trusted the child that missed it"
    );
}
/// A write's leg that times out on a child whose channel was already closed (an earlier read
/// timed out and took the child out) must still mark the child's dirty map, or the partial
/// rebuild skips the segment.
#[test]
fn a_leg_abandoned_after_its_channel_closed_still_marks_the_segment() {
    log();
    let r = reactor();
    let a = ram("a", BLOCKS);
    let b = Stall::create("b", ram("bb", BLOCKS));
    let bb: Arc<dyn Bdev> = b.clone();
    let mut o = opts("nx", BLOCKS);
    o.io_timeout = Duration::from_millis(200);
    let nx = create(&r, o, &[a.clone(), bb.clone()]);
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    for k in 0..64u64 {
        io.write(k * 256, &pattern(4096, 1)).unwrap();
    }
    b.stalled.store(true, Ordering::Release);
    let chan = open_channel(&nxb).unwrap();
    let sink = Rc::new(Collector::default());
    // Reads over several segments: some go to b.
    for k in 0..8u64 {
        let mut s = SgList::new();
        s.push(IoBuf::zeroed(4096));
        chan.submit(BdevIo::read(k * 256, 8, s), sink.clone(), 100 + k);
    }
    r.run_until(Duration::from_millis(130), || false);
    chan.submit(
        BdevIo::write(40 * 256, 8, sg(&pattern(4096, 2))),
        sink.clone(),
        7,
    );
    until(&r, "all answered", || sink.done.borrow().len() == 9);
    b.stalled.store(false, Ordering::Release);
    Stall::fail_held();
    r.run_until(Duration::from_millis(50), || false);
    nx.add_child(ChildSpec::local(bb.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    until_online(&r, &nx, &uri(&bb));
    assert!(
        child_sum(&r, &a, BLOCKS) == child_sum(&r, &bb, BLOCKS),
        "b is online but differs from a"
    );
}

/// A read still out on a removed child times out after another child took its slot: the
/// timeout is the removed child's, not the newcomer's.
#[test]
fn a_removed_childs_timeout_does_not_fault_the_child_that_took_its_slot() {
    let r = reactor();
    let a = ram("a", BLOCKS);
    let b = Stall::create("b", ram("bb", BLOCKS));
    let bb: Arc<dyn Bdev> = b.clone();
    let mut o = opts("nx", BLOCKS);
    o.io_timeout = Duration::from_millis(300);
    let nx = create(&r, o, &[a.clone(), bb.clone()]);
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    io.write(0, &pattern(4096, 1)).unwrap();
    b.stalled.store(true, Ordering::Release);
    // Block 256 is in the second segment: read from the second child, b.
    let mut s = SgList::new();
    s.push(IoBuf::zeroed(4096));
    io.chan.submit(BdevIo::read(256, 8, s), io.sink.clone(), 1);
    nx.remove_child(&uri(&bb)).wait(WAIT).unwrap().unwrap();
    let y = ram("y", BLOCKS);
    nx.add_child(ChildSpec::local(y.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    io.write(0, &pattern(4096, 3)).unwrap(); // opens y's channel in b's old slot
    until(&r, "the read answered", || {
        io.sink.done.borrow().iter().any(|d| d.0 == 1)
    });
    r.run_until(Duration::from_millis(50), || false);
    let st = nx.child_status(&uri(&y)).unwrap();
    assert!(
        !matches!(st.state, ChildState::Faulted(_)),
        "y was faulted by the removed child's timeout: {:?}",
        st.state
    );
    b.stalled.store(false, Ordering::Release);
    Stall::release();
}

/// A rebuild's copy write that timed out may still land later; the child must not be re-added
/// (and rebuilt, and put online) while it is out, or the old data lands on an online child.
#[test]
fn a_late_rebuild_write_cannot_land_on_a_re_added_child() {
    let r = reactor();
    let a = ram("a", BLOCKS);
    let b = Stall::create("b", ram("bb", BLOCKS));
    let bb: Arc<dyn Bdev> = b.clone();
    let mut o = opts("nx", BLOCKS);
    o.io_timeout = Duration::from_millis(300);
    let nx = create(&r, o, std::slice::from_ref(&a));
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    for k in 0..4u64 {
        io.write(k * 2048, &pattern(4096, 1)).unwrap();
    }
    nx.set_rebuild_rate(1);
    nx.add_child(ChildSpec::local(bb.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    b.stalled.store(true, Ordering::Release);
    until(&r, "copy held", || Stall::held() > 0);
    until(&r, "b faulted", || faulted(&nx, &bb));
    b.stalled.store(false, Ordering::Release);
    nx.set_rebuild_rate(0);
    for k in 0..4u64 {
        io.write(k * 2048, &pattern(4096, 2)).unwrap();
    }
    // Refused while the old copy write is out...
    let early = nx
        .add_child(ChildSpec::local(bb.clone()))
        .wait(WAIT)
        .unwrap();
    assert!(
        early.is_err(),
        "re-added while a rebuild write is still out"
    );
    // ...and taken once it came back.
    Stall::release();
    add_when_free(&r, &nx, &bb);
    until_online(&r, &nx, &uri(&bb));
    let raw = Io::new(&r, &bb);
    for k in 0..4u64 {
        assert!(
            raw.read(meta(BS) + k * 2048, 8).unwrap() == pattern(4096, 2),
            "online child b holds stale data at block {}",
            k * 2048
        );
    }
}

/// A current child whose label write lands but whose flush fails at nexus creation is faulted;
/// its label may still say in sync at the new generation, so the others must get a newer one
/// before the host writes, or a restart could trust it without those writes.
#[test]
fn a_child_lost_while_the_nexus_is_created_is_superseded_in_the_metadata() {
    let a = ram("a", BLOCKS);
    let b = ErrorBdev::create(ram("b", BLOCKS), None).unwrap();
    let bb: Arc<dyn Bdev> = b.clone();
    {
        let r = reactor();
        let nx = create(&r, opts("nx", BLOCKS), &[a.clone(), bb.clone()]);
        nx.destroy().wait(WAIT).unwrap().unwrap();
    }
    let (a2, b2, bb2) = (a.clone(), b.clone(), bb.clone());
    std::thread::spawn(move || {
        let r = reactor();
        b2.inject(Injection::failure(IoType::Flush).count(1))
            .unwrap();
        let nx = create(&r, opts("nx", BLOCKS), &[a2, bb2.clone()]);
        assert!(faulted(&nx, &bb2));
        let nxb: Arc<dyn Bdev> = nx.clone();
        let io = Io::new(&r, &nxb);
        io.write(1600, &pattern(4096, 3)).unwrap();
        // The daemon "crashes" here.
    })
    .join()
    .unwrap();
    b.clear();
    let r = reactor();
    let nx = create(&r, opts("nx", BLOCKS), &[bb, a]);
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    assert!(
        io.read(1600, 8).unwrap() == pattern(4096, 3),
        "an acknowledged write was lost: the restart trusted the child that missed it"
    );
}

/// A child removed while I/Os given up after a timeout are still out on it cannot be added
/// back until they are back (removing it must not clear the guard a faulted child has).
#[test]
fn a_removed_child_with_io_still_out_is_not_added_back_until_it_is_back() {
    let r = reactor();
    let a = ram("a", BLOCKS);
    let b = Stall::create("b", ram("bb", BLOCKS));
    let bb: Arc<dyn Bdev> = b.clone();
    let mut o = opts("nx", BLOCKS);
    o.io_timeout = Duration::from_millis(200);
    let nx = create(&r, o, &[a.clone(), bb.clone()]);
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    b.stalled.store(true, Ordering::Release);
    io.write(0, &pattern(4096, 1)).unwrap(); // b's leg times out; b is faulted
    until(&r, "b faulted", || faulted(&nx, &bb));
    b.stalled.store(false, Ordering::Release);
    nx.remove_child(&uri(&bb)).wait(WAIT).unwrap().unwrap();
    let e = nx
        .add_child(ChildSpec::local(bb.clone()))
        .wait(WAIT)
        .unwrap();
    assert!(
        matches!(&e, Err(shoal_replication::NexusError::Busy { .. })),
        "{e:?}"
    );
    Stall::release();
    r.run_until(Duration::from_millis(50), || false);
    nx.add_child(ChildSpec::local(bb.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    until_online(&r, &nx, &uri(&bb));
    assert!(child_sum(&r, &a, BLOCKS) == child_sum(&r, &bb, BLOCKS));
}

/// A nexus over `a` whose new child `b` has a rebuild copy write held (not yet timed out).
fn copy_held() -> (
    shoal_reactor::Reactor,
    Arc<Stall>,
    Arc<dyn Bdev>,
    Arc<shoal_replication::Nexus>,
    Io,
) {
    let r = reactor();
    let a = ram("a", BLOCKS);
    let b = Stall::create("b", ram("bb", BLOCKS));
    let bb: Arc<dyn Bdev> = b.clone();
    let mut o = opts("nx", BLOCKS);
    o.io_timeout = Duration::from_millis(300);
    let nx = create(&r, o, std::slice::from_ref(&a));
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    for k in 0..4u64 {
        io.write(k * 2048, &pattern(4096, 1)).unwrap();
    }
    nx.set_rebuild_rate(1);
    nx.add_child(ChildSpec::local(bb.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    b.stalled.store(true, Ordering::Release);
    until(&r, "copy held", || Stall::held() > 0);
    (r, b, bb, nx, io)
}

/// Once the held copy is back: `b` can be added, is rebuilt, and holds the newest data.
fn add_back_after_release(
    r: &shoal_reactor::Reactor,
    bb: &Arc<dyn Bdev>,
    nx: &shoal_replication::Nexus,
) {
    Stall::release();
    add_when_free(r, nx, bb);
    until_online(r, nx, &uri(bb));
    let raw = Io::new(r, bb);
    for k in 0..4u64 {
        assert!(
            raw.read(meta(BS) + k * 2048, 8).unwrap() == pattern(4096, 2),
            "online child b holds stale data at block {}",
            k * 2048
        );
    }
}

/// Removed while a rebuild copy is out (not yet given up, so nothing counted yet): the same
/// device is not added back until the copy is back.
#[test]
fn a_child_removed_during_a_copy_is_not_added_back_until_the_copy_is_back() {
    let (r, b, bb, nx, io) = copy_held();
    nx.remove_child(&uri(&bb)).wait(WAIT).unwrap().unwrap();
    b.stalled.store(false, Ordering::Release);
    r.run_until(Duration::from_millis(600), || false); // the old copy times out
    nx.set_rebuild_rate(0);
    for k in 0..4u64 {
        io.write(k * 2048, &pattern(4096, 2)).unwrap();
    }
    let e = nx
        .add_child(ChildSpec::local(bb.clone()))
        .wait(WAIT)
        .unwrap();
    assert!(
        matches!(&e, Err(shoal_replication::NexusError::Busy { .. })),
        "{e:?}"
    );
    add_back_after_release(&r, &bb, &nx);
}

/// A stopped rebuild whose copy is still out: the child is not added back (and rebuilt again)
/// until the old rebuild has ended and its copy is back.
#[test]
fn a_child_is_not_added_back_while_its_stopped_rebuild_is_still_out() {
    let (r, b, bb, nx, io) = copy_held();
    nx.stop_rebuild(&uri(&bb)).wait(WAIT).unwrap().unwrap();
    b.stalled.store(false, Ordering::Release);
    nx.set_rebuild_rate(0);
    let e = nx
        .add_child(ChildSpec::local(bb.clone()))
        .wait(WAIT)
        .unwrap();
    assert!(
        matches!(&e, Err(shoal_replication::NexusError::Busy { .. })),
        "{e:?}"
    );
    r.run_until(Duration::from_millis(600), || false); // the old copy times out
    for k in 0..4u64 {
        io.write(k * 2048, &pattern(4096, 2)).unwrap();
    }
    let e = nx
        .add_child(ChildSpec::local(bb.clone()))
        .wait(WAIT)
        .unwrap();
    assert!(
        matches!(&e, Err(shoal_replication::NexusError::Busy { .. })),
        "{e:?}"
    );
    add_back_after_release(&r, &bb, &nx);
}

/// A host write's leg sent to a child before an operator faulted it, still out and not yet
/// given up: the child is not added back until that leg is back, or it could land after the
/// rebuild, on a child that serves reads.
#[test]
fn a_child_is_not_added_back_while_a_host_leg_sent_before_its_fault_is_out() {
    let r = reactor();
    let a = ram("a", BLOCKS);
    let b = Stall::create("b", ram("bb", BLOCKS));
    let bb: Arc<dyn Bdev> = b.clone();
    let mut o = opts("nx", BLOCKS);
    o.io_timeout = Duration::from_millis(300);
    let nx = create(&r, o, &[a.clone(), bb.clone()]);
    nx.set_rebuild_rate(0);
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    io.write(0, &pattern(4096, 1)).unwrap();
    b.stalled.store(true, Ordering::Release);
    let w1 = Rc::new(Collector::default());
    io.chan
        .submit(BdevIo::write(0, 8, sg(&pattern(4096, 3))), w1.clone(), 7);
    until(&r, "W1's leg to b held", || Stall::held() > 0);
    b.stalled.store(false, Ordering::Release);
    nx.fault_child(&uri(&bb)).wait(WAIT).unwrap().unwrap();
    let e = nx
        .add_child(ChildSpec::local(bb.clone()))
        .wait(WAIT)
        .unwrap();
    assert!(
        matches!(&e, Err(shoal_replication::NexusError::Busy { .. })),
        "{e:?}"
    );
    until(&r, "W1 answered", || !w1.done.borrow().is_empty());
    io.write(0, &pattern(4096, 2)).unwrap();
    Stall::release();
    add_when_free(&r, &nx, &bb);
    until_online(&r, &nx, &uri(&bb));
    let raw = Io::new(&r, &bb);
    assert!(
        raw.read(meta(BS), 8).unwrap() == pattern(4096, 2),
        "online child b holds an older write than the last acknowledged one"
    );
}
