//! The CSI Node service: NVMe/TCP connect, file system, mounts, on the node that runs the pod.
//!
//! | RPC | what it does | idempotency |
//! |---|---|---|
//! | NodeStageVolume | record, `nvme connect` (ctrl-loss-tmo, reconnect-delay), wait for the namespace, mkfs if empty, mount at the staging path (block: connect only) | an existing controller of the subsystem (live or reconnecting) is reused; a mount of the same device at the staging path is success |
//! | NodePublishVolume | bind mount of the staging path (block: of the device node onto a file), read-only when asked | the same mount at the target is success, another is ALREADY_EXISTS |
//! | NodeUnpublishVolume | unmount, remove the target | nothing mounted, nothing there: success |
//! | NodeUnstageVolume | unmount the staging path, `nvme disconnect` the subsystem, forget | the same |
//! | NodeGetVolumeStats | statvfs (bytes, inodes) or the device size; condition from the controllers' states | - |
//! | NodeExpandVolume | waits for the device to show the new size (rescans), `resize2fs` / `xfs_growfs` online | growing to the current size is a no-op for both tools |
//! | NodeGetInfo | node id, zone | - |

pub mod fs;
pub mod mount;
pub mod nvme;
pub mod state;

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::controller::ctx;
use crate::csi;
use crate::csi::node_server::Node;
use crate::csi::node_service_capability::rpc::Type as Rpc;
use crate::csi::volume_capability::AccessType;
use crate::csi::volume_capability::access_mode::Mode;
use crate::inflight::InFlight;
use crate::validate::{self, ZONE_KEY};
use nvme::{ConnectOpts, Sysfs, Target};
use state::{Staged, StateDir};

/// The Node service.
pub struct NodeService {
    /// This node's id (the control plane's node id: where ControllerPublish puts the nexus).
    pub node_id: String,
    /// This node's zone, published as topology.
    pub zone: Option<String>,
    /// Connection options.
    pub connect: ConnectOpts,
    /// How long to wait for a namespace to show up after connecting.
    pub namespace_wait: Duration,
    /// sysfs.
    pub sys: Sysfs,
    /// Records of staged volumes.
    pub state: StateDir,
    /// Operations in progress, by volume id.
    pub inflight: InFlight,
}

fn internal(what: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what}: {e}"))
}

fn abs_path(p: &str, field: &str) -> Result<PathBuf, Status> {
    validate::required(p, field)?;
    let p = PathBuf::from(p);
    if !p.is_absolute() {
        return Err(Status::invalid_argument(format!(
            "{field} {} is not absolute",
            p.display()
        )));
    }
    Ok(p)
}

fn volume_id(id: &str) -> Result<&str, Status> {
    validate::required(id, "volume_id")?;
    if !state::valid_id(id) {
        return Err(Status::invalid_argument(format!(
            "volume_id {id:?} has characters or a length no volume of Shoal's has"
        )));
    }
    Ok(id)
}

fn target_of(pc: &HashMap<String, String>) -> Result<Target, Status> {
    let get = |k: &str| {
        pc.get(k)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| Status::invalid_argument(format!("publish_context has no {k:?}")))
    };
    Ok(Target {
        nqn: get(ctx::NQN)?,
        traddr: get(ctx::TRADDR)?,
        trsvcid: get(ctx::TRSVCID)?,
    })
}

fn is_block(cap: &csi::VolumeCapability) -> bool {
    matches!(cap.access_type, Some(AccessType::Block(_)))
}

fn reader_only(cap: &csi::VolumeCapability) -> bool {
    cap.access_mode.as_ref().map(|m| m.mode) == Some(Mode::SingleNodeReaderOnly as i32)
}

fn devno(path: &Path) -> Result<(u32, u32), Status> {
    let md =
        std::fs::metadata(path).map_err(|e| internal(&format!("stat {}", path.display()), e))?;
    let rdev = md.rdev();
    Ok((rustix::fs::major(rdev), rustix::fs::minor(rdev)))
}

