//! Pools end to end on real devices: a pool and its volumes come back from the device with
//! the same names and UUIDs (examine), thin volumes allocate on first write and give clusters
//! back on whole-cluster deallocate, a full pool fails the write with NoSpace, and corrupt or
//! newer metadata is refused.

// Test arithmetic on small constants (block counts, sizes).
#![allow(clippy::cast_possible_truncation)]

#[path = "../../bdev/tests/common/mod.rs"]
mod common;
mod lvs_common;

use std::sync::Arc;

use common::{Harness, pattern};
use lvs_common::{HomeReactor, pool_on, pool_on_malloc};
use shoal_bdev::uring::UringBdev;
use shoal_bdev::{Bdev, BdevError, BdevIo, IoFlags};
use shoal_lvol::format::FORMAT_VERSION;
use shoal_lvol::format::record::ClearMethod;
use shoal_lvol::{LvolError, LvolOptions, Lvs};

fn opts(name: &str, mib: u64, thin: bool) -> LvolOptions {
    LvolOptions {
        name: name.into(),
        size_bytes: mib << 20,
        thin,
        clear: ClearMethod::Default,
    }
}

#[test]
fn a_pool_comes_back_from_a_file_with_its_volumes() {
    let dir = common::disk_tempdir();
    let path = common::make_file(dir.path(), "disk", 64 << 20);
    let home = HomeReactor::start();
    let base: Arc<dyn Bdev> = UringBdev::create("u0", &path, Some(4096), None).unwrap();
    let lvs = Lvs::create(base.clone(), "pool", 1 << 20, Some(false), home.handle()).unwrap();
    let (uuid, total) = (lvs.uuid(), lvs.info().total_data_clusters);
    let thick = lvs.create_lvol(opts("thick", 8, false)).unwrap();
    let thin = lvs.create_lvol(opts("thin", 100, true)).unwrap();
    assert_eq!(lvs.info().free_clusters, total - 8);
    let b1: Arc<dyn Bdev> = thick.clone();
    let b2: Arc<dyn Bdev> = thin.clone();
    let data = pattern(8192, 5);
    {
        let h = Harness::new(&b1);
        h.write(100, &data).unwrap();
        let h2 = Harness::new(&b2);
        h2.run(BdevIo::write(2000, 2, common::sg(&[&data])).with_flags(IoFlags::FUA))
            .1
            .unwrap();
    }
    assert_eq!(thin.num_allocated_clusters(), 1);
    assert_eq!(lvs.info().free_clusters, total - 9);
    lvs.rename_lvol(thin.uuid(), "thin2").unwrap();
    lvs.rename("pool2").unwrap();
    lvs.set_read_only(thick.uuid()).unwrap();
    let (u1, u2) = (thick.uuid(), thin.uuid());
    lvs.close().unwrap();
    drop((lvs, thick, thin, b1, b2, base));
    // Restart: the same file, a new bdev.
    let base: Arc<dyn Bdev> = UringBdev::create("u0", &path, Some(4096), None).unwrap();
    assert!(Lvs::probe(&base).unwrap());
    let lvs = Lvs::open(base, home.handle()).unwrap();
    assert_eq!((lvs.uuid(), lvs.name()), (uuid, "pool2".to_string()));
    assert_eq!(lvs.info().free_clusters, total - 9);
    let t = lvs.lvol("thin2").unwrap();
    assert_eq!(t.uuid(), u2);
    assert_eq!(t.alias(), "pool2/thin2");
    assert_eq!(t.info().name, u2.to_string());
    let k = lvs.lvol(&u1.to_string()).unwrap();
    assert!(k.is_read_only());
    let (bt, bk): (Arc<dyn Bdev>, Arc<dyn Bdev>) = (t, k);
    let h = Harness::new(&bt);
    assert_eq!(h.read(2000, 2).unwrap(), data);
    assert_eq!(
        h.read(0, 2).unwrap(),
        vec![0; 8192],
        "unwritten clusters read zeroes"
    );
    let hk = Harness::new(&bk);
    assert_eq!(hk.read(100, 2).unwrap(), data);
    assert!(matches!(hk.write(0, &data), Err(BdevError::ReadOnly)));
}

