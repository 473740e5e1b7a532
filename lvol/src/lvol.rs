//! A logical volume as a bdev: the `Bdev` implementation of [`LvolBdev`], whose channels are
//! the volume's I/O path (the private `channel` module), and, re-exported from the crate's
//! core state (the private `state` module), the volume's types: its bdev, the state its
//! channels share, its cluster map and the walks over it.

use std::sync::Arc;

use shoal_bdev::{Bdev, BdevChannel, BdevError, BdevInfo, IoFlags, IoType};
use shoal_reactor::Reactor;

pub use crate::state::{
    ChanCounters, ClusterMap, LvolBdev, LvolShared, PRODUCT_NAME, UNMAPPED, chain_phys, map_phys,
    new_map,
};

impl Bdev for LvolBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn supports(&self, _io_type: IoType) -> bool {
        true
    }

    fn supports_flags(&self, io_type: IoType, flags: IoFlags) -> bool {
        // FUA goes to the base (which honours it, checked when the pool opens); a cluster
        // allocated for a write is durable before the write is sent.
        self.fua
            && flags == IoFlags::FUA
            && matches!(io_type, IoType::Read | IoType::Write | IoType::WriteZeroes)
    }

    fn create_channel(
        self: Arc<Self>,
        reactor: &Reactor,
    ) -> Result<Box<dyn BdevChannel>, BdevError> {
        crate::channel::LvolChannel::open(self, reactor)
    }
}
