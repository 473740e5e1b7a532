//! One SIMULATED node's state and its answers to the JSON-RPC methods the control plane calls
//! (sans-IO: [`SimNode::handle`] takes a method and its parameters, gives a result or an
//! error code).
//!
//! Nothing here stores data or moves a byte: a "pool" is a count of clusters, an lvol a name,
//! a UUID and a cluster count, a subsystem a record of its namespace, hosts and listeners, a
//! nexus a list of children whose states change by the clock (a child added is `rebuilding`
//! for the configured rebuild time, then `online`). The answers have the shapes and error
//! codes `shoald` gives (`target-daemon/src/methods`), so the control plane's own code runs
//! unchanged against it. A remote child whose node stops answering is faulted
//! (`disconnected`) as a real nexus's would be at its next I/O: the I/O side tells
//! [`SimNode::fault_unreachable`] which addresses are down; it stays faulted until it is
//! added again.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// `-EEXIST`.
pub const EEXIST: i64 = -17;
/// `-ENODEV`.
pub const ENODEV: i64 = -19;
/// `-EBUSY`.
pub const EBUSY: i64 = -16;
/// `-ENOSPC`.
pub const ENOSPC: i64 = -28;
/// `-EINVAL`.
pub const EINVAL: i64 = -22;
/// JSON-RPC: unknown method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC: bad parameters (as SPDK answers an unknown NQN in `nvmf_subsystem_*`).
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC: internal error (as SPDK answers a duplicate subsystem or transport).
pub const INTERNAL_ERROR: i64 = -32603;

/// A JSON-RPC error: code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcErr(pub i64, pub String);

type R = Result<Value, RpcErr>;

/// Bytes a simulated lvstore keeps for its metadata (one cluster, as a rough figure).
const META_CLUSTERS: u64 = 1;

struct Lvol {
    name: String,
    uuid: String,
    clusters: u64,
    thin: bool,
}

struct Lvs {
    name: String,
    uuid: String,
    base: String,
    total: u64,
    lvols: Vec<Lvol>,
}

impl Lvs {
    fn free(&self) -> u64 {
        let used: u64 = self.lvols.iter().map(|l| l.clusters).sum();
        self.total.saturating_sub(used)
    }
}

#[derive(Default)]
struct Subsystem {
    allow_any: bool,
    serial: String,
    ns: Option<String>,
    hosts: Vec<String>,
    listeners: Vec<Value>,
}

struct Child {
    uri: String,
    /// `None`: online; `Some(t)`: rebuilding until `t`.
    rebuilt_at: Option<Instant>,
    /// Faulted, and why.
    fault: Option<&'static str>,
}

impl Child {
    fn new(uri: String, rebuilt_at: Option<Instant>) -> Self {
        Self {
            uri,
            rebuilt_at,
            fault: None,
        }
    }

    fn online(&self, now: Instant) -> bool {
        self.fault.is_none() && self.rebuilt_at.is_none_or(|t| now >= t)
    }
}

/// The `host:port` of a remote child's URI (`nvmf://host:port/nqn...`).
fn remote_addr(uri: &str) -> Option<&str> {
    uri.strip_prefix("nvmf://")?.split('/').next()
}

struct Nexus {
    uuid: String,
    size: u64,
    children: Vec<Child>,
}

/// A simulated node.
pub struct SimNode {
    id: String,
    cluster: u64,
    /// Bytes of a simulated `uring` disk (its file is never opened).
    uring_bytes: u64,
    rebuild: Duration,
    bdevs: BTreeMap<String, u64>,
    pools: Vec<Lvs>,
    tcp: bool,
    subsystems: BTreeMap<String, Subsystem>,
    nexuses: BTreeMap<String, Nexus>,
}

fn err(code: i64, msg: impl Into<String>) -> RpcErr {
    RpcErr(code, msg.into())
}

fn s<'a>(p: &'a Value, k: &str) -> Result<&'a str, RpcErr> {
    p.get(k)
        .and_then(Value::as_str)
        .ok_or_else(|| err(INVALID_PARAMS, format!("missing string parameter {k:?}")))
}

