//! Params of SPDK's lvol methods (`module/bdev/lvol/vbdev_lvol_rpc.c`, `rpc.py`'s
//! `bdev_lvol_*`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::params_knobs;

/// `bdev_lvol_create_lvstore`: a pool on `bdev_name`. Answers its UUID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevLvolCreateLvstore {
    /// The base bdev (claimed).
    pub bdev_name: String,
    /// The pool's name.
    pub lvs_name: String,
    /// Cluster size in bytes (default 4 MiB, as SPDK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_sz: Option<u64>,
    /// `none`, `unmap` (default) or `write_zeroes`: what is done to the data area.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_method: Option<String>,
    /// Blobstore metadata reservation (Shoal sizes its metadata itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_md_pages_per_cluster_ratio: Option<Value>,
    /// Blobstore metadata page size (Shoal's is 4 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md_page_size: Option<Value>,
}
params_knobs!(BdevLvolCreateLvstore {
    num_md_pages_per_cluster_ratio,
    md_page_size
});

/// `bdev_lvol_get_lvstores` and `bdev_lvol_delete_lvstore`: one pool by UUID or name (at
/// most one of them), or every pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevLvolLvstoreSel {
    /// The pool's UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The pool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lvs_name: Option<String>,
}
params_knobs!(BdevLvolLvstoreSel {});

/// `bdev_lvol_rename_lvstore` and `bdev_lvol_rename`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevLvolRename {
    /// The current name (a volume: its UUID or `lvs/lvol` alias).
    pub old_name: String,
    /// The new name (a volume: the name within its pool).
    pub new_name: String,
}
params_knobs!(BdevLvolRename {});

/// `bdev_lvol_create`. Answers the new bdev's name (the volume's UUID).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevLvolCreate {
    /// The volume's name in its pool.
    pub lvol_name: String,
    /// Size in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_in_mib: Option<u64>,
    /// Size in bytes (SPDK's older, deprecated parameter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Thin provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thin_provision: Option<bool>,
    /// The pool's UUID (or `lvs_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The pool's name (or `uuid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lvs_name: Option<String>,
    /// `default`, `none`, `unmap` or `write_zeroes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_method: Option<String>,
}
params_knobs!(BdevLvolCreate {});

/// `bdev_lvol_get_lvols`: the volumes of one pool (by UUID or name), or of all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevLvolGetLvols {
    /// The pool's UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lvs_uuid: Option<String>,
    /// The pool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lvs_name: Option<String>,
}
params_knobs!(BdevLvolGetLvols {});

/// `bdev_lvol_delete`, `bdev_lvol_set_read_only`, `bdev_lvol_inflate`,
/// `bdev_lvol_decouple_parent`: one volume by UUID or alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevLvolName {
    /// The volume's UUID or `lvs/lvol` alias.
    pub name: String,
}
params_knobs!(BdevLvolName {});

/// `bdev_lvol_resize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevLvolResize {
    /// The volume's UUID or alias.
    pub name: String,
    /// New size in MiB.
    pub size_in_mib: u64,
}
params_knobs!(BdevLvolResize {});

/// `bdev_lvol_snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevLvolSnapshot {
    /// The volume's UUID or alias.
    pub lvol_name: String,
    /// The snapshot's name.
    pub snapshot_name: String,
}
params_knobs!(BdevLvolSnapshot {});

/// `bdev_lvol_clone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevLvolClone {
    /// The snapshot's UUID or alias.
    pub snapshot_name: String,
    /// The clone's name.
    pub clone_name: String,
}
params_knobs!(BdevLvolClone {});
