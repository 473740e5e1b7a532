//! The block-I/O request that the reactor completes, and its result.
//!
//! A disk operation on the ring ([`Reactor::file_read`] and its siblings) and a deferred
//! completion ([`Reactor::complete_io`], how the RAM and null disks answer) carry a [`BdevIo`]
//! and hand it back to an [`IoSink`] with a `Result<(), BdevError>`. Those types live here, with
//! the reactor, so that the reactor holds them by value in its slots and its queue (no boxing,
//! no generic parameter, no allocation per I/O) while depending on no block device:
//! `shoal-bdev` re-exports every one of them unchanged and builds its devices on them.
//!
//! [`Reactor::file_read`]: crate::Reactor::file_read
//! [`Reactor::complete_io`]: crate::Reactor::complete_io

mod error;

pub use error::{BdevError, ErrorKind};

use crate::buf::SgList;

/// The kinds of block I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoType {
    /// Read blocks into the buffers.
    Read,
    /// Write the buffers to blocks.
    Write,
    /// Make completed writes durable.
    Flush,
    /// Set blocks to zero without a data buffer.
    WriteZeroes,
    /// Deallocate blocks (TRIM / discard / punch hole).
    Unmap,
}

/// What a request asks of a device beyond its type and range, as NVMe gives it to a write:
/// flags every device must honour or refuse, never drop (`Bdev::supports_flags` in `shoal-bdev`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct IoFlags(u8);

impl IoFlags {
    /// No flag.
    pub const NONE: IoFlags = IoFlags(0);
    /// Force Unit Access (NVM Command Set 1.0, sections 3.2.4 and 3.2.6, CDW12 bit 30). On a
    /// write or write zeroes: complete only once the data is on non-volatile media. On a
    /// read: commit the blocks to non-volatile media, then return what the media holds.
    pub const FUA: IoFlags = IoFlags(1);

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: IoFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether Force Unit Access is set.
    pub const fn fua(self) -> bool {
        self.contains(IoFlags::FUA)
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// `FUA` when `fua`, else no flag.
    pub const fn from_fua(fua: bool) -> IoFlags {
        if fua { IoFlags::FUA } else { IoFlags::NONE }
    }
}

impl std::ops::BitOr for IoFlags {
    type Output = IoFlags;
    fn bitor(self, o: IoFlags) -> IoFlags {
        IoFlags(self.0 | o.0)
    }
}

/// One block I/O. It owns its buffers until its completion hands it back.
#[derive(Debug)]
pub struct BdevIo {
    /// What to do.
    pub io_type: IoType,
    /// Flags the device must honour ([`IoFlags::FUA`]); a device that cannot refuses the
    /// request ([`BdevError::UnsupportedFlags`]) rather than ignore them.
    pub flags: IoFlags,
    /// First block.
    pub offset_blocks: u64,
    /// Number of blocks (0 for a flush of the whole device).
    pub num_blocks: u64,
    /// Data buffers for reads and writes; their lengths add up to `num_blocks * block_size`.
    pub bufs: SgList,
}

impl BdevIo {
    /// A read of `num_blocks` blocks at `offset_blocks` into `bufs`.
    pub fn read(offset_blocks: u64, num_blocks: u64, bufs: SgList) -> BdevIo {
        BdevIo {
            io_type: IoType::Read,
            flags: IoFlags::NONE,
            offset_blocks,
            num_blocks,
            bufs,
        }
    }

    /// A write of `bufs` to `num_blocks` blocks at `offset_blocks`.
    pub fn write(offset_blocks: u64, num_blocks: u64, bufs: SgList) -> BdevIo {
        BdevIo {
            io_type: IoType::Write,
            flags: IoFlags::NONE,
            offset_blocks,
            num_blocks,
            bufs,
        }
    }

    /// A flush of the whole device.
    pub fn flush() -> BdevIo {
        BdevIo {
            io_type: IoType::Flush,
            flags: IoFlags::NONE,
            offset_blocks: 0,
            num_blocks: 0,
            bufs: SgList::new(),
        }
    }

    /// Zeroes `num_blocks` blocks at `offset_blocks`.
    pub fn write_zeroes(offset_blocks: u64, num_blocks: u64) -> BdevIo {
        BdevIo {
            io_type: IoType::WriteZeroes,
            flags: IoFlags::NONE,
            offset_blocks,
            num_blocks,
            bufs: SgList::new(),
        }
    }

    /// The same request with `flags` added (`BdevIo::write(..).with_flags(IoFlags::FUA)`).
    pub fn with_flags(mut self, flags: IoFlags) -> BdevIo {
        self.flags = self.flags | flags;
        self
    }

    /// Deallocates `num_blocks` blocks at `offset_blocks`.
    pub fn unmap(offset_blocks: u64, num_blocks: u64) -> BdevIo {
        BdevIo {
            io_type: IoType::Unmap,
            flags: IoFlags::NONE,
            offset_blocks,
            num_blocks,
            bufs: SgList::new(),
        }
    }
}

// The request is passed by value through every layer: keep it within one cache line.
const _: () = assert!(std::mem::size_of::<BdevIo>() <= 64);

/// Receives block I/O completions.
pub trait IoSink {
    /// `io` is complete; its buffers come back with it. Called on the submitting reactor.
    fn io_done(&self, tag: u64, io: BdevIo, result: Result<(), BdevError>);
}
