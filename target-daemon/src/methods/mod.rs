//! The JSON-RPC methods `shoald` serves, wired to its [`Daemon`] state.
//!
//! Names, params and result shapes follow SPDK (`lib/bdev/bdev_rpc.c`, `module/bdev/*/*_rpc.c`,
//! `lib/nvmf/nvmf_rpc.c`, `lib/init/subsystem_rpc.c`), so that `scripts/rpc.py` and tools
//! built on it work against Shoal:
//!
//! * [`misc`]: `framework_*`, `save_config` and the document it builds, `spdk_kill_instance`;
//! * [`bdev`]: `bdev_malloc_*`, `bdev_null_*`, `bdev_uring_*`, `bdev_get_bdevs`,
//!   `bdev_get_iostat`;
//! * [`vbdev`]: the stacked `bdev_error_*`, `bdev_delay_*` and `bdev_pfail_*` devices;
//! * [`nvmf`]: transport, subsystems, namespaces and hosts;
//! * [`nvmf_query`]: listeners, controllers, queue pairs and statistics;
//! * [`io`]: running block I/O (flushes) from an RPC thread on a reactor, and [`flush_all`];
//! * [`nexus`]: replicated volumes (`nexus_*`); [`nexus_pause`]: their writes held for a
//!   snapshot;
//! * [`lvol`]: pools and logical volumes (`bdev_lvol_*`).
//!
//! Below the method files, importing none of them, the parts they share:
//!
//! * [`claims`]: what every bdev creation and deletion shares (name checks, registration with
//!   examine, recipes, the claim rules, deletion);
//! * [`pools`]: the pool lookups the claims and `bdev_get_bdevs` consult, examine, and a
//!   volume's registration as a bdev; [`nexus_live`]: the live nexuses and which one has a
//!   given child;
//! * [`common`]: the poison-ignoring lock, the `tgt_name` check, the clock behind `ticks`
//!   ([`TICK_RATE`]) and the mapping of bdev-layer errors to RPC errors.
//!
//! The layers go one way: this file (the dispatch, naming every method) imports the method
//! files; those that make, delete or export bdevs import `claims`; `claims` imports `pools`
//! and `nexus_live`; all of them use `common`. Between method files the only arrows are
//! `misc` to `nvmf` and `nvmf_query`, `nvmf_query` to `nvmf`, `nexus_pause` to `nexus`. No
//! file imports one above it.
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

use crate::daemon::Daemon;
use crate::rpc::params::HOUSEKEEPING_METHODS;
use crate::rpc::{Registry, RpcState};

pub mod bdev;
pub mod claims;
pub mod common;
pub mod io;
pub mod lvol;
pub mod misc;
pub mod nexus;
pub mod nexus_live;
pub mod nexus_pause;
pub mod nvmf;
pub mod nvmf_query;
pub mod pools;
pub mod vbdev;

pub use crate::stacked::Stacked;
pub use common::TICK_RATE;
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
