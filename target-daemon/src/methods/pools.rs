//! The daemon's pools as the other methods see them: which pool a bdev holds (a claim),
//! examine (a new bdev that holds a pool brings it back with its volumes), registering a
//! volume as a bdev, and a volume's `driver_specific` for `bdev_get_bdevs`. The `bdev_lvol_*`
//! methods that change pools are in [`super::lvol`], above this file; this file imports no
//! method file.

use std::sync::Arc;

use serde_json::{Value, json};
use shoal_bdev::Bdev;
use shoal_lvol::{LvolBdev, LvolError, Lvs};

use super::common::lock;
use crate::daemon::Daemon;

/// The pool built on bdev `base`, if any.
pub fn pool_on(daemon: &Daemon, base: &str) -> Option<Arc<Lvs>> {
    lock(&daemon.pools)
        .iter()
        .find(|p| p.base().info().name == base)
        .cloned()
}

/// Registers volume `l` as a bdev (named by its UUID); a clash is logged.
pub(super) fn register_lvol(daemon: &Daemon, l: &Arc<LvolBdev>) {
    let b: Arc<dyn Bdev> = l.clone();
    if daemon.bdevs.insert(b).is_err() {
        tracing::error!(lvol = %l.uuid(), "a bdev named like this volume exists already");
    }
}

/// Examines a new bdev: if it holds a pool, opens it and registers its volumes. Errors are
/// logged (a corrupt pool, or one whose name or UUIDs another pool or bdev has, leaves the
/// bdev as it is, unclaimed). The caller examines base devices only ([`super::claims::add_bdev`]):
/// a nexus, a remote namespace or a volume holds a tenant's bytes, which may be a pool image.
pub fn examine(daemon: &Daemon, bdev: &Arc<dyn Bdev>) {
    if bdev.info().product_name == shoal_lvol::lvol::PRODUCT_NAME {
        return;
    }
    let name = bdev.info().name.clone();
    match Lvs::probe(bdev) {
        Ok(false) => {}
        Ok(true) => {
            let Some(home) = daemon.reactors.first() else {
                return;
            };
            match Lvs::open_checked(bdev.clone(), home.clone(), |u, t| unique(daemon, u, t)) {
                Ok(lvs) => {
                    for l in lvs.lvols() {
                        register_lvol(daemon, &l);
                    }
                    tracing::info!(bdev = %name, lvs = %lvs.name(), "examine: pool found");
                    lock(&daemon.pools).push(lvs);
                }
                Err(e) => tracing::error!(bdev = %name, "examine: the pool does not open: {e}"),
            }
        }
        Err(e) => tracing::error!(bdev = %name, "examine: {e}"),
    }
}

/// Refuses a pool found by examine whose name or UUID an open pool has, or one of whose
/// volumes' UUIDs names a bdev already (a copied disk, or a crafted image): names and aliases
/// would resolve to either.
fn unique(
    daemon: &Daemon,
    uuid: uuid::Uuid,
    t: &shoal_lvol::table::Table,
) -> Result<(), LvolError> {
    let clash = |what: String| Err(LvolError::Exists(format!("{what}: the pool is not opened")));
    if let Some(p) = lock(&daemon.pools)
        .iter()
        .find(|p| p.name() == t.lvs_name || p.uuid() == uuid)
    {
        return clash(format!(
            "pool {} ({uuid}) found, but pool {} ({}) is open already",
            t.lvs_name,
            p.name(),
            p.uuid()
        ));
    }
    if let Some(v) = t
        .lvols
        .keys()
        .find(|v| daemon.bdevs.get(&v.to_string()).is_some())
    {
        return clash(format!(
            "pool {} ({uuid}) holds volume {v}, but a bdev of that name or UUID exists",
            t.lvs_name
        ));
    }
    Ok(())
}

/// `driver_specific` and aliases of a volume's bdev for `bdev_get_bdevs` (SPDK's
/// `driver_specific.lvol`, plus Shoal's `nospace_errors`: writes refused because the pool was
/// full).
pub fn describe(daemon: &Daemon, name: &str) -> Option<(Value, Vec<String>)> {
    let pools = lock(&daemon.pools);
    for l in pools.iter() {
        if let Some(v) = l.lvol(name).filter(|v| v.info().name == name) {
            let mut lv = json!({
                "lvol_store_uuid": l.uuid().to_string(),
                "base_bdev": l.base().info().name,
                "thin_provision": v.is_thin(),
                "num_allocated_clusters": v.num_allocated_clusters(),
                "snapshot": v.is_snapshot(),
                "clone": v.parent_uuid().is_some(),
            });
            // As SPDK: `base_snapshot` on a clone, `clones` on a snapshot that has any.
            if let Some(p) = v.parent_uuid()
                && let Some(ps) = l.lvol(&p.to_string())
            {
                lv["base_snapshot"] = Value::String(ps.lvol_name());
            }
            let clones = l.clones_of(v.uuid());
            if !clones.is_empty() {
                lv["clones"] = json!(clones);
            }
            lv["esnap_clone"] = Value::Bool(false);
            lv["nospace_errors"] = json!(v.nospace_errors());
            let d = json!({ "lvol": lv });
            return Some((d, vec![v.alias()]));
        }
    }
    None
}
