//! `uring`: a block device on a regular file or a Linux block device, driven through the
//! submitting reactor's io_uring (SPDK's `bdev_uring`, product name `URING bdev`).
//!
//! The file is opened once with `O_DIRECT` (when the file system refuses it, e.g. an old tmpfs,
//! the device falls back to buffered I/O with a warning) and its descriptor is shared by every
//! reactor. Each request becomes one ring operation on the submitting reactor:
//!
//! | request      | regular file                                   | block device                       |
//! |--------------|------------------------------------------------|------------------------------------|
//! | read / write | `readv` / `writev` at `block * block_size`     | same                               |
//! | flush        | `fdatasync`                                    | same                               |
//! | unmap        | `fallocate(PUNCH_HOLE\|KEEP_SIZE)`: reads zeroes | `fallocate(PUNCH_HOLE\|KEEP_SIZE)`, which the kernel turns into a write-zeroes that may deallocate; where the device cannot, a synchronous `BLKDISCARD` ioctl (contents then unspecified) |
//! | write zeroes | `fallocate(ZERO_RANGE\|KEEP_SIZE)`; where the file system refuses it, zero buffers are written | `fallocate(ZERO_RANGE\|KEEP_SIZE)` (the kernel's `blkdev_issue_zeroout`, with its own fallback to writing zeroes) |
//!
//! Geometry: the size is the file length (or `BLKGETSIZE64`); a trailing partial block is not
//! used. The smallest usable block size is the device's logical block (`BLKSSZGET`) or, for a
//! file opened `O_DIRECT`, the file system's direct-I/O alignment (`statx` `STATX_DIOALIGN`,
//! 512 when the kernel does not say). The block size defaults to that and may be raised to 4096.

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use uuid::Uuid;

use crate::buf::{IoBuf, SgList};
use crate::reactor::Reactor;
use crate::{
    Bdev, BdevChannel, BdevError, BdevInfo, BdevIo, IoFlags, IoSink, IoType, valid_block_size,
};

/// `_IOR(0x12, 114, size_t)`: the size of a block device in bytes.
const BLKGETSIZE64: libc::Ioctl = 0x8008_1272;
/// `_IO(0x12, 119)`: discard a byte range `[start, len]` of a block device.
const BLKDISCARD: libc::Ioctl = 0x1277;
/// Bytes written per operation when write zeroes falls back to writing zero buffers.
const ZERO_CHUNK: u64 = 1 << 20;

/// A block device backed by a file or a Linux block device, through io_uring.
pub struct UringBdev {
    info: BdevInfo,
    fd: Arc<OwnedFd>,
    path: PathBuf,
    block_device: bool,
    direct: bool,
    min_block_size: u32,
    /// Cleared once the file system answers `EOPNOTSUPP` to `FALLOC_FL_ZERO_RANGE`.
    zero_range: AtomicBool,
    /// Cleared once a block device answers `EOPNOTSUPP` to `FALLOC_FL_PUNCH_HOLE`.
    punch_hole: AtomicBool,
}

impl std::fmt::Debug for UringBdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringBdev")
            .field("info", &self.info)
            .field("path", &self.path)
            .field("block_device", &self.block_device)
            .field("direct", &self.direct)
            .finish()
    }
}

fn os_err(what: &str, path: &Path, e: std::io::Error) -> BdevError {
    BdevError::Os(std::io::Error::new(
        e.kind(),
        format!("{what} {}: {e}", path.display()),
    ))
}

/// Opens `path` read-write with `O_DIRECT`, or buffered if the file system refuses `O_DIRECT`.
fn open(path: &Path) -> Result<(std::fs::File, bool), BdevError> {
    let direct = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path);
    match direct {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::warn!(
                "{}: the file system refuses O_DIRECT; using buffered I/O",
                path.display()
            );
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| os_err("cannot open", path, e))?;
            Ok((f, false))
        }
        Err(e) => Err(os_err("cannot open", path, e)),
    }
}

/// Size in bytes and logical block size of a block device.
fn block_device_geometry(fd: RawFd, path: &Path) -> Result<(u64, u32), BdevError> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points to a live local.
    if unsafe { libc::ioctl(fd, BLKGETSIZE64, &raw mut size) } < 0 {
        return Err(os_err(
            "BLKGETSIZE64 on",
            path,
            std::io::Error::last_os_error(),
        ));
    }
    let mut lbs: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points to a live local.
    if unsafe { libc::ioctl(fd, libc::BLKSSZGET, &raw mut lbs) } < 0 {
        return Err(os_err(
            "BLKSSZGET on",
            path,
            std::io::Error::last_os_error(),
        ));
    }
    let lbs = u32::try_from(lbs)
        .map_err(|_| BdevError::Invalid(format!("{}: logical block size {lbs}", path.display())))?;
    Ok((size, lbs))
}

