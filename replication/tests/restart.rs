//! Re-creating a nexus from its children's metadata: current replicas come back online, stale
//! ones are rebuilt before they serve reads, a crash resynchronises, and a nexus is never made
//! from replicas none of which is known to be current.

mod common;

use std::sync::Arc;

use common::*;
use shoal_bdev::Bdev;
use shoal_replication::{ChildSpec, ChildState, Nexus, NexusError, NexusState};
use uuid::Uuid;

const BLOCKS: u64 = 16 << 11; // 16 MiB

fn write_some(r: &shoal_reactor::Reactor, nx: &Arc<Nexus>, seed: u64) {
    let b: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(r, &b);
    for i in 0..32u64 {
        io.write(i * 977, &pattern(4096, seed + i)).unwrap();
    }
}

fn check_some(r: &shoal_reactor::Reactor, nx: &Arc<Nexus>, seed: u64) {
    let b: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(r, &b);
    for i in 0..32u64 {
        assert_eq!(
            io.read(i * 977, 8).unwrap(),
            pattern(4096, seed + i),
            "write {i}"
        );
    }
}

#[test]
fn data_and_sync_state_come_back_after_destroy() {
    let r = reactor();
    let (a, b) = (ram("a", BLOCKS), ram("b", BLOCKS));
    let nx = create(&r, opts("nx", BLOCKS), &[a.clone(), b.clone()]);
    let uuid = nx.status().uuid;
    write_some(&r, &nx, 10);
    nx.destroy().wait(WAIT).unwrap().unwrap();
    let generation = nx.status().generation;
    drop(nx);
    // Same children, no uuid given: the volume's identity comes from the metadata.
    let nx = create(&r, opts("nx", BLOCKS), &[a.clone(), b.clone()]);
    let st = nx.status();
    assert_eq!(st.uuid, uuid);
    assert_eq!(st.state, NexusState::Online);
    assert!(st.generation > generation);
    assert!(
        st.children
            .iter()
            .all(|c| c.state == ChildState::Online && c.last_rebuild.is_none())
    );
    check_some(&r, &nx, 10);
    // Children listed in the other order, with the uuid given: the same.
    nx.destroy().wait(WAIT).unwrap().unwrap();
    let mut o = opts("nx", BLOCKS);
    o.uuid = Some(uuid);
    let nx = create(&r, o, &[b.clone(), a.clone()]);
    assert_eq!(nx.status().state, NexusState::Online);
    check_some(&r, &nx, 10);
    nx.destroy().wait(WAIT).unwrap().unwrap();
    // Another volume's uuid, or another size, is refused without touching the children.
    let mut o = opts("nx", BLOCKS);
    o.uuid = Some(Uuid::new_v4());
    let e = Nexus::create(o, vec![ChildSpec::local(a.clone())], &r.handle())
        .wait(WAIT)
        .unwrap();
    assert!(matches!(e, Err(NexusError::ForeignChild { .. })), "{e:?}");
    let e = Nexus::create(
        opts("nx", BLOCKS / 2),
        vec![ChildSpec::local(a.clone())],
        &r.handle(),
    )
    .wait(WAIT)
    .unwrap();
    assert!(matches!(e, Err(NexusError::Invalid(_))), "{e:?}");
}

#[test]
fn a_stale_child_is_rebuilt_before_it_serves_reads() {
    let r = reactor();
    let (a, b) = (ram("a", BLOCKS), ram("b", BLOCKS));
    let nx = create(&r, opts("nx", BLOCKS), &[a.clone(), b.clone()]);
    write_some(&r, &nx, 1);
    nx.fault_child(&uri(&b)).wait(WAIT).unwrap().unwrap();
    write_some(&r, &nx, 2);
    nx.destroy().wait(WAIT).unwrap().unwrap();
    drop(nx);
    // b's metadata is a generation behind: it comes back rebuilding (in full).
    let mut o = opts("nx", BLOCKS);
    o.segment_bytes = 1 << 20;
    let specs = vec![ChildSpec::local(a.clone()), ChildSpec::local(b.clone())];
    let nx = Nexus::create(o, specs, &r.handle())
        .wait(WAIT)
        .unwrap()
        .unwrap();
    nx.set_rebuild_rate(4);
    let st = nx.child_status(&uri(&b)).unwrap();
    assert_eq!(st.state, ChildState::Rebuilding);
    assert_eq!(nx.child_status(&uri(&a)).unwrap().state, ChildState::Online);
    let reads_b = b.info().iostat().num_read_ops;
    check_some(&r, &nx, 2);
    check_some(&r, &nx, 2);
    assert_eq!(
        b.info().iostat().num_read_ops,
        reads_b,
        "a rebuilding child serves no reads"
    );
    nx.set_rebuild_rate(0);
    until_online(&r, &nx, &uri(&b));
    assert!(
        nx.child_status(&uri(&b))
            .unwrap()
            .last_rebuild
            .unwrap()
            .full
    );
    assert_eq!(child_sum(&r, &a, BLOCKS), child_sum(&r, &b, BLOCKS));
    check_some(&r, &nx, 2);
}

