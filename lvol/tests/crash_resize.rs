//! Power cuts during volume resizes: thick growth (clusters staged, zeroed, then taken in by
//! the size record), thin growth and shrinking, with writes in flight to the volume. The pool
//! sits on a `pfail` device over a RAM disk; the resize runs on a thread of its own, which
//! then writes past the old end with FUA when it grew; the test thread cuts the power before
//! it, after it, or after a seeded delay scaled to how long resizes take on the machine,
//! keeping none, all or a seeded part of the volatile cache. The pool must open
//! from what the RAM disk holds, and:
//! - the volume has its old size or its new one (the new one if the resize completed), and
//!   a thick volume has every cluster of that size mapped, no more;
//! - every cluster is either free or mapped once (free + allocated = total: the clusters a
//!   growth staged before its size record are free again);
//! - every block holds its durable value or a value in flight; the write past the old end,
//!   if it completed, is there (else zeroes); nothing is torn.

// Test arithmetic on small constants (block counts, seeds).
#![allow(clippy::cast_possible_truncation)]

#[path = "../../bdev/tests/common/mod.rs"]
mod common;
mod lvs_common;

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use common::{Collector, Harness, WAIT, sg};
use lvs_common::{HomeReactor, cut, rng};
use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::pfail::{Keep, PfailBdev};
use shoal_bdev::{Bdev, BdevIo, IoFlags, open_channel};
use shoal_lvol::format::record::ClearMethod;
use shoal_lvol::{LvolBdev, LvolOptions, Lvs};
use shoal_reactor::Reactor;

const BS: u32 = 512;
const CLUSTER: u64 = 4096;
const CB: u64 = CLUSTER / BS as u64;
const BLOCKS: u64 = 256;

fn block(v: u64) -> Vec<u8> {
    lvs_common::block(BS, v)
}

fn dynb(l: &Arc<LvolBdev>) -> Arc<dyn Bdev> {
    l.clone()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    GrowThick,
    GrowThin,
    Shrink,
}

/// When the power is cut.
#[derive(Clone, Copy, Debug)]
enum When {
    /// Before the resize starts.
    Before,
    /// After a seeded delay below this span from its start.
    Within(Duration),
    /// Once it has completed.
    After,
}

