//! The write-intent bitmap: after a crash of the nexus only the regions it marks are
//! resynchronised (and that is enough to make the replicas identical); idle regions are
//! cleared; without the bitmap a crash resynchronises everything.
//!
//! A "crash" is the first life of the nexus running on its own reactor thread that ends
//! without a destroy: the children's metadata stays as the last I/O left it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use shoal_bdev::Bdev;
use shoal_replication::intent::{self, INTENT_OFFSET};
use shoal_replication::{ChildState, META_BYTES, Nexus, NexusOptions, RebuildSummary};

const GIB_BLOCKS: u64 = (1 << 30) / 512;
const SEG: u64 = 128 << 10;

/// A small random generator (xorshift), seeded.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

/// The first life: creates the nexus over `kids` and runs `work` on it, then "crashes".
fn first_life(
    o: NexusOptions,
    kids: &[Arc<dyn Bdev>],
    work: impl FnOnce(&Arc<Nexus>) + Send + 'static,
) {
    let kids = kids.to_vec();
    std::thread::spawn(move || {
        let r = reactor();
        let nx = create(&r, o, &kids);
        work(&nx);
        // Let the intent task finish anything it started before the "crash".
        r.run_until(Duration::from_millis(50), || false);
    })
    .join()
    .unwrap();
}

/// The data regions of two children are identical (compared 1 MiB at a time, without a
/// checksum: fast in a debug build).
fn same_data(r: &shoal_reactor::Reactor, a: &Arc<dyn Bdev>, b: &Arc<dyn Bdev>, blocks: u64) {
    let (ia, ib) = (Io::new(r, a), Io::new(r, b));
    let step = 2048;
    let mut at = meta(512);
    while at < meta(512) + blocks {
        let n = step.min(meta(512) + blocks - at);
        let (x, y) = (ia.read(at, n).unwrap(), ib.read(at, n).unwrap());
        assert!(x == y, "the replicas differ in blocks {at}+{n}");
        at += n;
    }
}

fn last_rebuild(nx: &Nexus, k: &Arc<dyn Bdev>) -> RebuildSummary {
    nx.child_status(&uri(k)).unwrap().last_rebuild.unwrap()
}

#[test]
fn a_crash_resyncs_only_the_marked_regions() {
    let (a, b) = (ram("a", GIB_BLOCKS), ram("b", GIB_BLOCKS));
    // Random 4 KiB writes in 10 random 1 MiB regions: about 1% of the volume.
    let mut next = rng(0x5eed);
    let regions: Vec<u64> = (0..10).map(|_| next() % 1024).collect();
    let writes: Vec<(u64, u64)> = (0..400)
        .map(|i| {
            let region = regions[i % regions.len()];
            let block = region * 2048 + (next() % 256) * 8;
            (block, next())
        })
        .collect();
    let w = writes.clone();
    first_life(opts("nx", GIB_BLOCKS), &[a.clone(), b.clone()], move |nx| {
        let b: Arc<dyn Bdev> = nx.clone();
        let io = Io::new(&nx_reactor(), &b);
        for (block, seed) in &w {
            io.write(*block, &pattern(4096, *seed)).unwrap();
        }
    });
    // A write that reached one replica only (never acknowledged), in a marked region: the
    // resync must undo the difference.
    let r = reactor();
    let target = regions[0] * 2048 + 1000;
    Io::new(&r, &b)
        .write(meta(512) + target, &pattern(512, 77))
        .unwrap();
    let nx = create(&r, opts("nx", GIB_BLOCKS), &[a.clone(), b.clone()]);
    assert_eq!(
        nx.child_status(&uri(&b)).unwrap().state,
        ChildState::Rebuilding
    );
    until_online(&r, &nx, &uri(&b));
    let s = last_rebuild(&nx, &b);
    let copied = s.segments_copied * SEG;
    // Hundredths of a percent, in integers.
    let bp = copied * 10_000 / (1u64 << 30);
    let pct = format!("{}.{:02}", bp / 100, bp % 100);
    println!(
        "write-intent resync: {} of {} segments, {} MiB = {pct}% of the volume",
        s.segments_copied,
        (1u64 << 30) / SEG,
        copied >> 20
    );
    assert!(!s.full, "{s:?}");
    assert!(bp <= 300, "{pct}% resynchronised");
    assert!(copied >= 10 << 20, "every touched region is copied: {s:?}");
    same_data(&r, &a, &b, GIB_BLOCKS);
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    for (block, seed) in writes.iter().rev().take(50) {
        // The last writes to each place win; check those not overwritten later.
        if writes.iter().filter(|(b2, _)| b2 == block).count() == 1 {
            assert_eq!(io.read(*block, 8).unwrap(), pattern(4096, *seed));
        }
    }
    nx.destroy().wait(WAIT).unwrap().unwrap();
}

