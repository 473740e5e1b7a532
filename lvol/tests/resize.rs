//! Resizing volumes (`bdev_lvol_resize`) with I/O open on them: thick growth allocates (and
//! is refused, changing nothing, without room), thin growth allocates nothing, shrinking frees
//! the clusters past the new end, read-only volumes and snapshots are refused, a clone grows
//! past its snapshot; every size and mapping comes back from the device.

// Test arithmetic on small constants (block counts, sizes).
#![allow(clippy::cast_possible_truncation)]

#[path = "../../bdev/tests/common/mod.rs"]
mod common;
mod lvs_common;

use std::sync::{Arc, Mutex};

use common::{Harness, pattern};
use lvs_common::{HomeReactor, pool_on, pool_on_malloc};
use shoal_bdev::error_bdev::{ErrorBdev, Injection};
use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::uring::UringBdev;
use shoal_bdev::{Bdev, BdevError, BdevEvent, IoType};
use shoal_lvol::format::record::ClearMethod;
use shoal_lvol::{LvolBdev, LvolError, LvolOptions, Lvs};

const MIB: u64 = 1 << 20;
/// 4 KiB blocks, 1 MiB clusters.
const CB: u64 = 256;

fn opts(name: &str, mib: u64, thin: bool) -> LvolOptions {
    LvolOptions {
        name: name.into(),
        size_bytes: mib * MIB,
        thin,
        clear: ClearMethod::Default,
    }
}

fn dynb(l: &Arc<LvolBdev>) -> Arc<dyn Bdev> {
    l.clone()
}

fn events(b: &Arc<dyn Bdev>) -> Arc<Mutex<Vec<BdevEvent>>> {
    let seen: Arc<Mutex<Vec<BdevEvent>>> = Arc::default();
    let s = seen.clone();
    b.info()
        .watch(Arc::new(move |_, ev| s.lock().unwrap().push(ev)));
    seen
}

