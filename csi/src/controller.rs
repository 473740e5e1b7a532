//! The CSI Controller service: each RPC is a call (or two) to `shoal-control`'s volume API.
//!
//! The controller keeps no state of its own: the control plane is idempotent by volume and
//! snapshot name, so a call repeated after a crash in its middle finds what the first one made.
//! Ids from the CO are checked to be UUIDs before they reach a URL ([`control::parse_id`]);
//! an id that cannot be one of ours is a volume that does not exist.
//!
//! | RPC | API | codes besides the mapped API errors |
//! |---|---|---|
//! | CreateVolume | POST /v1/volumes (then GET until not `creating`) | ALREADY_EXISTS for the name with another size |
//! | DeleteVolume | DELETE /v1/volumes/{id} | 404 and a non-UUID id are success |
//! | ControllerPublishVolume | GET, POST .../publish {node} | FAILED_PRECONDITION when published elsewhere |
//! | ControllerUnpublishVolume | GET, POST .../unpublish | 404, or published on another node: success |
//! | ValidateVolumeCapabilities | GET /v1/volumes/{id} | NOT_FOUND |
//! | ListVolumes | GET /v1/volumes?limit&start | ABORTED for a token the API refuses |
//! | GetCapacity | GET /v1/capacity?zone | - |
//! | ControllerExpandVolume | POST .../resize | OUT_OF_RANGE when smaller |
//! | Create/Delete/ListSnapshots | /v1/snapshots | ALREADY_EXISTS for the name on another volume |
//! | ControllerGetVolume | GET /v1/volumes/{id} | condition abnormal while degraded or faulted |

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Request, Response, Status};

use crate::control::{self, ControlClient, CreateVolume, Snapshot, Volume};
use crate::csi;
use crate::csi::controller_server::Controller;
use crate::csi::controller_service_capability::rpc::Type as Rpc;
use crate::csi::volume_capability::AccessType;
use crate::inflight::InFlight;
use crate::status::from_control;
use crate::validate::{self, ZONE_KEY};

/// How long CreateVolume waits for a volume in state `creating` before answering UNAVAILABLE
/// (the CO retries, and the retry finds the same volume by name).
pub const CREATE_WAIT: Duration = Duration::from_secs(30);

/// The Controller service.
pub struct ControllerService {
    /// The control plane's API.
    pub control: ControlClient,
    /// Operations in progress, by volume name or id.
    pub inflight: InFlight,
}

