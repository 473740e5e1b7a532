//! NVMe over TCP: the wire format, the target and the host.
//!
//! The crate has three parts, each a module:
//!
//! - [`wire`]: the formats both sides share (checked codec, NVMe structures, NVMe/TCP PDUs and
//!   their deframer, typed commands, the send queue). No state machines, no I/O.
//! - [`target`]: subsystems, controllers, discovery, the sans-IO queue pair
//!   ([`target::tcp::qpair::QueuePair`]) and its thin TCP glue.
//! - [`host`]: the initiator: the sans-IO queue pair (`host::queue::QueueCore`), its
//!   connection glue, controllers with reconnection, discovery, and the remote bdev.
//!
//! `wire` depends on nothing else here; `target` and `host` depend on `wire` and never on
//! each other. The protocol logic is sans-IO and safe Rust: it takes bytes and produces PDUs
//! and block device requests. Sockets and rings belong to the reactors of `shoal-bdev`.
//!
//! Every decision taken on a peer's bytes cites the section of NVMe Base 2.0, NVMe-oF 1.1
//! or NVMe/TCP it enforces; nothing a peer sends can panic this crate (see `fuzz/`).
#![forbid(unsafe_code)]

pub mod host;
pub mod target;
pub mod wire;
