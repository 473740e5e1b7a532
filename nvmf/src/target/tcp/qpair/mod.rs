//! The target's NVMe/TCP queue pair as a sans-IO state machine.
//!
//! A [`QueuePair`] is the protocol of one connection (NVMe/TCP 1.0a section 3.3: "a one-to-one
//! mapping between NVMe/TCP connections and NVMe queues"), with no socket, ring, reactor or
//! clock in it, as quinn-proto's `Connection` is for QUIC. Its caller (the reactor glue in
//! [`super`], or a test, or a fuzz target) feeds it:
//! - received bytes ([`QueuePair::handle_rx`], with `now`): PDUs are cut out by the bounded
//!   deframer and handled in order, until the input ends, the connection closes, or the send
//!   queue reaches `max_unsent_bytes` (back-pressure: [`QueuePair::wants_read`] turns false);
//! - block I/O completions ([`QueuePair::handle_io_done`]) of the I/O it asked for;
//! - send completions ([`QueuePair::handle_sent`]), the end of the byte stream
//!   ([`QueuePair::handle_peer_closed`]), a controller event ([`QueuePair::poke`]), and expired
//!   deadlines ([`QueuePair::handle_timeout`]);
//!
//! and takes back:
//! - bytes to send ([`QueuePair::poll_transmit`]): response capsules, R2Ts, C2HData headers
//!   and digests packed into 4 KiB header buffers, data buffers as they are (no copy), one
//!   batch in flight at a time;
//! - [`Action`]s ([`QueuePair::poll_action`]): submit this block I/O, the connection closed,
//!   shut the socket;
//! - the next deadline ([`QueuePair::poll_timeout`]): the ICReq / Connect timeout, the
//!   keep-alive check of an admin queue, the linger of a closing connection.
//!
//! Commands take a slot ([`slots`]; the slot number is the R2T transfer tag) holding the command
//! parsed once and its namespace's channel looked up once. The channel type `C` is the
//! caller's: the glue opens `Rc<IoChannel>`s on its reactor, tests and fuzzers use anything.
//!
//! A protocol violation ends the connection with a C2HTermReq naming the fatal error
//! (NVMe/TCP 1.0a section 3.6.2.5, NVMe-oF 1.1 section 7.4.7); a bad command gets an NVMe
//! status and the queue carries on.

mod admin;
mod fabrics;
mod io;
mod rx;
#[cfg(any(test, feature = "test-utils"))]
pub mod sim;
mod slots;
#[cfg(test)]
mod tests;
mod tx;
mod wire;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_bdev::{Bdev, BdevError, BdevIo, IoBuf};

use crate::target::controller::{ControllerShared, QueueCounters};
use crate::target::subsystem::{ListenAddress, Subsystem, Target, TransportConfig};
use crate::wire::txq::{TARGET_ARENA, TxQueue};
use slots::Slots;
use wire::Deframer;

/// Receive buffer before the ICReq: the ICReq is 128 bytes (NVMe/TCP 1.0a section 3.6.2.2), so
/// a connection that never sends one holds this much, not a whole receive buffer.
pub const PRE_IC_RX: usize = 512;

/// How long a closing connection may take to send what it queued before its socket is shut.
pub const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// How often an admin queue checks its controller's keep-alive clock (KAS is 100 ms).
pub const KEEP_ALIVE_CHECK: Duration = Duration::from_millis(100);

/// Called (from any thread) when the queue pair's controller changed: failed, reset, or has an
/// event. It should only arrange for [`QueuePair::poke`] to run on the queue pair's thread.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// Opens the caller's channel to a namespace's device (on the queue pair's thread).
pub type ChannelOpener<C> = fn(&Arc<dyn Bdev>) -> Result<C, BdevError>;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the host's ICReq (NVMe/TCP 1.0a section 3.6.2.2).
    AwaitIcReq,
    /// Initialized; capsules flow.
    Ready,
    /// Closing: nothing more is read; queued data is still sent.
    Closing,
}

/// What the caller must do for the queue pair.
pub enum Action<C> {
    /// Submit this block I/O on channel `chan`; give it back with
    /// [`QueuePair::handle_io_done`] and `tag` when it completes.
    Submit {
        /// The namespace's channel.
        chan: C,
        /// The request (it owns its buffers until it comes back).
        io: BdevIo,
        /// The tag to give back.
        tag: u64,
    },
    /// The connection closed (a C2HTermReq, if any, is queued to send): read nothing more;
    /// send what is queued, then shut the socket ([`QueuePair::finished`]).
    Closed {
        /// Why.
        reason: String,
    },
    /// Shut the socket now (the host has not read what a closing connection queued within
    /// [`CLOSE_LINGER`], or a send failed).
    Shutdown,
}

