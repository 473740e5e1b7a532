//! NVMe over TCP: PDUs, commands, controllers, subsystems, discovery and the host side.
//!
//! The protocol logic is sans-IO and safe Rust: it takes bytes and produces PDUs and block
//! device requests. Sockets and rings belong to the reactors of `shoal-bdev`. The target's
//! queue pair is [`tcp::qpair::QueuePair`] (the glue to a reactor is the rest of [`tcp`]);
//! the host's is `host::queue::QueueCore`.
//!
//! # The wire layer
//!
//! - [`codec`]: a checked byte [`codec::Reader`] (every read returns `Option`) and a bounded
//!   [`codec::Writer`]; peer bytes are never indexed directly.
//! - [`spec`]: NVMe structures as zerocopy little-endian types with compile-time size checks:
//!   the 64-byte [`spec::Sqe`], the 16-byte [`spec::Cqe`], [`spec::Status`], opcodes,
//!   fabrics Connect / Property commands, controller properties, Identify data, log pages.
//! - [`pdu`]: NVMe/TCP PDUs (NVMe-oF 1.1 section 7.4, the NVMe/TCP transport binding):
//!   typed headers with allocation-free encoding into caller buffers (data travels as a
//!   separate iovec), CRC32C digests, and the incremental, bounded [`pdu::Deframer`] that
//!   validates every header field against the PDU type and the negotiated connection limits
//!   before the caller buffers any payload.
//! - [`command`]: typed admin, I/O and fabrics commands parsed from a raw SQE, the NVMe/TCP
//!   SGL check and the overflow-safe LBA range check. Unknown opcodes stay representable and
//!   map to Invalid Command Opcode.
//!
//! Every decision taken on a peer's bytes cites the section of NVMe Base 2.0, NVMe-oF 1.1
//! or NVMe/TCP it enforces; nothing a peer sends can panic this crate (see `fuzz/`).
#![forbid(unsafe_code)]

pub mod codec;
pub mod command;
pub mod controller;
pub mod host;
pub mod pdu;
pub mod spec;
pub mod subsystem;
pub mod tcp;
mod txq;
