//! A child that lost its volatile write cache (a power cut of its node) and comes back with the
//! same replica UUID gets a partial rebuild: the rebuild must also cover what it acknowledged
//! into that cache and lost, or the nexus later reads a write the host was told is durable
//! from a child that no longer holds it. Each test cuts a `pfail` child (`Keep::None`: nothing
//! of its cache survives), brings the same device back, re-adds it, then faults the other child
//! and reads the acknowledged data through the nexus.
mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use shoal_bdev::pfail::{Keep, PfailBdev};
use shoal_bdev::{Bdev, BdevIo};
use shoal_reactor::Reactor;
use shoal_replication::{ChildSpec, ChildState, ChildUri, Nexus};

const BLOCKS: u64 = 4096;

fn cut(r: &Reactor, dev: &Arc<PfailBdev>) {
    let slot = Rc::new(RefCell::new(None));
    let s = slot.clone();
    dev.cut(Keep::None, Box::new(move |x| *s.borrow_mut() = Some(x)));
    until(r, "the cut", || slot.borrow().is_some());
    slot.borrow_mut().take().unwrap().expect("cut");
}

fn faulted(nx: &Nexus, u: &ChildUri) -> bool {
    nx.child_status(u)
        .is_some_and(|c| matches!(c.state, ChildState::Faulted(_)))
}

