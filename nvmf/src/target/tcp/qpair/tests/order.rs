//! Every PDU type in and out of order; command sequencing, CIDs, queue limits.

use super::*;
use crate::target::tcp::qpair::Phase;
use crate::wire::pdu::term::Fes;
use crate::wire::pdu::{CapsuleCmd, CapsuleResp, DataHeader, IcResp, R2t, TermReq};
use crate::wire::spec::opcode::io;

/// PDUs only a controller may send: a host sending one is a fatal error whatever the state.
fn controller_pdus() -> Vec<PduHeader> {
    let dh = DataHeader {
        cccid: 1,
        ttag: 0,
        datao: 0,
        datal: 0,
        last_pdu: true,
        success: false,
    };
    vec![
        PduHeader::IcResp(IcResp {
            pfv: 0,
            cpda: 0,
            digests: Default::default(),
            maxh2cdata: 4096,
        }),
        PduHeader::C2HTermReq(TermReq {
            fes: Fes::INVALID_HEADER_FIELD,
            fei: 0,
        }),
        PduHeader::CapsuleResp(CapsuleResp {
            cqe: Cqe::new(1, 0, 0, Status::SUCCESS),
        }),
        PduHeader::C2HData(dh),
        PduHeader::R2t(R2t {
            cccid: 1,
            ttag: 0,
            r2to: 0,
            r2tl: 4096,
        }),
    ]
}

#[test]
fn controller_to_host_pdus_from_a_host_are_fatal_before_and_after_the_ic_exchange() {
    for after_ic in [false, true] {
        for h in controller_pdus() {
            let t = target(TransportConfig::default());
            let mut s = Sim::new(&t, now());
            if after_ic {
                ic(&mut s, false);
            }
            s.send(h, &[]);
            term(&mut s);
            assert!(
                s.closed.is_some(),
                "{h:?} (after IC: {after_ic}) did not close"
            );
            assert!(s.next_pdu().is_none());
            sound(&mut s);
        }
    }
}

#[test]
fn a_capsule_or_h2c_data_before_the_icreq_is_fatal() {
    let t = target(TransportConfig::default());
    let mut s = Sim::new(&t, now());
    s.capsule(connect_sqe(1, 0, 31, true), &connect_data(0xFFFF));
    term(&mut s);
    assert!(s.closed.is_some());

    let mut s = Sim::new(&t, now());
    s.send(h2c(1, 0, 0, 4, true), &[0; 4]);
    term(&mut s);
    assert!(s.closed.is_some());
}

#[test]
fn a_second_icreq_is_fatal() {
    let t = target(TransportConfig::default());
    let mut s = Sim::new(&t, now());
    ic(&mut s, false);
    s.ic_req(false, false);
    term(&mut s);
    assert!(s.closed.is_some());
}

#[test]
fn commands_before_connect_are_command_sequence_errors_and_the_queue_carries_on() {
    let t = target(TransportConfig::default());
    let mut s = Sim::new(&t, now());
    ic(&mut s, false);
    s.capsule(rw(io::READ, 5, 0, 1, false), &[]);
    assert!(same(resp(&mut s).status(), Status::COMMAND_SEQUENCE_ERROR));
    s.capsule(identify(6), &[]);
    assert!(same(resp(&mut s).status(), Status::COMMAND_SEQUENCE_ERROR));
    let mut d = Sqe::new_fabrics(FabricsType::DISCONNECT, 7);
    d.cdw10.set(0);
    s.capsule(d, &[]);
    assert!(same(resp(&mut s).status(), Status::COMMAND_SEQUENCE_ERROR));
    // Connect still works afterwards.
    assert!(connect(&mut s, 8, 0, 0xFFFF, 0).status().is_success());
    assert_eq!(s.qp.phase(), Phase::Ready);
    sound(&mut s);
}

