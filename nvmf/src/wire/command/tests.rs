use proptest::prelude::*;
use zerocopy::little_endian::{U32, U64};

use super::*;
use crate::wire::spec::features::select;
use crate::wire::spec::sqe::SglDescriptor;

fn sqe(opcode: Opcode) -> Sqe {
    Sqe::new(opcode, 0x42)
}

#[test]
fn identify() {
    let mut s = sqe(admin::IDENTIFY);
    s.nsid = U32::new(1);
    s.cdw10 = U32::new(0x0005_0001);
    s.cdw11 = U32::new(0x0200_0007);
    assert_eq!(
        AdminCommand::parse(&s),
        AdminCommand::Identify {
            cns: Cns::CONTROLLER,
            cntid: 5,
            nsid: 1,
            cns_specific_id: 7,
            csi: 2
        }
    );
}

#[test]
fn get_log_page_widening() {
    let mut s = sqe(admin::GET_LOG_PAGE);
    // LID 02h, LSP 7Fh, RAE, NUMDL 0xFFFF; NUMDU 0xFFFF, LSI 0x1234.
    s.cdw10 = U32::new(0xFFFF_FF02);
    s.cdw11 = U32::new(0x1234_FFFF);
    s.cdw12 = U32::new(0x10);
    s.cdw13 = U32::new(0x1);
    s.cdw14 = U32::new(0x0180_0000);
    let cmd = AdminCommand::parse(&s);
    assert_eq!(
        cmd,
        AdminCommand::GetLogPage {
            lid: LogPageId::SMART_HEALTH,
            nsid: 0,
            num_dwords: 1 << 32,
            offset: 0x1_0000_0010,
            lsp: 0x7F,
            lsi: 0x1234,
            rae: true,
            offset_is_index: true,
            csi: 1,
        }
    );
    assert_eq!(cmd.log_page_len(), Some(1 << 34));
    // NUMD 0 means one dword.
    s.cdw10 = U32::new(0x0000_0070);
    s.cdw11 = U32::new(0);
    assert_eq!(AdminCommand::parse(&s).log_page_len(), Some(4));
}

#[test]
fn features_abort_misc() {
    let mut s = sqe(admin::GET_FEATURES);
    s.cdw10 = U32::new(0x0000_0307);
    s.cdw11 = U32::new(9);
    assert_eq!(
        AdminCommand::parse(&s),
        AdminCommand::GetFeatures {
            fid: FeatureId::NUMBER_OF_QUEUES,
            sel: select::SUPPORTED_CAPABILITIES,
            nsid: 0,
            cdw11: 9
        }
    );
    let mut s = sqe(admin::SET_FEATURES);
    s.cdw10 = U32::new(0x8000_000F);
    s.cdw11 = U32::new(120_000);
    assert_eq!(
        AdminCommand::parse(&s),
        AdminCommand::SetFeatures {
            fid: FeatureId::KEEP_ALIVE_TIMER,
            save: true,
            nsid: 0,
            cdw11: 120_000
        }
    );
    let mut s = sqe(admin::ABORT);
    s.cdw10 = U32::new(0x0017_0003);
    assert_eq!(
        AdminCommand::parse(&s),
        AdminCommand::Abort { sqid: 3, cid: 0x17 }
    );
    assert_eq!(
        AdminCommand::parse(&sqe(admin::KEEP_ALIVE)),
        AdminCommand::KeepAlive
    );
    assert_eq!(
        AdminCommand::parse(&sqe(admin::ASYNC_EVENT_REQUEST)),
        AdminCommand::AsyncEventRequest
    );
    assert_eq!(
        AdminCommand::parse(&sqe(Opcode(0xC5))),
        AdminCommand::Unknown(Opcode(0xC5))
    );
    // Admin opcode 01h (Create I/O SQ) is not I/O Write on the admin queue.
    assert_eq!(
        AdminCommand::parse(&sqe(io::WRITE)),
        AdminCommand::Unknown(admin::CREATE_IO_SQ)
    );
}

