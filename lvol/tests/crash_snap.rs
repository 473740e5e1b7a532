//! Power cuts during snapshot creation and snapshot deletion (into its only clone), with
//! writes in flight to the volume being snapshotted or merged into. The pool sits on a
//! `pfail` device over a RAM disk; the operation runs on a thread of its own while the test
//! thread cuts the power after a seeded delay, keeping none, all or a seeded part of the
//! volatile cache. The pool must open from what the RAM disk holds, and:
//! - an operation that completed is there; one that did not is wholly there or wholly absent
//!   (the snapshot exists with the origin as its clone, or does not; the merged snapshot is
//!   gone with its clone no longer a clone, or is there with the clone still its clone);
//! - every volume's blocks hold their durable value or a value written after it, and a
//!   snapshot holds what its origin held when it was taken (or an in-flight write);
//! - no block is torn, no cluster is mapped twice (checked when the table loads).

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
const BLOCKS: u64 = 256;

fn block(v: u64) -> Vec<u8> {
    lvs_common::block(BS, v)
}

fn dynb(l: &Arc<LvolBdev>) -> Arc<dyn Bdev> {
    l.clone()
}

/// Writes `vals` (block -> value) with FUA and waits.
fn write_all(h: &Harness, vals: &BTreeMap<u64, u64>) {
    for (&b, &v) in vals {
        h.run(BdevIo::write(b, 1, sg(&[&block(v)])).with_flags(IoFlags::FUA))
            .1
            .unwrap();
    }
}

/// Each block's value (checked whole).
fn values(v: &Arc<LvolBdev>) -> Vec<u64> {
    let h = Harness::new(&dynb(v));
    let all = h.read(0, BLOCKS).unwrap();
    all.chunks(BS as usize)
        .enumerate()
        .map(|(i, c)| {
            let w = u64::from_le_bytes(c[..8].try_into().unwrap());
            assert_eq!(c, &block(w)[..], "block {i} is torn");
            w
        })
        .collect()
}

