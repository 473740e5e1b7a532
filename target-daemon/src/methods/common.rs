//! What every method file shares, below all of them (it imports no method file): the lock
//! that ignores poisoning, the `tgt_name` check of the NVMe-oF methods, the clock behind the
//! `ticks` Shoal reports, and the mapping of bdev-layer errors to RPC errors.

use std::sync::{OnceLock, PoisonError};
use std::time::Instant;

use shoal_bdev::BdevError;

use crate::rpc::params::nvmf::DEFAULT_TGT_NAME;
use crate::rpc::{RpcError, error};

/// Ticks per second of the `ticks` Shoal reports (nanoseconds of a monotonic clock;
/// [`ticks`]).
pub const TICK_RATE: u64 = 1_000_000_000;

/// Nanoseconds since the first call in this process (SPDK reports TSC ticks).
#[must_use]
pub fn ticks() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Locks `m`, ignoring poisoning (a panicking RPC handler must not wedge the daemon).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Refuses a `tgt_name` other than SPDK's default target (Shoal has one target).
pub(crate) fn check_tgt(tgt_name: Option<&str>) -> Result<(), RpcError> {
    match tgt_name {
        None => Ok(()),
        Some(t) if t == DEFAULT_TGT_NAME => Ok(()),
        Some(t) => Err(RpcError::internal(format!(
            "Unable to find a target: `{t}` (Shoal has one target, `{DEFAULT_TGT_NAME}`)"
        ))),
    }
}

/// Maps a bdev-layer error to the RPC error SPDK would answer for the same cause.
pub fn bdev_error(context: &str, e: &BdevError) -> RpcError {
    match e {
        BdevError::Invalid(m) => RpcError::invalid_argument(format!("{context}: {m}")),
        BdevError::Os(io) => {
            // The bdev layer may wrap the OS error with context, keeping only its kind.
            let code = io.raw_os_error().unwrap_or(match io.kind() {
                std::io::ErrorKind::NotFound => error::ENOENT,
                std::io::ErrorKind::PermissionDenied => 13, // EACCES
                std::io::ErrorKind::OutOfMemory => error::ENOMEM,
                std::io::ErrorKind::InvalidInput => error::EINVAL,
                _ => error::EIO,
            });
            if error::errno_text(code) == "Unknown error" {
                RpcError::new(code.saturating_neg(), format!("{context}: {io}"))
            } else {
                RpcError::errno(code, format!("{context}: {io}"))
            }
        }
        BdevError::Closed => RpcError::no_such_device(format!("{context}: the device is closed")),
        other => RpcError::internal(format!("{context}: {other}")),
    }
}
