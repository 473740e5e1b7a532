//! NVMe/TCP queue pairs on Shoal's reactors (target side).
//!
//! A [`Conn`] is one TCP connection, i.e. one NVMe queue pair (NVMe/TCP 1.0, section 3.3: "a
//! one-to-one mapping between NVMe/TCP connections and NVMe queues"). It lives on one reactor:
//! - **receive**: one `recv` into a connection buffer is always outstanding; complete PDUs are
//!   cut out by the bounded deframer ([`crate::pdu`]) and handled in order ([`capsule`]);
//! - **send**: responses, R2Ts and C2HData headers are packed into header buffers, data buffers
//!   are queued as they are, and everything queued in a reactor pass goes out in one `sendmsg`
//!   (a per-reactor poller flushes the connections that queued something);
//! - **block I/O**: commands become [`shoal_bdev::BdevIo`]s on the reactor's channel to the
//!   namespace's device; the connection is their sink ([`io`]).
//!
//! A protocol violation ends the connection with a C2HTermReq naming the fatal error
//! (section 3.6.2.9); a bad command gets an NVMe status and the queue carries on.

mod capsule;
mod io;
pub mod limits;
pub mod listener;
mod slots;
mod wire;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use shoal_bdev::reactor::ops::{OpHandler, Payload};
use shoal_bdev::reactor::{PollStatus, Reactor, TimerId, shutdown_socket};
use shoal_bdev::{BdevError, BdevIo, IoBuf, IoSink};

use crate::controller::ControllerShared;
use crate::subsystem::{ListenAddress, Subsystem, Target, TransportConfig};
use crate::txq::{TARGET_ARENA, TxQueue};
use slots::Slots;
use wire::Deframer;

/// Bytes of the receive buffer: room for the largest PDU a host may send (an H2CData of
/// MAXH2CDATA, or a capsule with the largest in-capsule data) plus headers and digests.
fn rx_capacity(t: &TransportConfig) -> usize {
    let biggest = t.io_unit_size.max(t.in_capsule_data_size).max(8192);
    (usize::try_from(biggest).unwrap_or(1 << 20) + 256).next_power_of_two()
}

/// Receive buffer before the ICReq: the ICReq is 128 bytes (NVMe/TCP 1.0, section 3.6.2.2), so
/// a connection that never sends one holds this much, not a whole receive buffer.
const PRE_IC_RX: usize = 512;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the host's ICReq (NVMe/TCP 1.0, section 3.6.1).
    AwaitIcReq,
    /// Initialized; capsules flow.
    Ready,
    /// Closing: nothing more is read; queued data is still sent.
    Closing,
}

/// Per-connection state behind the `RefCell`.
struct State {
    phase: Phase,
    deframer: Deframer,
    /// The receive buffer, absent while a `recv` holds it.
    rx: Option<IoBuf>,
    /// Bytes of `rx` already consumed.
    rx_pos: usize,
    /// The next `recv` waits for this pass's flush: queued after the answers, it does not
    /// delay them (the kernel runs a ring's entries in order, and a `recv` on an empty
    /// socket first tries, then arms a poll).
    rearm_recv: bool,
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
    /// read's C2HData may carry SUCCESS.
    sq_flow_disabled: bool,
    sqhd: u16,
    ctrl: Option<Arc<ControllerShared>>,
    /// This queue's I/O counters, registered with its controller (SMART log).
    counters: Option<Arc<crate::controller::QueueCounters>>,
    subsystem: Option<Arc<Subsystem>>,
    slots: Slots,
    ns_cache: io::NsCache,
    /// Asynchronous Event Requests waiting for an event (their CIDs).
    aers: Vec<u16>,
    keep_alive_timer: Option<TimerId>,
    /// Closes the connection unless its ICReq and Connect came in `ic_timeout_ms`; cancelled
    /// by a successful Connect (a connection that sends an ICReq and then nothing would hold
    /// its receive buffer for ever).
    ic_timer: Option<TimerId>,
    /// Shuts the socket of a closing connection whose host does not read.
    linger_timer: Option<TimerId>,
    /// The controller's I/O queue generation at Connect (see
    /// [`crate::controller::ControllerState::io_generation`]).
    io_generation: u64,
}

