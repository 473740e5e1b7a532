//! Block devices and the reactors that drive them.
//!
//! This crate is the lowest layer of Shoal. It holds:
//! - [`reactor`]: one pinned thread per core, each polling its own io_uring for disks and
//!   sockets alike, with adaptive polling (spin while busy, sleep in the kernel when idle);
//! - the block-device trait and its backends (`uring`, `malloc`, `null`, `error`, `delay`).
//!
//! See `ARCHITECTURE.md` at the repository root for the I/O path and buffer ownership rules.
