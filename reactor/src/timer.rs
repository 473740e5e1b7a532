//! Per-reactor timers: one-shot and periodic callbacks ordered by deadline.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Identifies a timer so that it can be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

enum Callback {
    Once(Box<dyn FnOnce()>),
    /// Called every period while it returns `true`.
    Every(Duration, Rc<dyn Fn() -> bool>),
}

/// Timers of one reactor. Cancelled timers leave a stale heap entry that is skipped.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    callbacks: HashMap<u64, Callback>,
    /// Periodic timers cancelled while their callback was running.
    cancelled: std::collections::HashSet<u64>,
    /// The periodic timer whose callback is running (only it can be cancelled "in flight"; a
    /// cancel of a timer that already ran, or stopped itself, must leave nothing behind).
    running: Option<u64>,
    next: u64,
}

impl Timers {
    pub(crate) fn once(&mut self, at: Instant, f: Box<dyn FnOnce()>) -> TimerId {
        self.insert(at, Callback::Once(f))
    }

    pub(crate) fn every(&mut self, period: Duration, f: Rc<dyn Fn() -> bool>) -> TimerId {
        self.insert(Instant::now() + period, Callback::Every(period, f))
    }

    fn insert(&mut self, at: Instant, cb: Callback) -> TimerId {
        self.next += 1;
        self.heap.push(Reverse((at, self.next)));
        self.callbacks.insert(self.next, cb);
        TimerId(self.next)
    }

    pub(crate) fn cancel(&mut self, id: TimerId) {
        if self.callbacks.remove(&id.0).is_none() && self.running == Some(id.0) {
            self.cancelled.insert(id.0);
        }
    }

    /// The earliest live deadline.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if self.callbacks.contains_key(&id) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// Pops one expired timer; the caller runs it without holding the `Timers` borrow.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<Expired> {
        loop {
            let Reverse((at, id)) = *self.heap.peek()?;
            if at > now {
                return None;
            }
            self.heap.pop();
            match self.callbacks.remove(&id) {
                None => continue,
                Some(Callback::Once(f)) => return Some(Expired::Once(f)),
                Some(Callback::Every(period, f)) => {
                    self.running = Some(id);
                    return Some(Expired::Every { id, period, f });
                }
            }
        }
    }

    /// Re-arms a periodic timer after it ran (unless it was cancelled meanwhile).
    pub(crate) fn rearm(&mut self, id: u64, period: Duration, f: Rc<dyn Fn() -> bool>) {
        self.running = None;
        if self.cancelled.remove(&id) {
            return;
        }
        self.heap.push(Reverse((Instant::now() + period, id)));
        self.callbacks.insert(id, Callback::Every(period, f));
    }

    /// A periodic timer's callback returned `false`: it is over.
    pub(crate) fn stopped(&mut self, id: u64) {
        self.running = None;
        self.cancelled.remove(&id);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.callbacks.is_empty()
    }
}

/// An expired timer, taken out of the set to be run.
pub(crate) enum Expired {
    Once(Box<dyn FnOnce()>),
    Every {
        id: u64,
        period: Duration,
        f: Rc<dyn Fn() -> bool>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancelling_finished_timers_leaves_nothing_behind() {
        let mut t = Timers::default();
        let now = Instant::now();
        let once = t.once(now, Box::new(|| {}));
        let every = t.every(Duration::ZERO, Rc::new(|| false));
        let later = now + Duration::from_secs(1);
        for _ in 0..2 {
            match t.pop_expired(later) {
                Some(Expired::Once(f)) => f(),
                Some(Expired::Every { id, f, .. }) => {
                    assert!(!f());
                    t.stopped(id);
                }
                None => panic!("two timers are due"),
            }
        }
        t.cancel(once);
        t.cancel(every);
        assert!(
            t.cancelled.is_empty(),
            "ids of finished timers are not kept"
        );
        // A periodic timer cancelled from its own callback is not re-armed.
        let p = t.every(Duration::ZERO, Rc::new(|| true));
        let Some(Expired::Every { id, period, f }) = t.pop_expired(later) else {
            panic!("due")
        };
        t.cancel(p);
        t.rearm(id, period, f);
        assert!(t.is_empty() && t.cancelled.is_empty());
    }
}
