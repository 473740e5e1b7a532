//! `RemoteBdev` through the bdev layer: the bdev conformance suite (`shoal-bdev-conformance`,
//! which every local backend passes too) against a namespace of Shoal's target over loopback,
//! reached through an `nvmf://` URI, at 512- and 4096-byte blocks. The whole device in one I/O
//! is 1 MiB at 4 KiB blocks: the host splits it into MDTS-sized commands.
#![allow(missing_docs)]

mod common;
mod host_common;

use host_common::{free_port, host_reactors, start_target};
use shoal_bdev::IoType;
use shoal_bdev_conformance::{Backend, Fixture, NUM_BLOCKS, conformance};
use shoal_nvmf::host::{PRODUCT_NAME, RemoteBdev};
use shoal_nvmf::target::subsystem::TransportConfig;

fn remote(bs: u32) -> Fixture {
    let port = free_port();
    let target = start_target(&[(bs, NUM_BLOCKS)], TransportConfig::default(), port);
    let host = host_reactors();
    let uri = format!(
        "nvmf://127.0.0.1:{port}/{}?hostnqn={}&nsid=1&name=Remote0",
        common::NQN,
        common::HOSTNQN
    );
    let bdev = RemoteBdev::connect_uri(&host.handles()[0], &uri).unwrap();
    Fixture {
        bdev,
        keep: Some(Box::new((host, target))),
    }
}

/// The target's RAM disk stores data and zeroes what is deallocated.
const REMOTE: Backend = Backend {
    make: remote,
    stores_data: true,
    unmap_zeroes: true,
};

conformance! {
    remote_512: REMOTE, 512;
    remote_4096: REMOTE, 4096;
}

/// What the suite does not check: the remote device's name (from the URI), its product name
/// and UUID, and the optional operations the target offers (ONCS: Write Zeroes, Dataset
/// Management).
#[test]
fn remote_identity() {
    let f = remote(512);
    let info = f.bdev.info();
    assert_eq!(info.name, "Remote0");
    assert_eq!(info.product_name, PRODUCT_NAME);
    assert!(!info.uuid.is_nil());
    for t in [IoType::WriteZeroes, IoType::Unmap] {
        assert!(f.bdev.supports(t), "{t:?}");
    }
}
