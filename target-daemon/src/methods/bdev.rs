//! Bdev methods: `bdev_malloc_*`, `bdev_null_*`, `bdev_uring_*`, `bdev_get_bdevs`,
//! `bdev_get_iostat`. What every creation and deletion shares (name checks, recipes, claims)
//! is in [`super::claims`].
//!
//! Result shapes (SPDK `lib/bdev/bdev_rpc.c`):
//!
//! * `bdev_get_bdevs`: `[{"name", "aliases": [uuid], "product_name", "block_size",
//!   "num_blocks", "uuid", "assigned_rate_limits": {"rw_ios_per_sec", "rw_mbytes_per_sec",
//!   "r_mbytes_per_sec", "w_mbytes_per_sec"} (all 0: Shoal has no QoS), "claimed",
//!   "claim_type" (only when claimed), "zoned": false, "supported_io_types": {"read",
//!   "write", "unmap", "write_zeroes", "flush", "reset", "compare", "compare_and_write",
//!   "abort", "nvme_admin", "nvme_io", ...}, "driver_specific": {...}}]`;
//! * `bdev_get_iostat`: `{"tick_rate", "ticks", "bdevs": [{"name", "bytes_read",
//!   "num_read_ops", "bytes_written", "num_write_ops", "num_unmap_ops", ...}]}` where ticks are
//!   nanoseconds of a monotonic clock (`tick_rate` 10^9). Shoal counts operations and bytes,
//!   not latencies, so SPDK's `*_latency_ticks` fields are absent rather than zero.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::null::NullBdev;
use shoal_bdev::uring::UringBdev;
use shoal_bdev::{Bdev, IoType};

use super::claims::{
    add_bdev, check_new_name, claimed_by_any, delete, recipe_method, recipe_params,
};
use super::common::{TICK_RATE, bdev_error, lock, ticks};
use super::pools;
use crate::daemon::Daemon;
use crate::rpc::params::bdev::{
    BdevDelete, BdevGetBdevs, BdevGetIostat, BdevMallocCreate, BdevNullCreate, BdevUringCreate,
    IostatResetMode, refuse_metadata,
};
use crate::rpc::{Registry, RpcError};
use crate::stacked::Stacked;

/// Registers the bdev methods.
pub fn register(r: &mut Registry<Daemon>) {
    r.register("bdev_malloc_create", malloc_create);
    r.register("bdev_malloc_delete", |d: &Daemon, p: BdevDelete| {
        delete(d, &p.name, "bdev_malloc_create", "malloc")
    });
    r.register("bdev_null_create", null_create);
    r.register("bdev_null_delete", |d: &Daemon, p: BdevDelete| {
        delete(d, &p.name, "bdev_null_create", "null")
    });
    r.register("bdev_uring_create", uring_create);
    r.register("bdev_uring_delete", |d: &Daemon, p: BdevDelete| {
        delete(d, &p.name, "bdev_uring_create", "uring")
    });
    r.register("bdev_get_bdevs", get_bdevs);
    r.register("bdev_get_iostat", get_iostat);
}

/// The lowest free `MallocN` name (SPDK numbers them from 0).
fn next_malloc_name(daemon: &Daemon) -> String {
    (0u64..)
        .map(|i| format!("Malloc{i}"))
        .find(|n| !daemon.bdevs.contains(n))
        .unwrap_or_else(|| "Malloc".to_owned())
}

fn check_physical_block_size(block_size: u32, pbs: Option<u32>) -> Result<(), RpcError> {
    match pbs {
        None | Some(0) => Ok(()),
        Some(p) if p >= block_size && p.is_power_of_two() && p % block_size.max(1) == 0 => Ok(()),
        Some(p) => Err(RpcError::invalid_argument(format!(
            "physical_block_size {p} must be a power of two and a multiple of block_size \
             {block_size}"
        ))),
    }
}

