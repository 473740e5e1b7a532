//! Errors of pools and volumes.

use crate::format::FormatError;

/// Why a pool or volume operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LvolError {
    /// The metadata on the device cannot be used (corrupt, or from a newer version).
    #[error("pool metadata on {bdev}: {source}")]
    Format {
        /// The base bdev.
        bdev: String,
        /// What is wrong.
        source: FormatError,
    },
    /// The device holds no pool.
    #[error("bdev {0} holds no pool")]
    NotAPool(String),
    /// A name or UUID is already in use.
    #[error("{0}")]
    Exists(String),
    /// No such pool or volume.
    #[error("{0}")]
    NotFound(String),
    /// The request is invalid (bad name, size, parameter).
    #[error("{0}")]
    Invalid(String),
    /// The pool has no free cluster left.
    #[error("{0}")]
    NoSpace(String),
    /// The object is in use.
    #[error("{0}")]
    Busy(String),
    /// The operation is not supported.
    #[error("{0}")]
    Unsupported(String),
    /// The volume is read-only (a snapshot, or set read-only) and the operation would change
    /// it (SPDK's `-EPERM`).
    #[error("{0}")]
    ReadOnly(String),
    /// An I/O to the base bdev failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The bdev error.
        source: shoal_bdev::BdevError,
    },
    /// The home reactor has stopped, or the pool refuses changes (its journal failed).
    #[error("the pool's reactor did not answer: {0}")]
    Unavailable(String),
    /// The operation did not complete in the time its caller waits: it goes on in the pool
    /// (a thick growth zeroing its clusters, say) and may still complete.
    #[error("{0}")]
    InProgress(String),
}
