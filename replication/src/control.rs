//! The control task of a nexus: one task on the home reactor that applies child state changes
//! one at a time (faults reported by the I/O path, operator requests, rebuild outcomes) and
//! records them in the children's metadata before they take effect where it matters.
//!
//! Rules it keeps:
//! * every state change goes through the transition table ([`ChildState::can_become`]);
//! * when the set of in-sync children shrinks, a new generation is written to the remaining
//!   ones before `online_mask` drops the child (host writes that failed on it wait for that);
//! * when a rebuilt child joins, its label says `in_sync` at a new generation before it serves
//!   reads;
//! * the state mutex is never held across an `await`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shoal_bdev::{BdevError, IoChannel, open_channel};
use uuid::Uuid;

use crate::dirty::DirtyMap;
use crate::exec::{self, LocalFuture, Reply};
use crate::guard::{Departed, busy_reason};
use crate::label::Label;
use crate::nexus::{ChildSpec, Nexus};
use crate::persist::{self, LabelRead};
use crate::rebuild::ctl::RebuildCtl;
use crate::rebuild::{self, RebuildOutcome, RebuildSummary};
use crate::routing::{ChildShared, MAX_CHILDREN, Role, Route, slot_bit};
use crate::state::{ChildState, FaultReason};
use crate::{ChildUri, NexusError};

/// How long `destroy` waits for rebuild tasks to notice they must stop.
pub(crate) const STOP_WAIT: Duration = Duration::from_secs(30);

/// A request to the control task.
pub(crate) enum Op {
    /// The I/O path saw an I/O fail on a child.
    Failed {
        slot: usize,
        child: u64,
        reason: FaultReason,
    },
    Fault {
        uri: ChildUri,
        reply: Reply<Result<(), NexusError>>,
    },
    Add {
        spec: ChildSpec,
        reply: Reply<Result<(), NexusError>>,
    },
    Remove {
        uri: ChildUri,
        reply: Reply<Result<(), NexusError>>,
    },
    StopRebuild {
        uri: ChildUri,
        reply: Reply<Result<(), NexusError>>,
    },
    RebuildEnded {
        slot: usize,
        child: u64,
        outcome: RebuildOutcome,
        summary: RebuildSummary,
    },
    Destroy {
        reply: Reply<Result<(), NexusError>>,
    },
    Resize {
        size_bytes: u64,
        reply: Reply<Result<(), NexusError>>,
    },
}

/// One child as the control path knows it.
pub(crate) struct ChildEntry {
    pub slot: usize,
    pub uri: ChildUri,
    pub shared: Arc<ChildShared>,
    pub state: ChildState,
    pub replica: Uuid,
    pub rebuild: Option<Arc<RebuildCtl>>,
    pub last_rebuild: Option<RebuildSummary>,
}

/// The control state of a nexus (under its mutex; read by `status`).
pub(crate) struct State {
    pub volume: Uuid,
    pub generation: u64,
    pub children: Vec<ChildEntry>,
    /// Removed children with I/Os given up after a timeout still out, or a rebuild still
    /// stopping: the same child cannot come back (and be rebuilt) until those are over, or old
    /// data could land after the new copy.
    pub departed: Vec<Departed>,
    pub destroying: bool,
}

impl State {
    fn index_of(&self, uri: &ChildUri) -> Result<usize, NexusError> {
        self.children
            .iter()
            .position(|c| c.uri == *uri)
            .ok_or_else(|| NexusError::NoSuchChild(uri.to_string()))
    }

    fn online_count(&self) -> usize {
        self.children
            .iter()
            .filter(|c| c.state == ChildState::Online)
            .count()
    }

    /// Moves child `idx` to `to` if the transition table allows it.
    pub(crate) fn transition(
        &mut self,
        idx: usize,
        to: ChildState,
    ) -> Result<ChildState, NexusError> {
        let Some(c) = self.children.get_mut(idx) else {
            return Err(NexusError::Invalid(format!("no child at index {idx}")));
        };
        let from = c.state;
        if !from.can_become(to) {
            return Err(NexusError::InvalidTransition {
                uri: c.uri.to_string(),
                from,
                to,
            });
        }
        c.state = to;
        Ok(from)
    }
}

