//! A remote controller: what its queue pairs on every reactor share, and the user's handle.
//!
//! [`Controller`] is `Send + Sync`: the nexus keeps it behind an `Arc` in its bdevs, and any
//! thread may ask for its state. The admin queue lives on one reactor ([`super::admin`]);
//! I/O queues ([`super::IoQueuePair`]) live on any. They meet only in [`CtrlShared`], under a
//! mutex taken on the control path (connect, reconnect, queue creation), never per I/O.

use std::sync::{Arc, Mutex, MutexGuard};

use shoal_reactor::{Reactor, ReactorHandle};
use uuid::Uuid;

use super::admin;
use super::conn::with_conn;
use super::error::HostError;
use super::io::QueueEvent;
use super::options::{ConnectOptions, ControllerState};
use crate::wire::spec::identify::{IdentifyController, IdentifyNamespace, Nidt, ns_id_descriptors};
use crate::wire::spec::property::Cap;

/// What Identify Controller (NVMe Base 2.0 section 5.17.2.1) and CAP said, as the host uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerInfo {
    /// Controller ID of the current association.
    pub cntlid: u16,
    /// PCI vendor ID.
    pub vid: u16,
    /// Serial number.
    pub serial: String,
    /// Model number.
    pub model: String,
    /// Firmware revision.
    pub firmware: String,
    /// Subsystem NQN reported by the controller.
    pub subnqn: String,
    /// VER.
    pub version: u32,
    /// MDTS in bytes (2^MDTS units of 2^(12 + CAP.MPSMIN) bytes); `None`: no limit.
    pub mdts_bytes: Option<u64>,
    /// Data bytes the host puts in one command: MDTS and `max_io_size`, whichever is less.
    pub max_transfer: u32,
    /// In-capsule data bytes an I/O command may carry: IOCCSZ * 16 - 64 (NVMe-oF 1.1).
    pub in_capsule: u32,
    /// MAXCMD (0: not reported).
    pub maxcmd: u16,
    /// CAP.MQES + 1: the deepest queue the controller supports.
    pub max_queue_entries: u32,
    /// NN.
    pub nn: u32,
    /// ONCS: bit 2 Dataset Management, bit 3 Write Zeroes.
    pub oncs: u16,
    /// VWC.
    pub vwc: u8,
    /// KAS in 100 ms units.
    pub kas: u16,
    /// CNTRLTYPE: 1 I/O, 2 discovery, 3 administrative.
    pub cntrltype: u8,
    /// I/O queues granted by Set Features Number of Queues.
    pub io_queues: u16,
}

/// ONCS bit: Dataset Management supported (NVMe Base 2.0 Identify Controller).
pub const ONCS_DSM: u16 = 1 << 2;
/// ONCS bit: Write Zeroes supported.
pub const ONCS_WRITE_ZEROES: u16 = 1 << 3;

fn ascii(field: &[u8]) -> String {
    String::from_utf8_lossy(field)
        .trim_end_matches([' ', '\0'])
        .to_string()
}

impl ControllerInfo {
    /// Reads the fields the host uses from Identify Controller and CAP; `max_io_size` is the
    /// host's own transfer limit.
    pub fn parse(id: &IdentifyController, cap: Cap, max_io_size: u32) -> ControllerInfo {
        let page_shift = 12 + u32::from(cap.mpsmin());
        // MDTS 0: no limit. A shift that would overflow is as good as none.
        let mdts_bytes = match id.mdts {
            0 => None,
            m => 1u64.checked_shl(page_shift + u32::from(m)),
        };
        let max_transfer = mdts_bytes.map_or(max_io_size, |m| {
            u32::try_from(m.min(u64::from(max_io_size))).unwrap_or(max_io_size)
        });
        let ioccsz = u64::from(id.ioccsz.get());
        let in_capsule = u32::try_from((ioccsz * 16).saturating_sub(64)).unwrap_or(u32::MAX);
        ControllerInfo {
            cntlid: id.cntlid.get(),
            vid: id.vid.get(),
            serial: ascii(&id.sn),
            model: ascii(&id.mn),
            firmware: ascii(&id.fr),
            subnqn: crate::wire::spec::field_str(&id.subnqn)
                .unwrap_or_default()
                .to_string(),
            version: id.ver.get(),
            mdts_bytes,
            max_transfer: max_transfer.max(512),
            in_capsule,
            maxcmd: id.maxcmd.get(),
            max_queue_entries: u32::from(cap.mqes()) + 1,
            nn: id.nn.get(),
            oncs: id.oncs.get(),
            vwc: id.vwc,
            kas: id.kas.get(),
            cntrltype: id.cntrltype,
            io_queues: 0,
        }
    }
}

