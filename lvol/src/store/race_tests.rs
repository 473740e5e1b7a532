//! Interleavings of the home's messages that the I/O path cannot force from outside: a free
//! request decided on an old mapping that reaches the home after the cluster was allocated
//! again (a reactor preempted between reading its map and sending the request). Real
//! reactors, a RAM disk under an `error` device that holds the journal write.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_bdev::error_bdev::{ErrorBdev, Injection};
use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::{Bdev, BdevError, BdevIo, IoBuf, IoSink, IoType, SgList, open_channel};
use shoal_reactor::{Reactor, ReactorConfig, ReactorSet};

use super::{FreeKind, LvolOptions, Lvs};
use crate::format::PAGE;
use crate::format::record::ClearMethod;

const BS: u32 = 512;
const CLUSTER: u64 = 4096;
const CB: u64 = CLUSTER / BS as u64;
const WAIT: Duration = Duration::from_secs(20);

/// A completion: tag, request, result.
type Done = (u64, BdevIo, Result<(), BdevError>);

#[derive(Default)]
struct Sink(RefCell<Vec<Done>>);

impl IoSink for Sink {
    fn io_done(&self, tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        self.0.borrow_mut().push((tag, io, result));
    }
}

fn wait_tag(r: &Reactor, s: &Sink, tag: u64) -> (BdevIo, Result<(), BdevError>) {
    let mut got = None;
    assert!(r.run_until(WAIT, || {
        let mut d = s.0.borrow_mut();
        if let Some(i) = d.iter().position(|x| x.0 == tag) {
            let (_, io, res) = d.remove(i);
            got = Some((io, res));
        }
        got.is_some()
    }));
    got.unwrap_or_else(|| unreachable!())
}

fn block(v: u8) -> SgList {
    SgList::from_buf([IoBuf::copy_from(&[v; BS as usize])])
}

fn thin(name: &str) -> LvolOptions {
    LvolOptions {
        name: name.into(),
        size_bytes: 16 * CLUSTER,
        thin: true,
        clear: ClearMethod::Default,
    }
}

/// Volume A's cluster 0 is freed; A writes it again (a new cluster, its `Map` record held in
/// the journal); then a free of cluster 0 decided on the old mapping arrives. Once the
/// journal goes on, the table has cluster 0 unmapped and its data cluster goes back to the
/// free set: A's I/O path must not map it, or A reads and writes another volume's cluster.
#[test]
fn a_late_free_during_an_allocation_leaves_no_stale_mapping() {
    let set = ReactorSet::start(&[0], ReactorConfig::default(), Arc::new(|_| {})).unwrap();
    let home = set.handles()[0].clone();
    let r = Reactor::new(0, None, ReactorConfig::default()).unwrap();
    let ram: Arc<dyn Bdev> =
        MallocBdev::create("ram", None, (8 << 20) / u64::from(BS), BS).unwrap();
    let err = ErrorBdev::create(ram, None).unwrap();
    let eb: Arc<dyn Bdev> = err.clone();
    let lvs = Lvs::create(eb, "lvs", CLUSTER, None, home).unwrap();
    let a: Arc<dyn Bdev> = lvs.create_lvol(thin("a")).unwrap();
    let b: Arc<dyn Bdev> = lvs.create_lvol(thin("b")).unwrap();
    let a_uuid = a.info().uuid;
    let (ca, cb) = (open_channel(&a).unwrap(), open_channel(&b).unwrap());
    let s = Rc::new(Sink::default());

    ca.submit(BdevIo::write(0, 1, block(1)), s.clone(), 1);
    wait_tag(&r, &s, 1).1.unwrap();
    ca.submit(BdevIo::unmap(0, CB), s.clone(), 2);
    wait_tag(&r, &s, 2).1.unwrap();

    // Hold the next journal write: A's write of cluster 0 waits for its `Map` record.
    let sb = lvs.sb;
    let bs = u64::from(BS);
    let j = sb.journal_offset / bs..(sb.journal_offset + sb.journal_pages * PAGE as u64) / bs;
    err.inject(Injection::pending(IoType::Write).blocks(j).count(1))
        .unwrap();
    ca.submit(BdevIo::write(0, 1, block(0xA)), s.clone(), 3);
    assert!(r.run_until(WAIT, || err.held() == 1));
    // The late free (as the I/O path sends it).
    let freed = Arc::new(Mutex::new(None));
    let f = freed.clone();
    let sent = Lvs::request_free(
        &lvs,
        a_uuid,
        vec![0],
        FreeKind::Unmap,
        Box::new(move |res| {
            *f.lock().unwrap_or_else(|e| e.into_inner()) = Some(res.is_ok());
        }),
    );
    assert!(sent);
    lvs.journal_stats(); // the home has taken the free when it answers this
    err.resume_pending();
    wait_tag(&r, &s, 3).1.unwrap();
    let freed = || *freed.lock().unwrap_or_else(|e| e.into_inner());
    assert!(r.run_until(WAIT, || freed().is_some()));
    assert_eq!(freed(), Some(true), "the late free failed");
    r.run_until(Duration::from_millis(50), || false); // the quarantine lets go

    // B takes the free clusters it needs.
    for (i, tag) in [(0u64, 4u64), (1, 5), (2, 6)] {
        cb.submit(BdevIo::write(i * CB, 1, block(0xB)), s.clone(), tag);
        wait_tag(&r, &s, tag).1.unwrap();
    }
    let in_map = lvs
        .lvol(&a_uuid.to_string())
        .map_or(0, |l| l.num_allocated_clusters());
    ca.submit(
        BdevIo::read(0, 1, SgList::from_buf([IoBuf::zeroed(BS as usize)])),
        s.clone(),
        7,
    );
    let (io, res) = wait_tag(&r, &s, 7);
    res.unwrap();
    let got = io.bufs.iter().next().map(|b| b.as_slice()[0]);
    assert!(
        got == Some(0xA) || got == Some(0),
        "volume A's block 0 reads {got:?}: another volume's data (A's I/O path maps {in_map} \
         clusters)"
    );
    drop((ca, cb));
    let _ = lvs.close();
    set.shutdown();
}