fn u(p: &Value, k: &str) -> Result<u64, RpcErr> {
    p.get(k)
        .and_then(Value::as_u64)
        .ok_or_else(|| err(INVALID_PARAMS, format!("missing integer parameter {k:?}")))
}

fn opt_s<'a>(p: &'a Value, k: &str) -> Option<&'a str> {
    p.get(k).and_then(Value::as_str)
}

impl SimNode {
    /// A node with no bdev, pool, export or nexus. `cluster` is the lvstores' cluster size,
    /// `uring_bytes` the size a `bdev_uring_create` disk pretends to have, `rebuild` how long
    /// an added nexus child stays `rebuilding`.
    #[must_use]
    pub fn new(id: &str, cluster: u64, uring_bytes: u64, rebuild: Duration) -> Self {
        Self {
            id: id.to_owned(),
            cluster: cluster.max(4096),
            uring_bytes,
            rebuild,
            bdevs: BTreeMap::new(),
            pools: Vec::new(),
            tcp: false,
            subsystems: BTreeMap::new(),
            nexuses: BTreeMap::new(),
        }
    }

    /// The addresses of the remote children of every nexus.
    #[must_use]
    pub fn peers(&self) -> BTreeSet<String> {
        self.nexuses
            .values()
            .flat_map(|n| &n.children)
            .filter_map(|c| remote_addr(&c.uri).map(str::to_owned))
            .collect()
    }

    /// Faults (`disconnected`) every remote child at an address of `down`.
    pub fn fault_unreachable(&mut self, down: &HashSet<String>) {
        for c in self.nexuses.values_mut().flat_map(|n| &mut n.children) {
            if c.fault.is_none() && remote_addr(&c.uri).is_some_and(|a| down.contains(a)) {
                c.fault = Some("disconnected");
            }
        }
    }