/// An active namespace of the remote controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Namespace ID.
    pub nsid: u32,
    /// Logical block size (the formatted LBA format's LBADS).
    pub block_size: u32,
    /// NSZE: blocks.
    pub num_blocks: u64,
    /// NGUID (zero if not reported).
    pub nguid: [u8; 16],
    /// EUI64 (zero if not reported).
    pub eui64: [u8; 8],
    /// The namespace UUID from the identification descriptors (CNS 03h), if any.
    pub uuid: Option<Uuid>,
    /// DLFEAT bits 2:0 = 001b: deallocated blocks read as zeroes.
    pub deallocate_zeroes: bool,
}

impl NamespaceInfo {
    /// Reads Identify Namespace (NVM Command Set 1.0 section 4.1.5.1). `None` for a namespace
    /// the host cannot use: inactive (NSZE 0), an LBA format index beyond NLBAF, a block size
    /// outside 512 B to 64 KiB, or metadata (LBA formats with MS != 0).
    pub fn parse(nsid: u32, id: &IdentifyNamespace) -> Option<NamespaceInfo> {
        let nsze = id.nsze.get();
        let idx = id.formatted_lba_index();
        if nsze == 0 || idx > usize::from(id.nlbaf) {
            return None;
        }
        let lbaf = id.lbaf.get(idx)?;
        if !(9..=16).contains(&lbaf.lbads) || lbaf.ms.get() != 0 {
            return None;
        }
        Some(NamespaceInfo {
            nsid,
            block_size: 1u32 << lbaf.lbads,
            num_blocks: nsze,
            nguid: id.nguid,
            eui64: id.eui64,
            uuid: None,
            deallocate_zeroes: id.dlfeat & 0x7 == 1,
        })
    }

    /// Takes the UUID from a namespace identification descriptor list (CNS 03h), checking
    /// NIDL against the type (NVMe Base 2.0 section 5.17.2.3).
    pub fn set_descriptors(&mut self, list: &[u8]) {
        for d in ns_id_descriptors(list) {
            if d.nidt == Nidt::UUID && d.nid.len() == 16 {
                self.uuid = Uuid::from_slice(d.nid).ok().filter(|u| !u.is_nil());
            }
        }
    }

    /// A stable identifier: the namespace UUID, else the NGUID, else `None`.
    pub fn stable_uuid(&self) -> Option<Uuid> {
        self.uuid
            .or_else(|| Some(Uuid::from_bytes(self.nguid)).filter(|u| !u.is_nil()))
    }
}

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

    /// A connection of association `assoc` failed: the admin reactor starts recovery (if
    /// that association is still the current one).
    pub(crate) fn report_failure(&self, assoc: u64, err: HostError) {
        let id = self.id;
        self.admin
            .send(move || admin::with_admin(id, |a| a.on_failure(assoc, err)));
    }

    /// Sends `ev` to every registered I/O queue, on its reactor.
    pub(crate) fn notify_queues(&self, ev: &QueueEvent) {
        let g = self.lock();
        for q in &g.queues {
            let (conn, ev) = (q.conn, ev.clone());
            q.handle
                .send(move || with_conn(conn, |c| super::io::on_event(c, ev)));
        }
    }
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

