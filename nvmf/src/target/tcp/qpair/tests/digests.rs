//! Header and data digests (negotiated by NVMe/TCP 1.0a sections 3.6.2.2-3.6.2.3): a bad
//! header digest ends the connection, a bad data digest ends its command.

use super::*;
use crate::wire::pdu::CapsuleCmd;
use crate::wire::pdu::term::Fes;
use crate::wire::spec::opcode::io;

#[test]
fn with_digests_reads_writes_and_r2t_flows_work_and_every_pdu_checks_out() {
    let (_t, _a, mut q) = pair(TransportConfig::default(), true);
    let data = pattern(2 * BS as usize, 6);
    q.capsule(rw(io::WRITE, 1, 4, 2, false), &[]);
    let Some((PduHeader::R2t(r), _)) = q.next_pdu() else {
        panic!("no R2T")
    };
    q.send(h2c(1, r.ttag, 0, r.r2tl, true), &data);
    q.complete_all();
    assert!(resp(&mut q).status().is_success());
    q.capsule(rw(io::READ, 2, 4, 2, false), &[]);
    q.complete_all();
    // The host deframer verified the C2HData's header and data digests.
    match q.next_pdu() {
        Some((PduHeader::C2HData(d), got)) => {
            assert_eq!(d.cccid, 2);
            assert_eq!(got, data);
        }
        other => panic!("expected the read's data, got {other:?}"),
    }
    sound(&mut q);
}

#[test]
fn a_capsule_with_a_bad_data_digest_fails_with_transient_transport_error_and_the_queue_carries_on()
{
    let (_t, _a, mut q) = pair(TransportConfig::default(), true);
    let sqe = rw(io::WRITE, 3, 0, 1, true);
    q.send_with(PduHeader::CapsuleCmd(CapsuleCmd { sqe }), &[9; 4096], true);
    let c = resp(&mut q);
    assert_eq!(c.cid(), 3);
    assert!(same(c.status(), Status::TRANSIENT_TRANSPORT_ERROR));
    assert!(q.pending.is_empty(), "nothing was written");
    q.capsule(rw(io::WRITE, 4, 0, 1, true), &[9; 4096]);
    q.complete_all();
    assert!(resp(&mut q).status().is_success());
    sound(&mut q);
}

#[test]
fn h2c_data_with_a_bad_data_digest_ends_its_command_once_and_frees_its_slot() {
    let (_t, _a, mut q) = pair(TransportConfig::default(), true);
    q.capsule(rw(io::WRITE, 5, 0, 1, false), &[]);
    let Some((PduHeader::R2t(r), _)) = q.next_pdu() else {
        panic!("no R2T")
    };
    q.send_with(h2c(5, r.ttag, 0, BS, true), &[1; 4096], true);
    let c = resp(&mut q);
    assert!(c.cid() == 5 && same(c.status(), Status::TRANSIENT_TRANSPORT_ERROR));
    assert_eq!(q.qp.outstanding(), 0, "the slot is free");
    // More data for it is now data for no command: fatal.
    q.send(h2c(5, r.ttag, 0, BS, true), &[1; 4096]);
    assert_eq!(term(&mut q), Fes::INVALID_HEADER_FIELD.0);
    sound(&mut q);
}

#[test]
fn a_bad_data_digest_on_h2c_data_naming_a_running_command_is_fatal_and_answers_nothing() {
    // The TTAG of a command whose data is all in (it runs on the device): a digest error on
    // data for it must not free its slot nor answer it twice.
    let (_t, _a, mut q) = pair(TransportConfig::default(), true);
    q.capsule(rw(io::WRITE, 6, 0, 1, false), &[]);
    let Some((PduHeader::R2t(r), _)) = q.next_pdu() else {
        panic!("no R2T")
    };
    q.send(h2c(6, r.ttag, 0, BS, true), &[1; 4096]);
    assert_eq!(q.pending.len(), 1);
    q.send_with(h2c(6, r.ttag, 0, BS, true), &[1; 4096], true);
    assert_eq!(term(&mut q), Fes::INVALID_HEADER_FIELD.0);
    q.complete_all();
    assert!(q.next_pdu().is_none());
    sound(&mut q);
}

#[test]
fn a_bad_header_digest_is_fatal() {
    let (_t, _a, mut q) = pair(TransportConfig::default(), true);
    let sqe = rw(io::READ, 7, 0, 1, false);
    let mut bytes = q.encode(&PduHeader::CapsuleCmd(CapsuleCmd { sqe }), &[], false);
    // The header digest follows the 72-byte header.
    bytes[72] ^= 1;
    q.send_raw(&bytes);
    assert_eq!(term(&mut q), Fes::HEADER_DIGEST_ERROR.0);
    assert!(q.closed.is_some() && q.pending.is_empty());
}

#[test]
fn a_host_without_digests_gets_none() {
    let (_t, _a, mut q) = pair(TransportConfig::default(), false);
    let sqe = rw(io::READ, 8, 0, 1, false);
    let bytes = q.encode(&PduHeader::CapsuleCmd(CapsuleCmd { sqe }), &[], false);
    assert_eq!(bytes.len(), 72, "no digest on the host side");
    q.send_raw(&bytes);
    q.complete_all();
    assert!(matches!(q.next_pdu(), Some((PduHeader::C2HData(d), _)) if d.cccid == 8));
}
