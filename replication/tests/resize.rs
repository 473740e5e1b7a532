//! Growing a nexus online (`Nexus::resize`): refused past the smallest online child, for a
//! smaller size, and while a child is rebuilt; then writes past the old end reach every
//! child, a child faulted afterwards and added back is rebuilt past the end of its
//! dirty-segment map (made at the old size), a new child is rebuilt at the new size, and a
//! restart takes labels of the new size (and refuses a smaller size).
#![allow(missing_docs, clippy::cast_possible_truncation)]

mod common;

use std::sync::Arc;

use common::*;
use shoal_bdev::Bdev;
use shoal_bdev::malloc::MallocBdev;
use shoal_replication::{ChildSpec, ChildState, Nexus, NexusErrorKind};

const OLD: u64 = 2048;
const NEW: u64 = 8192;

/// A RAM child with room for `NEW` blocks of data, `OLD` of them in use.
fn child(name: &str) -> (Arc<MallocBdev>, Arc<dyn Bdev>) {
    let m = MallocBdev::create(name, None, NEW + meta(BS), BS).unwrap();
    m.resize(OLD + meta(BS)).unwrap();
    let b: Arc<dyn Bdev> = m.clone();
    (m, b)
}

fn grow(nx: &Nexus, blocks: u64) -> Result<(), NexusErrorKind> {
    nx.resize(blocks * u64::from(BS))
        .wait(WAIT)
        .unwrap()
        .map_err(|e| e.kind())
}

#[test]
fn nexus_grows_online() {
    let r = reactor();
    let (ma, a) = child("GrowA");
    let (mb, b) = child("GrowB");
    let nx = create(&r, opts("grow0", OLD), &[a.clone(), b.clone()]);
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    let gen0 = nx.status().generation;

    // Refused: a child too small, a smaller size, not a whole block. Nothing changes.
    ma.resize(NEW + meta(BS)).unwrap();
    assert_eq!(grow(&nx, NEW), Err(NexusErrorKind::Invalid));
    assert_eq!(grow(&nx, OLD - 8), Err(NexusErrorKind::Invalid));
    assert!(
        nx.resize(NEW * u64::from(BS) + 1)
            .wait(WAIT)
            .unwrap()
            .is_err()
    );
    assert_eq!(nx.info().num_blocks(), OLD);
    assert!(io.write(OLD, &pattern(512, 1)).is_err(), "past the old end");

    // Grown: the labels move to a new generation, then the bdev.
    mb.resize(NEW + meta(BS)).unwrap();
    grow(&nx, NEW).unwrap();
    assert_eq!(nx.info().num_blocks(), NEW);
    assert_eq!(nx.status().size_bytes, NEW * u64::from(BS));
    assert!(nx.status().generation > gen0);
    grow(&nx, NEW).unwrap(); // the same size: nothing to do
    let tail = pattern(64 * 512, 2);
    io.write(NEW - 64, &tail).unwrap();
    io.write(OLD - 4, &pattern(8 * 512, 3)).unwrap(); // across the old end
    assert_eq!(io.read(NEW - 64, 64).unwrap(), tail);
    assert_eq!(child_sum(&r, &a, NEW), child_sum(&r, &b, NEW));

    // A child faulted after the growth misses writes past the old end; added back, its
    // rebuild (dirty map of the old size) copies them.
    nx.fault_child(&uri(&b)).wait(WAIT).unwrap().unwrap();
    io.write(NEW - 300, &pattern(100 * 512, 4)).unwrap();
    io.write(5000, &pattern(16 * 512, 5)).unwrap();
    assert_ne!(child_sum(&r, &a, NEW), child_sum(&r, &b, NEW));
    nx.add_child(ChildSpec::local(b.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    until_online(&r, &nx, &uri(&b));
    assert_eq!(child_sum(&r, &a, NEW), child_sum(&r, &b, NEW));

    // A child too small for the grown nexus cannot join; one of the new size is rebuilt.
    let small = ram("GrowSmall", OLD);
    assert!(
        nx.add_child(ChildSpec::local(small))
            .wait(WAIT)
            .unwrap()
            .is_err()
    );
    let (mc, c) = child("GrowC");
    mc.resize(NEW + meta(BS)).unwrap();
    nx.add_child(ChildSpec::local(c.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    // While it is rebuilt the nexus does not grow (asked again once it is in sync).
    let rebuilding = nx
        .child_status(&uri(&c))
        .is_some_and(|s| s.state == ChildState::Rebuilding);
    if rebuilding {
        assert_eq!(grow(&nx, NEW + 8), Err(NexusErrorKind::State));
    }
    until_online(&r, &nx, &uri(&c));
    assert_eq!(child_sum(&r, &a, NEW), child_sum(&r, &c, NEW));

    // A restart: the labels say the new size; a smaller size is refused, the new one taken.
    drop(io);
    drop(nxb);
    nx.destroy().wait(WAIT).unwrap().unwrap();
    drop(nx);
    let specs = || vec![ChildSpec::local(a.clone()), ChildSpec::local(b.clone())];
    assert!(
        Nexus::create(opts("grow1", OLD), specs(), &r.handle())
            .wait(WAIT)
            .unwrap()
            .is_err(),
        "a size below the labels' would cut the volume short"
    );
    let nx = Nexus::create(opts("grow1", NEW), specs(), &r.handle())
        .wait(WAIT)
        .unwrap()
        .unwrap();
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    assert_eq!(io.read(NEW - 64, 64).unwrap(), tail);
    drop(io);
    nx.destroy().wait(WAIT).unwrap().unwrap();
}