    /// Answers one call at time `now`.
    ///
    /// # Errors
    /// The JSON-RPC error `shoald` would answer.
    pub fn handle(&mut self, method: &str, params: &Value, now: Instant) -> R {
        let p = params;
        match method {
            "spdk_get_version" => Ok(json!({
                "version": format!("shoal-simnode {} (SIMULATED node {})", env!("CARGO_PKG_VERSION"), self.id),
                "fields": {"major": 0, "minor": 0, "patch": 0, "suffix": "-sim"}
            })),
            "bdev_get_bdevs" => self.get_bdevs(opt_s(p, "name")),
            "bdev_malloc_create" => {
                let bytes = u(p, "num_blocks")?
                    .checked_mul(u(p, "block_size")?)
                    .ok_or_else(|| err(EINVAL, "size overflows"))?;
                self.add_bdev(s(p, "name")?, bytes)
            }
            "bdev_uring_create" => self.add_bdev(s(p, "name")?, self.uring_bytes),
            "bdev_malloc_delete" | "bdev_uring_delete" => self.delete_bdev(s(p, "name")?),
            "bdev_lvol_create_lvstore" => {
                self.create_lvstore(s(p, "bdev_name")?, s(p, "lvs_name")?)
            }
            "bdev_lvol_delete_lvstore" => self.delete_lvstore(s(p, "lvs_name")?),
            "bdev_lvol_get_lvstores" => self.get_lvstores(opt_s(p, "lvs_name")),
            "bdev_lvol_get_lvols" => self.get_lvols(opt_s(p, "lvs_name")),
            "bdev_lvol_create" => self.create_lvol(p),
            "bdev_lvol_delete" => self.delete_lvol(s(p, "name")?),
            "nvmf_get_transports" => Ok(if self.tcp {
                json!([{"trtype": "TCP"}])
            } else {
                json!([])
            }),
            "nvmf_create_transport" => {
                if std::mem::replace(&mut self.tcp, true) {
                    return Err(err(INTERNAL_ERROR, "Transport type 'TCP' already exists"));
                }
                Ok(json!(true))
            }
            "nvmf_get_subsystems" => self.get_subsystems(opt_s(p, "nqn")),
            "nvmf_create_subsystem" => self.create_subsystem(p),
            "nvmf_subsystem_add_ns" => self.add_ns(p),
            "nvmf_subsystem_add_host" => {
                let h = s(p, "host")?.to_owned();
                let sub = self.sub(s(p, "nqn")?)?;
                if sub.hosts.contains(&h) {
                    return Err(err(EEXIST, format!("host {h} already allowed")));
                }
                sub.hosts.push(h);
                Ok(json!(true))
            }
            "nvmf_subsystem_remove_host" => {
                let h = s(p, "host")?;
                let sub = self.sub(s(p, "nqn")?)?;
                let before = sub.hosts.len();
                sub.hosts.retain(|x| x != h);
                if sub.hosts.len() == before {
                    return Err(err(INVALID_PARAMS, format!("host {h} not allowed")));
                }
                Ok(json!(true))
            }
            "nvmf_subsystem_add_listener" => {
                let l = p
                    .get("listen_address")
                    .cloned()
                    .ok_or_else(|| err(INVALID_PARAMS, "missing listen_address"))?;
                let sub = self.sub(s(p, "nqn")?)?;
                if sub.listeners.contains(&l) {
                    return Err(err(EEXIST, "listener exists"));
                }
                sub.listeners.push(l);
                Ok(json!(true))
            }
            "nvmf_delete_subsystem" => {
                let nqn = s(p, "nqn")?;
                self.subsystems
                    .remove(nqn)
                    .map(|_| json!(true))
                    .ok_or_else(|| err(INVALID_PARAMS, format!("no subsystem {nqn}")))
            }
            "nexus_get" => self.nexus_get(opt_s(p, "name"), now),
            "nexus_create" => self.nexus_create(p),
            "nexus_destroy" => {
                let name = s(p, "name")?;
                if self
                    .subsystems
                    .values()
                    .any(|x| x.ns.as_deref() == Some(name))
                {
                    return Err(err(EBUSY, format!("nexus {name} is exported")));
                }
                self.nexuses
                    .remove(name)
                    .map(|_| json!(true))
                    .ok_or_else(|| err(ENODEV, format!("nexus {name}")))
            }
            "nexus_add_child" => self.add_child(s(p, "name")?, s(p, "uri")?, now),
            "nexus_remove_child" => self.remove_child(s(p, "name")?, s(p, "uri")?, now),
            other => Err(err(METHOD_NOT_FOUND, format!("Method not found: {other}"))),
        }
    }

    fn lvol_uuid_exists(&self, name: &str) -> bool {
        self.pools.iter().any(|l| {
            l.lvols
                .iter()
                .any(|v| v.uuid == name || format!("{}/{}", l.name, v.name) == name)
        })
    }

    fn get_bdevs(&self, name: Option<&str>) -> R {
        let desc = |n: &str, bytes: u64| json!({"name": n, "block_size": 4096, "num_blocks": bytes / 4096});
        match name {
            None => Ok(Value::Array(
                self.bdevs.iter().map(|(n, b)| desc(n, *b)).collect(),
            )),
            Some(n) => {
                if let Some(b) = self.bdevs.get(n) {
                    return Ok(json!([desc(n, *b)]));
                }
                for l in &self.pools {
                    if let Some(v) = l.lvols.iter().find(|v| v.uuid == n) {
                        return Ok(json!([desc(n, v.clusters * self.cluster)]));
                    }
                }
                if let Some(x) = self.nexuses.get(n) {
                    return Ok(json!([desc(n, x.size)]));
                }
                Err(err(ENODEV, format!("bdev {n}")))
            }
        }
    }

    fn add_bdev(&mut self, name: &str, bytes: u64) -> R {
        if self.bdevs.contains_key(name) {
            return Err(err(EEXIST, format!("bdev {name} exists")));
        }
        self.bdevs.insert(name.to_owned(), bytes);
        Ok(json!(name))
    }

    fn delete_bdev(&mut self, name: &str) -> R {
        if self.pools.iter().any(|l| l.base == name) {
            return Err(err(EBUSY, format!("bdev {name} holds a pool")));
        }
        self.bdevs
            .remove(name)
            .map(|_| json!(true))
            .ok_or_else(|| err(ENODEV, format!("bdev {name}")))
    }

