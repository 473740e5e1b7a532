//! A write that covers one new cluster whole is that cluster's fill (`store::alloc::alloc_write`):
//! it travels to the pool's home, is written there to the new cluster with Force Unit Access,
//! and is answered once the cluster's `Map` record is durable. These tests hold that device
//! write (an `error` device over a RAM disk holds the first write to the data area) and, while
//! it is out, do what else can touch the cluster or the volume: a partial write and another
//! whole write to the same cluster from another channel, a device failure, the volume's
//! deletion, a snapshot, a shrink, a growth, a full pool, a failing journal, `set_read_only`
//! and a clone, the channel dropped. Each checks that the write
//! comes back with its own offset, flags and data, answered once, and that no cluster leaks or
//! is mapped twice.

// Test arithmetic on small constants (block counts, sizes).
#![allow(clippy::cast_possible_truncation)]

#[path = "../../bdev/tests/common/mod.rs"]
mod common;
mod lvs_common;

use std::sync::Arc;
use std::time::Duration;

use common::{Harness, WAIT, flatten, pattern, sg};
use lvs_common::{Pool, pool_on};
use shoal_bdev::error_bdev::{ErrorBdev, Injection};
use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::{Bdev, BdevError, BdevIo, IoFlags, IoType, open_channel};
use shoal_lvol::format::PAGE;
use shoal_lvol::format::record::ClearMethod;
use shoal_lvol::{LvolBdev, LvolOptions};

const BS: u32 = 512;
const CLUSTER: u64 = 4096;
const CB: u64 = CLUSTER / BS as u64;
/// Clusters of the test volume.
const CLUSTERS: u64 = 8;

struct Rig {
    pool: Pool,
    err: Arc<ErrorBdev>,
    vol: Arc<LvolBdev>,
    h: Harness,
}

fn thin(name: &str, clusters: u64) -> LvolOptions {
    LvolOptions {
        name: name.into(),
        size_bytes: clusters * CLUSTER,
        thin: true,
        clear: ClearMethod::Default,
    }
}

fn rig(bytes: u64) -> Rig {
    let ram: Arc<dyn Bdev> = MallocBdev::create("ram", None, bytes / u64::from(BS), BS).unwrap();
    let err = ErrorBdev::create(ram, None).unwrap();
    let eb: Arc<dyn Bdev> = err.clone();
    let pool = pool_on(eb, CLUSTER);
    let vol = pool.lvs.create_lvol(thin("v", CLUSTERS)).unwrap();
    let d: Arc<dyn Bdev> = vol.clone();
    let h = Harness::new(&d);
    Rig { pool, err, vol, h }
}

impl Rig {
    fn dynv(&self) -> Arc<dyn Bdev> {
        self.vol.clone()
    }

    /// Holds the next write to the pool's data area (the fill).
    fn hold_next_fill(&self) {
        let sb = *self.pool.lvs.superblock();
        let bs = u64::from(BS);
        let first = sb.data_offset / bs;
        let end = first + sb.total_clusters * CB;
        self.err
            .inject(
                Injection::pending(IoType::Write)
                    .blocks(first..end)
                    .count(1),
            )
            .unwrap();
    }

    fn wait_held(&self) {
        assert!(
            self.h.reactor.run_until(WAIT, || self.err.held() == 1),
            "the fill never reached the device"
        );
    }

    fn free(&self) -> u64 {
        self.pool.lvs.info().free_clusters
    }

    fn total(&self) -> u64 {
        self.pool.lvs.info().total_data_clusters
    }

    /// Runs the reactor until the pool's free count is `n` (the quarantine polls every
    /// millisecond).
    fn wait_free(&self, n: u64) -> bool {
        self.h.reactor.run_until(WAIT, || self.free() == n)
    }
}

fn whole(seed: u32) -> Vec<u8> {
    pattern(CLUSTER as usize, seed)
}

/// The completion with `tag` among `done`.
fn take(done: &mut Vec<common::Done>, tag: u64) -> (BdevIo, Result<(), BdevError>) {
    let i = done
        .iter()
        .position(|d| d.0 == tag)
        .unwrap_or_else(|| panic!("no completion for tag {tag}"));
    let (_, io, r) = done.remove(i);
    (io, r)
}