/// Cuts the power `when`; returns whether the resize completed before the cut, and how long
/// it took if it did.
fn round(seed: u64, keep: Keep, kind: Kind, when: When) -> (bool, Option<Duration>) {
    let mut s = seed;
    let ram: Arc<dyn Bdev> =
        MallocBdev::create("ram", None, (48 << 20) / u64::from(BS), BS).unwrap();
    let pf = PfailBdev::create("pf", ram.clone()).unwrap();
    let pfb: Arc<dyn Bdev> = pf.clone();
    let home = HomeReactor::start();
    let lvs = Lvs::create(pfb.clone(), "lvs", CLUSTER, None, home.handle()).unwrap();
    Harness::new(&pfb).run(BdevIo::flush()).1.unwrap();
    let thin = match kind {
        Kind::GrowThick => false,
        Kind::GrowThin => true,
        Kind::Shrink => rng(&mut s).is_multiple_of(2),
    };
    // The thick volume's clusters are not zeroed (clear method `none`, a fresh RAM disk reads
    // zeroes anyway), so that its growth spends its time in the journal.
    let v = lvs
        .create_lvol(LvolOptions {
            name: "v".into(),
            size_bytes: BLOCKS * u64::from(BS),
            thin,
            clear: if thin {
                ClearMethod::Default
            } else {
                ClearMethod::None
            },
        })
        .unwrap();
    // Another volume takes clusters too, so the growth's clusters are not simply the next.
    let w = lvs
        .create_lvol(LvolOptions {
            name: "w".into(),
            size_bytes: BLOCKS * u64::from(BS),
            thin: true,
            clear: ClearMethod::Default,
        })
        .unwrap();
    // A growth of 8000 clusters: its staged mappings take more journal pages than the ring
    // holds (several writes and checkpoints), so a cut lands between them and the size
    // record.
    let new_blocks = if kind == Kind::Shrink {
        BLOCKS / 2
    } else {
        BLOCKS + 8000 * CB
    };
    let hv = Harness::new(&dynb(&v));
    let hw = Harness::new(&dynb(&w));
    let mut vm: Vec<u64> = vec![0; BLOCKS as usize];
    let mut next = 1u64;
    for _ in 0..60 {
        next += 1;
        let b = rng(&mut s) % BLOCKS;
        if rng(&mut s).is_multiple_of(2) {
            // To w: only takes clusters (its data is not checked).
            hw.run(BdevIo::write(b, 1, sg(&[&block(next)]))).1.unwrap();
        } else {
            hv.run(BdevIo::write(b, 1, sg(&[&block(next)])).with_flags(IoFlags::FUA))
                .1
                .unwrap();
            vm[b as usize] = next;
        }
    }
    // Writes in flight during the resize, below the smaller end.
    let r = Reactor::current().unwrap();
    let chan = open_channel(&dynb(&v)).unwrap();
    let sink = Rc::new(Collector::default());
    let mut inflight: BTreeMap<u64, u64> = BTreeMap::new();
    for _ in 0..12 {
        next += 1;
        inflight.insert(rng(&mut s) % BLOCKS.min(new_blocks), next);
    }
    for (t, (&b, &x)) in inflight.iter().enumerate() {
        let io = BdevIo::write(b, 1, sg(&[&block(x)])).with_flags(IoFlags::FUA);
        chan.submit(io, sink.clone(), t as u64);
    }
    let (lvs2, vu) = (lvs.clone(), v.uuid());
    next += 1;
    let past = next;
    let past_blk = BLOCKS + 3 * CB + 1;
    let grow = kind != Kind::Shrink;
    if matches!(when, When::Before) {
        cut(&pf, keep);
    }
    let op = std::thread::spawn(move || {
        let t0 = std::time::Instant::now();
        let done = lvs2.resize_lvol(vu, new_blocks * u64::from(BS)).is_ok();
        let took = t0.elapsed();
        // Then a durable write past the old end, from a reactor of this thread.
        let wrote = done && grow && {
            let l = lvs2.lvol(&vu.to_string()).unwrap();
            let h = Harness::new(&dynb(&l));
            h.run(BdevIo::write(past_blk, 1, sg(&[&block(past)])).with_flags(IoFlags::FUA))
                .1
                .is_ok()
        };
        (done, wrote, took)
    });
    match when {
        When::Before => {}
        When::Within(span) => {
            let span_us = u64::try_from(span.as_micros()).unwrap_or(u64::MAX).max(1);
            let delay = Duration::from_micros(rng(&mut s) % span_us);
            r.run_until(delay, || false);
            cut(&pf, keep);
        }
        When::After => {
            assert!(r.run_until(WAIT, || op.is_finished()));
            cut(&pf, keep);
        }
    }
    r.run_until(WAIT, || {
        sink.done.borrow().len() == inflight.len() && op.is_finished()
    });
    let (completed, wrote_past, took) = op.join().unwrap();
    drop((chan, hv, hw, v, w, lvs));
    // Reopen.
    let lvs = Lvs::open(ram.clone(), home.handle())
        .unwrap_or_else(|e| panic!("seed {seed} {keep:?} {kind:?}: the pool does not open: {e}"));
    let info = lvs.info();
    let allocated: u64 = lvs.lvols().iter().map(|l| l.num_allocated_clusters()).sum();
    assert_eq!(
        info.free_clusters + allocated,
        info.total_data_clusters,
        "seed {seed} {kind:?}: a cluster is lost or counted twice"
    );
    let v = lvs.lvol("v").expect("v");
    let size = dynb(&v).info().num_blocks();
    assert!(
        size == BLOCKS || size == new_blocks,
        "seed {seed} {kind:?}: size {size} is neither old nor new"
    );
    assert!(
        !completed || size == new_blocks,
        "seed {seed} {keep:?} {kind:?}: a completed resize undone"
    );
    if kind == Kind::GrowThick {
        assert_eq!(
            v.num_allocated_clusters(),
            size / CB,
            "seed {seed} {keep:?}: a thick volume not wholly mapped"
        );
    }
    let h = Harness::new(&dynb(&v));
    let all = h.read(0, size.min(BLOCKS)).unwrap();
    for (b, c) in all.chunks(BS as usize).enumerate() {
        let x = u64::from_le_bytes(c[..8].try_into().unwrap());
        assert_eq!(c, &block(x)[..], "seed {seed}: block {b} is torn");
        let durable = vm.get(b).copied().unwrap_or(0);
        let ok = x == durable
            || inflight.get(&(b as u64)) == Some(&x)
            || (b as u64 == past_blk && x == past);
        assert!(
            ok,
            "seed {seed} {keep:?} {kind:?}: block {b} holds {x}, durable {durable}"
        );
    }
    if size > BLOCKS {
        let x = h.read(past_blk, 1).unwrap();
        assert!(
            x == block(past) || (!wrote_past && x == vec![0; BS as usize]),
            "seed {seed} {keep:?}: past the old end: a durable write lost, or old data"
        );
    }
    (completed, completed.then_some(took))
}

#[test]
fn power_cuts_during_resizes() {
    for kind in [Kind::GrowThick, Kind::GrowThin, Kind::Shrink] {
        // A cut before the resize leaves the old size; one after it, the new size.
        assert!(!round(1000, Keep::All, kind, When::Before).0, "{kind:?}");
        let (done, took) = round(1001, Keep::Random(1), kind, When::After);
        assert!(done, "{kind:?}");
        // The rest land at seeded delays within 1.5 times the median time a resize took so
        // far on this machine (load changes it), so that they fall before, during and after.
        let mut times: Vec<Duration> = took.into_iter().collect();
        let mut completed = 0;
        for seed in 0..8u64 {
            for (sd, keep) in [
                (seed, Keep::None),
                (seed + 100, Keep::All),
                (seed + 200, Keep::Random(seed)),
            ] {
                times.sort();
                let median = times.get(times.len() / 2).copied().unwrap_or(WAIT);
                let (done, took) = round(sd, keep, kind, When::Within(median * 3 / 2));
                completed += usize::from(done);
                times.extend(took);
            }
        }
        eprintln!("{kind:?}: {completed} of 24 completed before a cut at a random delay");
    }
}
