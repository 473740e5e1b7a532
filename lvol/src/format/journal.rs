//! Journal pages: a ring of 4 KiB pages after the superblocks. Page `seq` lives at slot
//! `seq % journal_pages`. Each page carries its sequence number, the pool's UUID, the nonce of
//! the pool's current opening, the CRC of the page before it (a chain) and its own CRC, then
//! records. Replay reads from the checkpoint's position and stops at the first page that is
//! not the next link of the chain: torn, stale (an older lap of the ring, or a page of a
//! write that never completed before a crash, whose chain a later opening has broken by
//! writing its own page at that slot with a different nonce) or from another pool.

use uuid::Uuid;

use super::codec::{Reader, Writer};
use super::record::Record;
use super::{FORMAT_VERSION, FormatError, JNL_MAGIC, PAGE};

/// Bytes of a page header.
pub const PAGE_HDR: usize = 64;
/// Bytes of records a page can hold.
pub const PAGE_ROOM: usize = PAGE - PAGE_HDR;
/// Offset of the CRC in the header.
const CRC_AT: usize = 60;

/// A decoded journal page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalPage {
    /// Its sequence number.
    pub seq: u64,
    /// The opening of the pool that wrote it.
    pub nonce: u64,
    /// The CRC of the page before it.
    pub prev_crc: u32,
    /// Its own CRC (what the next page's `prev_crc` must be).
    pub crc: u32,
    /// Its records.
    pub records: Vec<Record>,
}

/// Encodes a page of `records` (which must fit in [`PAGE_ROOM`]); returns the page and its
/// CRC.
pub fn encode_page(
    lvs: &Uuid,
    seq: u64,
    nonce: u64,
    prev_crc: u32,
    records: &[Record],
) -> (Vec<u8>, u32) {
    let mut body = Writer::new();
    for r in records {
        r.encode(&mut body);
    }
    debug_assert!(body.buf.len() <= PAGE_ROOM);
    let mut w = Writer::new();
    w.bytes(JNL_MAGIC);
    w.u32(FORMAT_VERSION);
    w.u32(u32::try_from(body.buf.len()).unwrap_or(0));
    w.uuid(lvs);
    w.u64(seq);
    w.u64(nonce);
    w.u32(prev_crc);
    w.u32(0);
    w.u32(0);
    w.u32(0); // the CRC, computed with this field zero
    debug_assert_eq!(w.buf.len(), PAGE_HDR);
    w.bytes(&body.buf);
    w.buf.resize(PAGE, 0);
    let crc = crc32c::crc32c(&w.buf);
    w.buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    (w.buf, crc)
}

/// Decodes a page if it is page `seq` of pool `lvs` following a page whose CRC was
/// `prev_crc`. `Ok(None)` means the chain ends here (the page is torn, stale, of another
/// pool, or simply not written): the normal end of a replay.
///
/// # Errors
/// A page that is the right next link (magic, CRC, pool, sequence, chain all match) but holds
/// records this version cannot decode, or comes from a future format version: that is
/// corruption or a newer writer, and the pool must not open as if the journal ended there.
pub fn decode_page(
    page: &[u8],
    lvs: &Uuid,
    seq: u64,
    prev_crc: u32,
) -> Result<Option<JournalPage>, FormatError> {
    let Some(hdr) = page.get(..PAGE_HDR) else {
        return Ok(None);
    };
    if page.len() != PAGE || hdr.get(..8) != Some(&JNL_MAGIC[..]) {
        return Ok(None);
    }
    let mut copy = page.to_vec();
    let stored = {
        let mut r = Reader::new(&copy[CRC_AT..CRC_AT + 4], "journal page");
        r.u32()?
    };
    copy[CRC_AT..CRC_AT + 4].fill(0);
    let crc = crc32c::crc32c(&copy);
    if crc != stored {
        return Ok(None);
    }
    let mut r = Reader::new(page, "journal page");
    r.take(8)?;
    let version = r.u32()?;
    let used = r.u32()?;
    let page_lvs = r.uuid()?;
    let page_seq = r.u64()?;
    let nonce = r.u64()?;
    let page_prev = r.u32()?;
    if page_lvs != *lvs || page_seq != seq || page_prev != prev_crc {
        return Ok(None);
    }
    if version > FORMAT_VERSION {
        return Err(FormatError::FutureVersion {
            what: "journal page",
            found: version,
        });
    }
    let used = usize::try_from(used).unwrap_or(usize::MAX);
    if used > PAGE_ROOM {
        return Err(FormatError::Invalid(format!(
            "journal page {seq}: {used} bytes of records"
        )));
    }
    let body = page
        .get(PAGE_HDR..PAGE_HDR + used)
        .ok_or(FormatError::Truncated("journal page"))?;
    let mut br = Reader::new(body, "journal page");
    let mut records = Vec::new();
    while br.remaining() > 0 {
        records.push(
            Record::decode(&mut br)
                .map_err(|e| FormatError::Invalid(format!("journal page {seq}: {e}")))?,
        );
    }
    Ok(Some(JournalPage {
        seq,
        nonce,
        prev_crc,
        crc,
        records,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_and_corruption() {
        let lvs = Uuid::new_v4();
        let recs = vec![Record::RenameLvs("a".into()), Record::DeleteLvol(lvs)];
        let (p, crc) = encode_page(&lvs, 5, 9, 77, &recs);
        let got = decode_page(&p, &lvs, 5, 77).unwrap().unwrap();
        assert_eq!((got.records, got.crc), (recs.clone(), crc));
        assert!(decode_page(&p, &lvs, 6, 77).unwrap().is_none(), "wrong seq");
        assert!(
            decode_page(&p, &lvs, 5, 78).unwrap().is_none(),
            "broken chain"
        );
        assert!(
            decode_page(&p, &Uuid::new_v4(), 5, 77).unwrap().is_none(),
            "other pool"
        );
        for i in 0..PAGE * 8 {
            let mut q = p.clone();
            q[i / 8] ^= 1 << (i % 8);
            assert!(decode_page(&q, &lvs, 5, 77).unwrap().is_none(), "bit {i}");
        }
        assert!(decode_page(&p[..100], &lvs, 5, 77).unwrap().is_none());
    }

    #[test]
    fn a_valid_page_with_bad_records_is_an_error() {
        let lvs = Uuid::new_v4();
        let (mut p, _) = encode_page(&lvs, 1, 1, 0, &[Record::RenameLvs("a".into())]);
        p[PAGE_HDR] = 200; // unknown record type
        p[CRC_AT..CRC_AT + 4].fill(0);
        let crc = crc32c::crc32c(&p);
        p[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        assert!(decode_page(&p, &lvs, 1, 0).is_err());
    }
}
