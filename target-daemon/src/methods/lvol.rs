//! Pools and logical volumes: SPDK's `bdev_lvol_*` methods over `shoal_lvol`. Examine, the
//! pool lookups the claim rules use and a volume's `bdev_get_bdevs` description are in
//! [`super::pools`].
//!
//! A pool claims its base bdev ([`super::claims::claimed_by`] names it). A volume is a bdev named by its UUID,
//! with the alias `lvs_name/lvol_name`; methods that take a volume accept either. When a bdev
//! is created (`bdev_malloc_create`, `bdev_uring_create`, ...) it is examined: if it holds a
//! pool, the pool and its volumes come back with their names and UUIDs, as SPDK's examine
//! does. Volumes are not recorded for `save_config`: they come back by examine.
//!
//! Results follow SPDK's `vbdev_lvol_rpc.c`: `bdev_lvol_get_lvstores` answers `[{"uuid",
//! "name", "base_bdev", "total_data_clusters", "free_clusters", "block_size",
//! "cluster_size"}]`, `bdev_lvol_get_lvols` `[{"alias", "uuid", "name",
//! "is_thin_provisioned", "is_snapshot", "is_clone", "is_esnap_clone", "is_degraded", "lvs":
//! {"name", "uuid"}}]`.

use std::sync::Arc;

use serde_json::{Value, json};
use shoal_bdev::Bdev;
use shoal_lvol::format::record::ClearMethod;
use shoal_lvol::{LvolBdev, LvolError, LvolOptions, Lvs};

use super::claims::claimed_by_any;
use super::common::lock;
use super::pools::register_lvol;
use crate::daemon::Daemon;
use crate::rpc::params::lvol::{
    BdevLvolClone, BdevLvolCreate, BdevLvolCreateLvstore, BdevLvolGetLvols, BdevLvolLvstoreSel,
    BdevLvolName, BdevLvolRename, BdevLvolResize, BdevLvolSnapshot,
};
use crate::rpc::{Registry, RpcError, error};

/// SPDK's default cluster size.
const DEFAULT_CLUSTER: u64 = 4 << 20;

/// Registers the lvol methods.
pub fn register(r: &mut Registry<Daemon>) {
    r.register("bdev_lvol_create_lvstore", create_lvstore);
    r.register("bdev_lvol_get_lvstores", get_lvstores);
    r.register("bdev_lvol_rename_lvstore", rename_lvstore);
    r.register("bdev_lvol_delete_lvstore", delete_lvstore);
    r.register("bdev_lvol_create", create);
    r.register("bdev_lvol_get_lvols", get_lvols);
    r.register("bdev_lvol_delete", delete);
    r.register("bdev_lvol_rename", rename);
    r.register("bdev_lvol_set_read_only", set_read_only);
    r.register("bdev_lvol_resize", resize);
    r.register("bdev_lvol_snapshot", snapshot);
    r.register("bdev_lvol_clone", clone);
    r.register("bdev_lvol_inflate", |d: &Daemon, p: BdevLvolName| {
        let (l, v) = find_lvol(d, &p.name)?;
        l.inflate(v.uuid())
            .map_err(|e| lvol_error(&format!("bdev_lvol_inflate {}", p.name), e))?;
        Ok(Value::Bool(true))
    });
    r.register(
        "bdev_lvol_decouple_parent",
        |d: &Daemon, p: BdevLvolName| {
            let (l, v) = find_lvol(d, &p.name)?;
            l.decouple_parent(v.uuid())
                .map_err(|e| lvol_error(&format!("bdev_lvol_decouple_parent {}", p.name), e))?;
            Ok(Value::Bool(true))
        },
    );
}

fn snapshot(daemon: &Daemon, p: BdevLvolSnapshot) -> Result<Value, RpcError> {
    let _g = lock(&daemon.stacked);
    let (l, v) = find_lvol(daemon, &p.lvol_name)?;
    let s = l
        .snapshot(v.uuid(), &p.snapshot_name)
        .map_err(|e| lvol_error(&format!("bdev_lvol_snapshot {}", p.lvol_name), e))?;
    register_lvol(daemon, &s);
    tracing::info!(lvol = %v.alias(), snapshot = %s.alias(), "snapshot created");
    Ok(Value::String(s.uuid().to_string()))
}

fn clone(daemon: &Daemon, p: BdevLvolClone) -> Result<Value, RpcError> {
    let _g = lock(&daemon.stacked);
    let (l, s) = find_lvol(daemon, &p.snapshot_name)?;
    let c = l
        .clone_lvol(s.uuid(), &p.clone_name)
        .map_err(|e| lvol_error(&format!("bdev_lvol_clone {}", p.snapshot_name), e))?;
    register_lvol(daemon, &c);
    tracing::info!(snapshot = %s.alias(), clone = %c.alias(), "clone created");
    Ok(Value::String(c.uuid().to_string()))
}

