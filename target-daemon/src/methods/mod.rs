//! The JSON-RPC methods `shoald` serves, wired to its [`Daemon`] state.
//!
//! Names, params and result shapes follow SPDK (`lib/bdev/bdev_rpc.c`, `module/bdev/*/*_rpc.c`,
//! `lib/nvmf/nvmf_rpc.c`, `lib/init/subsystem_rpc.c`), so that `scripts/rpc.py` and tools
//! built on it work against Shoal:
//!
//! * [`misc`]: `framework_*`, `save_config` and the document it builds, `spdk_kill_instance`;
//! * [`bdev`]: `bdev_malloc_*`, `bdev_null_*`, `bdev_uring_*`, `bdev_get_bdevs`,
//!   `bdev_get_iostat`, and the claim rules shared by every bdev deletion;
//! * [`vbdev`]: the stacked `bdev_error_*`, `bdev_delay_*` and `bdev_pfail_*` devices;
//! * [`nvmf`]: transport, subsystems, namespaces and hosts;
//! * [`nvmf_query`]: listeners, controllers, queue pairs and statistics;
//! * [`io`]: running block I/O (flushes) from an RPC thread on a reactor, and [`flush_all`];
//! * [`nexus`]: replicated volumes (`nexus_*`); [`nexus_pause`]: their writes held for a
//!   snapshot;
//! * [`lvol`]: pools and logical volumes (`bdev_lvol_*`), and examine.
//!
//! # Policies
//!
//! * **Claims.** As in SPDK, a bdev used by a namespace or by a stacked bdev (error, delay) is
//!   *claimed*: it cannot back a second namespace or stacked bdev. Deleting a claimed bdev is
//!   refused with `-16` (`EBUSY`) naming who holds it (SPDK would hot-remove the namespace or
//!   the stacked bdev instead; refusing cannot take a volume away from a host by mistake).
//!   Remove the namespace (`nvmf_subsystem_remove_ns`) or the stacked bdev first.
//! * **Error codes.** Bdev name clashes answer `-17`, unknown bdevs `-19`, as SPDK. The NVMe-oF
//!   methods answer SPDK's codes: an unknown subsystem in `nvmf_subsystem_*` is `-32602`
//!   (`Unable to find subsystem with NQN ...`), a duplicate subsystem or transport `-32603`,
//!   `nvmf_get_subsystems` of an unknown NQN `-19`. Messages say what is wrong and name the
//!   object, which SPDK's often do not.
//! * **Recipes.** Each bdev creation records its params (with the generated UUID), in creation
//!   order, so that `save_config` recreates the same devices; the NVMe-oF part of the document
//!   is built from the live target.

use std::sync::PoisonError;

use crate::daemon::Daemon;
use crate::rpc::params::HOUSEKEEPING_METHODS;
use crate::rpc::params::nvmf::DEFAULT_TGT_NAME;
use crate::rpc::{Registry, RpcError, RpcState};

pub mod bdev;
pub mod io;
pub mod lvol;
pub mod misc;
pub mod nexus;
pub mod nexus_pause;
pub mod nvmf;
pub mod nvmf_query;
pub mod vbdev;

pub use crate::stacked::Stacked;
pub use io::flush_all;

/// Every method `shoald` serves.
pub fn registry() -> Registry<Daemon> {
    let mut registry = Registry::new();
    misc::register(&mut registry);
    bdev::register(&mut registry);
    vbdev::register(&mut registry);
    nvmf::register(&mut registry);
    nvmf_query::register(&mut registry);
    nexus::register(&mut registry);
    nexus_pause::register(&mut registry);
    lvol::register(&mut registry);
    // SPDK tuning methods found in configs saved by SPDK: `rpc.py load_config` refuses a config
    // naming a method the server does not list, so they are listed (and ignored with a warning).
    registry.register_ignored(HOUSEKEEPING_METHODS);
    registry
}

/// Moves the registry to its run-time state once the start-up configuration is applied.
pub fn finish_init(registry: &Registry<Daemon>) {
    registry.state().set(RpcState::Runtime);
}

/// Ticks per second of the `ticks` Shoal reports (nanoseconds of a monotonic clock;
/// [`misc::ticks`]).
pub const TICK_RATE: u64 = 1_000_000_000;

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
