//! The nexus's core: [`Nexus`], the state it holds, and what every operation on it uses.
//!
//! The nexus is a block device that mirrors its writes to its children and reads from one: a
//! [`Bdev`](shoal_bdev::Bdev) (implemented with the I/O path, [`crate::io`]) that can be
//! exported with `nvmf_subsystem_add_ns` like any other.
//!
//! This module is the lower layer of the crate: it holds the struct and its
//! state (the control state [`State`] and its [`ChildEntry`]s, the queue of [`Op`]s to the
//! control task, the [`Pause`] state), the primitives every operation shares (the state lock,
//! routing snapshots and their publication, reporting a failed child, queueing a request),
//! the public control-path calls that only queue a request or read the state, and
//! `nexus_get`'s view ([`NexusStatus`]). Every control-path operation runs on the nexus's
//! *home reactor* and answers through a [`Ticket`].
//!
//! It uses only the modules below it (`types`, `state`, `routing`, `gate`, `order`, `exec`,
//! `guard`, the bitmap of [`crate::intent`] and the rebuilds' state in `rebuild::ctl`); the
//! operations use it and it uses none of them: creation ([`crate::create`]), the control task
//! ([`crate::control`], with [`crate::commit`], [`crate::destroy`] and [`crate::resize`]),
//! the rebuild tasks ([`crate::rebuild`]), the pause ([`crate::pause`]), the write-intent task
//! (`intent::task`) and the I/O path.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shoal_bdev::{BdevInfo, SizeKey};
use shoal_reactor::ReactorHandle;
use uuid::Uuid;

use crate::exec::{Reply, Signal, Ticket, ticket};
use crate::gate::Gate;
use crate::guard::Departed;
use crate::intent::IntentMap;
use crate::order::WriteOrder;
use crate::rebuild::ctl::{
    Limiter, RebuildCtl, RebuildOutcome, RebuildRate, RebuildStatus, RebuildSummary,
};
use crate::routing::{ChildShared, Role, Routing};
use crate::state::{ChildState, FaultReason, NexusState};
use crate::types::{ChildSpec, Geometry};
use crate::{ChildUri, NexusError};

/// A child as `nexus_get` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildStatus {
    /// Its URI.
    pub uri: String,
    /// Its state.
    pub state: ChildState,
    /// Why it is faulted.
    pub fault_reason: Option<FaultReason>,
    /// Rebuild progress, 0 to 100 (100 when online, 0 when faulted).
    pub rebuild_progress: u8,
    /// The running rebuild.
    pub rebuild: Option<RebuildStatus>,
    /// The last finished rebuild.
    pub last_rebuild: Option<RebuildSummary>,
    /// The replica's UUID (in its metadata).
    pub replica_uuid: Uuid,
    /// Segments that a rebuild would copy now.
    pub dirty_segments: u64,
}

/// A nexus as `nexus_get` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct NexusStatus {
    /// Bdev name.
    pub name: String,
    /// Volume UUID.
    pub uuid: Uuid,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Block size.
    pub block_size: u32,
    /// Online, degraded or faulted.
    pub state: NexusState,
    /// Metadata generation.
    pub generation: u64,
    /// Rebuild rate policy.
    pub rebuild_rate: RebuildRate,
    /// Children, in the order they were added.
    pub children: Vec<ChildStatus>,
    /// The write-intent bitmap (`None`: not kept).
    pub write_intent: Option<IntentStatus>,
}

