//! Snapshots and clones end to end: a snapshot stays frozen while its origin is written, clones
//! share the snapshot's clusters until they write, deleting a snapshot follows SPDK's rules
//! (one clone: merged into it; more: refused), inflate and decouple keep the data and drop the
//! parent, writes in flight during a snapshot land wholly before or after it, and all of it
//! comes back from the device.

// Test arithmetic on small constants (block counts, sizes).
#![allow(clippy::cast_possible_truncation)]

#[path = "../../bdev/tests/common/mod.rs"]
mod common;
mod lvs_common;

use std::sync::Arc;

use common::{Harness, pattern, sg};
use lvs_common::{HomeReactor, pool_on_malloc};
use shoal_bdev::uring::UringBdev;
use shoal_bdev::{Bdev, BdevError, BdevIo};
use shoal_lvol::format::record::ClearMethod;
use shoal_lvol::{LvolBdev, LvolError, LvolOptions, Lvs};

const BS: u32 = 512;
/// 64 KiB clusters of 512-byte blocks.
const CB: u64 = 128;

fn opts(name: &str, clusters: u64, thin: bool) -> LvolOptions {
    LvolOptions {
        name: name.into(),
        size_bytes: clusters * CB * u64::from(BS),
        thin,
        clear: ClearMethod::Default,
    }
}

fn dynb(l: &Arc<LvolBdev>) -> Arc<dyn Bdev> {
    l.clone()
}

fn all(h: &Harness, clusters: u64) -> Vec<u8> {
    h.read(0, clusters * CB).unwrap()
}

#[test]
fn a_snapshot_stays_frozen_while_its_origin_is_written() {
    let p = pool_on_malloc(BS, 16 << 20, 64 << 10);
    let total = p.lvs.info().total_data_clusters;
    let v = p.lvs.create_lvol(opts("v", 8, false)).unwrap();
    let hv = Harness::new(&dynb(&v));
    let a = pattern((8 * CB * u64::from(BS)) as usize, 1);
    hv.write(0, &a).unwrap();
    let s1 = p.lvs.snapshot(v.uuid(), "s1").unwrap();
    assert!(s1.is_snapshot() && s1.is_read_only() && s1.is_thin());
    assert_eq!(v.parent_uuid(), Some(s1.uuid()));
    assert!(v.is_thin(), "the origin becomes thin, as in SPDK");
    assert_eq!(
        s1.num_allocated_clusters(),
        8,
        "the snapshot takes the clusters"
    );
    assert_eq!(v.num_allocated_clusters(), 0);
    assert_eq!(p.lvs.info().free_clusters, total - 8);
    assert_eq!(
        all(&hv, 8),
        a,
        "the origin reads the same after the snapshot"
    );
    // The origin is written: part of cluster 1, all of cluster 3, across clusters 5 and 6.
    let b = pattern(1024, 2);
    hv.write(CB + 7, &b).unwrap();
    hv.write(3 * CB, &pattern((CB * u64::from(BS)) as usize, 3))
        .unwrap();
    hv.write(6 * CB - 1, &b).unwrap();
    assert_eq!(v.num_allocated_clusters(), 4);
    assert_eq!(p.lvs.info().free_clusters, total - 12);
    let hs = Harness::new(&dynb(&s1));
    assert_eq!(all(&hs, 8), a, "the snapshot is frozen");
    assert!(matches!(hs.write(0, &b), Err(BdevError::ReadOnly)));
    let mut want = a.clone();
    let at = |blk: u64| (blk * u64::from(BS)) as usize;
    want[at(CB + 7)..at(CB + 9)].copy_from_slice(&b);
    want[at(3 * CB)..at(4 * CB)].copy_from_slice(&pattern((CB * u64::from(BS)) as usize, 3));
    want[at(6 * CB - 1)..at(6 * CB + 1)].copy_from_slice(&b);
    assert_eq!(all(&hv, 8), want);
    // A second snapshot holds only what changed; the chain reads through both.
    let s2 = p.lvs.snapshot(v.uuid(), "s2").unwrap();
    assert_eq!(s2.parent_uuid(), Some(s1.uuid()));
    assert_eq!(s2.num_allocated_clusters(), 4);
    hv.run(BdevIo::write_zeroes(0, 8 * CB)).1.unwrap();
    assert_eq!(all(&hv, 8), vec![0; a.len()]);
    assert_eq!(all(&Harness::new(&dynb(&s2)), 8), want);
    assert_eq!(all(&hs, 8), a);
    // SPDK's refusals: a snapshot of a read-only volume, a clone of a writable one, names.
    assert!(matches!(
        p.lvs.snapshot(s1.uuid(), "x"),
        Err(LvolError::Invalid(_))
    ));
    assert!(matches!(
        p.lvs.clone_lvol(v.uuid(), "x"),
        Err(LvolError::Invalid(_))
    ));
    assert!(matches!(
        p.lvs.snapshot(v.uuid(), "s1"),
        Err(LvolError::Exists(_))
    ));
    assert!(matches!(
        p.lvs.clone_lvol(s1.uuid(), "a/b"),
        Err(LvolError::Invalid(_))
    ));
}

