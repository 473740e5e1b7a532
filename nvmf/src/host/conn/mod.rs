//! A host queue pair on a reactor: the socket, the receive loop, batched sends, command
//! timeouts and the connect sequence (TCP, ICReq / ICResp, Fabrics Connect).
//!
//! Like the target's connections, a [`Conn`] lives on one reactor (`Rc` + `RefCell`, no
//! locks): one `recv` is always outstanding into a connection buffer; PDUs queued during a
//! reactor pass go out from the connection's poller, one `sendmsg` of at most 64 buffers in
//! flight at a time. The protocol itself is
//! the sans-IO [`QueueCore`]; this file only moves bytes and time to and from it.
//!
//! The TCP connect is a blocking `connect` with a timeout on a short-lived helper thread (the
//! reactor never blocks); the socket is handed to the reactor with a message. Each socket
//! gets a generation: completions of operations on an older socket are recognised and only
//! release that socket, which is kept open (after `shutdown`) until its operations return.

mod setup;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_bdev::{IoBuf, SgList};
use shoal_reactor::ops::{OpHandler, Payload};
use shoal_reactor::{PollStatus, Reactor, TimerId, shutdown_socket};

use super::cmd::Dir;
use super::error::{HostError, ProtocolError};
use super::queue::{Finished, Gate, Limits, Outcome, QueueCore, RawCompletion, Waiter, Work};
use super::shared::CtrlShared;
use crate::wire::pdu::Role;

/// Where a queue pair is in its life.
#[derive(Debug, Clone)]
pub(crate) enum Phase {
    /// No connection; requests wait.
    Down,
    /// TCP connect in progress (helper thread).
    Tcp,
    /// ICReq sent, waiting for the ICResp.
    Ic,
    /// Fabrics Connect sent.
    Connect,
    /// Connected: commands flow.
    Live,
    /// Given up: requests fail with this error until a reconnect succeeds.
    Failed(HostError),
    /// Closed by its user.
    Closed,
}

/// The state of a queue pair as its user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueState {
    /// Connecting (TCP, IC exchange or Fabrics Connect).
    Connecting,
    /// Connected.
    Connected,
    /// Not connected; waiting for the controller to come back. Requests are held.
    Disconnected,
    /// Failed; requests fail.
    Failed,
    /// Closed.
    Closed,
}

/// Called once when a connect attempt ends: the controller ID, or why it failed.
pub(crate) type ConnectDone = Box<dyn FnOnce(Result<u16, HostError>)>;

/// What a queue pair is for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnConfig {
    pub(crate) qid: u16,
    /// Queue entries (SQSIZE + 1).
    pub(crate) depth: u16,
    /// Keep-alive timeout for Connect (admin queue only), in ms.
    pub(crate) kato_ms: u32,
    /// Command timeout.
    pub(crate) timeout: Duration,
}

struct Sock {
    stream: TcpStream,
    epoch: u64,
    recv: bool,
    send: bool,
}

struct State {
    core: QueueCore,
    phase: Phase,
    sock: Option<Sock>,
    /// Shut-down sockets whose ring operations have not returned yet.
    retired: Vec<Sock>,
    epoch: u64,
    rx: Option<IoBuf>,
    rx_pos: usize,
    /// The next `recv` waits for this pass's flush, so that it is queued after the commands
    /// the received answers made room for (the kernel runs a ring's entries in order, and a
    /// `recv` on an empty socket first tries, then arms a poll).
    rearm_recv: bool,
    dirty: bool,
    timeout_timer: Option<TimerId>,
    connect_timer: Option<TimerId>,
    on_connect: Option<ConnectDone>,
    /// Association (controller generation) of the current or last connection.
    pub(crate) assoc: u64,
    spare: Vec<Finished>,
}

/// One queue pair (admin or I/O) on the current reactor.
pub(crate) struct Conn {
    me: Weak<Conn>,
    pub(crate) id: u64,
    pub(crate) reactor: Reactor,
    pub(crate) ctrl: Arc<CtrlShared>,
    pub(crate) cfg: ConnConfig,
    st: RefCell<State>,
    poller: Cell<Option<u64>>,
    /// Closed by its owner (possibly from inside the owner's own call, e.g. a nexus swapping
    /// channels in `submit`): completions from now on go through the reactor loop, never
    /// straight into a sink that may be borrowed further up the stack.
    closing: Cell<bool>,
}

