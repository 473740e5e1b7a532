//! Unit tests of the sans-IO queue pair: sequences of PDUs through [`Sim`], no socket, no
//! reactor, a clock moved by hand (as quinn-proto's tests drive a connection).
//!
//! - `order`: every PDU type in and out of order, command sequencing, CIDs, queue limits;
//! - `r2t`: writes, compares and dataset management through in-capsule data and R2T flows;
//! - `digests`: header and data digests, good and bad;
//! - `ends`: a termination at every state, Disconnect, controller reset, timers;
//! - `backpressure`: a host that never reads;
//! - `sqhd`: the SUCCESS flag and SQHD on queues with SQ flow control.

mod backpressure;
mod digests;
mod ends;
mod order;
mod r2t;
mod sqhd;

use std::sync::Arc;
use std::time::Instant;

use shoal_bdev::malloc::MallocBdev;

use super::sim::{Sim, listen_address};
use crate::target::subsystem::{SubsystemOptions, Target, TransportConfig};
use crate::wire::pdu::{DataHeader, PduHeader};
use crate::wire::spec::opcode::admin;
use crate::wire::spec::{Cqe, FabricsType, Opcode, SglDescriptor, Sqe, Status};

pub(super) const NQN: &str = "nqn.2016-06.io.shoal:sim";
pub(super) const HOSTNQN: &str =
    "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555";
/// Block size and blocks of the test namespace (NSID 1, device "SimDisk").
pub(super) const BS: u32 = 4096;
pub(super) const BLOCKS: u64 = 256;

/// A target with one subsystem listening on [`listen_address`] and one RAM namespace.
pub(super) fn target(t: TransportConfig) -> Arc<Target> {
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
    let b = MallocBdev::create("SimDisk", None, BLOCKS, BS).unwrap();
    sub.add_namespace(b, None, None, None, None).unwrap();
    sub.add_listener(listen_address()).unwrap();
    target
}

pub(super) fn now() -> Instant {
    Instant::now()
}

/// A Connect SQE (SQ flow control disabled when `no_flow`).
pub(super) fn connect_sqe(cid: u16, qid: u16, sqsize: u16, no_flow: bool) -> Sqe {
    let mut sqe = Sqe::new_fabrics(FabricsType::CONNECT, cid);
    sqe.cdw10.set(u32::from(qid) << 16);
    sqe.cdw11
        .set(u32::from(sqsize) | (u32::from(no_flow) << 18));
    sqe.dptr = SglDescriptor::in_capsule(1024);
    sqe
}

/// The Connect data for controller `cntlid` of [`NQN`].
pub(super) fn connect_data(cntlid: u16) -> Vec<u8> {
    super::sim::connect_data(cntlid, NQN, HOSTNQN)
}

/// Sends Connect and returns its response.
pub(super) fn connect(s: &mut Sim, cid: u16, qid: u16, cntlid: u16, kato: u32) -> Cqe {
    let mut sqe = connect_sqe(cid, qid, 31, true);
    sqe.cdw12.set(kato);
    s.capsule(sqe, &connect_data(cntlid));
    resp(s)
}

/// A Property Set of CC (EN = 1 or 0).
pub(super) fn set_cc(s: &mut Sim, cid: u16, en: bool) -> Cqe {
    let mut sqe = Sqe::new_fabrics(FabricsType::PROPERTY_SET, cid);
    sqe.cdw11.set(0x14);
    sqe.cdw12.set(u32::from(en) | (6 << 16) | (4 << 20));
    s.capsule(sqe, &[]);
    resp(s)
}

/// ICReq and the ICResp.
pub(super) fn ic(s: &mut Sim, digests: bool) {
    s.ic_req(digests, digests);
    match s.next_pdu() {
        Some((PduHeader::IcResp(r), _)) => {
            assert_eq!((r.digests.header, r.digests.data), (digests, digests));
        }
        other => panic!("expected ICResp, got {other:?}"),
    }
}

/// An enabled admin queue; returns it and its controller ID.
pub(super) fn admin_queue(t: &Arc<Target>, digests: bool, kato: u32) -> (Sim, u16) {
    let mut s = Sim::new(t, now());
    ic(&mut s, digests);
    let c = connect(&mut s, 1, 0, 0xFFFF, kato);
    assert!(c.status().is_success(), "admin Connect: {:?}", c.status());
    let cntlid = u16::try_from(c.dw0.get() & 0xFFFF).unwrap();
    assert!(set_cc(&mut s, 2, true).status().is_success());
    (s, cntlid)
}

/// I/O queue `qid` of controller `cntlid`.
pub(super) fn io_queue(t: &Arc<Target>, cntlid: u16, qid: u16, digests: bool) -> Sim {
    let mut s = Sim::new(t, now());
    ic(&mut s, digests);
    let c = connect(&mut s, 1, qid, cntlid, 0);
    assert!(c.status().is_success(), "I/O Connect: {:?}", c.status());
    s
}

/// An admin queue and I/O queue 1 of its controller.
pub(super) fn pair(t: TransportConfig, digests: bool) -> (Arc<Target>, Sim, Sim) {
    let t = target(t);
    let (a, cntlid) = admin_queue(&t, digests, 0);
    let q = io_queue(&t, cntlid, 1, digests);
    (t, a, q)
}

/// A read, write or compare SQE on NSID 1.
pub(super) fn rw(op: Opcode, cid: u16, slba: u64, nlb: u32, in_capsule: bool) -> Sqe {
    let mut sqe = Sqe::new(op, cid);
    sqe.nsid.set(1);
    sqe.cdw10.set((slba & 0xFFFF_FFFF) as u32);
    sqe.cdw11.set((slba >> 32) as u32);
    sqe.cdw12.set(nlb.wrapping_sub(1) & 0xFFFF);
    let len = nlb * BS;
    sqe.dptr = if in_capsule {
        SglDescriptor::in_capsule(len)
    } else {
        SglDescriptor::transport(len)
    };
    sqe
}

/// An Identify Controller SQE.
pub(super) fn identify(cid: u16) -> Sqe {
    let mut sqe = Sqe::new(admin::IDENTIFY, cid);
    sqe.cdw10.set(1);
    sqe.dptr = SglDescriptor::transport(4096);
    sqe
}

/// An H2CData header.
pub(super) fn h2c(cccid: u16, ttag: u16, datao: u32, datal: u32, last: bool) -> PduHeader {
    PduHeader::H2CData(DataHeader {
        cccid,
        ttag,
        datao,
        datal,
        last_pdu: last,
        success: false,
    })
}

/// The next PDU, which must be a response capsule.
pub(super) fn resp(s: &mut Sim) -> Cqe {
    match s.next_pdu() {
        Some((PduHeader::CapsuleResp(r), _)) => r.cqe,
        other => panic!("expected a CapsuleResp, got {other:?}"),
    }
}

/// The next PDU, which must be a C2HTermReq; returns its FES.
pub(super) fn term(s: &mut Sim) -> u16 {
    match s.next_pdu() {
        Some((PduHeader::C2HTermReq(t), _)) => t.fes.0,
        other => panic!("expected a C2HTermReq, got {other:?}"),
    }
}

/// Same status code type and code, whatever DNR says.
pub(super) fn same(a: Status, b: Status) -> bool {
    a.sct == b.sct && a.sc == b.sc
}

/// No invariant broken, and the queue's accounting adds up when quiet.
pub(super) fn sound(s: &mut Sim) {
    s.check_quiet();
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

/// Bytes of a pattern.
pub(super) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i % 251).unwrap() ^ seed.wrapping_mul(17))
        .collect()
}
