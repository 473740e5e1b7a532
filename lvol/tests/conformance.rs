//! The bdev conformance suite (`bdev/tests/suite/conformance.rs`) run against a thick and a
//! thin logical volume, at 512- and 4096-byte blocks, with clusters of 4 KiB: an I/O of the
//! suite crosses many clusters, and a thin volume allocates on first write.

// Test arithmetic on small constants (block counts, sizes, seeds).
#![allow(clippy::cast_possible_truncation)]

#[path = "../../bdev/tests/common/mod.rs"]
mod common;
#[macro_use]
#[path = "../../bdev/tests/suite/conformance.rs"]
mod suite;
mod lvs_common;

use lvs_common::pool_on_malloc;
use shoal_lvol::LvolOptions;
use shoal_lvol::format::record::ClearMethod;
use suite::{Backend, Fixture, NUM_BLOCKS};

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
        _dir: Some(Box::new(p)),
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

conformance! {
    thick_512: THICK, 512;
    thick_4096: THICK, 4096;
    thin_512: THIN, 512;
    thin_4096: THIN, 4096;
}