/// The power comes back: the same medium as a new `pfail` device of the same name, re-added.
fn power_back(r: &Reactor, nx: &Nexus, base: &Arc<dyn Bdev>) -> Arc<dyn Bdev> {
    let b: Arc<dyn Bdev> = PfailBdev::create("b", base.clone()).unwrap();
    nx.add_child(ChildSpec::local(b.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    until_online(r, nx, &uri(&b));
    b
}

/// Faults `a` and checks that the nexus (now reading from `b` only) and `b` itself hold `data`
/// at nexus block `at`.
fn lose_a_and_check(
    r: &Reactor,
    nx: &Arc<Nexus>,
    a: &Arc<dyn Bdev>,
    b: &Arc<dyn Bdev>,
    at: u64,
    data: &[u8],
) {
    let blocks = data.len() as u64 / u64::from(BS);
    let on_a = Io::new(r, a).read(meta(BS) + at, blocks).unwrap();
    assert!(on_a == data, "a holds the write");
    nx.fault_child(&uri(a)).wait(WAIT).unwrap().unwrap();
    let nxb: Arc<dyn Bdev> = nx.clone();
    let via_nexus = Io::new(r, &nxb).read(at, blocks).unwrap();
    let on_b = Io::new(r, b).read(meta(BS) + at, blocks).unwrap();
    assert!(
        via_nexus == data && on_b == data,
        "b was marked in sync without an acknowledged write it lost with its cache \
         (read through the nexus: {}, on b: {})",
        if via_nexus == data { "ok" } else { "wrong" },
        if on_b == data { "ok" } else { "wrong" },
    );
}

/// The review's sequence: a write both children acknowledged (only in b's cache), b's power
/// cut, b faulted by the next write, a host flush (answered: only a flushed), b back.
fn write_cut_flush(write_intent: bool) {
    let r = reactor();
    let a = ram("a", BLOCKS);
    let b_ram = ram("bram", BLOCKS);
    let b1 = PfailBdev::create("b", b_ram.clone()).unwrap();
    let b1d: Arc<dyn Bdev> = b1.clone();
    let mut o = opts("nx", BLOCKS);
    o.write_intent = write_intent;
    let nx = create(&r, o, &[a.clone(), b1d.clone()]);
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    let data = pattern(8 * 512, 7);
    io.write(100, &data).unwrap();
    cut(&r, &b1);
    io.write(3000, &pattern(512, 8)).unwrap();
    until(&r, "b faulted", || faulted(&nx, &uri(&b1d)));
    io.run(BdevIo::flush()).1.unwrap();
    let b2 = power_back(&r, &nx, &b_ram);
    let rebuilt = nx.child_status(&uri(&b2)).unwrap().last_rebuild.unwrap();
    if !write_intent {
        assert!(
            rebuilt.full,
            "without a bitmap nothing says what b held only in cache"
        );
    }
    lose_a_and_check(&r, &nx, &a, &b2, 100, &data);
}

#[test]
fn a_child_back_from_a_power_cut_holds_what_it_acknowledged() {
    write_cut_flush(true);
}

#[test]
fn without_the_bitmap_a_child_back_from_a_power_cut_is_rebuilt_in_full() {
    write_cut_flush(false);
}

/// The bitmap's cleaning pass clears the write's region (flushing only the children in the
/// write path) after b left the write path but before the control task applied b's fault:
/// b's dirty map must get the region from the cleaning pass itself.
#[test]
fn a_region_cleaned_before_the_fault_is_applied_is_still_rebuilt() {
    log();
    let r = reactor();
    let a = ram("a", BLOCKS);
    let b_ram = ram("bram", BLOCKS);
    let b1 = PfailBdev::create("b", b_ram.clone()).unwrap();
    let b1d: Arc<dyn Bdev> = b1.clone();
    let mut o = opts("nx", BLOCKS);
    o.intent_clean = Duration::from_millis(50);
    o.io_timeout = Duration::from_secs(2);
    let nx = create(&r, o, &[a.clone(), b1d.clone()]);
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    let data = pattern(8 * 512, 9);
    io.write(100, &data).unwrap();
    // The control task is held up: it reads the label of a child that does not answer.
    let silent = Stall::create("silent", ram("silent_ram", BLOCKS));
    silent
        .stalled
        .store(true, std::sync::atomic::Ordering::Release);
    let silent_d: Arc<dyn Bdev> = silent.clone();
    let adding = nx.add_child(ChildSpec::local(silent_d));
    cut(&r, &b1);
    // Reads spread over the two local children by segment: those sent to b fail, take b out
    // of the I/O path and are answered from a. b's fault waits behind the add.
    for seg in 0..4 {
        io.read(seg * 256, 8).unwrap();
    }
    assert!(
        !faulted(&nx, &uri(&b1d)),
        "the fault waits for the control task"
    );
    until(&r, "the write's region cleaned", || {
        nx.status()
            .write_intent
            .is_some_and(|w| w.marked_regions == 0)
    });
    let added = adding.wait(WAIT).unwrap();
    assert!(added.is_err(), "the silent child's add times out");
    until(&r, "b faulted", || faulted(&nx, &uri(&b1d)));
    io.run(BdevIo::flush()).1.unwrap();
    let b2 = power_back(&r, &nx, &b_ram);
    lose_a_and_check(&r, &nx, &a, &b2, 100, &data);
}

/// A rebuilding child's copies are plain writes: a child that loses its cache in the middle of
/// a rebuild and comes back must copy again what it had copied but not flushed.
#[test]
fn a_rebuild_cut_short_by_a_power_cut_copies_again_what_it_lost() {
    const BIG: u64 = 32 << 11; // 32 MiB
    let r = reactor();
    let a = ram("a", BIG);
    let mut o = opts("nx", BIG);
    o.intent_clean = Duration::from_millis(50);
    let nx = create(&r, o, std::slice::from_ref(&a));
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    let data = pattern(usize::try_from(BIG * 512).unwrap(), 11);
    for chunk in 0..32u64 {
        let at = usize::try_from(chunk << 20).unwrap();
        io.write(chunk << 11, &data[at..at + (1 << 20)]).unwrap();
    }
    // The regions those writes marked are cleared (b's fault would otherwise mark them all).
    until(&r, "the bitmap cleaned", || {
        nx.status()
            .write_intent
            .is_some_and(|w| w.marked_regions == 0)
    });
    let b_ram = ram("bram", BIG);
    let b1 = PfailBdev::create("b", b_ram.clone()).unwrap();
    let b1d: Arc<dyn Bdev> = b1.clone();
    nx.set_rebuild_rate(8);
    nx.add_child(ChildSpec::local(b1d.clone()))
        .wait(WAIT)
        .unwrap()
        .unwrap();
    until(&r, "a quarter copied", || {
        nx.child_status(&uri(&b1d))
            .and_then(|c| c.rebuild)
            .is_some_and(|s| s.progress >= 25)
    });
    cut(&r, &b1);
    until(&r, "b's rebuild ended", || {
        faulted(&nx, &uri(&b1d))
            && nx
                .child_status(&uri(&b1d))
                .is_some_and(|c| c.rebuild.is_none())
    });
    nx.set_rebuild_rate(0);
    let b2 = power_back(&r, &nx, &b_ram);
    lose_a_and_check(&r, &nx, &a, &b2, 0, &data[..4 << 20]);
    let all = Io::new(&r, &b2).read(meta(BS), BIG).unwrap();
    assert!(all == data, "b holds the whole volume");
}
