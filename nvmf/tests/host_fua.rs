//! Force Unit Access over the wire, end to end: Shoal's host puts the FUA bit in the Write
//! and Write Zeroes commands it sends, and Shoal's target hands it to the namespace's device.
//! The namespace is a `pfail` device (a volatile write cache) over RAM: after a power cut
//! that keeps nothing of the cache, the RAM holds exactly the writes that were made durable,
//! by FUA or by a Flush. If either side dropped the bit, the FUA writes would be lost too.
#![allow(missing_docs, clippy::cast_possible_truncation)]

mod common;
mod host_common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use host_common::{WAIT, free_port, host_reactors, pattern, start_target_with};
use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::pfail::{Keep, PfailBdev};
use shoal_bdev::{Bdev, BdevError, BdevIo, IoBuf, IoChannel, IoFlags, IoSink, open_channel};
use shoal_nvmf::host::RemoteBdev;
use shoal_nvmf::target::subsystem::TransportConfig;
use shoal_reactor::{Reactor, ReactorConfig};

const BS: usize = 4096;
const BLOCKS: u64 = 256;

type Done = (BdevIo, Result<(), BdevError>);

#[derive(Default)]
struct Collector(RefCell<Vec<Done>>);

impl IoSink for Collector {
    fn io_done(&self, _tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        self.0.borrow_mut().push((io, result));
    }
}

fn run(reactor: &Reactor, chan: &IoChannel, io: BdevIo) -> Done {
    let sink = Rc::new(Collector::default());
    chan.submit(io, sink.clone(), 0);
    assert!(reactor.run_until(WAIT, || !sink.0.borrow().is_empty()));
    sink.0.borrow_mut().pop().unwrap()
}

fn write(reactor: &Reactor, chan: &IoChannel, at: u64, data: &[u8], flags: IoFlags) {
    let bufs = [IoBuf::copy_from(data)].into_iter().collect();
    let io = BdevIo::write(at, (data.len() / BS) as u64, bufs).with_flags(flags);
    run(reactor, chan, io).1.unwrap();
}

fn read(reactor: &Reactor, chan: &IoChannel, at: u64, blocks: u64) -> Vec<u8> {
    let bufs = [IoBuf::zeroed(blocks as usize * BS)].into_iter().collect();
    let (io, r) = run(reactor, chan, BdevIo::read(at, blocks, bufs));
    r.unwrap();
    io.bufs.iter().flat_map(|b| b.as_slice().to_vec()).collect()
}

#[test]
fn fua_and_flush_survive_a_power_cut_through_nvme_tcp() {
    let ram: Arc<dyn Bdev> = MallocBdev::create("Ram", None, BLOCKS, BS as u32).unwrap();
    let cache = PfailBdev::create("Pfail", ram.clone()).unwrap();
    let port = free_port();
    let ns: Arc<dyn Bdev> = cache.clone();
    let _target = start_target_with(vec![ns], TransportConfig::default(), port);
    let host = host_reactors();
    let uri = format!(
        "nvmf://127.0.0.1:{port}/{}?hostnqn={}&nsid=1&name=Remote0",
        common::NQN,
        common::HOSTNQN
    );
    let remote: Arc<dyn Bdev> = RemoteBdev::connect_uri(&host.handles()[0], &uri).unwrap();
    let reactor = Reactor::new(0, None, ReactorConfig::default()).unwrap();
    let chan = open_channel(&remote).unwrap();

    let (plain, fua, flushed, big) = (
        pattern(BS, 1),
        pattern(BS, 2),
        pattern(BS, 3),
        pattern(16 * BS, 4),
    );
    write(&reactor, &chan, 8, &flushed, IoFlags::NONE);
    run(&reactor, &chan, BdevIo::flush()).1.unwrap();
    // A FUA read commits the cache (here: all of it) first.
    write(&reactor, &chan, 96, &plain, IoFlags::NONE);
    let bufs = [IoBuf::zeroed(BS)].into_iter().collect();
    let (io, r) = run(
        &reactor,
        &chan,
        BdevIo::read(96, 1, bufs).with_flags(IoFlags::FUA),
    );
    r.unwrap();
    assert!(io.bufs[0].as_slice() == plain.as_slice(), "the FUA read");
    write(&reactor, &chan, 1, &plain, IoFlags::NONE);
    write(&reactor, &chan, 2, &fua, IoFlags::FUA);
    // Larger than the in-capsule size: the data comes after an R2T, the FUA bit stays.
    write(&reactor, &chan, 32, &big, IoFlags::FUA);
    // Write zeroes with FUA over cached data.
    write(&reactor, &chan, 64, &pattern(2 * BS, 5), IoFlags::NONE);
    let wz = BdevIo::write_zeroes(64, 1).with_flags(IoFlags::FUA);
    run(&reactor, &chan, wz).1.unwrap();
    assert!(
        read(&reactor, &chan, 1, 1) == plain,
        "the host reads its cached write"
    );

    let cut = Rc::new(RefCell::new(None));
    let c = cut.clone();
    cache.cut(Keep::None, Box::new(move |r| *c.borrow_mut() = Some(r)));
    assert!(reactor.run_until(WAIT, || cut.borrow().is_some()));
    cut.borrow_mut().take().unwrap().unwrap();

    let base = open_channel(&ram).unwrap();
    let check = |at: u64, want: &[u8], what: &str| {
        let got = read(&reactor, &base, at, (want.len() / BS) as u64);
        assert!(got == want, "{what}: the RAM after the cut");
    };
    check(8, &flushed, "flushed");
    check(1, &[0; BS], "a plain write, never made durable");
    check(2, &fua, "a FUA write");
    check(32, &big, "a FUA write sent after an R2T");
    let mut zeroed = pattern(2 * BS, 5);
    zeroed[..BS].fill(0);
    check(64, &zeroed[..BS], "a FUA write zeroes");
    check(65, &[0; BS], "the cached write beside it");
    check(96, &plain, "committed by the FUA read");
    // The namespace now fails like a dead disk.
    let bufs = [IoBuf::zeroed(BS)].into_iter().collect();
    assert!(run(&reactor, &chan, BdevIo::read(0, 1, bufs)).1.is_err());
}
