//! Unit tests of the request checks.

use super::*;
use crate::csi::Topology as CsiTopology;
use crate::csi::volume_capability::{AccessMode, BlockVolume, MountVolume};
use crate::csi::volume_content_source::SnapshotSource;
use tonic::Code;

fn range(req: i64, lim: i64) -> CapacityRange {
    CapacityRange {
        required_bytes: req,
        limit_bytes: lim,
    }
}

pub(crate) fn mount_cap(fs: &str, mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            mount_flags: vec![],
            volume_mount_group: String::new(),
        })),
    }
}

fn block_cap(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Block(BlockVolume {})),
    }
}

#[test]
fn capacity_ranges() {
    assert_eq!(size_for(None).unwrap(), DEFAULT_SIZE);
    assert_eq!(size_for(Some(&range(0, 0))).unwrap(), DEFAULT_SIZE);
    assert_eq!(size_for(Some(&range(1, 0))).unwrap(), SIZE_ALIGN);
    assert_eq!(size_for(Some(&range(5 << 20, 6 << 20))).unwrap(), 5 << 20);
    // Only a limit: the default size if it fits, else the limit (aligned).
    assert_eq!(size_for(Some(&range(0, 64 << 20))).unwrap(), 64 << 20);
    assert_eq!(
        size_for(Some(&range(-1, 0))).unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        size_for(Some(&range(0, -1))).unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        size_for(Some(&range(10 << 20, 5 << 20)))
            .unwrap_err()
            .code(),
        Code::OutOfRange
    );
    // Rounding up past the limit.
    let e = size_for(Some(&range((1 << 20) + 1, (1 << 20) + 100))).unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{}", e.message());
    assert_eq!(
        size_for(Some(&range(i64::MAX, 0))).unwrap_err().code(),
        Code::OutOfRange
    );
    assert!(fits(5 << 20, Some(&range(5 << 20, 0))));
    assert!(!fits(5 << 20, Some(&range(6 << 20, 0))));
    assert!(!fits(5 << 20, Some(&range(1, 4 << 20))));
}

#[test]
fn capabilities_supported_and_not() {
    assert!(unsupported(&mount_cap("", Mode::SingleNodeWriter)).is_none());
    assert!(unsupported(&mount_cap("xfs", Mode::SingleNodeReaderOnly)).is_none());
    assert!(unsupported(&block_cap(Mode::SingleNodeMultiWriter)).is_none());
    assert!(
        unsupported(&mount_cap("btrfs", Mode::SingleNodeWriter))
            .unwrap()
            .contains("btrfs")
    );
    assert!(
        unsupported(&block_cap(Mode::MultiNodeMultiWriter))
            .unwrap()
            .contains("MULTI_NODE")
    );
    assert!(unsupported(&mount_cap("", Mode::Unknown)).is_some());
    let mut c = mount_cap("", Mode::SingleNodeWriter);
    c.access_type = None;
    assert!(unsupported(&c).is_some());
    c = mount_cap("", Mode::SingleNodeWriter);
    c.access_mode = None;
    assert!(unsupported(&c).is_some());
    // An access mode number from a newer spec is data, not a panic.
    c = mount_cap("", Mode::SingleNodeWriter);
    c.access_mode = Some(AccessMode { mode: 999 });
    assert!(unsupported(&c).is_some());
    assert_eq!(capabilities(&[]).unwrap_err().code(), Code::InvalidArgument);
    let bad = [
        mount_cap("", Mode::SingleNodeWriter),
        block_cap(Mode::MultiNodeReaderOnly),
    ];
    assert_eq!(
        capabilities(&bad).unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(capability(None).unwrap_err().code(), Code::InvalidArgument);
}

#[test]
fn storage_class_parameters() {
    let p = |kv: &[(&str, &str)]| {
        params(
            &kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    };
    assert_eq!(
        p(&[]).unwrap(),
        Params {
            replicas: 3,
            thin: false,
            fs_type: None
        }
    );
    assert_eq!(
        p(&[("replicas", "2"), ("thin", "true"), ("fsType", "xfs")]).unwrap(),
        Params {
            replicas: 2,
            thin: true,
            fs_type: Some("xfs".into())
        }
    );
    assert!(p(&[("csi.storage.k8s.io/pvc/name", "x")]).is_ok());
    for bad in [
        ("replicas", "0"),
        ("replicas", "-1"),
        ("replicas", "17"),
        ("replicas", "three"),
        ("thin", "yes"),
        ("fsType", "ntfs"),
        ("replica", "3"),
    ] {
        let e = p(&[bad]).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}");
        assert!(e.message().contains(bad.0), "{}", e.message());
    }
}

#[test]
fn topology_requirements() {
    let term = |kv: &[(&str, &str)]| CsiTopology {
        segments: kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    assert_eq!(topology(None).unwrap(), None);
    let req = TopologyRequirement {
        requisite: vec![
            term(&[(ZONE_KEY, "b")]),
            term(&[(ZONE_KEY, "a")]),
            term(&[(ZONE_KEY, "a")]),
        ],
        preferred: vec![term(&[(ZONE_KEY, "a")])],
    };
    assert_eq!(
        topology(Some(&req)).unwrap(),
        Some(Topology {
            zones: Some(vec!["a".into(), "b".into()]),
            nodes: None
        })
    );
    let any = TopologyRequirement {
        requisite: vec![term(&[(ZONE_KEY, "a")]), term(&[])],
        preferred: vec![],
    };
    assert_eq!(topology(Some(&any)).unwrap(), None);
    let bad = TopologyRequirement {
        requisite: vec![term(&[("rack", "1")])],
        preferred: vec![],
    };
    assert_eq!(
        topology(Some(&bad)).unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[test]
fn content_sources() {
    assert_eq!(source(None).unwrap(), None);
    let id = "0b5c7e1e-6b1a-4a8e-9d59-2f5f3b0f6f11";
    let snap = VolumeContentSource {
        r#type: Some(SourceType::Snapshot(SnapshotSource {
            snapshot_id: id.to_uppercase(),
        })),
    };
    assert_eq!(
        source(Some(&snap)).unwrap().unwrap().snapshot_id.as_deref(),
        Some(id)
    );
    let bad = VolumeContentSource {
        r#type: Some(SourceType::Snapshot(SnapshotSource {
            snapshot_id: "../nodes".into(),
        })),
    };
    assert_eq!(source(Some(&bad)).unwrap_err().code(), Code::NotFound);
    let none = VolumeContentSource { r#type: None };
    assert_eq!(
        source(Some(&none)).unwrap_err().code(),
        Code::InvalidArgument
    );
}
