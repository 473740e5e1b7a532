//! The helpers of the bdev conformance suite's harness, for this crate's other tests (and the
//! `lvol` tests that include this file).

#![allow(unused_imports)]

pub use shoal_bdev_conformance::harness::*;
