//! Pausing a nexus's host writes for a snapshot (`Nexus::pause_io`): writes are held while the
//! pause is in force and go on after the resume; a pause nobody resumes ends by itself at its
//! deadline, and the late resume then fails; a second pause is refused meanwhile. And a nexus
//! made of another volume's replicas (`adopt`) takes them as its own.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use shoal_bdev::{Bdev, BdevIo};
use shoal_replication::{ChildState, NexusError, NexusState};
use uuid::Uuid;

const BLOCKS: u64 = 4 << 11; // 4 MiB

#[test]
fn writes_wait_for_the_resume() {
    let r = reactor();
    let (a, b) = (ram("pa", BLOCKS), ram("pb", BLOCKS));
    let nx = create(&r, opts("nxp", BLOCKS), &[a.clone(), b.clone()]);
    let dev: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &dev);
    io.write(0, &pattern(4096, 1)).unwrap();
    let t = nx.pause_io(Duration::from_secs(30));
    until(&r, "the pause", || t.try_take().is_some());
    let generation = nx.pause_status().active.expect("a pause in force");
    // A second pause is refused while the first is in force.
    let t2 = nx.pause_io(Duration::from_secs(30));
    let mut second = None;
    until(&r, "the second pause's answer", || {
        second = t2.try_take();
        second.is_some()
    });
    assert!(
        matches!(second, Some(Err(NexusError::Pause(_)))),
        "{second:?}"
    );
    // A write is held; a read goes on.
    io.chan.submit(
        BdevIo::write(8, 8, sg(&pattern(4096, 2))),
        io.sink.clone(),
        7,
    );
    r.run_until(Duration::from_millis(200), || false);
    assert!(
        io.sink.done.borrow().is_empty(),
        "a write went on during the pause"
    );
    assert_eq!(child_sum(&r, &a, BLOCKS), child_sum(&r, &b, BLOCKS));
    let before = child_sum(&r, &a, BLOCKS);
    nx.resume_io(generation).unwrap();
    until(&r, "the held write", || !io.sink.done.borrow().is_empty());
    assert!(io.sink.done.borrow_mut().remove(0).2.is_ok());
    assert_ne!(child_sum(&r, &a, BLOCKS), before, "the held write landed");
    assert_eq!(io.read(8, 8).unwrap(), pattern(4096, 2));
    // Resuming twice: the pause is over.
    assert!(matches!(
        nx.resume_io(generation),
        Err(NexusError::Pause(_))
    ));
    nx.destroy().wait(WAIT).unwrap().unwrap();
}

#[test]
fn a_pause_nobody_resumes_lapses() {
    let r = reactor();
    let (a, b) = (ram("la", BLOCKS), ram("lb", BLOCKS));
    let nx = create(&r, opts("nxl", BLOCKS), &[a, b]);
    let dev: Arc<dyn Bdev> = nx.clone();
    let io = Io::new(&r, &dev);
    let t = nx.pause_io(Duration::from_millis(300));
    let mut info = None;
    until(&r, "the pause", || {
        info = t.try_take();
        info.is_some()
    });
    let info = info.unwrap().unwrap();
    assert_eq!(info.in_sync.len(), 2);
    let start = Instant::now();
    io.write(0, &pattern(4096, 3)).unwrap();
    let held = start.elapsed();
    assert!(
        held >= Duration::from_millis(200) && held < Duration::from_secs(5),
        "the write was held {held:?}, the pause lasts 300 ms"
    );
    let st = nx.pause_status();
    assert_eq!((st.active, st.lapsed), (None, 1));
    assert!(matches!(
        nx.resume_io(info.generation),
        Err(NexusError::Pause(_))
    ));
    // Bad deadlines.
    for d in [Duration::ZERO, Duration::from_secs(61)] {
        let t = nx.pause_io(d);
        assert!(matches!(t.try_take(), Some(Err(NexusError::Invalid(_)))));
    }
    nx.destroy().wait(WAIT).unwrap().unwrap();
}

#[test]
fn clones_of_another_volume_are_adopted() {
    let r = reactor();
    let (a, b) = (ram("aa", BLOCKS), ram("ab", BLOCKS));
    let nx = create(&r, opts("nxa", BLOCKS), &[a.clone(), b.clone()]);
    let old = nx.status().uuid;
    let dev: Arc<dyn Bdev> = nx.clone();
    Io::new(&r, &dev).write(16, &pattern(4096, 9)).unwrap();
    nx.destroy().wait(WAIT).unwrap().unwrap();
    drop((dev, nx));
    let new = Uuid::new_v4();
    let mut o = opts("nxa2", BLOCKS);
    o.uuid = Some(new);
    let e = shoal_replication::Nexus::create(
        o.clone(),
        vec![shoal_replication::ChildSpec::local(a.clone())],
        &r.handle(),
    )
    .wait(WAIT)
    .unwrap();
    assert!(matches!(e, Err(NexusError::ForeignChild { .. })), "{e:?}");
    o.adopt = Some(old);
    let nx = create(&r, o, &[a, b]);
    let st = nx.status();
    assert_eq!(st.uuid, new);
    assert_eq!(st.state, NexusState::Online);
    assert!(st.children.iter().all(|c| c.state == ChildState::Online));
    let dev: Arc<dyn Bdev> = nx.clone();
    assert_eq!(Io::new(&r, &dev).read(16, 8).unwrap(), pattern(4096, 9));
    nx.destroy().wait(WAIT).unwrap().unwrap();
}
