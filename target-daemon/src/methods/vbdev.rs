//! Stacked bdevs: `bdev_error_*` (fault injection, SPDK's `vbdev_error`), `bdev_delay_*`
//! (added latency, SPDK's `vbdev_delay`) and `bdev_pfail_*` (a volatile write cache and a
//! power cut on demand, Shoal's own, for crash tests: see `shoal_bdev::pfail`).
//!
//! A stacked bdev claims its base: the base cannot back a namespace or another stacked bdev,
//! and cannot be deleted, until the stacked bdev is deleted.
//!
//! `bdev_error_inject_error` follows SPDK's model of one injection per I/O type: a new
//! injection replaces the injections it covers entirely (injecting `read` twice leaves the
//! second; `all` replaces everything). `nomem` and `queue_depth` have no Shoal equivalent and
//! are refused with `-95`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use shoal_bdev::delay::{DelayBdev, DelayLatencies, LatencyType};
use shoal_bdev::error_bdev::{ErrorBdev, Injection, IoTypeSet};
use shoal_bdev::pfail::{Keep, PfailBdev};
use shoal_bdev::{Bdev, IoType};

use super::claims::{add_bdev, check_new_name, claimed_by_any, delete};
use super::common::{bdev_error, lock};
use crate::daemon::Daemon;
use crate::rpc::params::bdev::{
    BdevDelayCreate, BdevDelayUpdateLatency, BdevDelete, BdevErrorCreate, BdevErrorInjectError,
    BdevPfailCreate, BdevPfailCut, DelayLatencyType, ErrorIoType, ErrorKind, PfailKeep,
};
use crate::rpc::{Registry, RpcError};
use crate::stacked::Stacked;

/// The SPDK-shaped views of the stacked bdevs, for `bdev_get_bdevs` and `save_config`.
impl Stacked {
    /// `driver_specific` of `bdev_get_bdevs` for a stacked bdev (SPDK's shapes).
    #[must_use]
    pub fn driver_specific(&self, name: &str) -> Option<Value> {
        if let Some(e) = self.errors.get(name) {
            return Some(json!({"error_disk": {"base_bdev": e.base().info().name}}));
        }
        if let Some(p) = self.pfails.get(name) {
            let s = p.status();
            return Some(json!({"pfail": {
                "base_bdev_name": p.base().info().name,
                "state": if s.cut { "cut" } else { "powered" },
                "cached_blocks": s.cached_blocks,
                "last_cut": s.report.map(|r| json!({
                    "dirty_blocks": r.dirty_blocks,
                    "kept_blocks": r.kept_blocks,
                })),
            }}));
        }
        self.delays.get(name).map(|d| {
            let l = d.latencies();
            json!({"delay": {
                "name": name,
                "base_bdev_name": d.base().info().name,
                "avg_read_latency": l.avg_read_us,
                "p99_read_latency": l.p99_read_us,
                "avg_write_latency": l.avg_write_us,
                "p99_write_latency": l.p99_write_us,
            }})
        })
    }