#[test]
fn clones_share_unchanged_clusters_and_diverge_on_write() {
    let p = pool_on_malloc(BS, 16 << 20, 64 << 10);
    let total = p.lvs.info().total_data_clusters;
    let v = p.lvs.create_lvol(opts("v", 4, true)).unwrap();
    let hv = Harness::new(&dynb(&v));
    let a = pattern((4 * CB * u64::from(BS)) as usize, 4);
    hv.write(0, &a).unwrap();
    let s = p.lvs.snapshot(v.uuid(), "s").unwrap();
    let c1 = p.lvs.clone_lvol(s.uuid(), "c1").unwrap();
    let c2 = p.lvs.clone_lvol(s.uuid(), "c2").unwrap();
    assert_eq!(c1.parent_uuid(), Some(s.uuid()));
    assert!(c1.is_thin() && !c1.is_read_only() && !c1.is_snapshot());
    let mut names = p.lvs.clones_of(s.uuid());
    names.sort();
    assert_eq!(names, ["c1", "c2", "v"]);
    let (h1, h2) = (Harness::new(&dynb(&c1)), Harness::new(&dynb(&c2)));
    assert_eq!(all(&h1, 4), a, "a clone reads its snapshot");
    assert_eq!(c1.num_allocated_clusters(), 0, "and owns nothing");
    assert_eq!(p.lvs.info().free_clusters, total - 4);
    let b = pattern(512, 5);
    h1.write(CB + 1, &b).unwrap();
    assert_eq!(c1.num_allocated_clusters(), 1);
    assert_eq!(p.lvs.info().free_clusters, total - 5);
    let mut want = a.clone();
    want[((CB + 1) * u64::from(BS)) as usize..((CB + 2) * u64::from(BS)) as usize]
        .copy_from_slice(&b);
    assert_eq!(
        all(&h1, 4),
        want,
        "the write diverges, the rest of its cluster is copied"
    );
    assert_eq!(all(&h2, 4), a, "the other clone does not see it");
    assert_eq!(all(&Harness::new(&dynb(&s)), 4), a);
    // A snapshot of a clone, then the clone diverges again.
    let s3 = p.lvs.snapshot(c1.uuid(), "s3").unwrap();
    assert_eq!(s3.parent_uuid(), Some(s.uuid()));
    assert_eq!(c1.parent_uuid(), Some(s3.uuid()));
    h1.write(0, &b).unwrap();
    assert_eq!(all(&Harness::new(&dynb(&s3)), 4), want);
    want[..512].copy_from_slice(&b);
    assert_eq!(all(&h1, 4), want);
}