/// The publish context keys (what NodeStageVolume needs to connect).
pub mod ctx {
    /// The volume's subsystem NQN.
    pub const NQN: &str = "nqn";
    /// NVMe/TCP address of the node serving it.
    pub const TRADDR: &str = "traddr";
    /// NVMe/TCP port.
    pub const TRSVCID: &str = "trsvcid";
    /// The file system a StorageClass asked for (volume context).
    pub const FS_TYPE: &str = "fsType";
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The CSI view of a volume.
pub fn csi_volume(v: &Volume, fs_type: Option<&str>) -> csi::Volume {
    let mut volume_context = HashMap::new();
    volume_context.insert("replicas".to_string(), v.replicas.to_string());
    volume_context.insert("thin".to_string(), v.thin.to_string());
    if let Some(fs) = fs_type {
        volume_context.insert(ctx::FS_TYPE.to_string(), fs.to_string());
    }
    let content_source = v.source.as_ref().and_then(|s| {
        use csi::volume_content_source::{SnapshotSource, Type, VolumeSource};
        let t = match (&s.snapshot_id, &s.volume_id) {
            (Some(id), _) => Type::Snapshot(SnapshotSource {
                snapshot_id: id.clone(),
            }),
            (None, Some(id)) => Type::Volume(VolumeSource {
                volume_id: id.clone(),
            }),
            (None, None) => return None,
        };
        Some(csi::VolumeContentSource { r#type: Some(t) })
    });
    let accessible_topology = v
        .topology
        .as_ref()
        .and_then(|t| t.zones.as_ref())
        .map(|zones| {
            zones
                .iter()
                .map(|z| csi::Topology {
                    segments: [(ZONE_KEY.to_string(), z.clone())].into_iter().collect(),
                })
                .collect()
        })
        .unwrap_or_default();
    csi::Volume {
        capacity_bytes: i64_of(v.size_bytes),
        volume_id: v.id.clone(),
        volume_context,
        content_source,
        accessible_topology,
    }
}

/// The condition CSI reports for a volume state.
pub fn condition(v: &Volume) -> csi::VolumeCondition {
    let abnormal = matches!(v.state.as_str(), "degraded" | "faulted");
    let healthy = v
        .replica_list
        .iter()
        .filter(|r| r.state == "online")
        .count();
    csi::VolumeCondition {
        abnormal,
        message: format!("{}: {healthy} of {} replicas online", v.state, v.replicas),
    }
}

fn csi_snapshot(s: &Snapshot) -> csi::Snapshot {
    csi::Snapshot {
        size_bytes: i64_of(s.size_bytes),
        snapshot_id: s.id.clone(),
        source_volume_id: s.volume_id.clone(),
        creation_time: Some(prost_types::Timestamp {
            seconds: i64_of(s.created_unix),
            nanos: 0,
        }),
        ready_to_use: s.ready,
        group_snapshot_id: String::new(),
    }
}

/// A CO's volume id as an API id, or NOT_FOUND.
fn volume_id(id: &str) -> Result<String, Status> {
    validate::required(id, "volume_id")?;
    control::parse_id(id).ok_or_else(|| Status::not_found(format!("no volume {id:?}")))
}

/// Paging: `max_entries` (0: the API's default), negative is INVALID_ARGUMENT.
fn max_entries(n: i32) -> Result<u32, Status> {
    u32::try_from(n).map_err(|_| Status::invalid_argument(format!("max_entries {n} < 0")))
}

/// A paging token the API refuses is ABORTED (CSI: "Invalid starting_token").
fn paging_error(e: control::ControlError) -> Status {
    let st = from_control(e);
    if st.code() == Code::InvalidArgument {
        Status::aborted(format!("starting_token refused: {}", st.message()))
    } else {
        st
    }
}

fn cap(t: Rpc) -> csi::ControllerServiceCapability {
    use csi::controller_service_capability::{Rpc as R, Type};
    csi::ControllerServiceCapability {
        r#type: Some(Type::Rpc(R { r#type: t as i32 })),
    }
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        req: Request<csi::CreateVolumeRequest>,
    ) -> Result<Response<csi::CreateVolumeResponse>, Status> {
        let r = req.into_inner();
        let name = validate::required(&r.name, "name")?;
        validate::capabilities(&r.volume_capabilities)?;
        let size = validate::size_for(r.capacity_range.as_ref())?;
        let params = validate::params(&r.parameters)?;
        let topology = validate::topology(r.accessibility_requirements.as_ref())?;
        let source = validate::source(r.volume_content_source.as_ref())?;
        // A block volume has no file system; for a mount volume the capability's fs_type
        // wins over the class's.
        let fs_type = r
            .volume_capabilities
            .iter()
            .find_map(|c| match &c.access_type {
                Some(AccessType::Mount(m)) if !m.fs_type.is_empty() => Some(m.fs_type.clone()),
                _ => None,
            });
        let fs_type = fs_type.or(params.fs_type.clone());
        let _g = self.inflight.take(name)?;
        let body = CreateVolume {
            name: name.to_string(),
            size_bytes: size,
            replicas: params.replicas,
            thin: params.thin,
            topology,
            source,
        };
        let mut v = self
            .control
            .create_volume(&body)
            .await
            .map_err(from_control)?;
        // The same name with the same parameters comes back as it is; the CSI spec also
        // wants ALREADY_EXISTS when the existing volume does not fit the new range.
        if !validate::fits(v.size_bytes, r.capacity_range.as_ref()) {
            return Err(Status::already_exists(format!(
                "volume {name:?} exists with {} bytes, outside the capacity range asked",
                v.size_bytes
            )));
        }
        let deadline = tokio::time::Instant::now() + CREATE_WAIT;
        while v.state == "creating" {
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::unavailable(format!(
                    "volume {name:?} ({}) is still being created: retry",
                    v.id
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            v = self.control.get_volume(&v.id).await.map_err(from_control)?;
        }
        if v.state == "faulted" || v.state == "deleting" {
            return Err(Status::internal(format!(
                "volume {name:?} ({}) is {}",
                v.id, v.state
            )));
        }
        Ok(Response::new(csi::CreateVolumeResponse {
            volume: Some(csi_volume(&v, fs_type.as_deref())),
        }))
    }

    async fn delete_volume(
        &self,
        req: Request<csi::DeleteVolumeRequest>,
    ) -> Result<Response<csi::DeleteVolumeResponse>, Status> {
        let r = req.into_inner();
        validate::required(&r.volume_id, "volume_id")?;
        // CSI: a volume that does not exist is deleted: OK.
        let Some(id) = control::parse_id(&r.volume_id) else {
            return Ok(Response::new(csi::DeleteVolumeResponse {}));
        };
        let _g = self.inflight.take(&id)?;
        match self.control.delete_volume(&id).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(from_control(e)),
        }
        Ok(Response::new(csi::DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        req: Request<csi::ControllerPublishVolumeRequest>,
    ) -> Result<Response<csi::ControllerPublishVolumeResponse>, Status> {
        let r = req.into_inner();
        let id = volume_id(&r.volume_id)?;
        let node = validate::required(&r.node_id, "node_id")?;
        validate::capability(r.volume_capability.as_ref())?;
        let _g = self.inflight.take(&id)?;
        let v = self.control.get_volume(&id).await.map_err(from_control)?;
        if let Some(t) = v.target.as_ref().filter(|t| t.node != node) {
            return Err(Status::failed_precondition(format!(
                "volume {id} is published on node {:?}, not {node:?}",
                t.node
            )));
        }
        let t = self
            .control
            .publish(&id, Some(node))
            .await
            .map_err(from_control)?;
        let publish_context = [
            (ctx::NQN.to_string(), t.nqn),
            (ctx::TRADDR.to_string(), t.traddr),
            (ctx::TRSVCID.to_string(), t.trsvcid),
        ]
        .into_iter()
        .collect();
        Ok(Response::new(csi::ControllerPublishVolumeResponse {
            publish_context,
        }))
    }

    async fn controller_unpublish_volume(
        &self,
        req: Request<csi::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<csi::ControllerUnpublishVolumeResponse>, Status> {
        let r = req.into_inner();
        validate::required(&r.volume_id, "volume_id")?;
        let done = Response::new(csi::ControllerUnpublishVolumeResponse {});
        // CSI: a volume or node that cannot be found is unpublished: OK.
        let Some(id) = control::parse_id(&r.volume_id) else {
            return Ok(done);
        };
        let _g = self.inflight.take(&id)?;
        let v = match self.control.get_volume(&id).await {
            Ok(v) => v,
            Err(e) if e.is_not_found() => return Ok(done),
            Err(e) => return Err(from_control(e)),
        };
        match &v.target {
            None => return Ok(done),
            Some(t) if !r.node_id.is_empty() && t.node != r.node_id => return Ok(done),
            Some(_) => {}
        }
        match self.control.unpublish(&id).await {
            Ok(()) => Ok(done),
            Err(e) if e.is_not_found() => Ok(done),
            Err(e) => Err(from_control(e)),
        }
    }

    async fn validate_volume_capabilities(
        &self,
        req: Request<csi::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<csi::ValidateVolumeCapabilitiesResponse>, Status> {
        let r = req.into_inner();
        let id = volume_id(&r.volume_id)?;
        if r.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume_capabilities is required"));
        }
        self.control.get_volume(&id).await.map_err(from_control)?;
        let why: Vec<String> = r
            .volume_capabilities
            .iter()
            .filter_map(validate::unsupported)
            .collect();
        let resp = if why.is_empty() {
            csi::ValidateVolumeCapabilitiesResponse {
                confirmed: Some(csi::validate_volume_capabilities_response::Confirmed {
                    volume_context: r.volume_context,
                    volume_capabilities: r.volume_capabilities,
                    parameters: r.parameters,
                    mutable_parameters: r.mutable_parameters,
                }),
                message: String::new(),
            }
        } else {
            csi::ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: why.join("; "),
            }
        };
        Ok(Response::new(resp))
    }

    async fn list_volumes(
        &self,
        req: Request<csi::ListVolumesRequest>,
    ) -> Result<Response<csi::ListVolumesResponse>, Status> {
        let r = req.into_inner();
        let limit = max_entries(r.max_entries)?;
        let start = (!r.starting_token.is_empty()).then_some(r.starting_token.as_str());
        let (vols, next) = self
            .control
            .list_volumes(limit, start)
            .await
            .map_err(paging_error)?;
        let entries = vols
            .iter()
            .map(|v| csi::list_volumes_response::Entry {
                volume: Some(csi_volume(v, None)),
                status: Some(csi::list_volumes_response::VolumeStatus {
                    published_node_ids: v.target.iter().map(|t| t.node.clone()).collect(),
                    volume_condition: Some(condition(v)),
                }),
            })
            .collect();
        Ok(Response::new(csi::ListVolumesResponse {
            entries,
            next_token: next.unwrap_or_default(),
        }))
    }

    async fn get_capacity(
        &self,
        req: Request<csi::GetCapacityRequest>,
    ) -> Result<Response<csi::GetCapacityResponse>, Status> {
        let r = req.into_inner();
        let params = validate::params(&r.parameters)?;
        // CSI: capacity for capabilities the plugin cannot serve is 0.
        if r.volume_capabilities
            .iter()
            .any(|c| validate::unsupported(c).is_some())
        {
            return Ok(Response::new(csi::GetCapacityResponse {
                available_capacity: 0,
                maximum_volume_size: None,
                minimum_volume_size: None,
            }));
        }
        let zone = r
            .accessible_topology
            .as_ref()
            .and_then(|t| t.segments.get(ZONE_KEY));
        let free = self
            .control
            .capacity(zone.map(String::as_str))
            .await
            .map_err(from_control)?;
        // Every replica takes the volume's size from some node's pool: what the free space of
        // all pools holds is at most free / replicas (fewer when it sits on too few nodes).
        let per_volume = free / u64::from(params.replicas.max(1));
        Ok(Response::new(csi::GetCapacityResponse {
            available_capacity: i64_of(per_volume),
            maximum_volume_size: None,
            minimum_volume_size: Some(i64_of(validate::SIZE_ALIGN)),
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _req: Request<csi::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<csi::ControllerGetCapabilitiesResponse>, Status> {
        let capabilities = [
            Rpc::CreateDeleteVolume,
            Rpc::PublishUnpublishVolume,
            Rpc::ListVolumes,
            Rpc::GetCapacity,
            Rpc::CreateDeleteSnapshot,
            Rpc::ListSnapshots,
            Rpc::CloneVolume,
            Rpc::PublishReadonly,
            Rpc::ExpandVolume,
            Rpc::ListVolumesPublishedNodes,
            Rpc::VolumeCondition,
            Rpc::GetVolume,
            Rpc::SingleNodeMultiWriter,
        ]
        .into_iter()
        .map(cap)
        .collect();
        Ok(Response::new(csi::ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn create_snapshot(
        &self,
        req: Request<csi::CreateSnapshotRequest>,
    ) -> Result<Response<csi::CreateSnapshotResponse>, Status> {
        let r = req.into_inner();
        let name = validate::required(&r.name, "name")?;
        validate::required(&r.source_volume_id, "source_volume_id")?;
        let vid = volume_id(&r.source_volume_id)?;
        let _g = self.inflight.take(&format!("snapshot/{name}"))?;
        let s = self
            .control
            .create_snapshot(name, &vid)
            .await
            .map_err(from_control)?;
        // The same name taken of another volume is ALREADY_EXISTS (CSI CreateSnapshot).
        if s.volume_id != vid {
            return Err(Status::already_exists(format!(
                "snapshot {name:?} exists of volume {}",
                s.volume_id
            )));
        }
        Ok(Response::new(csi::CreateSnapshotResponse {
            snapshot: Some(csi_snapshot(&s)),
        }))
    }

    async fn delete_snapshot(
        &self,
        req: Request<csi::DeleteSnapshotRequest>,
    ) -> Result<Response<csi::DeleteSnapshotResponse>, Status> {
        let r = req.into_inner();
        validate::required(&r.snapshot_id, "snapshot_id")?;
        let Some(id) = control::parse_id(&r.snapshot_id) else {
            return Ok(Response::new(csi::DeleteSnapshotResponse {}));
        };
        let _g = self.inflight.take(&format!("snapshot/{id}"))?;
        match self.control.delete_snapshot(&id).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(from_control(e)),
        }
        Ok(Response::new(csi::DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        req: Request<csi::ListSnapshotsRequest>,
    ) -> Result<Response<csi::ListSnapshotsResponse>, Status> {
        let r = req.into_inner();
        let limit = max_entries(r.max_entries)?;
        let entry = |s: &Snapshot| csi::list_snapshots_response::Entry {
            snapshot: Some(csi_snapshot(s)),
        };
        let empty = || Response::new(csi::ListSnapshotsResponse::default());
        // One snapshot by id: an unknown one is an empty list, not an error (CSI).
        if !r.snapshot_id.is_empty() {
            let Some(id) = control::parse_id(&r.snapshot_id) else {
                return Ok(empty());
            };
            return match self.control.get_snapshot(&id).await {
                Ok(s) if r.source_volume_id.is_empty() || s.volume_id == r.source_volume_id => {
                    Ok(Response::new(csi::ListSnapshotsResponse {
                        entries: vec![entry(&s)],
                        next_token: String::new(),
                    }))
                }
                Ok(_) => Ok(empty()),
                Err(e) if e.is_not_found() => Ok(empty()),
                Err(e) => Err(from_control(e)),
            };
        }
        let vol = if r.source_volume_id.is_empty() {
            None
        } else {
            match control::parse_id(&r.source_volume_id) {
                Some(v) => Some(v),
                None => return Ok(empty()),
            }
        };
        let start = (!r.starting_token.is_empty()).then_some(r.starting_token.as_str());
        let (snaps, next) = self
            .control
            .list_snapshots(vol.as_deref(), limit, start)
            .await
            .map_err(paging_error)?;
        Ok(Response::new(csi::ListSnapshotsResponse {
            entries: snaps.iter().map(entry).collect(),
            next_token: next.unwrap_or_default(),
        }))
    }

    async fn controller_expand_volume(
        &self,
        req: Request<csi::ControllerExpandVolumeRequest>,
    ) -> Result<Response<csi::ControllerExpandVolumeResponse>, Status> {
        let r = req.into_inner();
        let id = volume_id(&r.volume_id)?;
        let range = r
            .capacity_range
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("capacity_range is required"))?;
        let size = validate::size_for(Some(range))?;
        if let Some(c) = r.volume_capability.as_ref() {
            validate::capability(Some(c))?;
        }
        let _g = self.inflight.take(&id)?;
        let v = self.control.get_volume(&id).await.map_err(from_control)?;
        // Already as large (a retry after a crash, or a volume that already holds the range's
        // minimum): nothing to do. Volumes never shrink: the API answers OUT_OF_RANGE.
        let wanted = u64::try_from(range.required_bytes).unwrap_or(0);
        let limit = u64::try_from(range.limit_bytes).unwrap_or(0);
        if limit > 0 && v.size_bytes > limit {
            return Err(Status::out_of_range(format!(
                "volume {id} already has {} bytes, more than limit_bytes {limit}: volumes never shrink",
                v.size_bytes
            )));
        }
        let v = if v.size_bytes >= wanted.max(1) {
            v
        } else {
            self.control.resize(&id, size).await.map_err(from_control)?
        };
        let block = matches!(
            r.volume_capability
                .as_ref()
                .and_then(|c| c.access_type.as_ref()),
            Some(AccessType::Block(_))
        );
        Ok(Response::new(csi::ControllerExpandVolumeResponse {
            capacity_bytes: i64_of(v.size_bytes),
            node_expansion_required: !block,
        }))
    }

    async fn controller_get_volume(
        &self,
        req: Request<csi::ControllerGetVolumeRequest>,
    ) -> Result<Response<csi::ControllerGetVolumeResponse>, Status> {
        let id = volume_id(&req.get_ref().volume_id)?;
        let v = self.control.get_volume(&id).await.map_err(from_control)?;
        Ok(Response::new(csi::ControllerGetVolumeResponse {
            volume: Some(csi_volume(&v, None)),
            status: Some(csi::controller_get_volume_response::VolumeStatus {
                published_node_ids: v.target.iter().map(|t| t.node.clone()).collect(),
                volume_condition: Some(condition(&v)),
            }),
        }))
    }

    async fn controller_modify_volume(
        &self,
        _req: Request<csi::ControllerModifyVolumeRequest>,
    ) -> Result<Response<csi::ControllerModifyVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "ControllerModifyVolume is not offered (MODIFY_VOLUME)",
        ))
    }
}
