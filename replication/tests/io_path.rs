//! The nexus's I/O path over RAM, error and delay children: fan-out, read selection, a child
//! failing mid-I/O without a host-visible error, read retry, timeouts, a faulted nexus.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use shoal_bdev::delay::{DelayBdev, DelayLatencies};
use shoal_bdev::error_bdev::{ErrorBdev, Injection};
use shoal_bdev::{Bdev, BdevIo, IoType};
use shoal_replication::{ChildSpec, ChildState, ChildUri, FaultReason, Label, Nexus, NexusState};

const BLOCKS: u64 = 4096;

#[test]
fn writes_fan_out_to_every_child() {
    let r = reactor();
    let kids: Vec<Arc<dyn Bdev>> = (0..3).map(|i| ram(&format!("m{i}"), BLOCKS)).collect();
    let nx = create(&r, opts("nx", BLOCKS), &kids);
    let nxb: Arc<dyn Bdev> = nx.clone();
    assert_eq!(nxb.info().num_blocks(), BLOCKS);
    assert_eq!(nx.status().state, NexusState::Online);
    let io = Io::new(&r, &nxb);
    for i in 0..20u64 {
        io.write(i * 7, &pattern(3 * 512, i)).unwrap();
    }
    io.run(BdevIo::write_zeroes(100, 8)).1.unwrap();
    io.run(BdevIo::unmap(200, 8)).1.unwrap();
    io.run(BdevIo::flush()).1.unwrap();
    let sums: Vec<u32> = kids.iter().map(|k| child_sum(&r, k, BLOCKS)).collect();
    assert!(
        sums.iter().all(|&s| s == sums[0]),
        "children differ: {sums:x?}"
    );
    assert_eq!(io.read(7, 3).unwrap(), pattern(3 * 512, 1));
    let bitmap_writes = nx.status().write_intent.unwrap().bitmap_writes;
    assert!(bitmap_writes >= 1);
    for k in &kids {
        let s = k.info().iostat();
        // 20 writes, plus one label write at creation, plus the write-intent bitmap's.
        assert_eq!(s.num_write_ops, 21 + bitmap_writes, "{}", k.info().name);
        assert_eq!(s.num_write_zeroes_ops, 1);
        assert_eq!(s.num_unmap_ops, 1);
        assert!(s.num_flush_ops >= 2);
        // Child data starts after the metadata region.
        let direct = Io::new(&r, k);
        assert_eq!(direct.read(meta(BS) + 7, 3).unwrap(), pattern(3 * 512, 1));
    }
}

#[test]
fn reads_balance_over_local_children_and_prefer_them() {
    let r = reactor();
    let a = ram("a", BLOCKS);
    let b = ram("b", BLOCKS);
    let nx = create(&r, opts("nx", BLOCKS), &[a.clone(), b.clone()]);
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    // Spread by segment (128 KiB = 256 blocks here): every segment goes to one child.
    for i in 0..200 {
        io.read((i * 256) % BLOCKS, 1).unwrap();
    }
    let (ra, rb) = (
        a.info().iostat().num_read_ops,
        b.info().iostat().num_read_ops,
    );
    assert!(
        ra >= 80 && rb >= 80,
        "reads {ra}/{rb} should be spread over local children"
    );

    // A local child is preferred to a remote one even when the remote one is faster.
    let slow_base = ram("slow", BLOCKS);
    let slow: Arc<dyn Bdev> =
        DelayBdev::create("slowd", slow_base, None, DelayLatencies::uniform(300)).unwrap();
    let fast = ram("fast", BLOCKS);
    let specs = vec![
        ChildSpec::local(slow.clone()),
        ChildSpec {
            local: false,
            ..ChildSpec::local(fast.clone())
        },
    ];
    let nx2 = Nexus::create(opts("nx2", BLOCKS), specs, &r.handle())
        .wait(WAIT)
        .unwrap()
        .unwrap();
    let nx2b: Arc<dyn Bdev> = nx2.clone();
    let io2 = Io::new(&r, &nx2b);
    let before = fast.info().iostat().num_read_ops;
    for i in 0..50 {
        io2.read(i, 1).unwrap();
    }
    assert_eq!(
        fast.info().iostat().num_read_ops,
        before,
        "the remote child served reads"
    );
}

