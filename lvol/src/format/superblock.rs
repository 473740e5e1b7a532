//! The superblock: the pool's geometry, written twice (pages 0 and 1) when the pool is
//! created and never changed afterwards. Everything that changes lives in the checkpoints and
//! the journal.

use uuid::Uuid;

use super::codec::{Reader, Writer};
use super::{
    FORMAT_VERSION, FormatError, MAX_JOURNAL_PAGES, MAX_POOL_CLUSTERS, PAGE, SB_MAGIC,
    check_magic_version,
};

/// Bytes of the superblock covered by its CRC (the CRC follows them).
const SB_BODY: usize = 120;

/// Where everything is, in bytes from the start of the base bdev.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    /// The pool's UUID.
    pub uuid: Uuid,
    /// The base bdev's block size when the pool was made.
    pub block_size: u32,
    /// Bytes per cluster (a power of two, at least one page).
    pub cluster_size: u64,
    /// The base bdev's size in blocks when the pool was made.
    pub base_blocks: u64,
    /// The journal's first byte.
    pub journal_offset: u64,
    /// Pages in the journal ring.
    pub journal_pages: u64,
    /// The two checkpoint areas' first bytes.
    pub ckpt_offset: [u64; 2],
    /// Bytes of each checkpoint area.
    pub ckpt_bytes: u64,
    /// The first data cluster's first byte (cluster-aligned).
    pub data_offset: u64,
    /// Data clusters.
    pub total_clusters: u64,
}