fn lvol_error(ctx: &str, e: LvolError) -> RpcError {
    let msg = format!("{ctx}: {e}");
    match e {
        LvolError::Exists(_) => RpcError::already_exists(msg),
        LvolError::NotFound(_) | LvolError::NotAPool(_) => RpcError::no_such_device(msg),
        LvolError::Invalid(_) => RpcError::invalid_argument(msg),
        LvolError::NoSpace(_) => RpcError::errno(28, msg), // ENOSPC
        LvolError::Busy(_) => RpcError::busy(msg),
        LvolError::Unsupported(_) => RpcError::not_supported(msg),
        LvolError::ReadOnly(_) => RpcError::errno(error::EPERM, msg),
        LvolError::Format { .. } => RpcError::errno(error::EINVAL, msg),
        LvolError::Io { .. } => RpcError::errno(error::EIO, msg),
        LvolError::Unavailable(_) => RpcError::internal(msg),
        LvolError::InProgress(_) => RpcError::errno(error::ETIMEDOUT, msg),
    }
}

fn find_pool(
    daemon: &Daemon,
    uuid: Option<&str>,
    name: Option<&str>,
) -> Result<Arc<Lvs>, RpcError> {
    let pools = lock(&daemon.pools);
    let found = match (uuid, name) {
        (Some(_), Some(_)) => {
            return Err(RpcError::invalid_argument(
                "give the pool's uuid or its lvs_name, not both",
            ));
        }
        (Some(u), None) => pools.iter().find(|p| p.uuid().to_string() == u),
        (None, Some(n)) => pools.iter().find(|p| p.name() == n),
        (None, None) => {
            return Err(RpcError::invalid_argument(
                "give the pool's uuid or lvs_name",
            ));
        }
    };
    found
        .cloned()
        .ok_or_else(|| RpcError::no_such_device(format!("lvstore {}", uuid.or(name).unwrap_or(""))))
}

/// The volume named by UUID or `lvs/lvol` alias, with its pool.
fn find_lvol(daemon: &Daemon, name: &str) -> Result<(Arc<Lvs>, Arc<LvolBdev>), RpcError> {
    let pools = lock(&daemon.pools);
    for p in pools.iter() {
        let hit = match name.split_once('/') {
            Some((lvs, lvol)) if lvs == p.name() => p.lvol(lvol).filter(|l| l.lvol_name() == lvol),
            Some(_) => None,
            None => p.lvol(name).filter(|l| l.uuid().to_string() == name),
        };
        if let Some(l) = hit {
            return Ok((p.clone(), l));
        }
    }
    Err(RpcError::no_such_device(format!("lvol {name}")))
}

fn clear_method(s: Option<&str>, pool: bool) -> Result<ClearMethod, RpcError> {
    Ok(match s {
        None => ClearMethod::Default,
        Some("default") if !pool => ClearMethod::Default,
        Some("none") => ClearMethod::None,
        Some("unmap") => ClearMethod::Unmap,
        Some("write_zeroes") => ClearMethod::WriteZeroes,
        Some(other) => {
            return Err(RpcError::invalid_argument(format!(
                "clear_method `{other}`: expected none, unmap or write_zeroes"
            )));
        }
    })
}

fn create_lvstore(daemon: &Daemon, p: BdevLvolCreateLvstore) -> Result<Value, RpcError> {
    let stacked = lock(&daemon.stacked);
    let base = daemon
        .bdevs
        .get(&p.bdev_name)
        .ok_or_else(|| RpcError::no_such_device(format!("bdev {}", p.bdev_name)))?;
    let real = base.info().name.clone();
    if let Some(holder) = claimed_by_any(daemon, &stacked, &real) {
        return Err(RpcError::busy(format!(
            "bdev {real} is already claimed by {holder}"
        )));
    }
    if lock(&daemon.pools).iter().any(|l| l.name() == p.lvs_name) {
        return Err(RpcError::already_exists(format!(
            "lvstore {} already exists",
            p.lvs_name
        )));
    }
    let clear = match clear_method(p.clear_method.as_deref(), true)? {
        ClearMethod::None => None,
        ClearMethod::WriteZeroes => Some(true),
        _ => Some(false),
    };
    let home = daemon
        .reactors
        .first()
        .ok_or_else(|| RpcError::internal("no reactor"))?;
    let ctx = format!("bdev_lvol_create_lvstore {}", p.lvs_name);
    // A device that holds a pool (examined or not) is refused rather than overwritten.
    if Lvs::probe(&base).map_err(|e| lvol_error(&ctx, e))? {
        return Err(RpcError::already_exists(format!(
            "{ctx}: bdev {real} already holds a pool"
        )));
    }
    let lvs = Lvs::create(
        base,
        &p.lvs_name,
        p.cluster_sz.unwrap_or(DEFAULT_CLUSTER),
        clear,
        home.clone(),
    )
    .map_err(|e| lvol_error(&ctx, e))?;
    let uuid = lvs.uuid().to_string();
    tracing::info!(lvs = %p.lvs_name, base = %real, "lvstore created");
    lock(&daemon.pools).push(lvs);
    Ok(Value::String(uuid))
}

