//! Helpers for driving block devices from a test thread: a reactor on the thread, a channel,
//! and a sink that collects completions; buffers and data patterns; files on a real disk.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use shoal_bdev::{Bdev, BdevError, BdevIo, IoBuf, IoChannel, IoSink, SgList, open_channel};
use shoal_reactor::{Reactor, ReactorConfig};

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// A completion as the sink saw it.
pub type Done = (u64, BdevIo, Result<(), BdevError>);

/// Collects completions.
#[derive(Default)]
pub struct Collector {
    /// The completions, in the order they came.
    pub done: RefCell<Vec<Done>>,
}

impl IoSink for Collector {
    fn io_done(&self, tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        self.done.borrow_mut().push((tag, io, result));
    }
}

/// A reactor on the current thread with a channel to one device.
pub struct Harness {
    /// The reactor of this thread.
    pub reactor: Reactor,
    /// A channel to the device on it.
    pub chan: IoChannel,
    /// Where completions go.
    pub sink: Rc<Collector>,
    /// The device's block size.
    pub bs: usize,
}

impl Harness {
    /// Creates a reactor on this thread and opens `bdev` on it.
    pub fn new(bdev: &Arc<dyn Bdev>) -> Harness {
        let reactor = Reactor::new(0, None, ReactorConfig::default()).expect("reactor");
        let chan = open_channel(bdev).expect("open channel");
        let bs = usize::try_from(bdev.info().block_size).unwrap();
        Harness {
            reactor,
            chan,
            sink: Rc::new(Collector::default()),
            bs,
        }
    }

    /// Submits `io` with `tag` without waiting.
    pub fn submit(&self, io: BdevIo, tag: u64) {
        self.chan.submit(io, self.sink.clone(), tag);
    }

    /// Runs the reactor until `n` completions were collected (panics after [`WAIT`]) and
    /// takes them.
    pub fn wait(&self, n: usize) -> Vec<Done> {
        let ok = self
            .reactor
            .run_until(WAIT, || self.sink.done.borrow().len() >= n);
        assert!(ok, "timed out waiting for {n} completions");
        std::mem::take(&mut *self.sink.done.borrow_mut())
    }

    /// Runs the reactor for `d`.
    pub fn run_for(&self, d: Duration) {
        self.reactor.run_until(d, || false);
    }

    /// Completions collected so far (without running the reactor).
    pub fn collected(&self) -> usize {
        self.sink.done.borrow().len()
    }

    /// Submits `io`, waits for it and returns it with its result.
    pub fn run(&self, io: BdevIo) -> (BdevIo, Result<(), BdevError>) {
        self.submit(io, 0);
        let mut done = self.wait(1);
        assert_eq!(done.len(), 1);
        let (_, io, r) = done.pop().unwrap();
        (io, r)
    }

    /// Writes `data` (whole blocks) at block `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), BdevError> {
        let blocks = (data.len() / self.bs) as u64;
        self.run(BdevIo::write(offset, blocks, sg(&[data]))).1
    }

    /// Reads `blocks` blocks at `offset`.
    pub fn read(&self, offset: u64, blocks: u64) -> Result<Vec<u8>, BdevError> {
        let len = blocks as usize * self.bs;
        let (io, r) = self.run(BdevIo::read(offset, blocks, sg_zeroed(&[len])));
        r.map(|()| flatten(&io.bufs))
    }
}

/// A scatter-gather list holding copies of `parts`.
pub fn sg(parts: &[&[u8]]) -> SgList {
    parts.iter().map(|p| IoBuf::copy_from(p)).collect()
}

/// A scatter-gather list of zeroed buffers of the given lengths.
pub fn sg_zeroed(lens: &[usize]) -> SgList {
    lens.iter().map(|&l| IoBuf::zeroed(l)).collect()
}

/// The concatenated contents of a scatter-gather list.
pub fn flatten(bufs: &[IoBuf]) -> Vec<u8> {
    bufs.iter()
        .flat_map(|b| b.as_slice().iter().copied())
        .collect()
}

/// A recognisable pattern: every 8-byte word holds `seed` and its byte offset.
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

/// A temporary directory on a real disk file system (not tmpfs), for `O_DIRECT` files.
pub fn disk_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("shoal-bdev-test")
        .tempdir_in("/var/tmp")
        .expect("tempdir")
}

/// Creates a (sparse) file of `len` bytes in `dir`; it reads as zeroes.
pub fn make_file(dir: &std::path::Path, name: &str, len: u64) -> std::path::PathBuf {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).expect("create file");
    f.set_len(len).expect("size file");
    path
}