impl Superblock {
    /// Encodes one copy (one page).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(SB_MAGIC);
        w.u32(FORMAT_VERSION);
        w.u32(u32::try_from(SB_BODY).unwrap_or(0));
        w.uuid(&self.uuid);
        w.u32(self.block_size);
        w.u32(0);
        w.u64(self.cluster_size);
        w.u64(self.base_blocks);
        w.u64(self.journal_offset);
        w.u64(self.journal_pages);
        w.u64(self.ckpt_offset[0]);
        w.u64(self.ckpt_offset[1]);
        w.u64(self.ckpt_bytes);
        w.u64(self.data_offset);
        w.u64(self.total_clusters);
        w.u64(0);
        debug_assert_eq!(w.buf.len(), SB_BODY);
        let crc = crc32c::crc32c(&w.buf);
        w.u32(crc);
        w.buf.resize(PAGE, 0);
        w.buf
    }

    /// Decodes one copy and checks it against itself (not yet against a device: see
    /// [`Superblock::check_fits`]).
    ///
    /// # Errors
    /// [`FormatError::NotAPool`] without the magic, [`FormatError::FutureVersion`],
    /// [`FormatError::BadCrc`], or [`FormatError::Invalid`] for inconsistent geometry.
    pub fn decode(page: &[u8]) -> Result<Superblock, FormatError> {
        check_magic_version(page, SB_MAGIC, "superblock")?;
        let body = page
            .get(..SB_BODY)
            .ok_or(FormatError::Truncated("superblock"))?;
        let mut r = Reader::new(page, "superblock");
        r.take(12)?;
        let body_len = r.u32()?;
        if usize::try_from(body_len).ok() != Some(SB_BODY) {
            return Err(FormatError::Invalid(format!(
                "superblock: body length {body_len}, expected {SB_BODY}"
            )));
        }
        let sb = Superblock {
            uuid: r.uuid()?,
            block_size: r.u32()?,
            cluster_size: {
                r.u32()?;
                r.u64()?
            },
            base_blocks: r.u64()?,
            journal_offset: r.u64()?,
            journal_pages: r.u64()?,
            ckpt_offset: [r.u64()?, r.u64()?],
            ckpt_bytes: r.u64()?,
            data_offset: r.u64()?,
            total_clusters: r.u64()?,
        };
        r.u64()?;
        let crc = r.u32()?;
        if crc != crc32c::crc32c(body) {
            return Err(FormatError::BadCrc("superblock"));
        }
        sb.check()?;
        Ok(sb)
    }

    /// The geometry's own consistency: areas in order, aligned and not overlapping.
    fn check(&self) -> Result<(), FormatError> {
        let bad = |m: String| Err(FormatError::Invalid(format!("superblock: {m}")));
        if !shoal_bdev::valid_block_size(self.block_size) {
            return bad(format!("block size {}", self.block_size));
        }
        let page = PAGE as u64;
        if !self.cluster_size.is_power_of_two() || self.cluster_size < page {
            return bad(format!("cluster size {}", self.cluster_size));
        }
        if self.journal_pages < 4 || self.ckpt_bytes < 2 * page {
            return bad("journal or checkpoint area too small".into());
        }
        // Opening reads and holds what these fields size: no more than the format writes.
        if self.journal_pages > MAX_JOURNAL_PAGES {
            return bad(format!(
                "a journal of {} pages (the format writes at most {MAX_JOURNAL_PAGES})",
                self.journal_pages
            ));
        }
        if self.total_clusters > MAX_POOL_CLUSTERS {
            return bad(format!(
                "{} data clusters (a pool has at most {MAX_POOL_CLUSTERS}: a larger cluster \
                 size holds a device this large)",
                self.total_clusters
            ));
        }
        let most = self
            .base_blocks
            .checked_mul(u64::from(self.block_size))
            .map(|b| ckpt_area_bytes(b / self.cluster_size));
        if most.is_none_or(|m| self.ckpt_bytes > m) {
            return bad(format!(
                "checkpoint areas of {} bytes, more than the layout gives {} blocks",
                self.ckpt_bytes, self.base_blocks
            ));
        }
        let areas = [
            (2 * page, self.journal_offset),
            (
                self.journal_offset
                    .saturating_add(self.journal_pages.saturating_mul(page)),
                self.ckpt_offset[0],
            ),
            (
                self.ckpt_offset[0].saturating_add(self.ckpt_bytes),
                self.ckpt_offset[1],
            ),
            (
                self.ckpt_offset[1].saturating_add(self.ckpt_bytes),
                self.data_offset,
            ),
        ];
        for (end_of_previous, start) in areas {
            if start < end_of_previous || !start.is_multiple_of(page) {
                return bad(format!(
                    "areas overlap or are misaligned (area at {start} after {end_of_previous})"
                ));
            }
        }
        if !self.data_offset.is_multiple_of(self.cluster_size) {
            return bad("the data area is not cluster-aligned".into());
        }
        let data_end = self
            .total_clusters
            .checked_mul(self.cluster_size)
            .and_then(|b| b.checked_add(self.data_offset));
        let base_bytes = self.base_blocks.checked_mul(u64::from(self.block_size));
        match (data_end, base_bytes) {
            (Some(e), Some(b)) if e <= b => Ok(()),
            _ => bad(format!(
                "{} clusters do not fit in {} blocks",
                self.total_clusters, self.base_blocks
            )),
        }
    }

    /// Checks that the pool fits the device it was found on.
    ///
    /// # Errors
    /// [`FormatError::Invalid`] if the block size differs or the device is smaller.
    pub fn check_fits(&self, block_size: u32, num_blocks: u64) -> Result<(), FormatError> {
        if block_size != self.block_size {
            return Err(FormatError::Invalid(format!(
                "the pool was made on {}-byte blocks, the device has {block_size}",
                self.block_size
            )));
        }
        if num_blocks < self.base_blocks {
            return Err(FormatError::Invalid(format!(
                "the pool needs {} blocks, the device has {num_blocks}",
                self.base_blocks
            )));
        }
        Ok(())
    }

    /// The geometry of a new pool on a device of `base_bytes` (block size `block_size`) with
    /// clusters of `cluster_size` bytes.
    ///
    /// # Errors
    /// [`FormatError::Invalid`] if the cluster size is not a power of two of at least 4 KiB,
    /// or the device cannot hold the metadata and at least one data cluster.
    pub fn layout(
        uuid: Uuid,
        block_size: u32,
        base_blocks: u64,
        cluster_size: u64,
    ) -> Result<Superblock, FormatError> {
        let page = PAGE as u64;
        if !cluster_size.is_power_of_two() || cluster_size < page {
            return Err(FormatError::Invalid(format!(
                "cluster size {cluster_size} must be a power of two of at least {page}"
            )));
        }
        let base_bytes = base_blocks
            .checked_mul(u64::from(block_size))
            .ok_or_else(|| FormatError::Invalid("device too large".into()))?;
        let max_clusters = base_bytes / cluster_size;
        let journal_pages: u64 = if base_bytes >= 1 << 30 {
            MAX_JOURNAL_PAGES
        } else {
            64
        };
        let ckpt_bytes = ckpt_area_bytes(max_clusters);
        let journal_offset = 2 * page;
        let ckpt0 = journal_offset + journal_pages * page;
        let ckpt1 = ckpt0 + ckpt_bytes;
        let md_end = ckpt1 + ckpt_bytes;
        let data_offset = md_end.div_ceil(cluster_size) * cluster_size;
        let total_clusters = base_bytes.saturating_sub(data_offset) / cluster_size;
        if total_clusters == 0 {
            return Err(FormatError::Invalid(format!(
                "a device of {base_bytes} bytes cannot hold the pool's metadata ({data_offset} \
                 bytes) and one cluster of {cluster_size}"
            )));
        }
        let sb = Superblock {
            uuid,
            block_size,
            cluster_size,
            base_blocks,
            journal_offset,
            journal_pages,
            ckpt_offset: [ckpt0, ckpt1],
            ckpt_bytes,
            data_offset,
            total_clusters,
        };
        sb.check()?;
        Ok(sb)
    }
}

