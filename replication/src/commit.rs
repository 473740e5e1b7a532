//! Recording the in-sync set in the children's metadata, for the control path: the label
//! a child carries ([`label_for`]), the control path's context ([`Ctx`]: the nexus and its
//! channels to the children on the home reactor) with its label writes, the fault of a child,
//! and [`Ctx::commit`], which writes a new generation ([`next_generation`]) before the in-sync
//! set changes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use shoal_bdev::{BdevError, IoChannel, open_channel};
use uuid::Uuid;

use crate::NexusError;
use crate::exec::{self, LocalFuture};
use crate::label::Label;
use crate::nexus::{Nexus, State};
use crate::persist;
use crate::routing::{ChildShared, Role, slot_bit};
use crate::state::{ChildState, FaultReason};

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
    pub(crate) fn fault_locked(
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

/// The generation after `g`; an error at the end of the range (reached only from a label that
/// was corrupt or crafted: see [`crate::label::MAX_GENERATION`]).
pub(crate) fn next_generation(g: u64) -> Result<u64, NexusError> {
    g.checked_add(1).ok_or_else(|| {
        NexusError::Invalid(format!("the metadata generation {g} cannot be advanced"))
    })
}