/// The request came back as it was sent: offset, length, type, flags and data.
fn intact(io: &BdevIo, offset: u64, flags: IoFlags, data: &[u8]) {
    assert_eq!(io.io_type, IoType::Write);
    assert_eq!(
        io.offset_blocks, offset,
        "the write's offset came back changed"
    );
    assert_eq!(io.num_blocks, CB);
    assert_eq!(io.flags, flags, "the write's flags came back changed");
    assert_eq!(
        flatten(&io.bufs),
        data,
        "the write's data came back changed"
    );
}

#[test]
fn a_partial_write_waits_for_the_whole_write_that_fills_its_cluster() {
    let r = rig(8 << 20);
    let c2 = open_channel(&r.dynv()).unwrap();
    let w1 = whole(1);
    r.hold_next_fill();
    r.h.submit(BdevIo::write(2 * CB, CB, sg(&[&w1])), 1);
    r.wait_held();
    let w2 = pattern(BS as usize, 2);
    c2.submit(
        BdevIo::write(2 * CB + 3, 1, sg(&[&w2])),
        r.h.sink.clone(),
        2,
    );
    r.h.run_for(Duration::from_millis(50));
    assert_eq!(r.h.collected(), 0, "an answer before the fill was written");
    r.err.resume_pending();
    let mut done = r.h.wait(2);
    let (io1, r1) = take(&mut done, 1);
    r1.unwrap();
    intact(&io1, 2 * CB, IoFlags::NONE, &w1);
    take(&mut done, 2).1.unwrap();
    r.h.run_for(Duration::from_millis(100));
    assert_eq!(r.h.collected(), 0, "a write was answered twice");
    let mut want = w1.clone();
    let at = 3 * BS as usize;
    want[at..at + BS as usize].copy_from_slice(&w2);
    assert_eq!(r.h.read(2 * CB, CB).unwrap(), want);
    assert_eq!(r.vol.num_allocated_clusters(), 1);
    assert_eq!(r.free(), r.total() - 1);
}

#[test]
fn two_whole_writes_to_one_new_cluster_take_one_cluster() {
    let r = rig(8 << 20);
    let c2 = open_channel(&r.dynv()).unwrap();
    let w1 = whole(1);
    let w2 = whole(2);
    r.hold_next_fill();
    r.h.submit(BdevIo::write(4 * CB, CB, sg(&[&w1])), 1);
    r.wait_held();
    c2.submit(
        BdevIo::write(4 * CB, CB, sg(&[&w2])).with_flags(IoFlags::FUA),
        r.h.sink.clone(),
        2,
    );
    r.h.run_for(Duration::from_millis(50));
    assert_eq!(r.h.collected(), 0, "an answer before the fill was written");
    r.err.resume_pending();
    let mut done = r.h.wait(2);
    let (io1, r1) = take(&mut done, 1);
    r1.unwrap();
    intact(&io1, 4 * CB, IoFlags::NONE, &w1);
    let (io2, r2) = take(&mut done, 2);
    r2.unwrap();
    intact(&io2, 4 * CB, IoFlags::FUA, &w2);
    // The second write waited for the first one's mapping, then went to the cluster.
    assert_eq!(r.h.read(4 * CB, CB).unwrap(), w2);
    assert_eq!(r.vol.num_allocated_clusters(), 1);
    assert_eq!(r.free(), r.total() - 1, "a cluster was allocated twice");
}

#[test]
fn a_failed_fill_write_gives_back_its_cluster_and_its_request() {
    let r = rig(8 << 20);
    let w1 = whole(1);
    r.hold_next_fill();
    r.h.submit(
        BdevIo::write(CB, CB, sg(&[&w1])).with_flags(IoFlags::FUA),
        1,
    );
    r.wait_held();
    r.err.fail_pending();
    let mut done = r.h.wait(1);
    let (io, res) = take(&mut done, 1);
    assert!(
        matches!(res, Err(BdevError::Injected)),
        "a write the device failed must hear the device's own error, not {res:?}"
    );
    intact(&io, CB, IoFlags::FUA, &w1);
    assert_eq!(
        r.free(),
        r.total(),
        "the failed fill's cluster was not given back"
    );
    assert_eq!(r.vol.num_allocated_clusters(), 0);
    assert_eq!(r.h.read(CB, CB).unwrap(), vec![0; CLUSTER as usize]);
    // The cluster can be written again.
    r.h.write(CB, &w1).unwrap();
    assert_eq!(r.h.read(CB, CB).unwrap(), w1);
}

