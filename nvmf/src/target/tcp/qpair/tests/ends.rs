//! How a queue pair ends: a termination at every state, Disconnect, a controller reset or
//! failure, the ICReq / Connect timeout, keep-alive expiry, the linger of a closing queue.

use std::time::Duration;

use super::*;
use crate::target::tcp::qpair::{CLOSE_LINGER, KEEP_ALIVE_CHECK, Phase};
use crate::wire::pdu::TermReq;
use crate::wire::pdu::term::Fes;
use crate::wire::spec::opcode::io;

/// Where the I/O queue under test is when it ends.
#[derive(Debug, Clone, Copy)]
enum At {
    /// No ICReq yet.
    AwaitIc,
    /// ICReq done, no Connect.
    Unconnected,
    /// Connected, nothing in progress.
    Idle,
    /// A write waits for its data after an R2T.
    AwaitData,
    /// A read runs on the device.
    Executing,
}

const STATES: [At; 5] = [
    At::AwaitIc,
    At::Unconnected,
    At::Idle,
    At::AwaitData,
    At::Executing,
];

/// How it ends.
#[derive(Debug, Clone, Copy)]
enum End {
    TermReq,
    PeerClosed,
    Garbage,
    SendFailed,
}

const ENDS: [End; 4] = [End::TermReq, End::PeerClosed, End::Garbage, End::SendFailed];

fn queue_at(at: At) -> (Arc<Target>, Sim, Sim, u16) {
    let t = target(TransportConfig::default());
    let (a, cntlid) = admin_queue(&t, false, 0);
    let mut q = Sim::new(&t, now());
    if matches!(at, At::AwaitIc) {
        return (t, a, q, cntlid);
    }
    ic(&mut q, false);
    if matches!(at, At::Unconnected) {
        return (t, a, q, cntlid);
    }
    assert!(connect(&mut q, 1, 1, cntlid, 0).status().is_success());
    match at {
        At::AwaitData => {
            q.capsule(rw(io::WRITE, 2, 0, 1, false), &[]);
            assert!(matches!(q.next_pdu(), Some((PduHeader::R2t(_), _))));
        }
        At::Executing => {
            q.capsule(rw(io::READ, 2, 0, 1, false), &[]);
            assert_eq!(q.pending.len(), 1);
        }
        _ => {}
    }
    (t, a, q, cntlid)
}

fn end(q: &mut Sim, how: End) {
    match how {
        End::TermReq => q.send(
            PduHeader::H2CTermReq(TermReq {
                fes: Fes::PDU_SEQUENCE_ERROR,
                fei: 0,
            }),
            &[],
        ),
        End::PeerClosed => {
            q.qp.handle_peer_closed("host closed the connection", q.now);
            q.pump();
        }
        End::Garbage => q.send_garbage(&[0x42; 8]),
        End::SendFailed => {
            // A send in flight fails (the socket broke).
            q.host_reads = false;
            q.capsule(Sqe::new(crate::wire::spec::Opcode(0x7E), 99), &[]);
            if let Some((bufs, _)) = q.qp.poll_transmit() {
                q.qp.handle_sent(bufs, -32, q.now);
            } else {
                q.qp.handle_sent(Vec::new(), -32, q.now);
            }
            q.host_reads = true;
            q.pump();
            assert!(q.shutdown, "a failed send shuts the socket");
        }
    }
}

#[test]
fn a_termination_at_every_state_closes_once_frees_the_qid_and_answers_nothing_after() {
    for at in STATES {
        for how in ENDS {
            let (t, _a, mut q, cntlid) = queue_at(at);
            end(&mut q, how);
            assert!(q.closed.is_some(), "{at:?} / {how:?}: not closed");
            assert_eq!(q.qp.phase(), Phase::Closing);
            assert!(!q.qp.wants_read());
            if matches!(how, End::Garbage) {
                assert_eq!(term(&mut q), Fes::INVALID_HEADER_FIELD.0);
            }
            // What was running completes into the void; its slot is freed.
            q.complete_all();
            while let Some((h, _)) = q.next_pdu() {
                assert!(
                    !matches!(h, PduHeader::C2HData(_) | PduHeader::CapsuleResp(_)),
                    "{at:?} / {how:?}: answered after the end: {h:?}"
                );
            }
            assert_eq!(q.qp.outstanding(), 0, "{at:?} / {how:?}");
            // Nothing more is read.
            q.capsule(rw(io::READ, 3, 0, 1, false), &[]);
            assert!(q.pending.is_empty() && q.next_pdu().is_none());
            // The queue ID is free at once (NVMe-oF 1.1 section 3.3).
            if matches!(at, At::Idle | At::AwaitData | At::Executing) {
                let _again = io_queue(&t, cntlid, 1, false);
            }
            // Everything sent: the socket may be shut; the linger deadline shuts it anyway.
            assert!(q.qp.finished());
            assert!(
                q.violations.is_empty(),
                "{at:?} / {how:?}: {:?}",
                q.violations
            );
        }
    }
}