impl<C> std::fmt::Debug for Action<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Submit { io, tag, .. } => f
                .debug_struct("Submit")
                .field("io_type", &io.io_type)
                .field("offset_blocks", &io.offset_blocks)
                .field("num_blocks", &io.num_blocks)
                .field("tag", tag)
                .finish(),
            Action::Closed { reason } => f.debug_struct("Closed").field("reason", reason).finish(),
            Action::Shutdown => f.write_str("Shutdown"),
        }
    }
}

/// What a queue pair is made with.
pub struct QueuePairConfig<C> {
    /// A number unique among the connections of the process (the controller's hook key).
    pub id: u64,
    /// The target (subsystems by NQN).
    pub target: Arc<Target>,
    /// The listener the connection arrived on.
    pub listen: ListenAddress,
    /// The transport's settings (a snapshot taken at accept).
    pub transport: TransportConfig,
    /// Wakes the queue pair when its controller changes.
    pub waker: Waker,
    /// Opens namespace channels.
    pub open: ChannelOpener<C>,
}

/// One NVMe/TCP queue pair, target side (see the module documentation).
pub struct QueuePair<C> {
    id: u64,
    target: Arc<Target>,
    listen: ListenAddress,
    transport: TransportConfig,
    waker: Waker,
    open: ChannelOpener<C>,
    phase: Phase,
    deframer: Deframer,
    /// Reading is paused: the send queue reached `max_unsent_bytes` (back-pressure). The next
    /// send completion that brings it below resumes it.
    paused: bool,
    tx: TxQueue,
    /// Host PDU data alignment from the ICReq (HPDA, in dwords, 0's based).
    hpda: u8,
    hdgst: bool,
    ddgst: bool,
    /// Outstanding R2Ts the host accepts per command (MAXR2T, 1's based here).
    maxr2t: u32,
    /// Queue this connection serves once connected.
    qid: Option<u16>,
    /// Submission queue size (1's based) from Connect.
    sqsize: u16,
    /// Connect asked to disable SQ flow control (CATTR bit 2), so SQHD is not needed and a
    /// read's C2HData may always carry SUCCESS (see [`QueuePair::success_may_answer`]).
    sq_flow_disabled: bool,
    sqhd: u16,
    /// Commands received since the last response capsule (which carried SQHD); see
    /// [`QueuePair::success_may_answer`].
    since_sqhd: u32,
    ctrl: Option<Arc<ControllerShared>>,
    /// This queue's I/O counters, registered with its controller (SMART log).
    counters: Option<Arc<QueueCounters>>,
    subsystem: Option<Arc<Subsystem>>,
    slots: Slots<C>,
    ns_cache: io::NsCache<C>,
    /// Asynchronous Event Requests waiting for an event (their CIDs).
    aers: Vec<u16>,
    /// The controller's I/O queue generation at Connect (see
    /// [`crate::target::controller::ControllerState::io_generation`]).
    io_generation: u64,
    /// Closes the connection unless its ICReq and Connect came by then (a connection that
    /// sends an ICReq and then nothing would hold its receive buffer for ever).
    ic_deadline: Option<Instant>,
    /// The admin queue's next keep-alive check.
    keep_alive_check: Option<Instant>,
    /// A closing connection's socket is shut then, whether or not its host read.
    linger_deadline: Option<Instant>,
    actions: VecDeque<Action<C>>,
}