#[test]
fn a_second_connect_and_commands_before_cc_en_are_sequence_errors() {
    let t = target(TransportConfig::default());
    let mut s = Sim::new(&t, now());
    ic(&mut s, false);
    assert!(connect(&mut s, 1, 0, 0xFFFF, 0).status().is_success());
    assert!(same(
        connect(&mut s, 2, 0, 0xFFFF, 0).status(),
        Status::COMMAND_SEQUENCE_ERROR
    ));
    // NVMe Base 2.0 section 3.5.1: nothing but fabrics commands before CC.EN = 1.
    s.capsule(identify(3), &[]);
    assert!(same(resp(&mut s).status(), Status::COMMAND_SEQUENCE_ERROR));
    assert!(set_cc(&mut s, 4, true).status().is_success());
    s.capsule(identify(5), &[]);
    match s.next_pdu() {
        Some((PduHeader::C2HData(d), data)) => {
            assert_eq!((d.cccid, data.len()), (5, 4096));
            assert!(
                d.success,
                "SQ flow control is off: SUCCESS stands for the response"
            );
        }
        other => panic!("expected the Identify data, got {other:?}"),
    }
    sound(&mut s);
}

#[test]
fn connect_refusals_are_answered_and_leave_the_queue_unconnected() {
    let t = target(TransportConfig::default());
    let mut s = Sim::new(&t, now());
    ic(&mut s, false);
    // SQSIZE 0 is invalid (NVMe-oF 1.1 section 3.3.1).
    let sqe = connect_sqe(1, 0, 0, true);
    s.capsule(sqe, &connect_data(0xFFFF));
    assert!(same(
        resp(&mut s).status(),
        Status::CONNECT_INVALID_PARAMETERS
    ));
    // An I/O queue of a controller that does not exist.
    let sqe = connect_sqe(2, 1, 31, true);
    s.capsule(sqe, &connect_data(77));
    assert!(same(
        resp(&mut s).status(),
        Status::CONNECT_INVALID_PARAMETERS
    ));
    // Connect data too short: the Connect data must come in the capsule.
    let mut sqe = connect_sqe(3, 0, 31, true);
    sqe.dptr = SglDescriptor::in_capsule(16);
    s.capsule(sqe, &[0; 16]);
    assert!(!resp(&mut s).status().is_success());
    assert_eq!(s.qp.qid(), None);
    sound(&mut s);
}

#[test]
fn property_commands_on_an_io_queue_are_sequence_errors() {
    let (_t, _a, mut q) = pair(TransportConfig::default(), false);
    assert!(same(
        set_cc(&mut q, 9, true).status(),
        Status::COMMAND_SEQUENCE_ERROR
    ));
    sound(&mut q);
}

#[test]
fn a_busy_cid_is_a_command_id_conflict_and_the_first_command_is_still_answered_once() {
    let (_t, _a, mut q) = pair(TransportConfig::default(), false);
    q.capsule(rw(io::READ, 40, 0, 1, false), &[]);
    assert_eq!(q.pending.len(), 1);
    q.capsule(rw(io::READ, 40, 1, 1, false), &[]);
    assert!(same(resp(&mut q).status(), Status::COMMAND_ID_CONFLICT));
    q.complete_all();
    match q.next_pdu() {
        Some((PduHeader::C2HData(d), _)) => assert!(d.cccid == 40 && d.success),
        other => panic!("expected the read's data, got {other:?}"),
    }
    assert!(q.next_pdu().is_none());
    sound(&mut q);
}

#[test]
fn commands_beyond_the_queue_size_get_transient_transport_error() {
    let (_t, _a, mut q) = pair(TransportConfig::default(), false);
    // The queue connected with SQSIZE 31: 32 slots.
    for cid in 0..40u16 {
        q.capsule(rw(io::READ, 100 + cid, u64::from(cid), 1, false), &[]);
    }
    assert_eq!(q.pending.len(), 32);
    for _ in 32..40 {
        assert!(same(
            resp(&mut q).status(),
            Status::TRANSIENT_TRANSPORT_ERROR
        ));
    }
    q.complete_all();
    assert_eq!(q.received.len(), 32);
    sound(&mut q);
}

