//! The target over loopback: discovery, AER, Abort, queue limits, digests errors, and the
//! I/O commands beyond read and write.
#![allow(missing_docs)]

mod common;

use std::time::Duration;

use common::*;
use shoal_bdev::malloc::MallocBdev;
use shoal_nvmf::target::subsystem::{DISCOVERY_NQN, TransportConfig};
use shoal_nvmf::wire::pdu::{CapsuleCmd, PduHeader};
use shoal_nvmf::wire::spec::opcode::{admin, io};
use shoal_nvmf::wire::spec::{SglDescriptor, Sqe, Status};

#[test]
fn discovery_log_lists_the_subsystem() {
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let mut d = TestHost::admin_to(t.addr, DISCOVERY_NQN, false, 0);
    let (c, id) = d.identify(1, 0);
    assert!(c.status().is_success());
    assert_eq!(id[111], 2, "CNTRLTYPE: discovery controller");
    let (c, hdr) = d.log_page(0x70, 1024, 0);
    assert!(c.status().is_success(), "{:?}", c.status());
    let numrec = u64::from_le_bytes(hdr[8..16].try_into().unwrap());
    assert_eq!(numrec, 1);
    let (_, all) = d.log_page(0x70, 2048, 0);
    let e = &all[1024..2048];
    assert_eq!(e[0], 3, "TRTYPE TCP");
    assert_eq!(e[2], 2, "SUBTYPE NVMe subsystem");
    assert_eq!(&e[256..256 + NQN.len()], NQN.as_bytes());
    assert_eq!(&e[512..521], b"127.0.0.1");
}

#[test]
fn aer_reports_a_namespace_added_while_connected() {
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let mut a = TestHost::admin(t.addr, false, 0);
    // Enable namespace attribute notices (AEC bit 8), then park an AER.
    assert!(a.set_feature(0x0B, 1 << 8).status().is_success());
    let cid = a.cid();
    a.submit(Sqe::new(admin::ASYNC_EVENT_REQUEST, cid), &[]);
    let sub = t.target.subsystem(NQN).unwrap();
    let b = MallocBdev::create("Extra", None, 1024, 4096).unwrap();
    assert_eq!(sub.add_namespace(b, None, None, None, None).unwrap(), 2);
    let (c, _) = a.collect(cid);
    assert!(c.status().is_success());
    let dw0 = c.dw0.get();
    assert_eq!(dw0 & 0x7, 2, "event type: notice");
    assert_eq!((dw0 >> 16) & 0xFF, 0x04, "log page: changed namespace list");
    let (_, log) = a.log_page(0x04, 4096, 0);
    assert_eq!(&log[..8], &[2, 0, 0, 0, 0, 0, 0, 0], "namespace 2 changed");
    let (_, list) = a.identify(2, 0);
    assert_eq!(&list[..8], &[1, 0, 0, 0, 2, 0, 0, 0]);
}

#[test]
fn abort_of_a_parked_aer_and_aer_limit() {
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let mut a = TestHost::admin(t.addr, false, 0);
    let mut parked = Vec::new();
    for _ in 0..4 {
        let cid = a.cid();
        a.submit(Sqe::new(admin::ASYNC_EVENT_REQUEST, cid), &[]);
        parked.push(cid);
    }
    // A fifth exceeds AERL + 1 = 4 outstanding.
    let cid = a.cid();
    let (c, _) = a.command(Sqe::new(admin::ASYNC_EVENT_REQUEST, cid), &[]);
    assert!(
        same(c.status(), Status::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED),
        "{:?}",
        c.status()
    );
    // Abort the first parked AER: it completes with Abort Requested, the Abort with dw0 = 0.
    let cid = a.cid();
    let mut abort = Sqe::new(admin::ABORT, cid);
    abort.cdw10.set(u32::from(parked[0]) << 16);
    a.submit(abort, &[]);
    let mut seen_abort = false;
    let mut seen_victim = false;
    while !(seen_abort && seen_victim) {
        let (h, _) = a.recv().unwrap();
        let PduHeader::CapsuleResp(r) = h else {
            panic!("unexpected {h:?}")
        };
        if r.cqe.cid() == cid {
            assert!(r.cqe.status().is_success());
            assert_eq!(r.cqe.dw0.get() & 1, 0, "the command was aborted");
            seen_abort = true;
        } else {
            assert_eq!(r.cqe.cid(), parked[0]);
            assert!(same(r.cqe.status(), Status::ABORT_REQUESTED));
            seen_victim = true;
        }
    }
}

