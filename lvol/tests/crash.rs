//! Power cuts under a pool: the pool sits on a `pfail` device (a volatile write cache with a
//! power cut on demand) over a RAM disk. Each round creates and deletes volumes and runs
//! batches of thin first writes (FUA or not, one block or a whole cluster, with flushes
//! between), then cuts the power in
//! the middle of a batch, keeping none, all or a seeded random part of the cache. The pool is
//! then opened from what the RAM disk holds, and:
//! - it opens, and every volume whose creation completed (and deletion did not) is there,
//!   with its name; no deleted one is;
//! - every durable write (FUA, or completed before a completed flush) reads back, or a later
//!   write of the same block does;
//! - no block shows anything but zeroes or a value written to that very block (no cluster
//!   is mapped twice, checked when the table loads, and no cluster shows old data).

// Test arithmetic on small constants (block counts, seeds).
#![allow(clippy::cast_possible_truncation)]

#[path = "../../bdev/tests/common/mod.rs"]
mod common;
mod lvs_common;

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use common::{Collector, Harness, WAIT, flatten, sg};
use lvs_common::{HomeReactor, cut, rng};
use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::pfail::{Keep, PfailBdev};
use shoal_bdev::{Bdev, BdevIo, IoFlags, open_channel};
use shoal_lvol::format::record::ClearMethod;
use shoal_lvol::{LvolOptions, Lvs};
use shoal_reactor::Reactor;
use uuid::Uuid;

const BS: u32 = 512;
const CLUSTER: u64 = 4096;
const VOL_BLOCKS: u64 = 256;

fn block(v: u64) -> Vec<u8> {
    lvs_common::block(BS, v)
}

/// What a block may hold after the cut.
#[derive(Default, Clone)]
struct Block {
    /// The newest durable value (0: zeroes).
    durable: u64,
    /// Values written after it (completed or not).
    later: Vec<u64>,
    /// Values whose write completed but is not yet durable.
    completed: Vec<u64>,
}

#[derive(Default)]
struct Model {
    /// Volumes that must exist: name and blocks.
    vols: BTreeMap<Uuid, (String, BTreeMap<u64, Block>)>,
    /// Volumes deleted durably.
    deleted: BTreeSet<Uuid>,
}

