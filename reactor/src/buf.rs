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
//!
//! A buffer can be *shared* ([`IoBuf::share`]): the copies point to the same memory, which is
//! read-only while more than one of them exists and returns to the pool when the last one is
//! dropped. This is how one write's data goes to several devices (a nexus's children) or is
//! queued on a socket while its request still holds it, without copying. Asking a shared
//! buffer for mutable access takes the memory back if it is the last copy and otherwise copies
//! it first (copy on write), so a `&mut [u8]` never aliases another buffer.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::Arc;

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

/// A scatter-gather list: the buffers of one I/O, in order. One buffer is kept inline (every
/// I/O path of Shoal uses one buffer per command; more spill to the heap): a `BdevIo` is moved
/// a dozen times per I/O through channels, the nexus and deferred completions, and with four
/// inline buffers those 136-byte copies were a visible share of the I/O path (56 bytes now;
/// `cargo bench -p shoal-replication --bench nexus`: null bdev reads 10-13M -> 16M per second).
pub type SgList = SmallVec<[IoBuf; 1]>;

/// An aligned, initialised buffer with a length (bytes in use) and a capacity.
pub struct IoBuf {
    mem: Mem,
    len: usize,
}

/// Where an [`IoBuf`]'s bytes live.
enum Mem {
    /// An allocation this buffer alone owns.
    Owned { ptr: NonNull<u8>, cap: usize },
    /// An allocation shared with other buffers (read-only while shared).
    Shared(Arc<SharedMem>),
}

/// The memory of shared buffers; released (to the pool of the thread that drops the last
/// buffer) when the last one goes.
struct SharedMem {
    ptr: NonNull<u8>,
    cap: usize,
}

impl Drop for SharedMem {
    fn drop(&mut self) {
        // A recycled handle (see `Pool::handles`) owns no memory: capacity 0.
        if self.cap != 0 {
            release(self.ptr, self.cap);
        }
    }
}

// SAFETY: an owned `IoBuf` uniquely owns its allocation (like a `Box<[u8]>`), so moving it to
// another thread is sound. A shared one only reads memory that no buffer may write while it is
// shared (mutable access first makes the buffer unique, see `IoBuf::make_unique`), and the
// memory's lifetime is the `Arc`'s. Either returns to the pool of whichever thread drops it.
unsafe impl Send for IoBuf {}
// SAFETY: shared references only give out `&[u8]`, which is `Sync`.
unsafe impl Sync for IoBuf {}
// SAFETY: `SharedMem` owns its allocation and gives no access to it by itself; `IoBuf` only
// reads through it (see above).
unsafe impl Send for SharedMem {}
// SAFETY: as for `Send`: no access is given through `&SharedMem` but reads.
unsafe impl Sync for SharedMem {}

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
    /// Shared-memory handles whose buffers are gone, each the only reference to its
    /// allocation and owning no memory (capacity 0): `IoBuf::share` reuses them instead of
    /// allocating an `Arc` for every write a nexus sends to a second child.
    handles: Vec<Arc<SharedMem>>,
}

/// Handles kept per thread for reuse.
const POOLED_HANDLES: usize = 1024;

impl Pool {
    const fn new() -> Self {
        Pool {
            free: [const { Vec::new() }; NUM_CLASSES],
            handles: Vec::new(),
        }
    }
}

/// A handle for shared memory `(ptr, cap)`: a recycled one if this thread has one.
fn shared_handle(ptr: NonNull<u8>, cap: usize) -> Arc<SharedMem> {
    let recycled = POOL
        .try_with(|p| p.borrow_mut().handles.pop())
        .ok()
        .flatten();
    if let Some(mut h) = recycled {
        // Pooled handles are unique (see `recycle_handle`), so this always succeeds.
        if let Some(m) = Arc::get_mut(&mut h) {
            m.ptr = ptr;
            m.cap = cap;
            return h;
        }
    }
    Arc::new(SharedMem { ptr, cap })
}