/// The label a child of `nx` carries.
pub(crate) fn label_for(
    nx: &Nexus,
    volume: Uuid,
    replica: Uuid,
    generation: u64,
    in_sync: bool,
    clean: bool,
) -> Label {
    Label {
        volume_uuid: volume,
        replica_uuid: replica,
        generation,
        in_sync,
        clean,
        block_size: nx.geo.block_size,
        data_offset_blocks: nx.geo.meta_blocks,
        data_blocks: nx.label_blocks.load(Ordering::Acquire),
    }
}

/// The control task's context: the nexus and its channels to the children (home reactor).
pub(crate) struct Ctx {
    pub nx: Arc<Nexus>,
    chans: RefCell<HashMap<u64, Rc<IoChannel>>>,
}

impl Ctx {
    pub(crate) fn new(nx: Arc<Nexus>) -> Ctx {
        Ctx {
            nx,
            chans: RefCell::default(),
        }
    }

    /// A channel to `child` on the home reactor (opened once per child).
    pub(crate) fn chan(&self, child: &ChildShared) -> Result<Rc<IoChannel>, BdevError> {
        if let Some(c) = self.chans.borrow().get(&child.id) {
            return Ok(c.clone());
        }
        let c = Rc::new(open_channel(&child.bdev)?);
        self.chans.borrow_mut().insert(child.id, c.clone());
        Ok(c)
    }

