//! Arbitrary sequences of PDUs, device completions, clock steps and connection events through
//! two sans-IO target queue pairs (an admin queue and an I/O queue of one controller), driven
//! by `tcp::qpair::sim`. Besides "no panic" it checks, after every step, the invariants the
//! simulation tracks: no answer to a CID the host has no unanswered command with, no C2HData
//! or R2T beyond its command's length, no command answered twice; and at the end, with every
//! device I/O completed and the host reading, that every command is answered or still held by
//! the queue pair (each accepted command answered exactly once).
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use shoal_bdev::BdevError;
use shoal_bdev::malloc::MallocBdev;
use shoal_nvmf::wire::pdu::{CapsuleCmd, DataHeader, PduHeader, TermReq, term::Fes};
use shoal_nvmf::wire::spec::{FabricsType, Opcode, SglDescriptor, Sqe};
use shoal_nvmf::target::subsystem::{SubsystemOptions, Target, TransportConfig};
use shoal_nvmf::target::tcp::qpair::sim::{Sim, connect_data, listen_address};

const NQN: &str = "nqn.2016-06.io.shoal:fuzz";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555";

/// Reads the fuzz input a byte at a time (zeroes once it runs out).
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

fn target(inp: &mut Input<'_>) -> Arc<Target> {
    let c = inp.u8();
    let t = TransportConfig {
        max_queue_depth: 4 + u16::from(c & 7),
        max_aq_depth: 4 + u16::from(c & 7),
        io_unit_size: [4096, 8192, 16384, 131_072][usize::from(c >> 3 & 3)],
        max_io_size: [8192, 65536][usize::from(c >> 5 & 1)],
        c2h_success: c & 0x40 != 0,
        max_unsent_bytes: [64 << 10, 2 << 20][usize::from(c >> 7)],
        ic_timeout_ms: 1000,
        ..Default::default()
    };
    let target = Arc::new(Target::new());
    target.create_transport(t).unwrap();
    let sub = target
        .create_subsystem(
            NQN,
            SubsystemOptions {
                allow_any_host: true,
                ..Default::default()
            },
        )
        .unwrap();
    let b = MallocBdev::create("FuzzDisk", None, 256, 512).unwrap();
    sub.add_namespace(b, None, None, None, None).unwrap();
    sub.add_listener(listen_address()).unwrap();
    target
}

/// An SQE with fuzzed fields; the SGL is in-capsule (`data.len()` bytes) or transport.
fn sqe(inp: &mut Input<'_>, opcode: u8, cid: u16) -> (Sqe, Vec<u8>) {
    let mut sqe = Sqe::new(Opcode(opcode), cid);
    sqe.nsid.set(u32::from(inp.u8() & 3));
    sqe.cdw10.set(u32::from(inp.u16()));
    sqe.cdw11.set(u32::from(inp.u8() & 0x7));
    sqe.cdw12
        .set(u32::from(inp.u8()) | (u32::from(inp.u8() & 0x42) << 24));
    let len = u32::from(inp.u16() & 0x7FFF);
    let mode = inp.u8();
    let data = if mode & 1 == 1 {
        let n = usize::try_from(len.min(8192)).unwrap_or(0);
        let data = inp.bytes(n);
        sqe.dptr = SglDescriptor::in_capsule(u32::try_from(data.len()).unwrap_or(0));
        data
    } else {
        sqe.dptr = SglDescriptor::transport(len);
        Vec::new()
    };
    (sqe, data)
}

/// The R2Ts each queue received and not yet answered: (cccid, ttag, r2to, r2tl).
type R2ts = Vec<(u16, u16, u32, u32)>;

fn take_r2ts(s: &mut Sim, r2ts: &mut R2ts) {
    while let Some((h, _)) = s.next_pdu() {
        if let PduHeader::R2t(r) = h {
            r2ts.push((r.cccid, r.ttag, r.r2to, r.r2tl));
        }
    }
}