/// Takes the memory out of `h` if it is the last reference to it, and keeps the empty handle
/// for reuse: the memory is the caller's now. Otherwise gives `h` back untouched.
fn recycle_handle(mut h: Arc<SharedMem>) -> Result<(NonNull<u8>, usize), Arc<SharedMem>> {
    // A plain load first: `Arc::get_mut` is a locked compare-and-swap, wasted on the common
    // case of a copy that is not the last.
    if Arc::strong_count(&h) != 1 {
        return Err(h);
    }
    let Some(m) = Arc::get_mut(&mut h) else {
        return Err(h);
    };
    let taken = (m.ptr, m.cap);
    m.cap = 0;
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.handles.len() < POOLED_HANDLES {
            p.handles.push(h);
        }
    });
    Ok(taken)
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
                return IoBuf {
                    mem: Mem::Owned { ptr, cap },
                    len: 0,
                };
            }
        }
        // SAFETY: `layout(cap)` has a non-zero size (cap >= MIN_CLASS or > MAX_POOLED).
        let raw = unsafe { alloc::alloc_zeroed(layout(cap)) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout(cap));
        };
        IoBuf {
            mem: Mem::Owned { ptr, cap },
            len: 0,
        }
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
        self.parts().1
    }

    /// Sets the length. Every byte below the capacity is initialised, so any length up to the
    /// capacity is sound; a larger one is clamped to the capacity.
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.capacity());
    }

    fn parts(&self) -> (NonNull<u8>, usize) {
        match &self.mem {
            Mem::Owned { ptr, cap } => (*ptr, *cap),
            Mem::Shared(m) => (m.ptr, m.cap),
        }
    }

    /// The bytes in use.
    pub fn as_slice(&self) -> &[u8] {
        let (ptr, _) = self.parts();
        // SAFETY: `ptr` points to `cap` initialised bytes that live as long as `self` (owned, or
        // kept by the `Arc`), `len <= cap`, and no `&mut` to them exists while `self` can be
        // read (owned: borrow rules; shared: mutable access makes the buffer unique first).
        unsafe { std::slice::from_raw_parts(ptr.as_ptr(), self.len) }
    }

    /// Raw pointer to the start, for handing to the kernel as the source of a write or send.
    /// Only to be read through; the buffer must stay alive until the kernel is done with it.
    pub fn as_ptr(&self) -> *const u8 {
        self.parts().0.as_ptr()
    }

    /// Makes this the only buffer pointing to its memory: takes a shared allocation back if no
    /// other buffer has it any more, copies it otherwise. Owned buffers are left alone.
    fn make_unique(&mut self) -> (NonNull<u8>, usize) {
        if matches!(&self.mem, Mem::Shared(m) if Arc::strong_count(m) == 1) {
            // The last copy (no other can appear: we hold the only reference): the memory
            // becomes this buffer's, the handle goes back to the pool. The placeholder is
            // overwritten at once, whatever `recycle_handle` answers.
            let placeholder = Mem::Owned {
                ptr: NonNull::dangling(),
                cap: 0,
            };
            if let Mem::Shared(arc) = std::mem::replace(&mut self.mem, placeholder) {
                self.mem = match recycle_handle(arc) {
                    Ok((ptr, cap)) => Mem::Owned { ptr, cap },
                    Err(arc) => Mem::Shared(arc),
                };
            }
        }
        if let Mem::Shared(m) = &self.mem {
            // Other copies use the memory: this one takes a copy of its own.
            let mut fresh = IoBuf::with_capacity(m.cap);
            fresh.len = self.len;
            let (dst, _) = fresh.parts();
            // SAFETY: both allocations hold at least `len` initialised bytes and are distinct;
            // the shared one is only read, the fresh one is owned by `fresh`.
            unsafe {
                std::ptr::copy_nonoverlapping(m.ptr.as_ptr(), dst.as_ptr(), self.len);
            }
            // Drops this copy's reference to the shared memory.
            *self = fresh;
        }
        self.parts()
    }

    /// The bytes in use, mutably (copies a shared buffer first unless it is the last copy).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let (ptr, _) = self.make_unique();
        // SAFETY: as in `as_slice`; the memory is now owned by `self` alone and `&mut self`
        // guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), self.len) }
    }

    /// The whole capacity, mutably (for filling before `set_len`; unique as in `as_mut_slice`).
    pub fn full_mut(&mut self) -> &mut [u8] {
        let (ptr, cap) = self.make_unique();
        // SAFETY: `cap` bytes are allocated and initialised; they are owned by `self` alone and
        // `&mut self` gives exclusivity.
        unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), cap) }
    }

    /// Raw pointer to the start, for handing to the kernel as a destination (unique as in
    /// `as_mut_slice`). The buffer must stay alive and unmoved-from (it is a heap allocation,
    /// so moving the `IoBuf` itself is fine) until the kernel is done with it.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.make_unique().0.as_ptr()
    }

    /// Another buffer with the same bytes and length, sharing the memory (no copy). Both are
    /// read-only while both exist: mutable access to either copies it first.
    pub fn share(&mut self) -> IoBuf {
        if let Mem::Owned { ptr, cap } = self.mem {
            self.mem = Mem::Shared(shared_handle(ptr, cap));
        }
        let Mem::Shared(m) = &self.mem else {
            unreachable!()
        };
        IoBuf {
            mem: Mem::Shared(m.clone()),
            len: self.len,
        }
    }

    /// Whether other buffers share this one's memory now.
    pub fn is_shared(&self) -> bool {
        matches!(&self.mem, Mem::Shared(m) if Arc::strong_count(m) > 1)
    }
}