#[test]
fn reads_go_to_the_fastest_remote_child() {
    let r = reactor();
    let slow_base = ram("slow", BLOCKS);
    let slow: Arc<dyn Bdev> =
        DelayBdev::create("slowd", slow_base, None, DelayLatencies::uniform(500)).unwrap();
    let fast = ram("fast", BLOCKS);
    let remote = |b: &Arc<dyn Bdev>| ChildSpec {
        local: false,
        ..ChildSpec::local(b.clone())
    };
    let nx = Nexus::create(
        opts("nx", BLOCKS),
        vec![remote(&slow), remote(&fast)],
        &r.handle(),
    )
    .wait(WAIT)
    .unwrap()
    .unwrap();
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    let before = (
        slow.info().iostat().num_read_ops,
        fast.info().iostat().num_read_ops,
    );
    for i in 0..400 {
        io.read(i, 1).unwrap();
    }
    let slow_n = slow.info().iostat().num_read_ops - before.0;
    let fast_n = fast.info().iostat().num_read_ops - before.1;
    assert_eq!(slow_n + fast_n, 400);
    assert!(
        fast_n >= 360,
        "the faster child served only {fast_n} of 400 reads"
    );
    assert!(
        slow_n >= 2,
        "the slower child is still probed now and then ({slow_n})"
    );
}

fn label_of(r: &shoal_reactor::Reactor, b: &Arc<dyn Bdev>) -> Label {
    let io = Io::new(r, b);
    let region = io.read(0, 8192 / u64::from(BS)).unwrap();
    Label::newest(&region).expect("a label")
}

#[test]
fn a_child_failing_mid_io_is_faulted_without_host_errors() {
    let r = reactor();
    let a = ram("a", BLOCKS);
    let b_base = ram("b", BLOCKS);
    let b = ErrorBdev::create(b_base.clone(), None).unwrap();
    let bb: Arc<dyn Bdev> = b.clone();
    let nx = create(&r, opts("nx", BLOCKS), &[a.clone(), bb.clone()]);
    let gen0 = nx.status().generation;
    let nxb: Arc<dyn Bdev> = nx.clone();
    let load = Loader::start(&nxb, BLOCKS, 8, 16, 7);
    r.run_until(Duration::from_millis(50), || false);
    // Writes on b start failing while 16 writes are in flight.
    b.inject(Injection::failure(IoType::Write)).unwrap();
    until(&r, "b faulted", || {
        nx.child_status(&uri(&bb))
            .is_some_and(|c| c.state == ChildState::Faulted(FaultReason::IoError))
    });
    r.run_until(Duration::from_millis(50), || false);
    load.finish(&r);
    assert_eq!(load.errors.get(), 0, "the host saw errors");
    assert!(load.done.get() > 100);
    let st = nx.status();
    assert_eq!(st.state, NexusState::Degraded);
    assert!(st.generation > gen0, "the fault bumps the generation");
    let c = nx.child_status(&uri(&bb)).unwrap();
    assert_eq!(c.fault_reason, Some(FaultReason::IoError));
    assert!(c.dirty_segments > 0, "writes since the fault are tracked");
    // The survivor's metadata records the new generation in sync; b's does not have it.
    let la = label_of(&r, &a);
    assert!(la.in_sync && la.generation == st.generation);
    assert!(label_of(&r, &b_base).generation < st.generation);
    load.verify(&r, &nxb);
    load.verify(&r, &nxb);
}

#[test]
fn a_failed_read_is_retried_on_another_child() {
    let r = reactor();
    let a_base = ram("a", BLOCKS);
    let a = ErrorBdev::create(a_base, None).unwrap();
    let ab: Arc<dyn Bdev> = a.clone();
    let b = ram("b", BLOCKS);
    let nx = create(&r, opts("nx", BLOCKS), &[ab.clone(), b.clone()]);
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    for i in 0..16u64 {
        io.write(i * 8, &pattern(8 * 512, i)).unwrap();
    }
    a.inject(Injection::failure(IoType::Read)).unwrap();
    for i in 0..16u64 {
        assert_eq!(io.read(i * 8, 8).unwrap(), pattern(8 * 512, i), "read {i}");
    }
    assert!(a.injected() >= 1, "some read went to a first");
    let c = nx.child_status(&uri(&ab)).unwrap();
    assert_eq!(c.state, ChildState::Faulted(FaultReason::IoError));
    // With no healthy child left to retry on, the host sees the error.
    let single = ErrorBdev::create(ram("c", BLOCKS), None).unwrap();
    let sb: Arc<dyn Bdev> = single.clone();
    let nx1 = create(&r, opts("nx1", BLOCKS), &[sb]);
    let n1: Arc<dyn Bdev> = nx1.clone();
    let io1 = Io::new(&r, &n1);
    single.inject(Injection::failure(IoType::Read)).unwrap();
    assert!(io1.read(0, 1).is_err());
    until(&r, "nx1 faulted", || {
        nx1.status().state == NexusState::Faulted
    });
    assert!(
        io1.write(0, &pattern(512, 1)).is_err(),
        "a faulted nexus fails I/O"
    );
}

