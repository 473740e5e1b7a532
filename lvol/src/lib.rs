//! Pools (lvstores) and logical volumes (lvols) on any bdev, as SPDK's lvol module offers them.
//!
//! - [`format`]: the on-disk format (sans-IO): superblock, checkpoints, journal pages and
//!   records, every one with a magic, a version and a CRC-32C;
//! - [`table`]: the pool's table in memory (volumes and their cluster maps), built from a
//!   checkpoint and the journal;
//! - [`store`]: a pool on a bdev: creation, opening (examine), the journal writer with group
//!   commit, checkpoints, cluster allocation, and the volume operations;
//! - [`lvol`]: a volume as a bdev (`Bdev`), and its I/O path on each reactor.
//!
//! ARCHITECTURE.md ("Pools and logical volumes") describes the format and the rules that make
//! it crash-consistent.

pub mod error;
pub mod format;
pub mod table;

pub use error::LvolError;
mod channel;
pub mod lvol;
pub mod store;

pub use lvol::LvolBdev;
pub use store::{LvolOptions, Lvs, LvsInfo};
