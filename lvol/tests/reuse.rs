//! A freed cluster is reused only once no I/O that could have seen its old mapping is still
//! out, even when a channel's I/Os complete out of order. The pool sits on an `error` device
//! over a RAM disk so that one write of the old owner can be held in flight (as a slow
//! request of a real device) while later I/Os of the same channel complete.

// Test arithmetic on small constants (block counts, sizes).
#![allow(clippy::cast_possible_truncation)]

#[path = "../../bdev/tests/common/mod.rs"]
mod common;
mod lvs_common;

use std::sync::Arc;
use std::time::Duration;

use common::{Harness, WAIT, pattern, sg, sg_zeroed};
use lvs_common::pool_on;
use shoal_bdev::error_bdev::{ErrorBdev, Injection};
use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::{Bdev, BdevIo, IoFlags, IoType, open_channel};
use shoal_lvol::LvolOptions;
use shoal_lvol::format::record::ClearMethod;

const BS: u32 = 512;
const CLUSTER: u64 = 4096;
const CB: u64 = CLUSTER / BS as u64;

fn thin(name: &str) -> LvolOptions {
    LvolOptions {
        name: name.into(),
        size_bytes: 16 * CLUSTER,
        thin: true,
        clear: ClearMethod::Default,
    }
}

/// Volume A's write to its cluster 0 is held at the device. A then deallocates that cluster
/// and reads elsewhere: its later I/Os complete, the held write does not. Volume B's first
/// write must not be given A's old data cluster while A's write is still out, or that write
/// lands in B's cluster afterwards and B reads A's data.
#[test]
fn a_freed_cluster_waits_for_an_older_io_that_completes_after_newer_ones() {
    let ram: Arc<dyn Bdev> =
        MallocBdev::create("ram", None, (8 << 20) / u64::from(BS), BS).unwrap();
    let err = ErrorBdev::create(ram, None).unwrap();
    let eb: Arc<dyn Bdev> = err.clone();
    let pool = pool_on(eb, CLUSTER);
    let a: Arc<dyn Bdev> = pool.lvs.create_lvol(thin("a")).unwrap();
    let b: Arc<dyn Bdev> = pool.lvs.create_lvol(thin("b")).unwrap();
    let h = Harness::new(&a);
    let chan_b = open_channel(&b).unwrap();

    // A's first write allocates the pool's first data cluster.
    h.write(0, &pattern(BS as usize, 1)).unwrap();
    let sb = *pool.lvs.superblock();
    let first = sb.data_offset / u64::from(BS);
    err.inject(
        Injection::pending(IoType::Write)
            .blocks(first..first + CB)
            .count(1),
    )
    .unwrap();

    // Tag 1: A's write to block 1, held at the device.
    let a_data = pattern(BS as usize, 0xA);
    h.submit(BdevIo::write(1, 1, sg(&[&a_data])), 1);
    assert!(h.reactor.run_until(WAIT, || err.held() == 1));
    // Tag 2: A deallocates its whole cluster 0 (the cluster goes to quarantine).
    h.submit(BdevIo::unmap(0, CB), 2);
    let done = h.wait(1);
    assert_eq!(done[0].0, 2);
    done[0].2.as_ref().unwrap();
    // Tag 3: a later read of A completes while the write is still out.
    h.submit(BdevIo::read(5 * CB, 1, sg_zeroed(&[BS as usize])), 3);
    let done = h.wait(1);
    assert_eq!(done[0].0, 3);
    // Give the quarantine its chance to release the cluster (it polls every millisecond).
    h.run_for(Duration::from_millis(50));

    // B's first write allocates a cluster.
    let b_data = pattern(BS as usize, 0xB);
    chan_b.submit(
        BdevIo::write(0, 1, sg(&[&b_data])).with_flags(IoFlags::FUA),
        h.sink.clone(),
        4,
    );
    let done = h.wait(1);
    assert_eq!(done[0].0, 4);
    done[0].2.as_ref().unwrap();

    // The held write of A now reaches the device.
    err.resume_pending();
    let done = h.wait(1);
    assert_eq!(done[0].0, 1);

    // B's cluster holds B's block and zeroes, never A's data.
    chan_b.submit(
        BdevIo::read(0, CB, sg_zeroed(&[CLUSTER as usize])),
        h.sink.clone(),
        5,
    );
    let mut done = h.wait(1);
    let (_, io, r) = done.pop().unwrap();
    r.unwrap();
    let got = common::flatten(&io.bufs);
    assert_eq!(&got[..BS as usize], &b_data[..], "B's own block");
    assert!(
        got[BS as usize..].iter().all(|&x| x == 0),
        "B's cluster shows another volume's data: A's write landed in it after the cluster \
         was reused (A's data there: {})",
        got[BS as usize..2 * BS as usize] == a_data[..]
    );
}
