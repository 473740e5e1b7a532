//! The checked, counted channel through which a reactor reaches a device.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::reactor::Reactor;
use crate::{Bdev, BdevChannel, BdevError, BdevIo, IoSink, IoType, buf};

/// I/O counters of one channel. Only the owning reactor writes them (relaxed stores, no
/// contention); any thread may read them.
#[derive(Debug, Default)]
pub struct IoStats {
    bytes_read: AtomicU64,
    num_read_ops: AtomicU64,
    bytes_written: AtomicU64,
    num_write_ops: AtomicU64,
    num_unmap_ops: AtomicU64,
    num_write_zeroes_ops: AtomicU64,
    num_flush_ops: AtomicU64,
    num_errors: AtomicU64,
}

/// A point-in-time copy of [`IoStats`], addable across channels.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoStatsSnapshot {
    /// Bytes read.
    pub bytes_read: u64,
    /// Read operations.
    pub num_read_ops: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Write operations.
    pub num_write_ops: u64,
    /// Unmap operations.
    pub num_unmap_ops: u64,
    /// Write-zeroes operations.
    pub num_write_zeroes_ops: u64,
    /// Flush operations.
    pub num_flush_ops: u64,
    /// Requests refused by the checks.
    pub num_errors: u64,
}

impl std::ops::Add for IoStatsSnapshot {
    type Output = IoStatsSnapshot;
    fn add(self, o: Self) -> Self {
        IoStatsSnapshot {
            bytes_read: self.bytes_read + o.bytes_read,
            num_read_ops: self.num_read_ops + o.num_read_ops,
            bytes_written: self.bytes_written + o.bytes_written,
            num_write_ops: self.num_write_ops + o.num_write_ops,
            num_unmap_ops: self.num_unmap_ops + o.num_unmap_ops,
            num_write_zeroes_ops: self.num_write_zeroes_ops + o.num_write_zeroes_ops,
            num_flush_ops: self.num_flush_ops + o.num_flush_ops,
            num_errors: self.num_errors + o.num_errors,
        }
    }
}

