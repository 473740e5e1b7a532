//! The write order: overlapping writes in flight together reach every child in one order, so
//! the children hold the same bytes afterwards, with a child that applies its writes out of
//! order (a [`Shuffle`] device), over a real io_uring file child, through a fault and a
//! rebuild, and with the writes coming from two reactors. Each load is also run once with the
//! order turned off, where the children must end up different: that shows the load does
//! reorder writes, so that agreement with the order on means something.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use shoal_bdev::uring::UringBdev;
use shoal_bdev::{Bdev, BdevError, BdevIo, IoChannel, IoSink, IoType, open_channel};
use shoal_reactor::{Reactor, ReactorConfig};
use shoal_replication::{ChildSpec, ChildState, Nexus};

/// Blocks of the nexus (512 bytes each): 2 MiB.
const BLOCKS: u64 = 4096;
/// The region the loads write to: 256 KiB, so that 4 and 64 KiB writes overlap often.
const REGION: u64 = 512;

/// A device that applies writes (and write zeroes, deallocates) out of order, as concurrent
/// writes may land on a disk or a remote target: on the first reactor it holds them and sends
/// them to its base in reverse order, four at a time, or after 200 us if fewer come; on the
/// others it sends each one `late` (1 ms unless said otherwise) late, so that the first
/// reactor's later writes overtake them.
/// Reads and flushes go at once.
struct Shuffle {
    info: shoal_bdev::BdevInfo,
    base: Arc<dyn Bdev>,
    late: Duration,
}

impl Shuffle {
    fn create(name: &str, base: Arc<dyn Bdev>, late: Duration) -> Arc<dyn Bdev> {
        let b = base.info();
        let info = shoal_bdev::BdevInfo::new(name, None, b.block_size, b.num_blocks(), "shuffle");
        Arc::new(Shuffle { info, base, late })
    }
}

/// Writes a [`Shuffle`] holds: the I/O, its sink and tag.
type Held = Vec<(BdevIo, Rc<dyn IoSink>, u64)>;

struct ShuffleChannel {
    me: Weak<ShuffleChannel>,
    reactor: Reactor,
    late: Duration,
    base: IoChannel,
    held: RefCell<Held>,
    timer: Cell<bool>,
}

/// Writes sent on together, last first.
const SHUFFLE_BATCH: usize = 4;

impl ShuffleChannel {
    fn release(&self) {
        let held = std::mem::take(&mut *self.held.borrow_mut());
        for (io, sink, tag) in held.into_iter().rev() {
            self.base.submit(io, sink, tag);
        }
    }
}

struct ShuffleHandle(Rc<ShuffleChannel>);

impl shoal_bdev::BdevChannel for ShuffleHandle {
    fn submit(&self, io: BdevIo, sink: Rc<dyn IoSink>, tag: u64) {
        let ch = &self.0;
        if matches!(io.io_type, IoType::Read | IoType::Flush) {
            return ch.base.submit(io, sink, tag);
        }
        if ch.reactor.index() != 0 {
            let me = ch.clone();
            ch.reactor
                .call_after(ch.late, move || me.base.submit(io, sink, tag));
            return;
        }
        ch.held.borrow_mut().push((io, sink, tag));
        if ch.held.borrow().len() >= SHUFFLE_BATCH {
            return ch.release();
        }
        // The timer holds the channel: writes held when the nexus closes it (a faulted
        // child) still go on to the base and complete, as on a real device.
        if !ch.timer.replace(true)
            && let Some(me) = ch.me.upgrade()
        {
            ch.reactor.call_after(Duration::from_micros(200), move || {
                me.timer.set(false);
                me.release();
            });
        }
    }
}

impl Bdev for Shuffle {
    fn info(&self) -> &shoal_bdev::BdevInfo {
        &self.info
    }

    fn supports(&self, t: IoType) -> bool {
        self.base.supports(t)
    }

    fn supports_flags(&self, t: IoType, f: shoal_bdev::IoFlags) -> bool {
        self.base.supports_flags(t, f)
    }

    fn create_channel(
        self: Arc<Self>,
        reactor: &Reactor,
    ) -> Result<Box<dyn shoal_bdev::BdevChannel>, BdevError> {
        let base = open_channel(&self.base)?;
        Ok(Box::new(ShuffleHandle(Rc::new_cyclic(|me| {
            ShuffleChannel {
                me: me.clone(),
                reactor: reactor.clone(),
                late: self.late,
                base,
                held: RefCell::default(),
                timer: Cell::new(false),
            }
        }))))
    }
}

