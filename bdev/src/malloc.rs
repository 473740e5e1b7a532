//! `malloc`: a RAM disk backed by an anonymous memory mapping.
//!
//! Reads and writes are copies done on the submitting reactor (writes with streaming stores on
//! x86-64, see `copy_to_disk`, fenced once per reactor pass); completions are delivered on the
//! next pass of its loop. Write zeroes and unmap both zero the blocks (unmapped blocks read
//! back as zeroes), flush does nothing.

use std::rc::Rc;
use std::sync::Arc;

use memmap2::MmapMut;
use uuid::Uuid;

use crate::reactor::Reactor;
use crate::{
    Bdev, BdevChannel, BdevError, BdevInfo, BdevIo, IoFlags, IoSink, IoType, SizeKey,
    valid_block_size,
};

/// A RAM-backed block device.
pub struct MallocBdev {
    info: BdevInfo,
    /// Its size may change ([`MallocBdev::resize`]), never past `map`.
    size_key: SizeKey,
    map: MmapMut,
    /// Start of `map`, kept as an address so channels on several reactors can copy in and out.
    base: usize,
}

impl std::fmt::Debug for MallocBdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MallocBdev")
            .field("info", &self.info)
            .finish()
    }
}

/// Faults in every page of a new RAM disk now, on the caller's thread (an RPC or the start-up
/// configuration), rather than on the reactor at the first write to each page: with huge pages
/// advised, a first write there allocates (and may compact memory for) 2 MiB while every
/// connection of the reactor waits. Measured on a fresh 512 MiB disk while the machine was
/// compiling: 134 and 102 4 KiB random writes per second (256 ms average latency) until the
/// pages were in, against 135k afterwards (2026-12-06, `hack/bench-lvol.sh`'s base rows). SPDK
/// zeroes its RAM disks at creation too.
fn populate(map: &mut MmapMut) {
    #[cfg(target_os = "linux")]
    if map.advise(memmap2::Advice::PopulateWrite).is_ok() {
        return;
    }
    // Before Linux 5.14: touch one byte per page (the mapping is zeroed, so writing 0 changes
    // nothing).
    for i in (0..map.len()).step_by(4096) {
        map[i] = 0;
    }
}

/// `MemAvailable` from `/proc/meminfo`, in bytes (`None` where there is no such file).
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

impl MallocBdev {
    /// Creates a RAM disk of `num_blocks` blocks of `block_size` bytes, its memory allocated
    /// and faulted in now; a size beyond the memory available is refused.
    pub fn create(
        name: &str,
        uuid: Option<Uuid>,
        num_blocks: u64,
        block_size: u32,
    ) -> Result<Arc<MallocBdev>, BdevError> {
        if !valid_block_size(block_size) {
            return Err(BdevError::Invalid(format!(
                "block size {block_size} is not supported (512 or 4096)"
            )));
        }
        let size = num_blocks
            .checked_mul(u64::from(block_size))
            .and_then(|s| usize::try_from(s).ok())
            .filter(|&s| s > 0)
            .ok_or_else(|| BdevError::Invalid(format!("invalid size: {num_blocks} blocks")))?;
        if let Some(avail) = available_memory()
            && size as u64 > avail
        {
            return Err(BdevError::Invalid(format!(
                "a RAM disk of {size} bytes does not fit in the {avail} bytes of memory available"
            )));
        }
        let mut map = MmapMut::map_anon(size)?;
        // Random 4 KiB copies out of a large mapping miss the TLB on every I/O; transparent huge
        // pages (where the kernel allows them for advised mappings) save about 80 ns per copy
        // here (docs/PERFORMANCE.md). Only a hint: without it the disk works the same.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        populate(&mut map);
        let base = map.as_mut_ptr() as usize;
        let (info, size_key) =
            BdevInfo::new_resizable(name, uuid, block_size, num_blocks, "Malloc disk");
        Ok(Arc::new(MallocBdev {
            info,
            size_key,
            map,
            base,
        }))
    }

    /// Changes the disk's size to `num_blocks`, at most the size it was created with (its
    /// memory stays; blocks past a smaller size keep their data). Returns the old size.
    ///
    /// # Errors
    /// [`BdevError::Invalid`] for 0 blocks or more than the disk's memory holds.
    pub fn resize(&self, num_blocks: u64) -> Result<u64, BdevError> {
        let bytes = num_blocks.checked_mul(u64::from(self.info.block_size));
        if num_blocks == 0 || bytes.is_none_or(|b| b > self.map.len() as u64) {
            return Err(BdevError::Invalid(format!(
                "RAM disk {}: {num_blocks} blocks is not between 1 and its {} bytes",
                self.info.name,
                self.map.len()
            )));
        }
        self.info.resize(&self.size_key, num_blocks)
    }

