//! NVMe over TCP: PDUs, commands, controllers, subsystems, discovery and the host side.
//!
//! The protocol logic is sans-IO and safe Rust: it takes bytes and produces PDUs and block
//! device requests. Sockets and rings belong to the reactors of `shoal-bdev`.
#![forbid(unsafe_code)]