    fn create_lvstore(&mut self, base: &str, name: &str) -> R {
        let bytes = *self
            .bdevs
            .get(base)
            .ok_or_else(|| err(ENODEV, format!("bdev {base}")))?;
        if self.pools.iter().any(|l| l.name == name || l.base == base) {
            return Err(err(
                EEXIST,
                format!("lvstore {name} or one on {base} exists"),
            ));
        }
        let uuid = uuid::Uuid::new_v4().to_string();
        self.pools.push(Lvs {
            name: name.to_owned(),
            uuid: uuid.clone(),
            base: base.to_owned(),
            total: (bytes / self.cluster).saturating_sub(META_CLUSTERS),
            lvols: Vec::new(),
        });
        Ok(json!(uuid))
    }

    fn delete_lvstore(&mut self, name: &str) -> R {
        let i = self
            .pools
            .iter()
            .position(|l| l.name == name)
            .ok_or_else(|| err(ENODEV, format!("lvstore {name}")))?;
        self.pools.remove(i);
        Ok(json!(true))
    }

    fn pool(&self, name: &str) -> Result<&Lvs, RpcErr> {
        self.pools
            .iter()
            .find(|l| l.name == name)
            .ok_or_else(|| err(ENODEV, format!("lvstore {name}")))
    }

    fn get_lvstores(&self, name: Option<&str>) -> R {
        let desc = |l: &Lvs| {
            json!({"uuid": l.uuid, "name": l.name, "base_bdev": l.base,
                   "total_data_clusters": l.total, "free_clusters": l.free(),
                   "block_size": 4096, "cluster_size": self.cluster})
        };
        match name {
            Some(n) => Ok(json!([desc(self.pool(n)?)])),
            None => Ok(Value::Array(self.pools.iter().map(desc).collect())),
        }
    }

    fn get_lvols(&self, name: Option<&str>) -> R {
        let pools: Vec<&Lvs> = match name {
            Some(n) => vec![self.pool(n)?],
            None => self.pools.iter().collect(),
        };
        let mut out = Vec::new();
        for l in pools {
            for v in &l.lvols {
                out.push(
                    json!({"alias": format!("{}/{}", l.name, v.name), "uuid": v.uuid,
                    "name": v.name, "is_thin_provisioned": v.thin, "is_snapshot": false,
                    "is_clone": false, "is_esnap_clone": false, "is_degraded": false,
                    "lvs": {"name": l.name, "uuid": l.uuid}}),
                );
            }
        }
        Ok(Value::Array(out))
    }

    fn create_lvol(&mut self, p: &Value) -> R {
        let pool = s(p, "lvs_name")?;
        let name = s(p, "lvol_name")?.to_owned();
        let size = u(p, "size")?;
        let thin = p.get("thin_provision").and_then(Value::as_bool) == Some(true);
        let cluster = self.cluster;
        let l = self
            .pools
            .iter_mut()
            .find(|l| l.name == pool)
            .ok_or_else(|| err(ENODEV, format!("lvstore {pool}")))?;
        if l.lvols.iter().any(|v| v.name == name) {
            return Err(err(EEXIST, format!("lvol {pool}/{name} exists")));
        }
        // A thin lvol takes clusters at its first writes; the simulation never writes.
        let clusters = if thin { 0 } else { size.div_ceil(cluster) };
        if clusters > l.free() {
            return Err(err(
                ENOSPC,
                format!(
                    "lvstore {pool}: {clusters} clusters asked, {} free",
                    l.free()
                ),
            ));
        }
        let uuid = uuid::Uuid::new_v4().to_string();
        l.lvols.push(Lvol {
            name,
            uuid: uuid.clone(),
            clusters,
            thin,
        });
        Ok(json!(uuid))
    }