    /// The request's byte range in the mapping, `(offset, length)`, with the length covering
    /// its buffers too. Checked here, not only by `IoChannel` against the size: the copies
    /// below are raw, and a channel made by `Bdev::create_channel` directly is not checked.
    fn byte_range(&self, io: &BdevIo) -> Result<(usize, usize), BdevError> {
        let out = || BdevError::OutOfRange {
            offset: io.offset_blocks,
            count: io.num_blocks,
            capacity: self.map.len() as u64 / u64::from(self.info.block_size),
        };
        let bs = u64::from(self.info.block_size);
        let off = io
            .offset_blocks
            .checked_mul(bs)
            .and_then(|o| usize::try_from(o).ok())
            .ok_or_else(out)?;
        let len = io
            .num_blocks
            .checked_mul(bs)
            .and_then(|l| usize::try_from(l).ok())
            .ok_or_else(out)?;
        let bufs = io.bufs.iter().map(|b| b.len()).sum::<usize>();
        if off
            .checked_add(len.max(bufs))
            .is_none_or(|end| end > self.map.len())
        {
            return Err(out());
        }
        Ok((off, len))
    }

    fn execute(&self, io: &mut BdevIo, reactor: &Reactor) -> Result<(), BdevError> {
        let (mut off, len) = self.byte_range(io)?;
        match io.io_type {
            IoType::Read => {
                // This thread's own streaming stores are fenced before it reads them back.
                reactor.settle_store_fence();
                for b in io.bufs.iter_mut() {
                    let n = b.len();
                    // SAFETY: `off + n` lies within the mapping (`byte_range` checked the
                    // offset plus every buffer's length); `b` is a distinct allocation.
                    // Concurrent writes to the same blocks from another reactor race on plain
                    // bytes exactly as on a disk: the content is unspecified, nothing else is.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            (self.base + off) as *const u8,
                            b.as_mut_ptr(),
                            n,
                        );
                    }
                    off += n;
                }
            }
            IoType::Write => {
                for b in io.bufs.iter() {
                    let src = b.as_slice();
                    // SAFETY: as for reads, with the copy in the other direction.
                    unsafe { copy_to_disk(src, (self.base + off) as *mut u8) };
                    off += src.len();
                }
                // The streaming stores are fenced by the reactor before the completion (which
                // `MallocChannel::submit` queues) is delivered: one fence per pass, not per
                // write (`reactor/fence.rs`).
                reactor.owe_store_fence();
            }
            IoType::WriteZeroes | IoType::Unmap => {
                reactor.settle_store_fence();
                // SAFETY: `off + len` lies within the mapping (`byte_range`).
                unsafe { std::ptr::write_bytes((self.base + off) as *mut u8, 0, len) };
            }
            IoType::Flush => {}
        }
        Ok(())
    }
}

/// Copies `src` to `dst` with streaming (non-temporal) stores where the CPU has them and the
/// destination is 64-byte aligned: a write to a random place of a large RAM disk then costs no
/// read of the lines it overwrites, and does not push the caller's working set out of the cache.
///
/// # Safety
/// `dst..dst + src.len()` must be valid for writes and not overlap `src`.
unsafe fn copy_to_disk(src: &[u8], dst: *mut u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        if (dst as usize).is_multiple_of(64) && src.len().is_multiple_of(64) {
            let mut i = 0;
            while i < src.len() {
                #[expect(
                    clippy::cast_ptr_alignment,
                    reason = "unaligned loads; the stores' alignment is checked above"
                )]
                // SAFETY: `i + 64 <= len`: the loads read `src`, the stores write `dst`, both in
                // range (caller), `dst + i` is 16-byte aligned (64-byte aligned base, i % 64 == 0).
                unsafe {
                    let s = src.as_ptr().add(i).cast::<__m128i>();
                    let d = dst.add(i).cast::<__m128i>();
                    let (a, b, c, e) = (
                        _mm_loadu_si128(s),
                        _mm_loadu_si128(s.add(1)),
                        _mm_loadu_si128(s.add(2)),
                        _mm_loadu_si128(s.add(3)),
                    );
                    _mm_stream_si128(d, a);
                    _mm_stream_si128(d.add(1), b);
                    _mm_stream_si128(d.add(2), c);
                    _mm_stream_si128(d.add(3), e);
                }
                i += 64;
            }
            return;
        }
    }
    // SAFETY: the caller's contract.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
}