/// The file offset alignment that direct I/O on `fd` needs (`STATX_DIOALIGN`), if known.
fn dio_offset_align(fd: RawFd) -> Option<u32> {
    // SAFETY: `statx` is a plain C struct; all-zero bytes are a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: an empty path with AT_EMPTY_PATH makes statx describe `fd`; it writes only into
    // `stx`, a live local of the right type.
    let rc = unsafe {
        libc::statx(
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &raw mut stx,
        )
    };
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 || stx.stx_dio_offset_align == 0 {
        return None;
    }
    Some(stx.stx_dio_offset_align)
}

impl UringBdev {
    /// Opens the file or block device at `path` as a device named `name`.
    ///
    /// `block_size` may be 512 or 4096 and not smaller than the device's logical block (see the
    /// module documentation); `None` picks the device's logical block (512 for most files).
    pub fn create(
        name: &str,
        path: impl AsRef<Path>,
        block_size: Option<u32>,
        uuid: Option<Uuid>,
    ) -> Result<Arc<UringBdev>, BdevError> {
        let path = path.as_ref();
        let (file, direct) = open(path)?;
        let meta = file
            .metadata()
            .map_err(|e| os_err("cannot stat", path, e))?;
        let fd = file.as_raw_fd();
        let block_device = meta.file_type().is_block_device();
        let (size, min_block_size) = if block_device {
            block_device_geometry(fd, path)?
        } else if meta.is_file() {
            let align = if direct {
                dio_offset_align(fd).unwrap_or(512)
            } else {
                512
            };
            (meta.len(), align.max(512))
        } else {
            return Err(BdevError::Invalid(format!(
                "{} is neither a regular file nor a block device",
                path.display()
            )));
        };
        if !valid_block_size(min_block_size) {
            return Err(BdevError::Invalid(format!(
                "{}: logical block size {min_block_size} is not supported (512 or 4096)",
                path.display()
            )));
        }
        let block_size = block_size.unwrap_or(min_block_size);
        if !valid_block_size(block_size) {
            return Err(BdevError::Invalid(format!(
                "block size {block_size} is not supported (512 or 4096)"
            )));
        }
        if block_size < min_block_size {
            return Err(BdevError::Invalid(format!(
                "block size {block_size} is smaller than the {min_block_size}-byte logical \
                 block of {}",
                path.display()
            )));
        }
        let num_blocks = size / u64::from(block_size);
        if num_blocks == 0 {
            return Err(BdevError::Invalid(format!(
                "{} holds {size} bytes: less than one {block_size}-byte block",
                path.display()
            )));
        }
        if size % u64::from(block_size) != 0 {
            tracing::warn!(
                "{}: the last {} bytes are not a whole block and are not used",
                path.display(),
                size % u64::from(block_size)
            );
        }
        Ok(Arc::new(UringBdev {
            info: BdevInfo::new(name, uuid, block_size, num_blocks, "URING bdev"),
            fd: Arc::new(OwnedFd::from(file)),
            path: path.to_path_buf(),
            block_device,
            direct,
            min_block_size,
            zero_range: AtomicBool::new(true),
            punch_hole: AtomicBool::new(true),
        }))
    }

    /// The path the device was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the device is a block device (rather than a regular file).
    pub fn is_block_device(&self) -> bool {
        self.block_device
    }

    /// Whether I/O bypasses the page cache (`O_DIRECT`).
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The smallest block size this file or device accepts.
    pub fn min_block_size(&self) -> u32 {
        self.min_block_size
    }

    /// Byte offset and length of a range-checked request.
    fn byte_range(&self, io: &BdevIo) -> (u64, u64) {
        let bs = u64::from(self.info.block_size);
        // `IoChannel` checked `offset + num <= num_blocks`, and `num_blocks * bs` is at most
        // the file size, so neither product overflows.
        (
            io.offset_blocks.saturating_mul(bs),
            io.num_blocks.saturating_mul(bs),
        )
    }
}