#[test]
fn thin_volumes_give_clusters_back_and_a_full_pool_fails_the_write() {
    let p = pool_on_malloc(512, 4 << 20, 64 << 10);
    let total = p.lvs.info().total_data_clusters;
    let v: Arc<dyn Bdev> = p.lvs.create_lvol(opts("v", 64, true)).unwrap();
    let h = Harness::new(&v);
    let cb = (64 << 10) / 512;
    let one = pattern(512, 1);
    for c in 0..4 {
        h.write(c * cb + 3, &one).unwrap();
    }
    assert_eq!(p.lvs.info().free_clusters, total - 4);
    // Deallocate and write zeroes over whole clusters free them; a partial one does not.
    h.run(BdevIo::unmap(0, cb)).1.unwrap();
    h.run(BdevIo::write_zeroes(cb, cb).with_flags(IoFlags::FUA))
        .1
        .unwrap();
    h.run(BdevIo::unmap(2 * cb, cb - 1)).1.unwrap();
    assert_eq!(h.read(3, 1).unwrap(), vec![0; 512]);
    assert_eq!(h.read(cb + 3, 1).unwrap(), vec![0; 512]);
    assert_eq!(h.read(3 * cb + 3, 1).unwrap(), one);
    // Freed clusters come back once the records are durable and no I/O can use them.
    let freed = (0..200).any(|_| {
        h.run_for(std::time::Duration::from_millis(5));
        p.lvs.info().free_clusters == total - 2
    });
    assert!(freed, "free clusters: {}", p.lvs.info().free_clusters);
    // Fill the pool: every free cluster, then one more.
    let mut c = 4;
    while p.lvs.info().free_clusters > 0 {
        h.write(c * cb, &one).unwrap();
        c += 1;
    }
    match h.write(c * cb, &one) {
        Err(e @ BdevError::NoSpace(_)) => {
            assert_eq!(e.kind(), shoal_bdev::ErrorKind::NoSpace)
        }
        other => panic!("expected NoSpace, got {other:?}"),
    }
    // Writes to allocated clusters still work, and the data is intact.
    h.write(3 * cb + 4, &one).unwrap();
    assert_eq!(h.read(3 * cb + 3, 2).unwrap(), [one.clone(), one].concat());
    let lv = p.lvs.lvol("v").unwrap();
    assert_eq!(lv.nospace_errors(), 1);
    // A thick volume that does not fit is refused.
    assert!(matches!(
        p.lvs.create_lvol(opts("big", 64, false)),
        Err(LvolError::NoSpace(_))
    ));
}

#[test]
fn names_sizes_and_deletes() {
    let p = pool_on_malloc(4096, 8 << 20, 1 << 20);
    let v = p.lvs.create_lvol(opts("a", 1, true)).unwrap();
    assert!(matches!(
        p.lvs.create_lvol(opts("a", 1, true)),
        Err(LvolError::Exists(_))
    ));
    for bad in ["", "a/b", &"x".repeat(64)] {
        assert!(matches!(
            p.lvs.create_lvol(opts(bad, 1, true)),
            Err(LvolError::Invalid(_))
        ));
    }
    assert!(matches!(
        p.lvs.create_lvol(opts("z", 0, true)),
        Err(LvolError::Invalid(_))
    ));
    let w = p.lvs.create_lvol(opts("b", 2, false)).unwrap();
    assert!(matches!(
        p.lvs.rename_lvol(w.uuid(), "a"),
        Err(LvolError::Exists(_))
    ));
    let free = p.lvs.info().free_clusters;
    p.lvs.delete_lvol(w.uuid()).unwrap();
    assert!(w.info().is_closed());
    let back = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(5));
        p.lvs.info().free_clusters == free + 2
    });
    assert!(back);
    assert!(matches!(
        p.lvs.delete_lvol(w.uuid()),
        Err(LvolError::NotFound(_))
    ));
    assert!(p.lvs.lvol("a").is_some() && p.lvs.lvol("b").is_none());
    drop(v);
}

