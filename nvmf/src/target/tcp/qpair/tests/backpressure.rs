//! A host that never reads its socket is held at `max_unsent_bytes` (ARCHITECTURE.md, "What a
//! host can hold"): the queue pair stops handling PDUs and asks for no more bytes until what it
//! queued is sent; then every command is answered, once.

use super::*;
use crate::wire::pdu::CapsuleCmd;
use crate::wire::spec::opcode::io;

const READ_BLOCKS: u32 = 4;

fn flood(q: &mut Sim, rounds: u16) -> usize {
    let mut sent = 0;
    for r in 0..rounds {
        for i in 0..32u16 {
            let cid = r * 32 + i;
            let sqe = rw(io::READ, cid, u64::from(i) * 4, READ_BLOCKS, false);
            q.send(PduHeader::CapsuleCmd(CapsuleCmd { sqe }), &[]);
            sent += 1;
        }
        q.complete_all();
    }
    sent
}

#[test]
fn a_host_that_never_reads_is_held_at_the_bound_and_then_answered_once() {
    let limit = 64 << 10;
    let cfg = TransportConfig {
        max_unsent_bytes: limit,
        ..Default::default()
    };
    let (_t, _a, mut q) = pair(cfg, false);
    q.host_reads = false;
    let sent = flood(&mut q, 200);
    assert!(!q.qp.wants_read(), "the queue pair stopped reading");
    // The bound, plus what the PDU handled at the bound may add (an arena), plus the reads in
    // flight at that moment (each completes into a header arena and its data buffer).
    let bound = limit as usize + 4096 + 32 * (4096 + (READ_BLOCKS * BS) as usize);
    let held = q.qp.unsent();
    assert!(
        held <= bound,
        "a host that never reads made the queue pair hold {held} bytes (bound {bound})"
    );
    assert!(q.pending.is_empty(), "no command is started while paused");
    assert!(q.received.is_empty());

    // The host reads: everything is answered, each command once.
    q.host_reads = true;
    q.pump();
    while !q.pending.is_empty() {
        q.complete_all();
    }
    let (mut data, mut refused) = (0, 0);
    while let Some((h, d)) = q.next_pdu() {
        match h {
            PduHeader::C2HData(c) => {
                assert!(c.success);
                assert_eq!(d.len(), (READ_BLOCKS * BS) as usize);
                data += 1;
            }
            PduHeader::CapsuleResp(r) => {
                assert!(same(r.cqe.status(), Status::TRANSIENT_TRANSPORT_ERROR));
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(data + refused, sent);
    assert!(data > 0);
    assert!(q.qp.wants_read());
    assert_eq!(q.qp.unsent(), 0);
    sound(&mut q);
}

#[test]
fn responses_alone_also_hit_the_bound() {
    // Commands refused at once (no device I/O) still queue responses: the bound holds them too.
    let limit = 64 << 10;
    let cfg = TransportConfig {
        max_unsent_bytes: limit,
        ..Default::default()
    };
    let (_t, _a, mut q) = pair(cfg, false);
    q.host_reads = false;
    for cid in 0..20_000u16 {
        q.capsule(Sqe::new(crate::wire::spec::Opcode(0x7E), cid), &[]);
    }
    assert!(!q.qp.wants_read());
    assert!(q.qp.unsent() <= limit as usize + 4096);
    q.host_reads = true;
    q.pump();
    assert_eq!(q.received.len(), 20_000);
    sound(&mut q);
}
