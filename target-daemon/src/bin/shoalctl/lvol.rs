//! `shoalctl pool ...` and `shoalctl volume ...`: pools (lvstores) and logical volumes, over
//! SPDK's `bdev_lvol_*` methods.
//!
//! A volume is named by its UUID or by its alias `POOL/NAME`. Sizes take binary units
//! (`512MiB`, `1GiB`); a volume's size is a whole number of MiB, as SPDK's `size_in_mib`.
//! `volume list` joins `bdev_lvol_get_lvols` (what the volumes are) with `bdev_get_bdevs`
//! (their sizes and allocation) and `bdev_lvol_get_lvstores` (the cluster sizes); with
//! `--json` it prints `bdev_lvol_get_lvols`'s result as it is.

use clap::Subcommand;
use serde_json::{Value, json};

use crate::parse::{human_size, size};
use crate::show::{field, table};

/// The pool subcommands.
#[derive(Subcommand, Debug)]
pub enum PoolCmd {
    /// Create a pool (lvstore) NAME on the bdev BDEV (which it claims).
    Create {
        bdev: String,
        name: String,
        /// Cluster size, the unit of allocation (default 4MiB).
        #[arg(long)]
        cluster_size: Option<String>,
        /// What is done to the data area first: none, unmap (default) or write_zeroes.
        #[arg(long, value_parser = ["none", "unmap", "write_zeroes"])]
        clear_method: Option<String>,
    },
    /// List pools (or one) with their size and free space.
    List { name: Option<String> },
    /// Rename a pool (its volumes' aliases follow).
    Rename { name: String, new_name: String },
    /// Delete a pool and every volume in it (refused while a volume is in use).
    Delete { name: String },
}

/// The volume subcommands. VOL is a volume's UUID or its alias POOL/NAME.
#[derive(Subcommand, Debug)]
pub enum VolumeCmd {
    /// Create a volume NAME of SIZE (e.g. 1GiB) in POOL.
    Create {
        pool: String,
        name: String,
        size: String,
        /// Thin provisioned: clusters are allocated on first write.
        #[arg(long)]
        thin: bool,
        /// What is done to the volume's clusters first: default, none, unmap or write_zeroes.
        #[arg(long, value_parser = ["default", "none", "unmap", "write_zeroes"])]
        clear_method: Option<String>,
    },
    /// List volumes (of every pool, or of one).
    List {
        #[arg(long)]
        pool: Option<String>,
    },
    /// Take a read-only snapshot SNAPSHOT of VOL (in the same pool).
    Snapshot { vol: String, snapshot: String },
    /// Create a writable clone NAME of the snapshot SNAPSHOT (in the same pool).
    Clone { snapshot: String, name: String },
    /// Grow or shrink VOL to SIZE (e.g. 2GiB).
    Resize { vol: String, size: String },
    /// Delete VOL (refused while it is in use or has clones).
    Delete { vol: String },
    /// Rename VOL to NEW_NAME within its pool.
    Rename { vol: String, new_name: String },
    /// Make VOL read-only.
    SetReadOnly { vol: String },
    /// Allocate every cluster of VOL and copy its parent's data in: it no longer depends on a
    /// snapshot.
    Inflate { vol: String },
    /// Copy the parent's allocated clusters into VOL: it no longer depends on its snapshot
    /// (unallocated clusters stay thin).
    DecoupleParent { vol: String },
}

/// One RPC call.
pub type Call<'a> = dyn FnMut(&str, Value) -> Result<Value, String> + 'a;

/// A whole number of MiB from a size with units.
fn mib(text: &str) -> Result<u64, String> {
    let bytes = size(text)?;
    if bytes == 0 || bytes % (1 << 20) != 0 {
        return Err(format!(
            "size {text} is not a whole, non-zero number of MiB (volume sizes are in MiB)"
        ));
    }
    Ok(bytes >> 20)
}

/// Runs a pool command: the raw result and its text.
pub fn pool(call: &mut Call<'_>, c: PoolCmd) -> Result<(Value, String), String> {
    Ok(match c {
        PoolCmd::Create {
            bdev,
            name,
            cluster_size,
            clear_method,
        } => {
            let mut p = json!({"bdev_name": bdev, "lvs_name": name});
            if let Some(cs) = cluster_size {
                p["cluster_sz"] = json!(size(&cs)?);
            }
            if let Some(m) = clear_method {
                p["clear_method"] = json!(m);
            }
            let v = call("bdev_lvol_create_lvstore", p)?;
            let line = format!("created pool {name} ({}) on {bdev}", crate::show::text(&v));
            (v, line)
        }
        PoolCmd::List { name } => {
            let p = name.map_or_else(|| json!({}), |n| json!({"lvs_name": n}));
            let v = call("bdev_lvol_get_lvstores", p)?;
            let t = pools_table(&v);
            (v, t)
        }
        PoolCmd::Rename { name, new_name } => {
            let p = json!({"old_name": name, "new_name": new_name});
            let v = call("bdev_lvol_rename_lvstore", p)?;
            (v, format!("renamed pool {name} to {new_name}"))
        }
        PoolCmd::Delete { name } => {
            let v = call("bdev_lvol_delete_lvstore", json!({"lvs_name": name}))?;
            (v, format!("deleted pool {name}"))
        }
    })
}