impl Bdev for UringBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn supports(&self, _io_type: IoType) -> bool {
        true
    }

    fn supports_flags(&self, io_type: IoType, flags: IoFlags) -> bool {
        // FUA only: a write goes with `RWF_DSYNC`, a read or write zeroes with an `fdatasync`.
        flags == IoFlags::FUA
            && matches!(io_type, IoType::Read | IoType::Write | IoType::WriteZeroes)
    }

    fn create_channel(
        self: Arc<Self>,
        reactor: &Reactor,
    ) -> Result<Box<dyn BdevChannel>, BdevError> {
        Ok(Box::new(UringChannel {
            reactor: reactor.clone(),
            fd: self.fd.as_raw_fd(),
            dev: self,
        }))
    }
}

struct UringChannel {
    reactor: Reactor,
    /// Borrowed from `dev.fd`, which `dev` keeps open for the channel's lifetime.
    fd: RawFd,
    dev: Arc<UringBdev>,
}

fn is_unsupported(result: &Result<(), BdevError>) -> bool {
    matches!(result, Err(BdevError::Os(e)) if e.raw_os_error() == Some(libc::EOPNOTSUPP))
}

impl BdevChannel for UringChannel {
    fn submit(&self, io: BdevIo, mut sink: Rc<dyn IoSink>, tag: u64) {
        let (off, len) = self.dev.byte_range(&io);
        let r = &self.reactor;
        if io.flags.fua() {
            match io.io_type {
                IoType::Read => {
                    // Commit first, then read what the media holds (NVM Command Set 1.0,
                    // section 3.2.4).
                    let next = Rc::new(SyncThenRead {
                        chan: self.clone_parts(),
                        sink,
                        off,
                    });
                    return r.file_sync(self.fd, io, next, tag);
                }
                // A write carries RWF_DSYNC (`Reactor::file_write`); write zeroes is followed
                // by an `fdatasync` before it completes.
                IoType::WriteZeroes => {
                    sink = Rc::new(SyncAfter {
                        chan: self.clone_parts(),
                        sink,
                    });
                }
                _ => {}
            }
        }
        match io.io_type {
            IoType::Read => r.file_read(self.fd, off, io, sink, tag),
            IoType::Write => r.file_write(self.fd, off, io, sink, tag),
            IoType::Flush => r.file_sync(self.fd, io, sink, tag),
            IoType::Unmap => {
                if self.dev.block_device && !self.dev.punch_hole.load(Ordering::Relaxed) {
                    let result = blk_discard(self.fd, off, len);
                    r.complete_io(sink, tag, io, result);
                    return;
                }
                let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
                let next: Rc<dyn IoSink> = if self.dev.block_device {
                    Rc::new(Fallback {
                        chan: self.clone_parts(),
                        sink,
                        tag,
                        range: (off, len),
                    })
                } else {
                    sink
                };
                r.file_fallocate(self.fd, mode, (off, len), io, next, tag);
            }
            IoType::WriteZeroes => {
                let parts = self.clone_parts();
                if !self.dev.block_device && !self.dev.zero_range.load(Ordering::Relaxed) {
                    ZeroWriter::start(parts, io, sink, tag, (off, len));
                    return;
                }
                let mode = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
                let next = Rc::new(Fallback {
                    chan: parts,
                    sink,
                    tag,
                    range: (off, len),
                });
                r.file_fallocate(self.fd, mode, (off, len), io, next, tag);
            }
        }
    }
}

/// What the slow paths need of a channel.
#[derive(Clone)]
struct ChanParts {
    reactor: Reactor,
    fd: RawFd,
    dev: Arc<UringBdev>,
}

impl UringChannel {
    fn clone_parts(&self) -> ChanParts {
        ChanParts {
            reactor: self.reactor.clone(),
            fd: self.fd,
            dev: self.dev.clone(),
        }
    }
}

/// A FUA read: the `fdatasync` is done, now the read.
struct SyncThenRead {
    chan: ChanParts,
    sink: Rc<dyn IoSink>,
    off: u64,
}

impl IoSink for SyncThenRead {
    fn io_done(&self, tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        match result {
            Ok(()) => {
                let c = &self.chan;
                c.reactor
                    .file_read(c.fd, self.off, io, self.sink.clone(), tag);
            }
            Err(e) => self.sink.io_done(tag, io, Err(e)),
        }
    }
}

/// A FUA write zeroes: the zeroes are written, now the `fdatasync` that makes them durable.
struct SyncAfter {
    chan: ChanParts,
    sink: Rc<dyn IoSink>,
}

