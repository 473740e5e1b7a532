//! The `error` backend: every injection kind, counting, ranges, run-time switching, hangs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::{Harness, pattern, sg, sg_zeroed};
use shoal_bdev::error_bdev::{ErrorBdev, Injection, IoTypeSet, PRODUCT_NAME};
use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::{Bdev, BdevError, BdevIo, IoType};

const BS: usize = 512;
const BLOCKS: u64 = 128;

fn setup() -> (Arc<ErrorBdev>, Arc<dyn Bdev>, Harness) {
    let base = MallocBdev::create("Malloc7", None, BLOCKS, 512).unwrap();
    let ee = ErrorBdev::create(base, None).unwrap();
    let dynee: Arc<dyn Bdev> = ee.clone();
    let h = Harness::new(&dynee);
    (ee, dynee, h)
}

fn is_injected(r: &Result<(), BdevError>) -> bool {
    matches!(r, Err(BdevError::Injected))
}

#[test]
fn named_after_its_base_with_the_same_geometry() {
    let (ee, dynee, _h) = setup();
    let info = dynee.info();
    assert_eq!(info.name, "EE_Malloc7");
    assert_eq!(info.product_name, PRODUCT_NAME);
    assert_eq!((info.block_size, info.num_blocks()), (512, BLOCKS));
    assert_eq!(ee.base().info().name, "Malloc7");
    assert_ne!(info.uuid, ee.base().info().uuid);
}

#[test]
fn failure_on_chosen_io_types_only() {
    let (ee, _d, h) = setup();
    let data = pattern(BS, 1);
    h.write(0, &data).unwrap();
    ee.inject(Injection::failure(IoType::Read)).unwrap();
    let r = h.read(0, 1);
    assert!(matches!(r, Err(BdevError::Injected)), "{r:?}");
    assert_eq!(r.unwrap_err().kind(), shoal_bdev::ErrorKind::Io);
    h.write(1, &data).unwrap();
    h.run(BdevIo::flush()).1.unwrap();
    h.run(BdevIo::unmap(5, 1)).1.unwrap();
    ee.clear();
    assert_eq!(
        h.read(0, 1).unwrap(),
        data,
        "cleared: reads reach the base again"
    );

    let set = IoTypeSet::only(IoType::Write).with(IoType::Flush);
    ee.inject(Injection::failure(set)).unwrap();
    assert!(is_injected(&h.run(BdevIo::write(0, 1, sg(&[&data]))).1));
    assert!(is_injected(&h.run(BdevIo::flush()).1));
    h.run(BdevIo::write_zeroes(3, 1)).1.unwrap();
    ee.clear();

    ee.inject(Injection::failure(IoTypeSet::ALL)).unwrap();
    for io in [
        BdevIo::read(0, 1, sg_zeroed(&[BS])),
        BdevIo::write(0, 1, sg_zeroed(&[BS])),
        BdevIo::flush(),
        BdevIo::unmap(0, 1),
        BdevIo::write_zeroes(0, 1),
    ] {
        let t = io.io_type;
        assert!(is_injected(&h.run(io).1), "{t:?} fails under `all`");
    }
    assert_eq!(ee.injected(), 1 + 2 + 5);
}

#[test]
fn a_failed_write_does_not_reach_the_base() {
    let (ee, _d, h) = setup();
    ee.inject(Injection::failure(IoType::Write)).unwrap();
    assert!(is_injected(
        &h.run(BdevIo::write(4, 1, sg(&[&pattern(BS, 2)]))).1
    ));
    ee.clear();
    assert_eq!(h.read(4, 1).unwrap(), vec![0; BS]);
}

#[test]
fn count_acts_on_the_next_n_only_then_the_rule_goes() {
    let (ee, _d, h) = setup();
    let id = ee
        .inject(Injection::failure(IoType::Read).count(3))
        .unwrap();
    let results: Vec<bool> = (0..6).map(|_| h.read(0, 1).is_err()).collect();
    assert_eq!(results, [true, true, true, false, false, false]);
    assert!(ee.rules().is_empty(), "a used-up rule disappears");
    assert!(!ee.remove(id));
}

#[test]
fn skip_lets_n_through_first() {
    let (ee, _d, h) = setup();
    ee.inject(Injection::failure(IoType::Write).skip(2).count(2))
        .unwrap();
    let data = pattern(BS, 3);
    let results: Vec<bool> = (0..6).map(|i| h.write(i, &data).is_err()).collect();
    assert_eq!(results, [false, false, true, true, false, false]);
    // Non-matching I/Os do not advance the counters.
    ee.inject(Injection::failure(IoType::Write).skip(1).count(1))
        .unwrap();
    for _ in 0..3 {
        h.read(0, 1).unwrap();
    }
    h.write(0, &data).unwrap();
    assert!(h.write(0, &data).is_err());
    h.write(0, &data).unwrap();
}

