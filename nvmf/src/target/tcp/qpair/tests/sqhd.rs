//! The SUCCESS flag on queues whose host kept SQ flow control on (NVMe/TCP 1.0a section
//! 3.6.2.9; see `QueuePair::success_may_answer`): a response capsule with SQHD comes at least
//! every half queue, and a host that counts its free SQ entries from SQHD never stalls.

use std::sync::Arc;

use super::*;
use crate::target::subsystem::Target;
use crate::wire::pdu::CapsuleCmd;
use crate::wire::spec::opcode::io;

/// An I/O queue of `depth` entries whose host keeps SQ flow control on.
fn flow_queue(t: &Arc<Target>, depth: u16) -> Sim {
    flow_queue_digests(t, depth, false)
}

/// [`flow_queue`], with header and data digests if `digests`.
fn flow_queue_digests(t: &Arc<Target>, depth: u16, digests: bool) -> Sim {
    let (_a, cntlid) = admin_queue(t, digests, 0);
    let mut q = Sim::new(t, now());
    ic(&mut q, digests);
    q.capsule(connect_sqe(1, 1, depth - 1, false), &connect_data(cntlid));
    let c = resp(&mut q);
    assert!(c.status().is_success());
    assert_eq!(c.sqhd.get(), 1);
    q
}

/// What one read brought: whether its C2HData carried SUCCESS, and the SQHD of the response
/// capsule that followed it if one did.
fn answer(q: &mut Sim, cid: u16) -> (bool, Option<u16>) {
    let Some((PduHeader::C2HData(d), _)) = q.next_pdu() else {
        panic!("expected C2HData for cid {cid}");
    };
    assert_eq!(d.cccid, cid);
    if d.success {
        return (true, None);
    }
    let c = resp(q);
    assert_eq!(c.cid(), cid);
    assert!(c.status().is_success());
    (false, Some(c.sqhd.get()))
}

#[test]
fn with_sq_flow_control_a_response_with_sqhd_comes_every_half_queue() {
    let t = target(TransportConfig::default());
    let mut q = flow_queue(&t, 32);
    let mut pattern = Vec::new();
    for i in 0..100u16 {
        let cid = 10 + i;
        q.capsule(rw(io::READ, cid, u64::from(i % 8), 1, false), &[]);
        q.complete_all();
        let (success, sqhd) = answer(&mut q, cid);
        pattern.push(success);
        if let Some(h) = sqhd {
            // Connect, then i + 1 reads: the SQ head is past all of them.
            assert_eq!(h, (i + 2) % 32);
        }
    }
    // The Connect's response carried SQHD; then 15 reads with SUCCESS and the 16th with a
    // response, over and over.
    for (i, s) in pattern.iter().enumerate() {
        assert_eq!(*s, (i + 1) % 16 != 0, "read {i}");
    }
    sound(&mut q);
}

#[test]
fn the_strict_setting_sends_a_response_for_every_read_under_sq_flow_control() {
    let t = target(TransportConfig {
        c2h_success_sq_flow_control: false,
        ..Default::default()
    });
    let mut q = flow_queue(&t, 32);
    for i in 0..40u16 {
        q.capsule(rw(io::READ, 2 + i, 0, 1, false), &[]);
        q.complete_all();
        assert_eq!(answer(&mut q, 2 + i), (false, Some((i + 2) % 32)));
    }
    sound(&mut q);
}

#[test]
fn without_c2h_success_every_read_gets_a_response_even_without_sq_flow_control() {
    let (_t, _a, mut q) = pair(
        TransportConfig {
            c2h_success: false,
            ..Default::default()
        },
        false,
    );
    for i in 0..20u16 {
        q.capsule(rw(io::READ, 2 + i, 0, 1, false), &[]);
        q.complete_all();
        assert!(!answer(&mut q, 2 + i).0);
    }
    sound(&mut q);
}

#[test]
fn the_admin_queue_under_sq_flow_control_answers_data_with_a_response() {
    let t = target(TransportConfig::default());
    let mut a = Sim::new(&t, now());
    ic(&mut a, false);
    a.capsule(connect_sqe(1, 0, 31, false), &connect_data(0xFFFF));
    assert!(resp(&mut a).status().is_success());
    assert!(set_cc(&mut a, 2, true).status().is_success());
    for cid in 3..40u16 {
        a.capsule(identify(cid), &[]);
        assert!(!answer(&mut a, cid).0, "Identify {cid} carried SUCCESS");
    }
    sound(&mut a);
}