/// The alias (`pool/name`) of the volume whose bdev is `uuid`, or `uuid` itself.
fn alias_of(call: &mut Call<'_>, uuid: &Value) -> String {
    let name = crate::show::text(uuid);
    call("bdev_get_bdevs", json!({"name": name}))
        .ok()
        .and_then(|b| {
            b.get(0)?
                .get("aliases")?
                .get(0)?
                .as_str()
                .map(str::to_owned)
        })
        .map_or_else(|| name.clone(), |a| format!("{a} ({name})"))
}

/// Runs a volume command: the raw result and its text.
pub fn volume(call: &mut Call<'_>, c: VolumeCmd) -> Result<(Value, String), String> {
    let simple = |call: &mut Call<'_>, method: &str, vol: &str, done: &str| {
        let v = call(method, json!({"name": vol}))?;
        Ok::<_, String>((v, format!("{done} {vol}")))
    };
    Ok(match c {
        VolumeCmd::Create {
            pool,
            name,
            size: sz,
            thin,
            clear_method,
        } => {
            let mut p = json!({"lvs_name": pool, "lvol_name": name, "size_in_mib": mib(&sz)?,
                               "thin_provision": thin});
            if let Some(m) = clear_method {
                p["clear_method"] = json!(m);
            }
            let v = call("bdev_lvol_create", p)?;
            let kind = if thin { "thin" } else { "thick" };
            let line = format!(
                "created {kind} volume {pool}/{name} ({}) of {}",
                crate::show::text(&v),
                human_size(mib(&sz)? << 20)
            );
            (v, line)
        }
        VolumeCmd::List { pool } => {
            let p = pool.map_or_else(|| json!({}), |n| json!({"lvs_name": n}));
            let lvols = call("bdev_lvol_get_lvols", p)?;
            let bdevs = call("bdev_get_bdevs", json!({}))?;
            let pools = call("bdev_lvol_get_lvstores", json!({}))?;
            let t = volumes_table(&lvols, &bdevs, &pools);
            (lvols, t)
        }
        VolumeCmd::Snapshot { vol, snapshot } => {
            let p = json!({"lvol_name": vol, "snapshot_name": snapshot});
            let v = call("bdev_lvol_snapshot", p)?;
            let line = format!("created snapshot {} of {vol}", alias_of(call, &v));
            (v, line)
        }
        VolumeCmd::Clone { snapshot, name } => {
            let p = json!({"snapshot_name": snapshot, "clone_name": name});
            let v = call("bdev_lvol_clone", p)?;
            let line = format!("created clone {} of {snapshot}", alias_of(call, &v));
            (v, line)
        }
        VolumeCmd::Resize { vol, size: sz } => {
            let m = mib(&sz)?;
            let v = call("bdev_lvol_resize", json!({"name": vol, "size_in_mib": m}))?;
            (v, format!("resized {vol} to {}", human_size(m << 20)))
        }
        VolumeCmd::Delete { vol } => simple(call, "bdev_lvol_delete", &vol, "deleted")?,
        VolumeCmd::Rename { vol, new_name } => {
            let v = call(
                "bdev_lvol_rename",
                json!({"old_name": vol, "new_name": new_name}),
            )?;
            (v, format!("renamed {vol} to {new_name}"))
        }
        VolumeCmd::SetReadOnly { vol } => {
            let v = call("bdev_lvol_set_read_only", json!({"name": vol}))?;
            (v, format!("{vol} is read-only"))
        }
        VolumeCmd::Inflate { vol } => simple(call, "bdev_lvol_inflate", &vol, "inflated")?,
        VolumeCmd::DecoupleParent { vol } => simple(
            call,
            "bdev_lvol_decouple_parent",
            &vol,
            "decoupled from its parent:",
        )?,
    })
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// `bdev_lvol_get_lvstores` as a table.
pub fn pools_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = list(v)
        .iter()
        .map(|p| {
            let cs = u64_of(p, "cluster_size");
            let total = u64_of(p, "total_data_clusters");
            let free = u64_of(p, "free_clusters");
            let used = total.saturating_sub(free);
            let pct = used.saturating_mul(100).checked_div(total).unwrap_or(0);
            vec![
                field(p, "name"),
                field(p, "base_bdev"),
                human_size(total.saturating_mul(cs)),
                human_size(free.saturating_mul(cs)),
                format!("{pct}%"),
                human_size(cs),
                field(p, "uuid"),
            ]
        })
        .collect();
    table(
        &["NAME", "BDEV", "SIZE", "FREE", "USED", "CLUSTER", "UUID"],
        &rows,
    )
}

