//! A target's NVMe/TCP transport: its listeners and connections on every reactor.
//!
//! A [`TcpTransport`] belongs to one [`Target`]. Its tables are per reactor (a reactor's
//! connections are touched only by that reactor, with no lock), kept in the reactor thread's
//! storage under the transport's process-unique id: two targets in one process (two daemons in
//! a test, say) never see each other's connections or listeners. Every method that reads or
//! changes the tables acts on the **current** reactor's part; a caller that wants all of them
//! runs the method on each reactor (`ReactorHandle::call`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use shoal_reactor::ReactorHandle;

use super::limits::ListenLimits;
use super::listener::{self, Listener};
use super::{Conn, start_conn};
use crate::target::subsystem::{ListenAddress, Target};

/// One reactor's part of a transport's state.
#[derive(Default)]
pub(super) struct ReactorTables {
    /// Live connections by connection id (closing ones leave at once).
    pub(super) conns: HashMap<u64, Weak<Conn>>,
    /// Connection objects alive, closing ones included (a closing connection lives until its
    /// last operation completes).
    pub(super) live: usize,
    /// Listeners accepting on this reactor.
    pub(super) listeners: Vec<Rc<Listener>>,
}

thread_local! {
    static TABLES: RefCell<HashMap<u64, ReactorTables>> = RefCell::new(HashMap::new());
}

/// Runs `f` on this reactor's tables of transport `id` (created empty on first use).
pub(super) fn with_tables<R>(id: u64, f: impl FnOnce(&mut ReactorTables) -> R) -> R {
    TABLES.with(|t| f(t.borrow_mut().entry(id).or_default()))
}

/// Counts a connection object of transport `id` gone. Safe while the thread exits (a
/// connection dropped after the tables themselves is not counted).
pub(super) fn conn_dropped(id: u64) {
    let _ = TABLES.try_with(|t| {
        if let Some(x) = t.borrow_mut().get_mut(&id) {
            x.live = x.live.saturating_sub(1);
        }
    });
}

/// Drops this reactor's tables of transport `id` once they are empty.
fn prune(id: u64) {
    TABLES.with(|t| {
        let mut t = t.borrow_mut();
        if t.get(&id)
            .is_some_and(|x| x.conns.is_empty() && x.live == 0 && x.listeners.is_empty())
        {
            t.remove(&id);
        }
    });
}

static NEXT_TRANSPORT: AtomicU64 = AtomicU64::new(1);

/// The NVMe/TCP transport of one target (cheap to clone; clones share the tables).
#[derive(Clone)]
pub struct TcpTransport {
    id: u64,
    target: Arc<Target>,
}

/// What a queue pair is connected to (for `nvmf_subsystem_get_qpairs`).
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

impl TcpTransport {
    /// The transport of `target`, with no listener yet.
    pub fn new(target: Arc<Target>) -> TcpTransport {
        TcpTransport {
            id: NEXT_TRANSPORT.fetch_add(1, Ordering::Relaxed),
            target,
        }
    }

    /// The target this transport serves.
    pub fn target(&self) -> &Arc<Target> {
        &self.target
    }

    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// Binds `addr` and accepts on the current reactor within `limits`; connections go
    /// round-robin to `reactors`. Returns the bound address (port 0 is resolved).
    ///
    /// # Errors
    /// Not on a reactor, or the bind failed.
    pub fn listen(
        &self,
        addr: ListenAddress,
        reactors: Vec<ReactorHandle>,
        limits: ListenLimits,
    ) -> std::io::Result<SocketAddr> {
        let me = self.clone();
        let start: listener::ConnStarter = Arc::new(move |a| start_conn(&me, a));
        let (l, local) = listener::bind(addr, reactors, start, limits)?;
        with_tables(self.id, |t| t.listeners.push(l));
        Ok(local)
    }

    /// Closes and forgets this transport's listener on `addr` of the current reactor; returns
    /// whether one existed.
    pub fn unlisten(&self, addr: &ListenAddress) -> bool {
        let found = with_tables(self.id, |t| {
            let before = t.listeners.len();
            t.listeners.retain(|l| {
                let same = l.addr().traddr == addr.traddr && l.addr().trsvcid == addr.trsvcid;
                if same {
                    l.close();
                }
                !same
            });
            t.listeners.len() != before
        });
        prune(self.id);
        found
    }

    /// Closes this transport's listeners and connections on the current reactor (shutdown).
    pub fn close_all(&self) {
        let (listeners, conns) = with_tables(self.id, |t| {
            let conns: Vec<Rc<Conn>> = t.conns.values().filter_map(Weak::upgrade).collect();
            (std::mem::take(&mut t.listeners), conns)
        });
        for l in listeners {
            l.close();
        }
        for c in conns {
            c.close("target shutting down");
        }
        prune(self.id);
    }

    fn conns(&self) -> Vec<Rc<Conn>> {
        with_tables(self.id, |t| {
            t.conns.values().filter_map(Weak::upgrade).collect()
        })
    }

    /// The queue pairs of this transport on the current reactor.
    pub fn qpairs(&self) -> Vec<QpairInfo> {
        self.conns().iter().map(|c| c.info()).collect()
    }

    /// Closes the connections on the current reactor that arrived on `listen` (all of them,
    /// or only those of subsystem `subnqn`); returns how many. Used when a listener is removed.
    pub fn disconnect_listener(&self, listen: &ListenAddress, subnqn: Option<&str>) -> usize {
        let mut n = 0;
        for c in self.conns() {
            if c.arrived_on(listen) && subnqn.is_none_or(|q| c.serves(q)) {
                c.close("listener removed");
                n += 1;
            }
        }
        n
    }

    /// Number of live connections on the current reactor.
    pub fn conn_count(&self) -> usize {
        with_tables(self.id, |t| {
            t.conns.values().filter(|w| w.strong_count() > 0).count()
        })
    }

    /// Connection objects on the current reactor, including closing ones that still wait for
    /// an operation (a send to a host that does not read): when it is 0, every connection's
    /// memory and socket are gone.
    pub fn conn_objects(&self) -> usize {
        with_tables(self.id, |t| t.live)
    }
}
