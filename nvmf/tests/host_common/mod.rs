//! Helpers for the host-side tests: a target on a chosen port with chosen namespaces, a host
//! admin reactor thread, a reactor on the test thread to drive I/O queues, and a sink.
#![allow(dead_code, missing_docs)]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::{Bdev, BdevError, BdevIo, IoBuf, IoSink, SgList};
use shoal_nvmf::host::{ConnectOptions, ControllerState};
use shoal_nvmf::target::subsystem::{ListenAddress, SubsystemOptions, Target, TransportConfig};
use shoal_nvmf::target::tcp::TcpTransport;
use shoal_reactor::{Reactor, ReactorConfig, ReactorSet};

use super::common::{HOSTNQN, NQN, TestTarget};

/// How long any wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// A free TCP port on loopback (bound and released; the target binds it again).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A target on `127.0.0.1:port` with one RAM namespace per `(block size, blocks)`, its
/// listener registered with the real port (so the discovery log shows it).
pub fn start_target(
    namespaces: &[(u32, u64)],
    transport: TransportConfig,
    port: u16,
) -> TestTarget {
    let bdevs = namespaces
        .iter()
        .enumerate()
        .map(|(i, &(bs, blocks))| {
            let b: Arc<dyn Bdev> =
                MallocBdev::create(&format!("Malloc{i}"), None, blocks, bs).unwrap();
            b
        })
        .collect();
    start_target_with(bdevs, transport, port)
}

/// A target on `127.0.0.1:port` with these devices as namespaces 1, 2, ...
pub fn start_target_with(
    bdevs: Vec<Arc<dyn Bdev>>,
    transport: TransportConfig,
    port: u16,
) -> TestTarget {
    let set =
        ReactorSet::start(&[0], ReactorConfig::default(), Arc::new(|_: &Reactor| {})).unwrap();
    let target = Arc::new(Target::new());
    target.create_transport(transport).unwrap();
    let sub = target
        .create_subsystem(
            NQN,
            SubsystemOptions {
                allow_any_host: true,
                ..Default::default()
            },
        )
        .unwrap();
    for b in bdevs {
        sub.add_namespace(b, None, None, None, None).unwrap();
    }
    let la = ListenAddress::tcp("127.0.0.1", &port.to_string());
    sub.add_listener(la.clone()).unwrap();
    let tcp = TcpTransport::new(target.clone());
    let t = tcp.clone();
    let limits = shoal_nvmf::target::tcp::limits::ListenLimits::from(&target.transport());
    let reactors = set.handles().to_vec();
    let addr = set.handles()[0]
        .call(move || t.listen(la, reactors, limits))
        .unwrap()
        .unwrap();
    TestTarget {
        set: Some(set),
        target,
        tcp,
        addr,
    }
}

/// Kills a target as a crash would: its listener and every connection are closed (the
/// host sees the connections end), then its reactor stops.
pub fn kill(t: &mut TestTarget) {
    if let Some(s) = t.set.take() {
        let tcp = t.tcp.clone();
        s.handles()[0].call(move || tcp.close_all()).unwrap();
        // Let the closes go out (pending accepts and receives complete on shutdown).
        std::thread::sleep(Duration::from_millis(50));
        s.shutdown();
    }
}

/// Freezes a target's reactor, as SIGSTOP would: it blocks for the rest of the test process
/// without closing anything, so the target goes silent while its sockets stay open (only
/// keep-alive and command timeouts can tell). The reactor thread is left blocked for good.
pub fn freeze(t: &mut TestTarget) {
    if let Some(s) = t.set.take() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        s.handles()[0].send(move || {
            let _ = rx.recv();
        });
        std::mem::forget(tx);
        std::mem::forget(s);
    }
}

/// A reactor thread for the host's admin queues (pinned to core 1 where there is one).
pub fn host_reactors() -> ReactorSet {
    let cores = if core_count() > 1 { [1] } else { [0] };
    ReactorSet::start(&cores, ReactorConfig::default(), Arc::new(|_: &Reactor| {})).unwrap()
}

fn core_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Connect options for the test subsystem at `addr`.
pub fn options(addr: SocketAddr) -> ConnectOptions {
    let mut o = ConnectOptions::new("127.0.0.1", addr.port(), NQN);
    o.hostnqn = HOSTNQN.to_string();
    o.io_queues = 4;
    o
}

/// Records controller state changes.
pub fn state_log(o: &mut ConnectOptions) -> Arc<Mutex<Vec<ControllerState>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    o.on_state = Some(Arc::new(move |s| l.lock().unwrap().push(s)));
    log
}

/// A completion as a sink saw it.
pub type Done = (u64, BdevIo, Result<(), BdevError>);

/// Collects completions.
#[derive(Default)]
pub struct Collector {
    pub done: RefCell<Vec<Done>>,
}

impl IoSink for Collector {
    fn io_done(&self, tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        self.done.borrow_mut().push((tag, io, result));
    }
}

/// A reactor on the test thread with a sink, for driving I/O queues.
pub struct Driver {
    pub reactor: Reactor,
    pub sink: Rc<Collector>,
}

impl Driver {
    pub fn new() -> Driver {
        Driver {
            reactor: Reactor::new(0, None, ReactorConfig::default()).unwrap(),
            sink: Rc::new(Collector::default()),
        }
    }

    pub fn sink(&self) -> Rc<dyn IoSink> {
        self.sink.clone()
    }

    /// Runs the reactor until `n` completions were collected, and takes them.
    pub fn wait(&self, n: usize) -> Vec<Done> {
        let ok = self
            .reactor
            .run_until(WAIT, || self.sink.done.borrow().len() >= n);
        assert!(
            ok,
            "timed out waiting for {n} completions ({} so far)",
            self.sink.done.borrow().len()
        );
        std::mem::take(&mut *self.sink.done.borrow_mut())
    }

    /// Runs the reactor until `f` holds (panics after [`WAIT`]).
    pub fn until(&self, what: &str, mut f: impl FnMut() -> bool) {
        assert!(
            self.reactor.run_until(WAIT, &mut f),
            "timed out waiting for {what}"
        );
    }

    /// Runs the reactor for `d`.
    pub fn run_for(&self, d: Duration) {
        self.reactor.run_until(d, || false);
    }
}

/// A recognisable pattern.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut i: u32 = 0;
    while v.len() < len {
        let word = (u64::from(seed) << 32) | u64::from(i);
        v.extend_from_slice(&word.to_le_bytes());
        i = i.wrapping_add(8);
    }
    v.truncate(len);
    v
}

pub fn sg(data: &[u8]) -> SgList {
    let mut s = SgList::new();
    s.push(IoBuf::copy_from(data));
    s
}

pub fn sg_zeroed(lens: &[usize]) -> SgList {
    lens.iter().map(|&l| IoBuf::zeroed(l)).collect()
}

pub fn flatten(bufs: &[IoBuf]) -> Vec<u8> {
    bufs.iter()
        .flat_map(|b| b.as_slice().iter().copied())
        .collect()
}
