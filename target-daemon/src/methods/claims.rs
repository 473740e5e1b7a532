//! The bdev rules every creation and deletion shares, whichever method file makes the bdev:
//! name checks, registration (with examine for a pool), the recipes recorded for
//! `save_config`, the claims (who holds a bdev: a stacked bdev, a pool, a namespace, a nexus),
//! and deletion. It sits below the method files that create or delete bdevs, and above the
//! pool and nexus lookups it consults ([`super::pools`], [`super::nexus_live`]).

use std::sync::Arc;

use serde_json::Value;
use shoal_bdev::Bdev;

use super::common::lock;
use super::nexus_live::child_of;
use super::pools::{examine, pool_on};
use crate::daemon::Daemon;
use crate::rpc::RpcError;
use crate::stacked::Stacked;

/// Checks that `name` can name a new bdev: not empty, not taken.
///
/// # Errors
/// `-22` for an empty name, `-17` for a name in use.
pub fn check_new_name(daemon: &Daemon, name: &str) -> Result<(), RpcError> {
    if name.is_empty() {
        return Err(RpcError::invalid_argument("a bdev name must not be empty"));
    }
    if daemon.bdevs.contains(name) {
        return Err(RpcError::already_exists(format!(
            "bdev {name} already exists"
        )));
    }
    Ok(())
}

/// Registers a new bdev and records how it was made.
///
/// # Errors
/// `-17` if the name was taken in the meantime.
pub fn add_bdev(
    daemon: &Daemon,
    bdev: Arc<dyn Bdev>,
    method: &str,
    recipe: Value,
) -> Result<(), RpcError> {
    let name = bdev.info().name.clone();
    daemon
        .bdevs
        .insert(bdev)
        .map_err(|_| RpcError::already_exists(format!("bdev {name} already exists")))?;
    daemon.record_bdev(&name, method, recipe);
    tracing::info!(bdev = %name, method, "bdev created");
    // As SPDK's examine: a device that holds a pool brings it back with its volumes.
    if examinable(daemon, method, &recipe_of(daemon, &name), 0)
        && let Some(b) = daemon.bdevs.get(&name)
    {
        examine(daemon, &b);
    }
    Ok(())
}

/// Methods that make a base device: only those, and the test devices stacked on them, are
/// examined for a pool. A nexus, a remote namespace or a volume holds a tenant's data, which
/// may be a valid pool image written on purpose: opened, it would claim the tenant's device
/// (refusing its export) and register names and UUIDs the tenant chose.
const BASE_METHODS: [&str; 3] = [
    "bdev_malloc_create",
    "bdev_null_create",
    "bdev_uring_create",
];
/// Methods that stack a device on a base (named in the recipe), examined if the base is.
const STACKED_METHODS: [&str; 3] = [
    "bdev_error_create",
    "bdev_delay_create",
    "bdev_pfail_create",
];

fn recipe_of(daemon: &Daemon, name: &str) -> Option<(String, Value)> {
    lock(&daemon.recipes)
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, r)| (r.method.clone(), r.params.clone()))
}

/// Whether a bdev made by `recipe` (method, params) is examined.
fn examinable(daemon: &Daemon, method: &str, recipe: &Option<(String, Value)>, depth: u32) -> bool {
    if BASE_METHODS.contains(&method) {
        return true;
    }
    if !STACKED_METHODS.contains(&method) || depth > 16 {
        return false;
    }
    let base = recipe.as_ref().and_then(|(_, p)| {
        p.get("base_name")
            .or_else(|| p.get("base_bdev_name"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    base.is_some_and(|b| {
        let r = recipe_of(daemon, &b);
        r.as_ref()
            .is_some_and(|(m, _)| examinable(daemon, m, &r, depth + 1))
    })
}

/// Who holds `name`: a stacked bdev, or a namespace (with its subsystem).
pub fn claimed_by(daemon: &Daemon, stacked: &Stacked, name: &str) -> Option<String> {
    if let Some(user) = stacked.user_of(name) {
        return Some(format!("bdev {user}"));
    }
    if let Some(lvs) = pool_on(daemon, name) {
        return Some(format!("lvstore {}", lvs.name()));
    }
    daemon.target.subsystems().iter().find_map(|sub| {
        sub.with_config(|c| {
            c.namespaces
                .values()
                .find(|ns| ns.bdev.info().name == name)
                .map(|ns| format!("namespace {} of subsystem {}", ns.nsid, sub.nqn))
        })
    })
}

/// Like [`claimed_by`], and also a nexus using the bdev as a child: what bdev deletion,
/// namespace creation and stacking must refuse.
pub fn claimed_by_any(daemon: &Daemon, stacked: &Stacked, name: &str) -> Option<String> {
    claimed_by(daemon, stacked, name)
        .or_else(|| child_of(daemon, name).map(|n| format!("nexus {n}")))
}

/// The creation method recorded for `name`.
pub fn recipe_method(daemon: &Daemon, name: &str) -> Option<String> {
    lock(&daemon.recipes)
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, r)| r.method.clone())
}

/// The recorded creation params of `name`.
pub fn recipe_params(daemon: &Daemon, name: &str) -> Option<Value> {
    lock(&daemon.recipes)
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, r)| r.params.clone())
}

/// Deletes the bdev `name` made by `create_method` (`kind` names it in messages).
///
/// # Errors
/// `-19` if there is no such bdev of that kind, `-16` if it is claimed.
pub fn delete(
    daemon: &Daemon,
    name: &str,
    create_method: &str,
    kind: &str,
) -> Result<Value, RpcError> {
    let mut stacked = lock(&daemon.stacked);
    let Some(bdev) = daemon.bdevs.get(name) else {
        return Err(RpcError::no_such_device(format!("bdev {name}")));
    };
    let real = bdev.info().name.clone();
    if recipe_method(daemon, &real).as_deref() != Some(create_method) {
        return Err(RpcError::no_such_device(format!(
            "bdev {name} is not a {kind} bdev"
        )));
    }
    if let Some(holder) = claimed_by_any(daemon, &stacked, &real) {
        return Err(RpcError::busy(format!(
            "bdev {real} is in use by {holder}; remove that first"
        )));
    }
    daemon.bdevs.remove(&real);
    daemon.forget_bdev(&real);
    stacked.forget(&real);
    tracing::info!(bdev = %real, "bdev deleted");
    Ok(Value::Bool(true))
}
