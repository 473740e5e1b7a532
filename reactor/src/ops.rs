//! Operations on the reactor's io_uring, with the buffers they own until completion.
//!
//! Each submitted operation occupies a slot. The slot owns everything the kernel may touch
//! (data buffers, the iovec array, the `msghdr`, a timespec) until the completion is reaped;
//! only then are the buffers handed back to whoever submitted the operation. This is the rule
//! that makes the ring safe to use: the kernel never sees memory that Rust could free or move.

use std::os::fd::{FromRawFd, RawFd};
use std::rc::Rc;

use io_uring::{opcode, squeue, types};

use crate::buf::{IoBuf, SgList};
use crate::io::{BdevIo, IoSink};

/// What the submitter of a ring operation is told when it completes.
pub trait OpHandler {
    /// Called on the reactor thread with the `tag` given at submission, the kernel's result
    /// (bytes transferred, a new file descriptor, or a negated errno) and the buffers back.
    fn op_done(&self, tag: u64, result: i32, payload: Payload);
}

/// Buffers that travel with an operation and come back with its completion.
#[derive(Debug, Default)]
pub enum Payload {
    /// No buffer.
    #[default]
    None,
    /// One buffer (recv: the bytes received were appended, its length grew by the result).
    Buf(IoBuf),
    /// A scatter-gather list.
    Bufs(SgList),
    /// A list of buffers whose vector is handed back for reuse (long send queues).
    Vec(Vec<IoBuf>),
    /// The descriptor an accept returned (the result is then 0).
    Fd(std::os::fd::OwnedFd),
}

/// Who hears about a completion.
pub(crate) enum Target {
    /// A generic handler.
    Handler(Rc<dyn OpHandler>, u64),
    /// A block I/O: the reactor checks the byte count and completes the `BdevIo` to its sink.
    Bdev {
        sink: Rc<dyn IoSink>,
        tag: u64,
        io: BdevIo,
        expect: usize,
    },
    /// The reactor's own wake-up read on its eventfd.
    Wake,
    /// The reactor's cancellation of everything in flight, when it stops.
    CancelAll,
    /// The reactor's own sleep timeout, armed for this deadline.
    SleepTimeout(std::time::Instant),
}

/// One in-flight operation and the memory the kernel may access for it.
pub(crate) struct Slot {
    pub(crate) target: Option<Target>,
    pub(crate) payload: Payload,
    /// A receive: on completion the buffer's length grows by the bytes received.
    recv: bool,
    /// An accept: on success the result is a new descriptor to own.
    accept: bool,
    /// iovecs pointing into `payload` (or into `Target::Bdev`'s buffers).
    iov: Vec<libc::iovec>,
    /// Boxed so that its address stays fixed while the slab grows.
    msg: Box<libc::msghdr>,
    ts: Box<types::Timespec>,
    wake_buf: Box<[u8; 8]>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            target: None,
            payload: Payload::None,
            recv: false,
            accept: false,
            iov: Vec::new(),
            // SAFETY: `msghdr` is a plain C struct for which all-zero bytes are a valid value.
            msg: Box::new(unsafe { std::mem::zeroed() }),
            ts: Box::new(types::Timespec::new()),
            wake_buf: Box::new([0; 8]),
        }
    }
}

/// The slab of in-flight operations. The ring's `user_data` is the slot index.
#[derive(Default)]
pub(crate) struct Slots {
    slots: Vec<Slot>,
    free: Vec<usize>,
    pub(crate) in_flight: usize,
}

/// Most iovecs one `sendmsg` carries (Linux's `UIO_MAXIOV`); the rest goes in the next one.
pub const MAX_IOVECS: usize = 1024;

/// A description of an operation to submit.
pub(crate) enum OpDesc {
    CancelAll,
    Readv {
        fd: RawFd,
        offset: u64,
    },
    Writev {
        fd: RawFd,
        offset: u64,
        /// `RWF_DSYNC`: complete only once the data (and the metadata needed to read it back)
        /// is durable.
        dsync: bool,
    },
    Fsync {
        fd: RawFd,
    },
    Fallocate {
        fd: RawFd,
        mode: i32,
        offset: u64,
        len: u64,
    },
    Recv {
        fd: RawFd,
    },
    SendMsg {
        fd: RawFd,
        skip: usize,
    },
    Accept {
        fd: RawFd,
    },
    PollIn {
        fd: RawFd,
    },
    WakeRead {
        fd: RawFd,
    },
    Timeout {
        nanos: u64,
    },
}

/// The iovec of `buf[from..to]`; `into` when the kernel writes to it (a read), which makes a
/// shared buffer unique first. A write or send only reads it, shared or not.
fn iov_of(buf: &mut IoBuf, from: usize, to: usize, into: bool) -> libc::iovec {
    let base = if into {
        buf.as_mut_ptr()
    } else {
        buf.as_ptr().cast_mut()
    };
    libc::iovec {
        // `from <= to <= capacity` is checked by the callers.
        iov_base: base.wrapping_add(from).cast(),
        iov_len: to - from,
    }
}