#[test]
fn no_current_child_is_an_error() {
    let r = reactor();
    let (a, b) = (ram("a", BLOCKS), ram("b", BLOCKS));
    let nx = create(&r, opts("nx", BLOCKS), std::slice::from_ref(&a));
    write_some(&r, &nx, 5);
    nx.set_rebuild_rate(1);
    nx.add_child(ChildSpec::local(b.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    nx.destroy().wait(WAIT).unwrap().unwrap();
    drop(nx);
    // b never finished its rebuild: on its own it is not known to be current.
    let e = Nexus::create(
        opts("nx", BLOCKS),
        vec![ChildSpec::local(b.clone())],
        &r.handle(),
    )
    .wait(WAIT)
    .unwrap();
    match e {
        Err(NexusError::NoCurrentChild(m)) => {
            assert!(m.contains("not in sync") && m.contains("bdev:///b"), "{m}")
        }
        other => panic!("expected NoCurrentChild, got {other:?}"),
    }
    // A blank child next to it does not make it current either.
    let c = ram("c", BLOCKS);
    let e = Nexus::create(
        opts("nx", BLOCKS),
        vec![ChildSpec::local(b.clone()), ChildSpec::local(c.clone())],
        &r.handle(),
    )
    .wait(WAIT)
    .unwrap();
    assert!(matches!(e, Err(NexusError::NoCurrentChild(_))), "{e:?}");
    // With a it works, and b is rebuilt.
    let nx = create(&r, opts("nx", BLOCKS), &[b.clone(), a.clone()]);
    assert_eq!(
        nx.child_status(&uri(&b)).unwrap().state,
        ChildState::Rebuilding
    );
    until_online(&r, &nx, &uri(&b));
    check_some(&r, &nx, 5);
    assert_eq!(child_sum(&r, &a, BLOCKS), child_sum(&r, &b, BLOCKS));
}

#[test]
fn after_a_crash_the_replicas_are_resynchronised() {
    let (a, b) = (ram("a", BLOCKS), ram("b", BLOCKS));
    let (a2, b2) = (a.clone(), b.clone());
    // The first life of the nexus runs on its own reactor thread, which ends without a
    // destroy: a crash as far as the children's metadata is concerned.
    std::thread::spawn(move || {
        let r = reactor();
        let nx = create(&r, opts("nx", BLOCKS), &[a2, b2]);
        write_some(&r, &nx, 9);
    })
    .join()
    .unwrap();
    let r = reactor();
    let nx = create(&r, opts("nx", BLOCKS), &[a.clone(), b.clone()]);
    let st = nx.status();
    assert_eq!(st.state, NexusState::Degraded, "{st:?}");
    assert_eq!(st.children[0].state, ChildState::Online);
    assert_eq!(st.children[1].state, ChildState::Rebuilding);
    check_some(&r, &nx, 9);
    until_online(&r, &nx, &uri(&b));
    assert_eq!(child_sum(&r, &a, BLOCKS), child_sum(&r, &b, BLOCKS));
    // After an orderly destroy, the next start needs no resync.
    nx.destroy().wait(WAIT).unwrap().unwrap();
    let nx = create(&r, opts("nx", BLOCKS), &[a.clone(), b.clone()]);
    assert_eq!(nx.status().state, NexusState::Online);
}

#[test]
fn a_new_child_among_current_ones_is_rebuilt_in_full() {
    let r = reactor();
    let a = ram("a", BLOCKS);
    let nx = create(&r, opts("nx", BLOCKS), std::slice::from_ref(&a));
    write_some(&r, &nx, 3);
    nx.destroy().wait(WAIT).unwrap().unwrap();
    let c = ram("c", BLOCKS);
    let nx = create(&r, opts("nx", BLOCKS), &[a.clone(), c.clone()]);
    assert_eq!(
        nx.child_status(&uri(&c)).unwrap().state,
        ChildState::Rebuilding
    );
    until_online(&r, &nx, &uri(&c));
    assert!(
        nx.child_status(&uri(&c))
            .unwrap()
            .last_rebuild
            .unwrap()
            .full
    );
    // A child of another volume cannot be added.
    let other = ram("o", BLOCKS);
    let nx2 = create(&r, opts("nx2", BLOCKS), std::slice::from_ref(&other));
    nx2.destroy().wait(WAIT).unwrap().unwrap();
    let e = nx.add_child(ChildSpec::local(other)).wait(WAIT).unwrap();
    assert!(matches!(e, Err(NexusError::ForeignChild { .. })), "{e:?}");
}

#[test]
fn a_label_with_an_impossible_generation_is_refused() {
    let r = reactor();
    let a = ram("a", BLOCKS);
    let nx = create(&r, opts("nx", BLOCKS), std::slice::from_ref(&a));
    nx.destroy().wait(WAIT).unwrap().unwrap();
    // One below the top: it could be advanced once, and then never again.
    set_generation(&r, &a, u64::MAX - 1);
    let e = Nexus::create(
        opts("nx", BLOCKS),
        vec![ChildSpec::local(a.clone())],
        &r.handle(),
    )
    .wait(WAIT)
    .unwrap();
    assert!(
        matches!(&e, Err(NexusError::Open { reason, .. }) if reason.contains("generation")),
        "{:?}",
        e.map(|_| ())
    );
}

#[test]
fn a_child_with_an_impossible_generation_is_not_added() {
    let r = reactor();
    let (a, b) = (ram("a", BLOCKS), ram("b", BLOCKS));
    let nx = create(&r, opts("nx", BLOCKS), &[a.clone(), b.clone()]);
    nx.destroy().wait(WAIT).unwrap().unwrap();
    set_generation(&r, &b, shoal_replication::label::MAX_GENERATION + 10);
    let nx = create(&r, opts("nx", BLOCKS), std::slice::from_ref(&a));
    let e = nx
        .add_child(ChildSpec::local(b.clone()))
        .wait(WAIT)
        .unwrap();
    assert!(
        matches!(&e, Err(NexusError::Open { reason, .. }) if reason.contains("generation")),
        "{e:?}"
    );
    // The nexus did not take the generation over: it restarts from a.
    nx.destroy().wait(WAIT).unwrap().unwrap();
    create(&r, opts("nx", BLOCKS), std::slice::from_ref(&a));
}

#[test]
fn a_child_at_the_highest_generation_taken_over_still_restarts() {
    let r = reactor();
    let (a, b) = (ram("a", BLOCKS), ram("b", BLOCKS));
    let nx = create(&r, opts("nx", BLOCKS), &[a.clone(), b.clone()]);
    nx.destroy().wait(WAIT).unwrap().unwrap();
    set_generation(&r, &b, shoal_replication::label::MAX_GENERATION);
    let nx = create(&r, opts("nx", BLOCKS), std::slice::from_ref(&a));
    nx.add_child(ChildSpec::local(b.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    until_online(&r, &nx, &uri(&b));
    // The nexus wrote generations past the bound it takes over; a restart takes them, and
    // its own child, faulted, comes back.
    nx.destroy().wait(WAIT).unwrap().unwrap();
    let nx = create(&r, opts("nx", BLOCKS), &[a.clone(), b.clone()]);
    assert_eq!(nx.status().state, NexusState::Online);
    nx.fault_child(&uri(&b)).wait(WAIT).unwrap().unwrap();
    nx.add_child(ChildSpec::local(b.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    until_online(&r, &nx, &uri(&b));
}

/// Rewrites the newest label of `b` with generation `g` (and a valid checksum).
fn set_generation(r: &shoal_reactor::Reactor, b: &Arc<dyn Bdev>, g: u64) {
    let raw = Io::new(r, b);
    let region = raw.read(0, 16).unwrap();
    let mut l = shoal_replication::Label::newest(&region).unwrap();
    l.generation = g;
    let at = u64::try_from(l.slot() * shoal_replication::label::SLOT_BYTES).unwrap() / 512;
    raw.write(at, &l.encode()).unwrap();
}