impl<C: Clone> QueuePair<C> {
    /// A queue pair for a connection accepted at `now`.
    pub fn new(cfg: QueuePairConfig<C>, now: Instant) -> QueuePair<C> {
        let ic_deadline = (cfg.transport.ic_timeout_ms > 0)
            .then(|| now + Duration::from_millis(cfg.transport.ic_timeout_ms.into()));
        QueuePair {
            id: cfg.id,
            deframer: Deframer::target(&cfg.transport),
            target: cfg.target,
            listen: cfg.listen,
            transport: cfg.transport,
            waker: cfg.waker,
            open: cfg.open,
            phase: Phase::AwaitIcReq,
            paused: false,
            tx: TxQueue::new(TARGET_ARENA),
            hpda: 0,
            hdgst: false,
            ddgst: false,
            maxr2t: 1,
            qid: None,
            sqsize: 0,
            sq_flow_disabled: false,
            sqhd: 0,
            since_sqhd: 0,
            ctrl: None,
            counters: None,
            subsystem: None,
            slots: Slots::default(),
            ns_cache: io::NsCache::default(),
            aers: Vec::new(),
            io_generation: 0,
            ic_deadline,
            keep_alive_check: None,
            linger_deadline: None,
            actions: VecDeque::new(),
        }
    }

    /// Where the connection is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The queue ID, once connected.
    pub fn qid(&self) -> Option<u16> {
        self.qid
    }

    /// The controller, while connected.
    pub fn controller(&self) -> Option<&Arc<ControllerShared>> {
        self.ctrl.as_ref()
    }

    /// The subsystem, once connected.
    pub fn subsystem(&self) -> Option<&Arc<Subsystem>> {
        self.subsystem.as_ref()
    }

    /// The listener the connection arrived on.
    pub fn listen(&self) -> &ListenAddress {
        &self.listen
    }

    /// Commands accepted and not answered yet: I/O commands in slots and parked Asynchronous
    /// Event Requests.
    pub fn outstanding(&self) -> usize {
        self.slots.in_use() + self.aers.len()
    }

    /// Whether the caller should read (and feed [`QueuePair::handle_rx`]) more bytes: not
    /// while closing, nor while the send queue is at its bound (back-pressure).
    pub fn wants_read(&self) -> bool {
        self.phase != Phase::Closing && !self.paused
    }

    /// Bytes the receive buffer needs: [`PRE_IC_RX`] before the ICReq, then room for the
    /// largest PDU a host may send (an H2CData of MAXH2CDATA, or a capsule with the largest
    /// in-capsule data) plus headers and digests.
    pub fn rx_capacity(&self) -> usize {
        if self.phase == Phase::AwaitIcReq {
            return PRE_IC_RX;
        }
        let t = &self.transport;
        let biggest = t.io_unit_size.max(t.in_capsule_data_size).max(8192);
        (usize::try_from(biggest).unwrap_or(1 << 20) + 256).next_power_of_two()
    }

    /// Bytes of memory the send queue holds (queued or in flight).
    pub fn unsent(&self) -> usize {
        self.tx.held()
    }

    /// The send queue's bound (back-pressure): `max_unsent_bytes`, at least 64 KiB.
    fn unsent_limit(&self) -> usize {
        usize::try_from(self.transport.max_unsent_bytes)
            .unwrap_or(usize::MAX)
            .max(64 << 10)
    }

    /// The next thing to do for the caller, if any.
    pub fn poll_action(&mut self) -> Option<Action<C>> {
        self.actions.pop_front()
    }

    /// The next batch to send, at most 64 buffers of what is queued (and the bytes of the first
    /// already sent), unless a batch is in flight: give it back with
    /// [`QueuePair::handle_sent`].
    pub fn poll_transmit(&mut self) -> Option<(Vec<IoBuf>, usize)> {
        self.tx.take_batch()
    }

    /// Whether there is something to send (not counting a batch in flight).
    pub fn has_transmit(&self) -> bool {
        self.tx.has_pending()
    }

    /// A closing connection has sent everything (or has nothing left it can send): shut the
    /// socket.
    pub fn finished(&self) -> bool {
        self.phase == Phase::Closing && !self.tx.in_flight && !self.tx.has_pending()
    }

    /// A batch from [`QueuePair::poll_transmit`] came back: `result` bytes were sent, or the
    /// send failed (a negative errno). Returns true when reading resumes (back-pressure lifted):
    /// the caller feeds the bytes it holds to [`QueuePair::handle_rx`] again.
    pub fn handle_sent(&mut self, batch: Vec<IoBuf>, result: i32, now: Instant) -> bool {
        let Ok(n) = usize::try_from(result) else {
            // The stream is broken: what is queued behind the batch cannot follow it.
            self.tx.abandon(batch);
            self.tx.clear();
            self.close("send failed", now);
            self.actions.push_back(Action::Shutdown);
            return false;
        };
        self.tx.sent(batch, n);
        if self.paused && self.tx.held() < self.unsent_limit() {
            // The host read: handle what is buffered, then read again unless that pauses it.
            self.paused = false;
            return self.phase != Phase::Closing;
        }
        false
    }