#[test]
fn a_volume_deleted_under_its_whole_write_keeps_no_cluster() {
    let r = rig(8 << 20);
    let w1 = whole(1);
    r.hold_next_fill();
    r.h.submit(BdevIo::write(0, CB, sg(&[&w1])), 1);
    r.wait_held();
    r.pool.lvs.delete_lvol(r.vol.uuid()).unwrap();
    r.err.resume_pending();
    let mut done = r.h.wait(1);
    let (io, res) = take(&mut done, 1);
    assert!(
        res.is_err(),
        "a write to a deleted volume was answered {res:?}"
    );
    intact(&io, 0, IoFlags::NONE, &w1);
    assert!(
        r.wait_free(r.total()),
        "the deleted volume's new cluster leaked"
    );
}

#[test]
fn a_snapshot_waits_for_a_whole_write_at_the_home() {
    let r = rig(8 << 20);
    let w1 = whole(1);
    r.hold_next_fill();
    r.h.submit(BdevIo::write(3 * CB, CB, sg(&[&w1])), 1);
    r.wait_held();
    let lvs = r.pool.lvs.clone();
    let origin = r.vol.uuid();
    let snap = std::thread::spawn(move || lvs.snapshot(origin, "s"));
    r.h.run_for(Duration::from_millis(100));
    assert!(
        !snap.is_finished(),
        "the snapshot did not wait for the write in flight"
    );
    r.err.resume_pending();
    let mut done = r.h.wait(1);
    take(&mut done, 1).1.unwrap();
    let s = snap.join().unwrap().unwrap();
    // The write is wholly before the snapshot.
    assert_eq!(s.num_allocated_clusters(), 1);
    assert_eq!(r.vol.num_allocated_clusters(), 0);
    let ds: Arc<dyn Bdev> = s.clone();
    let c = open_channel(&ds).unwrap();
    let buf = common::sg_zeroed(&[CLUSTER as usize]);
    c.submit(BdevIo::read(3 * CB, CB, buf), r.h.sink.clone(), 2);
    let mut done = r.h.wait(1);
    let (io, res) = take(&mut done, 2);
    res.unwrap();
    assert_eq!(
        flatten(&io.bufs),
        w1,
        "the snapshot lacks the write it waited for"
    );
    assert_eq!(r.h.read(3 * CB, CB).unwrap(), w1);
    assert_eq!(r.free(), r.total() - 1);
}

#[test]
fn a_shrink_waits_for_a_whole_write_past_the_new_end() {
    let r = rig(8 << 20);
    let w1 = whole(1);
    r.hold_next_fill();
    r.h.submit(BdevIo::write(6 * CB, CB, sg(&[&w1])), 1);
    r.wait_held();
    let lvs = r.pool.lvs.clone();
    let u = r.vol.uuid();
    let shrink = std::thread::spawn(move || lvs.resize_lvol(u, 2 * CLUSTER));
    r.h.run_for(Duration::from_millis(100));
    assert!(
        !shrink.is_finished(),
        "the shrink did not wait for the write in flight"
    );
    r.err.resume_pending();
    let mut done = r.h.wait(1);
    take(&mut done, 1).1.unwrap();
    shrink.join().unwrap().unwrap();
    assert_eq!(r.vol.info().num_blocks(), 2 * CB);
    assert_eq!(r.vol.num_allocated_clusters(), 0);
    assert!(
        r.wait_free(r.total()),
        "the cluster past the new end was not freed"
    );
    // Grown again, the volume reads zeroes there, not the old write.
    r.pool.lvs.resize_lvol(u, CLUSTERS * CLUSTER).unwrap();
    assert_eq!(r.h.read(6 * CB, CB).unwrap(), vec![0; CLUSTER as usize]);
}

