//! Checks of CSI requests that need no I/O: capacity ranges, volume capabilities, storage-class
//! parameters and topology. Each failure is the status the CSI spec names for it.
//!
//! CSI spec v1.9, "Error Scheme": a missing required field is `INVALID_ARGUMENT`; a capacity
//! the plugin cannot satisfy within the range is `OUT_OF_RANGE` (CreateVolume, "Unsupported
//! capacity_range"); an unsupported capability is `INVALID_ARGUMENT` on the calls that take one
//! (ValidateVolumeCapabilities answers it as "not confirmed" instead, with a message).

use std::collections::HashMap;

use tonic::Status;

use crate::control::{Source, Topology};
use crate::csi::volume_capability::AccessType;
use crate::csi::volume_capability::access_mode::Mode;
use crate::csi::volume_content_source::Type as SourceType;
use crate::csi::{CapacityRange, TopologyRequirement, VolumeCapability, VolumeContentSource};

/// The size a volume gets when the CO gives no capacity range: 1 GiB.
pub const DEFAULT_SIZE: u64 = 1 << 30;
/// Sizes are rounded up to this (the logical volumes' cluster size).
pub const SIZE_ALIGN: u64 = 1 << 20;
/// The topology key of a node's zone (NodeGetInfo publishes it; CreateVolume reads it).
pub const ZONE_KEY: &str = "topology.shoal.io/zone";
/// The file systems the node plugin makes and mounts.
pub const FS_TYPES: [&str; 2] = ["ext4", "xfs"];
/// The file system used when neither the capability nor the class names one.
pub const DEFAULT_FS: &str = "ext4";

/// A required string field: present and not empty.
pub fn required<'a>(value: &'a str, field: &str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("{field} is required")))
    } else {
        Ok(value)
    }
}

/// The size to create for a capacity range: at least `required_bytes`, at most `limit_bytes`
/// (0 means unbounded), rounded up to [`SIZE_ALIGN`].
pub fn size_for(range: Option<&CapacityRange>) -> Result<u64, Status> {
    let Some(r) = range else {
        return Ok(DEFAULT_SIZE);
    };
    let required = u64::try_from(r.required_bytes).map_err(|_| {
        Status::invalid_argument(format!(
            "capacity_range.required_bytes {} < 0",
            r.required_bytes
        ))
    })?;
    let limit = u64::try_from(r.limit_bytes).map_err(|_| {
        Status::invalid_argument(format!("capacity_range.limit_bytes {} < 0", r.limit_bytes))
    })?;
    if limit != 0 && required > limit {
        return Err(Status::out_of_range(format!(
            "capacity_range: required_bytes {required} > limit_bytes {limit}"
        )));
    }
    let want = if required == 0 {
        DEFAULT_SIZE.min(if limit == 0 { u64::MAX } else { limit })
    } else {
        required
    };
    let size = want
        .checked_next_multiple_of(SIZE_ALIGN)
        .filter(|s| i64::try_from(*s).is_ok())
        .ok_or_else(|| Status::out_of_range(format!("capacity {want} too large")))?;
    if limit != 0 && size > limit {
        return Err(Status::out_of_range(format!(
            "capacity_range: {want} bytes rounded up to the {SIZE_ALIGN}-byte unit is {size}, \
             above limit_bytes {limit}"
        )));
    }
    Ok(size)
}

/// Whether a size satisfies a capacity range (an existing volume against a new request).
pub fn fits(size: u64, range: Option<&CapacityRange>) -> bool {
    let Some(r) = range else { return true };
    let req = u64::try_from(r.required_bytes).unwrap_or(u64::MAX);
    let lim = u64::try_from(r.limit_bytes).unwrap_or(0);
    size >= req && (lim == 0 || size <= lim)
}

/// Why a capability is not supported, or `None` when it is.
///
/// A namespace holds one file system written by one kernel: every single-node mode is
/// supported, multi-node modes are not (a CSI `MULTI_NODE_*` volume on an ordinary file system
/// corrupts it). Mount volumes take ext4 or xfs (or no type: the class's or the default).
pub fn unsupported(cap: &VolumeCapability) -> Option<String> {
    let mode = match cap.access_mode.as_ref() {
        None => return Some("access_mode is required".into()),
        Some(m) => Mode::try_from(m.mode).unwrap_or(Mode::Unknown),
    };
    match mode {
        Mode::SingleNodeWriter
        | Mode::SingleNodeReaderOnly
        | Mode::SingleNodeSingleWriter
        | Mode::SingleNodeMultiWriter => {}
        other => {
            return Some(format!(
                "access mode {} is not supported",
                other.as_str_name()
            ));
        }
    }
    match cap.access_type.as_ref() {
        None => Some("access_type (mount or block) is required".into()),
        Some(AccessType::Block(_)) => None,
        Some(AccessType::Mount(m)) => {
            if m.fs_type.is_empty() || FS_TYPES.contains(&m.fs_type.as_str()) {
                None
            } else {
                Some(format!(
                    "fs_type {:?} is not supported (ext4, xfs)",
                    m.fs_type
                ))
            }
        }
    }
}

