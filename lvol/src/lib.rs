//! Pools (lvstores) and logical volumes (lvols) on any bdev, as SPDK's lvol module offers them.
//!
//! - [`format`]: the on-disk format (sans-IO): superblock, checkpoints, journal pages and
//!   records, every one with a magic, a version and a CRC-32C;
//! - [`table`]: the pool's table in memory (volumes and their cluster maps), built from a
//!   checkpoint and the journal;
//! - `state` (private): the core state that everything else builds on and that uses nothing
//!   but the format: the pool's struct ([`Lvs`]), a volume's bdev ([`LvolBdev`]) and the
//!   state its channels share (cluster map, parent, I/O counters);
//! - [`store`]: a pool on a bdev: creation, opening (examine), the journal writer with group
//!   commit, checkpoints, cluster allocation, and the volume operations;
//! - `channel` (private): a volume's I/O path on each reactor, which asks the pool's home
//!   (`store`) for clusters;
//! - [`lvol`]: a volume as a bdev (`Bdev`, whose channels are `channel`'s), and the volume's
//!   types from `state`.
//!
//! The imports point one way: `lvol` uses `channel` and `state`, `channel` uses `store` and
//! `state`, `store` uses `state`, and `state` only `format`; none uses a module above it.
//!
//! ARCHITECTURE.md ("Pools and logical volumes") describes the format and the rules that make
//! it crash-consistent.

pub mod error;
pub mod format;
pub mod table;

pub use error::LvolError;
mod channel;
pub mod lvol;
mod state;
pub mod store;

pub use state::{LvolBdev, Lvs};
pub use store::{LvolOptions, LvsInfo};