/// Writes `page` at byte `off` of `base` through a private reactor.
fn poke(base: &Arc<dyn Bdev>, off: u64, f: impl FnOnce(&mut Vec<u8>) + Send + 'static) {
    let b = base.clone();
    std::thread::spawn(move || {
        let h = Harness::new(&b);
        let bs = u64::from(b.info().block_size);
        let mut page = h.read(off / bs, 4096 / bs).unwrap();
        f(&mut page);
        h.write(off / bs, &page).unwrap();
    })
    .join()
    .unwrap();
}

#[test]
fn corrupt_or_newer_metadata_is_refused_not_a_panic() {
    let p = pool_on_malloc(512, 4 << 20, 64 << 10);
    p.lvs.create_lvol(opts("v", 1, true)).unwrap();
    let sb = *p.lvs.superblock();
    p.lvs.close().unwrap();
    let base = p.base.clone();
    let home = HomeReactor::start();
    // One bad superblock copy: the other serves.
    poke(&base, 0, |pg| pg[40] ^= 1);
    let l = Lvs::open(base.clone(), home.handle()).unwrap();
    assert!(l.lvol("v").is_some());
    l.close().unwrap();
    // A newer format version: refused, and said so.
    poke(&base, 4096, |pg| {
        pg[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes())
    });
    match Lvs::open(base.clone(), home.handle()) {
        Err(e @ LvolError::Format { .. }) => {
            assert!(e.to_string().contains("format version"), "{e}")
        }
        other => panic!("expected a format error, got {other:?}"),
    }
    assert!(Lvs::probe(&base).is_err());
    // Both checkpoints corrupt: refused.
    let base2 = pool_on_malloc(512, 4 << 20, 64 << 10);
    base2.lvs.close().unwrap();
    for area in sb.ckpt_offset {
        poke(&base2.base, area, |pg| pg[30] ^= 0xff);
    }
    assert!(matches!(
        Lvs::open(base2.base.clone(), home.handle()),
        Err(LvolError::Format { .. })
    ));
    // A device without a pool.
    let empty = pool_on_malloc(512, 4 << 20, 64 << 10);
    empty.lvs.destroy().unwrap();
    assert!(matches!(
        Lvs::open(empty.base.clone(), home.handle()),
        Err(LvolError::NotAPool(_))
    ));
    let _ = pool_on;
}

/// A thin volume's map takes 8 bytes a cluster in memory, allocated or not: a size whose map
/// could not be held (an RPC's `size_in_mib`, or a volume record on the disk) is refused
/// with an error, and neither aborts the daemon nor leaves a pool that aborts it when opened.
#[test]
fn a_volume_too_large_to_map_is_refused() {
    let p = pool_on_malloc(512, 4 << 20, 4096);
    for bytes in [1u64 << 62, u64::MAX - 4095] {
        let o = LvolOptions {
            size_bytes: bytes,
            ..opts("huge", 0, true)
        };
        match p.lvs.create_lvol(o) {
            Err(LvolError::Invalid(m)) => assert!(m.contains("clusters"), "{m}"),
            other => panic!("a volume of {bytes} bytes: expected a refusal, got {other:?}"),
        }
    }
    let v = p.lvs.create_lvol(opts("v", 1, true)).unwrap();
    assert_eq!(v.lvol_name(), "v");
    p.lvs.close().unwrap();
    let l = Lvs::open(p.base.clone(), p.home.handle()).unwrap();
    assert!(l.lvol("v").is_some() && l.lvol("huge").is_none());
}