#[test]
fn a_whole_write_to_a_full_pool_fails_with_no_space_and_its_request_back() {
    let r = rig(8 << 20);
    // A thick volume takes every free cluster.
    let total = r.total();
    r.pool
        .lvs
        .create_lvol(LvolOptions {
            name: "all".into(),
            size_bytes: total * CLUSTER,
            thin: false,
            clear: ClearMethod::None,
        })
        .unwrap();
    assert_eq!(r.free(), 0);
    let w1 = whole(1);
    r.h.submit(
        BdevIo::write(5 * CB, CB, sg(&[&w1])).with_flags(IoFlags::FUA),
        1,
    );
    let mut done = r.h.wait(1);
    let (io, res) = take(&mut done, 1);
    assert!(matches!(res, Err(BdevError::NoSpace(_))), "{res:?}");
    intact(&io, 5 * CB, IoFlags::FUA, &w1);
    assert_eq!(r.vol.nospace_errors(), 1);
}

#[test]
fn a_journal_failure_after_the_fill_fails_the_write() {
    let r = rig(8 << 20);
    let sb = *r.pool.lvs.superblock();
    let bs = u64::from(BS);
    let j = sb.journal_offset / bs..(sb.journal_offset + sb.journal_pages * PAGE as u64) / bs;
    r.err
        .inject(Injection::failure(IoType::Write).blocks(j).count(1))
        .unwrap();
    let w1 = whole(1);
    r.h.submit(BdevIo::write(7 * CB, CB, sg(&[&w1])), 1);
    let mut done = r.h.wait(1);
    let (io, res) = take(&mut done, 1);
    assert!(
        res.is_err(),
        "a write whose mapping never became durable was answered {res:?}"
    );
    intact(&io, 7 * CB, IoFlags::NONE, &w1);
    assert_eq!(r.vol.num_allocated_clusters(), 0);
    assert!(r.pool.lvs.journal_stats().failed);
}

#[test]
fn a_growth_waits_for_a_whole_write_at_the_home() {
    let r = rig(8 << 20);
    let w1 = whole(1);
    r.hold_next_fill();
    r.h.submit(BdevIo::write(3 * CB, CB, sg(&[&w1])), 1);
    r.wait_held();
    let lvs = r.pool.lvs.clone();
    let u = r.vol.uuid();
    let grow = std::thread::spawn(move || lvs.resize_lvol(u, 2 * CLUSTERS * CLUSTER));
    r.h.run_for(Duration::from_millis(100));
    assert!(
        !grow.is_finished(),
        "the growth did not wait for the write in flight"
    );
    r.err.resume_pending();
    let mut done = r.h.wait(1);
    let (io, res) = take(&mut done, 1);
    res.unwrap();
    intact(&io, 3 * CB, IoFlags::NONE, &w1);
    grow.join().unwrap().unwrap();
    assert_eq!(r.vol.info().num_blocks(), 2 * CLUSTERS * CB);
    assert_eq!(
        r.h.read(3 * CB, CB).unwrap(),
        w1,
        "the write was lost by the growth"
    );
    // A whole write past the old end is a fill too.
    let w2 = whole(2);
    r.h.write((CLUSTERS + 1) * CB, &w2).unwrap();
    assert_eq!(r.h.read((CLUSTERS + 1) * CB, CB).unwrap(), w2);
    assert_eq!(r.vol.num_allocated_clusters(), 2);
    assert_eq!(r.free(), r.total() - 2);
}

/// Drops a second channel while its write is at the home (`whole`: the write is the fill; else
/// a one-block write waiting for a zero fill), then snapshots the volume: whether the snapshot
/// completes within two seconds.
fn snapshot_after_channel_drop(whole_write: bool) -> bool {
    let r = rig(8 << 20);
    let c2 = open_channel(&r.dynv()).unwrap();
    let sb = *r.pool.lvs.superblock();
    let first = sb.data_offset / u64::from(BS);
    let end = first + sb.total_clusters * CB;
    let t = if whole_write {
        IoType::Write
    } else {
        IoType::WriteZeroes
    };
    r.err
        .inject(Injection::pending(t).blocks(first..end).count(1))
        .unwrap();
    let io = if whole_write {
        BdevIo::write(0, CB, sg(&[&whole(1)]))
    } else {
        BdevIo::write(0, 1, sg(&[&pattern(BS as usize, 1)]))
    };
    c2.submit(io, r.h.sink.clone(), 1);
    r.wait_held();
    drop(c2);
    r.err.resume_pending();
    r.h.run_for(Duration::from_millis(100));
    let lvs = r.pool.lvs.clone();
    let origin = r.vol.uuid();
    let snap = std::thread::spawn(move || lvs.snapshot(origin, "s"));
    r.h.run_for(Duration::from_secs(2));
    snap.is_finished()
}

