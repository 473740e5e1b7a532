//! A remote controller's core state: what its queue pairs on every reactor share
//! ([`CtrlShared`]), the user's handle ([`Controller`]) and the events the admin reactor sends
//! its I/O queues ([`QueueEvent`]).
//!
//! [`Controller`] is `Send + Sync`: the nexus keeps it behind an `Arc` in its bdevs, and any
//! thread may ask for its state. The admin queue lives on one reactor ([`super::admin`]);
//! I/O queues ([`super::IoQueuePair`]) live on any. They meet only in [`CtrlShared`], under a
//! mutex taken on the control path (connect, reconnect, queue creation), never per I/O.
//!
//! This file uses none of the host's operation modules: the admin queue ([`super::admin`]:
//! bring-up, [`CtrlShared::report_failure`]), the I/O queues ([`super::io`]:
//! [`CtrlShared::notify_queues`]) and the handle's methods ([`super::controller`]) are above
//! it.

use std::sync::{Arc, Mutex, MutexGuard};

use shoal_reactor::{Reactor, ReactorHandle};

use super::error::HostError;
use super::info::{ControllerInfo, NamespaceInfo};
use super::options::{ConnectOptions, ControllerState};

/// An I/O queue registered with its controller, to be told about reconnections.
pub(crate) struct QueueReg {
    pub(crate) conn: u64,
    pub(crate) qid: u16,
    pub(crate) handle: ReactorHandle,
}

/// What changes about a controller over time, behind [`CtrlShared::lock`].
pub(crate) struct CtrlInner {
    pub(crate) state: ControllerState,
    pub(crate) last_error: Option<HostError>,
    /// Association generation: bumped on every successful (re)connect of the admin queue.
    pub(crate) assoc: u64,
    pub(crate) cntlid: u16,
    pub(crate) info: Option<ControllerInfo>,
    pub(crate) namespaces: Vec<NamespaceInfo>,
    pub(crate) queues: Vec<QueueReg>,
    /// Next QID to try, so that a freed QID is not reused at once (its old connection may
    /// still be known to the target).
    pub(crate) next_qid: u16,
}

/// The part of a remote controller shared by its queue pairs on every reactor.
pub(crate) struct CtrlShared {
    pub(crate) id: u64,
    pub(crate) opts: ConnectOptions,
    /// The reactor of the admin queue.
    pub(crate) admin: ReactorHandle,
    /// Connect to a discovery controller: no I/O queues, no namespaces.
    pub(crate) discovery: bool,
    inner: Mutex<CtrlInner>,
    /// Who follows a namespace's size ([`CtrlShared::watch_namespace`]).
    ns_watchers: Mutex<Vec<NsWatch>>,
}

/// Told the new Identify Namespace data of a namespace whose size changed, on the admin
/// reactor: it should only record it (a [`RemoteBdev`](super::RemoteBdev) resizes its
/// `BdevInfo`).
pub(crate) type NsWatcher = Arc<dyn Fn(&NamespaceInfo) + Send + Sync>;

struct NsWatch {
    id: u64,
    nsid: u32,
    f: NsWatcher,
}

static NEXT_NS_WATCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

static NEXT_CTRL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl CtrlShared {
    pub(crate) fn new(opts: ConnectOptions, admin: ReactorHandle, discovery: bool) -> CtrlShared {
        CtrlShared {
            id: NEXT_CTRL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            opts,
            admin,
            discovery,
            inner: Mutex::new(CtrlInner {
                state: ControllerState::Connecting,
                last_error: None,
                assoc: 0,
                cntlid: 0,
                info: None,
                namespaces: Vec::new(),
                queues: Vec::new(),
                next_qid: 1,
            }),
            ns_watchers: Mutex::new(Vec::new()),
        }
    }

    /// Calls `f` with namespace `nsid`'s data each time its size changes; ended by
    /// [`CtrlShared::unwatch_namespace`] with the returned id.
    pub(crate) fn watch_namespace(&self, nsid: u32, f: NsWatcher) -> u64 {
        let id = NEXT_NS_WATCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.ns_watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(NsWatch { id, nsid, f });
        id
    }

    pub(crate) fn unwatch_namespace(&self, id: u64) {
        self.ns_watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|w| w.id != id);
    }

    /// Records fresh Identify Namespace data of an active namespace (after an event, an
    /// explicit refresh or a reconnect) and tells the namespace's watchers if its size
    /// changed. A namespace whose block size changed is not taken: its users would address
    /// other bytes with the same LBAs (they fail on the target's checks instead).
    pub(crate) fn update_namespaces(&self, fresh: &[NamespaceInfo]) {
        let mut changed = Vec::new();
        {
            let mut g = self.lock();
            for ns in fresh {
                match g.namespaces.iter_mut().find(|n| n.nsid == ns.nsid) {
                    Some(old) if old.block_size != ns.block_size => {
                        tracing::warn!(subnqn = %self.opts.subnqn, nsid = ns.nsid,
                            old = old.block_size, new = ns.block_size,
                            "namespace changed its block size; keeping the old geometry");
                    }
                    Some(old) => {
                        if old.num_blocks != ns.num_blocks {
                            tracing::info!(subnqn = %self.opts.subnqn, nsid = ns.nsid,
                                old = old.num_blocks, new = ns.num_blocks, "namespace resized");
                            changed.push(ns.clone());
                        }
                        *old = ns.clone();
                    }
                    None => g.namespaces.push(ns.clone()),
                }
            }
        }
        if changed.is_empty() {
            return;
        }
        let ws: Vec<(u32, NsWatcher)> = self
            .ns_watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|w| (w.nsid, w.f.clone()))
            .collect();
        for ns in &changed {
            for (nsid, f) in &ws {
                if *nsid == ns.nsid {
                    f(ns);
                }
            }
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, CtrlInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the state (with the error that caused it) and tells the observer.
    pub(crate) fn set_state(&self, state: ControllerState, err: Option<HostError>) {
        {
            let mut g = self.lock();
            if g.state == state {
                return;
            }
            g.state = state;
            if err.is_some() {
                g.last_error = err;
            }
        }
        tracing::info!(subnqn = %self.opts.subnqn, "controller {state:?}");
        if let Some(cb) = &self.opts.on_state {
            cb(state);
        }
    }
}

/// What the admin reactor tells an I/O queue about its controller.
#[derive(Debug, Clone)]
pub(crate) enum QueueEvent {
    /// The association was lost: drop the connection, hold requests.
    Disconnect {
        /// The association lost.
        assoc: u64,
    },
    /// A new association is up: connect with its controller ID and reissue.
    Reconnect {
        /// The new association.
        assoc: u64,
        /// Its controller ID.
        cntlid: u16,
        /// In-capsule data limit (IOCCSZ).
        in_capsule: u32,
        /// Per-command transfer limit (MDTS).
        max_xfer: u32,
    },
    /// The controller is gone for good (lost or closed): fail everything.
    Fail(HostError),
}

/// A connected remote controller. Dropping the last handle shuts it down (CC.SHN) and
/// disconnects, without blocking.
pub struct Controller {
    pub(crate) shared: Arc<CtrlShared>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("subnqn", &self.shared.opts.subnqn)
            .field("state", &self.state())
            .finish()
    }
}

/// Whether the current thread is the reactor `h` stands for.
pub(crate) fn on_reactor(h: &ReactorHandle) -> bool {
    Reactor::current().is_some_and(|r| std::ptr::eq(r.handle().stats(), h.stats()))
}
