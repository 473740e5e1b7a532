//! Block devices: the `Bdev` trait, its backends and the bdev registry.
//!
//! This crate holds:
//! - the block-device trait [`Bdev`], a device's identity and geometry ([`BdevInfo`]) and the
//!   checked, counted per-reactor path to it ([`IoChannel`]);
//! - the backends: [`malloc`] (RAM), [`null`], and (in their own modules) `uring`, `error`,
//!   `delay` and [`pfail`] (a volatile write cache with a power cut on demand, for crash tests);
//! - the [`registry`] of devices by name.
//!
//! The devices run on the reactors of `shoal-reactor`, which this crate re-exports whole as
//! [`reactor`] (with its [`buf`]fers and the request types [`BdevIo`], [`IoSink`], [`BdevError`],
//! [`IoType`], [`IoFlags`], [`ErrorKind`], which the reactor completes and so defines), so
//! that users of block devices need only this crate.
//!
//! # The I/O contract
//! A user opens an [`IoChannel`] on its reactor ([`open_channel`]) and submits [`BdevIo`]s to
//! it with an [`IoSink`] and a tag. The `BdevIo` owns its buffers from submission until the sink's
//! [`IoSink::io_done`] hands it back with the result. Completion always comes from a later pass
//! of the reactor loop, never from inside `submit`, so a sink may submit again from `io_done`.
//! A bad request (out of range, not a whole number of blocks, a closed device, an operation the
//! device does not support) completes with a [`BdevError`]; nothing here panics on a request.
//!
//! See `ARCHITECTURE.md` at the repository root for the I/O path and buffer ownership rules.

mod channel;
pub mod delay;
pub mod error_bdev;
pub mod malloc;
pub mod null;
pub mod pfail;
pub mod registry;
pub mod uring;

pub use channel::{IoChannel, IoStats, IoStatsSnapshot, check_io, open_channel};
pub use shoal_reactor as reactor;
/// The I/O buffers ([`IoBuf`], [`SgList`] and their pools), from the reactor crate.
pub use shoal_reactor::buf;
pub use shoal_reactor::buf::{IoBuf, SgList};
/// The block-I/O request and its result, defined with the reactor that completes them.
pub use shoal_reactor::io::{BdevError, BdevIo, ErrorKind, IoFlags, IoSink, IoType};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use reactor::Reactor;
use uuid::Uuid;

/// Something that happened to a device, told to its watchers ([`BdevInfo::watch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BdevEvent {
    /// The device's size changed (SPDK's `SPDK_BDEV_EVENT_RESIZE`): I/O past `new` blocks
    /// now fails with [`BdevError::OutOfRange`].
    Resized {
        /// Blocks before.
        old: u64,
        /// Blocks now.
        new: u64,
    },
}

/// A watcher of a device's events. It runs on the thread that changed the device (a
/// reactor, or an RPC thread), so it should only record the event or send a message.
pub type BdevWatcher = Arc<dyn Fn(&BdevInfo, BdevEvent) + Send + Sync>;

/// Identifies a watcher for [`BdevInfo::unwatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WatchId(u64);

static NEXT_WATCH: AtomicU64 = AtomicU64::new(1);

static NEXT_SIZE_KEY: AtomicU64 = AtomicU64::new(1);

/// The right to change a device's size ([`BdevInfo::resize`]), handed out once, to the
/// device that made the [`BdevInfo`] ([`BdevInfo::new_resizable`]). It cannot be copied or
/// made elsewhere: a user holding the device (`&dyn Bdev`) cannot change its size under it,
/// which a device whose memory or mapping has a fixed length relies on.
#[derive(Debug)]
pub struct SizeKey(u64);