fn lvs_json(l: &Lvs) -> Value {
    let i = l.info();
    json!({
        "uuid": i.uuid.to_string(),
        "name": i.name,
        "base_bdev": i.base_bdev,
        "total_data_clusters": i.total_data_clusters,
        "free_clusters": i.free_clusters,
        "block_size": i.block_size,
        "cluster_size": i.cluster_size,
    })
}

fn get_lvstores(daemon: &Daemon, p: BdevLvolLvstoreSel) -> Result<Value, RpcError> {
    if p.uuid.is_none() && p.lvs_name.is_none() {
        let all: Vec<Value> = lock(&daemon.pools).iter().map(|l| lvs_json(l)).collect();
        return Ok(Value::Array(all));
    }
    let l = find_pool(daemon, p.uuid.as_deref(), p.lvs_name.as_deref())?;
    Ok(json!([lvs_json(&l)]))
}

fn rename_lvstore(daemon: &Daemon, p: BdevLvolRename) -> Result<Value, RpcError> {
    let _g = lock(&daemon.stacked);
    let l = find_pool(daemon, None, Some(&p.old_name))?;
    if lock(&daemon.pools).iter().any(|x| x.name() == p.new_name) {
        return Err(RpcError::already_exists(format!(
            "lvstore {} already exists",
            p.new_name
        )));
    }
    l.rename(&p.new_name)
        .map_err(|e| lvol_error("bdev_lvol_rename_lvstore", e))?;
    Ok(Value::Bool(true))
}

fn delete_lvstore(daemon: &Daemon, p: BdevLvolLvstoreSel) -> Result<Value, RpcError> {
    let stacked = lock(&daemon.stacked);
    let l = find_pool(daemon, p.uuid.as_deref(), p.lvs_name.as_deref())?;
    for v in l.lvols() {
        if let Some(holder) = claimed_by_any(daemon, &stacked, &v.info().name) {
            return Err(RpcError::busy(format!(
                "lvstore {}: volume {} is in use by {holder}; remove that first",
                l.name(),
                v.alias()
            )));
        }
    }
    let vols = l.lvols();
    l.destroy()
        .map_err(|e| lvol_error("bdev_lvol_delete_lvstore", e))?;
    for v in vols {
        daemon.bdevs.remove(&v.info().name);
    }
    lock(&daemon.pools).retain(|x| !Arc::ptr_eq(x, &l));
    tracing::info!(lvs = %l.name(), "lvstore deleted");
    Ok(Value::Bool(true))
}

fn create(daemon: &Daemon, p: BdevLvolCreate) -> Result<Value, RpcError> {
    let _g = lock(&daemon.stacked);
    let l = find_pool(daemon, p.uuid.as_deref(), p.lvs_name.as_deref())?;
    let size_bytes = match (p.size_in_mib, p.size) {
        (Some(m), None) => m
            .checked_mul(1 << 20)
            .ok_or_else(|| RpcError::invalid_argument("size_in_mib too large"))?,
        (None, Some(b)) => b,
        _ => {
            return Err(RpcError::invalid_argument(
                "give exactly one of size_in_mib and size",
            ));
        }
    };
    let o = LvolOptions {
        name: p.lvol_name.clone(),
        size_bytes,
        thin: p.thin_provision.unwrap_or(false),
        clear: clear_method(p.clear_method.as_deref(), false)?,
    };
    let v = l
        .create_lvol(o)
        .map_err(|e| lvol_error(&format!("bdev_lvol_create {}", p.lvol_name), e))?;
    register_lvol(daemon, &v);
    tracing::info!(lvol = %v.alias(), uuid = %v.uuid(), "lvol created");
    Ok(Value::String(v.uuid().to_string()))
}

fn get_lvols(daemon: &Daemon, p: BdevLvolGetLvols) -> Result<Value, RpcError> {
    let pools = if p.lvs_uuid.is_none() && p.lvs_name.is_none() {
        lock(&daemon.pools).clone()
    } else {
        vec![find_pool(
            daemon,
            p.lvs_uuid.as_deref(),
            p.lvs_name.as_deref(),
        )?]
    };
    let mut out = Vec::new();
    for l in pools {
        for v in l.lvols() {
            out.push(json!({
                "alias": v.alias(),
                "uuid": v.uuid().to_string(),
                "name": v.lvol_name(),
                "is_thin_provisioned": v.is_thin(),
                "is_snapshot": v.is_snapshot(),
                "is_clone": v.parent_uuid().is_some(),
                "is_esnap_clone": false,
                "is_degraded": false,
                "lvs": {"name": l.name(), "uuid": l.uuid().to_string()},
            }));
        }
    }
    Ok(Value::Array(out))
}