thread_local! {
    static CONNS: RefCell<HashMap<u64, Weak<Conn>>> = RefCell::new(HashMap::new());
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Runs `f` on the live queue pair `id` of the current reactor.
pub(crate) fn with_conn(id: u64, f: impl FnOnce(&Rc<Conn>)) {
    // `try_with`: at thread exit the table may already be gone while other thread-locals
    // (a reactor's admin queues) still drop their connections.
    let conn = CONNS
        .try_with(|c| c.borrow().get(&id).and_then(Weak::upgrade))
        .ok()
        .flatten();
    if let Some(c) = conn {
        f(&c);
    }
}

const KIND_RECV: u64 = 0;
const KIND_SEND: u64 = 1;

fn tag(epoch: u64, kind: u64) -> u64 {
    (epoch << 1) | kind
}

/// A fresh queue pair identifier.
pub(crate) fn next_conn_id() -> u64 {
    NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Conn {
    /// A queue pair on `reactor` (the current one), not connected yet.
    pub(crate) fn new(
        ctrl: Arc<CtrlShared>,
        reactor: &Reactor,
        cfg: ConnConfig,
        limits: Limits,
    ) -> Rc<Conn> {
        Self::with_id(next_conn_id(), ctrl, reactor, cfg, limits)
    }

    /// Like [`Conn::new`] with an identifier from [`next_conn_id`].
    pub(crate) fn with_id(
        id: u64,
        ctrl: Arc<CtrlShared>,
        reactor: &Reactor,
        cfg: ConnConfig,
        limits: Limits,
    ) -> Rc<Conn> {
        // SQ flow control enabled (admin queue): the SQ holds SQSIZE = depth - 1 commands.
        let slots = if limits.sq_flow_disabled {
            cfg.depth
        } else {
            cfg.depth.saturating_sub(1).max(1)
        };
        let core = QueueCore::new(cfg.qid, slots, limits, cfg.timeout);
        let conn = Rc::new_cyclic(|me| Conn {
            me: me.clone(),
            closing: Cell::new(false),
            id,
            reactor: reactor.clone(),
            ctrl,
            cfg,
            st: RefCell::new(State {
                core,
                phase: Phase::Down,
                sock: None,
                retired: Vec::new(),
                epoch: 0,
                rx: None,
                rx_pos: 0,
                rearm_recv: false,
                dirty: false,
                timeout_timer: None,
                connect_timer: None,
                on_connect: None,
                assoc: 0,
                spare: Vec::new(),
            }),
            poller: Cell::new(None),
        });
        let weak = Rc::downgrade(&conn);
        let poller = reactor.add_poller(move || match weak.upgrade() {
            Some(c) => c.flush(),
            None => PollStatus::Idle,
        });
        conn.poller.set(Some(poller));
        CONNS.with(|c| c.borrow_mut().insert(id, Rc::downgrade(&conn)));
        conn
    }

    /// The user-visible state.
    pub(crate) fn state(&self) -> QueueState {
        match self.st.borrow().phase {
            Phase::Down => QueueState::Disconnected,
            Phase::Tcp | Phase::Ic | Phase::Connect => QueueState::Connecting,
            Phase::Live => QueueState::Connected,
            Phase::Failed(_) => QueueState::Failed,
            Phase::Closed => QueueState::Closed,
        }
    }

    /// Association of the last connection.
    pub(crate) fn assoc(&self) -> u64 {
        self.st.borrow().assoc
    }

    /// Requests not finished.
    pub(crate) fn pending_requests(&self) -> usize {
        self.st.borrow().core.requests()
    }

    /// Updates the transfer limits (after Identify Controller).
    pub(crate) fn set_transfer_limits(&self, in_capsule: u32, max_xfer: u32) {
        let mut st = self.st.borrow_mut();
        st.core.limits.in_capsule = in_capsule;
        st.core.limits.max_xfer = max_xfer;
    }

    /// Submits a request. Never completes it from inside this call.
    pub(crate) fn submit(&self, work: Work, bufs: SgList, waiter: Waiter) {
        let mut st = self.st.borrow_mut();
        let err = match &st.phase {
            Phase::Failed(e) => Some(e.clone()),
            Phase::Closed => Some(HostError::Closed),
            _ => None,
        };
        if let Some(e) = err {
            drop(st);
            self.fail_later(work, bufs, waiter, e);
            return;
        }
        st.core.push(work, bufs, waiter);
        if matches!(st.phase, Phase::Live) {
            st.core.issue(Instant::now());
            drop(st);
            self.mark_dirty();
            self.arm_timeout();
        }
    }

    /// Completes a request with `err` on a later pass of the reactor.
    fn fail_later(&self, work: Work, bufs: SgList, waiter: Waiter, err: HostError) {
        let mut core = QueueCore::new(0, 1, self.st.borrow().core.limits, Duration::ZERO);
        core.push(work, bufs, waiter);
        core.fail_all(&err);
        for f in core.done.drain(..) {
            self.deliver_later(f);
        }
    }

    /// Hands a finished request to the reactor loop, to be delivered on a later pass.
    fn deliver_later(&self, f: Finished) {
        match (f.waiter, f.outcome) {
            (Waiter::Sink { sink, tag }, Outcome::Io(io, r)) => {
                self.reactor.complete_io(sink, tag, io, r);
            }
            (waiter, outcome) => {
                self.reactor
                    .defer(move || Finished { waiter, outcome }.deliver());
            }
        }
    }

    /// Submits one raw command with a callback (control path).
    pub(crate) fn raw(
        &self,
        sqe: crate::wire::spec::Sqe,
        dir: Dir,
        bufs: SgList,
        cb: impl FnOnce(Result<RawCompletion, HostError>) + 'static,
    ) {
        let len = u32::try_from(shoal_bdev::buf::sg_len(&bufs)).unwrap_or(u32::MAX);
        let len = if dir == Dir::None { 0 } else { len };
        let work = Work::Raw {
            sqe,
            dir,
            len,
            connect: false,
        };
        self.submit(work, bufs, Waiter::Callback(Box::new(cb)));
    }

    /// Delivers finished requests, outside the borrow.
    fn deliver(&self) {
        let mut done = {
            let mut st = self.st.borrow_mut();
            if st.core.done.is_empty() {
                return;
            }
            let spare = std::mem::take(&mut st.spare);
            std::mem::replace(&mut st.core.done, spare)
        };
        let later = self.closing.get();
        for f in done.drain(..) {
            if later {
                self.deliver_later(f);
            } else {
                f.deliver();
            }
        }
        let mut st = self.st.borrow_mut();
        if st.spare.capacity() < done.capacity() {
            st.spare = done;
        }
    }

    fn mark_dirty(&self) {
        self.st.borrow_mut().dirty = true;
    }

    /// The connection's poller: sends what is queued, then re-arms the receive if the last
    /// one was handled in this pass.
    fn flush(&self) -> PollStatus {
        let status = self.flush_tx();
        let rearm = std::mem::take(&mut self.st.borrow_mut().rearm_recv);
        if rearm {
            self.post_recv();
            return PollStatus::Busy;
        }
        status
    }

    fn flush_tx(&self) -> PollStatus {
        let Some(me) = self.me.upgrade() else {
            return PollStatus::Idle;
        };
        let mut st = self.st.borrow_mut();
        if !st.dirty {
            // Commands in flight: their answers are due within the target's latency, so the
            // reactor should not sleep for them (it would answer tens of microseconds late).
            return if matches!(st.phase, Phase::Live) && st.core.outstanding() > 0 {
                PollStatus::Waiting
            } else {
                PollStatus::Idle
            };
        }
        st.dirty = false;
        let epoch = st.epoch;
        let Some(fd) = st.sock.as_ref().map(|s| s.stream.as_raw_fd()) else {
            return PollStatus::Idle;
        };
        let Some((bufs, skip)) = st.core.tx.take_batch() else {
            return PollStatus::Idle;
        };
        if let Some(s) = st.sock.as_mut() {
            s.send = true;
        }
        drop(st);
        self.reactor
            .send_vec(fd, bufs, skip, me, tag(epoch, KIND_SEND));
        PollStatus::Busy
    }

    fn post_recv(&self) {
        let Some(me) = self.me.upgrade() else { return };
        let mut st = self.st.borrow_mut();
        let epoch = st.epoch;
        let Some(fd) = st.sock.as_ref().map(|s| s.stream.as_raw_fd()) else {
            return;
        };
        let Some(mut buf) = st.rx.take() else { return };
        let pos = st.rx_pos;
        if pos > 0 {
            let len = buf.len();
            buf.full_mut().copy_within(pos..len, 0);
            buf.set_len(len - pos);
            st.rx_pos = 0;
        }
        if let Some(s) = st.sock.as_mut() {
            s.recv = true;
        }
        drop(st);
        self.reactor.recv(fd, buf, me, tag(epoch, KIND_RECV));
    }

    /// Drops the connection: the socket is shut down, commands in flight are requeued (raw
    /// ones fail with `err`). The queue pair is `Down` afterwards unless closed or failed.
    pub(crate) fn teardown(&self, err: &HostError) {
        {
            let mut st = self.st.borrow_mut();
            st.rearm_recv = false;
            if let Some(s) = st.sock.take() {
                let _ = shutdown_socket(&s.stream);
                if s.recv || s.send {
                    st.retired.push(s);
                }
            }
            for t in [st.connect_timer.take(), st.timeout_timer.take()]
                .into_iter()
                .flatten()
            {
                self.reactor.cancel_timer(t);
            }
            st.rx = None;
            st.rx_pos = 0;
            st.core.reset(err);
            if matches!(
                st.phase,
                Phase::Tcp | Phase::Ic | Phase::Connect | Phase::Live
            ) {
                st.phase = Phase::Down;
            }
        }
        self.deliver();
    }

    /// A fatal error on the connection: tear it down and tell the controller (or the
    /// connect attempt in progress).
    fn fatal(&self, err: HostError) {
        let (epoch, phase) = {
            let st = self.st.borrow();
            (st.epoch, st.phase.clone())
        };
        match phase {
            Phase::Tcp | Phase::Ic | Phase::Connect => self.connect_failed(epoch, err),
            Phase::Live => {
                tracing::warn!(qid = self.cfg.qid, "connection failed: {err}");
                self.send_term_req(&err);
                let assoc = self.assoc();
                self.teardown(&err);
                self.ctrl.report_failure(assoc, err);
            }
            _ => {}
        }
    }

    /// Best effort: an H2CTermReq naming a framing error (NVMe-oF 1.1 section 7.4.7), sent
    /// without blocking the reactor just before the socket is shut down.
    fn send_term_req(&self, err: &HostError) {
        let HostError::Protocol(ProtocolError::Malformed(e)) = err else {
            return;
        };
        let Some(pdu) = e.term_req_pdu(Role::Host) else {
            return;
        };
        let mut out = [0u8; 64];
        let Ok(enc) = pdu.encode_header(0, &Default::default(), &mut out) else {
            return;
        };
        let st = self.st.borrow();
        if let (Some(s), Some(bytes)) = (st.sock.as_ref(), out.get(..enc.header_len)) {
            let mut w = &s.stream;
            if w.set_nonblocking(true).is_ok() {
                let _ = std::io::Write::write(&mut w, bytes);
            }
        }
    }

    /// Gives up: every request fails with `err`, and so do new ones until a reconnect.
    pub(crate) fn fail(&self, err: HostError) {
        self.teardown(&err);
        {
            let mut st = self.st.borrow_mut();
            st.core.fail_all(&err);
            if !matches!(st.phase, Phase::Closed) {
                st.phase = Phase::Failed(err);
            }
        }
        self.deliver();
    }

    /// Closes the queue pair for good.
    pub(crate) fn close(&self) {
        self.closing.set(true);
        self.teardown(&HostError::Closed);
        {
            let mut st = self.st.borrow_mut();
            st.core.fail_all(&HostError::Closed);
            st.phase = Phase::Closed;
        }
        self.deliver();
        if let Some(p) = self.poller.take() {
            self.reactor.remove_poller(p);
        }
        // Ignored at thread exit, when the table is already gone.
        let _ = CONNS.try_with(|c| c.borrow_mut().remove(&self.id));
    }

    fn arm_timeout(&self) {
        let mut st = self.st.borrow_mut();
        if st.timeout_timer.is_some() || st.core.outstanding() == 0 {
            return;
        }
        let tick = (self.cfg.timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let weak = self.me.clone();
        st.timeout_timer = Some(self.reactor.every(tick, move || {
            weak.upgrade().is_some_and(|c| c.check_timeouts())
        }));
    }

    /// The periodic timeout check; returns whether to keep checking.
    fn check_timeouts(&self) -> bool {
        let expired = {
            let mut st = self.st.borrow_mut();
            if !matches!(st.phase, Phase::Live) || st.core.outstanding() == 0 {
                st.timeout_timer = None;
                return false;
            }
            let cid = st.core.expired(Instant::now());
            if let Some(cid) = cid {
                let t = st.core.timeout;
                st.core.fail_request_of(cid, HostError::Timeout(t));
                st.timeout_timer = None;
            }
            cid
        };
        match expired {
            Some(cid) => {
                tracing::warn!(qid = self.cfg.qid, cid, "command timed out");
                self.fatal(HostError::Timeout(self.cfg.timeout));
                false
            }
            None => true,
        }
    }

    fn retired_done(&self, epoch: u64, kind: u64) {
        let mut st = self.st.borrow_mut();
        if let Some(i) = st.retired.iter().position(|s| s.epoch == epoch)
            && let Some(s) = st.retired.get_mut(i)
        {
            if kind == KIND_RECV {
                s.recv = false;
            } else {
                s.send = false;
            }
            if !s.recv && !s.send {
                st.retired.swap_remove(i);
            }
        }
    }

    fn on_recv(&self, epoch: u64, result: i32, payload: Payload) {
        let Payload::Buf(buf) = payload else { return };
        {
            let mut st = self.st.borrow_mut();
            let current = st.sock.as_ref().is_some_and(|s| s.epoch == epoch);
            if !current {
                drop(st);
                self.retired_done(epoch, KIND_RECV);
                return;
            }
            if let Some(s) = st.sock.as_mut() {
                s.recv = false;
            }
            st.rx = Some(buf);
        }
        if result <= 0 {
            let err = if result == 0 {
                HostError::ConnectionClosed
            } else {
                HostError::io("receive", std::io::Error::from_raw_os_error(-result))
            };
            self.fatal(err);
            return;
        }
        let step = {
            let mut st = self.st.borrow_mut();
            let st = &mut *st;
            let was_ic = matches!(st.phase, Phase::Ic);
            let rx = st.rx.take();
            let r = match &rx {
                Some(b) => {
                    let input = b.as_slice().get(st.rx_pos..).unwrap_or(&[]);
                    st.core.process_rx(input, Instant::now())
                }
                None => Ok(0),
            };
            st.rx = rx;
            st.dirty = true;
            match r {
                Ok(used) => {
                    st.rx_pos += used;
                    if matches!(st.phase, Phase::Live) {
                        // Completions freed slots: issue what waits for them.
                        st.core.issue(Instant::now());
                    }
                    if was_ic && st.core.gate == Gate::Connect {
                        st.phase = Phase::Connect;
                    }
                    let full = st.rx.as_ref().is_some_and(|b| b.len() == b.capacity());
                    if st.rx_pos == 0 && full {
                        // A full buffer without a complete PDU: the deframer's limits make
                        // this impossible for a valid PDU, so refuse rather than stall.
                        Err(ProtocolError::UnexpectedPdu("oversized").into())
                    } else {
                        Ok(())
                    }
                }
                Err(e) => Err(e),
            }
        };
        self.deliver();
        match step {
            Ok(_) => {
                {
                    let mut st = self.st.borrow_mut();
                    st.rearm_recv = true;
                    st.dirty = true;
                }
                self.arm_timeout();
            }
            Err(e) => self.fatal(e),
        }
    }

    fn on_sent(&self, epoch: u64, result: i32, payload: Payload) {
        let Payload::Vec(bufs) = payload else { return };
        let mut st = self.st.borrow_mut();
        let current = st.sock.as_ref().is_some_and(|s| s.epoch == epoch);
        if !current {
            st.core.tx.abandon(bufs);
            st.dirty = true;
            drop(st);
            self.retired_done(epoch, KIND_SEND);
            return;
        }
        if let Some(s) = st.sock.as_mut() {
            s.send = false;
        }
        match usize::try_from(result) {
            Ok(n) if n > 0 => {
                st.core.tx.sent(bufs, n);
                if st.core.tx.has_pending() {
                    st.dirty = true;
                }
            }
            _ => {
                st.core.tx.abandon(bufs);
                drop(st);
                let err = if result == 0 {
                    HostError::ConnectionClosed
                } else {
                    HostError::io("send", std::io::Error::from_raw_os_error(-result))
                };
                self.fatal(err);
            }
        }
    }
}

impl OpHandler for Conn {
    fn op_done(&self, tag: u64, result: i32, payload: Payload) {
        let (epoch, kind) = (tag >> 1, tag & 1);
        if kind == KIND_RECV {
            self.on_recv(epoch, result, payload);
        } else {
            self.on_sent(epoch, result, payload);
        }
    }
}