#[test]
fn compare_write_zeroes_and_deallocate() {
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let mut a = TestHost::admin(t.addr, false, 0);
    assert!(a.set_num_queues(1).status().is_success());
    let mut q = TestHost::io_queue(t.addr, a.cntlid, 1, false);
    let data = pattern(8192, 9);
    assert!(q.write(1, 10, &data, 4096, 8192).status().is_success());
    // Compare equal, then different.
    let sqe = q.rw_sqe(io::COMPARE, 1, 10, 2, 8192, false);
    let cid = sqe.cid();
    q.submit(sqe, &[]);
    let c = answer_r2t(&mut q, cid, &data);
    assert!(c.status().is_success(), "compare equal: {:?}", c.status());
    let mut other = data.clone();
    other[5000] ^= 1;
    let sqe = q.rw_sqe(io::COMPARE, 1, 10, 2, 8192, false);
    let cid = sqe.cid();
    q.submit(sqe, &[]);
    let c = answer_r2t(&mut q, cid, &other);
    assert!(
        same(c.status(), Status::COMPARE_FAILURE),
        "{:?}",
        c.status()
    );
    // Write Zeroes over the first block.
    let mut wz = q.rw_sqe(io::WRITE_ZEROES, 1, 10, 1, 0, true);
    wz.dptr = SglDescriptor::null();
    assert!(q.command(wz, &[]).0.status().is_success());
    let (_, back) = q.read(1, 10, 2, 4096);
    assert!(back[..4096].iter().all(|&b| b == 0));
    assert_eq!(&back[4096..], &data[4096..]);
    // Deallocate the second block with one in-capsule range.
    let cid = q.cid();
    let mut dsm = Sqe::new(io::DATASET_MANAGEMENT, cid);
    dsm.nsid.set(1);
    dsm.cdw11.set(1 << 2);
    dsm.dptr = SglDescriptor::in_capsule(16);
    let mut range = [0u8; 16];
    range[4..8].copy_from_slice(&1u32.to_le_bytes());
    range[8..16].copy_from_slice(&11u64.to_le_bytes());
    assert!(q.command(dsm, &range).0.status().is_success());
    let (_, back) = q.read(1, 10, 2, 4096);
    assert!(back.iter().all(|&b| b == 0));
}

fn answer_r2t(q: &mut TestHost, cid: u16, data: &[u8]) -> shoal_nvmf::wire::spec::Cqe {
    loop {
        let (h, _) = q.recv().unwrap();
        match h {
            PduHeader::R2t(r) => {
                let dh = shoal_nvmf::wire::pdu::DataHeader {
                    cccid: cid,
                    ttag: r.ttag,
                    datao: r.r2to,
                    datal: r.r2tl,
                    last_pdu: true,
                    success: false,
                };
                let (o, l) = (r.r2to as usize, r.r2tl as usize);
                q.send_pdu(PduHeader::H2CData(dh), &data[o..o + l]);
            }
            PduHeader::CapsuleResp(r) => return r.cqe,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn bad_data_digest_fails_only_the_command() {
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let mut a = TestHost::admin(t.addr, true, 0);
    assert!(a.set_num_queues(1).status().is_success());
    let mut q = TestHost::io_queue(t.addr, a.cntlid, 1, true);
    let sqe = q.rw_sqe(io::WRITE, 1, 0, 1, 4096, true);
    let cid = sqe.cid();
    // Encode the capsule with a good digest, then corrupt the digest's last byte.
    let mut out = vec![0u8; 256];
    let opts = shoal_nvmf::wire::pdu::FrameOptions {
        header_digest: true,
        data_digest: true,
        pda: 0,
    };
    let e = PduHeader::CapsuleCmd(CapsuleCmd { sqe })
        .encode_header(4096, &opts, &mut out)
        .unwrap();
    out.truncate(e.header_len);
    let data = pattern(4096, 1);
    out.extend_from_slice(&data);
    out.extend_from_slice(&(crc32c::crc32c(&data) ^ 1).to_le_bytes());
    q.send_raw(&out);
    let (c, _) = q.collect(cid);
    assert!(
        same(c.status(), Status::TRANSIENT_TRANSPORT_ERROR),
        "{:?}",
        c.status()
    );
    let (c, _) = q.read(1, 0, 1, 4096);
    assert!(c.status().is_success(), "the queue carries on");
}

#[test]
fn more_commands_than_the_queue_holds_get_a_retryable_status() {
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let mut a = TestHost::admin(t.addr, false, 0);
    assert!(a.set_num_queues(1).status().is_success());
    let mut q = TestHost::connect(t.addr);
    q.ic(false, false);
    q.cntlid = a.cntlid;
    // SQSIZE 3 (0's based): four slots.
    let c = q.fabrics_connect(1, 3, 0);
    assert!(c.status().is_success());
    // Five writes waiting for R2T data occupy every slot and one more.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let sqe = q.rw_sqe(io::WRITE, 1, 0, 4, 16384, false);
        q.submit(sqe, &[]);
    }
    q.sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut r2ts = 0;
    while r2ts + statuses.len() < 5 {
        match q.recv().unwrap().0 {
            PduHeader::R2t(_) => r2ts += 1,
            PduHeader::CapsuleResp(r) => statuses.push(r.cqe.status()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(r2ts, 4);
    assert_eq!(statuses.len(), 1);
    assert!(same(statuses[0], Status::TRANSIENT_TRANSPORT_ERROR));
    assert!(!statuses[0].dnr, "the host may retry");
}

/// NVMe Base 2.0, section 3.5.1: commands other than fabrics ones need CC.EN = 1 and
/// CSTS.RDY = 1. (A reset, CC.EN 1 -> 0, is in `target_teardown.rs`.)
#[test]
fn commands_wait_for_the_controller_to_be_ready() {
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let mut h = TestHost::connect(t.addr);
    h.ic(false, false);
    assert!(h.fabrics_connect(0, 31, 0).status().is_success());
    let (c, _) = h.identify(1, 0);
    assert!(
        same(c.status(), Status::COMMAND_SEQUENCE_ERROR),
        "before CC.EN = 1: {:?}",
        c.status()
    );
    assert_eq!(h.prop_get(0x1c, false) & 1, 0, "CSTS.RDY before enabling");
    assert!(
        h.prop_set(0x14, 1 | (6 << 16) | (4 << 20))
            .status()
            .is_success()
    );
    assert_eq!(h.prop_get(0x1c, false) & 1, 1, "CSTS.RDY after enabling");
    assert!(h.identify(1, 0).0.status().is_success());
}