fn xorshift(c: &Cell<u64>) -> u64 {
    let mut x = c.get();
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c.set(x);
    x
}

/// A closed loop of `depth` writes at random places of the first [`REGION`] blocks: 4 KiB
/// and 64 KiB writes of new data, one in ten a write zeroes or a deallocate, until `total`
/// have completed.
struct Overlap {
    me: RefCell<Weak<Overlap>>,
    chan: IoChannel,
    rng: Cell<u64>,
    left: Cell<u64>,
    in_flight: Cell<u64>,
    pub done: Cell<u64>,
    pub errors: Cell<u64>,
}

impl Overlap {
    fn start(b: &Arc<dyn Bdev>, depth: u64, total: u64, seed: u64) -> Rc<Overlap> {
        let l = Rc::new(Overlap {
            me: RefCell::new(Weak::new()),
            chan: open_channel(b).expect("channel"),
            rng: Cell::new(seed | 1),
            left: Cell::new(total),
            in_flight: Cell::new(0),
            done: Cell::new(0),
            errors: Cell::new(0),
        });
        *l.me.borrow_mut() = Rc::downgrade(&l);
        for _ in 0..depth {
            l.next();
        }
        l
    }

    fn next(&self) {
        if self.left.get() == 0 {
            return;
        }
        self.left.set(self.left.get() - 1);
        let r = xorshift(&self.rng);
        let blocks = if r & 1 == 0 { 8 } else { 128 };
        let off = (r >> 8) % ((REGION - blocks) / 8 + 1) * 8;
        let io = match (r >> 40) % 10 {
            0 => BdevIo::write_zeroes(off, blocks),
            1 => BdevIo::unmap(off, blocks),
            _ => BdevIo::write(
                off,
                blocks,
                sg(&pattern(usize::try_from(blocks).unwrap() * 512, r)),
            ),
        };
        let Some(me) = self.me.borrow().upgrade() else {
            return;
        };
        self.in_flight.set(self.in_flight.get() + 1);
        self.chan.submit(io, me, 0);
    }

    fn idle(&self) -> bool {
        self.left.get() == 0 && self.in_flight.get() == 0
    }
}

impl IoSink for Overlap {
    fn io_done(&self, _tag: u64, _io: BdevIo, result: Result<(), BdevError>) {
        self.in_flight.set(self.in_flight.get() - 1);
        self.done.set(self.done.get() + 1);
        if result.is_err() {
            self.errors.set(self.errors.get() + 1);
        }
        self.next();
    }
}

/// A file-backed child (real io_uring) holding `BLOCKS` blocks of nexus data.
fn file_child(name: &str) -> (Arc<dyn Bdev>, Image) {
    let path = std::env::temp_dir().join(format!(
        "shoal-write-order-{}-{name}.img",
        std::process::id()
    ));
    let f = std::fs::File::create(&path).expect("create the image");
    f.set_len((BLOCKS + meta(BS)) * u64::from(BS))
        .expect("size the image");
    let b: Arc<dyn Bdev> = UringBdev::create(name, &path, Some(BS), None).expect("uring child");
    (b, Image(path))
}

/// A file child's image, removed when the test is done with it (or has failed).
struct Image(std::path::PathBuf);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Flushes the nexus; the checksums of the children's data regions.
fn flushed_sums(r: &Reactor, nx: &Arc<dyn Bdev>, kids: &[Arc<dyn Bdev>]) -> Vec<u32> {
    Io::new(r, nx).run(BdevIo::flush()).1.unwrap();
    kids.iter().map(|k| child_sum(r, k, BLOCKS)).collect()
}

#[track_caller]
fn assert_identical(s: &[u32]) {
    assert!(s.iter().all(|&x| x == s[0]), "children differ: {s:08x?}");
}

/// Three children: a file (io_uring), RAM, and RAM under a [`Shuffle`]; the nexus over them.
fn three_children(tag: &str) -> (Reactor, Arc<Nexus>, Vec<Arc<dyn Bdev>>, Image) {
    three_children_late(tag, Duration::from_millis(1))
}

