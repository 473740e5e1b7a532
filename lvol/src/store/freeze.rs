//! Freezing a volume's I/O on the home reactor, for the operations that change which clusters
//! back it or whether it may change (a snapshot moves its clusters to the snapshot, a merge
//! gives it the snapshot's, making it read-only waits out its writes in flight, a
//! decoupling changes its parent).
//!
//! [`freeze`] sets each volume's `frozen` flag, waits out a process-wide barrier, takes every
//! channel's `started` count and then waits until each channel's `finished` has caught up and
//! no cluster of the volumes is being allocated. An I/O submitted after the flag is seen is
//! held by its channel (counted finished) and asks the home, by message, to answer when the
//! volume thaws ([`when_thawed`]); [`thaw`] answers them all, and they go on against the
//! volume as changed. The same pairing as the freeing of clusters (see `channel.rs`): either
//! the home's count includes an I/O, or that I/O sees the flag. So every write is wholly
//! before the change or wholly after it.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use uuid::Uuid;

use super::home::{Done, Home};
use crate::LvolError;
use crate::state::ChanCounters;

/// How often the home checks whether the frozen volumes' I/O has drained.
const POLL: Duration = Duration::from_micros(200);

/// Freezes `vols` and calls `then` once none of their I/O is in flight.
pub(crate) fn freeze(h: &Rc<RefCell<Home>>, vols: &[Uuid], then: Done) {
    let mut points: Vec<(Arc<ChanCounters>, u64)> = Vec::new();
    {
        let mut hm = h.borrow_mut();
        for u in vols {
            hm.frozen.entry(*u).or_default();
            if let Some(sh) = hm.lvs.lvol_shared(u) {
                sh.frozen.store(true, Ordering::Release);
            }
        }
        // After the barrier, an I/O not counted below sees the flag (see `channel.rs`).
        if !shoal_reactor::process_barrier() {
            std::sync::atomic::fence(Ordering::SeqCst);
        }
        for u in vols {
            if let Some(sh) = hm.lvs.lvol_shared(u) {
                points.extend(sh.quiesce_point());
            }
        }
    }
    wait_drained(h.clone(), vols.to_vec(), points, then);
}

fn wait_drained(
    h: Rc<RefCell<Home>>,
    vols: Vec<Uuid>,
    points: Vec<(Arc<ChanCounters>, u64)>,
    then: Done,
) {
    let drained = points
        .iter()
        .all(|(c, s)| c.finished.load(Ordering::Acquire) >= *s)
        && !h.borrow().allocating.keys().any(|(u, _)| vols.contains(u));
    if drained {
        return then(Ok(()));
    }
    let reactor = h.borrow().reactor.clone();
    reactor.call_after(POLL, move || wait_drained(h, vols, points, then));
}

/// Lets the I/O of `vols` go on.
pub(crate) fn thaw(h: &Rc<RefCell<Home>>, vols: &[Uuid]) {
    let mut waiters = Vec::new();
    {
        let mut hm = h.borrow_mut();
        for u in vols {
            if let Some(sh) = hm.lvs.lvol_shared(u) {
                sh.frozen.store(false, Ordering::Release);
            }
            if let Some(w) = hm.frozen.remove(u) {
                waiters.extend(w);
            }
        }
    }
    for w in waiters {
        w(Ok(()));
    }
}

/// Calls `done` once volume `lvol` is not frozen (at once if it is not).
pub(crate) fn when_thawed(h: &Rc<RefCell<Home>>, lvol: Uuid, done: Done) {
    let mut hm = h.borrow_mut();
    match hm.frozen.get_mut(&lvol) {
        Some(w) => w.push(done),
        None => {
            if hm.lvs.lvol_shared(&lvol).is_none() {
                let e = LvolError::NotFound(format!("volume {lvol} was deleted"));
                hm.reactor.defer(move || done(Err(e)));
            } else {
                hm.reactor.defer(move || done(Ok(())));
            }
        }
    }
}
