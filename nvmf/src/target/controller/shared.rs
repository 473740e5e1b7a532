//! The part of a controller that its queue pairs share across reactors.
//!
//! A controller is created by the admin queue's Fabrics Connect and lives on that queue's
//! reactor; its I/O queues may sit on other reactors. What they must agree on lives here,
//! behind a mutex taken only on the control path (connect, admin commands, keep-alive checks,
//! namespace changes), never per I/O.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::target::subsystem::Subsystem;

/// An asynchronous event waiting for an Asynchronous Event Request to carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncEvent {
    /// Asynchronous event type (bits 02:00 of CQE dword 0; 2 = notice).
    pub event_type: u8,
    /// Asynchronous event information (bits 15:08; 0 = namespace attribute changed).
    pub info: u8,
    /// Log page to read to clear the event (bits 23:16; 04h = changed namespace list).
    pub log_page: u8,
}

impl AsyncEvent {
    /// "Namespace Attribute Changed" notice (NVMe Base 2.0, Figure 150/151).
    pub const NS_ATTR_CHANGED: AsyncEvent = AsyncEvent {
        event_type: 2,
        info: 0,
        log_page: 0x04,
    };

    /// Completion queue entry dword 0 for this event.
    pub fn dw0(self) -> u32 {
        u32::from(self.event_type) | (u32::from(self.info) << 8) | (u32::from(self.log_page) << 16)
    }
}

/// Settable feature values and controller registers.
#[derive(Debug, Clone, Default)]
pub struct ControllerState {
    /// Controller Configuration register.
    pub cc: u32,
    /// Controller Status register.
    pub csts: u32,
    /// Number of I/O submission / completion queues granted (0's based, as in Set Features 07h).
    pub num_queues: Option<(u16, u16)>,
    /// Asynchronous event configuration (feature 0Bh).
    pub async_event_config: u32,
    /// Volatile write cache enabled (feature 06h).
    pub volatile_write_cache: bool,
    /// Other features the host set, by feature id (value of dword 11).
    pub other_features: std::collections::BTreeMap<u8, u32>,
    /// Events waiting for an AER.
    pub pending_events: VecDeque<AsyncEvent>,
    /// Namespaces changed since the host last read the Changed Namespace List log.
    pub changed_namespaces: BTreeSet<u32>,
    /// Whether a namespace-attribute notice is outstanding (masked until the log is read).
    pub ns_notice_masked: bool,
    /// I/O queue IDs connected.
    pub io_queues: BTreeSet<u16>,
    /// Generation of the I/O queues: a controller reset (CC.EN 1 -> 0) deletes every I/O queue
    /// and starts a new generation. A queue pair records the generation it connected in, so
    /// that a queue of an older one neither survives the reset nor, when it finally closes,
    /// frees a queue ID that a queue of the new generation took.
    pub io_generation: u64,
}

/// One queue pair's I/O counters. Only its own reactor writes them (a load and a store, no
/// locked read-modify-write on the I/O path); the SMART log sums every queue's.
#[derive(Debug, Default)]
pub struct QueueCounters {
    read_units: AtomicU64,
    write_units: AtomicU64,
    read_commands: AtomicU64,
    write_commands: AtomicU64,
}