/// The same, the shuffled child holding the other reactors' writes for `late`.
fn three_children_late(
    tag: &str,
    late: Duration,
) -> (Reactor, Arc<Nexus>, Vec<Arc<dyn Bdev>>, Image) {
    let r = reactor();
    let (file, image) = file_child(&format!("{tag}-file"));
    let base = ram(&format!("{tag}-base"), BLOCKS);
    let kids = vec![
        file,
        ram(&format!("{tag}-ram"), BLOCKS),
        Shuffle::create(&format!("{tag}-shuffled"), base, late),
    ];
    let nx = create(&r, opts(&format!("nx-{tag}"), BLOCKS), &kids);
    (r, nx, kids, image)
}

/// Runs 3000 overlapping writes at depth 16 on one reactor; the children's checksums.
fn overlapping_load(ordered: bool) -> Vec<u32> {
    let (r, nx, kids, _image) = three_children(if ordered { "on" } else { "off" });
    nx.set_write_order(ordered);
    let nxb: Arc<dyn Bdev> = nx.clone();
    let load = Overlap::start(&nxb, 16, 3000, 7);
    until(&r, "the overlapping writes", || load.idle());
    assert_eq!(load.errors.get(), 0);
    flushed_sums(&r, &nxb, &kids)
}

#[test]
fn overlapping_writes_leave_the_children_identical() {
    assert_identical(&overlapping_load(true));
}

#[test]
fn without_the_order_the_same_load_leaves_them_different() {
    assert!(
        diverges(|| overlapping_load(false)),
        "the load did not reorder any overlapping writes: it cannot test the order"
    );
}

/// Whether a load without the order leaves the children different in one of three runs (a
/// run's last writes decide, and on a busy machine they are now and then not reordered).
fn diverges(mut run: impl FnMut() -> Vec<u32>) -> bool {
    (0..3).any(|_| {
        let s = run();
        s.iter().any(|&x| x != s[0])
    })
}

/// Overlapping writes go on while the shuffled child is faulted, then re-added and rebuilt
/// (rebuild copies against host writes), then online again.
fn load_through_a_rebuild(ordered: bool) -> Vec<u32> {
    let (r, nx, kids, _image) = three_children(if ordered { "rb-on" } else { "rb-off" });
    nx.set_write_order(ordered);
    let nxb: Arc<dyn Bdev> = nx.clone();
    let shuffled = ChildSpec::local(kids[2].clone());
    let load = Overlap::start(&nxb, 16, u64::MAX, 11);
    until(&r, "writes", || load.done.get() >= 500);
    nx.fault_child(&shuffled.uri).wait(WAIT).unwrap().unwrap();
    until(&r, "writes while faulted", || load.done.get() >= 1000);
    nx.add_child(shuffled.clone()).wait(WAIT).unwrap().unwrap();
    let during = load.done.get();
    until_online(&r, &nx, &shuffled.uri);
    let during = load.done.get() - during;
    until(&r, "writes after the rebuild", || {
        load.done.get() >= 3000 + during
    });
    load.left.set(0);
    until(&r, "the last writes", || load.idle());
    assert_eq!(load.errors.get(), 0);
    assert!(
        nx.status()
            .children
            .iter()
            .all(|c| c.state == ChildState::Online)
    );
    flushed_sums(&r, &nxb, &kids)
}

#[test]
fn overlapping_writes_through_a_fault_and_a_rebuild_leave_the_children_identical() {
    assert_identical(&load_through_a_rebuild(true));
}

#[test]
fn without_the_order_a_rebuild_does_not_make_them_agree() {
    assert!(diverges(|| load_through_a_rebuild(false)));
}

/// Two reactors (threads) write the same region through their own channels at once, and
/// stop nearly together (the last writes decide what the children hold, so they must overlap
/// too).
fn two_reactors(ordered: bool) -> Vec<u32> {
    let (r, nx, kids, _image) = three_children(if ordered { "2r-on" } else { "2r-off" });
    nx.set_write_order(ordered);
    let nxb: Arc<dyn Bdev> = nx.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (nxb, stop) = (nxb.clone(), stop.clone());
        std::thread::spawn(move || {
            let r1 = Reactor::new(1, None, ReactorConfig::default()).expect("second reactor");
            let load = Overlap::start(&nxb, 16, u64::MAX, 13);
            r1.run_until(WAIT, || stop.load(Ordering::Acquire));
            load.left.set(0);
            assert!(
                r1.run_until(WAIT, || load.idle()),
                "second reactor's writes"
            );
            assert_eq!(load.errors.get(), 0);
            assert!(
                load.done.get() > 100,
                "second reactor: {} writes",
                load.done.get()
            );
            // Let the channel's legs and timers go before the reactor does.
            drop(load);
            r1.run_until(Duration::from_millis(50), || false);
        })
    };
    let load = Overlap::start(&nxb, 16, u64::MAX, 17);
    until(&r, "the first reactor's writes", || load.done.get() >= 3000);
    // The second reactor stops; this one goes on a little, so that its last writes overtake the
    // other's last ones on the child that holds those (the order must stop them).
    stop.store(true, Ordering::Release);
    r.run_until(Duration::from_micros(500), || false);
    load.left.set(0);
    until(&r, "the first reactor's last writes", || load.idle());
    assert_eq!(load.errors.get(), 0);
    // The home reactor keeps running the nexus's control path while the other finishes.
    until(&r, "the second reactor", || other.is_finished());
    other.join().expect("second reactor");
    flushed_sums(&r, &nxb, &kids)
}