/// The first life's reactor (the thread's own).
fn nx_reactor() -> shoal_reactor::Reactor {
    shoal_reactor::Reactor::current().expect("on the first life's reactor")
}

#[test]
fn without_the_bitmap_a_crash_resyncs_everything() {
    const BLOCKS: u64 = 32 << 11;
    let (a, b) = (ram("a", BLOCKS), ram("b", BLOCKS));
    let mut o = opts("nx", BLOCKS);
    o.write_intent = false;
    first_life(o.clone(), &[a.clone(), b.clone()], |nx| {
        let b: Arc<dyn Bdev> = nx.clone();
        Io::new(&nx_reactor(), &b)
            .write(10, &pattern(4096, 1))
            .unwrap();
        assert!(nx.status().write_intent.is_none());
    });
    let r = reactor();
    let nx = create(&r, o, &[a.clone(), b.clone()]);
    until_online(&r, &nx, &uri(&b));
    assert!(last_rebuild(&nx, &b).full);
}

#[test]
fn idle_regions_are_cleared_and_a_crash_then_resyncs_nothing() {
    const BLOCKS: u64 = 64 << 11;
    let (a, b) = (ram("a", BLOCKS), ram("b", BLOCKS));
    let mut o = opts("nx", BLOCKS);
    o.intent_clean = Duration::from_millis(100);
    first_life(o.clone(), &[a.clone(), b.clone()], |nx| {
        let b: Arc<dyn Bdev> = nx.clone();
        let r = nx_reactor();
        let io = Io::new(&r, &b);
        for i in 0..8u64 {
            io.write(i * 4096, &pattern(4096, i)).unwrap();
        }
        let st = nx.status().write_intent.unwrap();
        assert_eq!(st.region_bytes, 1 << 20);
        assert!(st.marked_regions > 0 && st.marked_regions <= 8, "{st:?}");
        until(&r, "the regions to be cleared", || {
            nx.status().write_intent.unwrap().marked_regions == 0
        });
        // Let the cleared bitmap reach the children.
        r.run_until(Duration::from_millis(100), || false);
    });
    let r = reactor();
    for k in [&a, &b] {
        let blocks = (META_BYTES - INTENT_OFFSET) / 512;
        let raw = Io::new(&r, k).read(INTENT_OFFSET / 512, blocks).unwrap();
        let stamp = {
            let l = Io::new(&r, k).read(0, 16).unwrap();
            let l = shoal_replication::Label::newest(&l).unwrap();
            intent::Stamp {
                volume: l.volume_uuid,
                generation: l.generation,
            }
        };
        let d = intent::decode(&raw, stamp, BLOCKS * 512).unwrap();
        assert!(d.words.iter().all(|&w| w == 0), "{:?}", &d.words[..2]);
    }
    let nx = create(&r, o, &[a.clone(), b.clone()]);
    until_online(&r, &nx, &uri(&b));
    let s = last_rebuild(&nx, &b);
    assert!(!s.full && s.segments_copied == 0, "{s:?}");
}

/// Records the writes a device receives: (first block, FUA, submitted or completed).
struct Recorder {
    info: shoal_bdev::BdevInfo,
    base: Arc<dyn Bdev>,
    log: Arc<std::sync::Mutex<Vec<(u64, bool, bool)>>>,
}

struct RecChan {
    base: shoal_bdev::IoChannel,
    log: Arc<std::sync::Mutex<Vec<(u64, bool, bool)>>>,
}

struct RecSink {
    inner: std::rc::Rc<dyn shoal_bdev::IoSink>,
    log: Arc<std::sync::Mutex<Vec<(u64, bool, bool)>>>,
}