#[test]
fn bad_io_commands_get_a_status_and_the_queue_carries_on() {
    let (_t, _a, mut q) = pair(TransportConfig::default(), false);
    // Unknown opcode.
    q.capsule(Sqe::new(crate::wire::spec::Opcode(0x7E), 1), &[]);
    assert!(same(resp(&mut q).status(), Status::INVALID_OPCODE));
    // Inactive namespace.
    let mut sqe = rw(io::READ, 2, 0, 1, false);
    sqe.nsid.set(9);
    q.capsule(sqe, &[]);
    assert!(same(resp(&mut q).status(), Status::INVALID_NAMESPACE));
    // Beyond the namespace.
    q.capsule(rw(io::READ, 3, BLOCKS, 1, false), &[]);
    assert!(same(resp(&mut q).status(), Status::LBA_OUT_OF_RANGE));
    // Beyond MDTS (128 KiB).
    q.capsule(rw(io::READ, 4, 0, 64, false), &[]);
    assert!(same(resp(&mut q).status(), Status::INVALID_FIELD));
    // An SGL shorter than the transfer.
    let mut sqe = rw(io::READ, 5, 0, 2, false);
    sqe.dptr = SglDescriptor::transport(BS);
    q.capsule(sqe, &[]);
    assert!(same(resp(&mut q).status(), Status::DATA_SGL_LENGTH_INVALID));
    assert!(q.pending.is_empty());
    // And a good read afterwards.
    q.capsule(rw(io::READ, 6, 0, 1, false), &[]);
    q.complete_all();
    assert!(matches!(q.next_pdu(), Some((PduHeader::C2HData(d), _)) if d.cccid == 6));
    sound(&mut q);
}

#[test]
fn a_failed_device_io_is_answered_once_with_its_status() {
    let (_t, _a, mut q) = pair(TransportConfig::default(), false);
    q.capsule(rw(io::READ, 7, 0, 1, false), &[]);
    q.complete(0, Some(shoal_bdev::BdevError::Closed));
    let c = resp(&mut q);
    assert_eq!(c.cid(), 7);
    assert!(!c.status().is_success());
    sound(&mut q);
}

#[test]
fn flush_and_write_zeroes_reach_the_device_and_are_answered() {
    let (_t, _a, mut q) = pair(TransportConfig::default(), false);
    let mut f = Sqe::new(io::FLUSH, 1);
    f.nsid.set(1);
    q.capsule(f, &[]);
    let mut wz = Sqe::new(io::WRITE_ZEROES, 2);
    wz.nsid.set(1);
    wz.cdw12.set(7);
    q.capsule(wz, &[]);
    assert_eq!(q.pending.len(), 2);
    q.complete_all();
    let a = resp(&mut q);
    let b = resp(&mut q);
    assert_eq!((a.cid(), b.cid()), (1, 2));
    assert!(a.status().is_success() && b.status().is_success());
    sound(&mut q);
}

#[test]
fn asynchronous_event_requests_are_parked_and_aborted_once() {
    let t = target(TransportConfig::default());
    let (mut a, _) = admin_queue(&t, false, 0);
    let aer = Sqe::new(admin::ASYNC_EVENT_REQUEST, 10);
    a.capsule(aer, &[]);
    assert!(a.next_pdu().is_none(), "an AER waits for an event");
    assert_eq!(a.qp.outstanding(), 1);
    sound(&mut a);
    let mut abort = Sqe::new(admin::ABORT, 11);
    abort.cdw10.set(10 << 16);
    a.capsule(abort, &[]);
    let first = resp(&mut a);
    let second = resp(&mut a);
    assert_eq!(first.cid(), 10);
    assert!(same(first.status(), Status::ABORT_REQUESTED));
    assert_eq!((second.cid(), second.dw0.get() & 1), (11, 0));
    assert_eq!(a.qp.outstanding(), 0);
    sound(&mut a);
}

#[test]
fn a_partial_pdu_waits_for_its_end() {
    let (_t, _a, mut q) = pair(TransportConfig::default(), false);
    let bytes = q.encode(
        &PduHeader::CapsuleCmd(CapsuleCmd {
            sqe: rw(io::READ, 3, 0, 1, false),
        }),
        &[],
        false,
    );
    for b in &bytes {
        assert!(q.pending.is_empty());
        q.send_raw(std::slice::from_ref(b));
    }
    assert_eq!(q.pending.len(), 1);
}