    fn delete_lvol(&mut self, name: &str) -> R {
        let exported = self
            .subsystems
            .values()
            .any(|x| x.ns.as_deref() == Some(name));
        let local_child = format!("bdev:///{name}");
        let in_nexus = self
            .nexuses
            .values()
            .any(|n| n.children.iter().any(|c| c.uri == local_child));
        for l in &mut self.pools {
            if let Some(i) = l
                .lvols
                .iter()
                .position(|v| v.uuid == name || format!("{}/{}", l.name, v.name) == name)
            {
                if exported || in_nexus {
                    return Err(err(EBUSY, format!("lvol {name} is in use")));
                }
                l.lvols.remove(i);
                return Ok(json!(true));
            }
        }
        Err(err(ENODEV, format!("lvol {name}")))
    }

    fn sub(&mut self, nqn: &str) -> Result<&mut Subsystem, RpcErr> {
        self.subsystems.get_mut(nqn).ok_or_else(|| {
            err(
                INVALID_PARAMS,
                format!("Unable to find subsystem with NQN {nqn}"),
            )
        })
    }

    fn get_subsystems(&self, nqn: Option<&str>) -> R {
        let desc = |n: &str, x: &Subsystem| {
            json!({"nqn": n, "subtype": "NVMe", "allow_any_host": x.allow_any,
                   "serial_number": x.serial,
                   "hosts": x.hosts.iter().map(|h| json!({"nqn": h})).collect::<Vec<_>>(),
                   "listen_addresses": x.listeners,
                   "namespaces": x.ns.iter().map(|b| json!({"nsid": 1, "bdev_name": b})).collect::<Vec<_>>()})
        };
        match nqn {
            Some(n) => {
                let x = self
                    .subsystems
                    .get(n)
                    .ok_or_else(|| err(ENODEV, format!("subsystem {n}")))?;
                Ok(json!([desc(n, x)]))
            }
            None => Ok(Value::Array(
                self.subsystems.iter().map(|(n, x)| desc(n, x)).collect(),
            )),
        }
    }

    fn create_subsystem(&mut self, p: &Value) -> R {
        let nqn = s(p, "nqn")?;
        if self.subsystems.contains_key(nqn) {
            return Err(err(
                INTERNAL_ERROR,
                format!("Unable to create subsystem {nqn}"),
            ));
        }
        self.subsystems.insert(
            nqn.to_owned(),
            Subsystem {
                allow_any: p.get("allow_any_host").and_then(Value::as_bool) == Some(true),
                serial: opt_s(p, "serial_number").unwrap_or_default().to_owned(),
                ..Subsystem::default()
            },
        );
        Ok(json!(true))
    }

    fn add_ns(&mut self, p: &Value) -> R {
        let bdev = p
            .get("namespace")
            .and_then(|n| n.get("bdev_name"))
            .and_then(Value::as_str)
            .ok_or_else(|| err(INVALID_PARAMS, "missing namespace.bdev_name"))?
            .to_owned();
        if !self.lvol_uuid_exists(&bdev) && !self.nexuses.contains_key(&bdev) {
            return Err(err(ENODEV, format!("bdev {bdev}")));
        }
        let sub = self.sub(s(p, "nqn")?)?;
        if sub.ns.is_some() {
            return Err(err(EEXIST, "the simulated subsystem has its namespace"));
        }
        sub.ns = Some(bdev);
        Ok(json!(1))
    }

    fn nexus_json(name: &str, n: &Nexus, now: Instant, rebuild: Duration) -> Value {
        let kids: Vec<Value> = n
            .children
            .iter()
            .map(|c| match c.rebuilt_at {
                _ if c.fault.is_some() => json!({"uri": c.uri, "state": "faulted",
                    "fault_reason": c.fault, "rebuild": null}),
                Some(t) if now < t => {
                    let left = t.saturating_duration_since(now).as_millis();
                    let total = rebuild.as_millis().max(1);
                    let pct = 100u128.saturating_sub(left.saturating_mul(100) / total);
                    json!({"uri": c.uri, "state": "rebuilding", "fault_reason": null,
                       "rebuild": {"full": true, "paused": false, "progress": pct}})
                }
                _ => json!({"uri": c.uri, "state": "online", "fault_reason": null, "rebuild": null,
                       "last_rebuild": c.rebuilt_at.map(|_| json!({"full": true, "outcome": "done",
                          "segments_total": 0, "segments_copied": 0, "bytes_copied": 0,
                          "duration_ms": u64::try_from(rebuild.as_millis()).unwrap_or(u64::MAX)}))}),
            })
            .collect();
        let state = if n.children.iter().all(|c| c.online(now)) {
            "online"
        } else {
            "degraded"
        };
        json!({"name": name, "uuid": n.uuid, "size": n.size, "block_size": 4096,
               "num_blocks": n.size / 4096, "state": state, "children": kids})
    }