impl shoal_bdev::IoSink for RecSink {
    fn io_done(&self, tag: u64, io: shoal_bdev::BdevIo, r: Result<(), shoal_bdev::BdevError>) {
        if io.io_type == shoal_bdev::IoType::Write {
            let fua = io.flags.fua();
            self.log.lock().unwrap().push((io.offset_blocks, fua, true));
        }
        self.inner.io_done(tag, io, r);
    }
}

impl shoal_bdev::BdevChannel for RecChan {
    fn submit(&self, io: shoal_bdev::BdevIo, sink: std::rc::Rc<dyn shoal_bdev::IoSink>, tag: u64) {
        if io.io_type == shoal_bdev::IoType::Write {
            let fua = io.flags.fua();
            self.log
                .lock()
                .unwrap()
                .push((io.offset_blocks, fua, false));
        }
        let log = self.log.clone();
        self.base
            .submit(io, std::rc::Rc::new(RecSink { inner: sink, log }), tag);
    }
}

impl Bdev for Recorder {
    fn info(&self) -> &shoal_bdev::BdevInfo {
        &self.info
    }
    fn supports(&self, t: shoal_bdev::IoType) -> bool {
        self.base.supports(t)
    }
    fn supports_flags(&self, t: shoal_bdev::IoType, f: shoal_bdev::IoFlags) -> bool {
        self.base.supports_flags(t, f)
    }
    fn create_channel(
        self: Arc<Self>,
        _r: &shoal_reactor::Reactor,
    ) -> Result<Box<dyn shoal_bdev::BdevChannel>, shoal_bdev::BdevError> {
        let base = shoal_bdev::open_channel(&self.base)?;
        Ok(Box::new(RecChan {
            base,
            log: self.log.clone(),
        }))
    }
}

/// A write to a region goes to no child before the region's bit is durable (a FUA write of
/// the bitmap, completed); a second write to the same region does not wait for the bitmap.
#[test]
fn a_write_waits_until_its_region_is_marked_durably() {
    const BLOCKS: u64 = 16 << 11;
    let r = reactor();
    let base = ram("b", BLOCKS);
    let bi = base.info();
    let info = shoal_bdev::BdevInfo::new("rec", None, bi.block_size, bi.num_blocks(), "test");
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let rec: Arc<dyn Bdev> = Arc::new(Recorder {
        info,
        base,
        log: log.clone(),
    });
    let nx = create(&r, opts("nx", BLOCKS), &[ram("a", BLOCKS), rec]);
    let nxb: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &nxb);
    r.run_until(Duration::from_millis(20), || false);
    log.lock().unwrap().clear();
    let data_at = meta(512) + 5 * 2048 + 8;
    io.write(5 * 2048 + 8, &pattern(4096, 3)).unwrap();
    io.write(5 * 2048 + 16, &pattern(4096, 4)).unwrap();
    let events = log.lock().unwrap().clone();
    let bitmap = INTENT_OFFSET / 512;
    let marked = events
        .iter()
        .position(|&e| e == (bitmap, true, true))
        .unwrap_or_else(|| panic!("no completed FUA bitmap write: {events:?}"));
    let first_data = events
        .iter()
        .position(|&(at, _, done)| at == data_at && !done)
        .unwrap_or_else(|| panic!("no data write: {events:?}"));
    assert!(marked < first_data, "{events:?}");
    let bitmap_writes = events.iter().filter(|e| e.0 == bitmap && !e.2).count();
    assert_eq!(
        bitmap_writes, 1,
        "the second write's region was marked: {events:?}"
    );
}