    /// Writes `labels` concurrently; the result of each.
    pub(crate) async fn write_labels(
        &self,
        labels: &[(Arc<ChildShared>, Label)],
    ) -> Vec<Result<(), BdevError>> {
        let bs = self.nx.geo.block_size;
        let futs: Vec<LocalFuture<'_, Result<(), BdevError>>> = labels
            .iter()
            .map(|(child, label)| -> LocalFuture<'_, Result<(), BdevError>> {
                let chan = self.chan(child);
                let t = self.nx.io_timeout;
                Box::pin(async move { persist::write_label(child, &*chan?, bs, label, t).await })
            })
            .collect();
        exec::join_all(futs).await
    }

    /// Faults child `idx` (state, routing, rebuild); returns its previous state.
    fn fault_locked(
        &self,
        st: &mut State,
        idx: usize,
        reason: FaultReason,
    ) -> Result<ChildState, NexusError> {
        let from = st.transition(idx, ChildState::Faulted(reason))?;
        if let Some(c) = st.children.get(idx) {
            // It leaves the write path: what it acknowledged since its last flush may be only
            // in its volatile cache, and a power cut loses it. Those writes lie in the regions
            // the write-intent bitmap marks (or is clearing): a re-add (the same replica UUID,
            // so a partial rebuild) must copy them again. Without a bitmap: every segment.
            // (Rebuild copies not flushed yet are marked by the rebuild task as it ends.)
            if matches!(from, ChildState::Online | ChildState::Rebuilding) {
                self.nx.intent.mark_unflushed(&c.shared.dirty);
            }
            if let Some(ctl) = &c.rebuild {
                ctl.stop.store(true, Ordering::Release);
            }
            let slot = c.slot;
            self.nx.publish(|r| r.set_role(slot, Role::Track));
            tracing::warn!(nexus = %self.nx.info.name, child = %c.uri, "child faulted ({reason})");
        }
        Ok(from)
    }

    /// Records the in-sync set in the metadata at a new generation: every online child (and
    /// `promote`, which becomes online) gets `in_sync`. A child whose write fails is faulted
    /// and the write repeated without it. Sets `online_mask` once it sticks.
    pub(crate) async fn commit(
        &self,
        mut promote: Option<usize>,
        clean: bool,
    ) -> Result<(), NexusError> {
        let promote_asked = promote;
        loop {
            let labels = {
                let mut st = self.nx.lock_state();
                let targets: Vec<(usize, Arc<ChildShared>, Uuid)> = st
                    .children
                    .iter()
                    .filter(|c| c.state == ChildState::Online || Some(c.slot) == promote)
                    .map(|c| (c.slot, c.shared.clone(), c.replica))
                    .collect();
                if targets.is_empty() {
                    self.nx.online_mask.store(0, Ordering::SeqCst);
                    return Err(NexusError::Faulted);
                }
                st.generation = next_generation(st.generation)?;
                let g = st.generation;
                let v = st.volume;
                let labels: Vec<(usize, Arc<ChildShared>, Label)> = targets
                    .into_iter()
                    .map(|(slot, sh, replica)| {
                        (slot, sh, label_for(&self.nx, v, replica, g, true, clean))
                    })
                    .collect();
                labels
            };
            let pairs: Vec<(Arc<ChildShared>, Label)> =
                labels.iter().map(|(_, c, l)| (c.clone(), *l)).collect();
            let results = self.write_labels(&pairs).await;
            let mut st = self.nx.lock_state();
            let mut failed = false;
            for ((slot, child, _), r) in labels.iter().zip(results) {
                if let Err(e) = r {
                    failed = true;
                    tracing::warn!(nexus = %self.nx.info.name, slot, "metadata write failed: {e}");
                    if let Some(idx) = st.children.iter().position(|c| c.shared.id == child.id)
                        && !matches!(st.children[idx].state, ChildState::Faulted(_))
                    {
                        let _ = self.fault_locked(&mut st, idx, FaultReason::MetadataError);
                    }
                    if promote == Some(*slot) {
                        promote = None;
                    }
                }
            }
            if failed {
                continue;
            }
            // A promoted child that failed an I/O meanwhile (the I/O path took it out of the
            // routing; its fault is queued) does not join. Its label now says `in_sync` at this
            // generation, and its fault will not write another (it was never online): so the
            // generation is written again without it, and the online children's newer label
            // is what a restart trusts.
            if let Some(p) = promote
                && !self
                    .nx
                    .routing()
                    .route(p)
                    .is_some_and(|r| r.role == Role::Write)
            {
                tracing::warn!(
                    nexus = %self.nx.info.name,
                    slot = p,
                    "rebuilt child failed before it joined; recording the in-sync set again"
                );
                promote = None;
                continue;
            }
            let mut mask = 0u64;
            for (slot, _, _) in &labels {
                if promote == Some(*slot) || Some(*slot) != promote_asked {
                    mask |= slot_bit(*slot);
                }
            }
            if let Some(p) = promote
                && let Some(idx) = st.children.iter().position(|c| c.slot == p)
            {
                st.transition(idx, ChildState::Online)?;
            }
            self.nx.online_mask.store(mask, Ordering::SeqCst);
            // The bitmap follows the labels to the new generation (see `intent::task`).
            self.nx.intent.wake.notify();
            if let Some(p) = promote {
                self.nx.publish(|r| {
                    if r.route(p).is_some_and(|rt| rt.role == Role::Write) {
                        r.set_role(p, Role::Read);
                    }
                });
            }
            return if mask == 0 {
                Err(NexusError::Faulted)
            } else {
                Ok(())
            };
        }
    }
}

/// The control task: applies ops until the nexus is destroyed.
pub(crate) async fn run(ctx: Ctx) {
    loop {
        let op = ctx
            .nx
            .ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        let Some(op) = op else {
            ctx.nx.wake.wait().await;
            continue;
        };
        let destroyed = matches!(op, Op::Destroy { .. });
        apply(&ctx, op).await;
        if destroyed {
            break;
        }
    }
    // Answer whatever came in meanwhile.
    let rest: Vec<Op> = ctx
        .nx
        .ops
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    for op in rest {
        match op {
            Op::Fault { reply, .. }
            | Op::Add { reply, .. }
            | Op::Remove { reply, .. }
            | Op::StopRebuild { reply, .. }
            | Op::Destroy { reply }
            | Op::Resize { reply, .. } => reply.send(Err(NexusError::Destroyed)),
            Op::Failed { .. } | Op::RebuildEnded { .. } => {}
        }
    }
}

