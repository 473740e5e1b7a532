//! The thread-safe side of a reactor: the state other threads share with it and the handle
//! that sends it messages.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::Sender;

use super::{Message, ReactorStats};

/// State shared between a reactor and the handles that message it.
pub(super) struct Shared {
    pub(super) index: usize,
    pub(super) core: Option<usize>,
    pub(super) sleeping: AtomicBool,
    pub(super) stop: AtomicBool,
    pub(super) eventfd: OwnedFd,
    pub(super) stats: ReactorStats,
}

impl Shared {
    pub(super) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local to an eventfd this struct owns. A failure
        // (counter overflow) still leaves the eventfd readable, which is all a wake-up needs.
        let _ = unsafe { libc::write(self.eventfd.as_raw_fd(), (&raw const one).cast(), 8) };
    }
}

/// A `Send` handle to a reactor, used to run code on it from any thread.
#[derive(Clone)]
pub struct ReactorHandle {
    pub(super) tx: Sender<Message>,
    pub(super) shared: Arc<Shared>,
}

impl ReactorHandle {
    /// Runs `f` on the reactor's thread. Returns `false` if the reactor has stopped.
    pub fn send(&self, f: impl FnOnce() + Send + 'static) -> bool {
        if self.tx.send(Box::new(f)).is_err() {
            return false;
        }
        // Pairs with the SeqCst store of `sleeping` before the reactor checks its queue.
        if self.shared.sleeping.load(Ordering::SeqCst) {
            self.shared.wake();
        }
        true
    }

    /// Runs `f` on the reactor and waits for its result (control path only: never call it from
    /// the same reactor). `None` if the reactor has stopped.
    pub fn call<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if !self.send(move || {
            let _ = tx.send(f());
        }) {
            return None;
        }
        rx.recv().ok()
    }

    /// Asks the reactor to leave its loop after the current pass.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
    }

    /// The reactor's index in its set (0 for the first core of the mask).
    pub fn index(&self) -> usize {
        self.shared.index
    }

    /// The core the reactor is pinned to, if pinning succeeded.
    pub fn core(&self) -> Option<usize> {
        self.shared.core
    }

    /// The reactor's counters.
    pub fn stats(&self) -> &ReactorStats {
        &self.shared.stats
    }
}