impl IoSink for SyncAfter {
    fn io_done(&self, tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        match result {
            Ok(()) => {
                let c = &self.chan;
                c.reactor.file_sync(c.fd, io, self.sink.clone(), tag);
            }
            Err(e) => self.sink.io_done(tag, io, Err(e)),
        }
    }
}

/// Discards a byte range of a block device with the synchronous `BLKDISCARD` ioctl. It blocks
/// the reactor for as long as the device takes; it is only used on devices that cannot
/// deallocate through `fallocate`.
fn blk_discard(fd: RawFd, off: u64, len: u64) -> Result<(), BdevError> {
    let range: [u64; 2] = [off, len];
    // SAFETY: BLKDISCARD reads two u64s (start, length) from the pointer, a live local array.
    if unsafe { libc::ioctl(fd, BLKDISCARD, range.as_ptr()) } < 0 {
        return Err(BdevError::Os(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Completion of an unmap or write-zeroes `fallocate`: passes the result on, or, when the file
/// system or device does not support the mode, switches to the fallback (and remembers to use
/// it directly from then on).
struct Fallback {
    chan: ChanParts,
    sink: Rc<dyn IoSink>,
    tag: u64,
    range: (u64, u64),
}

impl IoSink for Fallback {
    fn io_done(&self, _tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        if !is_unsupported(&result) {
            self.sink.io_done(self.tag, io, result);
            return;
        }
        let dev = &self.chan.dev;
        match io.io_type {
            IoType::Unmap => {
                if dev.punch_hole.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        "{}: no deallocating write-zeroes; unmap uses BLKDISCARD",
                        dev.path.display()
                    );
                }
                let result = blk_discard(self.chan.fd, self.range.0, self.range.1);
                self.sink.io_done(self.tag, io, result);
            }
            _ => {
                if dev.zero_range.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        "{}: FALLOC_FL_ZERO_RANGE unsupported; writing zero buffers",
                        dev.path.display()
                    );
                }
                ZeroWriter::start(
                    self.chan.clone(),
                    io,
                    self.sink.clone(),
                    self.tag,
                    self.range,
                );
            }
        }
    }
}

/// Write zeroes done by writing zero buffers, one chunk at a time (the slow path for file
/// systems without `FALLOC_FL_ZERO_RANGE`, such as tmpfs).
struct ZeroWriter {
    /// Itself, to resubmit from its own completion.
    me: Weak<ZeroWriter>,
    chan: ChanParts,
    /// The caller's write-zeroes request, handed back at the end.
    orig: RefCell<Option<BdevIo>>,
    sink: Rc<dyn IoSink>,
    tag: u64,
    /// Next byte to zero.
    next: Cell<u64>,
    /// End of the range to zero.
    end: u64,
}

impl ZeroWriter {
    fn start(chan: ChanParts, io: BdevIo, sink: Rc<dyn IoSink>, tag: u64, (off, len): (u64, u64)) {
        let w = Rc::new_cyclic(|me| ZeroWriter {
            me: me.clone(),
            chan,
            orig: RefCell::new(Some(io)),
            sink,
            tag,
            next: Cell::new(off),
            end: off.saturating_add(len),
        });
        // At most ZERO_CHUNK, which fits in usize on every supported target.
        let buf = IoBuf::zeroed(usize::try_from(len.min(ZERO_CHUNK)).unwrap_or(0));
        w.write_next(buf);
    }

    /// Writes the next chunk from `buf`, which holds zeroes up to its capacity.
    fn write_next(&self, mut buf: IoBuf) {
        let Some(me) = self.me.upgrade() else { return };
        let off = self.next.get();
        let n = (self.end - off).min(ZERO_CHUNK);
        // `n` is at most the first chunk's length, hence at most the capacity.
        buf.set_len(usize::try_from(n).unwrap_or(0));
        self.next.set(off + n);
        let bs = u64::from(self.chan.dev.info.block_size);
        let mut bufs = SgList::new();
        bufs.push(buf);
        let io = BdevIo::write(off / bs, n / bs, bufs);
        self.chan.reactor.file_write(self.chan.fd, off, io, me, 0);
    }
}

impl IoSink for ZeroWriter {
    fn io_done(&self, _tag: u64, mut io: BdevIo, result: Result<(), BdevError>) {
        let buf = io.bufs.pop();
        match (result, buf) {
            (Ok(()), Some(buf)) if self.next.get() < self.end => self.write_next(buf),
            (result, _) => {
                if let Some(orig) = self.orig.borrow_mut().take() {
                    self.sink.io_done(self.tag, orig, result);
                }
            }
        }
    }
}