fn bump(c: &AtomicU64, by: u64) {
    // Single writer: a load and a store avoid a locked read-modify-write on the I/O path.
    c.store(
        c.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

impl IoStats {
    /// Reads the counters.
    pub fn snapshot(&self) -> IoStatsSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        IoStatsSnapshot {
            bytes_read: l(&self.bytes_read),
            num_read_ops: l(&self.num_read_ops),
            bytes_written: l(&self.bytes_written),
            num_write_ops: l(&self.num_write_ops),
            num_unmap_ops: l(&self.num_unmap_ops),
            num_write_zeroes_ops: l(&self.num_write_zeroes_ops),
            num_flush_ops: l(&self.num_flush_ops),
            num_errors: l(&self.num_errors),
        }
    }
}

/// A reactor's channel to a device: checks every request, counts it, and passes it on.
pub struct IoChannel {
    bdev: Arc<dyn Bdev>,
    inner: Box<dyn BdevChannel>,
    stats: Arc<IoStats>,
    reactor: Reactor,
}

impl Drop for IoChannel {
    fn drop(&mut self) {
        // Control path (a queue pair or a nexus child going away): the counters join the
        // device's totals.
        self.bdev.info().retire_channel(&self.stats);
    }
}

/// Opens `bdev` on the current thread's reactor.
pub fn open_channel(bdev: &Arc<dyn Bdev>) -> Result<IoChannel, BdevError> {
    let reactor = Reactor::current().ok_or(BdevError::NoReactor)?;
    if bdev.info().is_closed() {
        return Err(BdevError::Closed);
    }
    let inner = bdev.clone().create_channel(&reactor)?;
    let stats = Arc::new(IoStats::default());
    bdev.info().register_channel(stats.clone());
    Ok(IoChannel {
        bdev: bdev.clone(),
        inner,
        stats,
        reactor,
    })
}

/// Checks a request against a device's geometry and capabilities.
pub fn check_io(bdev: &dyn Bdev, io: &BdevIo) -> Result<(), BdevError> {
    let info = bdev.info();
    if info.is_closed() {
        return Err(BdevError::Closed);
    }
    if !bdev.supports(io.io_type) {
        return Err(BdevError::Unsupported(io.io_type));
    }
    if !io.flags.is_empty() && !bdev.supports_flags(io.io_type, io.flags) {
        return Err(BdevError::UnsupportedFlags(io.flags, io.io_type));
    }
    if io.io_type == IoType::Flush {
        return Ok(());
    }
    // The size may change at run time (a volume resized): read it once.
    let capacity = info.num_blocks();
    let end = io.offset_blocks.checked_add(io.num_blocks);
    if io.num_blocks == 0 || end.is_none_or(|e| e > capacity) {
        return Err(BdevError::OutOfRange {
            offset: io.offset_blocks,
            count: io.num_blocks,
            capacity,
        });
    }
    if matches!(io.io_type, IoType::Read | IoType::Write) {
        let bytes = buf::sg_len(&io.bufs) as u64;
        let want = io.num_blocks.checked_mul(u64::from(info.block_size));
        if want != Some(bytes) {
            return Err(BdevError::BadLength {
                bytes,
                blocks: io.num_blocks,
                block_size: info.block_size,
            });
        }
    }
    Ok(())
}

impl IoChannel {
    /// The device.
    pub fn bdev(&self) -> &Arc<dyn Bdev> {
        &self.bdev
    }

    /// Submits `io`; `sink.io_done(tag, ..)` follows on a later pass of the reactor loop.
    pub fn submit(&self, io: BdevIo, sink: Rc<dyn IoSink>, tag: u64) {
        if let Err(e) = check_io(self.bdev.as_ref(), &io) {
            bump(&self.stats.num_errors, 1);
            self.reactor.complete_io(sink, tag, io, Err(e));
            return;
        }
        self.count(&io);
        self.inner.submit(io, sink, tag);
    }

    /// Counts an accepted request for `bdev_get_iostat`.
    #[inline]
    fn count(&self, io: &BdevIo) {
        let s = &self.stats;
        let bytes = io
            .num_blocks
            .saturating_mul(u64::from(self.bdev.info().block_size));
        match io.io_type {
            IoType::Read => {
                bump(&s.num_read_ops, 1);
                bump(&s.bytes_read, bytes);
            }
            IoType::Write => {
                bump(&s.num_write_ops, 1);
                bump(&s.bytes_written, bytes);
            }
            IoType::Flush => bump(&s.num_flush_ops, 1),
            IoType::WriteZeroes => bump(&s.num_write_zeroes_ops, 1),
            IoType::Unmap => bump(&s.num_unmap_ops, 1),
        }
    }

    /// Submits a read or write that a stacked device (the nexus) has already checked against
    /// its own geometry, through [`IoChannel::submit`] on its own channel: the buffers' length
    /// matches the blocks, and every device reads and writes. Only what can differ on this
    /// device is checked again: that it is open and that the range fits it. Anything else goes
    /// through the full check.
    pub fn submit_checked_above(&self, io: BdevIo, sink: Rc<dyn IoSink>, tag: u64) {
        if !matches!(io.io_type, IoType::Read | IoType::Write) {
            return self.submit(io, sink, tag);
        }
        let info = self.bdev.info();
        let fits = io
            .offset_blocks
            .checked_add(io.num_blocks)
            .is_some_and(|end| io.num_blocks != 0 && end <= info.num_blocks());
        if info.is_closed() || !fits || !io.flags.is_empty() {
            // The full check names the error.
            return self.submit(io, sink, tag);
        }
        self.count(&io);
        self.inner.submit(io, sink, tag);
    }

    /// This channel's counters.
    pub fn stats(&self) -> IoStatsSnapshot {
        self.stats.snapshot()
    }
}