#[test]
fn growth_thick_and_thin_with_io_open_survives_a_restart() {
    let dir = common::disk_tempdir();
    let path = common::make_file(dir.path(), "disk", 64 << 20);
    let home = HomeReactor::start();
    let base: Arc<dyn Bdev> = UringBdev::create("u0", &path, Some(4096), None).unwrap();
    let lvs = Lvs::create(base.clone(), "pool", MIB, Some(false), home.handle()).unwrap();
    let total = lvs.info().total_data_clusters;
    let thick = lvs.create_lvol(opts("thick", 8, false)).unwrap();
    let thin = lvs.create_lvol(opts("thin", 8, true)).unwrap();
    let (bk, bt) = (dynb(&thick), dynb(&thin));
    let (ek, et) = (events(&bk), events(&bt));
    let (hk, ht) = (Harness::new(&bk), Harness::new(&bt));
    let a = pattern(8192, 1);
    hk.write(8 * CB - 2, &a).unwrap();
    ht.write(8 * CB - 2, &a).unwrap();
    assert_eq!(lvs.info().free_clusters, total - 9);
    // Past the end: out of range before the growth.
    assert!(matches!(
        hk.write(8 * CB, &a),
        Err(BdevError::OutOfRange { .. })
    ));

    lvs.resize_lvol(thick.uuid(), 12 * MIB).unwrap();
    assert_eq!(bk.info().num_blocks(), 12 * CB);
    assert_eq!(
        *ek.lock().unwrap(),
        vec![BdevEvent::Resized {
            old: 8 * CB,
            new: 12 * CB
        }]
    );
    assert_eq!(thick.num_allocated_clusters(), 12, "thick growth allocates");
    assert_eq!(lvs.info().free_clusters, total - 13);
    // The same channel writes past the old end; the new clusters read zeroes elsewhere.
    let b = pattern(8192, 2);
    hk.write(8 * CB, &b).unwrap();
    hk.write(12 * CB - 2, &b).unwrap();
    assert_eq!(
        hk.read(8 * CB - 2, 4).unwrap(),
        [a.clone(), b.clone()].concat()
    );
    assert_eq!(hk.read(10 * CB, 1).unwrap(), vec![0; 4096]);
    assert!(matches!(
        hk.read(12 * CB, 1),
        Err(BdevError::OutOfRange { .. })
    ));

    // Thin growth (size_in_mib rounds up to whole clusters): nothing allocated.
    lvs.resize_lvol(thin.uuid(), 100 * MIB + 1).unwrap();
    assert_eq!(bt.info().num_blocks(), 101 * CB);
    assert_eq!(thin.num_allocated_clusters(), 1);
    assert_eq!(lvs.info().free_clusters, total - 13);
    ht.write(100 * CB + 7, &b).unwrap();
    assert_eq!(thin.num_allocated_clusters(), 2);
    assert_eq!(et.lock().unwrap().len(), 1);
    // The same size again: nothing happens, nobody is told.
    lvs.resize_lvol(thin.uuid(), 101 * MIB).unwrap();
    assert_eq!(et.lock().unwrap().len(), 1);

    let (uk, ut) = (thick.uuid(), thin.uuid());
    drop((hk, ht));
    lvs.close().unwrap();
    drop((lvs, thick, thin, bk, bt, base));
    let base: Arc<dyn Bdev> = UringBdev::create("u0", &path, Some(4096), None).unwrap();
    let lvs = Lvs::open(base, home.handle()).unwrap();
    assert_eq!(lvs.info().free_clusters, total - 14);
    let (k, t) = (
        lvs.lvol(&uk.to_string()).unwrap(),
        lvs.lvol(&ut.to_string()).unwrap(),
    );
    let (bk, bt) = (dynb(&k), dynb(&t));
    assert_eq!(
        (bk.info().num_blocks(), bt.info().num_blocks()),
        (12 * CB, 101 * CB)
    );
    assert_eq!(k.num_allocated_clusters(), 12);
    let hk = Harness::new(&bk);
    assert_eq!(
        hk.read(8 * CB - 2, 4).unwrap(),
        [a.clone(), b.clone()].concat()
    );
    assert_eq!(hk.read(12 * CB - 2, 2).unwrap(), b);
    let ht = Harness::new(&bt);
    assert_eq!(ht.read(8 * CB - 2, 2).unwrap(), a);
    assert_eq!(ht.read(100 * CB + 7, 2).unwrap(), b);
}

#[test]
fn thick_growth_without_room_is_refused_and_changes_nothing() {
    let p = pool_on_malloc(4096, 16 * MIB, MIB);
    let total = p.lvs.info().total_data_clusters;
    let v = p.lvs.create_lvol(opts("v", 4, false)).unwrap();
    let bv = dynb(&v);
    let ev = events(&bv);
    let free = p.lvs.info().free_clusters;
    assert_eq!(free, total - 4);
    let e = p
        .lvs
        .resize_lvol(v.uuid(), (4 + free + 1) * MIB)
        .unwrap_err();
    assert!(matches!(e, LvolError::NoSpace(_)), "{e}");
    assert!(e.to_string().contains("free"), "{e}");
    assert_eq!(p.lvs.info().free_clusters, free);
    assert_eq!(bv.info().num_blocks(), 4 * CB);
    assert_eq!(v.num_allocated_clusters(), 4);
    assert!(ev.lock().unwrap().is_empty());
    // Exactly the room there is: fits.
    p.lvs.resize_lvol(v.uuid(), (4 + free) * MIB).unwrap();
    assert_eq!(p.lvs.info().free_clusters, 0);
    // Sizes that cannot be.
    assert!(matches!(
        p.lvs.resize_lvol(v.uuid(), 0),
        Err(LvolError::Invalid(_))
    ));
    assert!(matches!(
        p.lvs.resize_lvol(v.uuid(), u64::MAX),
        Err(LvolError::Invalid(_))
    ));
    assert!(matches!(
        p.lvs.resize_lvol(uuid::Uuid::new_v4(), MIB),
        Err(LvolError::NotFound(_))
    ));
}