#[test]
fn a_hung_child_times_out_and_comes_back_with_a_partial_rebuild() {
    log();
    let r = reactor();
    let a = ram("a", BLOCKS);
    let b = ErrorBdev::create(ram("b", BLOCKS), None).unwrap();
    let bb: Arc<dyn Bdev> = b.clone();
    let mut o = opts("nx", BLOCKS);
    o.io_timeout = Duration::from_millis(200);
    let nx = create(&r, o, &[a.clone(), bb.clone()]);
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    io.write(0, &pattern(512, 1)).unwrap();
    b.hang();
    let t0 = std::time::Instant::now();
    io.write(8, &pattern(4096, 2)).unwrap();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let c = nx.child_status(&uri(&bb)).unwrap();
    assert_eq!(c.state, ChildState::Faulted(FaultReason::TimedOut));
    io.write(4000, &pattern(512, 3)).unwrap();
    // Re-adding is refused while the given-up write is still out on the child.
    // The child still hangs: re-adding it fails when reading its metadata times out.
    let again = nx
        .add_child(ChildSpec::local(bb.clone()))
        .wait(WAIT)
        .unwrap();
    assert!(
        matches!(again, Err(shoal_replication::NexusError::Open { .. })),
        "{again:?}"
    );
    assert_eq!(nx.status().children.len(), 2);
    b.clear();
    r.run_until(Duration::from_millis(20), || false);
    nx.add_child(ChildSpec::local(bb.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    until_online(&r, &nx, &uri(&bb));
    let last = nx.child_status(&uri(&bb)).unwrap().last_rebuild.unwrap();
    assert!(!last.full);
    assert_eq!(
        last.segments_copied, 9,
        "segment 15 was written while b was away; segments 0-7 (the first 1 MiB region of the \
         write-intent bitmap) were written before its fault and not flushed since, so b may \
         have held them only in a cache it lost"
    );
    assert_eq!(child_sum(&r, &a, BLOCKS), child_sum(&r, &bb, BLOCKS));
}

#[test]
fn geometry_and_capabilities() {
    let r = reactor();
    let a = ram("a", BLOCKS);
    let small = ram("small", BLOCKS / 2);
    let e = Nexus::create(
        opts("nx", BLOCKS),
        vec![ChildSpec::local(a.clone()), ChildSpec::local(small)],
        &r.handle(),
    )
    .wait(WAIT)
    .unwrap();
    assert!(
        matches!(e, Err(shoal_replication::NexusError::Invalid(_))),
        "{e:?}"
    );
    let k4 = ram_bs("k4", BLOCKS, 4096);
    let e = Nexus::create(
        opts("nx", BLOCKS),
        vec![ChildSpec::local(a.clone()), ChildSpec::local(k4)],
        &r.handle(),
    )
    .wait(WAIT)
    .unwrap();
    assert!(e.is_err());
    let e = Nexus::create(
        opts("nx", 0),
        vec![ChildSpec::local(a.clone())],
        &r.handle(),
    )
    .wait(WAIT)
    .unwrap();
    assert!(e.is_err());
    let e = Nexus::create(
        opts("nx", BLOCKS),
        vec![ChildSpec::local(a.clone()), ChildSpec::local(a.clone())],
        &r.handle(),
    )
    .wait(WAIT)
    .unwrap();
    assert!(e.is_err(), "the same child twice");
    let nx = create(&r, opts("nx", BLOCKS), std::slice::from_ref(&a));
    assert!(nx.supports(IoType::Unmap) && nx.supports(IoType::WriteZeroes));
    let dup = nx
        .add_child(ChildSpec::local(a.clone()))
        .wait(WAIT)
        .unwrap();
    assert!(matches!(
        dup,
        Err(shoal_replication::NexusError::ChildExists(_))
    ));
    let last = nx.remove_child(&uri(&a)).wait(WAIT).unwrap();
    assert!(matches!(
        last,
        Err(shoal_replication::NexusError::LastHealthyChild(_))
    ));
    let last = nx.fault_child(&uri(&a)).wait(WAIT).unwrap();
    assert!(matches!(
        last,
        Err(shoal_replication::NexusError::LastHealthyChild(_))
    ));
    let none = nx
        .remove_child(&ChildUri::parse("bdev:///nope").unwrap())
        .wait(WAIT)
        .unwrap();
    assert!(matches!(
        none,
        Err(shoal_replication::NexusError::NoSuchChild(_))
    ));
    nx.destroy().wait(WAIT).unwrap().unwrap();
    let nxb: Arc<dyn Bdev> = nx.clone();
    assert!(nxb.info().is_closed());
    assert!(shoal_bdev::open_channel(&nxb).is_err());
    assert!(matches!(
        nx.destroy().wait(WAIT).unwrap(),
        Err(shoal_replication::NexusError::Destroyed)
    ));
}

#[test]
fn a_child_with_io_still_outstanding_cannot_come_back_yet() {
    let r = reactor();
    let a = ram("a", BLOCKS);
    let s = Stall::create("s", ram("sb", BLOCKS));
    let sb: Arc<dyn Bdev> = s.clone();
    let mut o = opts("nx", BLOCKS);
    o.io_timeout = Duration::from_millis(100);
    let nx = create(&r, o, &[a.clone(), sb.clone()]);
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    // The region's write-intent bit first: then the stalled write is the host's leg.
    io.write(16, &pattern(4096, 4)).unwrap();
    s.stalled.store(true, std::sync::atomic::Ordering::Release);
    io.write(16, &pattern(4096, 5)).unwrap();
    assert_eq!(
        nx.child_status(&uri(&sb)).unwrap().state,
        ChildState::Faulted(FaultReason::TimedOut)
    );
    assert_eq!(
        Stall::held(),
        1,
        "the given-up write is still out on the child"
    );
    s.stalled.store(false, std::sync::atomic::Ordering::Release);
    let again = nx
        .add_child(ChildSpec::local(sb.clone()))
        .wait(WAIT)
        .unwrap();
    assert!(
        matches!(again, Err(shoal_replication::NexusError::Busy { .. })),
        "{again:?}"
    );
    // The old write lands late, on top of nothing newer; then the child may come back.
    Stall::release();
    r.run_until(Duration::from_millis(20), || false);
    nx.add_child(ChildSpec::local(sb.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    until_online(&r, &nx, &uri(&sb));
    assert_eq!(child_sum(&r, &a, BLOCKS), child_sum(&r, &sb, BLOCKS));
    assert_eq!(io.read(16, 8).unwrap(), pattern(4096, 5));
}

#[test]
fn a_write_that_failed_on_a_child_is_acknowledged_after_the_fault_is_recorded() {
    // Both children apply writes 1 ms late; b fails them. The host's write may only succeed
    // once a's metadata says b is out of sync (a new generation): a crash right after the
    // acknowledgement must not let b pass for current.
    let r = reactor();
    let a_base = ram("a", BLOCKS);
    let a: Arc<dyn Bdev> = LateWrite::create("la", a_base.clone(), Duration::from_millis(1));
    let b_err = ErrorBdev::create(ram("b", BLOCKS), None).unwrap();
    let b: Arc<dyn Bdev> = LateWrite::create("lb", b_err.clone(), Duration::from_millis(1));
    let nx = create(&r, opts("nx", BLOCKS), &[a.clone(), b.clone()]);
    let gen0 = label_of(&r, &a_base).generation;
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    b_err.inject(Injection::failure(IoType::Write)).unwrap();
    io.write(0, &pattern(512, 1)).unwrap();
    let l = label_of(&r, &a_base);
    assert!(
        l.in_sync && l.generation > gen0,
        "acknowledged before the fault was recorded"
    );
}

/// Counts completions of I/Os submitted on another reactor; keeps the channel open.
struct Counted {
    _chan: shoal_bdev::IoChannel,
    ok: Arc<std::sync::atomic::AtomicU64>,
    failed: Arc<std::sync::atomic::AtomicU64>,
}

impl shoal_bdev::IoSink for Counted {
    fn io_done(&self, _tag: u64, _io: BdevIo, result: Result<(), shoal_bdev::BdevError>) {
        let c = if result.is_ok() {
            &self.ok
        } else {
            &self.failed
        };
        c.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

#[test]
fn faults_seen_on_another_reactor_reach_the_home_reactor() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let set = shoal_reactor::ReactorSet::start(
        &[0, 1],
        shoal_reactor::ReactorConfig::default(),
        Arc::new(|_: &shoal_reactor::Reactor| {}),
    )
    .unwrap();
    let (home, other) = (set.handles()[0].clone(), set.handles()[1].clone());
    let a = ram("a", BLOCKS);
    let b = ErrorBdev::create(ram("b", BLOCKS), None).unwrap();
    let bb: Arc<dyn Bdev> = b.clone();
    // This thread has no reactor: tickets block until the home reactor answers.
    let specs = vec![ChildSpec::local(a.clone()), ChildSpec::local(bb.clone())];
    let nx = Nexus::create(opts("nx", BLOCKS), specs, &home)
        .wait(WAIT)
        .unwrap()
        .unwrap();
    b.inject(Injection::failure(IoType::Write)).unwrap();
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let nxb: Arc<dyn Bdev> = nx.clone();
    let (o, f) = (ok.clone(), failed.clone());
    other
        .call(move || {
            let chan = shoal_bdev::open_channel(&nxb).unwrap();
            let sink = std::rc::Rc::new(Counted {
                _chan: chan,
                ok: o,
                failed: f,
            });
            for i in 0..64u64 {
                let io = BdevIo::write(i * 8, 8, sg(&pattern(4096, i)));
                sink._chan.submit(io, sink.clone(), i);
            }
        })
        .unwrap();
    let t0 = std::time::Instant::now();
    while ok.load(Ordering::Acquire) + failed.load(Ordering::Acquire) < 64 {
        assert!(
            t0.elapsed() < WAIT,
            "writes on the other reactor did not complete"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(failed.load(Ordering::Acquire), 0);
    let c = nx.child_status(&uri(&bb)).unwrap();
    assert_eq!(c.state, ChildState::Faulted(FaultReason::IoError));
    b.clear();
    nx.add_child(ChildSpec::local(bb.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    let t0 = std::time::Instant::now();
    while nx.child_status(&uri(&bb)).unwrap().state != ChildState::Online {
        assert!(t0.elapsed() < WAIT, "b did not come back");
        std::thread::sleep(Duration::from_millis(1));
    }
    nx.destroy().wait(WAIT).unwrap().unwrap();
    drop(nx);
    set.shutdown();
}

#[test]
fn a_child_that_alters_a_write_buffer_gets_its_own_copy() {
    // The children of a write share the host's buffers (no copy per child); a child that
    // writes into them (here an error bdev corrupting the data before its base sees it) must
    // get a private copy: the other child still writes the original bytes.
    let r = reactor();
    let a_base = ram("a", BLOCKS);
    let a = ErrorBdev::create(a_base.clone(), None).unwrap();
    let ab: Arc<dyn Bdev> = a.clone();
    let b = ram("b", BLOCKS);
    // `a` second: the nexus sends the other children's legs before the first child's, so `a`
    // alters the data before `b` writes it; without copy on write `b` would get the change.
    let nx = create(&r, opts("nx", BLOCKS), &[b.clone(), ab]);
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    a.inject(Injection::corrupt(IoType::Write, 0, 0xff))
        .unwrap();
    let data = pattern(8 * 512, 7);
    io.run(BdevIo::write(16, 8, sg(&data))).1.unwrap();
    let on_b = Io::new(&r, &b).read(meta(BS) + 16, 8).unwrap();
    assert_eq!(on_b, data, "the other child has the original data");
    let on_a = Io::new(&r, &a_base).read(meta(BS) + 16, 8).unwrap();
    assert_ne!(on_a, data, "the corrupting child wrote its own copy");
    assert_eq!(on_a[1..], data[1..]);
    assert_eq!(on_a[0], data[0] ^ 0xff);
}
