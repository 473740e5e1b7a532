//! The CSI controller against a real control plane: etcd, three `shoald` nodes with their
//! agents, `shoal-control`, and `shoal-csi --mode controller` on a Unix socket, driven over
//! gRPC with the CSI client of the same bindings. Every call is made twice (idempotency), and
//! each bad call must get the code the CSI spec names.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_csi::csi;
use shoal_csi::csi::controller_client::ControllerClient;
use shoal_csi::csi::identity_client::IdentityClient;
use shoal_csi::csi::volume_capability::access_mode::Mode;
use shoal_csi::csi::volume_capability::{AccessMode, AccessType, MountVolume};
use tonic::Code;
use tonic::transport::Channel;

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(name: &'static str, dir: &Path, cmd: &mut Command) -> Proc {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    Proc(child)
}

fn wait_port(a: SocketAddr) {
    let t = Instant::now();
    while TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(30), "{a} never opened");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A binary of this workspace, built (once) in this profile.
fn bin(pkg: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "-q", "-p", pkg, "--bin", name]);
    if dir.file_name().and_then(|n| n.to_str()) == Some("release") {
        cmd.arg("--release");
    }
    let st = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(st.success(), "cargo build -p {pkg} --bin {name}");
    dir.join(name)
}

fn ip(slice: u8, n: u8) -> String {
    format!("127.{slice}.{}.{n}", std::process::id() % 200 + 20)
}

fn cap() -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "ext4".into(),
            mount_flags: vec![],
            volume_mount_group: String::new(),
        })),
    }
}