/// A checkpoint area (header page and payload, whole pages) for a pool on a device of
/// `clusters` clusters: what [`Superblock::layout`] gives, and the most a superblock may claim.
fn ckpt_area_bytes(clusters: u64) -> u64 {
    let page = PAGE as u64;
    page.saturating_add(super::checkpoint::max_payload(clusters))
        .div_ceil(page)
        .saturating_mul(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb() -> Superblock {
        Superblock::layout(Uuid::new_v4(), 512, 1 << 17, 1 << 20).unwrap()
    }

    #[test]
    fn round_trip() {
        let s = sb();
        assert_eq!(Superblock::decode(&s.encode()).unwrap(), s);
        assert!(s.total_clusters > 0 && s.data_offset.is_multiple_of(s.cluster_size));
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let page = sb().encode();
        for i in 0..(SB_BODY + 4) * 8 {
            let mut p = page.clone();
            p[i / 8] ^= 1 << (i % 8);
            assert!(Superblock::decode(&p).is_err(), "bit {i}");
        }
    }

    #[test]
    fn future_version_and_not_a_pool() {
        let mut p = sb().encode();
        p[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        assert!(matches!(
            Superblock::decode(&p),
            Err(FormatError::FutureVersion { .. })
        ));
        assert!(matches!(
            Superblock::decode(&[0u8; PAGE]),
            Err(FormatError::NotAPool)
        ));
        assert!(Superblock::decode(&[]).is_err());
    }

    /// Fields that size what opening reads and holds are refused beyond what the format
    /// writes, with an error that names them; the layouts the format writes pass.
    #[test]
    fn hostile_sizes_are_refused() {
        let decode = |s: Superblock| Superblock::decode(&s.encode());
        let refused = |s: Superblock, what: &str| match decode(s) {
            Err(FormatError::Invalid(m)) => assert!(m.contains(what), "{m}"),
            other => panic!("{what}: {other:?}"),
        };
        let big = Superblock::layout(Uuid::new_v4(), 4096, 1 << 20, 1 << 20).unwrap();
        assert_eq!(big.journal_pages, MAX_JOURNAL_PAGES);
        assert_eq!(decode(big), Ok(big));
        // A journal of 2^20 pages (4 GiB read at once), the areas after it moved to fit.
        let shift = (1 << 20) * PAGE as u64;
        let mut s = big;
        s.journal_pages = 1 << 20;
        s.ckpt_offset = [s.ckpt_offset[0] + shift, s.ckpt_offset[1] + shift];
        s.data_offset += shift;
        s.base_blocks *= 4;
        refused(s, "a journal of 1048576 pages");
        // Checkpoint areas beyond what the device's clusters need.
        let mut s = big;
        s.ckpt_bytes *= 64;
        s.ckpt_offset[1] = s.ckpt_offset[0] + s.ckpt_bytes;
        s.data_offset = (s.ckpt_offset[1] + s.ckpt_bytes).div_ceil(s.cluster_size) * s.cluster_size;
        s.total_clusters = 16;
        refused(s, "checkpoint areas of");
        // More data clusters than a pool may have (the device claimed large enough).
        let mut s = Superblock::layout(Uuid::new_v4(), 4096, 1 << 20, 4096).unwrap();
        s.base_blocks = 1 << 40;
        s.total_clusters = MAX_POOL_CLUSTERS + 1;
        refused(s, "data clusters");
        assert!(
            Superblock::layout(Uuid::nil(), 4096, (MAX_POOL_CLUSTERS + 1024) * 2, 4096).is_err()
        );
    }

    #[test]
    fn too_small_or_bad_cluster() {
        assert!(Superblock::layout(Uuid::nil(), 512, 64, 1 << 20).is_err());
        assert!(Superblock::layout(Uuid::nil(), 512, 1 << 20, 3000).is_err());
        assert!(Superblock::layout(Uuid::nil(), 512, 1 << 20, 2048).is_err());
    }
}