async fn apply(ctx: &Ctx, op: Op) {
    match op {
        Op::Failed {
            slot,
            child,
            reason,
        } => {
            let was = {
                let mut st = ctx.nx.lock_state();
                let idx = st
                    .children
                    .iter()
                    .position(|c| c.slot == slot && c.shared.id == child);
                match idx {
                    Some(i)
                        if matches!(
                            st.children[i].state,
                            ChildState::Online | ChildState::Rebuilding
                        ) =>
                    {
                        ctx.fault_locked(&mut st, i, reason).ok()
                    }
                    _ => None,
                }
            };
            if was == Some(ChildState::Online) {
                log_commit(ctx, ctx.commit(None, false).await);
            }
        }
        Op::Fault { uri, reply } => reply.send(fault(ctx, &uri).await),
        Op::Add { spec, reply } => reply.send(add(ctx, spec).await),
        Op::Remove { uri, reply } => reply.send(remove(ctx, &uri).await),
        Op::StopRebuild { uri, reply } => {
            let r = {
                let mut st = ctx.nx.lock_state();
                st.index_of(&uri).and_then(|i| {
                    if st.children[i].state != ChildState::Rebuilding
                        || st.children[i].rebuild.is_none()
                    {
                        return Err(NexusError::NoRebuild(uri.to_string()));
                    }
                    ctx.fault_locked(&mut st, i, FaultReason::RebuildStopped)
                        .map(|_| ())
                })
            };
            reply.send(r);
        }
        Op::RebuildEnded {
            slot,
            child,
            outcome,
            summary,
        } => {
            let state = {
                let mut st = ctx.nx.lock_state();
                let Some(i) = st
                    .children
                    .iter()
                    .position(|c| c.slot == slot && c.shared.id == child)
                else {
                    return;
                };
                st.children[i].rebuild = None;
                st.children[i].last_rebuild = Some(summary);
                if outcome == RebuildOutcome::Failed
                    && st.children[i].state == ChildState::Rebuilding
                {
                    let _ = ctx.fault_locked(&mut st, i, FaultReason::IoError);
                }
                st.children[i].state
            };
            if outcome == RebuildOutcome::Completed && state == ChildState::Rebuilding {
                log_commit(ctx, ctx.commit(Some(slot), false).await);
            }
        }
        Op::Destroy { reply } => reply.send(crate::destroy::destroy(ctx).await),
        Op::Resize { size_bytes, reply } => {
            reply.send(crate::resize::resize(ctx, size_bytes).await);
        }
    }
}

fn log_commit(ctx: &Ctx, r: Result<(), NexusError>) {
    if let Err(e) = r {
        tracing::error!(nexus = %ctx.nx.info.name, "{e}");
    }
}

async fn fault(ctx: &Ctx, uri: &ChildUri) -> Result<(), NexusError> {
    let was = {
        let mut st = ctx.nx.lock_state();
        let i = st.index_of(uri)?;
        if st.children[i].state == ChildState::Online && st.online_count() == 1 {
            return Err(NexusError::LastHealthyChild(uri.to_string()));
        }
        ctx.fault_locked(&mut st, i, FaultReason::Admin)?
    };
    if was == ChildState::Online {
        ctx.commit(None, false).await?;
    }
    Ok(())
}

/// Checks that `spec` can be a child of `nx`.
pub(crate) fn check_child(nx: &Nexus, spec: &ChildSpec) -> Result<(), NexusError> {
    crate::create::check_spec(&nx.geo_now(), (nx.write_zeroes, nx.unmap), spec)
}

/// The generation after `g`; an error at the end of the range (reached only from a label that
/// was corrupt or crafted: see [`crate::label::MAX_GENERATION`]).
pub(crate) fn next_generation(g: u64) -> Result<u64, NexusError> {
    g.checked_add(1).ok_or_else(|| {
        NexusError::Invalid(format!("the metadata generation {g} cannot be advanced"))
    })
}

