//! The intent task: the one writer of the bitmap, on the nexus's home reactor. It persists
//! the regions writes wait for, and every cleaning period clears the regions nobody wrote
//! (see the rules in [`super`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use shoal_bdev::{BdevError, IoChannel, open_channel};

use crate::exec::{self, LocalFuture};
use crate::nexus::Nexus;
use crate::routing::{ChildShared, Role, slots};
use crate::state::{ChildState, FaultReason};

/// How long a failed bitmap write waits before it is tried again.
const RETRY: Duration = Duration::from_millis(10);

/// Runs until the nexus is destroyed.
pub(crate) async fn run(nx: Arc<Nexus>) {
    let mut chans: HashMap<u64, Rc<IoChannel>> = HashMap::new();
    let period = nx.intent.clean_period;
    let mut next_clean = Instant::now() + period;
    // The generation the children's bitmaps were last written at. Whenever the labels move to
    // a new generation (creation, a child faulted, removed or joining), the bitmap is written
    // again at it, to every child then in the write path: a restart trusts only a bitmap of
    // its labels' generation, so a joining child is covered from then on, and a bitmap left
    // by another life (or by this one before a change) is not mistaken for a complete one.
    let mut written_at = None;
    loop {
        let (destroying, generation) = {
            let st = nx.lock_state();
            (st.destroying, st.generation)
        };
        if destroying {
            break;
        }
        let dirty_disk = written_at != Some(generation);
        let mut want = nx.intent.take_wanted();
        let mut words = nx.intent.snapshot();
        // A parked write asks again each time it is retried: only new regions count.
        for (w, m) in want.iter_mut().zip(&words) {
            *w &= !m;
        }
        if want.iter().any(|&w| w != 0) || dirty_disk {
            for (m, w) in words.iter_mut().zip(&want) {
                *m |= w;
            }
            if persist(&nx, &mut chans, &words, generation).await {
                nx.intent.set_marked(&want);
                written_at = Some(generation);
            } else {
                // No child took it (the nexus is failing): the writes stay parked until the
                // faults are recorded and they fail, or a child comes back.
                nx.intent.put_back(&want);
                exec::sleep(RETRY).await;
            }
            continue;
        }
        let now = Instant::now();
        if now >= next_clean {
            clean(&nx, &mut chans, generation).await;
            next_clean = Instant::now() + period;
            continue;
        }
        let until = (nx.intent.marked_regions() > 0).then(|| next_clean - now);
        wait(&nx, until).await;
    }
    nx.intent.stopped.store(true, Ordering::Release);
}

/// Waits for a wake-up, or `until` passes.
async fn wait(nx: &Nexus, until: Option<Duration>) {
    let Some(d) = until else {
        return nx.intent.wake.wait().await;
    };
    let mut woken = pin!(nx.intent.wake.wait());
    let mut slept = pin!(exec::sleep(d));
    std::future::poll_fn(|cx| {
        if woken.as_mut().poll(cx).is_ready() || slept.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        Poll::Pending
    })
    .await;
}

/// Clears the regions written by nobody during the last period: in memory, then a barrier
/// for writes that saw them set, a flush of every child, and the bitmap without them.
async fn clean(nx: &Arc<Nexus>, chans: &mut HashMap<u64, Rc<IoChannel>>, generation: u64) {
    let cleared = nx.intent.clear_untouched();
    let n: u32 = cleared.iter().map(|w| w.count_ones()).sum();
    if n == 0 {
        return;
    }
    nx.gate.barrier().await;
    let targets = targets(nx);
    let futs: Vec<LocalFuture<'_, Result<(), BdevError>>> = targets
        .iter()
        .map(|(_, child)| -> LocalFuture<'_, Result<(), BdevError>> {
            let chan = chan(chans, child);
            let t = nx.io_timeout;
            Box::pin(async move { crate::persist::flush(&*chan?, t).await })
        })
        .collect();
    let results = exec::join_all(futs).await;
    let mut flushed = true;
    for ((slot, child), r) in targets.iter().zip(results) {
        if let Err(e) = r {
            flushed = false;
            tracing::warn!(nexus = %nx.info.name, slot, "flush before clearing the write-intent bitmap failed: {e}");
            nx.child_failed(*slot, child.id, FaultReason::IoError);
        }
    }
    if !flushed {
        // Not every child has the regions' writes durably: they stay marked, in memory too
        // (a later bitmap write must not clear them on disk without a flush).
        nx.intent.set_marked(&cleared);
        nx.intent.cleaned(&cleared);
        return;
    }
    // A child that left the write path before the flush (its fault not yet applied by the
    // control task, which then marks what is still marked or being cleaned) was not flushed:
    // what it acknowledged into its cache in these regions may be gone.
    mark_tracked(nx, &cleared);
    nx.intent.cleaned(&cleared);
    let words = nx.intent.snapshot();
    if !persist(nx, chans, &words, generation).await {
        nx.intent.set_marked(&cleared);
    }
    tracing::debug!(nexus = %nx.info.name, cleared = n, "write-intent regions cleared");
}

