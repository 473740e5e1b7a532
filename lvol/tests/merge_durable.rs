//! Deleting a snapshot merges it into its only clone with one `MergeSnapshot` record; the clone
//! takes the snapshot's clusters. Until that record is durable a crash brings the snapshot
//! back owning them, so a write to the clone that lands in one of them before then would
//! change the snapshot. The clone's I/O is held until the record is durable: here the
//! record's journal write is held, a write to the clone is sent, and the power is cut.

// Test arithmetic on small constants (block counts).
#![allow(clippy::cast_possible_truncation)]

#[path = "../../bdev/tests/common/mod.rs"]
mod common;
mod lvs_common;

use std::sync::Arc;
use std::time::Duration;

use common::{Harness, sg};
use lvs_common::{HomeReactor, cut};
use shoal_bdev::error_bdev::{ErrorBdev, Injection};
use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::pfail::{Keep, PfailBdev};
use shoal_bdev::{Bdev, BdevIo, IoFlags, IoType};
use shoal_lvol::format::record::ClearMethod;
use shoal_lvol::{LvolOptions, Lvs};

const BS: u32 = 512;
const CLUSTER: u64 = 4096;

#[test]
fn a_write_during_a_merge_does_not_change_the_snapshot_a_crash_brings_back() {
    let ram: Arc<dyn Bdev> = MallocBdev::create("ram", None, (16 << 20) / 512, BS).unwrap();
    let pf = PfailBdev::create("pf", ram.clone()).unwrap();
    let err = ErrorBdev::create(pf.clone(), None).unwrap();
    let home = HomeReactor::start();
    let lvs = Lvs::create(err.clone(), "p", CLUSTER, None, home.handle()).unwrap();
    let v = lvs
        .create_lvol(LvolOptions {
            name: "v".into(),
            size_bytes: 16 * CLUSTER,
            thin: true,
            clear: ClearMethod::Default,
        })
        .unwrap();
    let vb: Arc<dyn Bdev> = v.clone();
    let h = Harness::new(&vb);
    let a = lvs_common::block(BS, 0xA);
    let b = lvs_common::block(BS, 0xB);
    h.run(BdevIo::write(0, 1, sg(&[&a])).with_flags(IoFlags::FUA))
        .1
        .unwrap();
    let s = lvs.snapshot(v.uuid(), "s").unwrap();
    // The merge's record is appended, its journal write held.
    let rule = err
        .inject(Injection::pending(IoType::Write).count(1))
        .unwrap();
    let (l2, su) = (lvs.clone(), s.uuid());
    let delete = std::thread::spawn(move || l2.delete_lvol(su));
    let t0 = std::time::Instant::now();
    while err.held() == 0 {
        assert!(t0.elapsed() < common::WAIT, "the merge journals nothing");
        std::thread::sleep(Duration::from_millis(1));
    }
    // A write to the cluster the clone takes from the snapshot.
    h.submit(BdevIo::write(0, 1, sg(&[&b])), 1);
    h.run_for(Duration::from_millis(300));
    let acked = h.sink.done.borrow().iter().any(|d| d.0 == 1 && d.2.is_ok());
    // Power cut: the cache reaches the disk, the held journal write never does.
    cut(&pf, Keep::All);
    err.remove(rule);
    err.resume_pending();
    assert!(
        delete.join().unwrap().is_err(),
        "the merge's record was lost"
    );
    h.run_for(Duration::from_millis(50));
    drop((s, v, lvs, h));
    let home2 = HomeReactor::start();
    let lvs = Lvs::open(ram, home2.handle()).unwrap();
    let s = lvs
        .lvol("s")
        .expect("the merge did not happen: the snapshot is back");
    let sb: Arc<dyn Bdev> = s.clone();
    let got = Harness::new(&sb).read(0, 1).unwrap();
    assert!(
        got == a,
        "the snapshot holds the clone's later write (acknowledged before the merge was \
         durable: {acked})"
    );
    assert!(
        !acked,
        "the write was answered before the merge's record was durable"
    );
}
