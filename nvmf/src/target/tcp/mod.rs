//! NVMe/TCP queue pairs on Shoal's reactors (target side): the thin glue between a socket on
//! a reactor and the sans-IO [`qpair::QueuePair`].
//!
//! A [`Conn`] is one TCP connection, i.e. one NVMe queue pair, on one reactor. It owns the
//! socket, the receive buffer and a timer, and only moves bytes, completions and time:
//! - **receive**: one `recv` into the receive buffer is always outstanding while the queue
//!   pair [wants to read](qpair::QueuePair::wants_read); the bytes go to
//!   [`qpair::QueuePair::handle_rx`], which says how many it consumed;
//! - **send**: what the queue pair queued goes out in `sendmsg`s of at most 64 buffers, one in
//!   flight at a time (a per-reactor poller flushes the connections that queued something;
//!   see `wire::txq` for why the bound);
//! - **actions**: block I/O is submitted on the reactor's channel to the namespace with the
//!   connection as its sink; `Closed` takes the connection out of the reactor's table;
//!   `Shutdown` shuts the socket;
//! - **time**: one reactor timer at the queue pair's [next deadline](qpair::QueuePair::poll_timeout).
//!
//! A connection belongs to its target's [`TcpTransport`], whose per-reactor tables list it
//! (for `nvmf_subsystem_get_qpairs`, listener removal and shutdown). Only the flush list is
//! the reactor's own, shared by every transport on it.

pub mod limits;
pub mod listener;
pub mod qpair;
mod transport;

pub use transport::{QpairInfo, TcpTransport};

use std::cell::RefCell;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

use shoal_bdev::{Bdev, BdevError, BdevIo, IoBuf, IoChannel, IoSink, open_channel};
use shoal_reactor::ops::{OpHandler, Payload};
use shoal_reactor::{PollStatus, Reactor, TimerId, shutdown_socket};

use crate::target::subsystem::ListenAddress;
use qpair::{Action, Phase, QueuePair, QueuePairConfig};

/// Per-connection state behind the `RefCell`.
struct State {
    qp: QueuePair<Rc<IoChannel>>,
    /// The receive buffer, absent while a `recv` holds it.
    rx: Option<IoBuf>,
    /// Bytes of `rx` already consumed.
    rx_pos: usize,
    /// The next `recv` waits for this pass's flush: queued after the answers, it does not
    /// delay them (the kernel runs a ring's entries in order, and a `recv` on an empty
    /// socket first tries, then arms a poll).
    rearm_recv: bool,
    /// The connection is on this pass's flush list.
    dirty: bool,
    /// The reactor timer armed for the queue pair's next deadline.
    timer: Option<(Instant, TimerId)>,
}

/// One NVMe/TCP connection (queue pair) on the current reactor.
pub struct Conn {
    me: Weak<Conn>,
    id: u64,
    sock: TcpStream,
    reactor: Reactor,
    listen: ListenAddress,
    /// The [`TcpTransport`] whose tables hold this connection.
    transport: u64,
    st: RefCell<State>,
    /// This connection's place in its listener's counts, given back when it is dropped.
    _ticket: limits::ConnTicket,
}