/// Marks the regions `cleared` (words of region bits) in the dirty map of every child that
/// left the write path (its route tracks) while the control task has not applied its fault
/// yet: when it does, these regions are neither marked nor being cleaned any more.
fn mark_tracked(nx: &Nexus, cleared: &[u64]) {
    let r = nx.routing();
    let seg_bytes = nx
        .geo
        .seg_blocks
        .saturating_mul(u64::from(nx.geo.block_size));
    let regions = super::OnDisk {
        region_bytes: nx.intent.region_bytes,
        regions: nx.intent.regions,
        words: cleared.to_vec(),
    };
    let st = nx.lock_state();
    for c in &st.children {
        let pending = matches!(c.state, ChildState::Online | ChildState::Rebuilding)
            && r.route(c.slot)
                .is_some_and(|rt| rt.role == Role::Track && rt.child.id == c.shared.id);
        if pending {
            regions.mark(&c.shared.dirty, seg_bytes);
        }
    }
}

fn targets(nx: &Nexus) -> Vec<(usize, Arc<ChildShared>)> {
    let r = nx.routing();
    slots(r.write_mask)
        .filter_map(|s| r.route(s).map(|rt| (s, rt.child.clone())))
        .collect()
}

fn chan(
    chans: &mut HashMap<u64, Rc<IoChannel>>,
    child: &ChildShared,
) -> Result<Rc<IoChannel>, BdevError> {
    if let Some(c) = chans.get(&child.id) {
        return Ok(c.clone());
    }
    let c = Rc::new(open_channel(&child.bdev)?);
    chans.insert(child.id, c.clone());
    Ok(c)
}

/// Writes `words` to every child in the write path; faults those that fail. True if at least
/// one child has it (the others are out of the write path from now on).
async fn persist(
    nx: &Nexus,
    chans: &mut HashMap<u64, Rc<IoChannel>>,
    words: &[u64],
    generation: u64,
) -> bool {
    let targets = targets(nx);
    if targets.is_empty() {
        return false;
    }
    let stamp = super::Stamp {
        volume: nx.info.uuid,
        generation,
    };
    let geo = (stamp, nx.geo.block_size);
    let futs: Vec<LocalFuture<'_, Result<(), BdevError>>> = targets
        .iter()
        .map(|(_, child)| -> LocalFuture<'_, Result<(), BdevError>> {
            let chan = chan(chans, child);
            let t = nx.io_timeout;
            let map = &nx.intent;
            Box::pin(async move { super::write(child, &*chan?, map, geo, words, t).await })
        })
        .collect();
    let results = exec::join_all(futs).await;
    nx.intent.writes.fetch_add(1, Ordering::Relaxed);
    let mut any = false;
    for ((slot, child), r) in targets.iter().zip(results) {
        match r {
            Ok(()) => any = true,
            Err(e) => {
                tracing::warn!(nexus = %nx.info.name, slot, "write-intent bitmap write failed: {e}");
                // A write the child failed or did not answer, as a host write's leg would.
                let reason = match e {
                    BdevError::TimedOut => FaultReason::TimedOut,
                    _ => FaultReason::IoError,
                };
                nx.child_failed(*slot, child.id, reason);
            }
        }
    }
    any
}
