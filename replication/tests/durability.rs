//! What the nexus acknowledges as durable is durable on every child: a FUA write goes to each
//! child with FUA, a Flush flushes each child. The children are `pfail` devices (volatile
//! write caches) over RAM; after each child loses its power keeping nothing of its cache,
//! its RAM must hold every FUA write and every flushed write, and nothing else. A child that
//! cannot honour FUA is refused when the nexus is created.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use common::*;
use shoal_bdev::pfail::{Keep, PfailBdev};
use shoal_bdev::{Bdev, BdevChannel, BdevError, BdevInfo, BdevIo, IoFlags, IoType};
use shoal_reactor::Reactor;
use shoal_replication::{ChildSpec, Nexus};

const BLOCKS: u64 = 1024;

fn cut(r: &Reactor, dev: &Arc<PfailBdev>) {
    let slot = Rc::new(RefCell::new(None));
    let s = slot.clone();
    dev.cut(Keep::None, Box::new(move |x| *s.borrow_mut() = Some(x)));
    until(r, "the cut", || slot.borrow().is_some());
    slot.borrow_mut().take().unwrap().expect("cut");
}

#[test]
fn fua_writes_and_flushes_reach_every_child_durably() {
    let r = reactor();
    let rams: Vec<Arc<dyn Bdev>> = (0..2).map(|i| ram(&format!("ram{i}"), BLOCKS)).collect();
    let caches: Vec<Arc<PfailBdev>> = rams
        .iter()
        .enumerate()
        .map(|(i, b)| PfailBdev::create(&format!("pfail{i}"), b.clone()).unwrap())
        .collect();
    let kids: Vec<Arc<dyn Bdev>> = caches.iter().map(|c| c.clone() as Arc<dyn Bdev>).collect();
    let nx = create(&r, opts("nx", BLOCKS), &kids);
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    let (flushed, plain, fua) = (pattern(4 * 512, 1), pattern(512, 2), pattern(8 * 512, 3));
    io.write(10, &flushed).unwrap();
    io.run(BdevIo::flush()).1.unwrap();
    io.write(20, &plain).unwrap();
    let w = BdevIo::write(30, 8, sg(&fua)).with_flags(IoFlags::FUA);
    io.run(w).1.unwrap();
    io.write(40, &pattern(2 * 512, 4)).unwrap();
    let wz = BdevIo::write_zeroes(40, 1).with_flags(IoFlags::FUA);
    io.run(wz).1.unwrap();
    for c in &caches {
        cut(&r, c);
    }
    let m = meta(512);
    for (i, ram) in rams.iter().enumerate() {
        let direct = Io::new(&r, ram);
        let read = |at: u64, n: u64| direct.read(m + at, n).unwrap();
        assert!(read(10, 4) == flushed, "child {i}: flushed data");
        assert!(
            read(20, 1) == vec![0; 512],
            "child {i}: a write never made durable"
        );
        assert!(read(30, 8) == fua, "child {i}: a FUA write");
        assert!(read(40, 1) == vec![0; 512], "child {i}: a FUA write zeroes");
        assert!(
            read(41, 1) == vec![0; 512],
            "child {i}: cached beside it, lost"
        );
    }
}

/// A device that honours no request flag (the trait's default).
struct NoFua {
    info: BdevInfo,
    base: Arc<dyn Bdev>,
}

impl Bdev for NoFua {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn supports(&self, t: IoType) -> bool {
        self.base.supports(t)
    }

    fn create_channel(self: Arc<Self>, r: &Reactor) -> Result<Box<dyn BdevChannel>, BdevError> {
        self.base.clone().create_channel(r)
    }
}

#[test]
fn a_child_that_cannot_honour_fua_is_refused() {
    let r = reactor();
    let good = ram("good", BLOCKS);
    let base = ram("base", BLOCKS);
    let b = base.info();
    let info = BdevInfo::new("nofua", None, b.block_size, b.num_blocks(), "test");
    let bad: Arc<dyn Bdev> = Arc::new(NoFua { info, base });
    let specs = vec![ChildSpec::local(good), ChildSpec::local(bad)];
    let err = Nexus::create(opts("nx", BLOCKS), specs, &r.handle())
        .wait(WAIT)
        .expect("reactor")
        .expect_err("a child without FUA");
    let msg = err.to_string();
    assert!(msg.contains("Force Unit Access"), "{msg}");
    assert!(msg.contains("nofua"), "{msg}");
}