#[test]
fn a_closing_queue_whose_host_does_not_read_is_shut_after_the_linger() {
    let (_t, _a, mut q, _) = queue_at(At::Executing);
    q.host_reads = false;
    q.complete_all();
    q.qp.close("test", q.now);
    q.pump();
    assert!(!q.qp.finished(), "the read's data is still queued");
    assert_eq!(q.qp.poll_timeout(), Some(q.now + CLOSE_LINGER));
    q.advance(CLOSE_LINGER - Duration::from_millis(1));
    assert!(!q.shutdown);
    q.advance(Duration::from_millis(1));
    assert!(q.shutdown);
    assert_eq!(q.qp.poll_timeout(), None);
}

#[test]
fn disconnect_ends_an_io_queue_and_frees_its_qid_but_is_invalid_on_the_admin_queue() {
    let (t, mut a, mut q) = pair(TransportConfig::default(), false);
    let d = Sqe::new_fabrics(FabricsType::DISCONNECT, 5);
    q.capsule(d, &[]);
    let c = resp(&mut q);
    assert!(c.cid() == 5 && c.status().is_success());
    assert_eq!(q.closed.as_deref(), Some("Disconnect"));
    let cntlid = a.qp.controller().unwrap().cntlid;
    let _again = io_queue(&t, cntlid, 1, false);
    // NVMe Base 2.0 section 6.4: Invalid Queue Type on the admin queue, which carries on.
    a.capsule(Sqe::new_fabrics(FabricsType::DISCONNECT, 6), &[]);
    assert!(same(resp(&mut a).status(), Status::INVALID_QUEUE_TYPE));
    assert!(a.closed.is_none());
    sound(&mut a);
    sound(&mut q);
}

#[test]
fn cc_en_0_deletes_the_io_queues_and_keeps_the_admin_queue() {
    let (t, mut a, mut q) = pair(TransportConfig::default(), false);
    let woken = q.wakes.load(std::sync::atomic::Ordering::Relaxed);
    assert!(set_cc(&mut a, 7, false).status().is_success());
    assert!(q.wakes.load(std::sync::atomic::Ordering::Relaxed) > woken);
    q.poke();
    assert!(q.closed.is_some(), "the I/O queue is deleted");
    assert!(a.closed.is_none(), "the admin queue stays");
    assert!(set_cc(&mut a, 8, true).status().is_success());
    let cntlid = a.qp.controller().unwrap().cntlid;
    let _again = io_queue(&t, cntlid, 1, false);
    sound(&mut a);
}

#[test]
fn the_end_of_the_admin_queue_fails_the_controller_and_its_io_queues_close() {
    let (t, mut a, mut q) = pair(TransportConfig::default(), false);
    let cntlid = a.qp.controller().unwrap().cntlid;
    a.qp.handle_peer_closed("gone", a.now);
    a.pump();
    assert!(q.wakes.load(std::sync::atomic::Ordering::Relaxed) > 0);
    q.poke();
    assert!(
        q.closed
            .as_deref()
            .unwrap()
            .starts_with("controller failed")
    );
    // The controller is gone: its I/O queues cannot connect again.
    let mut r = Sim::new(&t, now());
    ic(&mut r, false);
    assert!(!connect(&mut r, 1, 1, cntlid, 0).status().is_success());
}

#[test]
fn a_connection_without_icreq_or_connect_is_closed_at_ic_timeout_ms() {
    let cfg = TransportConfig {
        ic_timeout_ms: 2000,
        ..Default::default()
    };
    for ic_first in [false, true] {
        let t = target(cfg.clone());
        let mut s = Sim::new(&t, now());
        if ic_first {
            ic(&mut s, false);
        }
        assert_eq!(
            s.qp.poll_timeout(),
            Some(s.now + Duration::from_millis(2000))
        );
        s.advance(Duration::from_millis(1999));
        assert!(s.closed.is_none());
        s.advance(Duration::from_millis(1));
        assert_eq!(s.closed.as_deref(), Some("no ICReq or Connect in time"));
    }
    // A Connect in time clears the deadline.
    let t = target(cfg);
    let mut s = Sim::new(&t, now());
    ic(&mut s, false);
    assert!(connect(&mut s, 1, 0, 0xFFFF, 0).status().is_success());
    assert_eq!(s.qp.poll_timeout(), Some(s.now + KEEP_ALIVE_CHECK));
    s.advance(Duration::from_secs(60));
    assert!(s.closed.is_none());
}

#[test]
fn keep_alive_expiry_fails_the_controller_and_ends_its_queues() {
    let t = target(TransportConfig::default());
    let (mut a, cntlid) = admin_queue(&t, false, 1000);
    let mut q = io_queue(&t, cntlid, 1, false);
    // Checked every 100 ms; within KATO nothing happens.
    for _ in 0..9 {
        a.advance(KEEP_ALIVE_CHECK);
    }
    assert!(!a.qp.controller().unwrap().is_failed());
    a.advance(Duration::from_millis(2000));
    assert!(a.wakes.load(std::sync::atomic::Ordering::Relaxed) > 0);
    a.poke();
    q.poke();
    assert!(a.closed.as_deref().unwrap().contains("keep-alive"));
    assert!(q.closed.is_some());
    assert_eq!(a.qp.poll_timeout(), Some(a.now + CLOSE_LINGER));
}
