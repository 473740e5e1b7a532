use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::ops::{OpHandler, Payload};
use super::*;

#[derive(Default)]
struct Record {
    done: RefCell<Vec<(u64, i32, Vec<u8>)>>,
}

impl OpHandler for Record {
    fn op_done(&self, tag: u64, result: i32, payload: Payload) {
        let data = match payload {
            Payload::Buf(b) => b.as_slice().to_vec(),
            _ => Vec::new(),
        };
        self.done.borrow_mut().push((tag, result, data));
    }
}

#[test]
fn core_masks_parse_like_spdk() {
    assert_eq!(parse_core_mask("0x1").unwrap(), vec![0]);
    assert_eq!(parse_core_mask("0x3").unwrap(), vec![0, 1]);
    assert_eq!(parse_core_mask("C").unwrap(), vec![2, 3]);
    assert_eq!(parse_core_mask("[1, 0]").unwrap(), vec![0, 1]);
    assert!(parse_core_mask("0x0").is_err());
    assert!(parse_core_mask("zz").is_err());
    assert!(parse_core_mask("[]").is_err());
}

#[test]
fn socket_recv_and_send_through_the_ring() {
    let r = Reactor::new(0, None, ReactorConfig::default()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (conn, _) = listener.accept().unwrap();
    let rec = Rc::new(Record::default());

    peer.write_all(b"hello").unwrap();
    r.recv(conn.as_raw_fd(), IoBuf::with_capacity(64), rec.clone(), 7);
    assert!(r.run_until(Duration::from_secs(5), || !rec.done.borrow().is_empty()));
    assert_eq!(rec.done.borrow()[0], (7, 5, b"hello".to_vec()));

    let bufs: SgList = [IoBuf::copy_from(b"xxab"), IoBuf::copy_from(b"cd")]
        .into_iter()
        .collect();
    r.send(conn.as_raw_fd(), bufs, 2, rec.clone(), 8);
    assert!(r.run_until(Duration::from_secs(5), || rec.done.borrow().len() == 2));
    assert_eq!(rec.done.borrow()[1].1, 4, "skip drops the first two bytes");
    let mut got = [0u8; 4];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"abcd");
}

#[test]
fn timers_fire_in_order_and_can_be_cancelled() {
    let r = Reactor::new(0, None, ReactorConfig::default()).unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let (l1, l2, l3) = (log.clone(), log.clone(), log.clone());
    r.call_after(Duration::from_millis(20), move || l1.borrow_mut().push(2));
    r.call_after(Duration::from_millis(5), move || l2.borrow_mut().push(1));
    let cancelled = r.call_after(Duration::from_millis(10), move || l3.borrow_mut().push(99));
    r.cancel_timer(cancelled);
    let ticks = Rc::new(Cell::new(0));
    let t = ticks.clone();
    r.every(Duration::from_millis(2), move || {
        t.set(t.get() + 1);
        t.get() < 3
    });
    // On a loaded machine the thread may sleep past several deadlines at once: wait for both
    // one-shot timers and three ticks, then give the periodic timer time to (wrongly) go on.
    assert!(r.run_until(Duration::from_secs(5), || {
        log.borrow().len() == 2 && ticks.get() >= 3
    }));
    assert_eq!(*log.borrow(), vec![1, 2]);
    r.run_until(Duration::from_millis(30), || false);
    assert_eq!(
        ticks.get(),
        3,
        "a periodic timer stops when it returns false"
    );
}