impl Controller {
    /// Connects to the controller of `opts.subnqn` with its admin queue on the reactor `admin`,
    /// and waits until it is enabled, identified and its namespaces are known. Blocks the
    /// calling thread (control path); call it from any thread but that reactor's own.
    pub fn connect(
        admin: &ReactorHandle,
        opts: ConnectOptions,
    ) -> Result<Arc<Controller>, HostError> {
        if on_reactor(admin) {
            return Err(HostError::Reactor(
                "Controller::connect blocks: call connect_async on the admin reactor",
            ));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let sent = admin.send(move || {
            Controller::connect_async(opts, move |r| {
                let _ = tx.send(r);
            });
        });
        if !sent {
            return Err(HostError::Reactor("the admin reactor has stopped"));
        }
        rx.recv()
            .unwrap_or(Err(HostError::Reactor("the admin reactor has stopped")))
    }

    /// Connects with the admin queue on the current reactor; `done` runs on it once the
    /// controller is ready or the connect failed (no retries: the controller-loss timeout
    /// applies to connections lost later).
    pub fn connect_async(
        opts: ConnectOptions,
        done: impl FnOnce(Result<Arc<Controller>, HostError>) + 'static,
    ) {
        admin::start(opts, false, Box::new(done));
    }

    /// The state.
    pub fn state(&self) -> ControllerState {
        self.shared.lock().state
    }

    /// Why the controller last left the connected state.
    pub fn last_error(&self) -> Option<HostError> {
        self.shared.lock().last_error.clone()
    }

    /// Identify Controller data of the current association.
    pub fn info(&self) -> Option<ControllerInfo> {
        self.shared.lock().info.clone()
    }

    /// The controller ID of the current association.
    pub fn cntlid(&self) -> u16 {
        self.shared.lock().cntlid
    }

    /// The usable active namespaces.
    pub fn namespaces(&self) -> Vec<NamespaceInfo> {
        self.shared.lock().namespaces.clone()
    }

    /// Namespace `nsid`, if active and usable.
    pub fn namespace(&self, nsid: u32) -> Option<NamespaceInfo> {
        self.shared
            .lock()
            .namespaces
            .iter()
            .find(|n| n.nsid == nsid)
            .cloned()
    }

    /// Reads Identify Namespace of `nsid` again and records it (telling its watchers, e.g. a
    /// [`RemoteBdev`](super::RemoteBdev), if its size changed); what a Namespace Attribute
    /// Changed notice does by itself, for a caller that cannot wait for the notice. Blocks;
    /// call it from any thread but the admin reactor's.
    ///
    /// # Errors
    /// `Reconnecting` while the association is down; `Closed`; `NoNamespace` for a namespace
    /// not active (any more); the command's status or transport error.
    pub fn refresh_namespace(&self, nsid: u32) -> Result<NamespaceInfo, HostError> {
        if on_reactor(&self.shared.admin) {
            return Err(HostError::Reactor(
                "Controller::refresh_namespace blocks on the admin reactor",
            ));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let id = self.shared.id;
        let sent = self.shared.admin.send(move || {
            let mut tx = Some(tx);
            admin::with_admin(id, |a| {
                let Some(tx) = tx.take() else { return };
                let shared = a.shared.clone();
                a.refresh_namespaces(
                    vec![nsid],
                    Box::new(move |r| {
                        let r = r.and_then(|fresh| {
                            shared.update_namespaces(&fresh);
                            fresh.into_iter().next().ok_or(HostError::NoNamespace(nsid))
                        });
                        let _ = tx.send(r);
                    }),
                );
            });
            if let Some(tx) = tx {
                let _ = tx.send(Err(HostError::Closed));
            }
        });
        if !sent {
            return Err(HostError::Closed);
        }
        rx.recv().unwrap_or(Err(HostError::Closed))
    }

    /// The options it was connected with.
    pub fn options(&self) -> &ConnectOptions {
        &self.shared.opts
    }

    /// Shuts the controller down (CC.SHN normal, wait for CSTS.SHST complete) and closes
    /// every queue; I/O still outstanding fails with `Closed`. Blocks until done; call it
    /// from any thread but the admin reactor's (there, drop the handle instead).
    pub fn disconnect(&self) -> Result<(), HostError> {
        if on_reactor(&self.shared.admin) {
            return Err(HostError::Reactor(
                "Controller::disconnect blocks on the admin reactor",
            ));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let id = self.shared.id;
        let sent = self.shared.admin.send(move || {
            let mut tx = Some(tx);
            admin::with_admin(id, |a| {
                let tx = tx.take();
                a.shutdown(Box::new(move |r| {
                    if let Some(tx) = tx {
                        let _ = tx.send(r);
                    }
                }));
            });
            if let Some(tx) = tx {
                let _ = tx.send(Ok(()));
            }
        });
        if !sent {
            return Ok(());
        }
        rx.recv().unwrap_or(Ok(()))
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let id = self.shared.id;
        self.shared
            .admin
            .send(move || admin::with_admin(id, |a| a.shutdown(Box::new(|_| {}))));
    }
}
