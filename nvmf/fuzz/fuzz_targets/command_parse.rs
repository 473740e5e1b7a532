//! Arbitrary SQEs through the command parsers and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_nvmf::wire::command::{
    AdminCommand, Command, DataTransfer, FabricsCommand, IoCommand, QueueKind, check_fabrics_sqe,
    data_transfer, lba_range,
};
use shoal_nvmf::wire::spec::fabrics::ConnectData;
use shoal_nvmf::wire::spec::identify::ns_id_descriptors;
use shoal_nvmf::wire::spec::{Sqe, Status};

fuzz_target!(|data: &[u8]| {
    let Some(sqe) = Sqe::from_prefix(data) else {
        return;
    };
    let rest = &data[64..];
    let mut word = [0u8; 8];
    for (dst, src) in word.iter_mut().zip(rest) {
        *dst = *src;
    }
    let ns_blocks = u64::from_le_bytes(word);
    let in_capsule = usize::from(rest.get(8).copied().unwrap_or(0)) * 64;

    let _ = Command::parse(&sqe, QueueKind::Admin);
    let _ = AdminCommand::parse(&sqe).log_page_len();
    let _ = FabricsCommand::parse(&sqe);
    if let Command::Io(io) = Command::parse(&sqe, QueueKind::Io) {
        if let Some((slba, nlb)) = io.lba_range() {
            assert!(nlb >= 1 && nlb <= 65536);
            let fits = u128::from(slba) + u128::from(nlb) <= u128::from(ns_blocks);
            assert_eq!(lba_range(slba, nlb, ns_blocks).is_ok(), fits);
        }
        if let IoCommand::DatasetManagement { nr, .. } = io {
            assert!((1..=256).contains(&nr));
        }
    }
    let _ = check_fabrics_sqe(&sqe);
    match data_transfer(&sqe, in_capsule) {
        Ok(DataTransfer::InCapsule { len }) => {
            assert_eq!(usize::try_from(len).ok(), Some(in_capsule))
        }
        Ok(DataTransfer::None | DataTransfer::Transport { .. }) => assert_eq!(in_capsule, 0),
        Err(status) => assert!(status.dnr && !status.is_success()),
    }
    if let Some(connect) = ConnectData::from_prefix(rest) {
        let _ = (connect.subnqn(), connect.hostnqn());
    }
    let _ = ns_id_descriptors(rest).count();
    let field = u16::from_le_bytes([data[0], data[1]]);
    let status = Status::from_field(field);
    // CRD (bits 13:12) is not modelled; everything else round-trips.
    assert_eq!(status.to_field(field & 1 != 0), field & !0x3000);
});