#[test]
fn idle_reactor_sleeps_and_messages_wake_it() {
    let set =
        ReactorSet::start(&[0], ReactorConfig::default(), Arc::new(|_: &Reactor| {})).unwrap();
    let h = set.handles()[0].clone();
    std::thread::sleep(Duration::from_millis(300));
    let passes = h.stats().passes.load(Ordering::Relaxed);
    let sleeps = h.stats().sleeps.load(Ordering::Relaxed);
    assert!(sleeps >= 1, "an idle reactor must sleep");
    // A spinning reactor would make millions of passes in 300 ms.
    assert!(passes < 10_000, "idle reactor made {passes} passes");
    let got = h.call(|| Reactor::current().map(|r| r.index()));
    assert_eq!(
        got,
        Some(Some(0)),
        "a message wakes the sleeping reactor and runs on it"
    );
    set.shutdown();
}

#[test]
fn a_poller_waiting_for_a_peer_keeps_the_reactor_spinning_for_a_bounded_time() {
    let config = ReactorConfig {
        idle_spin: Some(Duration::from_micros(100)),
        peer_wait_spin: Duration::from_millis(500),
        ..ReactorConfig::default()
    };
    let init = Arc::new(|r: &Reactor| {
        r.add_poller(|| PollStatus::Waiting);
    });
    let set = ReactorSet::start(&[0], config, init).unwrap();
    let h = set.handles()[0].clone();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        h.stats().sleeps.load(Ordering::Relaxed),
        0,
        "a reactor awaiting a peer's answers must not sleep 100 us after its last work"
    );
    // Past the bound it sleeps, as an idle reactor does: a silent peer does not hold a core.
    let start = std::time::Instant::now();
    while h.stats().sleeps.load(Ordering::Relaxed) == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "never slept");
        std::thread::sleep(Duration::from_millis(20));
    }
    set.shutdown();
}

#[test]
fn timer_wakes_a_sleeping_reactor() {
    let set =
        ReactorSet::start(&[0], ReactorConfig::default(), Arc::new(|_: &Reactor| {})).unwrap();
    let h = set.handles()[0].clone();
    let (tx, rx) = crossbeam_channel::bounded(1);
    h.send(move || {
        let r = Reactor::current().unwrap();
        r.call_after(Duration::from_millis(50), move || tx.send(()).unwrap());
    });
    assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
    set.shutdown();
}

struct Accepted(RefCell<Vec<std::os::fd::OwnedFd>>);

impl OpHandler for Accepted {
    fn op_done(&self, _tag: u64, result: i32, payload: Payload) {
        assert_eq!(result, 0);
        if let Payload::Fd(fd) = payload {
            self.0.borrow_mut().push(fd);
        }
    }
}

#[test]
fn accept_hands_over_an_owned_descriptor() {
    let r = Reactor::new(0, None, ReactorConfig::default()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let acc = Rc::new(Accepted(RefCell::new(Vec::new())));
    r.accept(listener.as_raw_fd(), acc.clone(), 0);
    let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    assert!(r.run_until(Duration::from_secs(5), || !acc.0.borrow().is_empty()));
    let fd = acc.0.borrow_mut().pop().unwrap();
    let mut conn = TcpStream::from(fd);
    conn.write_all(b"ok").unwrap();
    let mut got = [0u8; 2];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ok");
}

#[test]
fn stopping_a_reactor_releases_its_sockets() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let set =
        ReactorSet::start(&[0], ReactorConfig::default(), Arc::new(|_: &Reactor| {})).unwrap();
    let peer = TcpStream::connect(addr).unwrap();
    let (conn, _) = listener.accept().unwrap();
    // The reactor owns the socket through a handler of a receive that never completes.
    struct Owner(#[allow(dead_code)] TcpStream);
    impl OpHandler for Owner {
        fn op_done(&self, _tag: u64, _result: i32, _payload: Payload) {}
    }
    set.handles()[0].call(move || {
        let r = Reactor::current().unwrap();
        let fd = conn.as_raw_fd();
        r.recv(fd, IoBuf::with_capacity(64), Rc::new(Owner(conn)), 1);
    });
    set.shutdown();
    // The handler (and the socket it owns) was dropped: the peer sees the connection close.
    let mut peer = peer;
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(peer.read(&mut b).unwrap(), 0);
}