/// The write-intent bitmap as `nexus_get` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntentStatus {
    /// Bytes per region.
    pub region_bytes: u64,
    /// Regions.
    pub regions: u64,
    /// Regions marked now (a crash would resynchronise them).
    pub marked_regions: u64,
    /// Bitmap writes made so far.
    pub bitmap_writes: u64,
}

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
    pub(crate) fn index_of(&self, uri: &ChildUri) -> Result<usize, NexusError> {
        self.children
            .iter()
            .position(|c| c.uri == *uri)
            .ok_or_else(|| NexusError::NoSuchChild(uri.to_string()))
    }

    pub(crate) fn online_count(&self) -> usize {
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

/// The pause state of one nexus.
#[derive(Debug, Default)]
pub(crate) struct Pause {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
pub(crate) struct Inner {
    /// The last generation handed out.
    pub generation: u64,
    /// The generation in force, if any.
    pub active: Option<u64>,
    /// Pauses that ended by their deadline.
    pub lapsed: u64,
}

impl Pause {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A replicated volume.
pub struct Nexus {
    pub(crate) info: BdevInfo,
    /// Grows `info` (`crate::resize`).
    pub(crate) size_key: SizeKey,
    /// The size the labels record, in blocks: ahead of `info` while a growth is being
    /// recorded (`crate::resize`), equal otherwise.
    pub(crate) label_blocks: AtomicU64,
    pub(crate) home: ReactorHandle,
    /// The geometry at creation; the size may have grown since (see [`Nexus::geo_now`]).
    pub(crate) geo: Geometry,
    pub(crate) io_timeout: Duration,
    pub(crate) write_zeroes: bool,
    pub(crate) unmap: bool,
    pub(crate) gate: Gate,
    /// Keeps overlapping writes in one order on every child.
    pub(crate) order: WriteOrder,
    routing: Mutex<Arc<Routing>>,
    pub(crate) epoch: AtomicU64,
    /// Children whose metadata says they are in sync now: a write is acknowledged only once
    /// the children it failed on are out of this mask.
    pub(crate) online_mask: AtomicU64,
    pub(crate) state: Mutex<State>,
    pub(crate) ops: Mutex<VecDeque<Op>>,
    pub(crate) wake: Signal,
    pub(crate) limiter: Limiter,
    /// The write-intent bitmap.
    pub(crate) intent: IntentMap,
    /// A pause of the host writes (module `pause`).
    pub(crate) pause: Pause,
    next_child_id: AtomicU64,
}

/// Set in the environment of a process (`SHOAL_TEST_UNORDERED_WRITES=1`), its nexuses start
/// without the write order: only for showing that the system tests fail without it.
fn unordered_for_tests() -> bool {
    let off = std::env::var_os("SHOAL_TEST_UNORDERED_WRITES").is_some_and(|v| v == "1");
    if off {
        tracing::warn!("SHOAL_TEST_UNORDERED_WRITES=1: overlapping writes are not ordered");
    }
    off
}

impl std::fmt::Debug for Nexus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nexus").field("info", &self.info).finish()
    }
}

impl Nexus {
    pub(crate) fn new(
        (info, size_key): (BdevInfo, SizeKey),
        home: ReactorHandle,
        geo: Geometry,
        io_timeout: Duration,
        caps: (bool, bool),
        state: State,
        intent: IntentMap,
    ) -> Nexus {
        let order = WriteOrder::new(info.block_size, !unordered_for_tests());
        Nexus {
            order,
            label_blocks: AtomicU64::new(info.num_blocks()),
            info,
            size_key,
            home,
            geo,
            io_timeout,
            write_zeroes: caps.0,
            unmap: caps.1,
            gate: Gate::default(),
            routing: Mutex::new(Arc::new(Routing::default())),
            epoch: AtomicU64::new(1),
            online_mask: AtomicU64::new(0),
            state: Mutex::new(state),
            ops: Mutex::new(VecDeque::new()),
            wake: Signal::default(),
            limiter: Limiter::default(),
            intent,
            pause: Pause::default(),
            next_child_id: AtomicU64::new(1),
        }
    }

    /// Turns the write order (module `order`) off or back on. Without it, overlapping writes
    /// in flight together may reach the children in different orders and leave them with
    /// different data: this exists only to measure what the order costs and to show that the
    /// tests see the difference. Writes already in flight keep the order they started with.
    #[doc(hidden)]
    pub fn set_write_order(&self, on: bool) {
        self.order.set_enabled(on);
    }

    /// The geometry at the size the labels record now (a growth included).
    pub(crate) fn geo_now(&self) -> Geometry {
        let data_blocks = self.label_blocks.load(Ordering::Acquire);
        Geometry {
            data_blocks,
            segments: data_blocks.div_ceil(self.geo.seg_blocks),
            ..self.geo
        }
    }

    /// Grows the nexus to `size_bytes` (a multiple of the block size, at least its size; the
    /// same size is a no-op). Every online child must hold the metadata region and the new
    /// size; none may be rebuilding. The new size is recorded in the children's labels (a new
    /// generation) before any I/O may reach past the old end; then the bdev grows and its
    /// watchers (the NVMe-oF subsystem: a Namespace Attribute Changed event) are told.
    pub fn resize(&self, size_bytes: u64) -> Ticket<Result<(), NexusError>> {
        self.request(|reply| Op::Resize { size_bytes, reply })
    }

    pub(crate) fn next_child_id(&self) -> u64 {
        self.next_child_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current routing snapshot.
    pub(crate) fn routing(&self) -> Arc<Routing> {
        self.routing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Publishes a change of the routing; channels pick it up on their next I/O.
    pub(crate) fn publish(&self, f: impl FnOnce(&mut Routing)) {
        let mut r = self.routing.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = Routing::clone(&r);
        f(&mut next);
        *r = Arc::new(next);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Called by the I/O path (any reactor) when an I/O failed on child `id` in `slot`: takes
    /// the child out of the I/O path at once (its writes are tracked from now on) and asks the
    /// control task to fault it. Later reports for the same child are ignored.
    pub(crate) fn child_failed(&self, slot: usize, id: u64, reason: FaultReason) {
        let mut r = self.routing.lock().unwrap_or_else(|e| e.into_inner());
        let live = r
            .route(slot)
            .is_some_and(|rt| rt.child.id == id && rt.role != Role::Track);
        if !live {
            return;
        }
        tracing::warn!(nexus = %self.info.name, slot, "child I/O failed ({reason}): faulting it");
        let mut next = Routing::clone(&r);
        next.set_role(slot, Role::Track);
        *r = Arc::new(next);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        drop(r);
        self.push_op(Op::Failed {
            slot,
            child: id,
            reason,
        });
    }

    pub(crate) fn push_op(&self, op: Op) {
        self.ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(op);
        self.wake.notify();
    }

    fn request(
        &self,
        make: impl FnOnce(crate::exec::Reply<Result<(), NexusError>>) -> Op,
    ) -> Ticket<Result<(), NexusError>> {
        if self.lock_state().destroying {
            return Ticket::ready(Err(NexusError::Destroyed));
        }
        let (reply, t) = ticket();
        self.push_op(make(reply));
        t
    }

    /// Adds a child and rebuilds it online; a child of the same URI that is faulted comes back
    /// with a partial rebuild (only the segments written while it was away), a new child is
    /// rebuilt in full. Answers once the rebuild has started.
    pub fn add_child(&self, spec: ChildSpec) -> Ticket<Result<(), NexusError>> {
        self.request(|reply| Op::Add { spec, reply })
    }

    /// Removes a child (refused for the last online one).
    pub fn remove_child(&self, uri: &ChildUri) -> Ticket<Result<(), NexusError>> {
        let uri = uri.clone();
        self.request(|reply| Op::Remove { uri, reply })
    }

    /// Faults a child on purpose (refused for the last online one).
    pub fn fault_child(&self, uri: &ChildUri) -> Ticket<Result<(), NexusError>> {
        let uri = uri.clone();
        self.request(|reply| Op::Fault { uri, reply })
    }

    /// Stops the rebuild of a child; the child becomes faulted (`rebuild_stopped`), with the
    /// segments not yet copied still dirty.
    pub fn stop_rebuild(&self, uri: &ChildUri) -> Ticket<Result<(), NexusError>> {
        let uri = uri.clone();
        self.request(|reply| Op::StopRebuild { uri, reply })
    }

    /// Pauses the rebuild of `uri`, or every rebuild of the nexus.
    pub fn pause_rebuild(&self, uri: Option<&ChildUri>) -> Result<(), NexusError> {
        self.set_paused(uri, true)
    }

    /// Resumes the rebuild of `uri`, or every rebuild of the nexus.
    pub fn resume_rebuild(&self, uri: Option<&ChildUri>) -> Result<(), NexusError> {
        self.set_paused(uri, false)
    }

    fn set_paused(&self, uri: Option<&ChildUri>, paused: bool) -> Result<(), NexusError> {
        let st = self.lock_state();
        let mut found = false;
        for c in &st.children {
            if uri.is_some_and(|u| *u != c.uri) {
                continue;
            }
            if let Some(ctl) = &c.rebuild {
                ctl.paused.store(paused, Ordering::Release);
                found = true;
            }
        }
        match uri {
            Some(u) if !found => {
                if st.children.iter().any(|c| c.uri == *u) {
                    Err(NexusError::NoRebuild(u.to_string()))
                } else {
                    Err(NexusError::NoSuchChild(u.to_string()))
                }
            }
            _ => Ok(()),
        }
    }

    /// Limits rebuild copies to `mib_per_sec` MiB/s (0: unlimited).
    pub fn set_rebuild_rate(&self, mib_per_sec: u64) {
        let rate = if mib_per_sec == 0 {
            RebuildRate::Unlimited
        } else {
            RebuildRate::Fixed { mib_per_sec }
        };
        self.limiter.set(rate);
    }

    /// Sets the rebuild rate policy.
    pub fn set_rebuild_rate_policy(&self, rate: RebuildRate) {
        self.limiter.set(rate);
    }

    /// Destroys the nexus in an orderly way: stops rebuilds, waits for host I/O, flushes the
    /// children and marks their metadata clean. New host I/O fails from the start.
    pub fn destroy(&self) -> Ticket<Result<(), NexusError>> {
        self.request(|reply| Op::Destroy { reply })
    }

    /// The nexus's home reactor.
    pub fn home(&self) -> &ReactorHandle {
        &self.home
    }

    /// The state of the nexus and its children.
    pub fn status(&self) -> NexusStatus {
        let st = self.lock_state();
        let children: Vec<ChildStatus> = st
            .children
            .iter()
            .map(|c| {
                let rebuild = c.rebuild.as_ref().map(|r| r.status());
                let progress = match (c.state, &rebuild) {
                    (ChildState::Online, _) => 100,
                    (ChildState::Rebuilding, Some(r)) => r.progress,
                    _ => 0,
                };
                ChildStatus {
                    uri: c.uri.to_string(),
                    state: c.state,
                    fault_reason: c.state.fault_reason(),
                    rebuild_progress: progress,
                    rebuild,
                    last_rebuild: c.last_rebuild.clone(),
                    replica_uuid: c.replica,
                    dirty_segments: c.shared.dirty.count(),
                }
            })
            .collect();
        NexusStatus {
            name: self.info.name.clone(),
            uuid: self.info.uuid,
            size_bytes: self.info.size_bytes(),
            block_size: self.info.block_size,
            state: NexusState::from_children(children.iter().map(|c| c.state)),
            generation: st.generation,
            rebuild_rate: self.limiter.rate(),
            children,
            write_intent: self.intent.enabled.then(|| IntentStatus {
                region_bytes: self.intent.region_bytes,
                regions: self.intent.regions,
                marked_regions: self.intent.marked_regions(),
                bitmap_writes: self.intent.writes.load(Ordering::Relaxed),
            }),
        }
    }

    /// The state of one child.
    pub fn child_status(&self, uri: &ChildUri) -> Option<ChildStatus> {
        let text = uri.to_string();
        self.status().children.into_iter().find(|c| c.uri == text)
    }

    /// Blocks reserved for metadata at the start of each child.
    pub fn meta_blocks(&self) -> u64 {
        self.geo.meta_blocks
    }

    /// Segment size in blocks.
    pub fn segment_blocks(&self) -> u64 {
        self.geo.seg_blocks
    }
}