/// One NVMe/TCP connection (queue pair) on the current reactor.
pub struct Conn {
    me: Weak<Conn>,
    id: u64,
    sock: TcpStream,
    reactor: Reactor,
    target: Arc<Target>,
    listen: ListenAddress,
    transport: TransportConfig,
    st: RefCell<State>,
    /// This connection's place in its listener's counts, given back when it is dropped.
    _ticket: limits::ConnTicket,
}

thread_local! {
    static CONNS: RefCell<HashMap<u64, Weak<Conn>>> = RefCell::new(HashMap::new());
    static DIRTY: RefCell<Vec<Rc<Conn>>> = const { RefCell::new(Vec::new()) };
    /// An empty vector swapped with `DIRTY` at each flush, so flushing allocates nothing.
    static SPARE: RefCell<Vec<Rc<Conn>>> = const { RefCell::new(Vec::new()) };
    static FLUSHER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Connection objects alive on this reactor, closing ones included (a closing connection
    /// leaves `CONNS` at once but lives until its last operation completes).
    static LIVE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Starts serving an accepted connection on the current reactor.
pub fn start_conn(target: Arc<Target>, accepted: limits::Accepted) {
    let limits::Accepted { fd, listen, ticket } = accepted;
    let Some(reactor) = Reactor::current() else {
        tracing::error!("start_conn called off a reactor");
        return;
    };
    let sock = TcpStream::from(fd);
    let _ = sock.set_nodelay(true);
    let transport = target.transport();
    install_flusher(&reactor);
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let conn = Rc::new_cyclic(|me| Conn {
        me: me.clone(),
        id,
        sock,
        reactor: reactor.clone(),
        listen,
        st: RefCell::new(State {
            phase: Phase::AwaitIcReq,
            deframer: Deframer::target(&transport),
            rx: Some(IoBuf::with_capacity(PRE_IC_RX)),
            rx_pos: 0,
            rearm_recv: false,
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
            ctrl: None,
            counters: None,
            subsystem: None,
            slots: Slots::default(),
            ns_cache: io::NsCache::default(),
            aers: Vec::new(),
            keep_alive_timer: None,
            io_generation: 0,
            ic_timer: None,
            linger_timer: None,
        }),
        transport,
        target,
        _ticket: ticket,
    });
    CONNS.with(|c| c.borrow_mut().insert(id, Rc::downgrade(&conn)));
    LIVE.with(|l| l.set(l.get() + 1));
    if conn.transport.ic_timeout_ms > 0 {
        let weak = Rc::downgrade(&conn);
        let after = std::time::Duration::from_millis(conn.transport.ic_timeout_ms.into());
        let t = reactor.call_after(after, move || {
            let Some(c) = weak.upgrade() else { return };
            let (phase, connected) = {
                let mut st = c.st.borrow_mut();
                st.ic_timer = None;
                (st.phase, st.qid.is_some())
            };
            if phase != Phase::Closing && !connected {
                let what = if phase == Phase::AwaitIcReq {
                    "ICReq"
                } else {
                    "Fabrics Connect"
                };
                limits::note_refusal(&limits::IC_TIMEOUTS, || {
                    format!(
                        "closing connections on {}:{} that sent no {what} within {} ms",
                        c.listen.traddr, c.listen.trsvcid, c.transport.ic_timeout_ms
                    )
                });
                c.close("no ICReq or Connect in time");
            }
        });
        conn.st.borrow_mut().ic_timer = Some(t);
    }
    conn.post_recv();
}

/// Closes every connection of the current reactor (daemon shutdown).
pub fn close_all() {
    let conns: Vec<Rc<Conn>> =
        CONNS.with(|c| c.borrow().values().filter_map(Weak::upgrade).collect());
    for c in conns {
        c.close("target shutting down");
    }
}

/// What a queue pair of the current reactor is connected to (for `nvmf_subsystem_get_qpairs`).
#[derive(Debug, Clone)]
pub struct QpairInfo {
    /// Subsystem NQN, once connected.
    pub subnqn: Option<String>,
    /// Controller ID, once connected.
    pub cntlid: Option<u16>,
    /// Queue ID, once connected.
    pub qid: Option<u16>,
    /// Host NQN, once connected.
    pub hostnqn: Option<String>,
    /// The listener the connection arrived on.
    pub listen: ListenAddress,
    /// The host's address.
    pub peer: Option<std::net::SocketAddr>,
    /// `active` once connected, `connecting` before.
    pub state: &'static str,
}

/// The queue pairs of the current reactor.
pub fn qpairs() -> Vec<QpairInfo> {
    let conns: Vec<Rc<Conn>> =
        CONNS.with(|c| c.borrow().values().filter_map(Weak::upgrade).collect());
    conns
        .iter()
        .map(|c| {
            let st = c.st.borrow();
            QpairInfo {
                subnqn: st.subsystem.as_ref().map(|s| s.nqn.clone()),
                cntlid: st.ctrl.as_ref().map(|c| c.cntlid),
                qid: st.qid,
                hostnqn: st.ctrl.as_ref().map(|c| c.hostnqn.clone()),
                listen: c.listen.clone(),
                peer: c.sock.peer_addr().ok(),
                state: if st.qid.is_some() {
                    "active"
                } else {
                    "connecting"
                },
            }
        })
        .collect()
}

/// Closes the connections of the current reactor that arrived on `listen` (all of them, or
/// only those of subsystem `subnqn`); returns how many. Used when a listener is removed.
pub fn disconnect_listener(listen: &ListenAddress, subnqn: Option<&str>) -> usize {
    let conns: Vec<Rc<Conn>> =
        CONNS.with(|c| c.borrow().values().filter_map(Weak::upgrade).collect());
    let mut n = 0;
    for c in conns {
        let same_addr = c.listen.traddr == listen.traddr && c.listen.trsvcid == listen.trsvcid;
        let same_sub =
            subnqn.is_none_or(|q| c.st.borrow().subsystem.as_ref().is_some_and(|s| s.nqn == q));
        if same_addr && same_sub {
            c.close("listener removed");
            n += 1;
        }
    }
    n
}

/// Number of live connections on the current reactor.
pub fn conn_count() -> usize {
    CONNS.with(|c| c.borrow().values().filter(|w| w.strong_count() > 0).count())
}

/// Connection objects on the current reactor, including closing ones that still wait for an
/// operation (a send to a host that does not read): when it is 0, every connection's memory
/// and socket are gone.
pub fn conn_objects() -> usize {
    LIVE.with(std::cell::Cell::get)
}

fn install_flusher(reactor: &Reactor) {
    if FLUSHER.with(|f| f.replace(true)) {
        return;
    }
    reactor.add_poller(|| {
        let spare = SPARE.with(|s| std::mem::take(&mut *s.borrow_mut()));
        let mut dirty = DIRTY.with(|d| std::mem::replace(&mut *d.borrow_mut(), spare));
        if dirty.is_empty() {
            SPARE.with(|s| *s.borrow_mut() = dirty);
            return PollStatus::Idle;
        }
        for c in dirty.drain(..) {
            c.flush_tx();
        }
        SPARE.with(|s| *s.borrow_mut() = dirty);
        PollStatus::Busy
    });
}

/// Runs `f` on the live connection `id` of the current reactor.
fn with_conn(id: u64, f: impl FnOnce(&Rc<Conn>)) {
    let conn = CONNS.with(|c| c.borrow().get(&id).and_then(Weak::upgrade));
    if let Some(c) = conn {
        f(&c);
    }
}

/// How long a closing connection may take to send what it queued before its socket is shut.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(5);

const TAG_RECV: u64 = u64::MAX;
const TAG_SEND: u64 = u64::MAX - 1;

impl Conn {
    fn rc(&self) -> Option<Rc<Conn>> {
        self.me.upgrade()
    }

    fn post_recv(&self) {
        let Some(me) = self.rc() else { return };
        let mut st = self.st.borrow_mut();
        if st.phase == Phase::Closing {
            return;
        }
        let Some(mut buf) = st.rx.take() else { return };
        // Move unconsumed bytes to the front so the spare capacity is as large as possible.
        let pos = st.rx_pos;
        if pos > 0 {
            let len = buf.len();
            buf.full_mut().copy_within(pos..len, 0);
            buf.set_len(len - pos);
            st.rx_pos = 0;
        }
        // After the ICReq, the small first buffer gives way to one for the largest PDU.
        let want = rx_capacity(&self.transport);
        if st.phase == Phase::Ready && buf.capacity() < want {
            let mut big = IoBuf::with_capacity(want);
            big.set_len(buf.len());
            big.as_mut_slice().copy_from_slice(buf.as_slice());
            buf = big;
        }
        drop(st);
        self.reactor.recv(self.sock.as_raw_fd(), buf, me, TAG_RECV);
    }

    /// Marks the connection as having queued output for this pass's flush.
    fn mark_dirty(&self) {
        if let Some(me) = self.rc() {
            let mut st = self.st.borrow_mut();
            if !st.tx.dirty {
                st.tx.dirty = true;
                drop(st);
                DIRTY.with(|d| d.borrow_mut().push(me));
            }
        }
    }

    fn flush_tx(&self) {
        let Some(me) = self.rc() else { return };
        let mut st = self.st.borrow_mut();
        st.tx.dirty = false;
        let rearm = std::mem::take(&mut st.rearm_recv);
        if let Some((bufs, skip)) = st.tx.take_batch() {
            drop(st);
            self.reactor
                .send_vec(self.sock.as_raw_fd(), bufs, skip, me, TAG_SEND);
        } else if st.phase == Phase::Closing && !st.tx.in_flight {
            drop(st);
            let _ = shutdown_socket(&self.sock);
        } else {
            drop(st);
        }
        if rearm {
            self.post_recv();
        }
    }

    /// Ends the connection: stop reading, send what is queued, then shut the socket.
    fn close(&self, why: &str) {
        let mut st = self.st.borrow_mut();
        self.close_locked(&mut st, why);
        drop(st);
        self.mark_dirty();
    }

    /// [`Conn::close`] for a caller that holds the state (and marks the connection dirty
    /// afterwards, as every receive path does). Whatever ends a queue (Disconnect, a
    /// termination request from either side, a socket error, a keep-alive timeout, a
    /// controller reset) ends it here, so its queue ID is free for a new Connect at once
    /// (NVMe-oF 1.1, section 3.3: a queue ID is in use from its Connect to the end of its queue).
    fn close_locked(&self, st: &mut State, why: &str) {
        if st.phase == Phase::Closing {
            return;
        }
        tracing::debug!(conn = self.id, qid = ?st.qid, "closing connection: {why}");
        st.phase = Phase::Closing;
        for t in [st.keep_alive_timer.take(), st.ic_timer.take()]
            .into_iter()
            .flatten()
        {
            self.reactor.cancel_timer(t);
        }
        if let (Some(ctrl), Some(qid)) = (st.ctrl.take(), st.qid) {
            ctrl.remove_hook(self.id);
            if let Some(c) = st.counters.take() {
                ctrl.counters.retire(&c);
            }
            if qid == 0 {
                ctrl.end("admin queue closed");
            } else {
                ctrl.io_queue_ended(qid, st.io_generation);
            }
        }
        CONNS.with(|c| {
            let mut c = c.borrow_mut();
            c.remove(&self.id);
            // The table does not keep the room of a past burst of connections.
            let n = c.len();
            if c.capacity() > 64 && n * 4 < c.capacity() {
                c.shrink_to(n * 2);
            }
        });
        // A host that stops reading would hold the last send (and so this connection) open
        // for ever: after `CLOSE_LINGER` the socket is shut, which fails that send.
        let me = self.me.clone();
        let t = self.reactor.call_after(CLOSE_LINGER, move || {
            if let Some(c) = me.upgrade() {
                c.st.borrow_mut().linger_timer = None;
                let _ = shutdown_socket(&c.sock);
            }
        });
        st.linger_timer = Some(t);
    }

    fn on_recv(&self, result: i32, payload: Payload) {
        let Payload::Buf(buf) = payload else { return };
        {
            let mut st = self.st.borrow_mut();
            st.rx = Some(buf);
            if st.phase == Phase::Closing {
                return;
            }
        }
        if result <= 0 {
            let why = if result == 0 {
                "host closed the connection".to_string()
            } else {
                std::io::Error::from_raw_os_error(-result).to_string()
            };
            self.close(&why);
            return;
        }
        capsule::process_rx(self);
        {
            let mut st = self.st.borrow_mut();
            st.rearm_recv = !st.paused;
        }
        self.mark_dirty();
    }

    fn on_sent(&self, result: i32, payload: Payload) {
        let Payload::Vec(bufs) = payload else { return };
        let mut st = self.st.borrow_mut();
        match usize::try_from(result) {
            Ok(n) => st.tx.sent(bufs, n),
            Err(_) => {
                st.tx.abandon(bufs);
                drop(st);
                self.close("send failed");
                let _ = shutdown_socket(&self.sock);
                return;
            }
        }
        let resume = st.paused && st.tx.held() < self.unsent_limit();
        if resume {
            // The host read: handle what is buffered, then read again unless that paused it.
            st.paused = false;
            drop(st);
            capsule::process_rx(self);
            let mut st = self.st.borrow_mut();
            st.rearm_recv = !st.paused;
        } else {
            drop(st);
        }
        self.mark_dirty();
    }

    /// The send queue's bound (back-pressure): `max_unsent_bytes`, at least 64 KiB.
    fn unsent_limit(&self) -> usize {
        usize::try_from(self.transport.max_unsent_bytes)
            .unwrap_or(usize::MAX)
            .max(64 << 10)
    }

    /// Called (on this reactor) when the controller changed: failed, or has an event.
    fn poke(&self) {
        let ctrl = self.st.borrow().ctrl.clone();
        let Some(ctrl) = ctrl else { return };
        if ctrl.is_failed() {
            let why = ctrl.fail_reason().unwrap_or_default();
            self.close(&format!("controller failed: {why}"));
            return;
        }
        let (qid, generation) = {
            let st = self.st.borrow();
            (st.qid, st.io_generation)
        };
        if qid != Some(0) && ctrl.io_queue_deleted(generation) {
            // NVMe Base 2.0, section 3.7.2: a controller reset deletes the I/O queues.
            self.close("I/O queue deleted by a controller reset");
            return;
        }
        capsule::deliver_events(self, &ctrl);
        self.mark_dirty();
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        LIVE.with(|l| l.set(l.get().saturating_sub(1)));
        // The linger timer holds a weak reference, which would keep this allocation until it
        // fires: cancel it with the connection.
        if let Some(t) = self.st.get_mut().linger_timer.take() {
            self.reactor.cancel_timer(t);
        }
    }
}

impl OpHandler for Conn {
    fn op_done(&self, tag: u64, result: i32, payload: Payload) {
        match tag {
            TAG_RECV => self.on_recv(result, payload),
            TAG_SEND => self.on_sent(result, payload),
            _ => {}
        }
    }
}

impl IoSink for Conn {
    fn io_done(&self, tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        io::io_done(self, tag, io, result);
        self.mark_dirty();
    }
}