#[test]
fn block_range_limits_the_rule() {
    let (ee, _d, h) = setup();
    ee.inject(Injection::failure(IoTypeSet::ALL).blocks(10..20))
        .unwrap();
    let two = || sg_zeroed(&[2 * BS]);
    assert!(
        h.run(BdevIo::read(8, 2, two())).1.is_ok(),
        "blocks 8-9 are outside"
    );
    assert!(
        is_injected(&h.run(BdevIo::read(9, 2, two())).1),
        "9-10 touches 10"
    );
    assert!(is_injected(&h.run(BdevIo::read(19, 1, sg_zeroed(&[BS]))).1));
    assert!(
        h.run(BdevIo::read(20, 2, two())).1.is_ok(),
        "20 is past the end"
    );
    assert!(
        is_injected(&h.run(BdevIo::unmap(0, 100)).1),
        "a range covering it"
    );
    assert!(
        is_injected(&h.run(BdevIo::flush()).1),
        "a flush covers every block"
    );
}

#[test]
fn first_matching_rule_decides_and_rules_can_be_removed() {
    let (ee, _d, h) = setup();
    let fail = ee
        .inject(Injection::failure(IoType::Read).blocks(0..1))
        .unwrap();
    ee.inject(Injection::corrupt(IoType::Read, 0, 0xFF))
        .unwrap();
    assert!(h.read(0, 1).is_err());
    assert_eq!(
        h.read(1, 1).unwrap()[0],
        0xFF,
        "the second rule corrupts the other reads"
    );
    assert!(ee.remove(fail));
    assert_eq!(h.read(0, 1).unwrap()[0], 0xFF);
    assert_eq!(ee.rules().len(), 1);
}

#[test]
fn invalid_injections_are_refused() {
    let (ee, _d, _h) = setup();
    let bad = [
        Injection::failure(IoTypeSet::NONE),
        Injection::corrupt(IoType::Read, 0, 0),
        Injection::failure(IoType::Read).count(0),
        Injection::failure(IoType::Read).blocks(5..5),
    ];
    for inj in bad {
        assert!(
            matches!(ee.inject(inj.clone()), Err(BdevError::Invalid(_))),
            "{inj:?}"
        );
    }
    assert!(ee.rules().is_empty());
}

#[test]
fn corrupt_data_flips_a_byte_of_reads_and_writes() {
    let (ee, _d, h) = setup();
    let data = pattern(4 * BS, 4);
    h.write(0, &data).unwrap();
    ee.inject(Injection::corrupt(IoType::Read, 700, 0x5A).count(1))
        .unwrap();
    let got = h.read(0, 4).unwrap();
    let mut want = data.clone();
    want[700] ^= 0x5A;
    assert_eq!(got, want, "byte 700 (in the second block) is flipped");
    assert_eq!(
        h.read(0, 4).unwrap(),
        data,
        "only once: the stored data is intact"
    );

    // A read spread over several buffers, and an offset past the data.
    ee.inject(Injection::corrupt(IoType::Read, BS as u64 + 1, 0x01).count(1))
        .unwrap();
    let (io, r) = h.run(BdevIo::read(0, 2, sg_zeroed(&[BS, BS])));
    r.unwrap();
    assert_eq!(io.bufs[1].as_slice()[1], data[BS + 1] ^ 0x01);
    ee.inject(Injection::corrupt(IoType::Read, 10 * BS as u64, 0x01).count(1))
        .unwrap();
    assert_eq!(
        h.read(0, 1).unwrap(),
        data[..BS],
        "an offset past the data changes nothing"
    );

    ee.inject(Injection::corrupt(IoType::Write, 3, 0x80).count(1))
        .unwrap();
    h.write(8, &data[..BS]).unwrap();
    let mut want = data[..BS].to_vec();
    want[3] ^= 0x80;
    assert_eq!(
        h.read(8, 1).unwrap(),
        want,
        "the corrupted write reached the disk"
    );
}

#[test]
fn hang_holds_everything_until_cleared_then_completes() {
    let (ee, _d, h) = setup();
    ee.hang();
    let data = pattern(BS, 5);
    for i in 0..4u64 {
        h.submit(BdevIo::write(i, 1, sg(&[&data])), i);
    }
    h.submit(BdevIo::flush(), 4);
    h.run_for(Duration::from_millis(200));
    assert_eq!(h.collected(), 0, "a hung device answers nothing");
    assert_eq!(ee.held(), 5);
    ee.clear();
    let done = h.wait(5);
    assert!(
        done.iter().all(|d| d.2.is_ok()),
        "released I/Os complete normally"
    );
    assert_eq!(ee.held(), 0);
    for i in 0..4 {
        assert_eq!(
            h.read(i, 1).unwrap(),
            data,
            "released writes reached the base"
        );
    }
}