#[test]
fn io_read_write_nlb_is_widened() {
    let mut s = sqe(io::READ);
    s.nsid = U32::new(1);
    s.cdw10 = U32::new(0xFFFF_FFFE);
    s.cdw11 = U32::new(0xFFFF_FFFF);
    s.cdw12 = U32::new(0x4000_FFFF);
    let cmd = IoCommand::parse(&s);
    assert_eq!(
        cmd,
        IoCommand::Read {
            slba: u64::MAX - 1,
            nlb: 65536,
            fua: true
        }
    );
    assert_eq!(cmd.lba_range(), Some((u64::MAX - 1, 65536)));
    s.opcode = io::WRITE.0;
    s.cdw12 = U32::new(0);
    assert_eq!(
        IoCommand::parse(&s),
        IoCommand::Write {
            slba: u64::MAX - 1,
            nlb: 1,
            fua: false
        }
    );
    s.opcode = io::WRITE_ZEROES.0;
    s.cdw12 = U32::new(1 << 25 | 7);
    assert_eq!(
        IoCommand::parse(&s),
        IoCommand::WriteZeroes {
            slba: u64::MAX - 1,
            nlb: 8,
            deac: true,
            fua: false
        }
    );
    s.opcode = io::COMPARE.0;
    assert_eq!(
        IoCommand::parse(&s),
        IoCommand::Compare {
            slba: u64::MAX - 1,
            nlb: 8
        }
    );
    assert_eq!(IoCommand::parse(&sqe(io::FLUSH)), IoCommand::Flush);
    assert_eq!(IoCommand::parse(&sqe(io::FLUSH)).lba_range(), None);
    assert_eq!(
        IoCommand::parse(&sqe(Opcode(0x7E))),
        IoCommand::Unknown(Opcode(0x7E))
    );
}

#[test]
fn dsm_nr_is_widened() {
    let mut s = sqe(io::DATASET_MANAGEMENT);
    s.cdw10 = U32::new(0xFF);
    s.cdw11 = U32::new(0b100);
    assert_eq!(
        IoCommand::parse(&s),
        IoCommand::DatasetManagement { nr: 256, ad: true }
    );
}

#[test]
fn fabrics_commands() {
    let mut s = Sqe::new_fabrics(FabricsType::CONNECT, 1);
    s.cdw10 = U32::new(0x0003_0000);
    s.cdw11 = U32::new(0x0004_007F);
    s.cdw12 = U32::new(15_000);
    let connect = FabricsCommand::Connect {
        recfmt: 0,
        qid: 3,
        sqsize: 127,
        cattr: 4,
        kato: 15_000,
    };
    assert_eq!(FabricsCommand::parse(&s), connect);
    assert_eq!(
        Command::parse(&s, QueueKind::Io),
        Command::Io(IoCommand::Fabrics(connect))
    );
    assert_eq!(
        Command::parse(&s, QueueKind::Admin),
        Command::Admin(AdminCommand::Fabrics(connect))
    );
    let mut s = Sqe::new_fabrics(FabricsType::PROPERTY_GET, 1);
    s.cdw10 = U32::new(1);
    s.cdw11 = U32::new(crate::wire::spec::property::CAP);
    assert_eq!(
        FabricsCommand::parse(&s),
        FabricsCommand::PropertyGet {
            offset: 0,
            size8: true
        }
    );
    let mut s = Sqe::new_fabrics(FabricsType::PROPERTY_SET, 1);
    s.cdw11 = U32::new(crate::wire::spec::property::CC);
    s.cdw12 = U32::new(0x0046_0001);
    s.cdw13 = U32::new(0x1);
    assert_eq!(
        FabricsCommand::parse(&s),
        FabricsCommand::PropertySet {
            offset: 0x14,
            size8: false,
            value: 0x1_0046_0001
        }
    );
    let s = Sqe::new_fabrics(FabricsType::DISCONNECT, 1);
    assert_eq!(
        FabricsCommand::parse(&s),
        FabricsCommand::Disconnect { recfmt: 0 }
    );
    let s = Sqe::new_fabrics(FabricsType::AUTHENTICATION_SEND, 1);
    assert_eq!(
        FabricsCommand::parse(&s),
        FabricsCommand::Unknown(FabricsType::AUTHENTICATION_SEND)
    );
}

#[test]
fn lba_range_checks() {
    assert_eq!(lba_range(0, 8, 8), Ok(()));
    assert_eq!(lba_range(7, 1, 8), Ok(()));
    assert_eq!(lba_range(7, 2, 8), Err(Status::LBA_OUT_OF_RANGE.with_dnr()));
    assert_eq!(lba_range(8, 1, 8), Err(Status::LBA_OUT_OF_RANGE.with_dnr()));
    assert_eq!(
        lba_range(u64::MAX, 1, u64::MAX),
        Err(Status::LBA_OUT_OF_RANGE.with_dnr())
    );
    assert_eq!(
        lba_range(u64::MAX, 65536, u64::MAX),
        Err(Status::LBA_OUT_OF_RANGE.with_dnr())
    );
    assert_eq!(lba_range(u64::MAX - 65536, 65536, u64::MAX), Ok(()));
}