#[test]
fn shrinking_frees_the_clusters_past_the_end() {
    let p = pool_on_malloc(4096, 32 * MIB, MIB);
    let total = p.lvs.info().total_data_clusters;
    let thick = p.lvs.create_lvol(opts("thick", 8, false)).unwrap();
    let thin = p.lvs.create_lvol(opts("thin", 8, true)).unwrap();
    let (bk, bt) = (dynb(&thick), dynb(&thin));
    let (hk, ht) = (Harness::new(&bk), Harness::new(&bt));
    let a = pattern(4096, 3);
    for c in [0, 3, 5, 7] {
        ht.write(c * CB, &a).unwrap();
        hk.write(c * CB, &a).unwrap();
    }
    assert_eq!(p.lvs.info().free_clusters, total - 12);
    p.lvs.resize_lvol(thick.uuid(), 4 * MIB).unwrap();
    p.lvs.resize_lvol(thin.uuid(), 4 * MIB).unwrap();
    assert_eq!(thick.num_allocated_clusters(), 4);
    assert_eq!(thin.num_allocated_clusters(), 2);
    assert_eq!(bt.info().num_blocks(), 4 * CB);
    assert!(matches!(
        ht.read(5 * CB, 1),
        Err(BdevError::OutOfRange { .. })
    ));
    assert_eq!(hk.read(3 * CB, 1).unwrap(), a);
    // The freed clusters come back once the record is durable and no I/O can use them.
    let back = (0..400).any(|_| {
        hk.run_for(std::time::Duration::from_millis(5));
        p.lvs.info().free_clusters == total - 6
    });
    assert!(back, "free: {}", p.lvs.info().free_clusters);
    // Grown again, the thin volume's old clusters are gone: zeroes, not the old data.
    p.lvs.resize_lvol(thin.uuid(), 8 * MIB).unwrap();
    assert_eq!(ht.read(5 * CB, 1).unwrap(), vec![0; 4096]);
    assert_eq!(ht.read(3 * CB, 1).unwrap(), a);
}

#[test]
fn snapshots_and_read_only_volumes_are_not_resized_but_clones_are() {
    let p = pool_on_malloc(4096, 32 * MIB, MIB);
    let v = p.lvs.create_lvol(opts("v", 4, true)).unwrap();
    let bv = dynb(&v);
    let a = pattern(4096, 4);
    Harness::new(&bv).write(3 * CB, &a).unwrap();
    let s = p.lvs.snapshot(v.uuid(), "s").unwrap();
    let e = p.lvs.resize_lvol(s.uuid(), 8 * MIB).unwrap_err();
    assert!(matches!(e, LvolError::ReadOnly(_)), "{e}");
    assert_eq!(dynb(&s).info().num_blocks(), 4 * CB);
    let c = p.lvs.clone_lvol(s.uuid(), "c").unwrap();
    p.lvs.resize_lvol(c.uuid(), 6 * MIB).unwrap();
    let hc = Harness::new(&dynb(&c));
    assert_eq!(hc.read(3 * CB, 1).unwrap(), a, "the snapshot's data shows");
    assert_eq!(
        hc.read(5 * CB, 1).unwrap(),
        vec![0; 4096],
        "past the snapshot: zeroes"
    );
    hc.write(5 * CB, &a).unwrap();
    assert_eq!(hc.read(5 * CB, 1).unwrap(), a);
    let r = p.lvs.create_lvol(opts("r", 4, false)).unwrap();
    p.lvs.set_read_only(r.uuid()).unwrap();
    assert!(matches!(
        p.lvs.resize_lvol(r.uuid(), 8 * MIB),
        Err(LvolError::ReadOnly(_))
    ));
}