fn bump(c: &AtomicU64, by: u64) {
    c.store(
        c.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

impl QueueCounters {
    /// A completed read of `bytes`.
    pub fn read(&self, bytes: u64) {
        bump(&self.read_commands, 1);
        bump(&self.read_units, bytes / 512);
    }

    /// A completed write of `bytes`.
    pub fn write(&self, bytes: u64) {
        bump(&self.write_commands, 1);
        bump(&self.write_units, bytes / 512);
    }
}

/// Totals for the SMART / Health log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CounterTotals {
    /// 512-byte units read (the log reports thousands of them, rounded up).
    pub read_units: u64,
    /// 512-byte units written.
    pub write_units: u64,
    /// Read commands completed.
    pub read_commands: u64,
    /// Write commands completed.
    pub write_commands: u64,
}

/// Per-controller counters: the live queues' own, summed when the log is read, plus the
/// totals of the queues that ended (folded in when they end, so a host that reconnects its
/// I/O queues again and again does not grow the list).
#[derive(Debug, Default)]
pub struct ControllerCounters {
    queues: Mutex<(Vec<Arc<QueueCounters>>, CounterTotals)>,
}

impl ControllerCounters {
    /// Counters for a new queue pair.
    pub fn register(&self) -> Arc<QueueCounters> {
        let q = Arc::new(QueueCounters::default());
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .push(q.clone());
        q
    }

    /// A queue pair ended: its counts join the retired totals and it leaves the list.
    pub fn retire(&self, q: &Arc<QueueCounters>) {
        let mut g = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let (live, retired) = &mut *g;
        if let Some(i) = live.iter().position(|x| Arc::ptr_eq(x, q)) {
            let gone = live.swap_remove(i);
            *retired = add(*retired, &gone);
        }
    }

    /// The sums over every queue the controller ever had.
    pub fn totals(&self) -> CounterTotals {
        let g = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        g.0.iter().fold(g.1, add)
    }

    /// Queue pairs counted one by one (the live ones).
    pub fn live_queues(&self) -> usize {
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .len()
    }
}

fn add(t: CounterTotals, q: &Arc<QueueCounters>) -> CounterTotals {
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    CounterTotals {
        read_units: t.read_units.wrapping_add(l(&q.read_units)),
        write_units: t.write_units.wrapping_add(l(&q.write_units)),
        read_commands: t.read_commands.wrapping_add(l(&q.read_commands)),
        write_commands: t.write_commands.wrapping_add(l(&q.write_commands)),
    }
}

type Hook = Box<dyn Fn() + Send + Sync>;

/// What a controller's queue pairs share.
pub struct ControllerShared {
    /// Controller ID.
    pub cntlid: u16,
    /// The subsystem.
    pub subsystem: Arc<Subsystem>,
    /// Host NQN from the admin Connect.
    pub hostnqn: String,
    /// Host identifier from the admin Connect.
    pub hostid: [u8; 16],
    /// Keep-alive timeout in milliseconds (0: disabled).
    pub kato_ms: std::sync::atomic::AtomicU32,
    /// When the controller was created.
    pub created: Instant,
    state: Mutex<ControllerState>,
    /// CSTS.RDY, mirrored out of `state` (which sets it, under its lock) so that every I/O
    /// command can check it with a plain load: a lock per command is a locked instruction,
    /// which waits for the RAM disk's streaming stores of the write before it to reach memory.
    ready: AtomicBool,
    last_keep_alive_ms: AtomicU64,
    failed: AtomicBool,
    fail_reason: Mutex<Option<String>>,
    /// Counters for the SMART log, summed over the I/O queues.
    pub counters: ControllerCounters,
    hooks: Mutex<Vec<(u16, u64, Hook)>>,
}

impl std::fmt::Debug for ControllerShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerShared")
            .field("cntlid", &self.cntlid)
            .field("subnqn", &self.subsystem.nqn)
            .field("hostnqn", &self.hostnqn)
            .finish()
    }
}

impl ControllerShared {
    /// A new controller of `subsystem` for a host.
    pub fn new(
        cntlid: u16,
        subsystem: Arc<Subsystem>,
        hostnqn: &str,
        hostid: [u8; 16],
        kato_ms: u32,
    ) -> ControllerShared {
        ControllerShared {
            cntlid,
            subsystem,
            hostnqn: hostnqn.to_string(),
            hostid,
            kato_ms: kato_ms.into(),
            created: Instant::now(),
            state: Mutex::new(ControllerState::default()),
            last_keep_alive_ms: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            fail_reason: Mutex::new(None),
            counters: ControllerCounters::default(),
            hooks: Mutex::new(Vec::new()),
        }
    }

    /// Locks the registers and features.
    pub fn state(&self) -> MutexGuard<'_, ControllerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Restarts the keep-alive timer (NVMe Base 2.0, section 3.9).
    pub fn keep_alive(&self) {
        self.last_keep_alive_ms
            .store(self.now_ms(), Ordering::Relaxed);
    }

    /// Whether the keep-alive timer expired: nothing was heard from the host for KATO
    /// (NVMe Base 2.0, section 3.9.1: the controller shall then treat it as a fatal error).
    pub fn keep_alive_expired(&self) -> bool {
        self.keep_alive_expired_at(Instant::now())
    }

