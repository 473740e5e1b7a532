//! The node-side steps of the control plane's operations, each idempotent: it checks what the
//! node already has before it adds anything, and "already there" / "already gone" count as
//! success, so an operation interrupted anywhere (a crash of `shoal-control`, a lost
//! connection) is finished by running it again.
//!
//! Everything a node answers is checked before it is used: a field of the wrong type or an
//! unbounded number is a [`Error::Unavailable`] naming the node ("answers nonsense"), never a
//! panic.

use serde_json::{Value, json};

use crate::node_rpc::{NodeClient, NodeRpcError};
use crate::{Error, Result};

/// `EEXIST` as `shoald` and SPDK answer it.
const EEXIST: i64 = 17;
/// `ENODEV`.
const ENODEV: i64 = 19;
/// `ENOENT`.
const ENOENT: i64 = 2;

fn is_code(e: &NodeRpcError, codes: &[i64]) -> bool {
    matches!(e, NodeRpcError::Rpc { code, .. } if codes.contains(&code.abs()))
}

fn nonsense(c: &NodeClient, what: &str, v: &Value) -> Error {
    Error::Unavailable(format!(
        "node at {} answered nonsense for {what}: {}",
        c.addr(),
        truncate(&v.to_string())
    ))
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

/// A pool (lvstore) as the node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvsInfo {
    /// Its UUID.
    pub uuid: String,
    /// Its name.
    pub name: String,
    /// The bdev it lives on.
    pub base_bdev: String,
    /// Data capacity in bytes.
    pub capacity_bytes: u64,
    /// Free bytes.
    pub free_bytes: u64,
    /// Cluster size in bytes.
    pub cluster_bytes: u64,
}

/// The node's pools.
///
/// # Errors
/// Node errors; nonsense answers.
pub async fn lvstores(c: &mut NodeClient) -> Result<Vec<LvsInfo>> {
    let v = c.call("bdev_lvol_get_lvstores", Value::Null).await?;
    let arr = v
        .as_array()
        .ok_or_else(|| nonsense(c, "bdev_lvol_get_lvstores", &v))?;
    let mut out = Vec::new();
    for l in arr {
        let s = |k: &str| l.get(k).and_then(Value::as_str).map(str::to_owned);
        let n = |k: &str| l.get(k).and_then(Value::as_u64);
        let parsed = (|| {
            let cluster = n("cluster_size")?;
            Some(LvsInfo {
                uuid: s("uuid")?,
                name: s("name")?,
                base_bdev: s("base_bdev")?,
                capacity_bytes: n("total_data_clusters")?.checked_mul(cluster)?,
                free_bytes: n("free_clusters")?.checked_mul(cluster)?,
                cluster_bytes: cluster,
            })
        })();
        out.push(parsed.ok_or_else(|| nonsense(c, "bdev_lvol_get_lvstores", l))?);
    }
    Ok(out)
}