/// A channel dropped while its write is at the home: the channel stays (draining) until the
/// answer comes, so the write counts itself finished and a later freeze completes (before,
/// the answer found no channel and every later freeze of the volume waited for ever).
#[test]
fn a_snapshot_completes_after_a_channel_dropped_its_whole_write_at_the_home() {
    assert!(
        snapshot_after_channel_drop(true),
        "the snapshot hangs: the dropped channel's whole write never counted itself finished"
    );
}

/// The same with a one-block write waiting for its zero fill.
#[test]
fn a_snapshot_completes_after_a_channel_dropped_its_partial_write_at_the_home() {
    assert!(
        snapshot_after_channel_drop(false),
        "the snapshot hangs: the dropped channel's write never counted itself finished"
    );
}

/// A write in flight when its volume is made read-only and then cloned. `set_read_only` must
/// wait for the write (it is let go 200 ms in), the write must succeed, a write after it must
/// be refused, and the clone, made after, must hold the write and not change. `first`: the
/// write is a whole first write (the fill); else a whole write to a cluster already mapped.
fn read_only_waits_for_a_write_in_flight(first: bool) {
    let r = rig(8 << 20);
    let old = whole(9);
    if !first {
        r.h.write(0, &old).unwrap();
    }
    r.hold_next_fill();
    let w1 = whole(1);
    r.h.submit(BdevIo::write(0, CB, sg(&[&w1])), 1);
    r.wait_held();
    let lvs = r.pool.lvs.clone();
    let u = r.vol.uuid();
    let ro = std::thread::spawn(move || lvs.set_read_only(u));
    r.h.run_for(Duration::from_millis(200));
    assert!(
        !ro.is_finished(),
        "set_read_only answered while a write was still in flight"
    );
    r.err.resume_pending();
    let mut d = r.h.wait(1);
    let (_, res) = take(&mut d, 1);
    res.expect("the write in flight when the volume was made read-only failed");
    assert!(r.h.reactor.run_until(WAIT, || ro.is_finished()));
    ro.join().unwrap().unwrap();
    r.h.submit(BdevIo::write(0, CB, sg(&[&whole(2)])), 4);
    let mut d = r.h.wait(1);
    let (_, res) = take(&mut d, 4);
    assert!(
        matches!(res, Err(BdevError::ReadOnly)),
        "a write after set_read_only: {res:?}"
    );
    let c = r.pool.lvs.clone_lvol(u, "c").unwrap();
    let dc: Arc<dyn Bdev> = c.clone();
    let cc = open_channel(&dc).unwrap();
    let read = |tag| {
        cc.submit(
            BdevIo::read(0, CB, common::sg_zeroed(&[CLUSTER as usize])),
            r.h.sink.clone(),
            tag,
        );
        let mut d = r.h.wait(1);
        let (io, res) = take(&mut d, tag);
        res.unwrap();
        flatten(&io.bufs)
    };
    let before = read(2);
    r.h.run_for(Duration::from_millis(50));
    let after = read(3);
    assert_eq!(
        before, w1,
        "the clone does not hold the write that was in flight"
    );
    assert_eq!(before, after, "the clone's data changed after it was made");
}

/// `set_read_only` freezes the volume: a whole first write (the fill) in flight lands before
/// the flag is recorded, and a clone made next never sees its parent change (before, the
/// write could land in the read-only volume after the clone was made).
#[test]
fn set_read_only_waits_for_a_first_write_in_flight() {
    read_only_waits_for_a_write_in_flight(true);
}

/// The same with a write to a cluster already mapped, in flight at the device.
#[test]
fn set_read_only_waits_for_a_mapped_write_in_flight() {
    read_only_waits_for_a_write_in_flight(false);
}