/// A host that submits a command only while its SQ, as the last SQHD it received says, has
/// room (NVMe Base 2.0 section 3.3.1.2: full when the tail is one behind the head), and whose
/// reads finish in a scrambled order, never finds its queue full with nothing in flight.
#[test]
fn a_host_that_counts_free_entries_from_sqhd_never_stalls() {
    for depth in [2u16, 3, 4, 8, 32, 128] {
        let t = target(TransportConfig::default());
        let mut q = flow_queue(&t, depth);
        let d = u64::from(depth);
        // Commands submitted and SQ entries the controller is known to have consumed, both
        // counted since Connect (which the controller consumed: SQHD 1).
        let (mut submitted, mut consumed) = (1u64, 1u64);
        let mut in_flight: Vec<u16> = Vec::new();
        let mut next_cid = 2u16;
        let (mut done, mut responses) = (0u32, 0u32);
        let mut turn = 0usize;
        while done < 600 {
            // Submit while the SQ has room by SQHD's count.
            let mut sent = 0;
            while submitted - consumed < d - 1 && sent < 5 {
                q.capsule(rw(io::READ, next_cid, 0, 1, false), &[]);
                in_flight.push(next_cid);
                next_cid = next_cid.wrapping_add(1).max(2);
                submitted += 1;
                sent += 1;
            }
            assert!(
                !in_flight.is_empty() || submitted - consumed < d - 1,
                "depth {depth}: the host's SQ is full by SQHD and nothing is in flight \
                 ({submitted} submitted, SQHD says {consumed} consumed)"
            );
            // Finish some of the device's I/O, out of order.
            turn += 1;
            let n = q.pending.len();
            for k in 0..n.div_ceil(2) {
                let i = (turn * 7 + k * 3) % q.pending.len().max(1);
                q.complete(i, None);
            }
            while let Some((h, _)) = q.next_pdu() {
                let cid = match h {
                    PduHeader::C2HData(dh) if dh.success => dh.cccid,
                    PduHeader::C2HData(_) => continue,
                    PduHeader::CapsuleResp(r) => {
                        responses += 1;
                        // The head moved forward by (new - old) mod depth entries.
                        let head = u64::from(r.cqe.sqhd.get());
                        consumed += (head + d - consumed % d) % d;
                        r.cqe.cid()
                    }
                    other => panic!("unexpected {other:?}"),
                };
                let at = in_flight.iter().position(|&c| c == cid).unwrap();
                in_flight.swap_remove(at);
                done += 1;
            }
        }
        // Below 4 entries half a queue is one command: a read gets SUCCESS only when another
        // command's response went out after it arrived, so the share is not checked.
        if depth >= 4 {
            assert!(responses < done, "depth {depth}: every read got a response");
        }
        if depth >= 8 {
            assert!(responses * 3 < done, "depth {depth}: {responses} of {done}");
        }
        q.complete_all();
        sound(&mut q);
    }
}

#[test]
fn a_failed_read_under_sq_flow_control_gets_its_error_in_a_response() {
    let t = target(TransportConfig::default());
    let mut q = flow_queue(&t, 32);
    q.capsule(rw(io::READ, 5, 0, 1, false), &[]);
    q.complete(0, Some(shoal_bdev::BdevError::Closed));
    let c = resp(&mut q);
    assert_eq!((c.cid(), c.sqhd.get()), (5, 2));
    assert!(!c.status().is_success());
    sound(&mut q);
}

#[test]
fn any_response_capsule_restarts_the_count_of_reads_answered_by_success() {
    let t = target(TransportConfig::default());
    let mut q = flow_queue(&t, 32);
    let mut cid = 10u16;
    for round in 0..3 {
        // 10 reads with SUCCESS, then a write whose response brings SQHD...
        for _ in 0..10 {
            q.capsule(rw(io::READ, cid, 0, 1, false), &[]);
            q.complete_all();
            assert_eq!(answer(&mut q, cid), (true, None), "round {round}");
            cid += 1;
        }
        q.capsule(rw(io::WRITE, cid, 0, 1, true), &[7; 4096]);
        q.complete_all();
        assert!(resp(&mut q).status().is_success());
        cid += 1;
    }
    // ...so the next 15 reads carry SUCCESS again and the 16th a response.
    for i in 0..16 {
        q.capsule(rw(io::READ, cid, 0, 1, false), &[]);
        q.complete_all();
        assert_eq!(answer(&mut q, cid).0, i < 15, "read {i}");
        cid += 1;
    }
    sound(&mut q);
}

#[test]
fn a_capsule_with_a_bad_data_digest_takes_its_sq_entry() {
    let t = target(TransportConfig::default());
    let mut q = flow_queue_digests(&t, 32, true);
    let sqe = rw(io::WRITE, 3, 0, 1, true);
    q.send_with(PduHeader::CapsuleCmd(CapsuleCmd { sqe }), &[9; 4096], true);
    let c = resp(&mut q);
    assert_eq!(c.cid(), 3);
    // Connect and the bad capsule: the head is past both.
    assert_eq!(c.sqhd.get(), 2);
    q.capsule(rw(io::WRITE, 4, 0, 1, true), &[9; 4096]);
    q.complete_all();
    assert_eq!(resp(&mut q).sqhd.get(), 3);
    sound(&mut q);
}
