//! `shoal-csi-client`: speaks CSI to a plugin's Unix socket, one RPC per invocation, built
//! from the same bindings as the driver. For tests and for poking at a running plugin
//! (`grpcurl` needs the .proto or reflection; this needs neither).
//!
//! Prints the response (Rust debug form) on stdout. With `--expect CODE` (a gRPC code name
//! such as `NotFound`), succeeds only if the call fails with exactly that code.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use shoal_csi::csi;
use shoal_csi::csi::controller_client::ControllerClient;
use shoal_csi::csi::identity_client::IdentityClient;
use shoal_csi::csi::node_client::NodeClient;
use shoal_csi::csi::volume_capability::access_mode::Mode;
use shoal_csi::csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};

#[derive(Parser)]
struct Args {
    /// The plugin's socket.
    #[arg(long)]
    endpoint: PathBuf,
    /// Expect the call to fail with this gRPC code (e.g. NotFound, InvalidArgument).
    #[arg(long)]
    expect: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// The volume capability of a request.
#[derive(clap::Args, Clone)]
struct Cap {
    /// Raw block instead of a mounted file system.
    #[arg(long)]
    block: bool,
    /// File system type ("" for the class's or the default).
    #[arg(long, default_value = "")]
    fs: String,
    /// Mount flags.
    #[arg(long = "mount-flag")]
    mount_flags: Vec<String>,
    /// Access mode (SINGLE_NODE_WRITER, SINGLE_NODE_READER_ONLY, MULTI_NODE_MULTI_WRITER, ...).
    #[arg(long, default_value = "SINGLE_NODE_WRITER")]
    mode: String,
    /// Send no capability at all.
    #[arg(long)]
    no_cap: bool,
}

impl Cap {
    fn get(&self) -> Option<csi::VolumeCapability> {
        if self.no_cap {
            return None;
        }
        let mode = Mode::from_str_name(&self.mode).unwrap_or(Mode::Unknown) as i32;
        let access_type = if self.block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume {
                fs_type: self.fs.clone(),
                mount_flags: self.mount_flags.clone(),
                volume_mount_group: String::new(),
            })
        };
        Some(csi::VolumeCapability {
            access_mode: Some(AccessMode { mode }),
            access_type: Some(access_type),
        })
    }
}

fn kv(pairs: &[String]) -> HashMap<String, String> {
    pairs
        .iter()
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[derive(Subcommand)]
enum Cmd {
    /// Identity.GetPluginInfo
    PluginInfo,
    /// Identity.GetPluginCapabilities
    PluginCaps,
    /// Identity.Probe
    Probe,
    /// Node.NodeGetInfo
    NodeInfo,
    /// Node.NodeGetCapabilities
    NodeCaps,
    /// Node.NodeStageVolume
    Stage {
        #[arg(long, default_value = "")]
        volume_id: String,
        #[arg(long, default_value = "")]
        staging: String,
        /// Publish context entries key=value (nqn, traddr, trsvcid, uuid).
        #[arg(long = "ctx")]
        ctx: Vec<String>,
        /// Volume context entries key=value (fsType).
        #[arg(long = "vctx")]
        vctx: Vec<String>,
        #[command(flatten)]
        cap: Cap,
    },
    /// Node.NodeUnstageVolume
    Unstage {
        #[arg(long, default_value = "")]
        volume_id: String,
        #[arg(long, default_value = "")]
        staging: String,
    },
    /// Node.NodePublishVolume
    Publish {
        #[arg(long, default_value = "")]
        volume_id: String,
        #[arg(long, default_value = "")]
        staging: String,
        #[arg(long, default_value = "")]
        target: String,
        #[arg(long = "ctx")]
        ctx: Vec<String>,
        #[arg(long)]
        readonly: bool,
        #[command(flatten)]
        cap: Cap,
    },
    /// Node.NodeUnpublishVolume
    Unpublish {
        #[arg(long, default_value = "")]
        volume_id: String,
        #[arg(long, default_value = "")]
        target: String,
    },
    /// Node.NodeGetVolumeStats
    Stats {
        #[arg(long, default_value = "")]
        volume_id: String,
        #[arg(long, default_value = "")]
        path: String,
    },
    /// Node.NodeExpandVolume
    NodeExpand {
        #[arg(long, default_value = "")]
        volume_id: String,
        #[arg(long, default_value = "")]
        path: String,
        #[arg(long, default_value_t = 0)]
        bytes: i64,
    },
    /// Controller.CreateVolume
    Create {
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value_t = 0)]
        bytes: i64,
        #[arg(long, default_value_t = 0)]
        limit: i64,
        /// Parameters key=value (replicas, thin, fsType).
        #[arg(long = "param")]
        params: Vec<String>,
        #[arg(long)]
        from_snapshot: Option<String>,
        #[arg(long)]
        from_volume: Option<String>,
        /// Requisite zones.
        #[arg(long = "zone")]
        zones: Vec<String>,
        #[command(flatten)]
        cap: Cap,
    },
    /// Controller.DeleteVolume
    Delete {
        #[arg(long, default_value = "")]
        volume_id: String,
    },
    /// Controller.ControllerPublishVolume
    CtrlPublish {
        #[arg(long, default_value = "")]
        volume_id: String,
        #[arg(long, default_value = "")]
        node_id: String,
        #[command(flatten)]
        cap: Cap,
    },
    /// Controller.ControllerUnpublishVolume
    CtrlUnpublish {
        #[arg(long, default_value = "")]
        volume_id: String,
        #[arg(long, default_value = "")]
        node_id: String,
    },
    /// Controller.ControllerExpandVolume
    CtrlExpand {
        #[arg(long, default_value = "")]
        volume_id: String,
        #[arg(long, default_value_t = 0)]
        bytes: i64,
        /// `limit_bytes` (0: none).
        #[arg(long, default_value_t = 0)]
        limit: i64,
    },
    /// Controller.ControllerGetVolume
    Get {
        #[arg(long, default_value = "")]
        volume_id: String,
    },
    /// Controller.ListVolumes
    List {
        #[arg(long, default_value_t = 0)]
        max: i32,
        #[arg(long, default_value = "")]
        token: String,
    },
    /// Controller.GetCapacity
    Capacity {
        #[arg(long = "param")]
        params: Vec<String>,
    },
    /// Controller.CreateSnapshot
    Snapshot {
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "")]
        volume_id: String,
    },
    /// Controller.DeleteSnapshot
    DeleteSnapshot {
        #[arg(long, default_value = "")]
        snapshot_id: String,
    },
    /// Controller.ListSnapshots
    ListSnapshots {
        #[arg(long, default_value = "")]
        volume_id: String,
        #[arg(long, default_value = "")]
        snapshot_id: String,
    },
}

