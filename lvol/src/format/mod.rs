//! The on-disk format of a pool (sans-IO: bytes in, typed structures or a [`FormatError`]
//! out). ARCHITECTURE.md, "Pools and logical volumes", describes the layout and the rules
//! that make it crash-consistent.
//!
//! Every structure starts with an 8-byte magic and a format version and is covered by a
//! CRC-32C: [`superblock`] (two copies, never rewritten), [`checkpoint`] (the whole table,
//! two areas written in turn), [`journal`] (a ring of pages of [`record`]s chained by CRC).
//! A structure from a newer format version is refused with [`FormatError::FutureVersion`];
//! anything else that does not decode is a [`FormatError`] naming what is wrong.

pub mod checkpoint;
pub mod codec;
pub mod journal;
pub mod record;
pub mod superblock;

/// The unit of metadata I/O and of the layout.
pub const PAGE: usize = 4096;
/// The format version this code writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// The superblock's magic.
pub const SB_MAGIC: &[u8; 8] = b"SHOALLVS";
/// A checkpoint header's magic.
pub const CKPT_MAGIC: &[u8; 8] = b"SHOALCKP";
/// A journal page's magic.
pub const JNL_MAGIC: &[u8; 8] = b"SHOALJNL";
/// The longest pool or volume name, in bytes (SPDK allows 63 and a NUL).
pub const NAME_MAX: usize = 63;
/// Volumes a pool can hold.
pub const MAX_LVOLS: usize = 1024;
/// The journal pages of a pool of at least 1 GiB (64 below): the most the format writes, and
/// the most a superblock may claim.
pub const MAX_JOURNAL_PAGES: u64 = 1024;
/// The clusters of all the volumes of a pool together, allocated or not: the I/O path holds
/// a map of 8 bytes a cluster for each volume (at most 2 GiB for a pool). A volume that
/// would pass it is refused, and a pool whose metadata passes it does not open, rather than
/// the daemon running out of memory. A pool's data clusters are bounded by it too (their
/// free set and use map are in memory; more could never be mapped by its volumes).
pub const MAX_POOL_CLUSTERS: u64 = 1 << 28;

/// Metadata that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// No pool's magic: the device holds no pool.
    #[error("no pool on this device")]
    NotAPool,
    /// Written by a newer version of the format.
    #[error("{what} has format version {found}; this Shoal reads versions up to {FORMAT_VERSION}")]
    FutureVersion {
        /// The structure.
        what: &'static str,
        /// Its version.
        found: u32,
    },
    /// A checksum does not match.
    #[error("{0}: checksum mismatch")]
    BadCrc(&'static str),
    /// The structure ends too early.
    #[error("{0}: truncated")]
    Truncated(&'static str),
    /// A field holds an impossible value.
    #[error("{0}")]
    Invalid(String),
}

/// Checks the magic and the version at the start of a structure.
///
/// # Errors
/// [`FormatError::NotAPool`] without the magic, [`FormatError::FutureVersion`] for a newer
/// version, [`FormatError::Invalid`] for version 0.
pub fn check_magic_version(
    buf: &[u8],
    magic: &[u8; 8],
    what: &'static str,
) -> Result<(), FormatError> {
    if buf.get(..8) != Some(&magic[..]) {
        return Err(FormatError::NotAPool);
    }
    let mut r = codec::Reader::new(buf, what);
    r.take(8)?;
    let v = r.u32()?;
    if v > FORMAT_VERSION {
        return Err(FormatError::FutureVersion { what, found: v });
    }
    if v == 0 {
        return Err(FormatError::Invalid(format!("{what}: format version 0")));
    }
    Ok(())
}

/// Checks a pool or volume name: 1 to [`NAME_MAX`] bytes, no `/` (the alias separator), no
/// control characters.
///
/// # Errors
/// A message naming the fault.
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > NAME_MAX {
        return Err(format!(
            "{kind} name `{name}` must have 1 to {NAME_MAX} bytes"
        ));
    }
    if name.contains('/') || name.chars().any(char::is_control) {
        return Err(format!(
            "{kind} name `{name}` must not contain `/` or control characters"
        ));
    }
    Ok(())
}