/// What every block device has: identity, geometry, and whether it has been closed.
///
/// The size of a device made with [`BdevInfo::new_resizable`] may change while the device is
/// in use ([`BdevInfo::resize`], by the holder of its [`SizeKey`]: a logical volume grown or
/// shrunk): it is an atomic that every request's range check reads
/// ([`BdevInfo::num_blocks`], one plain load), and the users that cache anything derived from
/// it (the NVMe-oF target's Identify data and asynchronous events) learn of the change through
/// [`BdevInfo::watch`].
pub struct BdevInfo {
    /// Unique name (SPDK's bdev name).
    pub name: String,
    /// Unique identifier.
    pub uuid: Uuid,
    /// Logical block size in bytes (512 or 4096).
    pub block_size: u32,
    /// Number of logical blocks (see [`BdevInfo::num_blocks`]).
    num_blocks: AtomicU64,
    /// Driver name as SPDK reports it (`Malloc disk`, `Null disk`, `URING bdev`, ...).
    pub product_name: &'static str,
    closed: AtomicBool,
    /// The open channels' counters, and the sum of those of the channels closed since (a
    /// channel folds its counters in when it is dropped, so that opening and closing channels,
    /// one per NVMe/TCP queue pair, does not grow the list).
    channels: Mutex<(Vec<Arc<IoStats>>, IoStatsSnapshot)>,
    watchers: Mutex<Vec<(WatchId, BdevWatcher)>>,
    /// The number of the [`SizeKey`] that may resize the device (0: its size is fixed).
    size_key: u64,
}

impl std::fmt::Debug for BdevInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BdevInfo")
            .field("name", &self.name)
            .field("uuid", &self.uuid)
            .field("block_size", &self.block_size)
            .field("num_blocks", &self.num_blocks())
            .field("product_name", &self.product_name)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl BdevInfo {
    /// Identity and geometry of a new device whose size is fixed.
    pub fn new(
        name: impl Into<String>,
        uuid: Option<Uuid>,
        block_size: u32,
        num_blocks: u64,
        product_name: &'static str,
    ) -> BdevInfo {
        BdevInfo {
            name: name.into(),
            uuid: uuid.unwrap_or_else(Uuid::new_v4),
            block_size,
            num_blocks: AtomicU64::new(num_blocks),
            product_name,
            closed: AtomicBool::new(false),
            channels: Mutex::new((Vec::new(), IoStatsSnapshot::default())),
            watchers: Mutex::new(Vec::new()),
            size_key: 0,
        }
    }

    /// Identity and geometry of a new device whose size may change, with the key that
    /// changes it ([`BdevInfo::resize`]), for the device alone to keep.
    pub fn new_resizable(
        name: impl Into<String>,
        uuid: Option<Uuid>,
        block_size: u32,
        num_blocks: u64,
        product_name: &'static str,
    ) -> (BdevInfo, SizeKey) {
        let key = SizeKey(NEXT_SIZE_KEY.fetch_add(1, Ordering::Relaxed));
        let mut info = BdevInfo::new(name, uuid, block_size, num_blocks, product_name);
        info.size_key = key.0;
        (info, key)
    }

    /// Number of logical blocks now.
    #[inline]
    pub fn num_blocks(&self) -> u64 {
        self.num_blocks.load(Ordering::Acquire)
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.num_blocks().saturating_mul(u64::from(self.block_size))
    }

    /// Changes the size to `num_blocks` and tells every watcher ([`BdevEvent::Resized`]),
    /// on this thread, after the new size is in place. Called by the device itself with its
    /// [`SizeKey`], at a point where no I/O of its own relies on the old size (a logical
    /// volume holds its I/O meanwhile) and where its medium holds the new size; requests
    /// checked from now on are checked against the new size. Returns the old size; nothing
    /// is told if it did not change.
    ///
    /// # Errors
    /// [`BdevError::Invalid`] if `key` is not this device's (its size is then unchanged).
    pub fn resize(&self, key: &SizeKey, num_blocks: u64) -> Result<u64, BdevError> {
        if self.size_key == 0 || key.0 != self.size_key {
            return Err(BdevError::Invalid(format!(
                "bdev {}: only the device itself may change its size",
                self.name
            )));
        }
        let old = self.num_blocks.swap(num_blocks, Ordering::AcqRel);
        if old != num_blocks {
            let ws: Vec<BdevWatcher> = lock_ignoring_poison(&self.watchers)
                .iter()
                .map(|(_, w)| w.clone())
                .collect();
            let ev = BdevEvent::Resized {
                old,
                new: num_blocks,
            };
            tracing::info!(bdev = %self.name, old, new = num_blocks, "bdev resized");
            for w in ws {
                w(self, ev);
            }
        }
        Ok(old)
    }

    /// Calls `watcher` with every event of the device from now on, until
    /// [`BdevInfo::unwatch`] with the returned id.
    pub fn watch(&self, watcher: BdevWatcher) -> WatchId {
        let id = WatchId(NEXT_WATCH.fetch_add(1, Ordering::Relaxed));
        lock_ignoring_poison(&self.watchers).push((id, watcher));
        id
    }

    /// Stops a watcher (an unknown id is ignored).
    pub fn unwatch(&self, id: WatchId) {
        lock_ignoring_poison(&self.watchers).retain(|(w, _)| *w != id);
    }

    /// Watchers registered now.
    pub fn watchers(&self) -> usize {
        lock_ignoring_poison(&self.watchers).len()
    }

    /// Whether the device was closed (deleted); new I/O then fails with [`BdevError::Closed`].
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the device closed: I/O submitted from now on fails; I/O in flight completes.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// The I/O counters summed over every channel ever opened on the device.
    pub fn iostat(&self) -> IoStatsSnapshot {
        let chans = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        chans.0.iter().fold(chans.1, |acc, s| acc + s.snapshot())
    }

    /// Channels open on the device now.
    pub fn open_channels(&self) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .len()
    }

    fn register_channel(&self, stats: Arc<IoStats>) {
        let mut chans = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        chans.0.push(stats);
    }

    fn retire_channel(&self, stats: &Arc<IoStats>) {
        let mut chans = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let (open, closed) = &mut *chans;
        if let Some(i) = open.iter().position(|s| Arc::ptr_eq(s, stats)) {
            let gone = open.swap_remove(i);
            *closed = *closed + gone.snapshot();
        }
    }
}