/// A volume being resized cannot be made read-only meanwhile (the resize checked that it was
/// writable when it began): refused as busy, and allowed once the resize is done. The growth
/// is held at the device while it zeroes its clusters.
#[test]
fn a_volume_being_resized_is_not_made_read_only() {
    let ram: Arc<dyn Bdev> = MallocBdev::create("ram", None, 32 * MIB / 4096, 4096).unwrap();
    let err = ErrorBdev::create(ram, None).unwrap();
    let p = pool_on(err.clone(), MIB);
    let v = p.lvs.create_lvol(opts("v", 2, false)).unwrap();
    let rule = err
        .inject(Injection::pending(IoType::WriteZeroes).count(1))
        .unwrap();
    let (lvs, vu) = (p.lvs.clone(), v.uuid());
    let grow = std::thread::spawn(move || lvs.resize_lvol(vu, 4 * MIB));
    let t0 = std::time::Instant::now();
    while err.held() == 0 {
        assert!(t0.elapsed() < common::WAIT, "the growth zeroes nothing");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let e = p.lvs.set_read_only(vu).unwrap_err();
    assert!(matches!(e, LvolError::Busy(_)), "{e}");
    assert!(!v.is_read_only());
    err.remove(rule);
    err.resume_pending();
    grow.join().unwrap().unwrap();
    assert_eq!(dynb(&v).info().num_blocks(), 4 * CB);
    assert_eq!(v.num_allocated_clusters(), 4);
    p.lvs.set_read_only(vu).unwrap();
    assert!(v.is_read_only());
}

/// `grow_lvol` (the RPC's growth, made without its claims lock) never shrinks: a volume grown
/// past the size asked for meanwhile is refused as busy and keeps its size.
#[test]
fn grow_lvol_refuses_to_shrink() {
    let p = pool_on_malloc(4096, 32 * MIB, MIB);
    let v = p.lvs.create_lvol(opts("v", 4, true)).unwrap();
    p.lvs.grow_lvol(v.uuid(), 8 * MIB).unwrap();
    p.lvs.grow_lvol(v.uuid(), 8 * MIB).unwrap();
    let e = p.lvs.grow_lvol(v.uuid(), 6 * MIB).unwrap_err();
    assert!(matches!(e, LvolError::Busy(_)), "{e}");
    assert_eq!(dynb(&v).info().num_blocks(), 8 * CB);
    p.lvs.resize_lvol(v.uuid(), 6 * MIB).unwrap();
    assert_eq!(dynb(&v).info().num_blocks(), 6 * CB);
}

/// Reads through ancestors stop at the first one too short for the cluster (SPDK's blob
/// backing device reads zeroes past its blob's end): a volume with data at cluster 8,
/// snapshotted (S0), shrunk to 5, snapshotted again (S1) and grown back to 10 reads zeroes
/// at cluster 8, not S0's data; a partial write there fills the rest of the cluster with
/// zeroes too.
#[test]
fn a_grown_volume_does_not_see_past_a_shorter_ancestor() {
    let p = pool_on_malloc(4096, 32 * MIB, MIB);
    let v = p.lvs.create_lvol(opts("v", 10, true)).unwrap();
    let bv = dynb(&v);
    let h = Harness::new(&bv);
    let a = pattern(4096, 9);
    h.write(8 * CB, &a).unwrap();
    h.write(8 * CB + 1, &a).unwrap();
    h.write(2 * CB, &a).unwrap();
    let s0 = p.lvs.snapshot(v.uuid(), "s0").unwrap();
    p.lvs.resize_lvol(v.uuid(), 5 * MIB).unwrap();
    let s1 = p.lvs.snapshot(v.uuid(), "s1").unwrap();
    p.lvs.resize_lvol(v.uuid(), 10 * MIB).unwrap();
    assert_eq!(bv.info().num_blocks(), 10 * CB);
    assert_eq!(h.read(2 * CB, 1).unwrap(), a, "below both ends: S0's data");
    assert_eq!(h.read(8 * CB, 1).unwrap(), vec![0; 4096], "past S1's end");
    // A write into that cluster copies nothing of S0 into the rest of it.
    h.write(8 * CB + 5, &a).unwrap();
    assert_eq!(h.read(8 * CB + 5, 1).unwrap(), a);
    assert_eq!(h.read(8 * CB, 2).unwrap(), vec![0; 8192]);
    // S0 itself still has its data.
    let h0 = Harness::new(&dynb(&s0));
    assert_eq!(h0.read(8 * CB, 1).unwrap(), a);
    drop(s1);
}
