//! Tests of what is particular to each backend: fault injection (`error`), added latency
//! (`delay`), and file / block-device handling (`uring`). What every backend must do is in
//! `tests/conformance.rs`.

// Test arithmetic on small constants (block counts, sizes, seeds): a truncating cast cannot
// happen here, and if it did the data comparisons would fail.
#![allow(clippy::cast_possible_truncation)]

#[path = "../common/mod.rs"]
mod common;

mod delay;
mod error;
mod resize;
mod uring;
