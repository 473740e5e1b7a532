//! Subsystems, namespaces, allowed hosts and listeners: the target's configuration.
//!
//! A [`Target`] holds every subsystem by NQN, including the discovery subsystem. It is shared
//! by the RPC thread (which changes it) and the reactors (which read it when a host connects and
//! when a namespace changes). The I/O path never takes these locks: a queue pair caches what
//! it needs and re-reads it only when [`Subsystem::generation`] moves.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use shoal_bdev::{Bdev, BdevEvent, WatchId};
use uuid::Uuid;

use crate::target::controller::ControllerShared;

/// The well-known NQN of the discovery subsystem (NVMe-oF 1.1, section 5).
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// Errors of configuration changes (reported to RPC clients).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Something with this name already exists.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// Nothing with this name exists.
    #[error("{0} does not exist")]
    NotFound(String),
    /// A parameter is invalid.
    #[error("{0}")]
    Invalid(String),
}

/// A transport address as NVMe-oF and SPDK name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenAddress {
    /// Transport type (`TCP`).
    pub trtype: String,
    /// Address family (`IPv4` or `IPv6`).
    pub adrfam: String,
    /// Address.
    pub traddr: String,
    /// Port.
    pub trsvcid: String,
}

impl ListenAddress {
    /// A TCP/IPv4 address.
    pub fn tcp(traddr: &str, trsvcid: &str) -> ListenAddress {
        ListenAddress {
            trtype: "TCP".into(),
            adrfam: "IPv4".into(),
            traddr: traddr.into(),
            trsvcid: trsvcid.into(),
        }
    }
}

/// Transport settings (SPDK's `nvmf_create_transport`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// Entries per I/O queue the target accepts (CAP.MQES + 1).
    pub max_queue_depth: u16,
    /// Entries of the admin queue.
    pub max_aq_depth: u16,
    /// I/O queues per controller.
    pub max_io_qpairs_per_ctrlr: u16,
    /// In-capsule data bytes accepted in a command capsule.
    pub in_capsule_data_size: u32,
    /// Largest I/O in bytes (MDTS).
    pub max_io_size: u32,
    /// Largest H2CData PDU payload (MAXH2CDATA).
    pub io_unit_size: u32,
    /// Whether a read's last C2HData may carry the SUCCESS flag instead of a response capsule
    /// (SPDK's option; see `c2h_success_sq_flow_control` for when).
    pub c2h_success: bool,
    /// With `c2h_success`, whether the flag is also used on I/O queues whose host kept SQ flow
    /// control on (Linux's and SPDK's hosts by default), with a response capsule carrying
    /// SQHD at least every half queue of commands. Off: only on queues whose host disabled SQ
    /// flow control, as NVMe/TCP 1.0a section 3.6.2.9 and Linux's target have it.
    pub c2h_success_sq_flow_control: bool,
    /// Bytes of unsent output (responses, R2Ts, read data) a connection may hold before it
    /// stops reading commands from its socket until the host reads (back-pressure); see the
    /// per-connection memory bound in `ARCHITECTURE.md`. At least 64 KiB.
    pub max_unsent_bytes: u32,
    /// Milliseconds a new connection may take to send its ICReq and a successful Fabrics
    /// Connect before it is closed (0: no limit).
    pub ic_timeout_ms: u32,
    /// Connections a listener accepts at once (0: no limit).
    pub max_connections_per_listener: u32,
    /// Connections one host address may hold at once on a listener (0: no limit).
    pub max_connections_per_host: u32,
    /// Listen backlog; 0 follows `/proc/sys/net/core/somaxconn` (SPDK's name, from its RDMA
    /// transport; its TCP transport uses 512).
    pub acceptor_backlog: u32,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_queue_depth: 128,
            max_aq_depth: 128,
            max_io_qpairs_per_ctrlr: 127,
            in_capsule_data_size: 8192,
            max_io_size: 131_072,
            io_unit_size: 131_072,
            c2h_success: true,
            c2h_success_sq_flow_control: true,
            max_unsent_bytes: 2 << 20,
            ic_timeout_ms: 10_000,
            max_connections_per_listener: 16_384,
            max_connections_per_host: 4096,
            acceptor_backlog: 0,
        }
    }
}