/// Whether bdev `name` exists.
///
/// # Errors
/// Node errors.
pub async fn bdev_exists(c: &mut NodeClient, name: &str) -> Result<bool> {
    match c.call("bdev_get_bdevs", json!({ "name": name })).await {
        Ok(_) => Ok(true),
        Err(e) if is_code(&e, &[ENODEV, ENOENT]) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Creates bdev `name` with `method` and `params` unless it exists.
///
/// # Errors
/// Node errors.
pub async fn ensure_bdev(
    c: &mut NodeClient,
    name: &str,
    method: &str,
    params: Value,
) -> Result<()> {
    if bdev_exists(c, name).await? {
        return Ok(());
    }
    match c.call(method, params).await {
        Ok(_) => Ok(()),
        Err(e) if is_code(&e, &[EEXIST]) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates pool `name` on bdev `base`.
///
/// # Errors
/// Node errors.
pub async fn create_lvstore(c: &mut NodeClient, base: &str, name: &str) -> Result<()> {
    c.call(
        "bdev_lvol_create_lvstore",
        json!({ "bdev_name": base, "lvs_name": name }),
    )
    .await?;
    Ok(())
}

/// The UUID of volume `lvol` in pool `pool`, if it exists.
///
/// # Errors
/// Node errors; nonsense answers.
pub async fn find_lvol(c: &mut NodeClient, pool: &str, lvol: &str) -> Result<Option<String>> {
    let v = match c
        .call("bdev_lvol_get_lvols", json!({ "lvs_name": pool }))
        .await
    {
        Ok(v) => v,
        Err(e) if is_code(&e, &[ENODEV, ENOENT]) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let arr = v
        .as_array()
        .ok_or_else(|| nonsense(c, "bdev_lvol_get_lvols", &v))?;
    for l in arr {
        if l.get("name").and_then(Value::as_str) == Some(lvol) {
            let uuid = l
                .get("uuid")
                .and_then(Value::as_str)
                .ok_or_else(|| nonsense(c, "bdev_lvol_get_lvols", l))?;
            return Ok(Some(uuid.to_owned()));
        }
    }
    Ok(None)
}

/// Creates volume `lvol` of `size` bytes in pool `pool` unless it exists; its UUID.
///
/// # Errors
/// Node errors (`ENOSPC` when the pool is full).
pub async fn ensure_lvol(
    c: &mut NodeClient,
    pool: &str,
    lvol: &str,
    size: u64,
    thin: bool,
) -> Result<String> {
    if let Some(u) = find_lvol(c, pool, lvol).await? {
        return Ok(u);
    }
    let v = c
        .call(
            "bdev_lvol_create",
            json!({ "lvs_name": pool, "lvol_name": lvol, "size": size, "thin_provision": thin }),
        )
        .await?;
    match v.as_str() {
        Some(u) => Ok(u.to_owned()),
        None => Err(nonsense(c, "bdev_lvol_create", &v)),
    }
}

/// Deletes volume `lvol` of pool `pool` if it exists.
///
/// # Errors
/// Node errors.
pub async fn delete_lvol(c: &mut NodeClient, pool: &str, lvol: &str) -> Result<()> {
    let Some(uuid) = find_lvol(c, pool, lvol).await? else {
        return Ok(());
    };
    match c.call("bdev_lvol_delete", json!({ "name": uuid })).await {
        Ok(_) => Ok(()),
        Err(e) if is_code(&e, &[ENODEV, ENOENT]) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Makes sure the node has its TCP transport.
///
/// # Errors
/// Node errors.
pub async fn ensure_transport(c: &mut NodeClient) -> Result<()> {
    let v = c.call("nvmf_get_transports", Value::Null).await?;
    let has_tcp = v.as_array().is_some_and(|a| {
        a.iter()
            .any(|t| t.get("trtype").and_then(Value::as_str) == Some("TCP"))
    });
    if has_tcp {
        return Ok(());
    }
    match c
        .call("nvmf_create_transport", json!({ "trtype": "TCP" }))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_code(&e, &[EEXIST]) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// How a subsystem should look.
pub struct Export<'a> {
    /// Its NQN.
    pub nqn: &'a str,
    /// The bdev of its namespace.
    pub bdev: &'a str,
    /// Listener address.
    pub traddr: String,
    /// Listener port.
    pub trsvcid: String,
    /// The only host allowed, or any when `None`.
    pub host: Option<&'a str>,
    /// Serial number (at most 20 ASCII characters).
    pub serial: &'a str,
}

/// Creates the subsystem with its namespace, listener and host unless they exist.
///
/// # Errors
/// Node errors.
pub async fn ensure_export(c: &mut NodeClient, x: &Export<'_>) -> Result<()> {
    ensure_transport(c).await?;
    let existing = match c.call("nvmf_get_subsystems", json!({ "nqn": x.nqn })).await {
        Ok(v) => v.as_array().and_then(|a| a.first()).cloned(),
        Err(e) if is_code(&e, &[ENODEV, ENOENT]) => None,
        Err(e) => return Err(e.into()),
    };
    let sub = match existing {
        Some(s) => s,
        None => {
            let r = c
                .call(
                    "nvmf_create_subsystem",
                    json!({ "nqn": x.nqn, "allow_any_host": x.host.is_none(),
                            "serial_number": x.serial, "model_number": "Shoal volume" }),
                )
                .await;
            match r {
                Ok(_) => {}
                Err(e) if is_code(&e, &[EEXIST]) => {}
                Err(e) => return Err(e.into()),
            }
            json!({})
        }
    };
    let has_ns = sub
        .get("namespaces")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if !has_ns {
        c.call(
            "nvmf_subsystem_add_ns",
            json!({ "nqn": x.nqn, "namespace": { "bdev_name": x.bdev } }),
        )
        .await?;
    }
    if let Some(h) = x.host {
        let has_host = sub.get("hosts").and_then(Value::as_array).is_some_and(|a| {
            a.iter()
                .any(|e| e.get("nqn").and_then(Value::as_str) == Some(h))
        });
        if !has_host {
            match c
                .call(
                    "nvmf_subsystem_add_host",
                    json!({ "nqn": x.nqn, "host": h }),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if is_code(&e, &[EEXIST]) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let has_listener = sub
        .get("listen_addresses")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if !has_listener {
        let r = c
            .call(
                "nvmf_subsystem_add_listener",
                json!({ "nqn": x.nqn, "listen_address": { "trtype": "TCP", "adrfam": "IPv4",
                        "traddr": x.traddr, "trsvcid": x.trsvcid } }),
            )
            .await;
        match r {
            Ok(_) => {}
            Err(e) if is_code(&e, &[EEXIST]) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Deletes subsystem `nqn` if it exists.
///
/// # Errors
/// Node errors.
pub async fn delete_export(c: &mut NodeClient, nqn: &str) -> Result<()> {
    // shoald (as SPDK) answers an unknown NQN here with invalid-params: ask first.
    match c.call("nvmf_get_subsystems", json!({ "nqn": nqn })).await {
        Ok(_) => {}
        Err(e) if is_code(&e, &[ENODEV, ENOENT]) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    match c.call("nvmf_delete_subsystem", json!({ "nqn": nqn })).await {
        Ok(_) => Ok(()),
        Err(e) if is_code(&e, &[ENODEV, ENOENT]) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The nexus `name` as `nexus_get` describes it, if it exists.
///
/// # Errors
/// Node errors.
pub async fn nexus(c: &mut NodeClient, name: &str) -> Result<Option<Value>> {
    match c.call("nexus_get", json!({ "name": name })).await {
        Ok(v) => Ok(v.as_array().and_then(|a| a.first()).cloned()),
        Err(e) if is_code(&e, &[ENODEV, ENOENT]) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Creates the nexus unless it exists (`adopt`: children labelled for that volume are
/// taken as this one's, see [`crate::snapshot`]).
///
/// # Errors
/// Node errors.
pub async fn ensure_nexus(
    c: &mut NodeClient,
    name: &str,
    uuid: &str,
    size: u64,
    children: &[String],
    adopt: Option<&str>,
) -> Result<()> {
    if nexus(c, name).await?.is_some() {
        return Ok(());
    }
    let mut p = json!({ "name": name, "uuid": uuid, "size": size, "children": children });
    if let (Some(a), Some(m)) = (adopt, p.as_object_mut()) {
        m.insert("adopt_uuid".into(), json!(a));
    }
    c.call("nexus_create", p).await?;
    Ok(())
}

/// Destroys the nexus if it exists.
///
/// # Errors
/// Node errors.
pub async fn destroy_nexus(c: &mut NodeClient, name: &str) -> Result<()> {
    match c.call("nexus_destroy", json!({ "name": name })).await {
        Ok(_) => Ok(()),
        Err(e) if is_code(&e, &[ENODEV, ENOENT]) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Adds child `uri` to nexus `name` (the nexus rebuilds it online: in full when new, only the
/// segments it missed when it is the same replica coming back). A child that is there and not
/// faulted already counts as added.
///
/// # Errors
/// Node errors (`EBUSY` while the child's abandoned I/O is still out: retry later).
pub async fn nexus_add_child(c: &mut NodeClient, name: &str, uri: &str) -> Result<()> {
    match c
        .call("nexus_add_child", json!({ "name": name, "uri": uri }))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_code(&e, &[EEXIST]) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes child `uri` from nexus `name`, if it is there.
///
/// # Errors
/// Node errors (the nexus refuses to remove its last healthy child).
pub async fn nexus_remove_child(c: &mut NodeClient, name: &str, uri: &str) -> Result<()> {
    match c
        .call("nexus_remove_child", json!({ "name": name, "uri": uri }))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_code(&e, &[ENODEV, ENOENT]) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Every nexus of the node, by name, as `nexus_get` describes them.
///
/// # Errors
/// Node errors; nonsense answers.
pub async fn nexuses(c: &mut NodeClient) -> Result<Vec<Value>> {
    let v = c.call("nexus_get", json!({})).await?;
    match v.as_array() {
        Some(a) => Ok(a.clone()),
        None => Err(nonsense(c, "nexus_get", &v)),
    }
}
