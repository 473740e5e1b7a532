//! A crafted superblock must not make opening read or allocate what its fields claim: a pool
//! whose superblock, checkpoint and layout are otherwise consistent but whose journal is far
//! longer than the format writes is refused with an error naming the journal (it was read
//! whole, in one allocation of `journal_pages` x 4 KiB).

// The shared bdev test helpers do arithmetic on small constants.
#![allow(clippy::cast_possible_truncation)]

#[path = "../../bdev/tests/common/mod.rs"]
mod common;
mod lvs_common;

use std::sync::Arc;

use lvs_common::HomeReactor;
use shoal_bdev::Bdev;
use shoal_bdev::uring::UringBdev;
use shoal_lvol::format::PAGE;
use shoal_lvol::format::checkpoint::{CkptHeader, encode_table};
use shoal_lvol::format::superblock::Superblock;
use shoal_lvol::table::Table;
use shoal_lvol::{LvolError, Lvs};
use uuid::Uuid;

const PAGE64: u64 = PAGE as u64;

#[test]
fn a_journal_longer_than_the_format_writes_is_refused() {
    let dir = common::disk_tempdir();
    let len = 2u64 << 30;
    let path = common::make_file(dir.path(), "hostile", len);
    // The layout of a 2 GiB device, with a journal of 2^18 pages (1 GiB) and everything after
    // it moved so that the areas still follow each other and fit.
    let mut sb = Superblock::layout(Uuid::new_v4(), 4096, len / 4096, 1 << 20).unwrap();
    let pages = 1u64 << 18;
    let shift = (pages - sb.journal_pages) * PAGE64;
    sb.journal_pages = pages;
    sb.ckpt_offset = [sb.ckpt_offset[0] + shift, sb.ckpt_offset[1] + shift];
    sb.data_offset =
        (sb.ckpt_offset[1] + sb.ckpt_bytes).div_ceil(sb.cluster_size) * sb.cluster_size;
    sb.total_clusters = (len - sb.data_offset) / sb.cluster_size;
    // A valid checkpoint of an empty pool in area A; the journal reads as zeroes.
    let payload = encode_table(&Table::new("hostile"));
    let head = CkptHeader {
        lvs: sb.uuid,
        generation: 1,
        journal_seq: 1,
        journal_prev_crc: 0,
        payload_len: payload.len() as u64,
        payload_crc: crc32c::crc32c(&payload),
    };
    let write = |at: u64, data: &[u8]| {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(data, at).unwrap();
    };
    write(0, &sb.encode());
    write(PAGE64, &sb.encode());
    write(sb.ckpt_offset[0], &head.encode());
    write(sb.ckpt_offset[0] + PAGE64, &payload);
    let home = HomeReactor::start();
    let base: Arc<dyn Bdev> = UringBdev::create("u0", &path, Some(4096), None).unwrap();
    let e = Lvs::open(base, home.handle()).unwrap_err();
    assert!(
        matches!(&e, LvolError::Format { .. })
            && e.to_string().contains("a journal of 262144 pages"),
        "{e}"
    );
}
