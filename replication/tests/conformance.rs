//! The bdev conformance suite (`shoal-bdev-conformance`, which every other kind of device
//! passes too) against the nexus over one RAM child, two RAM children, and an error child plus
//! a delay child, at 512- and 4096-byte blocks: whatever a bdev promises, a nexus promises too.
//!
//! Each nexus has a home reactor of its own (a thread, as in a daemon), which runs its control
//! path and writes its write-intent bits; the suite's I/O comes from the test's threads.

mod common;

use std::sync::Arc;

use common::{WAIT, ram_bs};
use shoal_bdev::delay::{DelayBdev, DelayLatencies};
use shoal_bdev::error_bdev::ErrorBdev;
use shoal_bdev::{Bdev, IoType};
use shoal_bdev_conformance::{Backend, Fixture, NUM_BLOCKS, conformance};
use shoal_reactor::{Reactor, ReactorConfig, ReactorSet};
use shoal_replication::{ChildSpec, Nexus, NexusOptions};

fn nexus(children: Vec<Arc<dyn Bdev>>, bs: u32) -> Fixture {
    let home = ReactorSet::start(&[0], ReactorConfig::default(), Arc::new(|_: &Reactor| {}))
        .expect("home reactor");
    let specs = children.into_iter().map(ChildSpec::local).collect();
    let o = NexusOptions::new("nx", NUM_BLOCKS * u64::from(bs));
    let nx = Nexus::create(o, specs, &home.handles()[0])
        .wait(WAIT)
        .unwrap()
        .unwrap();
    Fixture {
        bdev: nx,
        keep: Some(Box::new(home)),
    }
}

fn one_ram(bs: u32) -> Fixture {
    nexus(vec![ram_bs("m0", NUM_BLOCKS, bs)], bs)
}

fn two_ram(bs: u32) -> Fixture {
    let children = vec![ram_bs("m0", NUM_BLOCKS, bs), ram_bs("m1", NUM_BLOCKS, bs)];
    nexus(children, bs)
}

fn error_and_delay(bs: u32) -> Fixture {
    let e: Arc<dyn Bdev> = ErrorBdev::create(ram_bs("m0", NUM_BLOCKS, bs), None).unwrap();
    let lat = DelayLatencies {
        avg_read_us: 30,
        p99_read_us: 200,
        avg_write_us: 50,
        p99_write_us: 300,
    };
    let d: Arc<dyn Bdev> =
        DelayBdev::create("d0", ram_bs("m1", NUM_BLOCKS, bs), None, lat).unwrap();
    nexus(vec![e, d], bs)
}

const NEXUS1: Backend = Backend {
    make: one_ram,
    stores_data: true,
    unmap_zeroes: true,
};
const NEXUS2: Backend = Backend {
    make: two_ram,
    stores_data: true,
    unmap_zeroes: true,
};
const ERROR_DELAY: Backend = Backend {
    make: error_and_delay,
    stores_data: true,
    unmap_zeroes: true,
};

conformance! {
    nexus1_512: NEXUS1, 512;
    nexus1_4096: NEXUS1, 4096;
    nexus2_512: NEXUS2, 512;
    nexus2_4096: NEXUS2, 4096;
    error_delay_512: ERROR_DELAY, 512;
    error_delay_4096: ERROR_DELAY, 4096;
}

/// What the suite does not check: a nexus offers write zeroes and deallocate when its
/// children do.
#[test]
fn nexus_offers_the_optional_operations() {
    for f in [one_ram(512), error_and_delay(4096)] {
        for t in [IoType::WriteZeroes, IoType::Unmap] {
            assert!(f.bdev.supports(t), "{t:?}");
        }
    }
}
