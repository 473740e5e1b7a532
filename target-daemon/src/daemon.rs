//! The state of a running `shoald`: its reactors, bdevs, NVMe-oF target and listeners.
//!
//! RPC handlers get a `&Daemon`. Anything that must happen on a reactor (binding a listener,
//! closing connections) is sent there as a message and waited for; nothing here runs on the
//! I/O path.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use serde_json::Value;
use shoal_bdev::Bdev;
use shoal_bdev::registry::BdevRegistry;
use shoal_nvmf::host::RemoteBdev;
use shoal_nvmf::target::subsystem::{ListenAddress, Target};
use shoal_nvmf::target::tcp::{self, TcpTransport};
use shoal_reactor::ReactorHandle;

/// How a bdev was created, so that `save_config` can recreate it.
#[derive(Debug, Clone)]
pub struct BdevRecipe {
    /// The RPC method that created it (`bdev_malloc_create`, ...).
    pub method: String,
    /// Its parameters, as they should be saved.
    pub params: Value,
}

/// The daemon's state, shared by the RPC threads.
pub struct Daemon {
    /// Block devices by name.
    pub bdevs: BdevRegistry,
    /// How each bdev was made, by name, in creation order.
    pub recipes: Mutex<Vec<(String, BdevRecipe)>>,
    /// Subsystems, namespaces, hosts and transport.
    pub target: Arc<Target>,
    /// The target's NVMe/TCP listeners and connections.
    pub tcp: TcpTransport,
    /// The reactors, in core order; listeners accept on the first.
    pub reactors: Vec<ReactorHandle>,
    /// Typed handles to the stacked (error, delay) bdevs; its lock also serialises bdev and
    /// claim changes in the RPC methods.
    pub stacked: Mutex<crate::stacked::Stacked>,
    /// Addresses being listened on, with the number of subsystems using each.
    listeners: Mutex<BTreeMap<(String, String), (ListenAddress, usize)>>,
    /// Remote replicas (NVMe/TCP controllers) opened for nexuses, so that shutdown can
    /// disconnect them once the nexuses are closed (a namespace may still hold a nexus, and
    /// with it its children, until the process ends).
    pub remotes: Mutex<Vec<Weak<RemoteBdev>>>,
    /// Pools (lvstores), each claiming its base bdev.
    pub pools: Mutex<Vec<Arc<shoal_lvol::Lvs>>>,
}

impl Daemon {
    /// A daemon over running reactors.
    pub fn new(reactors: Vec<ReactorHandle>) -> Daemon {
        let target = Arc::new(Target::new());
        Daemon {
            bdevs: BdevRegistry::new(),
            recipes: Mutex::new(Vec::new()),
            tcp: TcpTransport::new(target.clone()),
            target,
            reactors,
            stacked: Mutex::new(crate::stacked::Stacked::default()),
            listeners: Mutex::new(BTreeMap::new()),
            remotes: Mutex::new(Vec::new()),
            pools: Mutex::new(Vec::new()),
        }
    }

    /// A bdev by name, by UUID, or by the `lvs_name/lvol_name` alias of a logical volume (as
    /// SPDK's `spdk_bdev_get_by_name`, which also finds aliases). The alias is resolved when
    /// asked, so it follows renames of the volume and of its pool.
    pub fn bdev(&self, name: &str) -> Option<Arc<dyn Bdev>> {
        self.bdevs.get(name).or_else(|| {
            let uuid = self.lvol_alias_to_name(name)?;
            self.bdevs.get(&uuid)
        })
    }

    /// The bdev name (UUID) of the volume whose alias is `lvs_name/lvol_name`, if there is one.
    pub fn lvol_alias_to_name(&self, alias: &str) -> Option<String> {
        let (lvs, lvol) = alias.split_once('/')?;
        let pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        let pool = pools.iter().find(|p| p.name() == lvs)?;
        pool.lvol(lvol)
            .filter(|l| l.lvol_name() == lvol)
            .map(|l| l.info().name.clone())
    }

    fn first_reactor(&self) -> Result<&ReactorHandle, String> {
        self.reactors
            .first()
            .ok_or_else(|| "no reactor is running".to_string())
    }

    /// Starts listening on `addr` (or counts one more user of an existing listener).
    pub fn listen(&self, addr: &ListenAddress) -> Result<(), String> {
        let key = (addr.traddr.clone(), addr.trsvcid.clone());
        let mut ls = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, users)) = ls.get_mut(&key) {
            *users += 1;
            return Ok(());
        }
        let reactors = self.reactors.clone();
        let t = self.tcp.clone();
        let a = addr.clone();
        let limits = tcp::limits::ListenLimits::from(&self.target.transport());
        let bound = self
            .first_reactor()?
            .call(move || t.listen(a, reactors, limits).map_err(|e| e.to_string()))
            .ok_or("the reactor has stopped")??;
        tracing::info!("listening on {bound} (NVMe/TCP)");
        ls.insert(key, (addr.clone(), 1));
        Ok(())
    }

    /// Drops one user of the listener on `addr`; the socket closes with the last one.
    pub fn unlisten(&self, addr: &ListenAddress) {
        let key = (addr.traddr.clone(), addr.trsvcid.clone());
        let mut ls = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        let Some((_, users)) = ls.get_mut(&key) else {
            return;
        };
        *users -= 1;
        if *users > 0 {
            return;
        }
        ls.remove(&key);
        let a = addr.clone();
        if let Ok(r) = self.first_reactor() {
            let t = self.tcp.clone();
            let _ = r.call(move || t.unlisten(&a));
        }
    }

    /// Remembers how a bdev was made.
    pub fn record_bdev(&self, name: &str, method: &str, params: Value) {
        let mut r = self.recipes.lock().unwrap_or_else(|e| e.into_inner());
        r.push((
            name.to_string(),
            BdevRecipe {
                method: method.to_string(),
                params,
            },
        ));
    }

    /// Forgets how a bdev was made (it was deleted).
    pub fn forget_bdev(&self, name: &str) {
        let mut r = self.recipes.lock().unwrap_or_else(|e| e.into_inner());
        r.retain(|(n, _)| n != name);
    }

    /// Stops accepting and closes every connection of the target (hosts go away).
    pub fn quiesce(&self) {
        let addrs: Vec<ListenAddress> = {
            let mut ls = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *ls)
                .into_values()
                .map(|(a, _)| a)
                .collect()
        };
        if let Ok(r) = self.first_reactor() {
            let t = self.tcp.clone();
            let _ = r.call(move || {
                for a in &addrs {
                    t.unlisten(a);
                }
            });
        }
        for r in &self.reactors {
            let t = self.tcp.clone();
            let _ = r.call(move || t.close_all());
        }
    }

    /// Waits (at most 5 s) until the reactors have no operation in flight: closing
    /// connections have drained their queued responses and block I/O has completed. Call it
    /// after [`Daemon::quiesce`] and after closing whatever else holds connections (nexuses
    /// with remote replicas).
    pub fn wait_drained(&self) {
        // Give closing connections a moment to drain their queued responses and I/O.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            let live: usize = self
                .reactors
                .iter()
                .filter_map(|r| {
                    r.call(|| shoal_reactor::Reactor::current().map_or(0, |x| x.in_flight()))
                })
                .sum();
            if live == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