fn lock_ignoring_poison<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks that a block size is one Shoal supports.
pub fn valid_block_size(bs: u32) -> bool {
    bs == 512 || bs == 4096
}

/// A block device. Implementations are shared between reactors (`Send + Sync`); each reactor
/// reaches one through its own channel.
pub trait Bdev: Send + Sync + 'static {
    /// Identity and geometry.
    fn info(&self) -> &BdevInfo;

    /// Whether the device implements `io_type`. Read, write and flush always are.
    fn supports(&self, io_type: IoType) -> bool;

    /// Whether the device honours `flags` on requests of `io_type` ([`IoFlags::FUA`] on reads,
    /// writes and write zeroes). A device that says no gets no such request: [`IoChannel`]
    /// refuses it with [`BdevError::UnsupportedFlags`]. The default honours no flag, so that
    /// a new device refuses Force Unit Access until it implements it, instead of dropping it.
    fn supports_flags(&self, io_type: IoType, flags: IoFlags) -> bool {
        let _ = io_type;
        flags.is_empty()
    }

    /// Creates this reactor's channel to the device (called once per reactor by
    /// [`open_channel`], which adds the common checks and counters).
    fn create_channel(
        self: Arc<Self>,
        reactor: &Reactor,
    ) -> Result<Box<dyn BdevChannel>, BdevError>;
}

/// A reactor's private path to a device. Requests reaching it were already checked by
/// [`IoChannel`] (range, length, support, closed).
pub trait BdevChannel {
    /// Starts `io`; completes it later to `sink` through the reactor.
    fn submit(&self, io: BdevIo, sink: std::rc::Rc<dyn IoSink>, tag: u64);
}
