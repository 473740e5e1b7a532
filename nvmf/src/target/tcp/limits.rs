//! Limits on what hosts may hold before they say who they are: connections per listener and
//! per host address, checked when a connection is accepted, and refusals logged once in a
//! while with a count (a host that reconnects in a loop must not fill the log).

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::target::subsystem::{ListenAddress, TransportConfig};

/// A listener's connection limits (from the transport: `max_connections_per_listener`,
/// `max_connections_per_host`, `acceptor_backlog`; 0 is no limit, or `somaxconn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenLimits {
    /// Connections the listener holds at once.
    pub per_listener: u32,
    /// Connections one host address holds at once on the listener.
    pub per_host: u32,
    /// Listen backlog (0: `/proc/sys/net/core/somaxconn`).
    pub backlog: u32,
}

impl From<&TransportConfig> for ListenLimits {
    fn from(t: &TransportConfig) -> Self {
        ListenLimits {
            per_listener: t.max_connections_per_listener,
            per_host: t.max_connections_per_host,
            backlog: t.acceptor_backlog,
        }
    }
}

impl ListenLimits {
    /// The backlog to listen with: the configured one, else the kernel's `somaxconn` (the
    /// most the kernel grants anyway), else SPDK's 512.
    pub fn effective_backlog(&self) -> u32 {
        if self.backlog > 0 {
            return self.backlog;
        }
        std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .filter(|&n: &u32| n > 0)
            .unwrap_or(512)
    }
}

#[derive(Default)]
struct Counts {
    total: u32,
    by_host: HashMap<Option<IpAddr>, u32>,
}

/// The live connections of one listener, counted across reactors (taken at accept and when a
/// connection is dropped: the control path, never per I/O).
#[derive(Default)]
pub struct ConnCounts {
    counts: Mutex<Counts>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The listener holds `max_connections_per_listener`.
    Listener,
    /// The host address holds `max_connections_per_host`.
    Host,
}

impl ConnCounts {
    /// Counts a new connection from `peer`, or refuses it.
    pub fn admit(
        self: &Arc<Self>,
        peer: Option<IpAddr>,
        limits: &ListenLimits,
    ) -> Result<ConnTicket, Refusal> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if limits.per_listener > 0 && c.total >= limits.per_listener {
            return Err(Refusal::Listener);
        }
        let n = c.by_host.entry(peer).or_insert(0);
        if limits.per_host > 0 && *n >= limits.per_host {
            return Err(Refusal::Host);
        }
        *n += 1;
        c.total += 1;
        Ok(ConnTicket {
            counts: self.clone(),
            peer,
        })
    }

    /// Connections counted now.
    pub fn total(&self) -> u32 {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

/// One counted connection; dropping it (with the connection) gives its place back.
pub struct ConnTicket {
    counts: Arc<ConnCounts>,
    peer: Option<IpAddr>,
}

impl Drop for ConnTicket {
    fn drop(&mut self) {
        let mut c = self.counts.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_host.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.by_host.remove(&self.peer);
            }
        }
    }
}

/// An accepted connection, counted against its listener's limits, for a
/// [`super::listener::ConnStarter`].
pub struct Accepted {
    /// The socket.
    pub fd: OwnedFd,
    /// The listener it arrived on.
    pub listen: ListenAddress,
    /// Its place in the listener's counts, held as long as the connection.
    pub ticket: ConnTicket,
}

/// A kind of refusal, logged at most once per [`LOG_EVERY`] with the count since.
pub struct RefusalLog {
    state: Mutex<(Option<Instant>, u64)>,
    total: AtomicU64,
}

impl RefusalLog {
    const fn new() -> RefusalLog {
        RefusalLog {
            state: Mutex::new((None, 0)),
            total: AtomicU64::new(0),
        }
    }

    /// Refusals of this kind since the daemon started.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// How often a kind of refusal may be logged.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// Connections closed because they sent no ICReq within `ic_timeout_ms`.
pub static IC_TIMEOUTS: RefusalLog = RefusalLog::new();
/// Connections refused at accept by `max_connections_per_listener` or `..._per_host`.
pub static CONN_REFUSALS: RefusalLog = RefusalLog::new();

/// Connections ended by a protocol error from their host (a C2HTermReq).
pub static PROTOCOL_ERRORS: RefusalLog = RefusalLog::new();

/// A connection's host broke the protocol: logged at debug level each time and as a warning at
/// most once per [`LOG_EVERY`] (a host that reconnects and sends garbage in a loop).
pub(super) fn note_protocol_error(conn: u64, fatal: &impl std::fmt::Display) {
    tracing::debug!(conn, "protocol error from host: {fatal}");
    note_refusal(&PROTOCOL_ERRORS, || {
        format!("connection {conn} ended: protocol error from its host: {fatal}")
    });
}

/// Counts one refusal and logs it (with `what`) if the kind was not logged in the last
/// [`LOG_EVERY`].
pub fn note_refusal(log: &RefusalLog, what: impl FnOnce() -> String) {
    log.total.fetch_add(1, Ordering::Relaxed);
    let mut s = log.state.lock().unwrap_or_else(|e| e.into_inner());
    s.1 += 1;
    if s.0.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
        let what = what();
        tracing::warn!(
            "{what} ({} such refusals since the last message; next message in {} s at the earliest)",
            s.1,
            LOG_EVERY.as_secs()
        );
        *s = (Some(Instant::now()), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_listener_and_per_host_and_tickets_give_places_back() {
        let counts = Arc::new(ConnCounts::default());
        let limits = ListenLimits {
            per_listener: 3,
            per_host: 2,
            backlog: 0,
        };
        let a: IpAddr = "127.0.0.31".parse().unwrap();
        let b: IpAddr = "127.0.0.32".parse().unwrap();
        let t1 = counts.admit(Some(a), &limits).unwrap();
        let _t2 = counts.admit(Some(a), &limits).unwrap();
        assert_eq!(counts.admit(Some(a), &limits).err(), Some(Refusal::Host));
        let _t3 = counts.admit(Some(b), &limits).unwrap();
        assert_eq!(
            counts.admit(Some(b), &limits).err(),
            Some(Refusal::Listener)
        );
        drop(t1);
        assert_eq!(counts.total(), 2);
        assert!(counts.admit(Some(a), &limits).is_ok());
    }

    #[test]
    fn refusals_are_counted_every_time_and_logged_once() {
        static LOG: RefusalLog = RefusalLog::new();
        let mut logged = 0;
        for _ in 0..1000 {
            note_refusal(&LOG, || {
                logged += 1;
                "refused".to_string()
            });
        }
        assert_eq!(LOG.total(), 1000);
        assert_eq!(logged, 1, "the message is built (and logged) once");
    }
}
