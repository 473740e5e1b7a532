//! A checkpoint write torn by a power cut leaves the pool openable from the checkpoint in
//! force and the journal after it. The pool sits on an `error` device over a RAM disk: the
//! checkpoint write is held at the device while the journal goes on, the RAM disk is read
//! before and after it, and every image a cut could leave (the write reached the media up to
//! some block, or only from some block on) is opened as a pool of its own.

// Test arithmetic on small constants (block counts, sizes).
#![allow(clippy::cast_possible_truncation)]

#[path = "../../bdev/tests/common/mod.rs"]
mod common;
mod lvs_common;

use std::sync::Arc;

use common::{Harness, WAIT, flatten, sg, sg_zeroed};
use lvs_common::pool_on;
use shoal_bdev::error_bdev::{ErrorBdev, Injection};
use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::{Bdev, BdevIo, IoType, open_channel};
use shoal_lvol::format::record::ClearMethod;
use shoal_lvol::{LvolOptions, Lvs};
use shoal_reactor::ReactorHandle;

const BS: u32 = 512;
const BYTES: u64 = 8 << 20;

fn thin(name: &str) -> LvolOptions {
    LvolOptions {
        name: name.into(),
        size_bytes: 1 << 20,
        thin: true,
        clear: ClearMethod::Default,
    }
}

/// Holds the next checkpoint write of `lvs` (on `err` over `ram`), creating volumes until
/// one starts and a few while it is out; then opens every image a cut tearing that write
/// could leave, and checks that each holds every volume created. Returns the disk image once
/// the checkpoint is written.
fn tear_next_checkpoint(
    lvs: &Arc<Lvs>,
    err: &ErrorBdev,
    ram: &Arc<dyn Bdev>,
    home: &ReactorHandle,
    h: &Harness,
    names: &mut Vec<String>,
) -> Vec<u8> {
    let sb = *lvs.superblock();
    let bs = u64::from(BS);
    let (lo, hi) = (
        sb.ckpt_offset[0] / bs,
        (sb.ckpt_offset[1] + sb.ckpt_bytes) / bs,
    );
    // Hold the next checkpoint write (either area) at the device.
    err.inject(Injection::pending(IoType::Write).blocks(lo..hi).count(1))
        .unwrap();
    let first = names.len();
    while err.held() == 0 {
        assert!(names.len() < first + 200, "no checkpoint was started");
        let n = format!("v{}", names.len());
        lvs.create_lvol(thin(&n)).unwrap();
        names.push(n);
    }
    // The journal goes on while the checkpoint is out.
    for _ in 0..3 {
        let n = format!("v{}", names.len());
        lvs.create_lvol(thin(&n)).unwrap();
        names.push(n);
    }
    let chan = open_channel(ram).unwrap();
    let read = |at: u64, blocks: u64| {
        let len = (blocks * bs) as usize;
        chan.submit(
            BdevIo::read(at, blocks, sg_zeroed(&[len])),
            h.sink.clone(),
            0,
        );
        let mut d = h.wait(1);
        let (_, io, r) = d.pop().unwrap();
        r.unwrap();
        flatten(&io.bufs)
    };
    let before = read(lo, hi - lo);
    err.resume_pending();
    assert!(
        h.reactor
            .run_until(WAIT, || lvs.journal_stats().checkpoints_written == 1)
    );
    let after = read(0, BYTES / bs);
    let b = BS as usize;
    let at = |blk: u64| (blk as usize) * b..(blk as usize + 1) * b;
    let changed: Vec<u64> = (lo..hi)
        .filter(|&blk| before[at(blk - lo)] != after[at(blk)])
        .collect();
    assert!(!changed.is_empty(), "the checkpoint changed nothing");

    // Every tear at a block boundary: blocks before `cut` new (or, the other way round, from
    // `cut` on), the rest as they were.
    let n = changed.len();
    let mut cuts = vec![0, 1, n / 2, n - 1];
    cuts.dedup();
    for cut in cuts {
        for head_first in [true, false] {
            let mut image = after.clone();
            for (i, &blk) in changed.iter().enumerate() {
                let reached = if head_first { i < cut } else { i >= cut };
                if !reached {
                    image[at(blk)].copy_from_slice(&before[at(blk - lo)]);
                }
            }
            let opened = Lvs::open(disk_with(h, &image), home.clone()).unwrap_or_else(|e| {
                panic!(
                    "checkpoint torn at block {cut} of {n} (head first: {head_first}): the \
                     pool does not open: {e}"
                )
            });
            for name in names.iter() {
                assert!(
                    opened.lvol(name).is_some(),
                    "torn at {cut} of {n}: volume {name} is gone"
                );
            }
            opened.close().unwrap();
        }
    }
    after
}

/// A RAM disk holding `image`.
fn disk_with(h: &Harness, image: &[u8]) -> Arc<dyn Bdev> {
    let bs = u64::from(BS);
    let disk: Arc<dyn Bdev> = MallocBdev::create("img", None, BYTES / bs, BS).unwrap();
    let c = open_channel(&disk).unwrap();
    c.submit(
        BdevIo::write(0, BYTES / bs, sg(&[image])),
        h.sink.clone(),
        0,
    );
    h.wait(1)[0].2.as_ref().unwrap();
    disk
}

/// The first checkpoint of a new pool, then the first of the pool opened again from the
/// result (which must go to the area the one in force is not in).
#[test]
fn a_torn_checkpoint_leaves_the_pool_openable() {
    let ram: Arc<dyn Bdev> = MallocBdev::create("ram", None, BYTES / u64::from(BS), BS).unwrap();
    let err = ErrorBdev::create(ram.clone(), None).unwrap();
    let eb: Arc<dyn Bdev> = err.clone();
    let pool = pool_on(eb, 4096);
    let home = pool.home.handle();
    let h = Harness::new(&ram);
    let mut names = Vec::new();
    let image = tear_next_checkpoint(&pool.lvs, &err, &ram, &home, &h, &mut names);

    // Opened again from that image: its next checkpoint.
    let ram2 = disk_with(&h, &image);
    let err2 = ErrorBdev::create(ram2.clone(), None).unwrap();
    let eb2: Arc<dyn Bdev> = err2.clone();
    let lvs2 = Lvs::open(eb2, home.clone()).unwrap();
    tear_next_checkpoint(&lvs2, &err2, &ram2, &home, &h, &mut names);
    lvs2.close().unwrap();
}
