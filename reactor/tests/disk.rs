//! Block I/O through the reactor, on real files: the ring's file operations complete their
//! `BdevIo` to its sink with the right result, and `complete_io` delivers on a later pass.

use std::cell::RefCell;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use shoal_reactor::buf::{IoBuf, SgList};
use shoal_reactor::io::{BdevError, BdevIo, IoFlags, IoSink};
use shoal_reactor::{Reactor, ReactorConfig};

/// What a sink was told: the tag, the request back, and its result.
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

fn one_buf(data: &[u8]) -> SgList {
    std::iter::once(IoBuf::copy_from(data)).collect()
}

fn temp_file() -> File {
    tempfile::tempfile_in("/var/tmp").expect("a temporary file under /var/tmp")
}

/// Runs `r` until `sink` has heard of `n` completions; returns them.
fn wait_for(r: &Reactor, sink: &Sink, n: usize) -> Vec<Done> {
    assert!(
        r.run_until(Duration::from_secs(5), || sink.done.borrow().len() >= n),
        "{n} completion(s) within 5 s"
    );
    std::mem::take(&mut *sink.done.borrow_mut())
}

#[test]
fn file_write_then_read_give_the_request_back_with_its_buffers() {
    let r = Reactor::new(0, None, ReactorConfig::default()).unwrap();
    let sink = Rc::new(Sink::default());
    let mut file = temp_file();
    let fd = file.as_raw_fd();
    let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();

    // Two buffers: the write gathers them, the read scatters into two again.
    let bufs: SgList = [
        IoBuf::copy_from(&data[..4096]),
        IoBuf::copy_from(&data[4096..]),
    ]
    .into_iter()
    .collect();
    let write = BdevIo::write(1, 2, bufs).with_flags(IoFlags::FUA);
    r.file_write(fd, 4096, write, sink.clone(), 11);
    let done = wait_for(&r, &sink, 1);
    let (tag, io, result) = &done[0];
    assert_eq!(*tag, 11);
    assert!(result.is_ok(), "write: {result:?}");
    assert_eq!(
        (io.offset_blocks, io.num_blocks, io.flags),
        (1, 2, IoFlags::FUA)
    );
    assert_eq!(io.bufs.len(), 2, "the buffers come back with the request");
    let mut on_disk = vec![0u8; 8192];
    file.seek(SeekFrom::Start(4096)).unwrap();
    file.read_exact(&mut on_disk).unwrap();
    assert_eq!(on_disk, data, "the kernel wrote what the buffers held");

    let bufs: SgList = [IoBuf::zeroed(4096), IoBuf::zeroed(4096)]
        .into_iter()
        .collect();
    r.file_read(fd, 4096, BdevIo::read(1, 2, bufs), sink.clone(), 12);
    let done = wait_for(&r, &sink, 1);
    let (tag, io, result) = &done[0];
    assert_eq!(*tag, 12);
    assert!(result.is_ok(), "read: {result:?}");
    let read: Vec<u8> = io.bufs.iter().flat_map(|b| b.as_slice().to_vec()).collect();
    assert_eq!(read, data);
    assert_eq!(r.in_flight(), 0);
}

#[test]
fn a_short_read_completes_with_short_io() {
    let r = Reactor::new(0, None, ReactorConfig::default()).unwrap();
    let sink = Rc::new(Sink::default());
    let mut file = temp_file();
    file.write_all(&[7u8; 1000]).unwrap();
    r.file_read(
        file.as_raw_fd(),
        0,
        BdevIo::read(0, 8, one_buf(&[0u8; 4096])),
        sink.clone(),
        1,
    );
    let done = wait_for(&r, &sink, 1);
    match &done[0].2 {
        Err(BdevError::ShortIo { done, expected }) => assert_eq!((*done, *expected), (1000, 4096)),
        other => panic!("a read past the end of the file must be short, got {other:?}"),
    }
}

#[test]
fn a_kernel_error_completes_with_its_errno() {
    let r = Reactor::new(0, None, ReactorConfig::default()).unwrap();
    let sink = Rc::new(Sink::default());
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let write_only = File::create(dir.path().join("w")).unwrap();
    r.file_read(
        write_only.as_raw_fd(),
        0,
        BdevIo::read(0, 1, one_buf(&[0u8; 512])),
        sink.clone(),
        2,
    );
    let done = wait_for(&r, &sink, 1);
    match &done[0].2 {
        Err(BdevError::Os(e)) => assert_eq!(e.raw_os_error(), Some(libc::EBADF)),
        other => panic!("a read of a write-only file must fail with EBADF, got {other:?}"),
    }
}

#[test]
fn file_sync_and_a_punched_hole_complete() {
    let r = Reactor::new(0, None, ReactorConfig::default()).unwrap();
    let sink = Rc::new(Sink::default());
    let mut file = temp_file();
    file.write_all(&[0xAB; 16384]).unwrap();
    let fd = file.as_raw_fd();
    r.file_sync(fd, BdevIo::flush(), sink.clone(), 3);
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    r.file_fallocate(fd, mode, (4096, 4096), BdevIo::unmap(1, 1), sink.clone(), 4);
    let mut done = wait_for(&r, &sink, 2);
    done.sort_by_key(|d| d.0);
    assert_eq!(done[0].0, 3);
    assert!(done[0].2.is_ok(), "fdatasync: {:?}", done[0].2);
    assert_eq!(done[1].0, 4);
    assert!(done[1].2.is_ok(), "punch hole: {:?}", done[1].2);
    let mut all = vec![0u8; 16384];
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_exact(&mut all).unwrap();
    assert!(
        all[4096..8192].iter().all(|&b| b == 0),
        "the hole reads zeroes"
    );
    assert!(all[..4096].iter().chain(&all[8192..]).all(|&b| b == 0xAB));
}

#[test]
fn complete_io_delivers_on_a_later_pass_in_order() {
    let r = Reactor::new(0, None, ReactorConfig::default()).unwrap();
    let sink = Rc::new(Sink::default());
    r.complete_io(sink.clone(), 5, BdevIo::write_zeroes(0, 1), Ok(()));
    r.complete_io(sink.clone(), 6, BdevIo::flush(), Err(BdevError::Injected));
    assert!(
        sink.done.borrow().is_empty(),
        "never from inside the call that completes"
    );
    assert!(r.poll_once(), "a pass with deferred completions found work");
    let done = std::mem::take(&mut *sink.done.borrow_mut());
    assert_eq!(done.len(), 2);
    assert_eq!(done[0].0, 5);
    assert!(done[0].2.is_ok());
    assert_eq!(done[1].0, 6);
    assert!(matches!(done[1].2, Err(BdevError::Injected)));
}