impl Bdev for MallocBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn supports(&self, _io_type: IoType) -> bool {
        true
    }

    fn supports_flags(&self, io_type: IoType, flags: IoFlags) -> bool {
        // FUA only: RAM is this device's medium, so every completed write is as durable as it gets.
        flags == IoFlags::FUA
            && matches!(io_type, IoType::Read | IoType::Write | IoType::WriteZeroes)
    }

    fn create_channel(
        self: Arc<Self>,
        reactor: &Reactor,
    ) -> Result<Box<dyn BdevChannel>, BdevError> {
        Ok(Box::new(MallocChannel {
            reactor: reactor.clone(),
            dev: self,
        }))
    }
}

struct MallocChannel {
    reactor: Reactor,
    dev: Arc<MallocBdev>,
}

impl BdevChannel for MallocChannel {
    fn submit(&self, mut io: BdevIo, sink: Rc<dyn IoSink>, tag: u64) {
        let r = self.dev.execute(&mut io, &self.reactor);
        // Always through the loop: the fence owed by a write comes before its completion.
        self.reactor.complete_io(sink, tag, io, r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IoBuf, SgList};
    use std::cell::RefCell;

    struct Got(RefCell<Vec<Result<(), BdevError>>>);

    impl IoSink for Got {
        fn io_done(&self, _tag: u64, _io: BdevIo, r: Result<(), BdevError>) {
            self.0.borrow_mut().push(r);
        }
    }

    /// A channel made by `Bdev::create_channel` directly (no `IoChannel` checks in front of
    /// it), and a disk whose size its owner changed: a request past the memory fails, in
    /// release builds too, and never reaches the raw copies.
    #[test]
    fn requests_past_the_memory_fail_without_the_channel_checks() {
        let m = MallocBdev::create("raw", None, 8, 512).unwrap();
        assert!(m.resize(9).is_err(), "grown past its memory");
        assert!(m.resize(0).is_err());
        assert_eq!(m.resize(4).unwrap(), 8);
        assert_eq!(m.resize(8).unwrap(), 4);
        let r = Reactor::new(0, None, crate::reactor::ReactorConfig::default()).unwrap();
        let chan = m.clone().create_channel(&r).unwrap();
        let got = Rc::new(Got(RefCell::new(Vec::new())));
        let buf = |n: usize| SgList::from_buf([IoBuf::zeroed(n)]);
        let ios = [
            BdevIo::read(8, 1, buf(512)),
            BdevIo::read(7, 1, buf(1024)),
            BdevIo::write(6, 4, buf(2048)),
            BdevIo::write_zeroes(4, 5),
            BdevIo::read(u64::MAX / 256, 1, buf(512)),
            BdevIo::read(7, 1, buf(512)),
        ];
        let n = ios.len();
        for io in ios {
            chan.submit(io, got.clone(), 0);
        }
        r.run_until(std::time::Duration::from_secs(5), || {
            got.0.borrow().len() == n
        });
        let got = got.0.borrow();
        assert_eq!(got.len(), n);
        for r in &got[..n - 1] {
            assert!(matches!(r, Err(BdevError::OutOfRange { .. })), "{r:?}");
        }
        assert!(got[n - 1].is_ok());
    }

    #[test]
    fn a_disk_larger_than_memory_is_refused_and_a_new_one_is_resident() {
        // 1 PiB: no machine running these tests has it.
        let err = MallocBdev::create("huge", None, 1 << 38, 4096).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
        let m = MallocBdev::create("small", None, 2048, 4096).unwrap();
        // Faulted in at creation: `mincore` reports every page resident.
        let pages = m.map.len() / 4096;
        let mut vec = vec![0u8; pages];
        // SAFETY: the mapping is page-aligned and `vec` has one byte per page of it.
        let rc = unsafe {
            libc::mincore(
                m.map.as_ptr() as *mut libc::c_void,
                m.map.len(),
                vec.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0);
        assert!(
            vec.iter().all(|&b| b & 1 == 1),
            "pages not resident after create"
        );
    }
}