fn malloc_create(daemon: &Daemon, p: BdevMallocCreate) -> Result<Value, RpcError> {
    refuse_metadata("bdev_malloc_create", p.md_size, p.dif_type)?;
    check_physical_block_size(p.block_size, p.physical_block_size)?;
    let _guard = lock(&daemon.stacked);
    let name = p.name.unwrap_or_else(|| next_malloc_name(daemon));
    check_new_name(daemon, &name)?;
    let bdev = MallocBdev::create(&name, p.uuid, p.num_blocks, p.block_size)
        .map_err(|e| bdev_error("bdev_malloc_create", &e))?;
    let recipe = json!({
        "name": name,
        "num_blocks": p.num_blocks,
        "block_size": p.block_size,
        "uuid": bdev.info().uuid,
    });
    add_bdev(daemon, bdev, "bdev_malloc_create", recipe)?;
    Ok(Value::String(name))
}

fn null_create(daemon: &Daemon, p: BdevNullCreate) -> Result<Value, RpcError> {
    refuse_metadata("bdev_null_create", p.md_size, p.dif_type)?;
    check_physical_block_size(p.block_size, p.physical_block_size)?;
    let _guard = lock(&daemon.stacked);
    check_new_name(daemon, &p.name)?;
    let bdev = NullBdev::create(&p.name, p.uuid, p.num_blocks, p.block_size)
        .map_err(|e| bdev_error("bdev_null_create", &e))?;
    let recipe = json!({
        "name": p.name,
        "num_blocks": p.num_blocks,
        "block_size": p.block_size,
        "uuid": bdev.info().uuid,
    });
    add_bdev(daemon, bdev, "bdev_null_create", recipe)?;
    Ok(Value::String(p.name))
}

fn uring_create(daemon: &Daemon, p: BdevUringCreate) -> Result<Value, RpcError> {
    let _guard = lock(&daemon.stacked);
    check_new_name(daemon, &p.name)?;
    let block_size = p.block_size.filter(|&b| b != 0);
    let bdev = UringBdev::create(&p.name, &p.filename, block_size, p.uuid)
        .map_err(|e| bdev_error(&format!("bdev_uring_create {}", p.filename), &e))?;
    let recipe = json!({
        "name": p.name,
        "filename": p.filename,
        "block_size": bdev.info().block_size,
        "uuid": bdev.info().uuid,
    });
    add_bdev(daemon, bdev, "bdev_uring_create", recipe)?;
    Ok(Value::String(p.name))
}

fn supported_io_types(bdev: &dyn Bdev) -> Value {
    json!({
        "read": bdev.supports(IoType::Read),
        "write": bdev.supports(IoType::Write),
        "unmap": bdev.supports(IoType::Unmap),
        "flush": bdev.supports(IoType::Flush),
        "reset": false,
        "nvme_admin": false,
        "nvme_io": false,
        "nvme_io_md": false,
        "write_zeroes": bdev.supports(IoType::WriteZeroes),
        "zcopy": false,
        "get_zone_info": false,
        "zone_management": false,
        "zone_append": false,
        "compare": false,
        "compare_and_write": false,
        "abort": false,
        "seek_hole": false,
        "seek_data": false,
        "copy": false,
        "nvme_iov_md": false,
    })
}

