//! The bdev conformance suite (`shoal-bdev-conformance`, which `lvol`, `nvmf` and
//! `replication` run against their devices too) against every backend of this crate, at 512-
//! and 4096-byte blocks.
//!
//! Each backend is a [`Backend`]: a factory plus what it promises (whether it stores data,
//! whether unmapped blocks read back as zeroes). `conformance!` instantiates every check for
//! every (backend, block size) pair as `<backend>_<bs>::<check>`.

// Test arithmetic on small constants (block counts, sizes, seeds): a truncating cast cannot
// happen here, and if it did the data comparisons would fail.
#![allow(clippy::cast_possible_truncation)]

mod common;

use std::sync::Arc;

use common::{Harness, flatten, pattern, sg, sg_zeroed};
use shoal_bdev::delay::{DelayBdev, DelayLatencies};
use shoal_bdev::error_bdev::ErrorBdev;
use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::null::NullBdev;
use shoal_bdev::pfail::PfailBdev;
use shoal_bdev::uring::UringBdev;
use shoal_bdev::{Bdev, BdevError, BdevIo};
use shoal_bdev_conformance::{Backend, Fixture, NUM_BLOCKS, assert_out_of_range, conformance};

fn malloc(bs: u32) -> Fixture {
    let bdev = MallocBdev::create("Malloc0", None, NUM_BLOCKS, bs).unwrap();
    Fixture { bdev, keep: None }
}

fn null(bs: u32) -> Fixture {
    let bdev = NullBdev::create("Null0", None, NUM_BLOCKS, bs).unwrap();
    Fixture { bdev, keep: None }
}

fn uring(bs: u32) -> Fixture {
    let dir = common::disk_tempdir();
    let path = common::make_file(dir.path(), "disk", NUM_BLOCKS * u64::from(bs));
    let bdev = UringBdev::create("Uring0", &path, Some(bs), None).unwrap();
    assert!(
        bdev.is_direct(),
        "files in /var/tmp must be opened O_DIRECT"
    );
    Fixture {
        bdev,
        keep: Some(Box::new(dir)),
    }
}

fn error_on_malloc(bs: u32) -> Fixture {
    let base = malloc(bs);
    let bdev = ErrorBdev::create(base.bdev, None).unwrap();
    Fixture { bdev, keep: None }
}

fn error_on_uring(bs: u32) -> Fixture {
    let base = uring(bs);
    let bdev = ErrorBdev::create(base.bdev, None).unwrap();
    Fixture {
        bdev,
        keep: base.keep,
    }
}

fn delay_on_malloc(bs: u32) -> Fixture {
    let base = malloc(bs);
    let lat = DelayLatencies {
        avg_read_us: 30,
        p99_read_us: 200,
        avg_write_us: 50,
        p99_write_us: 300,
    };
    let bdev = DelayBdev::create("Delay0", base.bdev, None, lat).unwrap();
    Fixture { bdev, keep: None }
}

fn pfail_on_malloc(bs: u32) -> Fixture {
    let base = malloc(bs);
    let bdev = PfailBdev::create("Pfail0", base.bdev).unwrap();
    Fixture { bdev, keep: None }
}

fn pfail_on_uring(bs: u32) -> Fixture {
    let base = uring(bs);
    let bdev = PfailBdev::create("Pfail0", base.bdev).unwrap();
    Fixture {
        bdev,
        keep: base.keep,
    }
}

const MALLOC: Backend = Backend {
    make: malloc,
    stores_data: true,
    unmap_zeroes: true,
};
const NULL: Backend = Backend {
    make: null,
    stores_data: false,
    unmap_zeroes: true,
};
const URING: Backend = Backend {
    make: uring,
    stores_data: true,
    unmap_zeroes: true,
};
const ERROR_MALLOC: Backend = Backend {
    make: error_on_malloc,
    stores_data: true,
    unmap_zeroes: true,
};
const ERROR_URING: Backend = Backend {
    make: error_on_uring,
    stores_data: true,
    unmap_zeroes: true,
};
const PFAIL_MALLOC: Backend = Backend {
    make: pfail_on_malloc,
    stores_data: true,
    unmap_zeroes: true,
};
const PFAIL_URING: Backend = Backend {
    make: pfail_on_uring,
    stores_data: true,
    unmap_zeroes: true,
};
const DELAY_MALLOC: Backend = Backend {
    make: delay_on_malloc,
    stores_data: true,
    unmap_zeroes: true,
};

conformance! {
    malloc_512: MALLOC, 512;
    malloc_4096: MALLOC, 4096;
    null_512: NULL, 512;
    null_4096: NULL, 4096;
    uring_512: URING, 512;
    uring_4096: URING, 4096;
    error_malloc_512: ERROR_MALLOC, 512;
    error_malloc_4096: ERROR_MALLOC, 4096;
    error_uring_512: ERROR_URING, 512;
    error_uring_4096: ERROR_URING, 4096;
    delay_malloc_512: DELAY_MALLOC, 512;
    delay_malloc_4096: DELAY_MALLOC, 4096;
    pfail_malloc_512: PFAIL_MALLOC, 512;
    pfail_malloc_4096: PFAIL_MALLOC, 4096;
    pfail_uring_4096: PFAIL_URING, 4096;
}

/// The short check a stacked device (the nexus) uses for its legs still refuses what could
/// differ on the device below: a range that does not fit, and a closed device.
#[test]
fn a_leg_checked_above_is_still_checked_for_range_and_state() {
    let bs = 512u32;
    let bdev: Arc<dyn Bdev> = MallocBdev::create("Leg0", None, NUM_BLOCKS, bs).unwrap();
    let h = Harness::new(&bdev);
    let one = || sg_zeroed(&[bs as usize]);
    let run = |io: BdevIo| {
        h.chan.submit_checked_above(io, h.sink.clone(), 7);
        let mut done = h.wait(1);
        let (tag, io, r) = done.pop().unwrap();
        assert_eq!(tag, 7);
        (io, r)
    };
    assert_out_of_range(run(BdevIo::read(NUM_BLOCKS, 1, one())).1);
    assert_out_of_range(
        run(BdevIo::write(
            NUM_BLOCKS - 1,
            2,
            sg_zeroed(&[2 * bs as usize]),
        ))
        .1,
    );
    assert_out_of_range(run(BdevIo::read(u64::MAX, 1, one())).1);
    // In range: done, and counted like any other I/O.
    let data = pattern(bs as usize, 21);
    run(BdevIo::write(3, 1, sg(&[&data]))).1.unwrap();
    let (io, r) = run(BdevIo::read(3, 1, one()));
    r.unwrap();
    assert_eq!(flatten(&io.bufs), data);
    let st = h.chan.stats();
    assert_eq!((st.num_read_ops, st.num_write_ops), (1, 1));
    // Other operations take the full check.
    run(BdevIo::flush()).1.unwrap();
    bdev.info().close();
    assert!(matches!(
        run(BdevIo::read(0, 1, one())).1,
        Err(BdevError::Closed)
    ));
}
