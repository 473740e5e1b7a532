//! The bdev conformance suite: the checks every Shoal block device must pass, whatever it is
//! (a RAM disk, a file through io_uring, a fault-injecting or delaying stack, a logical
//! volume, a namespace of a remote target over NVMe/TCP, a nexus of replicas), so that a
//! device's user can rely on the `Bdev` contract and nothing more.
//!
//! A crate that has a kind of device makes [`Backend`]s (a factory and what the device
//! promises) and runs every check against each with [`conformance!`], in its own tests:
//!
//! ```ignore
//! use shoal_bdev_conformance::{Backend, Fixture, NUM_BLOCKS, conformance};
//! fn ram(bs: u32) -> Fixture { /* a device of NUM_BLOCKS blocks of bs bytes */ }
//! const RAM: Backend = Backend { make: ram, stores_data: true, unmap_zeroes: true };
//! conformance! { ram_512: RAM, 512; ram_4096: RAM, 4096; }
//! ```
//!
//! Runs in `bdev` (malloc, null, uring, error, delay, pfail), `lvol` (thick, thin, clone),
//! `nvmf` (the remote NVMe/TCP bdev) and `replication` (the nexus). [`harness`] drives a
//! device from a test thread: a reactor, a channel, a sink that collects completions. Dev-only:
//! no crate depends on it outside its tests.

// Test arithmetic on small constants (block counts, sizes, seeds): a truncating cast cannot
// happen here, and if it did the data comparisons would fail.
#![allow(clippy::cast_possible_truncation)]

pub mod harness;
pub mod suite;

pub use suite::{Backend, Fixture, NUM_BLOCKS, assert_out_of_range};

/// Instantiates every check for each `name: backend, block_size;` as `name::check`.
#[macro_export]
macro_rules! conformance {
    ($($name:ident: $backend:expr, $bs:expr;)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn b() -> &'static $crate::Backend { &$backend }
            #[test] fn geometry() { $crate::suite::geometry(b(), $bs) }
            #[test] fn write_then_read() { $crate::suite::write_then_read(b(), $bs) }
            #[test] fn first_and_last_block() { $crate::suite::first_and_last_block(b(), $bs) }
            #[test] fn out_of_range() { $crate::suite::out_of_range(b(), $bs) }
            #[test] fn bad_length() { $crate::suite::bad_length(b(), $bs) }
            #[test] fn flush() { $crate::suite::flush(b(), $bs) }
            #[test] fn write_zeroes() { $crate::suite::write_zeroes(b(), $bs) }
            #[test] fn force_unit_access() { $crate::suite::force_unit_access(b(), $bs) }
            #[test] fn unmap() { $crate::suite::unmap(b(), $bs) }
            #[test] fn closed() { $crate::suite::closed(b(), $bs) }
            #[test] fn scatter_gather() { $crate::suite::scatter_gather(b(), $bs) }
            #[test] fn many_in_flight() { $crate::suite::many_in_flight(b(), $bs) }
            #[test] fn keeps_buffers() { $crate::suite::keeps_buffers(b(), $bs) }
            #[test] fn two_reactors() { $crate::suite::two_reactors(b(), $bs) }
            #[test] fn closed_loop_leaves_room_for_timers() {
                $crate::suite::closed_loop_leaves_room_for_timers(b(), $bs)
            }
        }
    )*};
}
