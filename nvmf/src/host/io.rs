//! I/O queue pairs: what `shoal-perf` drives and what a [`super::RemoteBdev`] channel wraps.
//!
//! An [`IoQueuePair`] is one NVMe I/O queue (one TCP connection) on the reactor that opened
//! it. Its interface is the bdev layer's: [`IoQueuePair::submit`] takes a [`BdevIo`] with an
//! [`IoSink`] and a tag, and the sink gets the `BdevIo` back, buffers included, on a later
//! pass of the reactor loop (never from inside `submit`). Requests beyond the queue depth
//! wait in a FIFO; while the controller reconnects they are held.
//!
//! The admin reactor's events reach the I/O queues here too: [`CtrlShared::notify_queues`]
//! sends a [`QueueEvent`] to each registered queue's reactor, where [`on_event`] acts on it.

use std::rc::Rc;
use std::sync::Arc;

use shoal_bdev::{BdevError, BdevIo, IoFlags, IoSink, IoType};
use shoal_reactor::Reactor;

use super::conn::{self, Conn, ConnConfig, QueueState, with_conn};
use super::error::HostError;
use super::info::{NamespaceInfo, ONCS_DSM, ONCS_WRITE_ZEROES};
use super::options::ControllerState;
use super::queue::{Limits, Waiter, Work};
use super::shared::{Controller, CtrlInner, CtrlShared, QueueEvent, QueueReg};

impl CtrlShared {
    /// Sends `ev` to every registered I/O queue, on its reactor.
    pub(crate) fn notify_queues(&self, ev: &QueueEvent) {
        let g = self.lock();
        for q in &g.queues {
            let (conn, ev) = (q.conn, ev.clone());
            q.handle.send(move || with_conn(conn, |c| on_event(c, ev)));
        }
    }
}

/// Handles a controller event on the queue's reactor.
pub(crate) fn on_event(c: &Rc<Conn>, ev: QueueEvent) {
    match ev {
        QueueEvent::Disconnect { assoc } => {
            if c.assoc() <= assoc
                && matches!(c.state(), QueueState::Connected | QueueState::Connecting)
            {
                c.teardown(&HostError::Reconnecting);
            }
        }
        QueueEvent::Reconnect {
            assoc,
            cntlid,
            in_capsule,
            max_xfer,
        } => {
            if c.state() == QueueState::Closed
                || (c.assoc() >= assoc
                    && matches!(c.state(), QueueState::Connected | QueueState::Connecting))
            {
                return;
            }
            c.set_transfer_limits(in_capsule, max_xfer);
            connect_io(c, cntlid, assoc);
        }
        QueueEvent::Fail(e) => c.fail(e),
    }
}

/// Connects an I/O queue under association `assoc`.
fn connect_io(c: &Rc<Conn>, cntlid: u16, assoc: u64) {
    let weak = Rc::downgrade(c);
    c.connect(
        cntlid,
        assoc,
        Box::new(move |r| {
            let Some(c) = weak.upgrade() else { return };
            match r {
                Ok(_) => tracing::debug!(qid = c.cfg.qid, "I/O queue connected"),
                // The controller refused this queue (NVMe-oF 1.1 section 3.3: e.g. a QID
                // beyond what Set Features granted): only this queue fails.
                Err(e @ HostError::ConnectRefused { .. }) => c.fail(e),
                Err(HostError::Closed) => {}
                // The connection itself failed: the association is suspect.
                Err(e) => c.ctrl.report_failure(assoc, e),
            }
        }),
    );
}

/// One I/O queue pair to a remote controller, on the reactor that opened it. Dropping it
/// closes the connection; requests still outstanding complete with `Closed`.
pub struct IoQueuePair {
    conn: Rc<Conn>,
    oncs: u16,
}

impl std::fmt::Debug for IoQueuePair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoQueuePair")
            .field("qid", &self.qid())
            .field("depth", &self.depth())
            .field("state", &self.state())
            .finish()
    }
}

impl IoQueuePair {
    /// Opens an I/O queue of `ctrl` on the current reactor. It connects in the background;
    /// requests submitted before it is connected wait. Fails if the controller granted no
    /// more queues, is lost or closed.
    pub fn open(ctrl: &Controller) -> Result<IoQueuePair, HostError> {
        let reactor = Reactor::current().ok_or(HostError::Reactor("not on a reactor thread"))?;
        Self::open_on(&ctrl.shared, &reactor)
    }