fn step(inp: &mut Input<'_>, s: &mut Sim, r2ts: &mut R2ts, cntlid: u16, qid: u16) {
    let op = inp.u8();
    let cid = u16::from(inp.u8() & 0x1F);
    match op % 18 {
        0 => {
            let f = inp.u8();
            s.ic_req(f & 1 != 0, f & 2 != 0);
        }
        1 => {
            let sqsize = u16::from(inp.u8() & 0xF);
            let mut c = Sqe::new_fabrics(FabricsType::CONNECT, cid);
            c.cdw10.set(u32::from(qid) << 16);
            c.cdw11
                .set(u32::from(sqsize) | (u32::from(inp.u8() & 1) << 18));
            c.cdw12.set(u32::from(inp.u8()) * 10);
            c.dptr = SglDescriptor::in_capsule(1024);
            s.capsule(c, &connect_data(cntlid, NQN, HOSTNQN));
        }
        2 => {
            let mut p = Sqe::new_fabrics(FabricsType::PROPERTY_SET, cid);
            p.cdw11.set(0x14);
            p.cdw12.set(u32::from(inp.u8() & 1) | (6 << 16) | (4 << 20));
            s.capsule(p, &[]);
        }
        3 => {
            let mut p = Sqe::new_fabrics(FabricsType::PROPERTY_GET, cid);
            p.cdw11.set(u32::from(inp.u8() & 0x3C));
            s.capsule(p, &[]);
        }
        4 => s.capsule(Sqe::new_fabrics(FabricsType::DISCONNECT, cid), &[]),
        5..=7 => {
            // I/O commands: read, write, compare, flush, write zeroes, dataset management.
            let opcode =
                [0x02, 0x01, 0x05, 0x00, 0x08, 0x09, 0x02, 0x01][usize::from(inp.u8() & 7)];
            let (q, data) = sqe(inp, opcode, cid);
            s.capsule(q, &data);
        }
        8 => {
            // Admin commands: Identify, Get Log Page, Get/Set Features, AER, Abort, Keep Alive,
            // or any opcode.
            let opcode =
                [0x06, 0x02, 0x0A, 0x09, 0x0C, 0x08, 0x18, inp.u8()][usize::from(inp.u8() & 7)];
            let (q, data) = sqe(inp, opcode, cid);
            s.capsule(q, &data);
        }
        9 | 10 => {
            // H2CData for an R2T received (mostly right, sometimes off).
            take_r2ts(s, r2ts);
            if r2ts.is_empty() {
                return;
            }
            let i = usize::from(inp.u8()) % r2ts.len();
            let (cccid, ttag, off, len) = r2ts[i];
            let skew = inp.u8();
            let n = if skew & 1 == 0 {
                len
            } else {
                len.min(u32::from(inp.u16()) + 1)
            };
            let datao = if skew & 2 == 0 {
                off
            } else {
                off.wrapping_add(u32::from(inp.u8()))
            };
            let data = vec![skew; usize::try_from(n.min(1 << 17)).unwrap_or(0)];
            let h = DataHeader {
                cccid: if skew & 4 == 0 { cccid } else { cid },
                ttag,
                datao,
                datal: u32::try_from(data.len()).unwrap_or(0),
                last_pdu: true,
                success: false,
            };
            if n >= len {
                // Sometimes kept: stale data for a command that has all of its data.
                if skew & 16 == 0 {
                    r2ts.remove(i);
                }
            } else {
                r2ts[i] = (cccid, ttag, off + n, len - n);
            }
            s.send_with(PduHeader::H2CData(h), &data, skew & 8 != 0);
        }
        11 => {
            let h = DataHeader {
                cccid: cid,
                ttag: inp.u16() & 0x1F,
                datao: inp.u32() & 0xFFFF,
                datal: u32::from(inp.u8()) * 16,
                last_pdu: true,
                success: false,
            };
            let data = vec![0; usize::try_from(h.datal).unwrap_or(0)];
            let bad_digest = inp.u8() & 1 == 1;
            s.send_with(PduHeader::H2CData(h), &data, bad_digest);
        }
        12 => s.send(
            PduHeader::H2CTermReq(TermReq {
                fes: Fes::PDU_SEQUENCE_ERROR,
                fei: 0,
            }),
            &[],
        ),
        13 => {
            let n = s.pending.len();
            if n > 0 {
                let i = usize::from(inp.u8()) % n;
                let fail = (inp.u8() & 3 == 0).then_some(BdevError::Closed);
                s.complete(i, fail);
            }
        }
        14 => s.advance(Duration::from_millis(u64::from(inp.u8()) * 20)),
        15 => {
            s.host_reads = !s.host_reads;
            s.pump();
        }
        16 => s.poke(),
        _ => match inp.u8() % 4 {
            0 => {
                let n = usize::from(inp.u8() & 0x3F);
                let g = inp.bytes(n);
                s.send_garbage(&g);
            }
            1 => {
                let (q, data) = sqe(inp, 0x01, cid);
                s.send_with(PduHeader::CapsuleCmd(CapsuleCmd { sqe: q }), &data, true);
            }
            2 => {
                s.qp.handle_peer_closed("fuzz: peer closed", s.now);
                s.pump();
            }
            _ => {
                if let Some((bufs, _)) = s.qp.poll_transmit() {
                    s.qp.handle_sent(bufs, -32, s.now);
                    s.pump();
                }
            }
        },
    }
}

fn assert_sound(s: &Sim, which: &str) {
    assert!(s.violations.is_empty(), "{which}: {:?}", s.violations);
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let t = target(&mut inp);
    let start = Instant::now();
    let mut admin = Sim::new(&t, start);
    let mut io = Sim::new(&t, start);
    let (mut ar, mut ir) = (R2ts::new(), R2ts::new());
    let mut steps = 0;
    while !inp.done() && steps < 256 {
        steps += 1;
        let cntlid = admin.qp.controller().map_or(0xFFFF, |c| c.cntlid);
        if inp.u8() & 1 == 0 {
            step(&mut inp, &mut admin, &mut ar, 0xFFFF, 0);
        } else {
            step(&mut inp, &mut io, &mut ir, cntlid, 1);
        }
        assert_sound(&admin, "admin");
        assert_sound(&io, "io");
    }
    for s in [&mut admin, &mut io] {
        s.host_reads = true;
        s.pump();
        s.complete_all();
        s.check_quiet();
        assert!(s.violations.is_empty(), "at the end: {:?}", s.violations);
    }
});