    /// [`ControllerShared::keep_alive_expired`] at `now` (the caller's clock: a sans-IO queue
    /// pair is handed the time).
    pub fn keep_alive_expired_at(&self, now: Instant) -> bool {
        let kato = u64::from(self.kato_ms.load(Ordering::Relaxed));
        let now_ms = u64::try_from(now.saturating_duration_since(self.created).as_millis())
            .unwrap_or(u64::MAX);
        kato != 0 && now_ms.saturating_sub(self.last_keep_alive_ms.load(Ordering::Relaxed)) > kato
    }

    /// CSTS.RDY: the host enabled the controller (CC.EN = 1) and has not reset it since.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Records CSTS.RDY for [`ControllerShared::is_ready`]; called with the state's lock held,
    /// whenever CSTS changes.
    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether the controller has failed (keep-alive expiry, deletion, fatal error).
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Why the controller failed.
    pub fn fail_reason(&self) -> Option<String> {
        self.fail_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Fails the controller: every queue pair is told, and closes its connection.
    pub fn fail(&self, reason: &str) {
        self.stop(reason, true);
    }

    /// Ends the controller because its admin queue ended (the host disconnected, or its
    /// connection broke): the same as [`ControllerShared::fail`], logged at debug level, since
    /// a host ends every association so (a host reconnecting in a loop must not fill the log).
    pub fn end(&self, reason: &str) {
        self.stop(reason, false);
    }

    fn stop(&self, reason: &str, warn: bool) {
        if self.failed.swap(true, Ordering::AcqRel) {
            return;
        }
        if warn {
            tracing::warn!(cntlid = self.cntlid, subnqn = %self.subsystem.nqn, host = %self.hostnqn, "controller failed: {reason}");
        } else {
            tracing::debug!(cntlid = self.cntlid, subnqn = %self.subsystem.nqn, host = %self.hostnqn, "controller ended: {reason}");
        }
        *self.fail_reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
        self.subsystem.unregister_controller(self.cntlid);
        self.poke_all();
    }

    /// Registers the wake-up hook of queue pair `key` (unique per connection) serving `qid`
    /// (it runs on any thread and should only send a message to the queue pair's reactor).
    pub fn add_hook(&self, qid: u16, key: u64, hook: Hook) {
        self.hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((qid, key, hook));
    }

    /// Removes the hook of queue pair `key` (a queue of a newer generation may hold its QID).
    pub fn remove_hook(&self, key: u64) {
        self.hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(_, k, _)| *k != key);
    }

    /// Controller reset (CC.EN 1 -> 0, NVMe Base 2.0 section 3.7.2): deletes every I/O queue
    /// (their queue pairs are told and close their connections) and frees their queue IDs; the
    /// admin queue and the controller stay, so the host may set CC.EN to 1 again on it.
    pub fn reset_io_queues(&self) {
        {
            let mut st = self.state();
            st.io_queues.clear();
            st.io_generation = st.io_generation.wrapping_add(1);
            // Number of Queues returns to its default with the reset: the host sets it again
            // before it connects new I/O queues.
            st.num_queues = None;
        }
        for (q, _, h) in self.hooks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if *q != 0 {
                h();
            }
        }
    }

    /// An I/O queue of generation `generation` ended (Disconnect, termination by either side,
    /// a socket error, a keep-alive timeout): its queue ID is free for a new Connect at once.
    /// A queue of a generation a reset already deleted frees nothing.
    pub fn io_queue_ended(&self, qid: u16, generation: u64) {
        let mut st = self.state();
        if st.io_generation == generation {
            st.io_queues.remove(&qid);
        }
    }

    /// Whether an I/O queue of `generation` was deleted by a controller reset since.
    pub fn io_queue_deleted(&self, generation: u64) -> bool {
        self.state().io_generation != generation
    }

    fn poke_all(&self) {
        for (_, _, h) in self.hooks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            h();
        }
    }

    fn poke_admin(&self) {
        for (q, _, h) in self.hooks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if *q == 0 {
                h();
            }
        }
    }

    /// A namespace was added, removed or changed: queue a notice if the host enabled them
    /// (Asynchronous Event Configuration bit 8, NVMe Base 2.0, Figure 316).
    pub fn namespace_changed(&self, nsid: u32) {
        {
            let mut st = self.state();
            st.changed_namespaces.insert(nsid);
            if st.async_event_config & (1 << 8) == 0 || st.ns_notice_masked {
                return;
            }
            st.ns_notice_masked = true;
            st.pending_events.push_back(AsyncEvent::NS_ATTR_CHANGED);
        }
        self.poke_admin();
    }
}