fn create_req(name: &str, bytes: i64, params: &[(&str, &str)]) -> csi::CreateVolumeRequest {
    csi::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![cap()],
        parameters: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

async fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_lifecycle_against_shoal_control() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let (shoald, agent, control, csi_bin) = (
        bin("shoal-target", "shoald"),
        bin("shoal-control", "shoal-agent"),
        bin("shoal-control", "shoal-control"),
        bin("shoal-csi", "shoal-csi"),
    );
    let s = 180;
    let etcd_url = format!("http://{}:2379", ip(s, 1));
    let peer = format!("http://{}:2380", ip(s, 1));
    let mut procs = vec![spawn(
        "etcd",
        dir,
        Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(dir.join("etcd"))
            .args([
                "--listen-client-urls",
                &etcd_url,
                "--advertise-client-urls",
                &etcd_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("t={peer}")]),
    )];
    wait_port(format!("{}:2379", ip(s, 1)).parse().unwrap());
    let token = dir.join("token");
    std::fs::write(&token, "csi-controller-test-token\n").unwrap();
    // shoald refuses a token file that others may read.
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    for n in 2..=4u8 {
        let rpc = format!("{}:5260", ip(s, n));
        procs.push(spawn(
            "shoald",
            dir,
            Command::new(&shoald)
                .arg("-r")
                .arg(dir.join(format!("n{n}.sock")))
                .args(["--empty", "--rpc-listen", &rpc, "--rpc-token-file"])
                .arg(&token),
        ));
        wait_port(rpc.parse().unwrap());
        procs.push(spawn(
            "agent",
            dir,
            Command::new(&agent)
                .args(["--etcd", &etcd_url, "--node-id", &format!("node-{n}")])
                .args([
                    "--nvmf-addr",
                    &format!("{}:4420", ip(s, n)),
                    "--rpc-endpoint",
                    &rpc,
                ])
                .arg("--rpc-token-file")
                .arg(&token)
                .args(["--label", &format!("zone=z{n}")]),
        ));
    }
    let api = format!("{}:8080", ip(s, 10));
    procs.push(spawn(
        "shoal-control",
        dir,
        Command::new(&control)
            .args([
                "serve",
                "--etcd",
                &etcd_url,
                "--listen",
                &api,
                "--rpc-token-file",
            ])
            .arg(&token),
    ));
    wait_port(api.parse().unwrap());
    // Pools are outside the volume contract: one file-backed pool per node through the pool
    // API of issue 16 (adjust here if its shape differs).
    let http = reqwest::Client::new();
    for n in 2..=4u8 {
        // The pool's disk: a sparse file (the uring bdev opens an existing file).
        std::fs::File::create(dir.join(format!("pool{n}.img")))
            .and_then(|f| f.set_len(512 << 20))
            .unwrap();
        // Until an instance leads (its election takes a moment), changes answer 503.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let r = loop {
            let r = http
                .post(format!("http://{api}/v1/pools"))
                .json(&serde_json::json!({
                    "node": format!("node-{n}"),
                    "name": "p",
                    "disk": format!("uring://{}", dir.join(format!("pool{n}.img")).display()),
                }))
                .send()
                .await
                .unwrap();
            if r.status() != reqwest::StatusCode::SERVICE_UNAVAILABLE
                || std::time::Instant::now() > deadline
            {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(
            r.status().is_success(),
            "pool on node-{n}: {}",
            r.text().await.unwrap()
        );
    }
    // The leader creates the pools on their nodes: wait until all three are online.
    let t = Instant::now();
    loop {
        let pools: serde_json::Value = http
            .get(format!("http://{api}/v1/pools"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let list = pools
            .get("pools")
            .unwrap_or(&pools)
            .as_array()
            .cloned()
            .unwrap_or_default();
        let online = list.iter().filter(|p| p["state"] == "online").count();
        if online == 3 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "pools not online: {pools}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sock = dir.join("csi.sock");
    procs.push(spawn(
        "shoal-csi",
        dir,
        Command::new(&csi_bin)
            .args(["--mode", "controller", "--endpoint"])
            .arg(format!("unix://{}", sock.display()))
            .args(["--control-url", &format!("http://{api}")]),
    ));
    let t = Instant::now();
    while !sock.exists() {
        assert!(t.elapsed() < Duration::from_secs(20), "no CSI socket");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ch: Channel = shoal_csi::server::connect(&sock).await.unwrap();
    let mut id = IdentityClient::new(ch.clone());
    let mut c = ControllerClient::new(ch);

    let probe = id.probe(csi::ProbeRequest {}).await.unwrap().into_inner();
    assert_eq!(probe.ready, Some(true));

    // CreateVolume: twice, the same volume; another size under the same name: ALREADY_EXISTS.
    let mib = 1 << 20;
    let req = create_req("pvc-a", 64 * mib, &[("replicas", "3"), ("fsType", "ext4")]);
    let v1 = c
        .create_volume(req.clone())
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let v2 = c
        .create_volume(req)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(v1.volume_id, v2.volume_id);
    assert_eq!(v1.capacity_bytes, 64 * mib);
    let vid = v1.volume_id.clone();
    assert_eq!(
        code(c.create_volume(create_req("pvc-a", 128 * mib, &[])).await).await,
        Code::AlreadyExists
    );
    assert_eq!(
        code(c.create_volume(create_req("", mib, &[])).await).await,
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            c.create_volume(create_req("x", mib, &[("replicas", "x")]))
                .await
        )
        .await,
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.create_volume(create_req("big", 1 << 50, &[])).await).await,
        Code::ResourceExhausted
    );
    assert_eq!(
        code(
            c.create_volume(create_req("many", mib, &[("replicas", "5")]))
                .await
        )
        .await,
        Code::ResourceExhausted
    );

    // Paging over three volumes, two at a time.
    let vid_b = c
        .create_volume(create_req("pvc-b", 16 * mib, &[("replicas", "1")]))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap()
        .volume_id;
    c.create_volume(create_req("pvc-c", 16 * mib, &[("replicas", "2")]))
        .await
        .unwrap();
    let p1 = c
        .list_volumes(csi::ListVolumesRequest {
            max_entries: 2,
            starting_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p1.entries.len(), 2);
    assert!(!p1.next_token.is_empty());
    let p2 = c
        .list_volumes(csi::ListVolumesRequest {
            max_entries: 2,
            starting_token: p1.next_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p2.entries.len(), 1);
    assert_eq!(
        code(
            c.list_volumes(csi::ListVolumesRequest {
                max_entries: 0,
                starting_token: "garbage".into()
            })
            .await
        )
        .await,
        Code::Aborted
    );

    // Validate, get, capacity.
    let val = c
        .validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
            volume_id: vid.clone(),
            volume_capabilities: vec![cap()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(val.confirmed.is_some());
    let missing = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        code(
            c.controller_get_volume(csi::ControllerGetVolumeRequest {
                volume_id: missing.clone()
            })
            .await
        )
        .await,
        Code::NotFound
    );
    let cap_resp = c
        .get_capacity(csi::GetCapacityRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(cap_resp.available_capacity > 0);

    // Publish on node-2 twice (same context), elsewhere: FAILED_PRECONDITION.
    let pubreq = |node: &str| csi::ControllerPublishVolumeRequest {
        volume_id: vid.clone(),
        node_id: node.into(),
        volume_capability: Some(cap()),
        readonly: false,
        secrets: HashMap::new(),
        volume_context: HashMap::new(),
    };
    let a = c
        .controller_publish_volume(pubreq("node-2"))
        .await
        .unwrap()
        .into_inner();
    let b = c
        .controller_publish_volume(pubreq("node-2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.publish_context, b.publish_context);
    for k in ["nqn", "traddr", "trsvcid"] {
        assert!(a.publish_context.contains_key(k), "{k}");
    }
    assert_eq!(
        code(c.controller_publish_volume(pubreq("node-3")).await).await,
        Code::FailedPrecondition
    );
    assert_eq!(
        code(
            c.controller_publish_volume(csi::ControllerPublishVolumeRequest {
                volume_id: missing.clone(),
                ..pubreq("node-2")
            })
            .await
        )
        .await,
        Code::NotFound
    );
    let got = c
        .controller_get_volume(csi::ControllerGetVolumeRequest {
            volume_id: vid.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.status.unwrap().published_node_ids,
        vec!["node-2".to_string()]
    );

    // Expansion: the control plane grows every replica, then the nexus (issue 16); twice,
    // the same answer; a smaller size afterwards is OUT_OF_RANGE.
    let expand = |bytes: i64| csi::ControllerExpandVolumeRequest {
        volume_id: vid.clone(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        ..Default::default()
    };
    for _ in 0..2 {
        let r = c
            .controller_expand_volume(expand(96 * mib))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.capacity_bytes, 96 * mib);
        assert!(r.node_expansion_required);
    }
    // Asking for less than it has is success with its size (CSI: the range is satisfied);
    // a limit below its size is OUT_OF_RANGE (volumes never shrink).
    let r = c
        .controller_expand_volume(expand(64 * mib))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.capacity_bytes, 96 * mib);
    let mut shrink = expand(64 * mib);
    shrink.capacity_range.as_mut().unwrap().limit_bytes = 64 * mib;
    assert_eq!(
        code(c.controller_expand_volume(shrink).await).await,
        Code::OutOfRange
    );

    // Snapshots of the published volume: twice, the same; the name on another volume:
    // ALREADY_EXISTS; listed by source volume and by id.
    let sreq = |name: &str, vol: &str| csi::CreateSnapshotRequest {
        source_volume_id: vol.into(),
        name: name.into(),
        ..Default::default()
    };
    let s1 = c
        .create_snapshot(sreq("snap-a", &vid))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    let s2 = c
        .create_snapshot(sreq("snap-a", &vid))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(s1.snapshot_id, s2.snapshot_id);
    assert!(s1.ready_to_use);
    assert_eq!(s1.size_bytes, 96 * mib);
    assert_eq!(s1.source_volume_id, vid);
    assert_eq!(
        code(c.create_snapshot(sreq("snap-a", &vid_b)).await).await,
        Code::AlreadyExists
    );
    let listed = c
        .list_snapshots(csi::ListSnapshotsRequest {
            source_volume_id: vid.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.entries.len(), 1);
    let by_id = c
        .list_snapshots(csi::ListSnapshotsRequest {
            snapshot_id: s1.snapshot_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_id.entries.len(), 1);

    // A volume from the snapshot (twice: the same), its content source shown.
    let mut from = create_req("pvc-from", 96 * mib, &[("replicas", "3")]);
    from.volume_content_source = Some(csi::VolumeContentSource {
        r#type: Some(csi::volume_content_source::Type::Snapshot(
            csi::volume_content_source::SnapshotSource {
                snapshot_id: s1.snapshot_id.clone(),
            },
        )),
    });
    let f1 = c
        .create_volume(from.clone())
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let f2 = c
        .create_volume(from)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(f1.volume_id, f2.volume_id);
    assert!(f1.content_source.is_some());
    // The snapshot is used by two volumes on each node: not deletable yet.
    assert_eq!(
        code(
            c.delete_snapshot(csi::DeleteSnapshotRequest {
                snapshot_id: s1.snapshot_id.clone(),
                secrets: HashMap::new(),
            })
            .await
        )
        .await,
        Code::FailedPrecondition
    );
    c.delete_volume(csi::DeleteVolumeRequest {
        volume_id: f1.volume_id.clone(),
        secrets: HashMap::new(),
    })
    .await
    .unwrap();
    for _ in 0..2 {
        c.delete_snapshot(csi::DeleteSnapshotRequest {
            snapshot_id: s1.snapshot_id.clone(),
            secrets: HashMap::new(),
        })
        .await
        .unwrap();
    }

    // Unpublish twice, delete twice, then it is gone.
    for _ in 0..2 {
        c.controller_unpublish_volume(csi::ControllerUnpublishVolumeRequest {
            volume_id: vid.clone(),
            node_id: "node-2".into(),
            secrets: HashMap::new(),
        })
        .await
        .unwrap();
    }
    for v in [&vid] {
        for _ in 0..2 {
            c.delete_volume(csi::DeleteVolumeRequest {
                volume_id: v.clone(),
                secrets: HashMap::new(),
            })
            .await
            .unwrap();
        }
    }
    assert_eq!(
        code(
            c.controller_get_volume(csi::ControllerGetVolumeRequest { volume_id: vid })
                .await
        )
        .await,
        Code::NotFound
    );
    drop(procs);
}
