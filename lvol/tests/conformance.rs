//! The bdev conformance suite (`shoal-bdev-conformance`) run against a thick and a
//! thin logical volume and a clone, at 512- and 4096-byte blocks, with clusters of 4 KiB: an
//! I/O of the suite crosses many clusters, a thin volume allocates on first write, and a clone
//! of a snapshot full of data copies a cluster from it on first write (the suite's writes,
//! write zeroes and deallocates must hide the snapshot's data where they land).

// Test arithmetic on small constants (block counts, sizes, seeds).
#![allow(clippy::cast_possible_truncation)]

#[path = "../../bdev/tests/common/mod.rs"]
mod common;
mod lvs_common;

use std::sync::Arc;

use lvs_common::pool_on_malloc;
use shoal_bdev::Bdev;
use shoal_bdev_conformance::{Backend, Fixture, NUM_BLOCKS, conformance};
use shoal_lvol::LvolOptions;
use shoal_lvol::format::record::ClearMethod;

fn lvol(bs: u32, thin: bool) -> Fixture {
    let p = pool_on_malloc(bs, 4 << 20, 4096);
    let size_bytes = NUM_BLOCKS * u64::from(bs);
    let o = LvolOptions {
        name: "vol".into(),
        size_bytes,
        thin,
        clear: ClearMethod::Default,
    };
    let v = p.lvs.create_lvol(o).unwrap();
    Fixture {
        bdev: v,
        keep: Some(Box::new(p)),
    }
}

/// A clone two snapshots deep: a volume filled with a pattern is snapshotted (S1), a clone of
/// S1 has its first half overwritten and is snapshotted (S2), and the device under test is a
/// clone of S2: it owns nothing at first and reads half from S2, half from S1.
fn clone(bs: u32) -> Fixture {
    let (tx, rx) = std::sync::mpsc::channel();
    // Set up on a thread of its own: the suite makes the test thread a reactor.
    std::thread::spawn(move || {
        let p = pool_on_malloc(bs, 4 << 20, 4096);
        let size_bytes = NUM_BLOCKS * u64::from(bs);
        let o = LvolOptions {
            name: "origin".into(),
            size_bytes,
            thin: false,
            clear: ClearMethod::Default,
        };
        let v = p.lvs.create_lvol(o).unwrap();
        let b: Arc<dyn Bdev> = v.clone();
        let h = common::Harness::new(&b);
        h.write(0, &common::pattern(size_bytes as usize, 77))
            .unwrap();
        let s1 = p.lvs.snapshot(v.uuid(), "s1").unwrap();
        let c1 = p.lvs.clone_lvol(s1.uuid(), "c1").unwrap();
        let cb: Arc<dyn Bdev> = c1.clone();
        let hc = common::Harness::new(&cb);
        hc.write(0, &common::pattern(size_bytes as usize / 2, 78))
            .unwrap();
        drop((h, hc));
        let s2 = p.lvs.snapshot(c1.uuid(), "s2").unwrap();
        let c2 = p.lvs.clone_lvol(s2.uuid(), "c2").unwrap();
        tx.send((c2, p)).unwrap();
    });
    let (c, p) = rx.recv().unwrap();
    Fixture {
        bdev: c,
        keep: Some(Box::new(p)),
    }
}

fn thick(bs: u32) -> Fixture {
    lvol(bs, false)
}

fn thin(bs: u32) -> Fixture {
    lvol(bs, true)
}

const THICK: Backend = Backend {
    make: thick,
    stores_data: true,
    unmap_zeroes: true,
};
const THIN: Backend = Backend {
    make: thin,
    stores_data: true,
    unmap_zeroes: true,
};

const CLONE: Backend = Backend {
    make: clone,
    stores_data: true,
    unmap_zeroes: true,
};

conformance! {
    thick_512: THICK, 512;
    thick_4096: THICK, 4096;
    thin_512: THIN, 512;
    thin_4096: THIN, 4096;
    clone_512: CLONE, 512;
    clone_4096: CLONE, 4096;
}