/// `bdev_lvol_get_lvols` as a table, with sizes and allocation from `bdev_get_bdevs` and
/// cluster sizes from `bdev_lvol_get_lvstores` (`-` where they do not say).
pub fn volumes_table(lvols: &Value, bdevs: &Value, pools: &Value) -> String {
    let rows: Vec<Vec<String>> = list(lvols)
        .iter()
        .map(|l| {
            let uuid = field(l, "uuid");
            let bdev = list(bdevs).iter().find(|b| field(b, "name") == uuid);
            let lv = bdev
                .and_then(|b| b.get("driver_specific"))
                .and_then(|d| d.get("lvol"));
            let lvs_uuid = l.get("lvs").map(|s| field(s, "uuid")).unwrap_or_default();
            let cluster = list(pools)
                .iter()
                .find(|p| field(p, "uuid") == lvs_uuid)
                .map(|p| u64_of(p, "cluster_size"));
            let size = bdev.map_or_else(
                || "-".to_owned(),
                |b| human_size(u64_of(b, "num_blocks").saturating_mul(u64_of(b, "block_size"))),
            );
            let allocated = match (lv.and_then(|x| x.get("num_allocated_clusters")), cluster) {
                (Some(Value::Number(n)), Some(cs)) => {
                    human_size(n.as_u64().unwrap_or(0).saturating_mul(cs))
                }
                _ => "-".to_owned(),
            };
            let flag = |k: &str| l.get(k) == Some(&Value::Bool(true));
            let kind = if flag("is_snapshot") {
                "snapshot"
            } else if flag("is_clone") {
                "clone"
            } else {
                "volume"
            };
            let parent = lv.map_or_else(|| "-".to_owned(), |x| field(x, "base_snapshot"));
            vec![
                field(l, "alias"),
                kind.to_owned(),
                if flag("is_thin_provisioned") {
                    "thin"
                } else {
                    "thick"
                }
                .to_owned(),
                size,
                allocated,
                parent,
                uuid,
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "KIND",
            "PROVISION",
            "SIZE",
            "ALLOCATED",
            "PARENT",
            "UUID",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_mib() {
        assert_eq!(mib("1GiB"), Ok(1024));
        assert_eq!(mib("512MiB"), Ok(512));
        assert_eq!(mib("4194304"), Ok(4));
        for bad in ["0", "1000", "1.5G", "1536KiB", "x", "99999999999T"] {
            assert!(mib(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tables() {
        let pools = json!([{"name": "lvs", "base_bdev": "U0", "uuid": "pu",
            "cluster_size": 4u64 << 20, "total_data_clusters": 100, "free_clusters": 75}]);
        let t = pools_table(&pools);
        assert!(
            t.lines().nth(1).is_some_and(|l| l
                .split_whitespace()
                .collect::<Vec<_>>()
                .starts_with(&["lvs", "U0", "400", "MiB", "300", "MiB", "25%", "4", "MiB"])),
            "{t}"
        );
        let lvols = json!([
            {"alias": "lvs/snap", "uuid": "s1", "is_snapshot": true, "is_thin_provisioned": false,
             "lvs": {"uuid": "pu"}},
            {"alias": "lvs/c", "uuid": "c1", "is_clone": true, "is_thin_provisioned": true,
             "lvs": {"uuid": "pu"}},
        ]);
        let bdevs = json!([
            {"name": "c1", "num_blocks": 2048, "block_size": 4096,
             "driver_specific": {"lvol": {"num_allocated_clusters": 1, "base_snapshot": "snap"}}},
        ]);
        let t = volumes_table(&lvols, &bdevs, &pools);
        let rows: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            rows[1],
            ["lvs/snap", "snapshot", "thick", "-", "-", "-", "s1"]
        );
        assert_eq!(
            rows[2],
            [
                "lvs/c", "clone", "thin", "8", "MiB", "4", "MiB", "snap", "c1"
            ]
        );
        // Odd shapes print what they can.
        assert_eq!(t.lines().count(), 3);
        assert_eq!(
            volumes_table(&json!({}), &json!(5), &json!(null))
                .lines()
                .count(),
            1
        );
        assert_eq!(pools_table(&json!([{}])).lines().count(), 2);
    }
}