/// A namespace: a block device exported under an NSID.
#[derive(Clone)]
pub struct Namespace {
    /// Namespace ID, from 1.
    pub nsid: u32,
    /// The device.
    pub bdev: Arc<dyn Bdev>,
    /// Namespace UUID (reported in the namespace identification descriptors).
    pub uuid: Uuid,
    /// Namespace globally unique identifier.
    pub nguid: [u8; 16],
    /// IEEE extended unique identifier, if one was given.
    pub eui64: Option<[u8; 8]>,
    /// The subsystem's watch of the device (its size changes), ended when the namespace is
    /// removed.
    watch: WatchId,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("nsid", &self.nsid)
            .field("bdev", &self.bdev.info().name)
            .field("uuid", &self.uuid)
            .finish()
    }
}

/// Whether a subsystem serves I/O or discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubsystemKind {
    /// An NVM subsystem with namespaces.
    Nvme,
    /// The discovery subsystem.
    Discovery,
}

/// The mutable part of a subsystem.
#[derive(Debug, Clone)]
pub struct SubsystemConfig {
    /// Serial number reported in Identify Controller.
    pub serial_number: String,
    /// Model number reported in Identify Controller.
    pub model_number: String,
    /// Whether any host may connect.
    pub allow_any_host: bool,
    /// Hosts allowed to connect when `allow_any_host` is off.
    pub hosts: BTreeSet<String>,
    /// Namespaces by NSID.
    pub namespaces: BTreeMap<u32, Namespace>,
    /// Addresses the subsystem is reachable on.
    pub listeners: Vec<ListenAddress>,
    /// Largest NSID allowed (0: the default of 32).
    pub max_namespaces: u32,
    /// Smallest controller ID handed out.
    pub min_cntlid: u16,
    /// Largest controller ID handed out.
    pub max_cntlid: u16,
}

/// One subsystem.
pub struct Subsystem {
    /// NQN.
    pub nqn: String,
    /// NVM or discovery.
    pub kind: SubsystemKind,
    config: RwLock<SubsystemConfig>,
    me: Weak<Subsystem>,
    generation: AtomicU64,
    controllers: Mutex<BTreeMap<u16, Weak<ControllerShared>>>,
    next_cntlid: Mutex<u16>,
}

impl std::fmt::Debug for Subsystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subsystem").field("nqn", &self.nqn).finish()
    }
}