fn round(seed: u64, keep: Keep, merge: bool) -> bool {
    let mut s = seed;
    let ram: Arc<dyn Bdev> =
        MallocBdev::create("ram", None, (4 << 20) / u64::from(BS), BS).unwrap();
    let pf = PfailBdev::create("pf", ram.clone()).unwrap();
    let pfb: Arc<dyn Bdev> = pf.clone();
    let home = HomeReactor::start();
    let lvs = Lvs::create(pfb.clone(), "lvs", CLUSTER, None, home.handle()).unwrap();
    let h = Harness::new(&pfb);
    h.run(BdevIo::flush()).1.unwrap();
    let o = LvolOptions {
        name: "v".into(),
        size_bytes: BLOCKS * u64::from(BS),
        thin: rng(&mut s).is_multiple_of(2),
        clear: ClearMethod::Default,
    };
    let v = lvs.create_lvol(o).unwrap();
    let hv = Harness::new(&dynb(&v));
    let mut next = 1u64;
    let mut fresh = |n: u64, s: &mut u64| -> BTreeMap<u64, u64> {
        (0..n)
            .map(|_| {
                next += 1;
                (rng(s) % BLOCKS, next)
            })
            .collect()
    };
    // The durable state before the operation: v written, snapshot s0, v and a clone c
    // written after it.
    let mut vm: Vec<u64> = vec![0; BLOCKS as usize];
    let w = fresh(120, &mut s);
    write_all(&hv, &w);
    w.iter().for_each(|(&b, &x)| vm[b as usize] = x);
    let s0 = lvs.snapshot(v.uuid(), "s0").unwrap();
    let s0m = vm.clone();
    let w = fresh(40, &mut s);
    write_all(&hv, &w);
    w.iter().for_each(|(&b, &x)| vm[b as usize] = x);
    let c = lvs.clone_lvol(s0.uuid(), "c").unwrap();
    let mut cm = s0m.clone();
    {
        let hc = Harness::new(&dynb(&c));
        let w = fresh(20, &mut s);
        write_all(&hc, &w);
        w.iter().for_each(|(&b, &x)| cm[b as usize] = x);
    }
    if merge {
        lvs.delete_lvol(c.uuid()).unwrap();
    }
    // Writes in flight to v during the operation.
    let r = Reactor::current().unwrap();
    let chan = open_channel(&dynb(&v)).unwrap();
    let sink = Rc::new(Collector::default());
    let inflight = fresh(16, &mut s);
    for (t, (&b, &x)) in inflight.iter().enumerate() {
        let io = BdevIo::write(b, 1, sg(&[&block(x)])).with_flags(IoFlags::FUA);
        chan.submit(io, sink.clone(), t as u64);
    }
    let (lvs2, vu, su) = (lvs.clone(), v.uuid(), s0.uuid());
    let op = std::thread::spawn(move || {
        if merge {
            lvs2.delete_lvol(su).is_ok()
        } else {
            lvs2.snapshot(vu, "s1").is_ok()
        }
    });
    let delay = Duration::from_micros(rng(&mut s) % 3000);
    r.run_until(delay, || false);
    cut(&pf, keep);
    r.run_until(WAIT, || {
        sink.done.borrow().len() == inflight.len() && op.is_finished()
    });
    let completed = op.join().unwrap();
    eprintln!("seed {seed} {keep:?} merge {merge}: the operation completed: {completed}");
    drop((chan, hv, v, s0, c, lvs));
    // Reopen.
    let lvs = Lvs::open(ram.clone(), home.handle())
        .unwrap_or_else(|e| panic!("seed {seed} {keep:?}: the pool does not open: {e}"));
    let ok = |x: u64, durable: u64, b: usize| x == durable || inflight.get(&(b as u64)) == Some(&x);
    let v = lvs.lvol("v").expect("v");
    for (b, x) in values(&v).into_iter().enumerate() {
        assert!(
            ok(x, vm[b], b),
            "seed {seed} {keep:?}: v block {b} holds {x}, durable {}",
            vm[b]
        );
    }
    if merge {
        let s0 = lvs.lvol("s0");
        assert!(
            !(completed && s0.is_some()),
            "seed {seed}: a completed deletion undone"
        );
        match s0 {
            Some(s0) => {
                assert_eq!(v.parent_uuid(), Some(s0.uuid()), "seed {seed}");
                assert_eq!(values(&s0), s0m, "seed {seed}: s0 changed");
            }
            None => assert_eq!(v.parent_uuid(), None, "seed {seed}: half a merge"),
        }
    } else {
        let s0 = lvs.lvol("s0").expect("s0");
        assert_eq!(values(&s0), s0m, "seed {seed}: s0 changed");
        let c = lvs.lvol("c").expect("c");
        assert_eq!(values(&c), cm, "seed {seed}: c changed");
        match lvs.lvol("s1") {
            Some(s1) => {
                assert_eq!(s1.parent_uuid(), Some(s0.uuid()), "seed {seed}");
                assert_eq!(
                    v.parent_uuid(),
                    Some(s1.uuid()),
                    "seed {seed}: half a snapshot"
                );
                for (b, x) in values(&s1).into_iter().enumerate() {
                    assert!(
                        ok(x, vm[b], b),
                        "seed {seed} {keep:?}: s1 block {b} holds {x}"
                    );
                }
            }
            None => {
                assert!(!completed, "seed {seed}: a completed snapshot lost");
                assert_eq!(
                    v.parent_uuid(),
                    Some(s0.uuid()),
                    "seed {seed}: half a snapshot"
                );
            }
        }
    }
    completed
}

#[test]
fn power_cuts_during_snapshot_creation_and_deletion() {
    let mut completed = 0;
    for seed in 0..10u64 {
        for merge in [false, true] {
            completed += usize::from(round(seed, Keep::None, merge));
            completed += usize::from(round(seed + 100, Keep::All, merge));
            completed += usize::from(round(seed + 200, Keep::Random(seed), merge));
        }
    }
    // The cuts must land both before and after operations complete (how many of each depends
    // on the machine's speed: at least one of each).
    assert!((1..60).contains(&completed), "{completed} of 60 completed");
}
