//! I/O buffers: aligned, always-initialised memory recycled through a per-thread pool.
//!
//! Every buffer handed to a device or a socket is an [`IoBuf`]. Its memory is aligned to
//! [`IO_ALIGN`] bytes (enough for `O_DIRECT` on 512- and 4096-byte devices) and zeroed when it
//! is first allocated, so every byte up to its capacity is initialised and may be exposed as a
//! slice. Dropping an `IoBuf` returns its memory to the pool of the thread that drops it; a
//! reactor therefore stops allocating once its pool has warmed up (no heap allocation per I/O).
//!
//! Capacities are rounded up to a power of two between [`MIN_CLASS`] and [`MAX_POOLED`]; larger
//! buffers are allocated and freed directly.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::ptr::NonNull;

use smallvec::SmallVec;

/// Alignment of every I/O buffer, in bytes.
pub const IO_ALIGN: usize = 4096;
/// Smallest capacity handed out.
pub const MIN_CLASS: usize = 512;
/// Largest capacity kept in the pool; bigger buffers bypass it.
pub const MAX_POOLED: usize = 4 << 20;
/// Bytes the pool keeps per size class and thread before it frees returned buffers.
const POOL_BYTES_PER_CLASS: usize = 16 << 20;
/// Number of size classes: 512 B, 1 KiB, ... 4 MiB.
const NUM_CLASSES: usize = (MAX_POOLED / MIN_CLASS).trailing_zeros() as usize + 1;

/// A scatter-gather list: the buffers of one I/O, in order.
pub type SgList = SmallVec<[IoBuf; 4]>;

/// An aligned, initialised buffer with a length (bytes in use) and a capacity.
pub struct IoBuf {
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
}

// SAFETY: an `IoBuf` uniquely owns its allocation (like a `Box<[u8]>`); nothing else points to
// it, so moving it to another thread is sound. It returns to the pool of whichever thread drops it.
unsafe impl Send for IoBuf {}
// SAFETY: shared references only give out `&[u8]`, which is `Sync`.
unsafe impl Sync for IoBuf {}

fn class_of(cap: usize) -> Option<usize> {
    if cap > MAX_POOLED {
        return None;
    }
    let rounded = cap.max(MIN_CLASS).next_power_of_two();
    Some((rounded / MIN_CLASS).trailing_zeros() as usize)
}

fn layout(cap: usize) -> Layout {
    // A capacity that does not form a layout is an internal bug (callers are bounded by the
    // protocol limits long before `isize::MAX`).
    Layout::from_size_align(cap, IO_ALIGN).expect("I/O buffer capacity overflows a layout")
}

struct Pool {
    free: [Vec<NonNull<u8>>; NUM_CLASSES],
}

impl Pool {
    const fn new() -> Self {
        Pool {
            free: [const { Vec::new() }; NUM_CLASSES],
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for (class, list) in self.free.iter_mut().enumerate() {
            let cap = MIN_CLASS << class;
            for ptr in list.drain(..) {
                // SAFETY: every pointer in class `class` was allocated with `layout(cap)` and is
                // owned by the pool alone.
                unsafe { alloc::dealloc(ptr.as_ptr(), layout(cap)) };
            }
        }
    }
}

thread_local! {
    static POOL: RefCell<Pool> = const { RefCell::new(Pool::new()) };
}

impl IoBuf {
    /// A buffer of at least `cap` bytes with length 0. Its contents are unspecified but
    /// initialised (zeroes or data of an earlier use).
    pub fn with_capacity(cap: usize) -> IoBuf {
        let (cap, class) = match class_of(cap) {
            Some(c) => (MIN_CLASS << c, Some(c)),
            None => (cap, None),
        };
        if let Some(c) = class {
            let recycled = POOL
                .try_with(|p| p.borrow_mut().free[c].pop())
                .ok()
                .flatten();
            if let Some(ptr) = recycled {
                return IoBuf { ptr, cap, len: 0 };
            }
        }
        // SAFETY: `layout(cap)` has a non-zero size (cap >= MIN_CLASS or > MAX_POOLED).
        let raw = unsafe { alloc::alloc_zeroed(layout(cap)) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout(cap));
        };
        IoBuf { ptr, cap, len: 0 }
    }

    /// A buffer of length `len` filled with zeroes.
    pub fn zeroed(len: usize) -> IoBuf {
        let mut b = IoBuf::with_capacity(len);
        b.len = len;
        b.as_mut_slice().fill(0);
        b
    }