async fn add(ctx: &Ctx, spec: ChildSpec) -> Result<(), NexusError> {
    let nx = &ctx.nx;
    check_child(nx, &spec)?;
    let uri = spec.uri.to_string();
    // Host writes still in flight settle first: a leg one of them sent to this child before
    // its fault is then either back or given up and counted, and the check below sees it.
    nx.gate.barrier().await;
    // What is there now: a faulted child of this URI comes back, anything else is refused.
    let (existing, volume) = {
        let mut st = nx.lock_state();
        if st.online_count() == 0 {
            return Err(NexusError::Faulted);
        }
        st.departed.retain(|d| d.busy().is_some());
        if let Some(reason) = st
            .departed
            .iter()
            .find(|d| d.uri == spec.uri)
            .and_then(Departed::busy)
        {
            return Err(NexusError::Busy {
                uri,
                reason: format!("{reason} (it was removed)"),
            });
        }
        let existing = match st.children.iter().position(|c| c.uri == spec.uri) {
            Some(i) => {
                let c = &st.children[i];
                if !matches!(c.state, ChildState::Faulted(_)) {
                    return Err(NexusError::ChildExists(uri));
                }
                if let Some(reason) = busy_reason(&c.shared, c.rebuild.as_ref()) {
                    return Err(NexusError::Busy { uri, reason });
                }
                Some((c.slot, c.replica, c.shared.dirty.clone()))
            }
            None if st.children.len() >= MAX_CHILDREN => {
                return Err(NexusError::Invalid(format!(
                    "a nexus has at most {MAX_CHILDREN} children"
                )));
            }
            None => None,
        };
        (existing, st.volume)
    };
    let probe = Arc::new(ChildShared {
        id: nx.next_child_id(),
        bdev: spec.bdev.clone(),
        local: spec.local,
        dirty: existing.as_ref().map_or_else(
            || Arc::new(DirtyMap::new(nx.geo_now().segments, true)),
            |e| e.2.clone(),
        ),
        abandoned: AtomicU64::new(0),
    });
    let chan = ctx.chan(&probe).map_err(|e| NexusError::Open {
        uri: uri.clone(),
        reason: e.to_string(),
    })?;
    let found = persist::read_label(&chan, nx.geo.block_size, nx.io_timeout)
        .await
        .map_err(|e| NexusError::Open {
            uri: uri.clone(),
            reason: format!("reading its metadata: {e}"),
        })?;
    let mut full = existing.is_none();
    let mut replica = existing.as_ref().map_or_else(Uuid::new_v4, |e| e.1);
    match found {
        LabelRead::Found(l) if l.volume_uuid != volume => {
            return Err(NexusError::ForeignChild {
                uri,
                found: l.volume_uuid,
                expected: volume,
            });
        }
        // Above the bound and above anything this nexus wrote: not a label a nexus wrote.
        LabelRead::Found(l)
            if l.generation > crate::label::MAX_GENERATION
                && l.generation > nx.lock_state().generation =>
        {
            return Err(NexusError::Open {
                uri,
                reason: format!(
                    "its metadata has generation {}, beyond any a nexus writes (corrupt?)",
                    l.generation
                ),
            });
        }
        LabelRead::Found(l) => {
            if l.replica_uuid != replica {
                // Another replica behind the same URI: it did not see our writes.
                full = true;
                replica = l.replica_uuid;
            }
            // Our generation must be above any the child carries.
            let behind = {
                let mut st = nx.lock_state();
                let behind = l.generation >= st.generation;
                if behind {
                    st.generation = l.generation;
                }
                behind
            };
            if behind {
                ctx.commit(None, false).await?;
            }
        }
        LabelRead::Blank => full = true,
        LabelRead::Unreadable(why) => {
            return Err(NexusError::Open {
                uri,
                reason: format!("its metadata cannot be read ({why}); wipe it to reuse it"),
            });
        }
    }
    if full {
        probe.dirty.set_all();
    }
    // Enter the state machine, write the child's label (not in sync), then let writes reach it.
    let (idx, generation) = {
        let mut st = nx.lock_state();
        let idx = match existing {
            Some((slot, ..)) => {
                let i = st
                    .children
                    .iter()
                    .position(|c| c.slot == slot)
                    .ok_or(NexusError::Destroyed)?;
                st.transition(i, ChildState::Rebuilding)?;
                st.children[i].shared = probe.clone();
                st.children[i].replica = replica;
                i
            }
            None => {
                let used: u64 = st.children.iter().fold(0, |m, c| m | slot_bit(c.slot));
                let routing = nx.routing();
                let slot = (0..MAX_CHILDREN)
                    .find(|&s| used & slot_bit(s) == 0 && routing.route(s).is_none())
                    .ok_or_else(|| NexusError::Invalid("no free child slot".into()))?;
                st.children.push(ChildEntry {
                    slot,
                    uri: spec.uri.clone(),
                    shared: probe.clone(),
                    state: ChildState::Init,
                    replica,
                    rebuild: None,
                    last_rebuild: None,
                });
                let i = st.children.len() - 1;
                st.transition(i, ChildState::Rebuilding)?;
                i
            }
        };
        (idx, st.generation)
    };
    let label = label_for(nx, volume, replica, generation, false, false);
    if let Err(e) =
        persist::write_label(&probe, &chan, nx.geo.block_size, &label, nx.io_timeout).await
    {
        let mut st = nx.lock_state();
        let slot = st.children[idx].slot;
        let _ = st.transition(idx, ChildState::Faulted(FaultReason::MetadataError));
        nx.publish(|r| {
            r.set(
                slot,
                Some(Route {
                    child: probe.clone(),
                    role: Role::Track,
                }),
            )
        });
        return Err(NexusError::MetadataIo {
            uri,
            reason: FaultReason::MetadataError,
            source: e,
        });
    }
    let slot = nx.lock_state().children[idx].slot;
    nx.publish(|r| {
        r.set(
            slot,
            Some(Route {
                child: probe.clone(),
                role: Role::Write,
            }),
        )
    });
    nx.gate.barrier().await;
    let mut st = nx.lock_state();
    if st
        .children
        .get(idx)
        .is_some_and(|c| c.state == ChildState::Rebuilding && c.shared.id == probe.id)
    {
        rebuild::start(nx, &mut st, idx);
        tracing::info!(nexus = %nx.info.name, child = %uri, full, "rebuild started");
    }
    Ok(())
}