#[test]
fn deleting_a_snapshot_follows_spdk_rules_and_survives_a_restart() {
    let dir = common::disk_tempdir();
    let path = common::make_file(dir.path(), "disk", 32 << 20);
    let home = HomeReactor::start();
    let base: Arc<dyn Bdev> = UringBdev::create("u0", &path, Some(BS), None).unwrap();
    let lvs = Lvs::create(base.clone(), "pool", 64 << 10, Some(false), home.handle()).unwrap();
    let total = lvs.info().total_data_clusters;
    let v = lvs.create_lvol(opts("v", 4, false)).unwrap();
    let hv = Harness::new(&dynb(&v));
    let a = pattern((4 * CB * u64::from(BS)) as usize, 6);
    hv.write(0, &a).unwrap();
    let s = lvs.snapshot(v.uuid(), "s").unwrap();
    let c = lvs.clone_lvol(s.uuid(), "c").unwrap();
    // Two clones (v and c): refused, as SPDK's -EBUSY.
    assert!(matches!(lvs.delete_lvol(s.uuid()), Err(LvolError::Busy(_))));
    let b = pattern((CB * u64::from(BS)) as usize, 7);
    hv.write(2 * CB, &b).unwrap();
    lvs.delete_lvol(c.uuid()).unwrap();
    assert_eq!(lvs.info().free_clusters, total - 5);
    // One clone: the snapshot is merged into it; its cluster 2, overwritten, is freed.
    lvs.delete_lvol(s.uuid()).unwrap();
    assert!(lvs.lvol("s").is_none());
    assert_eq!(v.parent_uuid(), None, "no longer a clone");
    assert_eq!(v.num_allocated_clusters(), 4);
    let mut want = a.clone();
    let c2 = (2 * CB * u64::from(BS)) as usize;
    want[c2..c2 + b.len()].copy_from_slice(&b);
    assert_eq!(all(&hv, 4), want);
    let freed = (0..200).any(|_| {
        hv.run_for(std::time::Duration::from_millis(5));
        lvs.info().free_clusters == total - 4
    });
    assert!(freed, "free clusters: {}", lvs.info().free_clusters);
    // A snapshot and a clone come back from the file.
    let s2 = lvs.snapshot(v.uuid(), "s2").unwrap();
    let c3 = lvs.clone_lvol(s2.uuid(), "c3").unwrap();
    Harness::new(&dynb(&c3)).write(1, &b[..512]).unwrap();
    let (us2, uc3, uv) = (s2.uuid(), c3.uuid(), v.uuid());
    drop(hv);
    lvs.close().unwrap();
    drop((lvs, v, s, c, s2, c3, base));
    let base: Arc<dyn Bdev> = UringBdev::create("u0", &path, Some(BS), None).unwrap();
    let lvs = Lvs::open(base, home.handle()).unwrap();
    let (v, s2, c3) = (
        lvs.lvol("v").unwrap(),
        lvs.lvol("s2").unwrap(),
        lvs.lvol("c3").unwrap(),
    );
    assert_eq!((v.uuid(), s2.uuid(), c3.uuid()), (uv, us2, uc3));
    assert!(s2.is_snapshot() && s2.is_read_only());
    assert_eq!(v.parent_uuid(), Some(us2));
    assert_eq!(c3.parent_uuid(), Some(us2));
    assert_eq!(all(&Harness::new(&dynb(&v)), 4), want);
    want[512..1024].copy_from_slice(&b[..512]);
    assert_eq!(all(&Harness::new(&dynb(&c3)), 4), want);
}