#[test]
fn overlapping_writes_from_two_reactors_leave_the_children_identical() {
    // Twice: without the order between reactors (only within each), one run in four or five
    // still ended with identical children. (`a_write_waits_for_an_overlapping_write_of_another_
    // reactor` fails every time without it.)
    for round in 0..2 {
        let s = two_reactors(true);
        assert!(
            s.iter().all(|&x| x == s[0]),
            "round {round}: children differ: {s:08x?}"
        );
    }
}

#[test]
fn without_the_order_two_reactors_leave_them_different() {
    assert!(diverges(|| two_reactors(false)));
}

/// One write on the second reactor, held 50 ms by the shuffled child, and then an overlapping
/// one on the first: with the order, the second waits for the first to complete on every
/// child, and all hold its data; without it, the shuffled child ends with the older data.
/// Returns each child's first 4 KiB, and whether the second write completed after the first.
fn second_reactor_first(ordered: bool) -> (Vec<Vec<u8>>, bool) {
    let tag = if ordered { "x-on" } else { "x-off" };
    let (r, nx, kids, _image) = three_children_late(tag, Duration::from_millis(50));
    nx.set_write_order(ordered);
    let nxb: Arc<dyn Bdev> = nx.clone();
    // A first write marks the region in the write-intent bitmap, so that the two below go out
    // at once instead of waiting together for the bitmap (and then in either order).
    Io::new(&r, &nxb).write(0, &pattern(4096, 0)).unwrap();
    let sent = Arc::new(AtomicBool::new(false));
    let other = {
        let (nxb, sent) = (nxb.clone(), sent.clone());
        std::thread::spawn(move || {
            let r1 = Reactor::new(1, None, ReactorConfig::default()).expect("second reactor");
            let io = Io::new(&r1, &nxb);
            io.chan.submit(
                BdevIo::write(0, 8, sg(&pattern(4096, 1))),
                io.sink.clone(),
                1,
            );
            sent.store(true, Ordering::Release);
            until(&r1, "the first write", || !io.sink.done.borrow().is_empty());
            let done = std::time::Instant::now();
            assert!(io.sink.done.borrow()[0].2.is_ok());
            drop(io);
            r1.run_until(Duration::from_millis(20), || false);
            done
        })
    };
    until(&r, "the first write sent", || sent.load(Ordering::Acquire));
    let io = Io::new(&r, &nxb);
    io.write(0, &pattern(4096, 2)).unwrap();
    let second_done = std::time::Instant::now();
    until(&r, "the second reactor", || other.is_finished());
    let first_done = other.join().expect("second reactor");
    io.run(BdevIo::flush()).1.unwrap();
    let heads = kids
        .iter()
        .map(|k| Io::new(&r, k).read(meta(BS), 8).unwrap())
        .collect();
    (heads, second_done >= first_done)
}

#[test]
fn a_write_waits_for_an_overlapping_write_of_another_reactor() {
    let (heads, after) = second_reactor_first(true);
    assert!(after, "the second write completed before the first");
    for (i, h) in heads.iter().enumerate() {
        assert!(
            *h == pattern(4096, 2),
            "child {i} does not hold the second write"
        );
    }
}

#[test]
fn without_the_order_a_write_overtakes_one_of_another_reactor() {
    let (heads, after) = second_reactor_first(false);
    assert!(!after, "the second write waited for the first");
    // The RAM child applied the first write at once and the second after it, the shuffled one
    // the first 50 ms late. (The file child's io_uring may apply them in either order.)
    assert!(
        heads[1] == pattern(4096, 2),
        "the RAM child lacks the second write"
    );
    assert!(
        heads[2] == pattern(4096, 1),
        "the shuffled child applied the writes in order"
    );
}
