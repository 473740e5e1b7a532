//! NVMe data structures as they appear on the wire and in data buffers.
//!
//! Every structure is a `#[repr(C)]` zerocopy type built from little-endian field types
//! (`zerocopy::little_endian::{U16, U32, U64, U128}`), which have an alignment of one, so a
//! structure can be read from any peer buffer of the right length without `unsafe` and
//! without alignment concerns. Each has a compile-time size assertion and a test of its
//! field offsets against NVMe Base 2.0 / NVMe-oF 1.1.
//!
//! - [`sqe`]: the 64-byte submission queue entry and its SGL descriptor.
//! - [`cqe`]: the 16-byte completion queue entry.
//! - [`status`]: command status (status code type + status code).
//! - [`opcode`]: admin, I/O and fabrics opcodes.
//! - [`fabrics`]: Connect, Property Get/Set and the Connect data.
//! - [`property`]: controller properties (CAP, VS, CC, CSTS) and their bitfields.
//! - [`identify`]: Identify Controller / Namespace and namespace identification descriptors.
//! - [`log`]: log page identifiers and log page layouts, including the discovery log.
//! - [`features`]: feature identifiers.
//! - [`dsm`]: Dataset Management ranges.

pub mod cqe;
pub mod dsm;
pub mod fabrics;
pub mod features;
pub mod identify;
pub mod log;
pub mod opcode;
pub mod property;
pub mod sqe;
pub mod status;

pub use cqe::Cqe;
pub use opcode::{FabricsType, Opcode};
pub use sqe::{SglDescriptor, Sqe};
pub use status::{Status, StatusCodeType};

/// Copies `s` into a fixed-size, space-padded ASCII field (serial number, model number,
/// firmware revision: NVMe Base 2.0 Identify Controller, "ASCII string ... padded with spaces").
/// Longer input is truncated.
pub fn ascii_field<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    for (dst, src) in out.iter_mut().zip(s.bytes()) {
        *dst = src;
    }
    out
}

/// Copies `s` into a fixed-size, NUL-padded UTF-8 field (NQNs: NVMe Base 2.0 "NVM Qualified Names",
/// "NQN ... UTF-8 ... null-terminated"). Input longer than `N - 1` bytes is truncated so the
/// field always keeps a terminating NUL.
pub fn nqn_field<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let max = N.saturating_sub(1);
    for (dst, src) in out.iter_mut().take(max).zip(s.bytes()) {
        *dst = src;
    }
    out
}

/// Reads a NUL-terminated (or field-filling) UTF-8 string from a fixed-size field, such as an
/// NQN in the Connect data. Returns `None` if the bytes before the first NUL are not UTF-8.
pub fn field_str(field: &[u8]) -> Option<&str> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    core::str::from_utf8(field.get(..end)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_fields() {
        assert_eq!(&ascii_field::<8>("abc"), b"abc     ");
        assert_eq!(&ascii_field::<2>("abc"), b"ab");
        let nqn: [u8; 8] = nqn_field("nqn.2014-08");
        assert_eq!(&nqn, b"nqn.201\0");
        assert_eq!(field_str(&nqn), Some("nqn.201"));
        assert_eq!(field_str(b"ab\0cd"), Some("ab"));
        assert_eq!(field_str(b"abcd"), Some("abcd"));
        assert_eq!(field_str(&[0xFF, 0xFE, 0]), None);
    }
}
