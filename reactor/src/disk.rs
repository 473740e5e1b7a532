//! Block I/O on the reactor: disk operations through the ring, and deferred completions.
//!
//! A device backed by a file or a block device ([`Reactor::file_read`] and its siblings) hands
//! its [`BdevIo`] to the ring slot of the operation, which owns the buffers until the
//! completion is reaped; the reactor then checks the byte count and completes the request to
//! its [`IoSink`]. A device that does its work in memory (RAM and null disks) completes through
//! [`Reactor::complete_io`], which queues the request for the next pass. Both hold the request by
//! value: no allocation and no locked instruction per I/O.

use std::os::fd::RawFd;
use std::rc::Rc;

use crate::Reactor;
use crate::io::{BdevError, BdevIo, IoSink};
use crate::ops::{OpDesc, Target};

/// A completion waiting in the reactor's queue for the next pass ([`Reactor::complete_io`]).
pub(crate) struct DeferredIo {
    pub(crate) sink: Rc<dyn IoSink>,
    pub(crate) tag: u64,
    pub(crate) io: BdevIo,
    pub(crate) result: Result<(), BdevError>,
}

impl Reactor {
    /// Reads `io.bufs` (whose lengths give the transfer size) from `fd` at byte `offset` and
    /// completes `io` to `sink` (a short transfer is an error).
    pub fn file_read(&self, fd: RawFd, offset: u64, io: BdevIo, sink: Rc<dyn IoSink>, tag: u64) {
        let expect = crate::buf::sg_len(&io.bufs);
        let target = Target::Bdev {
            sink,
            tag,
            io,
            expect,
        };
        self.submit_disk_op(OpDesc::Readv { fd, offset }, target);
    }

    /// Writes `io.bufs` to `fd` at byte `offset`, then completes `io` to `sink`. A write with
    /// [`IoFlags::FUA`](crate::io::IoFlags::FUA) goes with `RWF_DSYNC`: it completes once its data is durable.
    pub fn file_write(&self, fd: RawFd, offset: u64, io: BdevIo, sink: Rc<dyn IoSink>, tag: u64) {
        let expect = crate::buf::sg_len(&io.bufs);
        let dsync = io.flags.fua();
        let target = Target::Bdev {
            sink,
            tag,
            io,
            expect,
        };
        self.submit_disk_op(OpDesc::Writev { fd, offset, dsync }, target);
    }

    /// `fdatasync`s `fd` through the ring, then completes `io` to `sink`.
    pub fn file_sync(&self, fd: RawFd, io: BdevIo, sink: Rc<dyn IoSink>, tag: u64) {
        let target = Target::Bdev {
            sink,
            tag,
            io,
            expect: 0,
        };
        self.submit_disk_op(OpDesc::Fsync { fd }, target);
    }

    /// `fallocate`s the byte range `(offset, len)` of `fd` with `mode` (e.g. punching a hole),
    /// then completes `io` to `sink`.
    pub fn file_fallocate(
        &self,
        fd: RawFd,
        mode: i32,
        (offset, len): (u64, u64),
        io: BdevIo,
        sink: Rc<dyn IoSink>,
        tag: u64,
    ) {
        let target = Target::Bdev {
            sink,
            tag,
            io,
            expect: 0,
        };
        let desc = OpDesc::Fallocate {
            fd,
            mode,
            offset,
            len,
        };
        self.submit_disk_op(desc, target);
    }

    /// Completes `io` to `sink` on a later pass of the loop (never from inside this call).
    ///
    /// Inlined so that the completion is written straight into the queue: called out of line,
    /// the caller's freshly written `result` was reloaded with wider loads than it was stored
    /// with, and that stalled store forwarding for a fifth of the in-process null-read profile.
    /// `always`: called from another crate (the devices of `shoal-bdev`), a plain `#[inline]`
    /// was no longer honoured in the RAM disk's and the `uring` device's submit (release build).
    #[inline(always)]
    pub fn complete_io(
        &self,
        sink: Rc<dyn IoSink>,
        tag: u64,
        io: BdevIo,
        result: Result<(), BdevError>,
    ) {
        self.0.deferred.borrow_mut().push_back(DeferredIo {
            sink,
            tag,
            io,
            result,
        });
    }
}

/// Completes a block I/O from its kernel result.
pub(crate) fn complete_bdev(sink: Rc<dyn IoSink>, tag: u64, io: BdevIo, expect: usize, res: i32) {
    let result = match usize::try_from(res) {
        Ok(n) if n == expect => Ok(()),
        Ok(n) => Err(BdevError::ShortIo {
            done: n,
            expected: expect,
        }),
        Err(_) => Err(BdevError::Os(std::io::Error::from_raw_os_error(-res))),
    };
    sink.io_done(tag, io, result);
}
