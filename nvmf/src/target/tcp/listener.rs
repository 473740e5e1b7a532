//! Listening sockets: accept on one reactor, spread connections over all of them.

use std::cell::Cell;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::{Rc, Weak};
use std::sync::Arc;

use shoal_reactor::ops::{OpHandler, Payload};
use shoal_reactor::{Reactor, ReactorHandle, set_listen_backlog, shutdown_socket};

use super::limits::{self, Accepted, ConnCounts, ListenLimits, Refusal};
use crate::target::subsystem::ListenAddress;

/// Where a new connection is handed: called on the chosen reactor with the socket, the address
/// it arrived on and its place in the listener's connection counts.
pub type ConnStarter = Arc<dyn Fn(Accepted) + Send + Sync>;

/// One listening address, accepting on the reactor that created it.
pub struct Listener {
    me: Weak<Listener>,
    addr: ListenAddress,
    socket: TcpListener,
    reactors: Vec<ReactorHandle>,
    next: Cell<usize>,
    start: ConnStarter,
    closed: Cell<bool>,
    limits: ListenLimits,
    counts: Arc<ConnCounts>,
}

fn bracket(addr: &str) -> String {
    if addr.contains(':') && !addr.starts_with('[') {
        format!("[{addr}]")
    } else {
        addr.to_string()
    }
}

impl Listener {
    fn arm(&self) {
        if let (Some(r), Some(me)) = (Reactor::current(), self.me.upgrade()) {
            r.accept(self.socket.as_raw_fd(), me, 0);
        }
    }

    /// The address this listener was asked to bind.
    pub fn addr(&self) -> &ListenAddress {
        &self.addr
    }

    /// Stops accepting; the pending accept completes and is not re-armed.
    pub fn close(&self) {
        self.closed.set(true);
        let _ = shutdown_socket(&self.socket);
    }
}

impl OpHandler for Listener {
    fn op_done(&self, _tag: u64, result: i32, payload: Payload) {
        if self.closed.get() {
            return;
        }
        match payload {
            Payload::Fd(fd) if result == 0 => {
                let sock = TcpStream::from(fd);
                let peer = sock.peer_addr().ok().map(|a| a.ip());
                let ticket = match self.counts.admit(peer, &self.limits) {
                    Ok(t) => t,
                    Err(why) => {
                        limits::note_refusal(&limits::CONN_REFUSALS, || {
                            let (what, n) = match why {
                                Refusal::Listener => {
                                    ("max_connections_per_listener", self.limits.per_listener)
                                }
                                Refusal::Host => ("max_connections_per_host", self.limits.per_host),
                            };
                            format!(
                                "refusing a connection from {} on {}:{}: {what} ({n}) reached",
                                peer.map_or("?".into(), |p| p.to_string()),
                                self.addr.traddr,
                                self.addr.trsvcid
                            )
                        });
                        drop(sock);
                        self.arm();
                        return;
                    }
                };
                let accepted = Accepted {
                    fd: OwnedFd::from(sock),
                    listen: self.addr.clone(),
                    ticket,
                };
                let here = Reactor::current().map(|r| r.index());
                let i = self.next.get() % self.reactors.len().max(1);
                self.next.set(i.wrapping_add(1));
                let start = self.start.clone();
                match self.reactors.get(i) {
                    Some(h) if Some(h.index()) != here => {
                        h.send(move || start(accepted));
                    }
                    _ => start(accepted),
                }
            }
            _ => tracing::warn!(
                "accept on {}:{} failed: {}",
                self.addr.traddr,
                self.addr.trsvcid,
                std::io::Error::from_raw_os_error(-result)
            ),
        }
        self.arm();
    }
}

/// Binds `addr` and accepts on the current reactor within `limits`; connections go round-robin
/// to `reactors` and are started there with `start`. Returns the listener (its owner keeps it
/// in its tables: [`super::TcpTransport::listen`]) and the bound address (port 0 is resolved).
pub(super) fn bind(
    addr: ListenAddress,
    reactors: Vec<ReactorHandle>,
    start: ConnStarter,
    limits: ListenLimits,
) -> std::io::Result<(Rc<Listener>, SocketAddr)> {
    if Reactor::current().is_none() {
        return Err(std::io::Error::other("listen must run on a reactor"));
    }
    let socket = TcpListener::bind(format!("{}:{}", bracket(&addr.traddr), addr.trsvcid))?;
    // std listens with a backlog of 128; a burst of hosts (every queue of every controller
    // reconnecting after a path failure) overflows that.
    set_listen_backlog(&socket, limits.effective_backlog())?;
    let local = socket.local_addr()?;
    let l = Rc::new_cyclic(|me| Listener {
        me: me.clone(),
        addr,
        socket,
        reactors,
        next: Cell::new(0),
        start,
        closed: Cell::new(false),
        limits,
        counts: Arc::new(ConnCounts::default()),
    });
    l.arm();
    Ok((l, local))
}