#[test]
fn inflate_and_decouple_keep_the_data_and_drop_the_parent() {
    let p = pool_on_malloc(BS, 16 << 20, 64 << 10);
    let v = p.lvs.create_lvol(opts("v", 4, true)).unwrap();
    let hv = Harness::new(&dynb(&v));
    let a = pattern((2 * CB * u64::from(BS)) as usize, 8);
    hv.write(0, &a).unwrap(); // clusters 0 and 1
    let s1 = p.lvs.snapshot(v.uuid(), "s1").unwrap();
    let b = pattern(512, 9);
    hv.write(2 * CB, &b).unwrap(); // cluster 2
    let s2 = p.lvs.snapshot(v.uuid(), "s2").unwrap();
    let c = p.lvs.clone_lvol(s2.uuid(), "c").unwrap();
    let hc = Harness::new(&dynb(&c));
    let before = all(&hc, 4);
    // Decouple: c takes what s2 owns (cluster 2), and s1 becomes its parent (SPDK).
    p.lvs.decouple_parent(c.uuid()).unwrap();
    assert_eq!(c.parent_uuid(), Some(s1.uuid()));
    assert_eq!(c.num_allocated_clusters(), 1);
    assert!(c.is_thin());
    assert_eq!(all(&hc, 4), before);
    // Inflate: every cluster, no parent, thick.
    p.lvs.inflate(c.uuid()).unwrap();
    assert_eq!(c.parent_uuid(), None);
    assert_eq!(c.num_allocated_clusters(), 4);
    assert!(!c.is_thin());
    assert_eq!(all(&hc, 4), before);
    assert_eq!(p.lvs.clones_of(s2.uuid()), ["v"]);
    // Decoupling a volume without a parent is refused; inflating a thick one is a no-op.
    assert!(matches!(
        p.lvs.decouple_parent(c.uuid()),
        Err(LvolError::Invalid(_))
    ));
    p.lvs.inflate(c.uuid()).unwrap();
    // With no room, inflate says so and changes nothing.
    let big = p.lvs.create_lvol(opts("big", 1000, true)).unwrap();
    assert!(matches!(
        p.lvs.inflate(big.uuid()),
        Err(LvolError::NoSpace(_))
    ));
    assert!(big.is_thin());
}

#[test]
fn writes_in_flight_during_a_snapshot_land_wholly_before_or_after_it() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let p = pool_on_malloc(BS, 64 << 20, 64 << 10);
    let v = p.lvs.create_lvol(opts("v", 64, true)).unwrap();
    let n = 96u64;
    // Each write straddles a cluster boundary (two clusters: a torn one would show).
    let len = 4 * BS as usize;
    let off = |i: u64| (i % 63 + 1) * CB - 2 + (i / 63) * 8;
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU32::new(0));
    let (vb, st, rd) = (dynb(&v), stop.clone(), rounds.clone());
    // A writer on a reactor thread of its own: rounds of writes, 16 in flight, each round a
    // new pattern in every region, until told to stop.
    let writer = std::thread::spawn(move || {
        let h = Harness::new(&vb);
        let mut round = 0u32;
        while !st.load(Ordering::Acquire) || round < 3 {
            for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
                for &i in chunk {
                    let data = pattern(len, round * 1000 + i as u32);
                    h.submit(BdevIo::write(off(i), 4, sg(&[&data])), i);
                }
                assert!(h.wait(chunk.len()).iter().all(|d| d.2.is_ok()));
            }
            round += 1;
            rd.store(round, Ordering::Release);
        }
    });
    let mut snaps = Vec::new();
    for k in 0..4 {
        while rounds.load(Ordering::Acquire) < 2 * k + 1 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        snaps.push(p.lvs.snapshot(v.uuid(), &format!("s{k}")).unwrap());
    }
    stop.store(true, Ordering::Release);
    writer.join().unwrap();
    let last = rounds.load(Ordering::Acquire);
    let mut mixed = 0;
    for (k, s) in snaps.iter().enumerate() {
        let hs = Harness::new(&dynb(s));
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..n {
            let got = hs.read(off(i), 4).unwrap();
            let r = (0..last)
                .find(|&r| got == pattern(len, r * 1000 + i as u32))
                .unwrap_or_else(|| panic!("snapshot {k} region {i}: not one whole write"));
            seen.insert(r);
        }
        mixed += usize::from(seen.len() > 1);
        eprintln!("snapshot {k}: rounds {seen:?}");
    }
    eprintln!("{mixed} of {} snapshots were taken mid-round", snaps.len());
    // No acknowledged write was lost to a cluster copied from a snapshot.
    let hv = Harness::new(&dynb(&v));
    for i in 0..n {
        let want = pattern(len, (last - 1) * 1000 + i as u32);
        assert_eq!(hv.read(off(i), 4).unwrap(), want, "origin region {i}");
    }
}
