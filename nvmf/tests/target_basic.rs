//! The target over loopback: connect, identify, I/O with in-capsule data and R2T, digests.
#![allow(missing_docs)]

mod common;

use common::*;
use shoal_nvmf::target::subsystem::TransportConfig;
use shoal_nvmf::wire::pdu::{DataHeader, PduHeader};
use shoal_nvmf::wire::spec::Status;

#[test]
fn connect_identify_and_io() {
    let t = TestTarget::start(&[4096, 512], TransportConfig::default());
    let mut admin = TestHost::admin(t.addr, false, 0);
    let (cqe, id) = admin.identify(1, 0);
    assert!(cqe.status().is_success());
    assert_eq!(id.len(), 4096);
    assert_eq!(
        &id[768..768 + NQN.len()],
        NQN.as_bytes(),
        "subnqn in Identify Controller"
    );
    assert_eq!(id[77], 5, "MDTS 128 KiB in 4 KiB pages");
    let (_, list) = admin.identify(2, 0);
    assert_eq!(
        &list[..8],
        &[1, 0, 0, 0, 2, 0, 0, 0],
        "active namespaces 1 and 2"
    );
    let (_, ns) = admin.identify(0, 2);
    let lbads = ns[128 + 2];
    assert_eq!(lbads, 9, "namespace 2 has 512-byte blocks");
    assert!(admin.set_num_queues(2).status().is_success());

    let mut q = TestHost::io_queue(t.addr, admin.cntlid, 1, false);
    for (nsid, bs) in [(1u32, 4096u32), (2, 512)] {
        // In-capsule write, read back.
        let small = pattern(4096, nsid.to_le_bytes()[0]);
        assert!(q.write(nsid, 8, &small, bs, 4096).status().is_success());
        let (c, back) = q.read(nsid, 8, 4096 / bs, bs);
        assert!(c.status().is_success());
        assert_eq!(back, small);
        // A 128 KiB write through one R2T answered with several H2CData PDUs.
        let big = pattern(128 << 10, 7);
        assert!(q.write(nsid, 64, &big, bs, 16 << 10).status().is_success());
        let (c, back) = q.read(nsid, 64, (128 << 10) / bs, bs);
        assert!(c.status().is_success());
        assert!(back == big, "128 KiB read back through namespace {nsid}");
    }
}

#[test]
fn digests_on_both_queues() {
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let mut admin = TestHost::admin(t.addr, true, 0);
    assert!(admin.set_num_queues(1).status().is_success());
    let mut q = TestHost::io_queue(t.addr, admin.cntlid, 1, true);
    let data = pattern(64 << 10, 3);
    assert!(q.write(1, 0, &data, 4096, 8192).status().is_success());
    let (c, back) = q.read(1, 0, 16, 4096);
    assert!(c.status().is_success());
    assert!(back == data);
}

#[test]
fn bad_commands_get_statuses_and_the_queue_carries_on() {
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let mut admin = TestHost::admin(t.addr, false, 0);
    assert!(admin.set_num_queues(1).status().is_success());
    let mut q = TestHost::io_queue(t.addr, admin.cntlid, 1, false);
    // LBA beyond the end, and one whose end overflows 64 bits.
    let blocks = (16u64 << 20) / 4096;
    let (c, _) = q.read(1, blocks, 1, 4096);
    assert!(
        same(c.status(), Status::LBA_OUT_OF_RANGE),
        "{:?}",
        c.status()
    );
    let (c, _) = q.read(1, u64::MAX, 2, 4096);
    assert!(
        same(c.status(), Status::LBA_OUT_OF_RANGE),
        "{:?}",
        c.status()
    );
    // A namespace that does not exist.
    let (c, _) = q.read(9, 0, 1, 4096);
    assert!(
        same(c.status(), Status::INVALID_NAMESPACE),
        "{:?}",
        c.status()
    );
    // An opcode the controller does not know.
    let cid = q.cid();
    let sqe = shoal_nvmf::wire::spec::Sqe::new(shoal_nvmf::wire::spec::Opcode(0x7e), cid);
    let (c, _) = q.command(sqe, &[]);
    assert!(same(c.status(), Status::INVALID_OPCODE), "{:?}", c.status());
    // Still usable.
    let (c, _) = q.read(1, 0, 1, 4096);
    assert!(c.status().is_success());
}

#[test]
fn data_without_r2t_ends_only_that_connection() {
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let mut admin = TestHost::admin(t.addr, false, 0);
    assert!(admin.set_num_queues(2).status().is_success());
    let mut bad = TestHost::io_queue(t.addr, admin.cntlid, 1, false);
    let mut good = TestHost::io_queue(t.addr, admin.cntlid, 2, false);
    let dh = DataHeader {
        cccid: 5,
        ttag: 3,
        datao: 0,
        datal: 512,
        last_pdu: true,
        success: false,
    };
    bad.send_pdu(PduHeader::H2CData(dh), &[0u8; 512]);
    match bad.recv() {
        Some((PduHeader::C2HTermReq(_), _)) => {}
        other => panic!("expected C2HTermReq, got {other:?}"),
    }
    assert!(
        bad.recv().is_none(),
        "the connection is closed after the C2HTermReq"
    );
    let (c, _) = good.read(1, 0, 1, 4096);
    assert!(c.status().is_success(), "the other queue carries on");
}

#[test]
fn garbage_and_oversized_pdus_are_fatal_without_allocation() {
    let t = TestTarget::start(&[4096], TransportConfig::default());
    // Before ICReq: a capsule is a sequence error.
    let mut h = TestHost::connect(t.addr);
    h.send_raw(&[0x04, 0, 72, 0, 72, 0, 0, 0]);
    h.send_raw(&[0u8; 64]);
    assert!(matches!(h.recv(), Some((PduHeader::C2HTermReq(_), _))));
    assert!(h.recv().is_none());
    // A PDU claiming 4 GiB.
    let mut h = TestHost::connect(t.addr);
    h.ic(false, false);
    h.send_raw(&[0x04, 0, 72, 72, 0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(h.recv(), Some((PduHeader::C2HTermReq(_), _))));
    // A second ICReq.
    let mut h = TestHost::connect(t.addr);
    h.ic(false, false);
    let req = shoal_nvmf::wire::pdu::IcReq {
        pfv: 0,
        hpda: 0,
        digests: Default::default(),
        maxr2t: 0,
    };
    h.send_pdu(PduHeader::IcReq(req), &[]);
    assert!(matches!(h.recv(), Some((PduHeader::C2HTermReq(_), _))));
    // The target still serves a well-behaved host.
    let mut admin = TestHost::admin(t.addr, false, 0);
    assert!(admin.identify(1, 0).0.status().is_success());
}

#[test]
fn keep_alive_timeout_drops_the_controller_and_its_queues() {
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let mut admin = TestHost::admin(t.addr, false, 500);
    assert!(admin.set_num_queues(1).status().is_success());
    let mut q = TestHost::io_queue(t.addr, admin.cntlid, 1, false);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        admin.recv().is_none(),
        "admin queue closed after KATO without keep-alive"
    );
    assert!(q.recv().is_none(), "I/O queue closed with its controller");
}