fn describe(daemon: &Daemon, stacked: &Stacked, bdev: &Arc<dyn Bdev>) -> Value {
    let info = bdev.info();
    let mut m = Map::new();
    m.insert("name".into(), json!(info.name));
    let lvol = pools::describe(daemon, &info.name);
    match &lvol {
        Some((_, aliases)) => m.insert("aliases".into(), json!(aliases)),
        None => m.insert("aliases".into(), json!([info.uuid.to_string()])),
    };
    m.insert("product_name".into(), json!(info.product_name));
    m.insert("block_size".into(), json!(info.block_size));
    m.insert("num_blocks".into(), json!(info.num_blocks()));
    m.insert("uuid".into(), json!(info.uuid.to_string()));
    m.insert(
        "assigned_rate_limits".into(),
        json!({"rw_ios_per_sec": 0, "rw_mbytes_per_sec": 0, "r_mbytes_per_sec": 0,
               "w_mbytes_per_sec": 0}),
    );
    let holder = claimed_by_any(daemon, stacked, &info.name);
    m.insert("claimed".into(), json!(holder.is_some()));
    if holder.is_some() {
        m.insert("claim_type".into(), json!("exclusive_write"));
    }
    m.insert("zoned".into(), json!(false));
    m.insert(
        "supported_io_types".into(),
        supported_io_types(bdev.as_ref()),
    );
    let driver = match recipe_method(daemon, &info.name).as_deref() {
        Some("bdev_uring_create") => {
            let filename = recipe_params(daemon, &info.name)
                .and_then(|p| p.get("filename").cloned())
                .unwrap_or(Value::Null);
            json!({"uring": {"filename": filename}})
        }
        _ => stacked
            .driver_specific(&info.name)
            .or(lvol.map(|(d, _)| d))
            .unwrap_or_else(|| json!({})),
    };
    m.insert("driver_specific".into(), driver);
    Value::Object(m)
}

fn get_bdevs(daemon: &Daemon, p: BdevGetBdevs) -> Result<Value, RpcError> {
    let Some(name) = p.name else {
        let stacked = lock(&daemon.stacked);
        let all: Vec<Value> = daemon
            .bdevs
            .list()
            .iter()
            .map(|b| describe(daemon, &stacked, b))
            .collect();
        return Ok(Value::Array(all));
    };
    // SPDK waits up to `timeout` ms for the bdev to appear (e.g. after an examine).
    let deadline = Instant::now() + Duration::from_millis(p.timeout.unwrap_or(0).min(60_000));
    loop {
        if let Some(b) = daemon.bdev(&name) {
            let stacked = lock(&daemon.stacked);
            return Ok(Value::Array(vec![describe(daemon, &stacked, &b)]));
        }
        if Instant::now() >= deadline {
            return Err(RpcError::no_such_device(format!("bdev {name}")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn iostat_of(bdev: &Arc<dyn Bdev>) -> Value {
    let info = bdev.info();
    let s = info.iostat();
    json!({
        "name": info.name,
        "bytes_read": s.bytes_read,
        "num_read_ops": s.num_read_ops,
        "bytes_written": s.bytes_written,
        "num_write_ops": s.num_write_ops,
        "num_unmap_ops": s.num_unmap_ops,
        "num_write_zeroes_ops": s.num_write_zeroes_ops,
        "num_flush_ops": s.num_flush_ops,
        "num_errors": s.num_errors,
    })
}

fn get_iostat(daemon: &Daemon, p: BdevGetIostat) -> Result<Value, RpcError> {
    if p.per_channel == Some(true) {
        return Err(RpcError::not_supported(
            "bdev_get_iostat: per-channel statistics are not kept by Shoal",
        ));
    }
    if p.reset_mode.is_some_and(|m| m != IostatResetMode::None) {
        return Err(RpcError::not_supported(
            "bdev_get_iostat: Shoal's counters cannot be reset",
        ));
    }
    let names: Option<Vec<String>> = match (p.name, p.names) {
        (Some(_), Some(_)) => {
            return Err(RpcError::invalid_params(
                "bdev_get_iostat: `name` and `names` are mutually exclusive",
            ));
        }
        (Some(n), None) => Some(vec![n]),
        (None, names) => names,
    };
    let bdevs = match names {
        None => daemon.bdevs.list(),
        Some(names) => names
            .iter()
            .map(|n| {
                daemon
                    .bdevs
                    .get(n)
                    .ok_or_else(|| RpcError::no_such_device(format!("bdev {n}")))
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(json!({
        "tick_rate": TICK_RATE,
        "ticks": ticks(),
        "bdevs": bdevs.iter().map(iostat_of).collect::<Vec<_>>(),
    }))
}
