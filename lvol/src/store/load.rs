//! Making a new pool on a device, and reading one back: superblocks, the newest valid
//! checkpoint, and the journal after it, up to the end of the chain.

use shoal_bdev::{Bdev, IoFlags, IoType};
use uuid::Uuid;

use super::syncio::SyncIo;
use crate::LvolError;
use crate::format::checkpoint::{CkptHeader, decode_table, encode_table, max_payload};
use crate::format::journal::decode_page;
use crate::format::superblock::Superblock;
use crate::format::{FormatError, PAGE};
use crate::table::Table;

const PAGE64: u64 = PAGE as u64;
/// Journal pages read at once while replaying (the ring is up to 1024 pages).
const JOURNAL_CHUNK: u64 = 16;

/// A pool as read from its device.
pub struct Loaded {
    /// Its geometry.
    pub sb: Superblock,
    /// Its table after replay.
    pub table: Table,
    /// Which data clusters are used.
    pub used: Vec<bool>,
    /// The checkpoint in force: generation and journal position.
    pub ckpt_generation: u64,
    /// The journal position of the checkpoint in force.
    pub ckpt_seq: u64,
    /// The area (0 or 1) holding the checkpoint in force: the next one goes to the other.
    pub ckpt_area: usize,
    /// The next journal page to write.
    pub next_seq: u64,
    /// The CRC of the page before it.
    pub prev_crc: u32,
    /// Journal pages replayed.
    pub replayed_pages: u64,
    /// The staged mappings dropped ([`Table::drop_staged`]): `(volume, index, data
    /// cluster)`. Their `Map` records are still in the journal; until an `Unmap` for each is
    /// durable, their clusters are not free.
    pub staged: Vec<(Uuid, u64, u64)>,
}

fn fmt(base: &str, source: FormatError) -> LvolError {
    LvolError::Format {
        bdev: base.to_string(),
        source,
    }
}

/// Checks that `base` can hold a pool: it honours FUA on writes.
///
/// # Errors
/// [`LvolError::Invalid`] naming the device.
pub fn check_base(base: &dyn Bdev) -> Result<(), LvolError> {
    if !base.supports_flags(IoType::Write, IoFlags::FUA) {
        return Err(LvolError::Invalid(format!(
            "bdev {} does not honour Force Unit Access: a pool's metadata could not be made \
             durable on it",
            base.info().name
        )));
    }
    Ok(())
}

/// Writes a new, empty pool: both checkpoint areas (generation 1 and an invalid one), then the
/// two superblock copies, each durably. Until the first superblock copy is durable the device
/// holds no pool.
///
/// # Errors
/// Base I/O errors.
pub fn format(
    io: &SyncIo,
    sb: &Superblock,
    name: &str,
    clear: Option<bool>,
) -> Result<(), LvolError> {
    // Any old pool's superblocks go first, so that a crash in the middle leaves no pool rather
    // than an old one over new checkpoints.
    io.write(0, &[0u8; PAGE * 2], "clearing old superblocks")?;
    let table = Table::new(name);
    let payload = encode_table(&table);
    let hdr = CkptHeader {
        lvs: sb.uuid,
        generation: 1,
        journal_seq: 1,
        journal_prev_crc: 0,
        payload_len: payload.len() as u64,
        payload_crc: crc32c::crc32c(&payload),
    };
    let mut area = hdr.encode();
    area.extend_from_slice(&payload);
    area.resize(area.len().div_ceil(PAGE) * PAGE, 0);
    io.write(sb.ckpt_offset[0], &area, "writing the first checkpoint")?;
    io.write(
        sb.ckpt_offset[1],
        &[0u8; PAGE],
        "clearing the second checkpoint",
    )?;
    if let Some(zeroes) = clear {
        let len = sb.total_clusters.saturating_mul(sb.cluster_size);
        io.clear(sb.data_offset, len, zeroes, "clearing the data area")?;
    }
    let page = sb.encode();
    io.write(0, &page, "writing superblock copy 0")?;
    io.write(PAGE64, &page, "writing superblock copy 1")?;
    Ok(())
}

/// Reads the superblock (either copy).
///
/// # Errors
/// [`LvolError::NotAPool`] if neither copy has the magic; [`LvolError::Format`] for a newer
/// version or two bad copies.
pub fn read_superblock(io: &SyncIo, base: &dyn Bdev) -> Result<Superblock, LvolError> {
    let name = &base.info().name;
    let info = base.info();
    if info.size_bytes() < 2 * PAGE64 {
        return Err(LvolError::NotAPool(name.clone()));
    }
    let pages = io.read(0, 2 * PAGE64, "reading the superblocks")?;
    let copies = [
        Superblock::decode(pages.get(..PAGE).unwrap_or_default()),
        Superblock::decode(pages.get(PAGE..).unwrap_or_default()),
    ];
    for c in &copies {
        if let Err(e @ FormatError::FutureVersion { .. }) = c {
            return Err(fmt(name, e.clone()));
        }
    }
    let sb = match copies {
        [Ok(a), _] => a,
        [Err(_), Ok(b)] => b,
        [Err(FormatError::NotAPool), Err(FormatError::NotAPool)] => {
            return Err(LvolError::NotAPool(name.clone()));
        }
        [Err(e), Err(_)] => return Err(fmt(name, e)),
    };
    sb.check_fits(info.block_size, info.num_blocks())
        .map_err(|e| fmt(name, e))?;
    Ok(sb)
}