/// A life without the bitmap leaves the previous life's bitmap on the children: a later life
/// with the bitmap must not trust it after a crash (its generation is older than the labels').
#[test]
fn a_life_without_the_bitmap_invalidates_the_old_one() {
    const BLOCKS: u64 = 32 << 11;
    let (a, b) = (ram("a", BLOCKS), ram("b", BLOCKS));
    let on = opts("nx", BLOCKS);
    let mut off = on.clone();
    off.write_intent = false;
    // Life 1, with the bitmap, no writes, stopped cleanly: an empty bitmap on both.
    {
        let r = reactor();
        let nx = create(&r, on.clone(), &[a.clone(), b.clone()]);
        r.run_until(Duration::from_millis(100), || false);
        assert!(nx.status().write_intent.unwrap().bitmap_writes >= 1);
        nx.destroy().wait(WAIT).unwrap().unwrap();
    }
    // Life 2, without the bitmap: writes region 5, then crashes.
    first_life(off, &[a.clone(), b.clone()], |nx| {
        let b: Arc<dyn Bdev> = nx.clone();
        Io::new(&nx_reactor(), &b)
            .write(5 * 2048 + 8, &pattern(4096, 1))
            .unwrap();
    });
    // The crash left a write on one replica only (never acknowledged).
    let r = reactor();
    Io::new(&r, &b)
        .write(meta(512) + 5 * 2048 + 8, &pattern(4096, 2))
        .unwrap();
    // Life 3, with the bitmap again.
    let nx = create(&r, on, &[a.clone(), b.clone()]);
    until_online(&r, &nx, &uri(&b));
    // The bitmap on the children is of an older generation than the labels: not trusted.
    assert!(last_rebuild(&nx, &b).full);
    same_data(&r, &a, &b, BLOCKS);
    nx.destroy().wait(WAIT).unwrap().unwrap();
}

fn add_when_free(r: &shoal_reactor::Reactor, nx: &Nexus, b: &Arc<dyn Bdev>) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match nx
            .add_child(shoal_replication::ChildSpec::local(b.clone()))
            .wait(WAIT)
            .unwrap()
        {
            Ok(()) => return,
            Err(shoal_replication::NexusError::Busy { .. })
                if std::time::Instant::now() < deadline =>
            {
                r.run_until(Duration::from_millis(20), || false);
            }
            Err(e) => panic!("add {}: {e:?}", uri(b)),
        }
    }
}

/// Children that come back into the write path get the bitmap (it follows the labels to each
/// new generation): when the child that had a region's bit first leaves, a crash still
/// resynchronises the region.
#[test]
fn a_returning_child_gets_the_current_bitmap() {
    const BLOCKS: u64 = 32 << 11;
    let (a, b, c) = (ram("a", BLOCKS), ram("b", BLOCKS), ram("c", BLOCKS));
    let (a2, b2, c2) = (a.clone(), b.clone(), c.clone());
    first_life(
        opts("nx", BLOCKS),
        &[a.clone(), b.clone(), c.clone()],
        move |nx| {
            let r = nx_reactor();
            let nxb: Arc<dyn Bdev> = nx.clone();
            let io = Io::new(&r, &nxb);
            r.run_until(Duration::from_millis(50), || false);
            // B and C leave; region 5 is marked on A only.
            nx.remove_child(&uri(&b2)).wait(WAIT).unwrap().unwrap();
            nx.remove_child(&uri(&c2)).wait(WAIT).unwrap().unwrap();
            io.write(5 * 2048 + 8, &pattern(4096, 1)).unwrap();
            // They come back and are rebuilt; then A leaves.
            add_when_free(&r, nx, &b2);
            add_when_free(&r, nx, &c2);
            until_online(&r, nx, &uri(&b2));
            until_online(&r, nx, &uri(&c2));
            nx.remove_child(&uri(&a2)).wait(WAIT).unwrap().unwrap();
            io.write(5 * 2048 + 8, &pattern(4096, 2)).unwrap();
            // Time for the bitmap to follow the labels' new generation onto b and c.
            r.run_until(Duration::from_millis(100), || false);
        },
    );
    // The crash left a write on one replica only (never acknowledged), in region 5.
    let r = reactor();
    Io::new(&r, &c)
        .write(meta(512) + 5 * 2048 + 8, &pattern(4096, 3))
        .unwrap();
    let nx = create(&r, opts("nx", BLOCKS), &[b.clone(), c.clone()]);
    until_online(&r, &nx, &uri(&b));
    until_online(&r, &nx, &uri(&c));
    let s = last_rebuild(&nx, &c);
    assert!(
        !s.full && s.segments_copied > 0,
        "region 5 is resynchronised: {s:?}"
    );
    same_data(&r, &b, &c, BLOCKS);
    nx.destroy().wait(WAIT).unwrap().unwrap();
}
