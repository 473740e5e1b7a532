//! Block-device errors: a kind for the wire mapping, and context for people.

use super::{IoFlags, IoType};

/// Why a block I/O or a device operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BdevError {
    /// The request reaches past the end of the device (or its arithmetic overflows).
    #[error("blocks {offset}+{count} are beyond the device's {capacity} blocks")]
    OutOfRange {
        /// First block asked for.
        offset: u64,
        /// Blocks asked for.
        count: u64,
        /// Blocks the device has.
        capacity: u64,
    },
    /// The data buffers do not hold exactly `num_blocks` whole blocks.
    #[error("buffers of {bytes} bytes do not match {blocks} blocks of {block_size} bytes")]
    BadLength {
        /// Bytes in the buffers.
        bytes: u64,
        /// Blocks asked for.
        blocks: u64,
        /// Block size of the device.
        block_size: u32,
    },
    /// The device does not implement this operation.
    #[error("{0:?} is not supported by this device")]
    Unsupported(IoType),
    /// The device cannot honour these flags on this operation (Force Unit Access on a device
    /// that cannot make one write durable, or on an operation that has no data).
    #[error("{1:?} with flags {0:?} is not supported by this device")]
    UnsupportedFlags(IoFlags, IoType),
    /// The device was closed or deleted.
    #[error("the device is closed")]
    Closed,
    /// The kernel transferred fewer bytes than asked.
    #[error("short transfer: {done} of {expected} bytes")]
    ShortIo {
        /// Bytes transferred.
        done: usize,
        /// Bytes asked for.
        expected: usize,
    },
    /// An operating-system error.
    #[error(transparent)]
    Os(#[from] std::io::Error),
    /// A failure injected on purpose by a fault-injecting device.
    #[error("injected failure")]
    Injected,
    /// The device did not answer in time.
    #[error("timed out")]
    TimedOut,
    /// Invalid argument when creating or configuring a device.
    #[error("{0}")]
    Invalid(String),
    /// A channel was requested on a thread that has no reactor.
    #[error("not on a reactor thread")]
    NoReactor,
    /// A thin-provisioned device needs space its pool no longer has.
    #[error("out of space: {0}")]
    NoSpace(String),
    /// The device is read-only.
    #[error("the device is read-only")]
    ReadOnly,
}

/// The broad class of a [`BdevError`], for mapping to protocol status codes in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Address outside the device.
    OutOfRange,
    /// Malformed request.
    InvalidRequest,
    /// Operation not implemented.
    Unsupported,
    /// Device gone.
    Closed,
    /// A media or transfer failure.
    Io,
    /// No answer in time.
    TimedOut,
    /// No space left to allocate (a thin volume's full pool).
    NoSpace,
    /// Write to a read-only device.
    ReadOnly,
}

impl BdevError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BdevError::OutOfRange { .. } => ErrorKind::OutOfRange,
            BdevError::BadLength { .. }
            | BdevError::Invalid(_)
            | BdevError::UnsupportedFlags(..) => ErrorKind::InvalidRequest,
            BdevError::Unsupported(_) => ErrorKind::Unsupported,
            BdevError::Closed | BdevError::NoReactor => ErrorKind::Closed,
            BdevError::TimedOut => ErrorKind::TimedOut,
            BdevError::ShortIo { .. } | BdevError::Os(_) | BdevError::Injected => ErrorKind::Io,
            BdevError::NoSpace(_) => ErrorKind::NoSpace,
            BdevError::ReadOnly => ErrorKind::ReadOnly,
        }
    }
}
