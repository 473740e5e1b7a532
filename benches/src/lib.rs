//! Benchmarks and load tools for Shoal (criterion benches and the `shoal-perf` load tool).

pub mod perf;