    /// The current latencies of the delay bdev `name`, as `bdev_delay_create` params.
    #[must_use]
    pub fn delay_latency_params(&self, name: &str) -> Option<[(&'static str, u64); 4]> {
        self.delays.get(name).map(|d| {
            let l = d.latencies();
            [
                ("avg_read_latency", l.avg_read_us),
                ("p99_read_latency", l.p99_read_us),
                ("avg_write_latency", l.avg_write_us),
                ("p99_write_latency", l.p99_write_us),
            ]
        })
    }
}

/// Registers the error and delay methods.
pub fn register(r: &mut Registry<Daemon>) {
    r.register("bdev_error_create", error_create);
    r.register("bdev_error_delete", |d: &Daemon, p: BdevDelete| {
        delete(d, &p.name, "bdev_error_create", "error")
    });
    r.register("bdev_error_inject_error", error_inject);
    r.register("bdev_delay_create", delay_create);
    r.register("bdev_delay_delete", |d: &Daemon, p: BdevDelete| {
        delete(d, &p.name, "bdev_delay_create", "delay")
    });
    r.register("bdev_delay_update_latency", delay_update);
    r.register("bdev_pfail_create", pfail_create);
    r.register("bdev_pfail_delete", |d: &Daemon, p: BdevDelete| {
        delete(d, &p.name, "bdev_pfail_create", "pfail")
    });
    r.register("bdev_pfail_cut", pfail_cut);
}

/// Looks up a base bdev and checks that it is free to claim.
fn claimable_base(
    daemon: &Daemon,
    stacked: &Stacked,
    name: &str,
) -> Result<Arc<dyn Bdev>, RpcError> {
    let base = daemon
        .bdevs
        .get(name)
        .ok_or_else(|| RpcError::no_such_device(format!("base bdev {name}")))?;
    let real = base.info().name.clone();
    if let Some(holder) = claimed_by_any(daemon, stacked, &real) {
        return Err(RpcError::busy(format!(
            "bdev {real} is already claimed by {holder}"
        )));
    }
    Ok(base)
}

fn error_create(daemon: &Daemon, p: BdevErrorCreate) -> Result<Value, RpcError> {
    let mut stacked = lock(&daemon.stacked);
    let base = claimable_base(daemon, &stacked, &p.base_name)?;
    let base_name = base.info().name.clone();
    check_new_name(daemon, &format!("EE_{base_name}"))?;
    let bdev = ErrorBdev::create(base, p.uuid).map_err(|e| bdev_error("bdev_error_create", &e))?;
    let name = bdev.info().name.clone();
    let recipe = json!({"base_name": base_name, "uuid": bdev.info().uuid});
    add_bdev(daemon, bdev.clone(), "bdev_error_create", recipe)?;
    stacked.errors.insert(name, bdev);
    Ok(Value::Bool(true))
}

fn io_types(t: ErrorIoType) -> IoTypeSet {
    match t {
        ErrorIoType::Read => IoTypeSet::only(IoType::Read),
        ErrorIoType::Write => IoTypeSet::only(IoType::Write),
        ErrorIoType::Unmap => IoTypeSet::only(IoType::Unmap),
        ErrorIoType::Flush => IoTypeSet::only(IoType::Flush),
        ErrorIoType::All | ErrorIoType::Clear => IoTypeSet::ALL,
    }
}

fn covers(outer: IoTypeSet, inner: IoTypeSet) -> bool {
    [
        IoType::Read,
        IoType::Write,
        IoType::Flush,
        IoType::WriteZeroes,
        IoType::Unmap,
    ]
    .into_iter()
    .all(|t| !inner.contains(t) || outer.contains(t))
}

fn error_inject(daemon: &Daemon, p: BdevErrorInjectError) -> Result<Value, RpcError> {
    let bdev = lock(&daemon.stacked)
        .error(&p.name)
        .ok_or_else(|| RpcError::no_such_device(format!("error bdev {}", p.name)))?;
    if p.io_type == ErrorIoType::Clear {
        bdev.clear();
        return Ok(Value::Bool(true));
    }
    if p.queue_depth.is_some_and(|q| q != 0) {
        return Err(RpcError::not_supported(
            "bdev_error_inject_error: `queue_depth` triggers are not supported by Shoal",
        ));
    }
    let types = io_types(p.io_type);
    let injection = match p.error_type {
        ErrorKind::Failure => Injection::failure(types),
        ErrorKind::Pending => Injection::pending(types),
        ErrorKind::CorruptData => {
            let value = p.corrupt_value.unwrap_or(0);
            if value == 0 {
                return Err(RpcError::invalid_argument(
                    "corrupt_data needs a non-zero `corrupt_value`",
                ));
            }
            Injection::corrupt(types, p.corrupt_offset.unwrap_or(0), value)
        }
        ErrorKind::Nomem => {
            return Err(RpcError::not_supported(
                "bdev_error_inject_error: `nomem` has no equivalent in Shoal's bdev layer",
            ));
        }
    }
    .count(u64::from(p.count()));
    for (id, old) in bdev.rules() {
        if covers(types, old.io_types) {
            bdev.remove(id);
        }
    }
    bdev.inject(injection)
        .map_err(|e| bdev_error("bdev_error_inject_error", &e))?;
    Ok(Value::Bool(true))
}

fn delay_create(daemon: &Daemon, p: BdevDelayCreate) -> Result<Value, RpcError> {
    let mut stacked = lock(&daemon.stacked);
    check_new_name(daemon, &p.name)?;
    let base = claimable_base(daemon, &stacked, &p.base_bdev_name)?;
    let base_name = base.info().name.clone();
    let latencies = DelayLatencies {
        avg_read_us: p.avg_read_latency,
        p99_read_us: p.p99_read_latency,
        avg_write_us: p.avg_write_latency,
        p99_write_us: p.p99_write_latency,
    };
    let bdev = DelayBdev::create(&p.name, base, p.uuid, latencies)
        .map_err(|e| bdev_error("bdev_delay_create", &e))?;
    let recipe = json!({
        "base_bdev_name": base_name,
        "name": p.name,
        "avg_read_latency": p.avg_read_latency,
        "p99_read_latency": p.p99_read_latency,
        "avg_write_latency": p.avg_write_latency,
        "p99_write_latency": p.p99_write_latency,
        "uuid": bdev.info().uuid,
    });
    add_bdev(daemon, bdev.clone(), "bdev_delay_create", recipe)?;
    stacked.delays.insert(p.name.clone(), bdev);
    Ok(Value::String(p.name))
}

fn delay_update(daemon: &Daemon, p: BdevDelayUpdateLatency) -> Result<Value, RpcError> {
    let bdev = lock(&daemon.stacked)
        .delay(&p.delay_bdev_name)
        .ok_or_else(|| RpcError::no_such_device(format!("delay bdev {}", p.delay_bdev_name)))?;
    let which = match p.latency_type {
        DelayLatencyType::AvgRead => LatencyType::AvgRead,
        DelayLatencyType::P99Read => LatencyType::P99Read,
        DelayLatencyType::AvgWrite => LatencyType::AvgWrite,
        DelayLatencyType::P99Write => LatencyType::P99Write,
    };
    bdev.update_latency(which, p.latency_us)
        .map_err(|e| bdev_error("bdev_delay_update_latency", &e))?;
    Ok(Value::Bool(true))
}

fn pfail_create(daemon: &Daemon, p: BdevPfailCreate) -> Result<Value, RpcError> {
    let mut stacked = lock(&daemon.stacked);
    check_new_name(daemon, &p.name)?;
    let base = claimable_base(daemon, &stacked, &p.base_bdev_name)?;
    let base_name = base.info().name.clone();
    let bdev = PfailBdev::create(&p.name, base).map_err(|e| bdev_error("bdev_pfail_create", &e))?;
    let recipe = json!({"name": p.name, "base_bdev_name": base_name});
    add_bdev(daemon, bdev.clone(), "bdev_pfail_create", recipe)?;
    stacked.pfails.insert(p.name.clone(), bdev);
    Ok(Value::String(p.name))
}

/// How long a cut may take (the base operations in flight, then the write-back).
const CUT_WAIT: Duration = Duration::from_secs(60);

fn pfail_cut(daemon: &Daemon, p: BdevPfailCut) -> Result<Value, RpcError> {
    let bdev = lock(&daemon.stacked)
        .pfails
        .get(&p.name)
        .cloned()
        .ok_or_else(|| RpcError::no_such_device(format!("pfail bdev {}", p.name)))?;
    let seed = p.seed.unwrap_or_else(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        t.as_secs() ^ u64::from(t.subsec_nanos())
    });
    let keep = match p.keep {
        PfailKeep::None => Keep::None,
        PfailKeep::All => Keep::All,
        PfailKeep::Random => Keep::Random(seed),
    };
    let reactor = daemon
        .reactors
        .first()
        .ok_or_else(|| RpcError::internal("no reactor"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let sent = reactor.send(move || {
        bdev.cut(
            keep,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
    });
    if !sent {
        return Err(RpcError::internal("the reactors have stopped"));
    }
    let report = rx
        .recv_timeout(CUT_WAIT)
        .map_err(|_| RpcError::internal(format!("bdev_pfail_cut {}: no answer", p.name)))?
        .map_err(|e| bdev_error(&format!("bdev_pfail_cut {}", p.name), &e))?;
    tracing::warn!(
        bdev = %p.name,
        ?keep,
        dirty_blocks = report.dirty_blocks,
        kept_blocks = report.kept_blocks,
        "power cut"
    );
    Ok(json!({
        "dirty_blocks": report.dirty_blocks,
        "kept_blocks": report.kept_blocks,
        "seed": seed,
    }))
}
