//! Shoal's NVMe/TCP host in the tests: a writer that keeps random writes in flight on a
//! volume's export, and whole-device reads of an export (a volume's, or a snapshot's exported
//! for the test). Real sockets to real `shoald` processes.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use shoal_bdev::{Bdev, BdevError, BdevIo, IoBuf, IoChannel, IoSink, SgList, open_channel};
use shoal_nvmf::host::RemoteBdev;
use shoal_reactor::{Reactor, ReactorConfig, ReactorSet};

const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:5e1f0000-0000-4000-8000-00000000cafe";

/// The host: an admin reactor for the controllers.
pub struct Host {
    set: ReactorSet,
}

impl Host {
    pub fn new() -> Host {
        let set = ReactorSet::start(&[0], ReactorConfig::default(), Arc::new(|_: &Reactor| {}))
            .expect("host reactor");
        Host { set }
    }

    /// Connects namespace 1 of `nqn` at `addr` (`ip:port`).
    pub fn connect(&self, addr: &str, nqn: &str) -> Arc<dyn Bdev> {
        let uri = format!("nvmf://{addr}/{nqn}?hostnqn={HOSTNQN}&nsid=1");
        let h = self.set.handles();
        let b: Arc<dyn Bdev> =
            RemoteBdev::connect_uri(&h[0], &uri).unwrap_or_else(|e| panic!("connect {uri}: {e}"));
        b
    }
}

/// A completion: tag, I/O, result.
type Done = (u64, BdevIo, Result<(), BdevError>);

#[derive(Default)]
struct Sink {
    done: RefCell<Vec<Done>>,
}

impl IoSink for Sink {
    fn io_done(&self, tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        self.done.borrow_mut().push((tag, io, result));
    }
}

/// Reads `len` bytes at byte `offset` of `b` (1 MiB per I/O) on a reactor of this thread.
pub fn read_all(b: &Arc<dyn Bdev>, offset: u64, len: u64) -> Vec<u8> {
    let r = Reactor::new(0, None, ReactorConfig::default()).unwrap();
    let chan = open_channel(b).unwrap();
    let sink = Rc::new(Sink::default());
    let bs = u64::from(b.info().block_size);
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap());
    let mut at = offset;
    while at < offset + len {
        let n = (1u64 << 20).min(offset + len - at);
        let mut sg = SgList::new();
        sg.push(IoBuf::zeroed(usize::try_from(n).unwrap()));
        chan.submit(BdevIo::read(at / bs, n / bs, sg), sink.clone(), 0);
        assert!(
            r.run_until(Duration::from_secs(30), || !sink.done.borrow().is_empty()),
            "a read timed out"
        );
        let (_, io, res) = sink.done.borrow_mut().remove(0);
        res.unwrap_or_else(|e| panic!("read at {at}: {e}"));
        for buf in &io.bufs {
            out.extend_from_slice(buf.as_slice());
        }
        at += n;
    }
    out
}

/// Random 4 KiB writes of fresh random data, `depth` in flight, within the first `span`
/// bytes of the device, until stopped.
pub struct Writer {
    stop: Arc<AtomicBool>,
    pub done: Arc<AtomicU64>,
    thread: Option<JoinHandle<u64>>,
}

impl Writer {
    pub fn start(b: Arc<dyn Bdev>, span: u64, depth: usize) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let (s2, d2) = (stop.clone(), done.clone());
        let thread = std::thread::spawn(move || write_loop(&b, span, depth, &s2, &d2));
        Writer {
            stop,
            done,
            thread: Some(thread),
        }
    }

    /// Stops and answers the number of failed writes.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

fn write_loop(
    b: &Arc<dyn Bdev>,
    span: u64,
    depth: usize,
    stop: &AtomicBool,
    done: &AtomicU64,
) -> u64 {
    let r = Reactor::new(0, None, ReactorConfig::default()).unwrap();
    let chan: IoChannel = open_channel(b).unwrap();
    let sink = Rc::new(Sink::default());
    let bs = u64::from(b.info().block_size);
    let units = span / 4096;
    let rng = Cell::new(0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id()));
    let next = || {
        // xorshift64*
        let mut x = rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        rng.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let submit = || {
        let unit = next() % units;
        let mut data = vec![0u8; 4096];
        for w in data.chunks_mut(8) {
            w.copy_from_slice(&next().to_le_bytes());
        }
        let mut sg = SgList::new();
        sg.push(IoBuf::copy_from(&data));
        chan.submit(
            BdevIo::write(unit * 4096 / bs, 4096 / bs, sg),
            sink.clone(),
            0,
        );
    };
    for _ in 0..depth {
        submit();
    }
    let mut in_flight = depth;
    let mut failed = 0;
    while in_flight > 0 {
        r.run_until(Duration::from_millis(50), || !sink.done.borrow().is_empty());
        let finished: Vec<_> = sink.done.borrow_mut().drain(..).collect();
        for (_, _, res) in finished {
            in_flight -= 1;
            done.fetch_add(1, Ordering::Relaxed);
            if res.is_err() {
                failed += 1;
            }
            if !stop.load(Ordering::Relaxed) {
                submit();
                in_flight += 1;
            }
        }
    }
    failed
}