fn round(seed: u64, keep: Keep) {
    let mut s = seed;
    let ram: Arc<dyn Bdev> =
        MallocBdev::create("ram", None, (6 << 20) / u64::from(BS), BS).unwrap();
    let pf = PfailBdev::create("pf", ram.clone()).unwrap();
    let pfb: Arc<dyn Bdev> = pf.clone();
    let home = HomeReactor::start();
    let lvs = Lvs::create(pfb.clone(), "lvs", CLUSTER, None, home.handle()).unwrap();
    // The pool must be durable before the first cut that could matter.
    let h = Harness::new(&pfb);
    h.run(BdevIo::flush()).1.unwrap();
    let mut model = Model::default();
    let mut vols: Vec<Arc<dyn Bdev>> = Vec::new();
    let mut next_val = 1u64;
    let rounds = 3 + rng(&mut s) % 5;
    for step in 0..rounds {
        // Control: create a thin volume, sometimes delete one.
        let name = format!("v{seed}_{step}");
        let o = LvolOptions {
            name: name.clone(),
            size_bytes: VOL_BLOCKS * u64::from(BS),
            thin: true,
            clear: ClearMethod::Default,
        };
        let v = lvs.create_lvol(o).unwrap();
        model.vols.insert(v.uuid(), (name, BTreeMap::new()));
        vols.push(v);
        if vols.len() > 2 && rng(&mut s).is_multiple_of(3) {
            let i = (rng(&mut s) as usize) % vols.len();
            let v = vols.remove(i);
            let u = v.info().uuid;
            lvs.delete_lvol(u).unwrap();
            model.vols.remove(&u);
            model.deleted.insert(u);
        }
        // A batch of writes, all in flight at once, to random blocks of the volumes.
        let last = step + 1 == rounds;
        let sink = Rc::new(Collector::default());
        let chans: Vec<_> = vols.iter().map(|v| open_channel(v).unwrap()).collect();
        let n = 8 + rng(&mut s) % 24;
        let mut batch = Vec::new();
        for _ in 0..n {
            let t = batch.len() as u64;
            let vi = (rng(&mut s) as usize) % vols.len();
            // A third of the writes cover a whole cluster: the write is then the new
            // cluster's fill (no zeroes written first).
            let per = CLUSTER / u64::from(BS);
            let (blk, len) = if rng(&mut s).is_multiple_of(3) {
                (rng(&mut s) % VOL_BLOCKS / per * per, per)
            } else {
                (rng(&mut s) % VOL_BLOCKS, 1)
            };
            let fua = rng(&mut s).is_multiple_of(3);
            let val = next_val;
            next_val += len;
            let u = vols[vi].info().uuid;
            if batch
                .iter()
                .any(|&(bu, bb, bl, _, _)| bu == u && bb < blk + len && blk < bb + bl)
            {
                // Overlapping writes in flight together may land in either order.
                continue;
            }
            let mut data = Vec::new();
            for i in 0..len {
                let b = model
                    .vols
                    .get_mut(&u)
                    .unwrap()
                    .1
                    .entry(blk + i)
                    .or_default();
                b.later.push(val + i);
                data.extend_from_slice(&block(val + i));
            }
            let mut io = BdevIo::write(blk, len, sg(&[&data]));
            if fua {
                io = io.with_flags(IoFlags::FUA);
            }
            chans[vi].submit(io, sink.clone(), t);
            batch.push((u, blk, len, val, fua));
        }
        let r = Reactor::current().unwrap();
        if last {
            // Cut while the batch is in flight: after a random number of completions.
            let want = (rng(&mut s) % (n + 1)) as usize;
            let n = batch.len() as u64;
            let want = want.min(n as usize);
            r.run_until(WAIT, || sink.done.borrow().len() >= want);
            let done: Vec<u64> = sink.done.borrow().iter().map(|d| d.0).collect();
            for t in done {
                // Before the cut: only what FUA made durable counts.
                completed(&mut model, batch[t as usize], false);
            }
            cut(&pf, keep);
            r.run_until(WAIT, || sink.done.borrow().len() == n as usize);
            break;
        }
        let n = batch.len();
        assert!(r.run_until(WAIT, || sink.done.borrow().len() == n));
        for (t, _, res) in sink.done.borrow().iter() {
            res.as_ref().unwrap();
            completed(&mut model, batch[*t as usize], true);
        }
        if rng(&mut s).is_multiple_of(2) {
            // A flush of every volume makes every completed write durable.
            for c in &chans {
                let f = Rc::new(Collector::default());
                c.submit(BdevIo::flush(), f.clone(), 0);
                assert!(r.run_until(WAIT, || f.done.borrow().len() == 1));
            }
            for (_, blocks) in model.vols.values_mut() {
                for b in blocks.values_mut() {
                    if let Some(&v) = b.completed.last() {
                        make_durable(b, v);
                    }
                }
            }
        }
    }
    drop(vols);
    drop(lvs);
    // Reopen from what the RAM disk holds.
    let lvs = Lvs::open(ram.clone(), home.handle())
        .unwrap_or_else(|e| panic!("seed {seed} {keep:?}: the pool does not open: {e}"));
    let info = lvs.info();
    let allocated: u64 = lvs.lvols().iter().map(|l| l.num_allocated_clusters()).sum();
    assert!(
        info.free_clusters + allocated <= info.total_data_clusters,
        "seed {seed}: clusters counted twice"
    );
    for u in &model.deleted {
        assert!(
            lvs.lvol(&u.to_string()).is_none(),
            "seed {seed}: deleted {u} is back"
        );
    }
    for (u, (name, blocks)) in &model.vols {
        let v = lvs
            .lvol(&u.to_string())
            .unwrap_or_else(|| panic!("seed {seed} {keep:?}: volume {name} is gone"));
        assert_eq!(&v.lvol_name(), name);
        let vb: Arc<dyn Bdev> = v;
        let h = Harness::new(&vb);
        let all = h.read(0, VOL_BLOCKS).unwrap();
        for blk in 0..VOL_BLOCKS {
            let got = &all[(blk * u64::from(BS)) as usize..((blk + 1) * u64::from(BS)) as usize];
            let word = u64::from_le_bytes(got[..8].try_into().unwrap());
            assert_eq!(
                got,
                &block(word)[..],
                "seed {seed}: block {blk} of {name} is torn"
            );
            let b = blocks.get(&blk).cloned().unwrap_or_default();
            let ok = word == b.durable || b.later.contains(&word);
            assert!(
                ok,
                "seed {seed} {keep:?}: block {blk} of {name} holds {word}, durable {} later {:?}",
                b.durable, b.later
            );
        }
    }
    let _ = flatten;
}

/// A write of the batch (volume, first block, blocks, first value, FUA) completed: a FUA write
/// is durable; otherwise its values are completed, and recorded so when `keep` says so.
fn completed(model: &mut Model, w: (Uuid, u64, u64, u64, bool), keep: bool) {
    let (u, blk, len, val, fua) = w;
    let blocks = &mut model.vols.get_mut(&u).unwrap().1;
    for i in 0..len {
        let b = blocks.get_mut(&(blk + i)).unwrap();
        if fua {
            make_durable(b, val + i);
        } else if keep {
            b.completed.push(val + i);
        }
    }
}

fn make_durable(b: &mut Block, val: u64) {
    // `val` and anything written after it may be there; what came before it is superseded.
    if let Some(i) = b.later.iter().position(|&x| x == val) {
        b.durable = val;
        b.later.drain(..=i);
        b.later.insert(0, val);
        b.completed.retain(|&x| b.later.contains(&x));
    }
}

#[test]
fn power_cuts_during_thin_first_writes_and_volume_changes() {
    let _ = Duration::ZERO;
    for seed in 0..12u64 {
        round(seed, Keep::None);
        round(seed + 100, Keep::All);
        round(seed + 200, Keep::Random(seed));
    }
}
