//! `null`: a device that discards writes and reads zeroes, for measuring everything but storage.

use std::rc::Rc;
use std::sync::Arc;

use uuid::Uuid;

use crate::reactor::Reactor;
use crate::{
    Bdev, BdevChannel, BdevError, BdevInfo, BdevIo, IoFlags, IoSink, IoType, valid_block_size,
};

/// A device with no storage: writes vanish, reads return zeroes.
#[derive(Debug)]
pub struct NullBdev {
    info: BdevInfo,
}

impl NullBdev {
    /// Creates a null device of `num_blocks` blocks of `block_size` bytes.
    pub fn create(
        name: &str,
        uuid: Option<Uuid>,
        num_blocks: u64,
        block_size: u32,
    ) -> Result<Arc<NullBdev>, BdevError> {
        if !valid_block_size(block_size) {
            return Err(BdevError::Invalid(format!(
                "block size {block_size} is not supported (512 or 4096)"
            )));
        }
        if num_blocks == 0 || num_blocks.checked_mul(u64::from(block_size)).is_none() {
            return Err(BdevError::Invalid(format!(
                "invalid size: {num_blocks} blocks"
            )));
        }
        Ok(Arc::new(NullBdev {
            info: BdevInfo::new(name, uuid, block_size, num_blocks, "Null disk"),
        }))
    }
}

impl Bdev for NullBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn supports(&self, _io_type: IoType) -> bool {
        true
    }

    fn supports_flags(&self, io_type: IoType, flags: IoFlags) -> bool {
        // FUA only: nothing is stored, so nothing is ever lost.
        flags == IoFlags::FUA
            && matches!(io_type, IoType::Read | IoType::Write | IoType::WriteZeroes)
    }

    fn create_channel(
        self: Arc<Self>,
        reactor: &Reactor,
    ) -> Result<Box<dyn BdevChannel>, BdevError> {
        Ok(Box::new(NullChannel {
            reactor: reactor.clone(),
        }))
    }
}

struct NullChannel {
    reactor: Reactor,
}

impl BdevChannel for NullChannel {
    fn submit(&self, mut io: BdevIo, sink: Rc<dyn IoSink>, tag: u64) {
        if io.io_type == IoType::Read {
            for b in io.bufs.iter_mut() {
                b.as_mut_slice().fill(0);
            }
        }
        self.reactor.complete_io(sink, tag, io, Ok(()));
    }
}