/// Checks an NQN's form (NVMe Base 2.0, section 4.5: at most 223 bytes, `nqn.` prefix).
pub fn validate_nqn(nqn: &str) -> Result<(), ConfigError> {
    if nqn.len() > 223 {
        return Err(ConfigError::Invalid(format!(
            "NQN `{nqn}` is longer than 223 bytes"
        )));
    }
    if !nqn.starts_with("nqn.") || nqn.len() < 5 {
        return Err(ConfigError::Invalid(format!(
            "`{nqn}` is not an NQN (nqn.yyyy-mm.reverse-domain:name)"
        )));
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for Subsystem {
    fn drop(&mut self) {
        let c = self.config.get_mut().unwrap_or_else(|e| e.into_inner());
        for ns in c.namespaces.values() {
            ns.bdev.info().unwatch(ns.watch);
        }
    }
}

impl Subsystem {
    fn new(nqn: &str, kind: SubsystemKind, config: SubsystemConfig) -> Arc<Subsystem> {
        let first = config.min_cntlid;
        Arc::new_cyclic(|me| Subsystem {
            nqn: nqn.to_string(),
            kind,
            config: RwLock::new(config),
            me: me.clone(),
            generation: AtomicU64::new(0),
            controllers: Mutex::new(BTreeMap::new()),
            next_cntlid: Mutex::new(first),
        })
    }

    /// A copy of the configuration.
    pub fn config(&self) -> SubsystemConfig {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the configuration under the lock.
    pub fn with_config<R>(&self, f: impl FnOnce(&SubsystemConfig) -> R) -> R {
        f(&self.config.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn update<R>(
        &self,
        f: impl FnOnce(&mut SubsystemConfig) -> Result<R, ConfigError>,
    ) -> Result<R, ConfigError> {
        let r = f(&mut self.config.write().unwrap_or_else(|e| e.into_inner()))?;
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(r)
    }

    /// Moves whenever the namespaces, hosts or listeners change.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether `hostnqn` may connect (NVMe-oF 1.1, section 3.3: the subsystem's access list).
    pub fn host_allowed(&self, hostnqn: &str) -> bool {
        self.with_config(|c| c.allow_any_host || c.hosts.contains(hostnqn))
    }

    /// The namespace with this NSID.
    pub fn namespace(&self, nsid: u32) -> Option<Namespace> {
        self.with_config(|c| c.namespaces.get(&nsid).cloned())
    }

    /// Allocates a controller ID in `min_cntlid..=max_cntlid` not used by a live controller.
    pub fn register_controller(
        &self,
        make: impl FnOnce(u16) -> Arc<ControllerShared>,
    ) -> Option<Arc<ControllerShared>> {
        let (min, max) = self.with_config(|c| (c.min_cntlid, c.max_cntlid));
        let mut ctrls = lock(&self.controllers);
        ctrls.retain(|_, w| w.strong_count() > 0);
        let mut next = lock(&self.next_cntlid);
        let span = u32::from(max.saturating_sub(min)) + 1;
        for _ in 0..span {
            let id = if *next < min || *next > max {
                min
            } else {
                *next
            };
            *next = if id >= max { min } else { id + 1 };
            if let std::collections::btree_map::Entry::Vacant(slot) = ctrls.entry(id) {
                let c = make(id);
                slot.insert(Arc::downgrade(&c));
                return Some(c);
            }
        }
        None
    }

    /// The live controller with this ID.
    pub fn controller(&self, cntlid: u16) -> Option<Arc<ControllerShared>> {
        lock(&self.controllers).get(&cntlid).and_then(Weak::upgrade)
    }

    /// Every live controller.
    pub fn controllers(&self) -> Vec<Arc<ControllerShared>> {
        lock(&self.controllers)
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Forgets a controller (when its admin queue goes away).
    pub fn unregister_controller(&self, cntlid: u16) {
        lock(&self.controllers).remove(&cntlid);
    }

    fn notify_ns_change(&self, nsid: u32) {
        for c in self.controllers() {
            c.namespace_changed(nsid);
        }
    }

    /// Namespace `nsid`'s device changed size (a volume resized): Identify Namespace reports
    /// the new NSZE, NCAP and NUSE from now on (read from the device), and every controller
    /// gets the namespace in its Changed Namespace List and, if it enabled them, a Namespace
    /// Attribute Changed notice (NVMe Base 2.0: Asynchronous Event Configuration bit 8,
    /// Namespace Attribute Notices, Figure 316, which covers a change of the Identify
    /// Namespace data such as its size, paraphrased; notice 00h with log page 04h, Figures
    /// 150-151). I/O commands check the device's size as it is at each command.
    pub fn namespace_resized(&self, nsid: u32) {
        if self.namespace(nsid).is_none() {
            return;
        }
        tracing::info!(subnqn = %self.nqn, nsid, "namespace resized: notifying controllers");
        self.notify_ns_change(nsid);
    }

    /// Adds a namespace; returns its NSID (the lowest free one when `nsid` is `None`).
    pub fn add_namespace(
        &self,
        bdev: Arc<dyn Bdev>,
        nsid: Option<u32>,
        uuid: Option<Uuid>,
        nguid: Option<[u8; 16]>,
        eui64: Option<[u8; 8]>,
    ) -> Result<u32, ConfigError> {
        if self.kind == SubsystemKind::Discovery {
            return Err(ConfigError::Invalid(
                "the discovery subsystem has no namespaces".into(),
            ));
        }
        let nsid = self.update(|c| {
            let max = if c.max_namespaces == 0 {
                32
            } else {
                c.max_namespaces
            };
            let id = match nsid {
                Some(0) | None => (1..=max)
                    .find(|i| !c.namespaces.contains_key(i))
                    .ok_or_else(|| {
                        ConfigError::Invalid(format!("subsystem already has {max} namespaces"))
                    })?,
                Some(id) if id > max => {
                    return Err(ConfigError::Invalid(format!(
                        "nsid {id} is above the subsystem's maximum of {max}"
                    )));
                }
                Some(id) if c.namespaces.contains_key(&id) => {
                    return Err(ConfigError::AlreadyExists(format!("namespace {id}")));
                }
                Some(id) => id,
            };
            let bdev_name = bdev.info().name.clone();
            if c.namespaces
                .values()
                .any(|n| n.bdev.info().name == bdev_name)
            {
                return Err(ConfigError::AlreadyExists(format!(
                    "bdev {bdev_name} in this subsystem"
                )));
            }
            let uuid = uuid.unwrap_or(bdev.info().uuid);
            let me = self.me.clone();
            let watch = bdev.info().watch(Arc::new(move |_, ev| match ev {
                BdevEvent::Resized { .. } => {
                    if let Some(sub) = me.upgrade() {
                        sub.namespace_resized(id);
                    }
                }
            }));
            let ns = Namespace {
                nsid: id,
                bdev,
                uuid,
                nguid: nguid.unwrap_or(*uuid.as_bytes()),
                eui64,
                watch,
            };
            c.namespaces.insert(id, ns);
            Ok(id)
        })?;
        self.notify_ns_change(nsid);
        Ok(nsid)
    }

    /// Removes a namespace.
    pub fn remove_namespace(&self, nsid: u32) -> Result<Namespace, ConfigError> {
        let ns = self.update(|c| {
            c.namespaces
                .remove(&nsid)
                .ok_or_else(|| ConfigError::NotFound(format!("namespace {nsid}")))
        })?;
        ns.bdev.info().unwatch(ns.watch);
        self.notify_ns_change(nsid);
        Ok(ns)
    }

    /// Adds a listener address.
    pub fn add_listener(&self, addr: ListenAddress) -> Result<(), ConfigError> {
        self.update(|c| {
            if c.listeners.contains(&addr) {
                return Err(ConfigError::AlreadyExists(format!(
                    "listener {}:{}",
                    addr.traddr, addr.trsvcid
                )));
            }
            c.listeners.push(addr);
            Ok(())
        })
    }

    /// Removes a listener address.
    pub fn remove_listener(&self, addr: &ListenAddress) -> Result<(), ConfigError> {
        self.update(|c| {
            let before = c.listeners.len();
            c.listeners
                .retain(|l| l.traddr != addr.traddr || l.trsvcid != addr.trsvcid);
            if c.listeners.len() == before {
                return Err(ConfigError::NotFound(format!(
                    "listener {}:{}",
                    addr.traddr, addr.trsvcid
                )));
            }
            Ok(())
        })
    }

    /// Allows a host.
    pub fn add_host(&self, hostnqn: &str) -> Result<(), ConfigError> {
        validate_nqn(hostnqn)?;
        self.update(|c| {
            if !c.hosts.insert(hostnqn.to_string()) {
                return Err(ConfigError::AlreadyExists(format!("host {hostnqn}")));
            }
            Ok(())
        })
    }

    /// Disallows a host. Its existing controllers are disconnected by the caller.
    pub fn remove_host(&self, hostnqn: &str) -> Result<(), ConfigError> {
        self.update(|c| {
            if !c.hosts.remove(hostnqn) {
                return Err(ConfigError::NotFound(format!("host {hostnqn}")));
            }
            Ok(())
        })
    }

    /// Sets whether any host may connect.
    pub fn set_allow_any_host(&self, allow: bool) {
        let _ = self.update(|c| {
            c.allow_any_host = allow;
            Ok(())
        });
    }
}

/// Options of a new subsystem.
#[derive(Debug, Clone, Default)]
pub struct SubsystemOptions {
    /// Serial number (default `SHOAL` + a number).
    pub serial_number: Option<String>,
    /// Model number (default `Shoal Controller`).
    pub model_number: Option<String>,
    /// Whether any host may connect.
    pub allow_any_host: bool,
    /// Largest NSID (0: 32).
    pub max_namespaces: u32,
    /// Controller ID range (defaults 1..=0xFFEF).
    pub min_cntlid: Option<u16>,
    /// See `min_cntlid`.
    pub max_cntlid: Option<u16>,
}

/// Every subsystem of the target, and its transport settings.
pub struct Target {
    subsystems: RwLock<BTreeMap<String, Arc<Subsystem>>>,
    transport: RwLock<Option<TransportConfig>>,
}

impl Default for Target {
    fn default() -> Self {
        Self::new()
    }
}

impl Target {
    /// A target with only the discovery subsystem.
    pub fn new() -> Target {
        let t = Target {
            subsystems: RwLock::new(BTreeMap::new()),
            transport: RwLock::new(None),
        };
        let disc = SubsystemConfig {
            serial_number: "SHOAL-DISCOVERY".into(),
            model_number: "Shoal Discovery Controller".into(),
            allow_any_host: true,
            hosts: BTreeSet::new(),
            namespaces: BTreeMap::new(),
            listeners: Vec::new(),
            max_namespaces: 0,
            min_cntlid: 1,
            max_cntlid: 0xFFEF,
        };
        let sub = Subsystem::new(DISCOVERY_NQN, SubsystemKind::Discovery, disc);
        t.write().insert(DISCOVERY_NQN.to_string(), sub);
        t
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Subsystem>>> {
        self.subsystems.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The transport settings, once `nvmf_create_transport` ran (or the defaults).
    pub fn transport(&self) -> TransportConfig {
        self.transport
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default()
    }

    /// Whether a TCP transport was created.
    pub fn has_transport(&self) -> bool {
        self.transport
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Creates the TCP transport.
    pub fn create_transport(&self, cfg: TransportConfig) -> Result<(), ConfigError> {
        let mut t = self.transport.write().unwrap_or_else(|e| e.into_inner());
        if t.is_some() {
            return Err(ConfigError::AlreadyExists("transport TCP".into()));
        }
        if cfg.max_queue_depth < 2 || cfg.max_aq_depth < 2 {
            return Err(ConfigError::Invalid(
                "queue depths must be at least 2".into(),
            ));
        }
        if cfg.max_io_size < 4096 || cfg.in_capsule_data_size > cfg.max_io_size {
            return Err(ConfigError::Invalid(
                "max_io_size must be at least 4096 and not below in_capsule_data_size".into(),
            ));
        }
        *t = Some(cfg);
        Ok(())
    }

    /// Creates a subsystem.
    pub fn create_subsystem(
        &self,
        nqn: &str,
        opts: SubsystemOptions,
    ) -> Result<Arc<Subsystem>, ConfigError> {
        validate_nqn(nqn)?;
        let min = opts.min_cntlid.unwrap_or(1);
        let max = opts.max_cntlid.unwrap_or(0xFFEF);
        if min == 0 || max > 0xFFEF || min > max {
            return Err(ConfigError::Invalid(format!(
                "invalid controller ID range {min}..={max} (1..=65519)"
            )));
        }
        let serial = opts
            .serial_number
            .unwrap_or_else(|| "SHOAL00000000000001".into());
        if serial.len() > 20 || !serial.is_ascii() {
            return Err(ConfigError::Invalid(
                "serial_number must be at most 20 ASCII characters".into(),
            ));
        }
        let model = opts
            .model_number
            .unwrap_or_else(|| "Shoal Controller".into());
        if model.len() > 40 || !model.is_ascii() {
            return Err(ConfigError::Invalid(
                "model_number must be at most 40 ASCII characters".into(),
            ));
        }
        let mut subs = self.write();
        if subs.contains_key(nqn) {
            return Err(ConfigError::AlreadyExists(format!("subsystem {nqn}")));
        }
        let cfg = SubsystemConfig {
            serial_number: serial,
            model_number: model,
            allow_any_host: opts.allow_any_host,
            hosts: BTreeSet::new(),
            namespaces: BTreeMap::new(),
            listeners: Vec::new(),
            max_namespaces: opts.max_namespaces,
            min_cntlid: min,
            max_cntlid: max,
        };
        let sub = Subsystem::new(nqn, SubsystemKind::Nvme, cfg);
        subs.insert(nqn.to_string(), sub.clone());
        Ok(sub)
    }

    /// Deletes a subsystem; its controllers are told to go away.
    pub fn delete_subsystem(&self, nqn: &str) -> Result<Arc<Subsystem>, ConfigError> {
        if nqn == DISCOVERY_NQN {
            return Err(ConfigError::Invalid(
                "the discovery subsystem cannot be deleted".into(),
            ));
        }
        let sub = self
            .write()
            .remove(nqn)
            .ok_or_else(|| ConfigError::NotFound(format!("subsystem {nqn}")))?;
        for c in sub.controllers() {
            c.fail("subsystem deleted");
        }
        Ok(sub)
    }

    /// The subsystem with this NQN.
    pub fn subsystem(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        self.subsystems
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(nqn)
            .cloned()
    }

    /// The subsystem with this NQN, or a `NotFound` error naming it.
    pub fn get(&self, nqn: &str) -> Result<Arc<Subsystem>, ConfigError> {
        self.subsystem(nqn)
            .ok_or_else(|| ConfigError::NotFound(format!("subsystem {nqn}")))
    }

    /// Every subsystem, discovery first, then by NQN.
    pub fn subsystems(&self) -> Vec<Arc<Subsystem>> {
        let subs = self.subsystems.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = subs.values().cloned().collect();
        v.sort_by_key(|s| (s.kind != SubsystemKind::Discovery, s.nqn.clone()));
        v
    }

    /// The NVM subsystems `hostnqn` may see, with their listeners (the discovery log of
    /// NVMe-oF 1.1, section 5.3: only subsystems the host is allowed to connect to).
    pub fn discovery_entries(&self, hostnqn: &str) -> Vec<(String, ListenAddress)> {
        let mut out = Vec::new();
        for s in self.subsystems() {
            if s.kind != SubsystemKind::Nvme || !s.host_allowed(hostnqn) {
                continue;
            }
            for l in s.with_config(|c| c.listeners.clone()) {
                out.push((s.nqn.clone(), l));
            }
        }
        out
    }

    /// Bumped when anything a discovery log shows changes.
    pub fn discovery_generation(&self) -> u64 {
        self.subsystems()
            .iter()
            .map(|s| s.generation())
            .sum::<u64>()
            + self.subsystems().len() as u64
    }
}