#[test]
fn fabrics_sqe_checks() {
    let mut s = sqe(io::READ);
    assert_eq!(check_fabrics_sqe(&s), Ok(()));
    s.set_psdt(psdt::PRP);
    assert_eq!(check_fabrics_sqe(&s), Err(Status::INVALID_FIELD.with_dnr()));
    s.set_psdt(psdt::SGL_MPTR_SEGMENT);
    assert!(check_fabrics_sqe(&s).is_err());
    let mut s = sqe(io::READ);
    s.flags |= fuse::FIRST;
    assert_eq!(check_fabrics_sqe(&s), Err(Status::INVALID_FIELD.with_dnr()));
}

#[test]
fn sgl_transport_and_null() {
    let mut s = sqe(io::READ);
    s.dptr = SglDescriptor::transport(4096);
    assert_eq!(
        data_transfer(&s, 0),
        Ok(DataTransfer::Transport { len: 4096 })
    );
    // Data arriving in the capsule that the descriptor does not describe.
    assert_eq!(
        data_transfer(&s, 16),
        Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr())
    );
    s.dptr = SglDescriptor::null();
    assert_eq!(data_transfer(&s, 0), Ok(DataTransfer::None));
    s.dptr = SglDescriptor::new(sgl_type::DATA_BLOCK, sgl_subtype::ADDRESS, 0, 0);
    assert_eq!(data_transfer(&s, 0), Ok(DataTransfer::None));
}

#[test]
fn sgl_in_capsule() {
    let mut s = sqe(io::WRITE);
    s.dptr = SglDescriptor::in_capsule(512);
    assert_eq!(
        data_transfer(&s, 512),
        Ok(DataTransfer::InCapsule { len: 512 })
    );
    assert_eq!(
        data_transfer(&s, 511),
        Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr())
    );
    s.dptr.address = U64::new(16);
    assert_eq!(
        data_transfer(&s, 512),
        Err(Status::INVALID_SGL_OFFSET.with_dnr())
    );
    // A read cannot carry in-capsule data.
    let mut r = sqe(io::READ);
    r.dptr = SglDescriptor::in_capsule(512);
    assert_eq!(
        data_transfer(&r, 512),
        Err(Status::INVALID_FIELD.with_dnr())
    );
    // Connect (FCTYPE 01h: host to controller) carries its 1024 bytes in the capsule;
    // Property Get (04h) cannot.
    let mut c = Sqe::new_fabrics(FabricsType::CONNECT, 1);
    c.dptr = SglDescriptor::in_capsule(1024);
    assert_eq!(
        data_transfer(&c, 1024),
        Ok(DataTransfer::InCapsule { len: 1024 })
    );
    c.set_fctype(FabricsType::PROPERTY_GET);
    assert_eq!(
        data_transfer(&c, 1024),
        Err(Status::INVALID_FIELD.with_dnr())
    );
}

#[test]
fn sgl_invalid_types() {
    let mut s = sqe(io::WRITE);
    for (t, st) in [
        (sgl_type::DATA_BLOCK, sgl_subtype::ADDRESS),
        (sgl_type::KEYED_DATA_BLOCK, 0),
        (sgl_type::SEGMENT, 0),
        (sgl_type::LAST_SEGMENT, 0),
        (sgl_type::BIT_BUCKET, 0),
        (sgl_type::TRANSPORT_DATA_BLOCK, sgl_subtype::OFFSET),
        (sgl_type::VENDOR_SPECIFIC, 0),
    ] {
        s.dptr = SglDescriptor::new(t, st, 0x1000, 512);
        assert_eq!(
            data_transfer(&s, 0),
            Err(Status::SGL_DESCRIPTOR_TYPE_INVALID.with_dnr()),
            "type {t:#x} subtype {st:#x}"
        );
    }
}

proptest! {
    /// Parsing any 64 bytes on either queue never panics, and the LBA check never
    /// overflows.
    #[test]
    fn parse_anything(
        bytes in proptest::collection::vec(any::<u8>(), 64),
        ns_blocks: u64,
        icd in 0usize..9000,
    ) {
        let mut raw = [0u8; 64];
        raw.copy_from_slice(&bytes);
        let s = Sqe::from_array(&raw);
        let _ = Command::parse(&s, QueueKind::Admin);
        if let Command::Io(cmd) = Command::parse(&s, QueueKind::Io)
            && let Some((slba, nlb)) = cmd.lba_range()
        {
            let ok = lba_range(slba, nlb, ns_blocks).is_ok();
            prop_assert_eq!(ok, u128::from(slba) + u128::from(nlb) <= u128::from(ns_blocks));
        }
        let _ = check_fabrics_sqe(&s);
        if let Ok(DataTransfer::InCapsule { len }) = data_transfer(&s, icd) {
            prop_assert_eq!(usize::try_from(len).unwrap(), icd);
        }
    }
}
