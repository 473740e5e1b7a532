//! A reader that offers only checked reads, and a little-endian writer, for the metadata
//! structures. Bytes from the disk are never indexed directly: every read is bounds-checked and
//! a short buffer is a [`FormatError::Truncated`], never a panic.

use uuid::Uuid;

use super::FormatError;

/// Checked little-endian reads over a byte slice.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads `buf`, naming `what` in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { buf, pos: 0, what }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(FormatError::Truncated(self.what))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(FormatError::Truncated(self.what))?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.array::<1>()?[0])
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A UUID (16 bytes, RFC 4122 byte order).
    pub fn uuid(&mut self) -> Result<Uuid, FormatError> {
        Ok(Uuid::from_bytes(self.array()?))
    }

    /// A name: one length byte, then that many bytes of UTF-8, at most
    /// [`super::NAME_MAX`] and not empty.
    pub fn name(&mut self) -> Result<String, FormatError> {
        let n = usize::from(self.u8()?);
        if n == 0 || n > super::NAME_MAX {
            return Err(FormatError::Invalid(format!(
                "{}: a name of {n} bytes (1..={} allowed)",
                self.what,
                super::NAME_MAX
            )));
        }
        let s = self.take(n)?;
        String::from_utf8(s.to_vec())
            .map_err(|_| FormatError::Invalid(format!("{}: a name that is not UTF-8", self.what)))
    }
}

/// Little-endian appends to a byte vector.
#[derive(Default)]
pub struct Writer {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// Appends a byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// Appends a little-endian u16.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends a little-endian u32.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends a little-endian u64.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends a UUID.
    pub fn uuid(&mut self, v: &Uuid) {
        self.buf.extend_from_slice(v.as_bytes());
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// Appends a name (length byte, bytes). Names are checked by [`super::check_name`] before
    /// they reach the format; a longer one is cut at [`super::NAME_MAX`] bytes here rather
    /// than written unreadable.
    pub fn name(&mut self, v: &str) {
        let b = v.as_bytes();
        let n = b.len().min(super::NAME_MAX);
        self.u8(u8::try_from(n).unwrap_or(u8::MAX));
        self.bytes(b.get(..n).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reads_are_errors() {
        let mut r = Reader::new(&[1, 2, 3], "test");
        assert_eq!(r.u16().unwrap(), 0x0201);
        assert!(matches!(r.u32(), Err(FormatError::Truncated("test"))));
        assert_eq!(r.u8().unwrap(), 3);
        assert!(r.u8().is_err());
        let mut r = Reader::new(&[0], "n");
        assert!(r.name().is_err(), "an empty name is refused");
        let mut r = Reader::new(&[3, b'a', 0xff, b'c'], "n");
        assert!(r.name().is_err(), "a name that is not UTF-8 is refused");
    }
}
