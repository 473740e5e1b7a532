//! The `delay` backend: latency is added (lower bounds only: a slow machine may add more),
//! updated at run time, and errors of the base pass through.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{Harness, pattern, sg_zeroed};
use shoal_bdev::delay::{DelayBdev, DelayLatencies, LatencyType, MAX_LATENCY_US, PRODUCT_NAME};
use shoal_bdev::error_bdev::{ErrorBdev, Injection};
use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::{Bdev, BdevError, BdevIo, IoType};

const BS: usize = 4096;

fn delay_on_malloc(lat: DelayLatencies) -> (Arc<DelayBdev>, Harness) {
    let base = MallocBdev::create("Malloc3", None, 64, 4096).unwrap();
    let d = DelayBdev::create("Delay3", base, None, lat).unwrap();
    let dynd: Arc<dyn Bdev> = d.clone();
    let h = Harness::new(&dynd);
    (d, h)
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

#[test]
fn identity_and_latencies() {
    let lat = DelayLatencies {
        avg_read_us: 1,
        p99_read_us: 2,
        avg_write_us: 3,
        p99_write_us: 4,
    };
    let (d, _h) = delay_on_malloc(lat);
    assert_eq!(d.info().name, "Delay3");
    assert_eq!(d.info().product_name, PRODUCT_NAME);
    assert_eq!((d.info().block_size, d.info().num_blocks()), (4096, 64));
    assert_eq!(d.base().info().name, "Malloc3");
    assert_eq!(d.latencies(), lat);
    d.update_latency(LatencyType::P99Write, 40).unwrap();
    assert_eq!(d.latencies().p99_write_us, 40);
    assert!(matches!(
        d.update_latency(LatencyType::AvgRead, MAX_LATENCY_US + 1),
        Err(BdevError::Invalid(_))
    ));
    let base = MallocBdev::create("Malloc4", None, 8, 512).unwrap();
    let too_slow = DelayLatencies::uniform(MAX_LATENCY_US + 1);
    assert!(DelayBdev::create("D", base, None, too_slow).is_err());
}

#[test]
fn reads_and_writes_take_at_least_their_latency() {
    let lat = DelayLatencies {
        avg_read_us: 20_000,
        p99_read_us: 20_000,
        avg_write_us: 40_000,
        p99_write_us: 40_000,
    };
    let (_d, h) = delay_on_malloc(lat);
    let data = pattern(BS, 1);
    let (r, took) = timed(|| h.write(0, &data));
    r.unwrap();
    assert!(took >= Duration::from_millis(40), "write took {took:?}");
    let (r, took) = timed(|| h.read(0, 1));
    assert_eq!(r.unwrap(), data);
    assert!(took >= Duration::from_millis(20), "read took {took:?}");
}

#[test]
fn about_one_io_in_a_hundred_gets_the_p99_latency() {
    let lat = DelayLatencies {
        avg_read_us: 0,
        p99_read_us: 60_000_000,
        ..Default::default()
    };
    let base = MallocBdev::create("Malloc2", None, 16, 4096).unwrap();
    let d = DelayBdev::create("Delay2", base, None, lat).unwrap();
    let dynd: Arc<dyn Bdev> = d;
    let h = Harness::new(&dynd);
    let chan = shoal_bdev::open_channel(&dynd).unwrap();
    let n = 2000usize;
    for tag in 0..n as u64 {
        chan.submit(
            BdevIo::read(tag % 16, 1, sg_zeroed(&[BS])),
            h.sink.clone(),
            tag,
        );
    }
    h.reactor
        .run_until(Duration::from_secs(10), || h.collected() >= n * 9 / 10);
    h.run_for(Duration::from_millis(50));
    let quick = h.collected();
    let held = n - quick;
    // Binomial(2000, 1%): mean 20; outside 2..=80 has a probability below 1e-8.
    assert!(
        (2..=80).contains(&held),
        "{held} of {n} reads got the p99 latency"
    );
    // Dropping the channel hands the held completions back.
    drop(chan);
    assert_eq!(h.wait(n).len(), n);
}

#[test]
fn concurrent_ios_are_held_together_and_all_complete() {
    let (_d, h) = delay_on_malloc(DelayLatencies::uniform(15_000));
    let start = Instant::now();
    for tag in 0..32u64 {
        h.submit(BdevIo::read(tag, 1, sg_zeroed(&[BS])), tag);
    }
    // Nothing comes back before the latency.
    h.reactor
        .run_until(Duration::from_millis(10), || h.collected() > 0);
    if start.elapsed() < Duration::from_millis(15) {
        assert_eq!(h.collected(), 0, "completed before the latency");
    }
    let done = h.wait(32);
    assert!(start.elapsed() >= Duration::from_millis(15));
    let mut tags: Vec<u64> = done.iter().map(|d| d.0).collect();
    tags.sort_unstable();
    assert_eq!(tags, (0..32).collect::<Vec<_>>());
}

#[test]
fn latency_updates_apply_to_later_ios() {
    let (d, h) = delay_on_malloc(DelayLatencies::default());
    h.read(0, 1).unwrap();
    d.update_latency(LatencyType::AvgRead, 30_000).unwrap();
    d.update_latency(LatencyType::P99Read, 30_000).unwrap();
    let (r, took) = timed(|| h.read(0, 1));
    r.unwrap();
    assert!(
        took >= Duration::from_millis(30),
        "read after update took {took:?}"
    );
    // Writes keep their own (zero) latency; flush, unmap and write zeroes are not delayed,
    // which only an upper bound could show: check that they complete.
    h.write(1, &pattern(BS, 2)).unwrap();
    h.run(BdevIo::flush()).1.unwrap();
    h.run(BdevIo::unmap(1, 1)).1.unwrap();
    h.run(BdevIo::write_zeroes(1, 1)).1.unwrap();
}

#[test]
fn base_errors_are_delayed_and_passed_on() {
    let base = MallocBdev::create("Malloc5", None, 16, 4096).unwrap();
    let ee = ErrorBdev::create(base, None).unwrap();
    let d = DelayBdev::create("Delay5", ee.clone(), None, DelayLatencies::uniform(20_000)).unwrap();
    let dynd: Arc<dyn Bdev> = d;
    let h = Harness::new(&dynd);
    ee.inject(Injection::failure(IoType::Read)).unwrap();
    let (r, took) = timed(|| h.read(0, 1));
    assert!(matches!(r, Err(BdevError::Injected)), "{r:?}");
    assert!(
        took >= Duration::from_millis(20),
        "failed read took {took:?}"
    );
    // Out-of-range requests are refused by the delay device's own channel, undelayed.
    assert!(matches!(h.read(16, 1), Err(BdevError::OutOfRange { .. })));
}

#[test]
fn dropping_the_channel_delivers_held_completions() {
    let base = MallocBdev::create("Malloc6", None, 16, 4096).unwrap();
    let d = DelayBdev::create("Delay6", base, None, DelayLatencies::uniform(200_000)).unwrap();
    let dynd: Arc<dyn Bdev> = d;
    let h = Harness::new(&dynd);
    let chan = shoal_bdev::open_channel(&dynd).unwrap();
    chan.submit(BdevIo::read(0, 1, sg_zeroed(&[BS])), h.sink.clone(), 5);
    // Let the base complete it; the delay device now holds the completion.
    h.run_for(Duration::from_millis(20));
    assert_eq!(h.collected(), 0);
    drop(chan);
    let done = h.wait(1);
    assert_eq!(done[0].0, 5);
    assert!(done[0].2.is_ok());
}
