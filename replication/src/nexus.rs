//! The nexus: a block device that mirrors its writes to its children and reads from one.
//!
//! [`Nexus`] is a [`Bdev`]: it can be exported with `nvmf_subsystem_add_ns` like any other.
//! The public API here is the control path; every operation runs on the nexus's *home
//! reactor* and answers through a [`Ticket`]. The I/O path is in [`crate::io`], the control
//! task in [`crate::control`], creation in [`crate::create`] and rebuilds in
//! [`crate::rebuild`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shoal_bdev::reactor::{Reactor, ReactorHandle};
use shoal_bdev::{Bdev, BdevChannel, BdevError, BdevInfo, IoFlags, IoType, SizeKey};
use uuid::Uuid;

use crate::control::{Op, State};
use crate::exec::{Signal, Ticket, ticket};
use crate::gate::Gate;
use crate::intent::IntentMap;
use crate::order::WriteOrder;
use crate::rebuild::ctl::{Limiter, RebuildRate, RebuildStatus, RebuildSummary};
use crate::routing::{Role, Routing};
use crate::state::{ChildState, FaultReason, NexusState};
use crate::{ChildUri, NexusError};

/// The product name the nexus reports (`bdev_get_bdevs`).
pub const PRODUCT_NAME: &str = "Shoal nexus";
/// Default I/O timeout: a child I/O outstanding this long faults the child.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Default segment size: the unit of dirty tracking (and of partial rebuild).
pub const DEFAULT_SEGMENT_BYTES: u64 = 128 << 10;

/// How to create a nexus.
#[derive(Debug, Clone)]
pub struct NexusOptions {
    /// Bdev name.
    pub name: String,
    /// Volume UUID (also the bdev's). When absent: the one the children's metadata names, or
    /// a new one for blank children.
    pub uuid: Option<Uuid>,
    /// Size in bytes that the host sees (a multiple of the block size).
    pub size_bytes: u64,
    /// A child I/O outstanding this long faults the child (`Duration::ZERO`: never).
    pub io_timeout: Duration,
    /// Segment size in bytes: a multiple of the block size, and a power of two.
    pub segment_bytes: u64,
    /// Keep a write-intent bitmap on the children (default): after a crash only the regions
    /// it marks are resynchronised. Without it, every crash resynchronises the whole volume.
    pub write_intent: bool,
    /// How long a region of the bitmap must go unwritten before its bit is cleared.
    pub intent_clean: Duration,
    /// Children labelled for this volume UUID are taken as this volume's (relabelled at
    /// creation): clones of another volume's replicas, e.g. made from its snapshot.
    pub adopt: Option<Uuid>,
}

impl NexusOptions {
    /// Options with the defaults.
    pub fn new(name: impl Into<String>, size_bytes: u64) -> NexusOptions {
        NexusOptions {
            name: name.into(),
            uuid: None,
            size_bytes,
            io_timeout: DEFAULT_IO_TIMEOUT,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            write_intent: true,
            intent_clean: crate::intent::DEFAULT_CLEAN_PERIOD,
            adopt: None,
        }
    }
}

/// A child to add: its URI and the bdev the daemon opened for it.
#[derive(Clone)]
pub struct ChildSpec {
    /// Where it lives.
    pub uri: ChildUri,
    /// The opened device.
    pub bdev: Arc<dyn Bdev>,
    /// Whether reads should prefer it (defaults to `uri.is_local()`).
    pub local: bool,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("uri", &self.uri.to_string())
            .field("bdev", &self.bdev.info().name)
            .field("local", &self.local)
            .finish()
    }
}

impl ChildSpec {
    /// A child at `uri` opened as `bdev`.
    pub fn new(uri: ChildUri, bdev: Arc<dyn Bdev>) -> ChildSpec {
        let local = uri.is_local();
        ChildSpec { uri, bdev, local }
    }

    /// A local child `bdev:///<name of bdev>`.
    pub fn local(bdev: Arc<dyn Bdev>) -> ChildSpec {
        let uri = ChildUri::Local {
            name: bdev.info().name.clone(),
        };
        ChildSpec::new(uri, bdev)
    }
}

/// Geometry of a nexus.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub block_size: u32,
    /// Blocks reserved for metadata at the start of each child.
    pub meta_blocks: u64,
    /// Blocks the host sees.
    pub data_blocks: u64,
    /// Blocks per segment (a power of two: `create` checks it).
    pub seg_blocks: u64,
    /// Segments.
    pub segments: u64,
}

impl Geometry {
    /// Segments touched by `blocks` blocks at `offset` (first, last).
    #[inline]
    pub fn segs(&self, offset: u64, blocks: u64) -> (u64, u64) {
        let last = offset.saturating_add(blocks.max(1) - 1);
        (self.seg_of(offset), self.seg_of(last))
    }

    /// The segment of block `offset`: a shift, not a division (a 64-bit division is tens of
    /// cycles, on every host I/O).
    #[inline]
    pub fn seg_of(&self, offset: u64) -> u64 {
        debug_assert!(self.seg_blocks.is_power_of_two());
        offset >> self.seg_blocks.trailing_zeros()
    }
}

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
    pub(crate) pause: crate::pause::Pause,
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
            pause: crate::pause::Pause::default(),
            next_child_id: AtomicU64::new(1),
        }
    }

    /// Creates a nexus over `children` (all must be opened), reading their metadata to tell
    /// current replicas from stale ones (see [`crate::label`]). Current children come up
    /// online, stale and new ones are rebuilt. Runs on `home`, which also runs the nexus's
    /// control path and rebuilds from then on.
    pub fn create(
        opts: NexusOptions,
        children: Vec<ChildSpec>,
        home: &ReactorHandle,
    ) -> Ticket<Result<Arc<Nexus>, NexusError>> {
        let h = home.clone();
        crate::exec::run_on(home, move || crate::create::create(opts, children, h))
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

impl Bdev for Nexus {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn supports(&self, io_type: IoType) -> bool {
        match io_type {
            IoType::Read | IoType::Write | IoType::Flush => true,
            IoType::WriteZeroes => self.write_zeroes,
            IoType::Unmap => self.unmap,
        }
    }

    fn supports_flags(&self, io_type: IoType, flags: IoFlags) -> bool {
        // Every leg carries the host's flags to its child, and a FUA write is answered only
        // when every in-sync child has answered its FUA leg. Children are checked for FUA
        // when they join (`create::check_child`).
        flags == IoFlags::FUA
            && matches!(io_type, IoType::Read | IoType::Write | IoType::WriteZeroes)
    }

    fn create_channel(
        self: Arc<Self>,
        reactor: &Reactor,
    ) -> Result<Box<dyn BdevChannel>, BdevError> {
        Ok(Box::new(crate::io::NexusChannel::new(self, reactor)))
    }
}