#[test]
fn held_ios_can_be_failed_and_new_ones_still_hang() {
    let (ee, _d, h) = setup();
    ee.inject(Injection::pending(IoType::Read)).unwrap();
    h.submit(BdevIo::read(0, 1, sg_zeroed(&[BS])), 1);
    h.submit(BdevIo::read(1, 1, sg_zeroed(&[BS])), 2);
    h.write(0, &pattern(BS, 6)).unwrap();
    h.run_for(Duration::from_millis(50));
    assert_eq!(h.collected(), 0);
    ee.fail_pending();
    let done = h.wait(2);
    assert!(done.iter().all(|d| is_injected(&d.2)));
    assert_eq!(
        done.iter().map(|d| d.1.bufs.len()).sum::<usize>(),
        2,
        "buffers come back"
    );
    // The rule is still there: the next read hangs too, until resumed.
    h.submit(BdevIo::read(0, 1, sg_zeroed(&[BS])), 3);
    h.run_for(Duration::from_millis(50));
    assert_eq!((h.collected(), ee.held()), (0, 1));
    ee.resume_pending();
    let (_, io, r) = h.wait(1).pop().unwrap();
    r.unwrap();
    assert_eq!(io.bufs[0].as_slice(), &pattern(BS, 6)[..]);
    assert_eq!(ee.rules().len(), 1);
}

#[test]
fn pending_with_count_hangs_only_the_next_n() {
    let (ee, _d, h) = setup();
    ee.inject(Injection::pending(IoType::Read).count(2))
        .unwrap();
    for tag in 0..5 {
        h.submit(BdevIo::read(tag, 1, sg_zeroed(&[BS])), tag);
    }
    let done = h.wait(3);
    let mut tags: Vec<u64> = done.iter().map(|d| d.0).collect();
    tags.sort_unstable();
    assert_eq!(tags, [2, 3, 4], "the first two are held");
    h.run_for(Duration::from_millis(30));
    assert_eq!(ee.held(), 2);
    ee.clear();
    assert_eq!(h.wait(2).len(), 2);
}

#[test]
fn dropping_the_channel_fails_held_ios() {
    let (ee, dynee, h) = setup();
    ee.hang();
    let h2 = {
        // A second channel on the same reactor, dropped while it holds an I/O.
        let chan = shoal_bdev::open_channel(&dynee).unwrap();
        chan.submit(BdevIo::read(0, 1, sg_zeroed(&[BS])), h.sink.clone(), 9);
        h.run_for(Duration::from_millis(10));
        assert_eq!(ee.held(), 1);
        chan
    };
    drop(h2);
    let done = h.wait(1);
    assert_eq!(done[0].0, 9);
    assert!(matches!(done[0].2, Err(BdevError::Closed)));
    assert_eq!(ee.held(), 0);
}

#[test]
fn injection_switches_at_run_time_from_another_thread() {
    let (ee, _d, h) = setup();
    let stop = Arc::new(AtomicBool::new(false));
    let toggler = {
        let (ee, stop) = (ee.clone(), stop.clone());
        std::thread::spawn(move || {
            for _ in 0..20 {
                let id = ee.inject(Injection::failure(IoType::Read)).unwrap();
                std::thread::sleep(Duration::from_millis(3));
                ee.remove(id);
                std::thread::sleep(Duration::from_millis(3));
            }
            stop.store(true, Ordering::Release);
        })
    };
    let (mut ok, mut failed) = (0u32, 0u32);
    while !stop.load(Ordering::Acquire) {
        match h.read(0, 1) {
            Ok(_) => ok += 1,
            Err(BdevError::Injected) => failed += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    toggler.join().unwrap();
    assert!(
        ok > 0 && failed > 0,
        "saw {ok} successes and {failed} failures"
    );
    h.read(0, 1).unwrap();
}

#[test]
fn a_hang_released_from_another_thread_wakes_a_sleeping_reactor() {
    use shoal_bdev::reactor::{Reactor, ReactorConfig, ReactorSet};
    let base = MallocBdev::create("Malloc8", None, BLOCKS, 512).unwrap();
    let ee = ErrorBdev::create(base, None).unwrap();
    ee.hang();
    let set =
        ReactorSet::start(&[0], ReactorConfig::default(), Arc::new(|_: &Reactor| {})).unwrap();
    let (tx, rx) = crossbeam_channel::bounded(1);
    let dynee: Arc<dyn Bdev> = ee.clone();
    set.handles()[0].send(move || {
        struct Tx(
            crossbeam_channel::Sender<bool>,
            std::cell::RefCell<Option<shoal_bdev::IoChannel>>,
        );
        impl shoal_bdev::IoSink for Tx {
            fn io_done(&self, _t: u64, _io: BdevIo, r: Result<(), BdevError>) {
                let _ = self.0.send(r.is_ok());
                self.1.borrow_mut().take();
            }
        }
        let chan = shoal_bdev::open_channel(&dynee).unwrap();
        let sink = std::rc::Rc::new(Tx(tx, std::cell::RefCell::new(None)));
        chan.submit(BdevIo::read(0, 1, sg_zeroed(&[BS])), sink.clone(), 0);
        *sink.1.borrow_mut() = Some(chan);
    });
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "hung");
    assert_eq!(ee.held(), 1);
    ee.clear();
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
    set.shutdown();
}