    fn nexus_get(&self, name: Option<&str>, now: Instant) -> R {
        match name {
            Some(nm) => {
                let n = self
                    .nexuses
                    .get(nm)
                    .ok_or_else(|| err(ENODEV, format!("nexus {nm}")))?;
                Ok(json!([Self::nexus_json(nm, n, now, self.rebuild)]))
            }
            None => Ok(Value::Array(
                self.nexuses
                    .iter()
                    .map(|(nm, n)| Self::nexus_json(nm, n, now, self.rebuild))
                    .collect(),
            )),
        }
    }

    fn check_child(&self, uri: &str) -> Result<(), RpcErr> {
        match uri.strip_prefix("bdev:///") {
            Some(b) if !self.lvol_uuid_exists(b) => Err(err(ENODEV, format!("bdev {b}"))),
            Some(_) => Ok(()),
            // A remote replica: the simulation does not connect to it.
            None if uri.starts_with("nvmf://") => Ok(()),
            None => Err(err(EINVAL, format!("child URI {uri}"))),
        }
    }

    fn nexus_create(&mut self, p: &Value) -> R {
        let name = s(p, "name")?;
        if self.nexuses.contains_key(name) {
            return Err(err(EEXIST, format!("nexus {name} exists")));
        }
        let uris: Vec<String> = p
            .get("children")
            .and_then(Value::as_array)
            .ok_or_else(|| err(INVALID_PARAMS, "missing children"))?
            .iter()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect();
        if uris.is_empty() {
            return Err(err(EINVAL, "a nexus needs a child"));
        }
        for c in &uris {
            self.check_child(c)?;
        }
        let n = Nexus {
            uuid: opt_s(p, "uuid").unwrap_or_default().to_owned(),
            size: u(p, "size")?,
            children: uris.into_iter().map(|uri| Child::new(uri, None)).collect(),
        };
        self.nexuses.insert(name.to_owned(), n);
        Ok(json!(name))
    }

    fn add_child(&mut self, name: &str, uri: &str, now: Instant) -> R {
        self.check_child(uri)?;
        let rebuild = self.rebuild;
        let n = self
            .nexuses
            .get_mut(name)
            .ok_or_else(|| err(ENODEV, format!("nexus {name}")))?;
        if let Some(c) = n.children.iter_mut().find(|c| c.uri == uri) {
            if c.fault.is_none() {
                return Err(err(EEXIST, format!("child {uri} is in nexus {name}")));
            }
            // A faulted child added again: rebuilt (the simulation does not tell a partial
            // rebuild from a full one).
            *c = Child::new(uri.to_owned(), Some(now + rebuild));
            return Ok(json!(true));
        }
        n.children
            .push(Child::new(uri.to_owned(), Some(now + rebuild)));
        Ok(json!(true))
    }

    fn remove_child(&mut self, name: &str, uri: &str, now: Instant) -> R {
        let n = self
            .nexuses
            .get_mut(name)
            .ok_or_else(|| err(ENODEV, format!("nexus {name}")))?;
        let i = n
            .children
            .iter()
            .position(|c| c.uri == uri)
            .ok_or_else(|| err(ENODEV, format!("child {uri}")))?;
        let others_online = n
            .children
            .iter()
            .enumerate()
            .any(|(j, c)| j != i && c.online(now));
        if !others_online {
            return Err(err(EBUSY, "the last healthy child cannot be removed"));
        }
        n.children.remove(i);
        Ok(json!(true))
    }
}

#[cfg(test)]
mod tests;