    /// A buffer holding a copy of `data`.
    pub fn copy_from(data: &[u8]) -> IoBuf {
        let mut b = IoBuf::with_capacity(data.len());
        b.len = data.len();
        b.as_mut_slice().copy_from_slice(data);
        b
    }

    /// Bytes in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no byte is in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Total bytes available.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Sets the length. Every byte below the capacity is initialised, so any length up to the
    /// capacity is sound; a larger one is clamped to the capacity.
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.cap);
    }

    /// The bytes in use.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to `cap` initialised bytes owned by `self`, and `len <= cap`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes in use, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// The whole capacity, mutably (for filling before `set_len`).
    pub fn full_mut(&mut self) -> &mut [u8] {
        // SAFETY: `cap` bytes are allocated and initialised; `&mut self` gives exclusivity.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) }
    }

    /// Raw pointer to the start, for handing to the kernel. The buffer must stay alive and
    /// unmoved-from (it is a heap allocation, so moving the `IoBuf` itself is fine) until the
    /// kernel is done with it.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for IoBuf {
    fn drop(&mut self) {
        if let Some(c) = class_of(self.cap).filter(|&c| MIN_CLASS << c == self.cap) {
            let keep = POOL_BYTES_PER_CLASS / self.cap;
            let ptr = self.ptr;
            let kept = POOL
                .try_with(|p| {
                    let mut p = p.borrow_mut();
                    if p.free[c].len() < keep.max(8) {
                        p.free[c].push(ptr);
                        true
                    } else {
                        false
                    }
                })
                .unwrap_or(false);
            if kept {
                return;
            }
        }
        // SAFETY: allocated in `with_capacity` with `layout(self.cap)` and owned by `self`.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout(self.cap)) };
    }
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoBuf")
            .field("len", &self.len)
            .field("cap", &self.cap)
            .finish()
    }
}

/// Total length of a scatter-gather list.
pub fn sg_len(bufs: &[IoBuf]) -> usize {
    bufs.iter().map(IoBuf::len).sum()
}

/// Copies `src` into the scatter-gather list starting at byte `offset`; returns bytes copied.
pub fn sg_copy_in(bufs: &mut [IoBuf], mut offset: usize, mut src: &[u8]) -> usize {
    let mut copied = 0;
    for b in bufs.iter_mut() {
        if src.is_empty() {
            break;
        }
        if offset >= b.len() {
            offset -= b.len();
            continue;
        }
        let dst = &mut b.as_mut_slice()[offset..];
        let n = dst.len().min(src.len());
        dst[..n].copy_from_slice(&src[..n]);
        src = &src[n..];
        copied += n;
        offset = 0;
    }
    copied
}

/// Copies from the scatter-gather list, starting at byte `offset`, into `dst`; returns bytes copied.
pub fn sg_copy_out(bufs: &[IoBuf], mut offset: usize, dst: &mut [u8]) -> usize {
    let mut copied = 0;
    for b in bufs {
        if copied == dst.len() {
            break;
        }
        if offset >= b.len() {
            offset -= b.len();
            continue;
        }
        let src = &b.as_slice()[offset..];
        let n = src.len().min(dst.len() - copied);
        dst[copied..copied + n].copy_from_slice(&src[..n]);
        copied += n;
        offset = 0;
    }
    copied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_recycled() {
        let a = IoBuf::with_capacity(4096);
        let p = a.ptr.as_ptr() as usize;
        assert_eq!(p % IO_ALIGN, 0);
        drop(a);
        let b = IoBuf::with_capacity(3000);
        assert_eq!(
            b.ptr.as_ptr() as usize,
            p,
            "a freed buffer of the same class is reused"
        );
        assert_eq!(b.capacity(), 4096);
    }

    #[test]
    fn big_buffers_bypass_the_pool() {
        let b = IoBuf::zeroed(MAX_POOLED + 1);
        assert_eq!(b.len(), MAX_POOLED + 1);
        assert!(b.as_slice().iter().all(|&x| x == 0));
    }

    #[test]
    fn sg_copies_span_buffers() {
        let mut sg: SgList = [IoBuf::zeroed(3), IoBuf::zeroed(5)].into_iter().collect();
        assert_eq!(sg_copy_in(&mut sg, 2, b"abcdef"), 6);
        let mut out = [0u8; 8];
        assert_eq!(sg_copy_out(&sg, 0, &mut out), 8);
        assert_eq!(&out, b"\0\0abcdef");
        assert_eq!(sg_len(&sg), 8);
    }
}