fn mounted(path: &Path) -> Result<Option<mount::MountEntry>, Status> {
    mount::mounted_at(path).map_err(|e| internal("read /proc/self/mountinfo", e))
}

impl NodeService {
    /// Waits until the namespace of `t` has a block device node, and returns its path.
    async fn wait_namespace(&self, t: &Target, uuid: Option<&str>) -> Result<PathBuf, Status> {
        let deadline = tokio::time::Instant::now() + self.namespace_wait;
        loop {
            if let Some(name) = self.sys.namespace(&t.nqn, uuid) {
                let dev = PathBuf::from("/dev").join(&name);
                if dev.exists() {
                    return Ok(dev);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let states: Vec<String> = self
                    .sys
                    .controllers(&t.nqn)
                    .iter()
                    .map(|c| format!("{} {}", c.name, c.state))
                    .collect();
                return Err(Status::unavailable(format!(
                    "no namespace of {} after {:?} (controllers: {}): retry",
                    t.nqn,
                    self.namespace_wait,
                    if states.is_empty() {
                        "none".into()
                    } else {
                        states.join(", ")
                    }
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The block device of a staged volume: from the publish context, else from the record.
    async fn device_of(&self, id: &str, pc: &HashMap<String, String>) -> Result<PathBuf, Status> {
        let (t, uuid) = match target_of(pc) {
            Ok(t) => (t, pc.get("uuid").cloned()),
            Err(e) => match self.state.load(id) {
                Some(s) => (
                    Target {
                        nqn: s.nqn,
                        traddr: s.traddr,
                        trsvcid: s.trsvcid,
                    },
                    s.uuid,
                ),
                None => return Err(e),
            },
        };
        self.wait_namespace(&t, uuid.as_deref()).await.map_err(|e| {
            Status::failed_precondition(format!("volume {id} is not staged: {}", e.message()))
        })
    }

    /// The condition of the volume on device `(major, minor)`: abnormal without a live path.
    fn condition(&self, major: u32, minor: u32) -> csi::VolumeCondition {
        let Some(nqn) = self.sys.nqn_of_block(major, minor) else {
            return csi::VolumeCondition {
                abnormal: true,
                message: format!("device {major}:{minor} is not an NVMe namespace"),
            };
        };
        let ctrls = self.sys.controllers(&nqn);
        let live = ctrls.iter().any(|c| c.state == "live");
        let states: Vec<String> = ctrls
            .iter()
            .map(|c| format!("{} {}", c.name, c.state))
            .collect();
        csi::VolumeCondition {
            abnormal: !live,
            message: format!(
                "{nqn}: {}",
                if states.is_empty() {
                    "no controller".into()
                } else {
                    states.join(", ")
                }
            ),
        }
    }
}

fn cap(t: Rpc) -> csi::NodeServiceCapability {
    use csi::node_service_capability::{Rpc as R, Type};
    csi::NodeServiceCapability {
        r#type: Some(Type::Rpc(R { r#type: t as i32 })),
    }
}

fn usage(unit: csi::volume_usage::Unit, total: u64, available: u64) -> csi::VolumeUsage {
    let i = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    csi::VolumeUsage {
        available: i(available),
        total: i(total),
        used: i(total.saturating_sub(available)),
        unit: unit as i32,
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        req: Request<csi::NodeStageVolumeRequest>,
    ) -> Result<Response<csi::NodeStageVolumeResponse>, Status> {
        let r = req.into_inner();
        let id = volume_id(&r.volume_id)?;
        let staging = abs_path(&r.staging_target_path, "staging_target_path")?;
        let cap = validate::capability(r.volume_capability.as_ref())?;
        let t = target_of(&r.publish_context)?;
        let uuid = r.publish_context.get("uuid").cloned();
        let _g = self.inflight.take(id)?;
        let rec = Staged {
            nqn: t.nqn.clone(),
            traddr: t.traddr.clone(),
            trsvcid: t.trsvcid.clone(),
            uuid: uuid.clone(),
        };
        self.state
            .save(id, &rec)
            .map_err(|e| internal("save the volume's record", e))?;
        let made = nvme::connect(&self.sys, &t, self.connect)
            .await
            .map_err(|e| {
                Status::unavailable(format!(
                    "connect to {} at {}:{}: {e}",
                    t.nqn, t.traddr, t.trsvcid
                ))
            })?;
        tracing::info!(volume = id, nqn = %t.nqn, new_connection = made, "staging");
        let dev = self.wait_namespace(&t, uuid.as_deref()).await?;
        let Some(AccessType::Mount(m)) = cap.access_type.as_ref() else {
            // Raw block: the device node is bind-mounted at publish; nothing to stage.
            return Ok(Response::new(csi::NodeStageVolumeResponse {}));
        };
        let (maj, min) = devno(&dev)?;
        if let Some(mt) = mounted(&staging)? {
            if (mt.major, mt.minor) == (maj, min) {
                return Ok(Response::new(csi::NodeStageVolumeResponse {}));
            }
            return Err(Status::already_exists(format!(
                "{} has another mount ({} {})",
                staging.display(),
                mt.source,
                mt.fstype
            )));
        }
        let fs_type = if !m.fs_type.is_empty() {
            m.fs_type.clone()
        } else {
            r.volume_context
                .get(ctx::FS_TYPE)
                .cloned()
                .unwrap_or_else(|| validate::DEFAULT_FS.into())
        };
        if !validate::FS_TYPES.contains(&fs_type.as_str()) {
            return Err(Status::invalid_argument(format!(
                "fsType {fs_type:?} is not supported"
            )));
        }
        let content = fs::probe(&dev).map_err(|e| internal("probe", e))?;
        match (content, fs_type.as_str()) {
            (fs::Content::Empty, _) => {
                tracing::info!(volume = id, dev = %dev.display(), fs = %fs_type, "mkfs on an empty namespace");
                fs::mkfs(&dev, &fs_type)
                    .await
                    .map_err(|e| internal("mkfs", e))?;
            }
            (fs::Content::Ext4, "ext4") | (fs::Content::Xfs, "xfs") => {}
            (other, want) => {
                return Err(Status::failed_precondition(format!(
                    "{} holds {other:?}, not an empty namespace or {want}: not formatted over",
                    dev.display()
                )));
            }
        }
        std::fs::create_dir_all(&staging)
            .map_err(|e| internal(&format!("mkdir {}", staging.display()), e))?;
        mount::mount_fs(&dev, &staging, &fs_type, &m.mount_flags, reader_only(cap)).map_err(
            |e| {
                internal(
                    &format!("mount {} at {}", dev.display(), staging.display()),
                    e,
                )
            },
        )?;
        Ok(Response::new(csi::NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        req: Request<csi::NodeUnstageVolumeRequest>,
    ) -> Result<Response<csi::NodeUnstageVolumeResponse>, Status> {
        let r = req.into_inner();
        let id = volume_id(&r.volume_id)?;
        let staging = abs_path(&r.staging_target_path, "staging_target_path")?;
        let _g = self.inflight.take(id)?;
        let mut nqn = self.state.load(id).map(|s| s.nqn);
        while let Some(mt) = mounted(&staging)? {
            if nqn.is_none() {
                nqn = self.sys.nqn_of_block(mt.major, mt.minor);
            }
            mount::unmount(&staging)
                .map_err(|e| internal(&format!("unmount {}", staging.display()), e))?;
        }
        if let Some(nqn) = nqn {
            nvme::disconnect(&self.sys, &nqn)
                .await
                .map_err(|e| internal("disconnect", e))?;
        }
        self.state
            .remove(id)
            .map_err(|e| internal("remove the volume's record", e))?;
        Ok(Response::new(csi::NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        req: Request<csi::NodePublishVolumeRequest>,
    ) -> Result<Response<csi::NodePublishVolumeResponse>, Status> {
        let r = req.into_inner();
        let id = volume_id(&r.volume_id)?;
        let staging = abs_path(&r.staging_target_path, "staging_target_path")?;
        let target = abs_path(&r.target_path, "target_path")?;
        let cap = validate::capability(r.volume_capability.as_ref())?;
        let ro = r.readonly || reader_only(cap);
        let _g = self.inflight.take(id)?;
        let done = || Ok(Response::new(csi::NodePublishVolumeResponse {}));
        if is_block(cap) {
            let dev = self.device_of(id, &r.publish_context).await?;
            let name = dev
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some(mt) = mounted(&target)? {
                // A bind of a device node shows as the devtmpfs mount with the node as root.
                if mt.root == format!("/{name}") && mt.read_only() == ro {
                    return done();
                }
                return Err(Status::already_exists(format!(
                    "{} has another mount ({})",
                    target.display(),
                    mt.root
                )));
            }
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| internal("mkdir", e))?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&target)
                .map_err(|e| internal(&format!("create {}", target.display()), e))?;
            // Read-only is recorded on the mount, but Linux lets a device node on a read-only
            // mount be opened for writing: for raw block, the runtime's device cgroup (kubelet
            // passes "r" for a read-only volume) is what stops writes.
            mount::bind(&dev, &target, ro).map_err(|e| {
                internal(
                    &format!("bind {} at {}", dev.display(), target.display()),
                    e,
                )
            })?;
            return done();
        }
        let Some(st) = mounted(&staging)? else {
            return Err(Status::failed_precondition(format!(
                "volume {id} is not staged at {}",
                staging.display()
            )));
        };
        if let Some(mt) = mounted(&target)? {
            if (mt.major, mt.minor) == (st.major, st.minor) && mt.read_only() == ro {
                return done();
            }
            return Err(Status::already_exists(format!(
                "{} has another mount ({} {}{})",
                target.display(),
                mt.source,
                mt.fstype,
                if mt.read_only() { ", read-only" } else { "" }
            )));
        }
        std::fs::create_dir_all(&target)
            .map_err(|e| internal(&format!("mkdir {}", target.display()), e))?;
        mount::bind(&staging, &target, ro).map_err(|e| {
            internal(
                &format!("bind {} at {}", staging.display(), target.display()),
                e,
            )
        })?;
        done()
    }

    async fn node_unpublish_volume(
        &self,
        req: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<csi::NodeUnpublishVolumeResponse>, Status> {
        let r = req.into_inner();
        let id = volume_id(&r.volume_id)?;
        let target = abs_path(&r.target_path, "target_path")?;
        let _g = self.inflight.take(id)?;
        while mounted(&target)?.is_some() {
            mount::unmount(&target)
                .map_err(|e| internal(&format!("unmount {}", target.display()), e))?;
        }
        let gone = match std::fs::symlink_metadata(&target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
            Ok(md) if md.is_dir() => std::fs::remove_dir(&target),
            Ok(_) => std::fs::remove_file(&target),
        };
        gone.map_err(|e| internal(&format!("remove {}", target.display()), e))?;
        Ok(Response::new(csi::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        req: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<csi::NodeGetVolumeStatsResponse>, Status> {
        let r = req.into_inner();
        volume_id(&r.volume_id)?;
        let path = abs_path(&r.volume_path, "volume_path")?;
        let md = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Status::not_found(format!(
                    "volume_path {} does not exist",
                    path.display()
                )));
            }
            Err(e) => return Err(internal("stat", e)),
        };
        use csi::volume_usage::Unit;
        if md.file_type().is_block_device() {
            let (maj, min) = devno(&path)?;
            let size = self.sys.block_size_bytes(maj, min).unwrap_or(0);
            return Ok(Response::new(csi::NodeGetVolumeStatsResponse {
                usage: vec![usage(Unit::Bytes, size, 0)],
                volume_condition: Some(self.condition(maj, min)),
            }));
        }
        let Some(mt) = mounted(&path)? else {
            return Err(Status::not_found(format!(
                "nothing is mounted at {}",
                path.display()
            )));
        };
        let s = rustix::fs::statvfs(&path).map_err(|e| internal("statvfs", e))?;
        let bytes = |blocks: u64| blocks.saturating_mul(s.f_frsize);
        Ok(Response::new(csi::NodeGetVolumeStatsResponse {
            usage: vec![
                usage(Unit::Bytes, bytes(s.f_blocks), bytes(s.f_bavail)),
                usage(Unit::Inodes, s.f_files, s.f_favail),
            ],
            volume_condition: Some(self.condition(mt.major, mt.minor)),
        }))
    }

    async fn node_expand_volume(
        &self,
        req: Request<csi::NodeExpandVolumeRequest>,
    ) -> Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        let r = req.into_inner();
        let id = volume_id(&r.volume_id)?;
        let path = abs_path(&r.volume_path, "volume_path")?;
        if let Some(c) = r.volume_capability.as_ref() {
            validate::capability(Some(c))?;
        }
        let want = r
            .capacity_range
            .as_ref()
            .map(|c| u64::try_from(c.required_bytes).unwrap_or(0))
            .unwrap_or(0);
        let _g = self.inflight.take(id)?;
        let md = std::fs::metadata(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Status::not_found(format!("volume_path {} does not exist", path.display()))
            }
            _ => internal("stat", e),
        })?;
        let (maj, min, mt) = if md.file_type().is_block_device() {
            let (a, b) = devno(&path)?;
            (a, b, None)
        } else {
            let mt = mounted(&path)?.ok_or_else(|| {
                Status::not_found(format!("nothing is mounted at {}", path.display()))
            })?;
            (mt.major, mt.minor, Some(mt))
        };
        // The kernel learns the new size from a Namespace Attribute Changed event; rescan the
        // controllers too in case it was missed, and wait for it.
        let deadline = tokio::time::Instant::now() + self.namespace_wait;
        let mut rescanned = false;
        let size = loop {
            let size = self.sys.block_size_bytes(maj, min).unwrap_or(0);
            if size >= want || tokio::time::Instant::now() >= deadline {
                break size;
            }
            if !rescanned {
                if let Some(nqn) = self.sys.nqn_of_block(maj, min) {
                    for c in self.sys.controllers(&nqn) {
                        let _ = tokio::process::Command::new("nvme")
                            .args(["ns-rescan", &format!("/dev/{}", c.name)])
                            .output()
                            .await;
                    }
                }
                rescanned = true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if size < want {
            return Err(Status::unavailable(format!(
                "the device has {size} bytes, {want} asked: not grown yet, retry"
            )));
        }
        if let Some(mt) = mt {
            let dev = PathBuf::from(&mt.source);
            fs::grow(&dev, &path, &mt.fstype)
                .await
                .map_err(|e| internal("grow the file system", e))?;
        }
        Ok(Response::new(csi::NodeExpandVolumeResponse {
            capacity_bytes: i64::try_from(size).unwrap_or(i64::MAX),
        }))
    }

    async fn node_get_capabilities(
        &self,
        _req: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<csi::NodeGetCapabilitiesResponse>, Status> {
        let capabilities = [
            Rpc::StageUnstageVolume,
            Rpc::GetVolumeStats,
            Rpc::ExpandVolume,
            Rpc::VolumeCondition,
            Rpc::SingleNodeMultiWriter,
        ]
        .into_iter()
        .map(cap)
        .collect();
        Ok(Response::new(csi::NodeGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn node_get_info(
        &self,
        _req: Request<csi::NodeGetInfoRequest>,
    ) -> Result<Response<csi::NodeGetInfoResponse>, Status> {
        let accessible_topology = self.zone.as_ref().map(|z| csi::Topology {
            segments: [(ZONE_KEY.to_string(), z.clone())].into_iter().collect(),
        });
        Ok(Response::new(csi::NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology,
        }))
    }
}