    /// The host closed its side of the connection (`why` says how, for the log).
    pub fn handle_peer_closed(&mut self, why: &str, now: Instant) {
        self.close(why, now);
    }

    /// The earliest deadline: call [`QueuePair::handle_timeout`] then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.ic_deadline,
            self.keep_alive_check,
            self.linger_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Deadlines up to `now` expire.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ic_deadline.is_some_and(|d| d <= now) {
            self.ic_deadline = None;
            if self.phase != Phase::Closing && self.qid.is_none() {
                // A host must send its ICReq and then Connect (NVMe/TCP 1.0a section 3.3;
                // NVMe-oF 1.1 section 3.3: Connect is the first command on a queue).
                let what = if self.phase == Phase::AwaitIcReq {
                    "ICReq"
                } else {
                    "Fabrics Connect"
                };
                super::limits::note_refusal(&super::limits::IC_TIMEOUTS, || {
                    format!(
                        "closing connections on {}:{} that sent no {what} within {} ms",
                        self.listen.traddr, self.listen.trsvcid, self.transport.ic_timeout_ms
                    )
                });
                self.close("no ICReq or Connect in time", now);
            }
        }
        if self.keep_alive_check.is_some_and(|d| d <= now) {
            self.keep_alive_check = None;
            if let Some(c) = &self.ctrl
                && !c.is_failed()
            {
                if c.keep_alive_expired_at(now) {
                    // NVMe Base 2.0, section 3.9.4: on expiry the controller shall treat it as
                    // a fatal condition and delete its queues (the hooks close them).
                    c.fail("keep-alive timeout expired");
                } else {
                    self.keep_alive_check = Some(now + KEEP_ALIVE_CHECK);
                }
            }
        }
        if self.linger_deadline.is_some_and(|d| d <= now) {
            self.linger_deadline = None;
            self.actions.push_back(Action::Shutdown);
        }
    }

    /// The controller changed (the [`Waker`] ran): failed, reset, or has events for the
    /// waiting Asynchronous Event Requests.
    pub fn poke(&mut self, now: Instant) {
        let Some(ctrl) = self.ctrl.clone() else {
            return;
        };
        if ctrl.is_failed() {
            let why = ctrl.fail_reason().unwrap_or_default();
            self.close(&format!("controller failed: {why}"), now);
            return;
        }
        if self.qid != Some(0) && ctrl.io_queue_deleted(self.io_generation) {
            // NVMe Base 2.0, section 3.7.2: a controller reset deletes the I/O queues.
            self.close("I/O queue deleted by a controller reset", now);
            return;
        }
        self.deliver_events(&ctrl);
    }

    /// Ends the connection: stop reading, send what is queued, then shut the socket. Whatever
    /// ends a queue (Disconnect, a termination request from either side, a socket error, a
    /// keep-alive timeout, a controller reset) ends it here, so its queue ID is free for a new
    /// Connect at once (NVMe-oF 1.1, section 3.3: a queue ID is in use from its Connect to the
    /// end of its queue).
    pub fn close(&mut self, why: &str, now: Instant) {
        if self.phase == Phase::Closing {
            return;
        }
        tracing::debug!(conn = self.id, qid = ?self.qid, "closing connection: {why}");
        self.phase = Phase::Closing;
        self.ic_deadline = None;
        self.keep_alive_check = None;
        // Commands that wait for host data or an event end here, and their buffers go back
        // to the pool at once; those on a device end when their I/O comes back.
        self.slots.release_waiting();
        self.aers.clear();
        if let (Some(ctrl), Some(qid)) = (self.ctrl.take(), self.qid) {
            ctrl.remove_hook(self.id);
            if let Some(c) = self.counters.take() {
                ctrl.counters.retire(&c);
            }
            if qid == 0 {
                ctrl.end("admin queue closed");
            } else {
                ctrl.io_queue_ended(qid, self.io_generation);
            }
        }
        // A host that stops reading would hold the last send (and so this connection) open
        // for ever: after `CLOSE_LINGER` the socket is shut, which fails that send.
        self.linger_deadline = Some(now + CLOSE_LINGER);
        self.actions.push_back(Action::Closed {
            reason: why.to_string(),
        });
    }
}