    pub(crate) fn open_on(
        shared: &Arc<CtrlShared>,
        reactor: &Reactor,
    ) -> Result<IoQueuePair, HostError> {
        if shared.discovery {
            return Err(HostError::Invalid(
                "a discovery controller has no I/O queues".into(),
            ));
        }
        let id = conn::next_conn_id();
        let (qid, state, assoc, cntlid, info) = {
            let mut g = shared.lock();
            match g.state {
                ControllerState::Failed => {
                    return Err(g.last_error.clone().unwrap_or(HostError::Closed));
                }
                ControllerState::Closed => return Err(HostError::Closed),
                _ => {}
            }
            let info = g
                .info
                .clone()
                .ok_or(HostError::NotReady("controller not identified"))?;
            let granted = info.io_queues;
            let in_use = |q: u16, g: &CtrlInner| g.queues.iter().any(|r| r.qid == q);
            let start = g.next_qid.clamp(1, granted.max(1));
            let qid = (0..granted)
                .map(|i| (start - 1 + i) % granted + 1)
                .find(|&q| !in_use(q, &g))
                .ok_or(HostError::NoQueues(granted))?;
            g.next_qid = qid % granted + 1;
            g.queues.push(QueueReg {
                conn: id,
                qid,
                handle: reactor.handle(),
            });
            (qid, g.state, g.assoc, g.cntlid, info)
        };
        // Queue entries: what was asked, within CAP.MQES + 1 and MAXCMD (when reported).
        let mut depth = u32::from(shared.opts.io_queue_depth).min(info.max_queue_entries);
        if info.maxcmd > 0 {
            depth = depth.min(u32::from(info.maxcmd));
        }
        let depth = u16::try_from(depth.max(2)).unwrap_or(u16::MAX);
        let cfg = ConnConfig {
            qid,
            depth,
            kato_ms: 0,
            timeout: shared.opts.io_timeout,
        };
        let limits = Limits {
            hdgst: false,
            ddgst: false,
            cpda: 0,
            maxh2cdata: crate::wire::pdu::ic::MIN_MAXH2CDATA,
            in_capsule: info.in_capsule,
            max_xfer: info.max_transfer,
            sq_flow_disabled: true,
        };
        let c = Conn::with_id(id, shared.clone(), reactor, cfg, limits);
        if state == ControllerState::Connected {
            connect_io(&c, cntlid, assoc);
        }
        Ok(IoQueuePair {
            conn: c,
            oncs: info.oncs,
        })
    }

    /// The queue ID.
    pub fn qid(&self) -> u16 {
        self.conn.cfg.qid
    }

    /// Queue entries, i.e. the most commands on the wire at once (SQ flow control is
    /// disabled, so all of them).
    pub fn depth(&self) -> u16 {
        self.conn.cfg.depth
    }

    /// The connection state.
    pub fn state(&self) -> QueueState {
        self.conn.state()
    }

    /// Requests submitted and not yet completed.
    pub fn outstanding(&self) -> usize {
        self.conn.pending_requests()
    }

    /// Whether the controller supports `io_type` (ONCS: Write Zeroes, Dataset Management).
    pub fn supports(&self, io_type: IoType) -> bool {
        match io_type {
            IoType::Read | IoType::Write | IoType::Flush => true,
            IoType::WriteZeroes => self.oncs & ONCS_WRITE_ZEROES != 0,
            IoType::Unmap => self.oncs & ONCS_DSM != 0,
        }
    }

    /// Submits `io` to namespace `ns`; `sink.io_done(tag, io, result)` follows on a later
    /// reactor pass. Reads and writes larger than the controller's MDTS are split. A request
    /// outside the namespace, with buffers that do not hold exactly its blocks, or for an
    /// operation the controller lacks, completes with the bdev layer's error for it.
    pub fn submit(&self, ns: &NamespaceInfo, mut io: BdevIo, sink: Rc<dyn IoSink>, tag: u64) {
        if let Err(e) = self.check(ns, &io) {
            self.conn.reactor.complete_io(sink, tag, io, Err(e));
            return;
        }
        let work = Work::Io {
            io_type: io.io_type,
            flags: io.flags,
            nsid: ns.nsid,
            block_size: ns.block_size,
            offset_blocks: io.offset_blocks,
            num_blocks: io.num_blocks,
            capacity: ns.num_blocks,
        };
        let bufs = std::mem::take(&mut io.bufs);
        self.conn.submit(work, bufs, Waiter::Sink { sink, tag });
    }

    fn check(&self, ns: &NamespaceInfo, io: &BdevIo) -> Result<(), BdevError> {
        if !self.supports(io.io_type) {
            return Err(BdevError::Unsupported(io.io_type));
        }
        let fua_ok = matches!(
            io.io_type,
            IoType::Read | IoType::Write | IoType::WriteZeroes
        );
        if !(io.flags.is_empty() || io.flags == IoFlags::FUA && fua_ok) {
            return Err(BdevError::UnsupportedFlags(io.flags, io.io_type));
        }
        if io.io_type == IoType::Flush {
            return Ok(());
        }
        let end = io.offset_blocks.checked_add(io.num_blocks);
        if io.num_blocks == 0 || end.is_none_or(|e| e > ns.num_blocks) {
            return Err(BdevError::OutOfRange {
                offset: io.offset_blocks,
                count: io.num_blocks,
                capacity: ns.num_blocks,
            });
        }
        if matches!(io.io_type, IoType::Read | IoType::Write) {
            let bytes = u64::try_from(shoal_bdev::buf::sg_len(&io.bufs)).unwrap_or(u64::MAX);
            if io.num_blocks.checked_mul(u64::from(ns.block_size)) != Some(bytes) {
                return Err(BdevError::BadLength {
                    bytes,
                    blocks: io.num_blocks,
                    block_size: ns.block_size,
                });
            }
        }
        Ok(())
    }
}

impl Drop for IoQueuePair {
    fn drop(&mut self) {
        self.conn.close();
        let id = self.conn.id;
        self.conn.ctrl.lock().queues.retain(|q| q.conn != id);
    }
}
