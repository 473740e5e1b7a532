//! Checkpoints: the whole table, written to one of two areas in turn. A header page (magic,
//! version, pool UUID, generation, the journal position it covers, payload length and CRC,
//! its own CRC) precedes the payload. The newest valid generation wins; a torn checkpoint
//! leaves the other area, one generation older, in force.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::codec::{Reader, Writer};
use super::record::LvolHeader;
use super::{CKPT_MAGIC, FORMAT_VERSION, FormatError, MAX_LVOLS, NAME_MAX, PAGE};
use crate::table::{LvolMeta, Table};

/// Bytes of the header covered by its CRC.
const HDR_BODY: usize = 64;

/// A checkpoint's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CkptHeader {
    /// The pool it belongs to.
    pub lvs: Uuid,
    /// Its generation (the newer of the two areas wins).
    pub generation: u64,
    /// The first journal page not included: replay starts there.
    pub journal_seq: u64,
    /// The CRC of the journal page before `journal_seq` (the chain's start).
    pub journal_prev_crc: u32,
    /// Payload bytes (after the header page).
    pub payload_len: u64,
    /// CRC-32C of the payload.
    pub payload_crc: u32,
}

/// The payload's upper bound for a pool of `clusters` data clusters: the pool's name, the
/// largest volume header and count for each of [`MAX_LVOLS`] volumes, 16 bytes per mapped
/// cluster (each data cluster is mapped at most once).
pub fn max_payload(clusters: u64) -> u64 {
    let per_lvol = (16 + 1 + NAME_MAX + 8 + 4 + 1 + 16 + 8) as u64;
    (1 + NAME_MAX as u64 + 4)
        .saturating_add(per_lvol.saturating_mul(MAX_LVOLS as u64))
        .saturating_add(clusters.saturating_mul(16))
}

impl CkptHeader {
    /// Encodes the header page.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(CKPT_MAGIC);
        w.u32(FORMAT_VERSION);
        w.u32(u32::try_from(HDR_BODY).unwrap_or(0));
        w.uuid(&self.lvs);
        w.u64(self.generation);
        w.u64(self.journal_seq);
        w.u32(self.journal_prev_crc);
        w.u32(self.payload_crc);
        w.u64(self.payload_len);
        debug_assert_eq!(w.buf.len(), HDR_BODY);
        let crc = crc32c::crc32c(&w.buf);
        w.u32(crc);
        w.buf.resize(PAGE, 0);
        w.buf
    }

    /// Decodes a header page.
    ///
    /// # Errors
    /// Missing magic, a future version, a bad CRC or length.
    pub fn decode(page: &[u8]) -> Result<CkptHeader, FormatError> {
        super::check_magic_version(page, CKPT_MAGIC, "checkpoint").map_err(|e| match e {
            FormatError::NotAPool => FormatError::Invalid("no checkpoint here".into()),
            e => e,
        })?;
        let body = page
            .get(..HDR_BODY)
            .ok_or(FormatError::Truncated("checkpoint"))?;
        let mut r = Reader::new(page, "checkpoint");
        r.take(12)?;
        if usize::try_from(r.u32()?).ok() != Some(HDR_BODY) {
            return Err(FormatError::Invalid("checkpoint: header length".into()));
        }
        let h = CkptHeader {
            lvs: r.uuid()?,
            generation: r.u64()?,
            journal_seq: r.u64()?,
            journal_prev_crc: r.u32()?,
            payload_crc: r.u32()?,
            payload_len: r.u64()?,
        };
        if r.u32()? != crc32c::crc32c(body) {
            return Err(FormatError::BadCrc("checkpoint header"));
        }
        Ok(h)
    }
}

/// Encodes the table as a checkpoint payload.
pub fn encode_table(t: &Table) -> Vec<u8> {
    let mut w = Writer::new();
    w.name(&t.lvs_name);
    w.u32(u32::try_from(t.lvols.len()).unwrap_or(u32::MAX));
    for m in t.lvols.values() {
        m.header.encode(&mut w);
        w.u64(m.map.len() as u64);
    }
    for m in t.lvols.values() {
        for (&i, &p) in &m.map {
            w.u64(i);
            w.u64(p);
        }
    }
    w.buf
}

/// Decodes a checkpoint payload.
///
/// # Errors
/// Truncated input, too many volumes, entries out of order, bytes left over.
pub fn decode_table(payload: &[u8]) -> Result<Table, FormatError> {
    let mut r = Reader::new(payload, "checkpoint payload");
    let lvs_name = r.name()?;
    let n = r.u32()?;
    if usize::try_from(n).map_or(true, |n| n > MAX_LVOLS) {
        return Err(FormatError::Invalid(format!(
            "checkpoint: {n} volumes (at most {MAX_LVOLS})"
        )));
    }
    let mut heads = Vec::new();
    for _ in 0..n {
        let h = LvolHeader::decode(&mut r)?;
        let count = r.u64()?;
        heads.push((h, count));
    }
    let mut lvols = BTreeMap::new();
    for (h, count) in heads {
        // Each entry takes 16 bytes: a count beyond what is left is corrupt, not a reason to
        // allocate.
        if count > (r.remaining() / 16) as u64 {
            return Err(FormatError::Truncated("checkpoint map"));
        }
        let mut map = BTreeMap::new();
        let mut last = None;
        for _ in 0..count {
            let (i, p) = (r.u64()?, r.u64()?);
            // An index past the end is a cluster staged for a growth (dropped when the pool
            // opens unless the journal completes the growth).
            if last.is_some_and(|l| i <= l) {
                return Err(FormatError::Invalid(format!(
                    "checkpoint: volume {} maps index {i} out of order",
                    h.uuid
                )));
            }
            last = Some(i);
            map.insert(i, p);
        }
        let u = h.uuid;
        if lvols.insert(u, LvolMeta { header: h, map }).is_some() {
            return Err(FormatError::Invalid(format!(
                "checkpoint: volume {u} twice"
            )));
        }
    }
    if r.remaining() != 0 {
        return Err(FormatError::Invalid(format!(
            "checkpoint: {} bytes left over",
            r.remaining()
        )));
    }
    Ok(Table { lvs_name, lvols })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::record::{ClearMethod, Record};

    #[test]
    fn table_round_trip_and_corruption() {
        let mut t = Table::new("pool");
        let u = Uuid::new_v4();
        t.apply(&Record::CreateLvol(LvolHeader {
            uuid: u,
            name: "v".into(),
            num_clusters: 10,
            flags: 0,
            clear: ClearMethod::None,
            parent: None,
        }));
        for i in 0..10 {
            t.apply(&Record::Map {
                lvol: u,
                index: i,
                phys: 20 - i,
            });
        }
        let p = encode_table(&t);
        assert!((p.len() as u64) <= max_payload(20));
        assert_eq!(decode_table(&p).unwrap(), t);
        for cut in 0..p.len() {
            assert!(decode_table(&p[..cut]).is_err(), "cut at {cut}");
        }
        let h = CkptHeader {
            lvs: u,
            generation: 3,
            journal_seq: 9,
            journal_prev_crc: 1,
            payload_len: p.len() as u64,
            payload_crc: crc32c::crc32c(&p),
        };
        let page = h.encode();
        assert_eq!(CkptHeader::decode(&page).unwrap(), h);
        for i in 0..(HDR_BODY + 4) * 8 {
            let mut q = page.clone();
            q[i / 8] ^= 1 << (i % 8);
            assert!(CkptHeader::decode(&q).is_err(), "bit {i}");
        }
    }
}