/// Reads the pool: the newest checkpoint whose header and payload are valid, then the
/// journal from its position to the end of the chain; checks the result.
///
/// # Errors
/// [`LvolError::Format`] naming what is wrong; base I/O errors.
pub fn load(io: &SyncIo, base: &dyn Bdev, sb: Superblock) -> Result<Loaded, LvolError> {
    let name = &base.info().name;
    let mut heads = Vec::new();
    for (i, area) in sb.ckpt_offset.into_iter().enumerate() {
        let page = io.read(area, PAGE64, "reading a checkpoint header")?;
        match CkptHeader::decode(&page) {
            Ok(h) if h.lvs == sb.uuid => heads.push((h, area, i)),
            Ok(_) => {}
            Err(e @ FormatError::FutureVersion { .. }) => return Err(fmt(name, e)),
            Err(_) => {}
        }
    }
    heads.sort_by_key(|(h, ..)| std::cmp::Reverse(h.generation));
    let mut chosen = None;
    let mut why = String::from("no checkpoint header is valid");
    for (h, area, i) in heads {
        // No larger than the table of a pool of this many clusters can be (and than its area).
        let most = max_payload(sb.total_clusters).min(sb.ckpt_bytes.saturating_sub(PAGE64));
        if h.payload_len > most {
            why = format!("checkpoint {} claims {} bytes", h.generation, h.payload_len);
            continue;
        }
        let len = h.payload_len.div_ceil(PAGE64) * PAGE64;
        let payload = io.read(area + PAGE64, len, "reading a checkpoint")?;
        let payload = payload
            .get(..usize::try_from(h.payload_len).unwrap_or(usize::MAX))
            .unwrap_or_default();
        if crc32c::crc32c(payload) != h.payload_crc {
            why = format!("checkpoint {}: payload checksum mismatch", h.generation);
            continue;
        }
        match decode_table(payload) {
            Ok(t) => {
                chosen = Some((h, t, i));
                break;
            }
            Err(e) => why = format!("checkpoint {}: {e}", h.generation),
        }
    }
    let Some((h, mut table, ckpt_area)) = chosen else {
        return Err(fmt(name, FormatError::Invalid(why)));
    };
    // Replay, reading the ring in chunks of at most `JOURNAL_CHUNK` pages as it goes.
    let n = sb.journal_pages;
    let mut chunk: (u64, Vec<u8>) = (0, Vec::new());
    let mut seq = h.journal_seq;
    let mut prev = h.journal_prev_crc;
    let mut replayed = 0;
    while seq < h.journal_seq.saturating_add(n) {
        let slot = seq % n;
        let at = |c: &(u64, Vec<u8>)| {
            let i = usize::try_from(slot.checked_sub(c.0)?).ok()?;
            c.1.get(i * PAGE..(i + 1) * PAGE).map(<[u8]>::to_vec)
        };
        let page = match at(&chunk) {
            Some(p) => p,
            None => {
                let len = JOURNAL_CHUNK.min(n - slot) * PAGE64;
                let data = io.read(
                    sb.journal_offset + slot * PAGE64,
                    len,
                    "reading the journal",
                )?;
                chunk = (slot, data);
                at(&chunk).unwrap_or_default()
            }
        };
        match decode_page(&page, &sb.uuid, seq, prev).map_err(|e| fmt(name, e))? {
            Some(p) => {
                for r in &p.records {
                    table.apply(r);
                }
                prev = p.crc;
                seq += 1;
                replayed += 1;
            }
            None => break,
        }
    }
    let staged = table.drop_staged();
    if !staged.is_empty() {
        tracing::info!(bdev = %name, clusters = staged.len(),
            "a volume's growth did not complete before the pool was closed: its clusters are \
             freed once that is journaled");
    }
    let used = table
        .validate(sb.total_clusters)
        .map_err(|e| fmt(name, e))?;
    Ok(Loaded {
        sb,
        table,
        used,
        ckpt_generation: h.generation,
        ckpt_seq: h.journal_seq,
        ckpt_area,
        next_seq: seq,
        prev_crc: prev,
        replayed_pages: replayed,
        staged,
    })
}

/// A new pool's state as if just loaded.
pub fn fresh(sb: Superblock, name: &str) -> Loaded {
    let used = vec![false; usize::try_from(sb.total_clusters).unwrap_or(0)];
    Loaded {
        sb,
        table: Table::new(name),
        used,
        ckpt_generation: 1,
        ckpt_seq: 1,
        ckpt_area: 0,
        next_seq: 1,
        prev_crc: 0,
        replayed_pages: 0,
        staged: Vec::new(),
    }
}

/// A random 64-bit nonce for an opening of a pool.
pub fn nonce() -> u64 {
    let b = Uuid::new_v4().into_bytes();
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[..8]);
    u64::from_le_bytes(x)
}