fn delete(daemon: &Daemon, p: BdevLvolName) -> Result<Value, RpcError> {
    let stacked = lock(&daemon.stacked);
    let (l, v) = find_lvol(daemon, &p.name)?;
    let bname = v.info().name.clone();
    if let Some(holder) = claimed_by_any(daemon, &stacked, &bname) {
        return Err(RpcError::busy(format!(
            "lvol {} is in use by {holder}; remove that first",
            v.alias()
        )));
    }
    l.delete_lvol(v.uuid())
        .map_err(|e| lvol_error("bdev_lvol_delete", e))?;
    daemon.bdevs.remove(&bname);
    tracing::info!(lvol = %p.name, "lvol deleted");
    Ok(Value::Bool(true))
}

fn rename(daemon: &Daemon, p: BdevLvolRename) -> Result<Value, RpcError> {
    let _g = lock(&daemon.stacked);
    let (l, v) = find_lvol(daemon, &p.old_name)?;
    l.rename_lvol(v.uuid(), &p.new_name)
        .map_err(|e| lvol_error("bdev_lvol_rename", e))?;
    Ok(Value::Bool(true))
}

/// `bdev_lvol_resize {"name", "size_in_mib"}` -> `true`. SPDK's rules: the size is rounded up
/// to whole clusters; a snapshot or read-only volume is refused (`-1`, EPERM); a thick volume
/// grows only if the pool has the clusters (`-28`, nothing changed). SPDK shrinks the blob and
/// then refuses to shrink a bdev that is open (`-16`, leaving the two sizes apart); Shoal
/// refuses a shrink of a volume that is in use (a namespace, a nexus child, a stacked bdev, an
/// open channel) up front with the same `-16`, and changes nothing. A namespace's hosts hear
/// of a growth through a Namespace Attribute Changed event (the target watches its bdevs).
fn resize(daemon: &Daemon, p: BdevLvolResize) -> Result<Value, RpcError> {
    let ctx = format!("bdev_lvol_resize {}", p.name);
    // The size first: an invalid one is -22 whether or not the volume is in use.
    if p.size_in_mib == 0 {
        return Err(RpcError::invalid_argument(format!(
            "{ctx}: size_in_mib must not be 0"
        )));
    }
    let bytes = p
        .size_in_mib
        .checked_mul(1 << 20)
        .ok_or_else(|| RpcError::invalid_argument(format!("{ctx}: size_in_mib too large")))?;
    let stacked = lock(&daemon.stacked);
    let (l, v) = find_lvol(daemon, &p.name)?;
    let cluster = l.info().cluster_size;
    let now = v.info().size_bytes();
    if bytes.div_ceil(cluster).saturating_mul(cluster) < now {
        // A shrink: the claims are checked, and the lock held until it is done (one journal
        // record, no data written), so that no claim comes in between.
        let holder = claimed_by_any(daemon, &stacked, &v.info().name)
            .or_else(|| (v.info().open_channels() > 0).then(|| "an open channel".to_string()));
        if let Some(holder) = holder {
            return Err(RpcError::busy(format!(
                "{ctx}: volume {} is in use by {holder}; a volume in use is not shrunk (as \
                 SPDK refuses to shrink an open bdev)",
                v.alias()
            )));
        }
        l.resize_lvol(v.uuid(), bytes)
            .map_err(|e| lvol_error(&ctx, e))?;
        drop(stacked);
    } else {
        // A growth, allowed in use: without the lock, which a thick growth zeroing its
        // clusters would hold for as long as that takes, stalling every RPC that needs it.
        // `grow_lvol` refuses to shrink a volume another request grew meanwhile.
        drop(stacked);
        l.grow_lvol(v.uuid(), bytes).map_err(|e| match e {
            LvolError::InProgress(why) => RpcError::errno(
                error::ETIMEDOUT,
                format!(
                    "{ctx}: {why}; the growth is still in progress (bdev_get_bdevs shows the \
                     new size once it is done)"
                ),
            ),
            e => lvol_error(&ctx, e),
        })?;
    }
    tracing::info!(lvol = %v.alias(), size_in_mib = p.size_in_mib, "lvol resized");
    Ok(Value::Bool(true))
}

fn set_read_only(daemon: &Daemon, p: BdevLvolName) -> Result<Value, RpcError> {
    let (l, v) = find_lvol(daemon, &p.name)?;
    l.set_read_only(v.uuid())
        .map_err(|e| lvol_error("bdev_lvol_set_read_only", e))?;
    Ok(Value::Bool(true))
}