thread_local! {
    static DIRTY: RefCell<Vec<Rc<Conn>>> = const { RefCell::new(Vec::new()) };
    /// An empty vector swapped with `DIRTY` at each flush, so flushing allocates nothing.
    static SPARE: RefCell<Vec<Rc<Conn>>> = const { RefCell::new(Vec::new()) };
    static FLUSHER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A connection number unique in the process (the key of a controller's hooks).
pub(crate) fn next_conn_id() -> u64 {
    NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn open_rc(bdev: &Arc<dyn Bdev>) -> Result<Rc<IoChannel>, BdevError> {
    open_channel(bdev).map(Rc::new)
}

/// Starts serving an accepted connection of `transport` on the current reactor.
fn start_conn(transport: &TcpTransport, accepted: limits::Accepted) {
    let target = transport.target().clone();
    let tid = transport.id();
    let limits::Accepted { fd, listen, ticket } = accepted;
    let Some(reactor) = Reactor::current() else {
        tracing::error!("start_conn called off a reactor");
        return;
    };
    let sock = TcpStream::from(fd);
    let _ = sock.set_nodelay(true);
    let transport = target.transport();
    install_flusher(&reactor);
    let id = next_conn_id();
    let handle = reactor.handle();
    let cfg = QueuePairConfig {
        id,
        target,
        listen: listen.clone(),
        transport,
        waker: Arc::new(move || {
            handle.send(move || with_conn(tid, id, |c| c.poke()));
        }),
        open: open_rc,
    };
    let qp = QueuePair::new(cfg, Instant::now());
    let conn = Rc::new_cyclic(|me| Conn {
        me: me.clone(),
        id,
        sock,
        reactor: reactor.clone(),
        listen,
        transport: tid,
        st: RefCell::new(State {
            rx: Some(IoBuf::with_capacity(qp.rx_capacity())),
            qp,
            rx_pos: 0,
            rearm_recv: false,
            dirty: false,
            timer: None,
        }),
        _ticket: ticket,
    });
    transport::with_tables(tid, |t| {
        t.conns.insert(id, Rc::downgrade(&conn));
        t.live += 1;
    });
    conn.sync_timer();
    conn.post_recv();
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

/// Runs `f` on the live connection `id` of transport `tid` on the current reactor.
fn with_conn(tid: u64, id: u64, f: impl FnOnce(&Rc<Conn>)) {
    let conn = transport::with_tables(tid, |t| t.conns.get(&id).and_then(Weak::upgrade));
    if let Some(c) = conn {
        f(&c);
    }
}

const TAG_RECV: u64 = u64::MAX;
const TAG_SEND: u64 = u64::MAX - 1;

impl Conn {
    /// What this queue pair is connected to.
    fn info(&self) -> QpairInfo {
        let st = self.st.borrow();
        let qp = &st.qp;
        QpairInfo {
            subnqn: qp.subsystem().map(|s| s.nqn.clone()),
            cntlid: qp.controller().map(|c| c.cntlid),
            qid: qp.qid(),
            hostnqn: qp.controller().map(|c| c.hostnqn.clone()),
            listen: self.listen.clone(),
            peer: self.sock.peer_addr().ok(),
            state: if qp.qid().is_some() {
                "active"
            } else {
                "connecting"
            },
        }
    }

    /// Whether the connection arrived on `listen`.
    fn arrived_on(&self, listen: &ListenAddress) -> bool {
        self.listen.traddr == listen.traddr && self.listen.trsvcid == listen.trsvcid
    }

    /// Whether the connection is to subsystem `nqn`.
    fn serves(&self, nqn: &str) -> bool {
        self.st
            .borrow()
            .qp
            .subsystem()
            .is_some_and(|s| s.nqn == nqn)
    }

    fn rc(&self) -> Option<Rc<Conn>> {
        self.me.upgrade()
    }

    fn post_recv(&self) {
        let Some(me) = self.rc() else { return };
        let mut st = self.st.borrow_mut();
        if st.qp.phase() == Phase::Closing {
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
        let want = st.qp.rx_capacity();
        if buf.capacity() < want {
            let mut big = IoBuf::with_capacity(want);
            big.set_len(buf.len());
            big.as_mut_slice().copy_from_slice(buf.as_slice());
            buf = big;
        }
        drop(st);
        self.reactor.recv(self.sock.as_raw_fd(), buf, me, TAG_RECV);
    }

    /// Feeds the received bytes not yet consumed to the queue pair.
    fn feed_rx(&self, now: Instant) {
        let mut st = self.st.borrow_mut();
        let Some(rx) = st.rx.take() else { return };
        let pos = st.rx_pos;
        let used = st
            .qp
            .handle_rx(rx.as_slice().get(pos..).unwrap_or(&[]), now);
        st.rx_pos = pos + used;
        st.rx = Some(rx);
        st.rearm_recv = st.qp.wants_read();
    }

    /// Carries out what the queue pair asked for, re-arms the timer for its next deadline,
    /// and puts the connection on this pass's flush list.
    fn drive(&self) {
        loop {
            let action = self.st.borrow_mut().qp.poll_action();
            match action {
                None => break,
                Some(Action::Submit { chan, io, tag }) => {
                    if let Some(me) = self.rc() {
                        chan.submit(io, me as Rc<dyn IoSink>, tag);
                    }
                }
                Some(Action::Closed { .. }) => transport::with_tables(self.transport, |t| {
                    let c = &mut t.conns;
                    c.remove(&self.id);
                    // The table does not keep the room of a past burst of connections.
                    let n = c.len();
                    if c.capacity() > 64 && n * 4 < c.capacity() {
                        c.shrink_to(n * 2);
                    }
                }),
                Some(Action::Shutdown) => {
                    let _ = shutdown_socket(&self.sock);
                }
            }
        }
        self.sync_timer();
        self.mark_dirty();
    }

    /// Arms the reactor timer for the queue pair's next deadline, if that moved.
    fn sync_timer(&self) {
        let mut st = self.st.borrow_mut();
        let want = st.qp.poll_timeout();
        if want == st.timer.map(|t| t.0) {
            return;
        }
        if let Some((_, t)) = st.timer.take() {
            self.reactor.cancel_timer(t);
        }
        if let Some(at) = want {
            let me = self.me.clone();
            let after = at.saturating_duration_since(Instant::now());
            let t = self.reactor.call_after(after, move || {
                if let Some(c) = me.upgrade() {
                    c.st.borrow_mut().timer = None;
                    c.st.borrow_mut().qp.handle_timeout(Instant::now());
                    c.drive();
                }
            });
            st.timer = Some((at, t));
        }
    }

    /// Marks the connection as having queued output for this pass's flush.
    fn mark_dirty(&self) {
        if let Some(me) = self.rc() {
            let mut st = self.st.borrow_mut();
            if !st.dirty {
                st.dirty = true;
                drop(st);
                DIRTY.with(|d| d.borrow_mut().push(me));
            }
        }
    }

    fn flush_tx(&self) {
        let Some(me) = self.rc() else { return };
        let mut st = self.st.borrow_mut();
        st.dirty = false;
        let rearm = std::mem::take(&mut st.rearm_recv);
        if let Some((bufs, skip)) = st.qp.poll_transmit() {
            drop(st);
            self.reactor
                .send_vec(self.sock.as_raw_fd(), bufs, skip, me, TAG_SEND);
        } else if st.qp.finished() {
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
        self.st.borrow_mut().qp.close(why, Instant::now());
        self.drive();
    }

    fn on_recv(&self, result: i32, payload: Payload) {
        let Payload::Buf(buf) = payload else { return };
        {
            let mut st = self.st.borrow_mut();
            st.rx = Some(buf);
            if st.qp.phase() == Phase::Closing {
                return;
            }
        }
        let now = Instant::now();
        if result <= 0 {
            let why = if result == 0 {
                "host closed the connection".to_string()
            } else {
                std::io::Error::from_raw_os_error(-result).to_string()
            };
            self.st.borrow_mut().qp.handle_peer_closed(&why, now);
        } else {
            self.feed_rx(now);
        }
        self.drive();
    }

    fn on_sent(&self, result: i32, payload: Payload) {
        let Payload::Vec(bufs) = payload else { return };
        let now = Instant::now();
        let resume = self.st.borrow_mut().qp.handle_sent(bufs, result, now);
        if resume {
            // The host read: handle what is buffered, then read again unless that paused it.
            self.feed_rx(now);
        }
        self.drive();
    }

    /// Called (on this reactor) when the controller changed: failed, or has an event.
    fn poke(&self) {
        self.st.borrow_mut().qp.poke(Instant::now());
        self.drive();
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        transport::conn_dropped(self.transport);
        // The timer holds a weak reference, which would keep this allocation until it fires:
        // cancel it with the connection.
        if let Some((_, t)) = self.st.get_mut().timer.take() {
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
        self.st.borrow_mut().qp.handle_io_done(tag, io, result);
        self.mark_dirty();
    }
}