async fn remove(ctx: &Ctx, uri: &ChildUri) -> Result<(), NexusError> {
    let nx = &ctx.nx;
    let (slot, was) = {
        let mut st = nx.lock_state();
        let i = st.index_of(uri)?;
        if st.children[i].state == ChildState::Online && st.online_count() == 1 {
            return Err(NexusError::LastHealthyChild(uri.to_string()));
        }
        if let Some(ctl) = &st.children[i].rebuild {
            ctl.stop.store(true, Ordering::Release);
        }
        let was = st.transition(i, ChildState::Closed)?;
        (st.children[i].slot, was)
    };
    nx.publish(|r| r.set(slot, None));
    nx.gate.barrier().await;
    if was == ChildState::Online {
        log_commit(ctx, ctx.commit(None, false).await);
    }
    let mut st = nx.lock_state();
    if let Some(c) = st.children.iter().find(|c| c.slot == slot)
        && busy_reason(&c.shared, c.rebuild.as_ref()).is_some()
    {
        let d = Departed {
            uri: c.uri.clone(),
            shared: c.shared.clone(),
            rebuild: c.rebuild.clone(),
        };
        st.departed.push(d);
    }
    st.children.retain(|c| c.slot != slot);
    tracing::info!(nexus = %nx.info.name, child = %uri, "child removed");
    Ok(())
}