/// Checks a list of capabilities for a call that must refuse unsupported ones.
pub fn capabilities(caps: &[VolumeCapability]) -> Result<(), Status> {
    if caps.is_empty() {
        return Err(Status::invalid_argument("volume_capabilities is required"));
    }
    for c in caps {
        if let Some(why) = unsupported(c) {
            return Err(Status::invalid_argument(why));
        }
    }
    Ok(())
}

/// Checks one capability (the calls that take exactly one).
pub fn capability(cap: Option<&VolumeCapability>) -> Result<&VolumeCapability, Status> {
    let c = cap.ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
    match unsupported(c) {
        Some(why) => Err(Status::invalid_argument(why)),
        None => Ok(c),
    }
}

/// The storage-class parameters of CreateVolume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Replica count (`replicas`, default 3).
    pub replicas: u32,
    /// Thin provisioning (`thin`, default false).
    pub thin: bool,
    /// File system for mount volumes (`fsType`), handed to the node in the volume context.
    pub fs_type: Option<String>,
}

/// The most replicas a class may ask for.
pub const MAX_REPLICAS: u32 = 16;

/// Parses CreateVolume's parameters. Unknown keys are refused (a typo in a StorageClass would
/// otherwise be silently ignored), except the `csi.storage.k8s.io/` keys that Kubernetes'
/// external-provisioner adds itself.
pub fn params(p: &HashMap<String, String>) -> Result<Params, Status> {
    let mut out = Params {
        replicas: 3,
        thin: false,
        fs_type: None,
    };
    for (k, v) in p {
        match k.as_str() {
            "replicas" => {
                out.replicas = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_REPLICAS).contains(n))
                    .ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "parameter replicas={v:?}: expected 1 to {MAX_REPLICAS}"
                        ))
                    })?;
            }
            "thin" => {
                out.thin = match v.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(Status::invalid_argument(format!(
                            "parameter thin={v:?}: expected true or false"
                        )));
                    }
                }
            }
            "fsType" => {
                if !FS_TYPES.contains(&v.as_str()) {
                    return Err(Status::invalid_argument(format!(
                        "parameter fsType={v:?}: expected ext4 or xfs"
                    )));
                }
                out.fs_type = Some(v.clone());
            }
            k if k.starts_with("csi.storage.k8s.io/") => {}
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown parameter {other:?} (replicas, thin, fsType)"
                )));
            }
        }
    }
    Ok(out)
}

/// The placement constraint of a topology requirement: the zones of its `requisite` terms
/// (replicas must be in one of them). `preferred` only orders, and the control plane places by
/// free space and load, so it adds nothing. A requisite term without a zone key allows any
/// zone, and so removes the constraint.
pub fn topology(req: Option<&TopologyRequirement>) -> Result<Option<Topology>, Status> {
    let Some(req) = req else { return Ok(None) };
    let mut zones: Vec<String> = Vec::new();
    for t in &req.requisite {
        for k in t.segments.keys() {
            if k != ZONE_KEY {
                return Err(Status::invalid_argument(format!(
                    "topology key {k:?} is not known (only {ZONE_KEY})"
                )));
            }
        }
        match t.segments.get(ZONE_KEY) {
            Some(z) if !z.is_empty() => {
                if !zones.contains(z) {
                    zones.push(z.clone());
                }
            }
            _ => return Ok(None),
        }
    }
    if zones.is_empty() {
        return Ok(None);
    }
    zones.sort();
    Ok(Some(Topology {
        zones: Some(zones),
        nodes: None,
    }))
}

/// The content source of CreateVolume, its id checked to be one the API could have given.
/// A source that cannot exist is `NOT_FOUND` (CSI: "Source incompatible or not supported" is
/// for a wrong type, "does not exist" is NOT_FOUND).
pub fn source(src: Option<&VolumeContentSource>) -> Result<Option<Source>, Status> {
    let Some(src) = src else { return Ok(None) };
    match src.r#type.as_ref() {
        None => Err(Status::invalid_argument(
            "volume_content_source has no type",
        )),
        Some(SourceType::Snapshot(s)) => match crate::control::parse_id(&s.snapshot_id) {
            Some(id) => Ok(Some(Source {
                snapshot_id: Some(id),
                volume_id: None,
            })),
            None => Err(Status::not_found(format!(
                "no snapshot {:?}",
                s.snapshot_id
            ))),
        },
        Some(SourceType::Volume(v)) => match crate::control::parse_id(&v.volume_id) {
            Some(id) => Ok(Some(Source {
                snapshot_id: None,
                volume_id: Some(id),
            })),
            None => Err(Status::not_found(format!("no volume {:?}", v.volume_id))),
        },
    }
}

#[cfg(test)]
mod tests;