async fn call(ch: tonic::transport::Channel, cmd: Cmd) -> Result<String, tonic::Status> {
    let mut id = IdentityClient::new(ch.clone());
    let mut node = NodeClient::new(ch.clone());
    let mut ctl = ControllerClient::new(ch);
    let d = |x: &dyn std::fmt::Debug| format!("{x:#?}");
    Ok(match cmd {
        Cmd::PluginInfo => d(&id
            .get_plugin_info(csi::GetPluginInfoRequest {})
            .await?
            .into_inner()),
        Cmd::PluginCaps => d(&id
            .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
            .await?
            .into_inner()),
        Cmd::Probe => d(&id.probe(csi::ProbeRequest {}).await?.into_inner()),
        Cmd::NodeInfo => d(&node
            .node_get_info(csi::NodeGetInfoRequest {})
            .await?
            .into_inner()),
        Cmd::NodeCaps => d(&node
            .node_get_capabilities(csi::NodeGetCapabilitiesRequest {})
            .await?
            .into_inner()),
        Cmd::Stage {
            volume_id,
            staging,
            ctx,
            vctx,
            cap,
        } => d(&node
            .node_stage_volume(csi::NodeStageVolumeRequest {
                volume_id,
                publish_context: kv(&ctx),
                staging_target_path: staging,
                volume_capability: cap.get(),
                secrets: HashMap::new(),
                volume_context: kv(&vctx),
            })
            .await?
            .into_inner()),
        Cmd::Unstage { volume_id, staging } => d(&node
            .node_unstage_volume(csi::NodeUnstageVolumeRequest {
                volume_id,
                staging_target_path: staging,
            })
            .await?
            .into_inner()),
        Cmd::Publish {
            volume_id,
            staging,
            target,
            ctx,
            readonly,
            cap,
        } => d(&node
            .node_publish_volume(csi::NodePublishVolumeRequest {
                volume_id,
                publish_context: kv(&ctx),
                staging_target_path: staging,
                target_path: target,
                volume_capability: cap.get(),
                readonly,
                secrets: HashMap::new(),
                volume_context: HashMap::new(),
            })
            .await?
            .into_inner()),
        Cmd::Unpublish { volume_id, target } => d(&node
            .node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
                volume_id,
                target_path: target,
            })
            .await?
            .into_inner()),
        Cmd::Stats { volume_id, path } => d(&node
            .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
                volume_id,
                volume_path: path,
                staging_target_path: String::new(),
            })
            .await?
            .into_inner()),
        Cmd::NodeExpand {
            volume_id,
            path,
            bytes,
        } => d(&node
            .node_expand_volume(csi::NodeExpandVolumeRequest {
                volume_id,
                volume_path: path,
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: bytes,
                    limit_bytes: 0,
                }),
                staging_target_path: String::new(),
                volume_capability: None,
                secrets: HashMap::new(),
            })
            .await?
            .into_inner()),
        Cmd::Create {
            name,
            bytes,
            limit,
            params,
            from_snapshot,
            from_volume,
            zones,
            cap,
        } => {
            use csi::volume_content_source::{SnapshotSource, Type, VolumeSource};
            let src = match (from_snapshot, from_volume) {
                (Some(s), _) => Some(Type::Snapshot(SnapshotSource { snapshot_id: s })),
                (None, Some(v)) => Some(Type::Volume(VolumeSource { volume_id: v })),
                _ => None,
            };
            let req = (!zones.is_empty()).then(|| csi::TopologyRequirement {
                requisite: zones
                    .iter()
                    .map(|z| csi::Topology {
                        segments: [(shoal_csi::validate::ZONE_KEY.to_string(), z.clone())]
                            .into_iter()
                            .collect(),
                    })
                    .collect(),
                preferred: vec![],
            });
            d(&ctl
                .create_volume(csi::CreateVolumeRequest {
                    name,
                    capacity_range: Some(csi::CapacityRange {
                        required_bytes: bytes,
                        limit_bytes: limit,
                    }),
                    volume_capabilities: cap.get().into_iter().collect(),
                    parameters: kv(&params),
                    secrets: HashMap::new(),
                    volume_content_source: src
                        .map(|t| csi::VolumeContentSource { r#type: Some(t) }),
                    accessibility_requirements: req,
                    mutable_parameters: HashMap::new(),
                })
                .await?
                .into_inner())
        }
        Cmd::Delete { volume_id } => d(&ctl
            .delete_volume(csi::DeleteVolumeRequest {
                volume_id,
                secrets: HashMap::new(),
            })
            .await?
            .into_inner()),
        Cmd::CtrlPublish {
            volume_id,
            node_id,
            cap,
        } => d(&ctl
            .controller_publish_volume(csi::ControllerPublishVolumeRequest {
                volume_id,
                node_id,
                volume_capability: cap.get(),
                readonly: false,
                secrets: HashMap::new(),
                volume_context: HashMap::new(),
            })
            .await?
            .into_inner()),
        Cmd::CtrlUnpublish { volume_id, node_id } => d(&ctl
            .controller_unpublish_volume(csi::ControllerUnpublishVolumeRequest {
                volume_id,
                node_id,
                secrets: HashMap::new(),
            })
            .await?
            .into_inner()),
        Cmd::CtrlExpand {
            volume_id,
            bytes,
            limit,
        } => d(&ctl
            .controller_expand_volume(csi::ControllerExpandVolumeRequest {
                volume_id,
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: bytes,
                    limit_bytes: limit,
                }),
                secrets: HashMap::new(),
                volume_capability: None,
            })
            .await?
            .into_inner()),
        Cmd::Get { volume_id } => d(&ctl
            .controller_get_volume(csi::ControllerGetVolumeRequest { volume_id })
            .await?
            .into_inner()),
        Cmd::List { max, token } => d(&ctl
            .list_volumes(csi::ListVolumesRequest {
                max_entries: max,
                starting_token: token,
            })
            .await?
            .into_inner()),
        Cmd::Capacity { params } => d(&ctl
            .get_capacity(csi::GetCapacityRequest {
                volume_capabilities: vec![],
                parameters: kv(&params),
                accessible_topology: None,
            })
            .await?
            .into_inner()),
        Cmd::Snapshot { name, volume_id } => d(&ctl
            .create_snapshot(csi::CreateSnapshotRequest {
                source_volume_id: volume_id,
                name,
                secrets: HashMap::new(),
                parameters: HashMap::new(),
            })
            .await?
            .into_inner()),
        Cmd::DeleteSnapshot { snapshot_id } => d(&ctl
            .delete_snapshot(csi::DeleteSnapshotRequest {
                snapshot_id,
                secrets: HashMap::new(),
            })
            .await?
            .into_inner()),
        Cmd::ListSnapshots {
            volume_id,
            snapshot_id,
        } => d(&ctl
            .list_snapshots(csi::ListSnapshotsRequest {
                max_entries: 0,
                starting_token: String::new(),
                source_volume_id: volume_id,
                snapshot_id,
                secrets: HashMap::new(),
            })
            .await?
            .into_inner()),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let ch = match shoal_csi::server::connect(&a.endpoint).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("connect {}: {e}", a.endpoint.display());
            return std::process::ExitCode::from(3);
        }
    };
    let res = call(ch, a.cmd).await;
    match (res, a.expect) {
        (Ok(out), None) => {
            println!("{out}");
            std::process::ExitCode::SUCCESS
        }
        (Ok(out), Some(want)) => {
            eprintln!("expected {want}, the call succeeded: {out}");
            std::process::ExitCode::FAILURE
        }
        (Err(st), Some(want)) if format!("{:?}", st.code()) == want => {
            println!("{:?}: {}", st.code(), st.message());
            std::process::ExitCode::SUCCESS
        }
        (Err(st), _) => {
            eprintln!("{:?}: {}", st.code(), st.message());
            std::process::ExitCode::FAILURE
        }
    }
}