impl Slots {
    /// Takes a slot for `target`/`payload` and builds the submission entry for `desc`.
    ///
    /// All pointers placed in the entry point into memory owned by the slot (heap allocations
    /// that do not move when the slab grows) and stay valid until [`Slots::finish`].
    pub(crate) fn prepare(
        &mut self,
        desc: OpDesc,
        target: Target,
        payload: Payload,
    ) -> squeue::Entry {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::new());
                self.slots.len() - 1
            }
        };
        self.in_flight += 1;
        let slot = &mut self.slots[idx];
        slot.target = Some(target);
        slot.payload = payload;
        slot.recv = matches!(desc, OpDesc::Recv { .. });
        slot.accept = matches!(desc, OpDesc::Accept { .. });
        slot.iov.clear();
        let data = idx as u64;
        let entry = match desc {
            OpDesc::Readv { fd, offset } | OpDesc::Writev { fd, offset, .. } => {
                let is_read = matches!(desc, OpDesc::Readv { .. });
                let bufs: &mut [IoBuf] = match (&mut slot.target, &mut slot.payload) {
                    (Some(Target::Bdev { io, .. }), _) => &mut io.bufs,
                    (_, Payload::Bufs(b)) => b,
                    (_, Payload::Buf(b)) => std::slice::from_mut(b),
                    _ => &mut [],
                };
                for b in bufs.iter_mut() {
                    let len = b.len();
                    slot.iov.push(iov_of(b, 0, len, is_read));
                }
                let n = u32::try_from(slot.iov.len()).unwrap_or(u32::MAX);
                if is_read {
                    opcode::Readv::new(types::Fd(fd), slot.iov.as_ptr(), n)
                        .offset(offset)
                        .build()
                } else {
                    let dsync = matches!(desc, OpDesc::Writev { dsync: true, .. });
                    opcode::Writev::new(types::Fd(fd), slot.iov.as_ptr(), n)
                        .offset(offset)
                        .rw_flags(if dsync { libc::RWF_DSYNC } else { 0 })
                        .build()
                }
            }
            OpDesc::Fsync { fd } => opcode::Fsync::new(types::Fd(fd))
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            OpDesc::Fallocate {
                fd,
                mode,
                offset,
                len,
            } => opcode::Fallocate::new(types::Fd(fd), len)
                .offset(offset)
                .mode(mode)
                .build(),
            OpDesc::Recv { fd } => {
                let (ptr, len) = match &mut slot.payload {
                    Payload::Buf(b) => {
                        let used = b.len();
                        let spare = b.capacity() - used;
                        (b.as_mut_ptr().wrapping_add(used), spare)
                    }
                    _ => (std::ptr::null_mut(), 0),
                };
                let len = u32::try_from(len).unwrap_or(u32::MAX);
                opcode::Recv::new(types::Fd(fd), ptr, len).build()
            }
            OpDesc::SendMsg { fd, mut skip } => {
                let bufs: &mut [IoBuf] = match &mut slot.payload {
                    Payload::Bufs(b) => b,
                    Payload::Vec(b) => b,
                    Payload::Buf(b) => std::slice::from_mut(b),
                    Payload::None | Payload::Fd(_) => &mut [],
                };
                for b in bufs.iter_mut() {
                    if slot.iov.len() >= MAX_IOVECS {
                        break;
                    }
                    let len = b.len();
                    if skip >= len {
                        skip -= len;
                        continue;
                    }
                    slot.iov.push(iov_of(b, skip, len, false));
                    skip = 0;
                }
                // SAFETY: all-zero is a valid `msghdr` (no name, no control data).
                *slot.msg = unsafe { std::mem::zeroed() };
                slot.msg.msg_iov = slot.iov.as_mut_ptr();
                slot.msg.msg_iovlen = slot.iov.len();
                opcode::SendMsg::new(types::Fd(fd), &*slot.msg)
                    .flags(u32::try_from(libc::MSG_NOSIGNAL).unwrap_or(0))
                    .build()
            }
            OpDesc::Accept { fd } => {
                opcode::Accept::new(types::Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                    .flags(libc::SOCK_CLOEXEC)
                    .build()
            }
            OpDesc::PollIn { fd } => {
                opcode::PollAdd::new(types::Fd(fd), u32::try_from(libc::POLLIN).unwrap_or(1))
                    .build()
            }
            OpDesc::WakeRead { fd } => {
                opcode::Read::new(types::Fd(fd), slot.wake_buf.as_mut_ptr(), 8).build()
            }
            OpDesc::CancelAll => opcode::AsyncCancel2::new(types::CancelBuilder::any()).build(),
            OpDesc::Timeout { nanos } => {
                *slot.ts = types::Timespec::new()
                    .sec(nanos / 1_000_000_000)
                    .nsec(u32::try_from(nanos % 1_000_000_000).unwrap_or(0));
                opcode::Timeout::new(&*slot.ts).build()
            }
        };
        entry.user_data(data)
    }

    /// Releases the slot of a reaped completion and returns what it held.
    pub(crate) fn finish(&mut self, idx: u64, mut res: i32) -> Option<(Target, Payload, i32)> {
        let i = usize::try_from(idx).ok()?;
        let slot = self.slots.get_mut(i)?;
        let target = slot.target.take()?;
        let mut payload = std::mem::take(&mut slot.payload);
        if let (true, Payload::Buf(b), Ok(n)) = (slot.recv, &mut payload, usize::try_from(res)) {
            // The kernel wrote `n` bytes after the old length (at most the spare capacity).
            b.set_len(b.len() + n);
        }
        if slot.accept && res >= 0 {
            // SAFETY: a successful accept returns a new descriptor that nothing else owns.
            payload = Payload::Fd(unsafe { std::os::fd::OwnedFd::from_raw_fd(res) });
            res = 0;
        }
        slot.iov.clear();
        self.free.push(i);
        self.in_flight -= 1;
        Some((target, payload, res))
    }
}
