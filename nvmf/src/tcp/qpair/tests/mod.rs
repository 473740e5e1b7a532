//! Unit tests of the sans-IO queue pair.
