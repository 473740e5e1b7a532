//! A thick growth cut by a power failure after its staged `Map` records were durable but
//! before its `ResizeLvol` record: the pool opens with the old size and the staged clusters
//! free, and those `Map` records must not come back at a later opening (before the next
//! checkpoint), after another volume took their clusters and a snapshot, a thin growth and a
//! merge replayed over them.
//!
//! The cut is made exact: the pool is closed after the volume is created, and one journal
//! page holding the staged `Map` records (encoded by the pool's own encoder, at the journal's
//! next position) is written to the device, which is what a cut between the pages leaves.
//! The later restart is a power cut of a `pfail` device keeping nothing of its cache.

// Test arithmetic on small constants (block counts, sizes).
#![allow(clippy::cast_possible_truncation)]

#[path = "../../bdev/tests/common/mod.rs"]
mod common;
mod lvs_common;

use std::sync::Arc;

use common::Harness;
use lvs_common::{HomeReactor, block, cut};
use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::pfail::{Keep, PfailBdev};
use shoal_bdev::{Bdev, BdevIo};
use shoal_lvol::format::PAGE;
use shoal_lvol::format::journal::encode_page;
use shoal_lvol::format::record::{ClearMethod, Record};
use shoal_lvol::store::load::{self, Loaded};
use shoal_lvol::store::syncio::with_sync_io;
use shoal_lvol::{LvolBdev, LvolOptions, Lvs};
use uuid::Uuid;

const BS: u32 = 512;
const CLUSTER: u64 = 1 << 20;
const CB: u64 = CLUSTER / BS as u64;

fn dynb(l: &Arc<LvolBdev>) -> Arc<dyn Bdev> {
    l.clone()
}

/// The pool on `base` as its opening reads it (no pool is open on it).
fn read_pool(base: &Arc<dyn Bdev>) -> Loaded {
    let b = base.clone();
    with_sync_io(base, move |io| {
        let sb = load::read_superblock(io, b.as_ref())?;
        load::load(io, b.as_ref(), sb)
    })
    .unwrap()
}

/// Writes the journal page a thick growth of `lvol` from `old` clusters would write first:
/// its staged mappings, on free clusters. Returns their data clusters.
fn stage_growth(base: &Arc<dyn Bdev>, lvol: Uuid, old: u64, n: u64) -> Vec<u64> {
    let l = read_pool(base);
    let phys: Vec<u64> = (0..l.sb.total_clusters)
        .filter(|&p| !l.used[p as usize])
        .take(n as usize)
        .collect();
    let recs: Vec<Record> = phys
        .iter()
        .enumerate()
        .map(|(k, &phys)| Record::Map {
            lvol,
            index: old + k as u64,
            phys,
        })
        .collect();
    let (page, _) = encode_page(&l.sb.uuid, l.next_seq, 1, l.prev_crc, &recs);
    let off = l.sb.journal_offset + (l.next_seq % l.sb.journal_pages) * PAGE as u64;
    with_sync_io(base, move |io| io.write(off, &page, "staging")).unwrap();
    phys
}

#[test]
fn staged_mappings_dropped_at_open_do_not_come_back() {
    let ram: Arc<dyn Bdev> =
        MallocBdev::create("ram", None, (8 << 20) / u64::from(BS), BS).unwrap();
    let home = HomeReactor::start();
    let lvs = Lvs::create(ram.clone(), "lvs", CLUSTER, None, home.handle()).unwrap();
    let a = lvs
        .create_lvol(LvolOptions {
            name: "a".into(),
            size_bytes: 2 * CLUSTER,
            thin: false,
            clear: ClearMethod::Default,
        })
        .unwrap();
    let au = a.uuid();
    drop(a);
    lvs.close().unwrap();
    drop(lvs);
    // The cut: Map(a, 2, P2), Map(a, 3, P3) durable, ResizeLvol(a, 4) not.
    let staged = stage_growth(&ram, au, 2, 2);
    assert_eq!(
        read_pool(&ram).staged.len(),
        2,
        "the staged page is replayed"
    );

    // The pool opens with a at 2 clusters and P2, P3 free; the drop is journaled.
    let pf = PfailBdev::create("pf", ram.clone()).unwrap();
    let pfb: Arc<dyn Bdev> = pf.clone();
    let lvs = Lvs::open(pfb.clone(), home.handle()).unwrap();
    // The drop is durable before the pool serves: an opening now replays no staged mapping.
    assert_eq!(
        read_pool(&ram).staged,
        vec![],
        "the staged mappings on {staged:?} are still in the journal"
    );
    let info = lvs.info();
    assert_eq!(info.free_clusters, info.total_data_clusters - 2);
    // b takes every free cluster, P2 and P3 among them.
    let free = info.free_clusters;
    let b = lvs
        .create_lvol(LvolOptions {
            name: "b".into(),
            size_bytes: free * CLUSTER,
            thin: true,
            clear: ClearMethod::Default,
        })
        .unwrap();
    let hb = Harness::new(&dynb(&b));
    for c in 0..free {
        hb.run(BdevIo::write(
            c * CB,
            1,
            common::sg(&[&block(BS, 0xb0 + c)]),
        ))
        .1
        .unwrap();
    }
    hb.run(BdevIo::flush()).1.unwrap();
    assert_eq!(lvs.info().free_clusters, 0);
    // Snapshot a, grow it (thin now) to 4 clusters, delete the snapshot (merged into a).
    let s = lvs.snapshot(au, "s").unwrap();
    let su = s.uuid();
    drop(s);
    lvs.resize_lvol(au, 4 * CLUSTER).unwrap();
    lvs.delete_lvol(su).unwrap();
    lvs.sync().unwrap();
    let a = lvs.lvol("a").unwrap();
    assert_eq!(a.num_allocated_clusters(), 2);
    let expected_b = b.num_allocated_clusters();
    assert_eq!(
        lvs.journal_stats().checkpoints_written,
        0,
        "a checkpoint would hide the fault"
    );
    // Power cut before any checkpoint: the replay window still holds the staged records.
    cut(&pf, Keep::None);
    drop((hb, a, b, lvs));

    let lvs = Lvs::open(ram.clone(), home.handle())
        .unwrap_or_else(|e| panic!("the pool does not open: {e}"));
    let a = lvs.lvol("a").unwrap();
    let b = lvs.lvol("b").unwrap();
    assert_eq!(dynb(&a).info().num_blocks(), 4 * CB);
    assert_eq!(
        a.num_allocated_clusters(),
        2,
        "a shows clusters it never owned"
    );
    assert_eq!(b.num_allocated_clusters(), expected_b);
    let info = lvs.info();
    assert_eq!(
        info.free_clusters + 2 + expected_b,
        info.total_data_clusters
    );
    // a reads zeroes past its old end; b has its data.
    let ha = Harness::new(&dynb(&a));
    assert!(ha.read(2 * CB, 2 * CB).unwrap().iter().all(|&x| x == 0));
    let hb = Harness::new(&dynb(&b));
    for c in 0..expected_b {
        assert_eq!(hb.read(c * CB, 1).unwrap(), block(BS, 0xb0 + c));
    }
}
