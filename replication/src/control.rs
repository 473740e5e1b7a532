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
//!
//! Here: the task's loop and the operations it applies itself (a fault, adding and removing a
//! child, a rebuild's end); it hands destroy and growth to [`crate::destroy`] and
//! [`crate::resize`]. What it changes (the control state, its requests `Op`) is in
//! [`crate::nexus`]; its context and the metadata writes that record a change
//! ([`Ctx::commit`]) are in [`crate::commit`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

use crate::commit::{Ctx, label_for};
use crate::dirty::DirtyMap;
use crate::guard::{Departed, busy_reason};
use crate::nexus::{ChildEntry, Nexus, Op};
use crate::persist::{self, LabelRead};
use crate::rebuild::{self, RebuildOutcome};
use crate::routing::{ChildShared, MAX_CHILDREN, Role, Route, slot_bit};
use crate::state::{ChildState, FaultReason};
use crate::types::{ChildSpec, check_spec};
use crate::{ChildUri, NexusError};

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
    check_spec(&nx.geo_now(), (nx.write_zeroes, nx.unmap), spec)
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
