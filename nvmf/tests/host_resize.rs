//! A `RemoteBdev` follows its namespace's size: Shoal's target (over loopback) sends a
//! Namespace Attribute Changed event when the namespace's device grows or shrinks, the host
//! re-reads Identify Namespace and the bdev takes the new size, without reconnecting. Also:
//! the Asynchronous Event Request the host keeps outstanding is not a command that times out,
//! and `refresh_size` reads the size on request.
#![allow(missing_docs, clippy::cast_possible_truncation)]

mod common;
mod host_common;

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use host_common::{Collector, WAIT, free_port, host_reactors, options, start_target_with};
use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::{Bdev, BdevError, BdevIo, IoBuf, IoChannel, open_channel};
use shoal_nvmf::host::{Controller, ControllerState, RemoteBdev};
use shoal_nvmf::target::subsystem::TransportConfig;
use shoal_reactor::{Reactor, ReactorConfig};

const BS: u32 = 512;

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: not within 5 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Io {
    reactor: Reactor,
    chan: IoChannel,
    sink: Rc<Collector>,
}

impl Io {
    fn new(bdev: &Arc<dyn Bdev>) -> Io {
        let reactor = Reactor::new(0, None, ReactorConfig::default()).unwrap();
        let chan = open_channel(bdev).unwrap();
        Io {
            reactor,
            chan,
            sink: Rc::new(Collector::default()),
        }
    }
    fn run(&self, io: BdevIo) -> (BdevIo, Result<(), BdevError>) {
        self.chan.submit(io, self.sink.clone(), 0);
        assert!(
            self.reactor
                .run_until(WAIT, || !self.sink.done.borrow().is_empty())
        );
        let (_, io, r) = self.sink.done.borrow_mut().pop().unwrap();
        (io, r)
    }
    fn write(&self, at: u64, byte: u8) -> Result<(), BdevError> {
        let buf = IoBuf::copy_from(&[byte; BS as usize]);
        self.run(BdevIo::write(at, 1, [buf].into_iter().collect()))
            .1
    }
    fn read(&self, at: u64) -> Result<u8, BdevError> {
        let (io, r) = self.run(BdevIo::read(
            at,
            1,
            [IoBuf::zeroed(BS as usize)].into_iter().collect(),
        ));
        r.map(|()| io.bufs[0].as_slice()[0])
    }
}

#[test]
fn remote_bdev_follows_namespace_size() {
    // A RAM disk with room for 1024 blocks, exported at 256.
    let disk = MallocBdev::create("Grow0", None, 1024, BS).unwrap();
    disk.resize(256).unwrap();
    let port = free_port();
    let _target = start_target_with(
        vec![disk.clone() as Arc<dyn Bdev>],
        TransportConfig::default(),
        port,
    );
    let host = host_reactors();
    let mut o = options(([127, 0, 0, 1], port).into());
    // Far below how long the test keeps the controller: a request that timed out would
    // reset the association.
    o.admin_timeout = Duration::from_secs(2);
    let ctrl = Controller::connect(&host.handles()[0], o).unwrap();
    let bdev: Arc<dyn Bdev> = RemoteBdev::new(ctrl.clone(), 1, "Remote0").unwrap();
    assert_eq!(bdev.info().num_blocks(), 256);
    let io = Io::new(&bdev);
    assert!(matches!(
        io.write(256, 1),
        Err(BdevError::OutOfRange { .. })
    ));

    // Growth: the notice arrives and the bdev follows.
    disk.resize(1000).unwrap();
    wait_for("growth to 1000 blocks", || bdev.info().num_blocks() == 1000);
    assert_eq!(ctrl.namespace(1).unwrap().num_blocks, 1000);
    io.write(999, 0xA5).unwrap();
    assert_eq!(io.read(999).unwrap(), 0xA5);
    io.write(256, 0x5A).unwrap();
    assert_eq!(io.read(256).unwrap(), 0x5A);

    // A second notice (the first one's log page was read, so the event was unmasked).
    disk.resize(1024).unwrap();
    wait_for("growth to 1024 blocks", || bdev.info().num_blocks() == 1024);

    // Shrink: nothing goes past the new end.
    disk.resize(128).unwrap();
    wait_for("shrink to 128 blocks", || bdev.info().num_blocks() == 128);
    assert!(matches!(
        io.write(128, 1),
        Err(BdevError::OutOfRange { .. })
    ));
    assert!(matches!(io.read(999), Err(BdevError::OutOfRange { .. })));
    io.write(127, 7).unwrap();
    assert_eq!(io.read(127).unwrap(), 7);

    // On request (whether or not the notice came first, the answer is the new size).
    disk.resize(512).unwrap();
    assert_eq!(
        RemoteBdev::new(ctrl.clone(), 1, "Remote1")
            .unwrap()
            .refresh_size()
            .unwrap(),
        512
    );
    wait_for("refreshed size", || bdev.info().num_blocks() == 512);

    // The outstanding event request never timed out: still the first association.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(ctrl.state(), ControllerState::Connected);
    assert!(ctrl.last_error().is_none(), "{:?}", ctrl.last_error());
    drop(io);
    drop(bdev);
    ctrl.disconnect().unwrap();
}
