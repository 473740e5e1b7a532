//! The wire format, shared by the target and the host: no state, no I/O.
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
//! - `txq`: the send queue both sides pack PDU headers into (pooled arenas, data buffers
//!   queued as they are); it holds buffers, the reactor glue of each side sends them.

pub mod codec;
pub mod command;
pub mod pdu;
pub mod spec;
pub(crate) mod txq;
