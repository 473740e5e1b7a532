//! Checked byte reading and bounded byte writing.
//!
//! Peer bytes are never indexed directly: a [`Reader`] only offers reads that return `None`
//! when the input is too short, in the style of rustls' `msgs::codec::Reader`. A [`Writer`]
//! encodes into a caller-provided slice and reports [`BufferTooSmall`] instead of panicking or
//! allocating.

use thiserror::Error;

/// A cursor over borrowed bytes that only offers checked reads.
///
/// Every read either returns the requested value and advances, or returns `None` and leaves
/// the cursor where it was.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, offset: 0 }
    }

    /// Number of bytes consumed so far.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.offset)
    }

    /// True when every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Takes the next `n` bytes, or `None` if fewer remain.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.offset.checked_add(n)?;
        let bytes = self.buf.get(self.offset..end)?;
        self.offset = end;
        Some(bytes)
    }

    /// Takes the next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = self.take(N)?;
        bytes.try_into().ok()
    }

    /// Skips `n` bytes (e.g. a reserved field).
    pub fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    /// Takes every byte not yet consumed (possibly none).
    pub fn rest(&mut self) -> &'a [u8] {
        let bytes = self.buf.get(self.offset..).unwrap_or(&[]);
        self.offset = self.buf.len();
        bytes
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    /// Reads a little-endian `u16`.
    pub fn u16_le(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    /// Reads a little-endian `u32`.
    pub fn u32_le(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    /// Reads a little-endian `u64`.
    pub fn u64_le(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

/// The output slice given to a [`Writer`] was too small for what was being encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("output buffer too small: need {needed} bytes, have {available}")]
pub struct BufferTooSmall {
    /// Total bytes the encoding needed.
    pub needed: usize,
    /// Size of the output slice.
    pub available: usize,
}

/// Encodes into a caller-provided slice without allocating.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Writer<'a> {
    /// Starts writing at the beginning of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0 }
    }

    /// Number of bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes still available in the output slice.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.len)
    }

    /// The bytes written so far.
    pub fn written(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// Reserves the next `n` bytes and returns them for writing.
    fn reserve(&mut self, n: usize) -> Result<&mut [u8], BufferTooSmall> {
        let available = self.buf.len();
        let end = self.len.checked_add(n).ok_or(BufferTooSmall {
            needed: usize::MAX,
            available,
        })?;
        let start = self.len;
        let slot = self.buf.get_mut(start..end).ok_or(BufferTooSmall {
            needed: end,
            available,
        })?;
        self.len = end;
        Ok(slot)
    }

    /// Appends `bytes`.
    pub fn put_slice(&mut self, bytes: &[u8]) -> Result<(), BufferTooSmall> {
        self.reserve(bytes.len())?.copy_from_slice(bytes);
        Ok(())
    }

    /// Appends `n` zero bytes (reserved fields, padding).
    pub fn put_zeros(&mut self, n: usize) -> Result<(), BufferTooSmall> {
        self.reserve(n)?.fill(0);
        Ok(())
    }

    /// Appends one byte.
    pub fn put_u8(&mut self, v: u8) -> Result<(), BufferTooSmall> {
        self.put_slice(&[v])
    }

    /// Appends a little-endian `u16`.
    pub fn put_u16_le(&mut self, v: u16) -> Result<(), BufferTooSmall> {
        self.put_slice(&v.to_le_bytes())
    }

    /// Appends a little-endian `u32`.
    pub fn put_u32_le(&mut self, v: u32) -> Result<(), BufferTooSmall> {
        self.put_slice(&v.to_le_bytes())
    }

    /// Appends a little-endian `u64`.
    pub fn put_u64_le(&mut self, v: u64) -> Result<(), BufferTooSmall> {
        self.put_slice(&v.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_checked_reads() {
        let bytes = [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8(), Some(1));
        assert_eq!(r.u16_le(), Some(0x0302));
        assert_eq!(r.u32_le(), Some(0x0706_0504));
        assert_eq!(r.remaining(), 4);
        // Not enough for a u64: the cursor must not move.
        assert_eq!(r.u64_le(), None);
        assert_eq!(r.offset(), 7);
        assert_eq!(r.take(5), None);
        assert_eq!(r.take(2), Some(&[8u8, 9][..]));
        assert_eq!(r.rest(), &[10u8, 11][..]);
        assert!(r.is_empty());
        assert_eq!(r.u8(), None);
        assert_eq!(r.rest(), &[] as &[u8]);
        assert_eq!(r.take(usize::MAX), None);
    }

    #[test]
    fn writer_bounds() {
        let mut buf = [0xAAu8; 8];
        let mut w = Writer::new(&mut buf);
        w.put_u16_le(0x0201).unwrap();
        w.put_zeros(2).unwrap();
        assert_eq!(
            w.put_u64_le(1),
            Err(BufferTooSmall {
                needed: 12,
                available: 8
            })
        );
        // A failed write leaves what was written intact.
        assert_eq!(w.len(), 4);
        w.put_u32_le(0x0605_0403).unwrap();
        assert_eq!(w.remaining(), 0);
        assert_eq!(w.written(), &[1, 2, 0, 0, 3, 4, 5, 6]);
        assert!(w.put_u8(0).is_err());
    }
}