/// Returns an allocation of `cap` bytes to this thread's pool, or frees it.
fn release(ptr: NonNull<u8>, cap: usize) {
    if let Some(c) = class_of(cap).filter(|&c| MIN_CLASS << c == cap) {
        let keep = POOL_BYTES_PER_CLASS / cap;
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
    // SAFETY: allocated in `IoBuf::with_capacity` with `layout(cap)`; the caller owned it alone.
    unsafe { alloc::dealloc(ptr.as_ptr(), layout(cap)) };
}

impl Drop for IoBuf {
    fn drop(&mut self) {
        match &self.mem {
            Mem::Owned { ptr, cap } => release(*ptr, *cap),
            // The last buffer of shared memory releases it and keeps the handle for reuse.
            Mem::Shared(h) if Arc::strong_count(h) == 1 => {
                let empty = Mem::Owned {
                    ptr: NonNull::dangling(),
                    cap: 0,
                };
                if let Mem::Shared(h) = std::mem::replace(&mut self.mem, empty)
                    && let Ok((ptr, cap)) = recycle_handle(h)
                {
                    release(ptr, cap);
                }
            }
            // Any other just drops its reference (and if that turns out to be the last one,
            // racing another thread, `SharedMem::drop` releases the memory).
            Mem::Shared(_) => {}
        }
    }
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoBuf")
            .field("len", &self.len)
            .field("cap", &self.capacity())
            .field("shared", &self.is_shared())
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
    fn stays_three_words() {
        assert_eq!(
            std::mem::size_of::<IoBuf>(),
            3 * std::mem::size_of::<usize>()
        );
        // And an I/O, moved many times per request, stays within a cache line.
        assert!(std::mem::size_of::<crate::io::BdevIo>() <= 64);
    }

    #[test]
    fn shared_buffers_copy_on_write() {
        let mut a = IoBuf::copy_from(b"hello");
        let p = a.as_ptr();
        let mut b = a.share();
        assert!(a.is_shared() && b.is_shared());
        assert_eq!(b.as_ptr(), p, "no copy");
        assert_eq!(b.as_slice(), b"hello");
        // Writing to one while the other exists copies it; the other keeps the old bytes.
        b.as_mut_slice()[0] = b'j';
        assert_ne!(b.as_ptr(), p);
        assert_eq!(a.as_slice(), b"hello");
        assert_eq!(b.as_slice(), b"jello");
        assert!(!a.is_shared() && !b.is_shared());
        // The last copy takes its memory back without copying.
        a.as_mut_slice()[4] = b'!';
        assert_eq!(a.as_ptr(), p);
        assert_eq!(a.as_slice(), b"hell!");
    }

    #[test]
    fn shared_memory_returns_to_the_pool_with_the_last_copy() {
        let mut a = IoBuf::with_capacity(8192);
        a.set_len(8192);
        let p = a.as_ptr() as usize;
        let b = a.share();
        let c = std::thread::spawn(move || b.as_slice().len())
            .join()
            .unwrap();
        assert_eq!(c, 8192);
        drop(a);
        let d = IoBuf::with_capacity(8192);
        assert_eq!(
            d.as_ptr() as usize,
            p,
            "the memory was released once, to this pool"
        );
    }

    fn handle_of(b: &IoBuf) -> usize {
        match &b.mem {
            Mem::Shared(m) => Arc::as_ptr(m) as usize,
            Mem::Owned { .. } => 0,
        }
    }

    #[test]
    fn shared_memory_handles_are_reused_and_hold_no_memory_in_the_pool() {
        let mut a = IoBuf::with_capacity(4096);
        a.set_len(4096);
        let mem = a.as_ptr() as usize;
        let b = a.share();
        let h = handle_of(&a);
        assert_ne!(h, 0);
        assert_eq!(handle_of(&b), h);
        let pooled = || POOL.with(|p| p.borrow().handles.len());
        let before = pooled();
        drop(b);
        assert_eq!(pooled(), before, "another copy still uses the handle");
        drop(a);
        assert_eq!(pooled(), before + 1, "the last copy pools the handle");
        // The memory went back to the buffer pool (not to the handle), the handle to its own.
        let mut c = IoBuf::with_capacity(4096);
        assert_eq!(c.as_ptr() as usize, mem);
        c.set_len(4096);
        let d = c.share();
        assert_eq!(pooled(), before, "share takes a pooled handle");
        assert_eq!(handle_of(&c), h, "the handle is reused: no allocation");
        assert_eq!(d.as_ptr() as usize, mem);
        assert_eq!(d.as_slice().len(), 4096);
        // The last copy taking its memory back also returns the handle.
        drop(d);
        let p = c.as_mut_slice().as_ptr() as usize;
        assert_eq!(p, mem, "no copy for the last one");
        assert_eq!(handle_of(&c), 0);
        let mut e = IoBuf::with_capacity(4096);
        e.set_len(1);
        let _f = e.share();
        assert_eq!(handle_of(&e), h);
    }

    #[test]
    fn aligned_and_recycled() {
        let a = IoBuf::with_capacity(4096);
        let p = a.as_ptr() as usize;
        assert_eq!(p % IO_ALIGN, 0);
        drop(a);
        let b = IoBuf::with_capacity(3000);
        assert_eq!(
            b.as_ptr() as usize,
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
