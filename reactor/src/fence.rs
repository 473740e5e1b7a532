//! Streaming (non-temporal) stores and the fence that must follow them.
//!
//! The RAM disk writes with streaming stores (`malloc.rs`). x86-64 does not order them with
//! the thread's later stores, so an `sfence` must come between them and anything that lets
//! another party see the data: here, the completion of the write. Fencing after every write
//! cost the nexus a tenth of its write rate over NVMe/TCP (a nexus write is two RAM writes
//! back to back, and every store after the fence waited for the first copy to reach memory;
//! docs/PERFORMANCE.md). Writes therefore only note that a fence is owed, and the reactor
//! fences once before it delivers the pass's completions (completions of synchronous devices
//! are always delivered on a later pass, `Reactor::complete_io`), and before a read of the RAM
//! disk on the same thread.

use std::cell::Cell;

/// A fence owed by this reactor's thread.
#[derive(Debug, Default)]
pub(crate) struct StoreFence {
    owed: Cell<bool>,
}

impl StoreFence {
    /// Records that streaming stores were issued on this thread.
    #[inline]
    pub(crate) fn owe(&self) {
        self.owed.set(true);
    }

    /// Fences if streaming stores were issued since the last fence.
    #[inline]
    pub(crate) fn settle(&self) {
        if self.owed.replace(false) {
            fence();
        }
    }
}

#[inline]
fn fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `sfence` has no preconditions; it orders every earlier store of this thread,
    // streaming ones included, before every later one.
    unsafe {
        std::arch::x86_64::_mm_sfence();
    }
    #[cfg(not(target_arch = "x86_64"))]
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_is_owed_until_settled_and_only_once() {
        let f = StoreFence::default();
        assert!(!f.owed.get());
        f.owe();
        f.owe();
        assert!(f.owed.get());
        f.settle();
        assert!(!f.owed.get());
        f.settle();
        assert!(!f.owed.get());
    }
}
