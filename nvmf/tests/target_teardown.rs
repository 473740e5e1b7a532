//! How queues end: a queue ID is free for a new Connect as soon as its queue has ended, by
//! Disconnect, by a termination request from either side, by a socket error or by a keep-alive
//! timeout; Disconnect on the admin queue and a controller reset (CC.EN 1 -> 0) behave as the
//! specifications say. Each test is a misbehaving or recovering host on a real socket.
#![allow(missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use shoal_nvmf::target::subsystem::TransportConfig;
use shoal_nvmf::wire::pdu::{Digests, Fes, IcReq, PduHeader, TermReq};
use shoal_nvmf::wire::spec::{Cqe, FabricsType, Sqe, Status};

/// CC with EN = 1, IOSQES = 6, IOCQES = 4.
const CC_ENABLED: u32 = 1 | (6 << 16) | (4 << 20);
/// CC with EN = 0 (the queue entry sizes kept).
const CC_DISABLED: u32 = (6 << 16) | (4 << 20);

fn disconnect(h: &mut TestHost) -> Cqe {
    let cid = h.cid();
    let sqe = Sqe::new_fabrics(FabricsType::DISCONNECT, cid);
    h.command(sqe, &[]).0
}

/// Waits until the target has closed `h`'s connection (its socket reads end of file).
fn wait_closed(h: &mut TestHost) {
    h.sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    while let Some((pdu, _)) = h.recv() {
        assert!(
            matches!(pdu, PduHeader::C2HTermReq(_) | PduHeader::CapsuleResp(_)),
            "unexpected PDU while waiting for the close: {pdu:?}"
        );
    }
}

/// An I/O Connect for `qid` of controller `cntlid`: its completion.
fn try_io_connect(t: &TestTarget, cntlid: u16, qid: u16) -> (TestHost, Cqe) {
    let mut h = TestHost::connect(t.addr);
    h.ic(false, false);
    h.cntlid = cntlid;
    let c = h.fabrics_connect(qid, 127, 0);
    (h, c)
}

/// The queue ID is accepted again within `limit` (the target learns of a vanished host only
/// when its socket reports the close, so a few retries are allowed for that case alone).
fn reconnects_within(t: &TestTarget, cntlid: u16, qid: u16, limit: Duration) -> TestHost {
    let start = Instant::now();
    loop {
        let (h, c) = try_io_connect(t, cntlid, qid);
        if c.status().is_success() {
            return h;
        }
        assert!(
            start.elapsed() < limit,
            "QID {qid} still refused after {limit:?}: {:?}",
            c.status()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn admin_with_queues(t: &TestTarget, kato: u32) -> TestHost {
    let mut a = TestHost::admin(t.addr, false, kato);
    assert!(a.set_num_queues(2).status().is_success());
    a
}

/// NVMe Base 2.0, section 6.4: a Disconnect deletes its I/O queue; the QID can be connected
/// again at once (before the fix the second Connect got 82h, Connect Invalid Parameters).
#[test]
fn qid_is_free_after_disconnect() {
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let a = admin_with_queues(&t, 0);
    for round in 0..20 {
        let mut q = TestHost::io_queue(t.addr, a.cntlid, 1, false);
        let c = disconnect(&mut q);
        assert!(c.status().is_success(), "round {round}: {:?}", c.status());
        wait_closed(&mut q);
        let (_, again) = try_io_connect(&t, a.cntlid, 1);
        assert!(
            again.status().is_success(),
            "round {round}: QID 1 refused after Disconnect: {:?}",
            again.status()
        );
    }
}

/// NVMe/TCP 1.0, section 3.6.2.9: an H2CTermReq ends the connection, and with it the queue.
#[test]
fn qid_is_free_after_h2c_term_req() {
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let a = admin_with_queues(&t, 0);
    for round in 0..20 {
        let mut q = TestHost::io_queue(t.addr, a.cntlid, 2, false);
        q.send_pdu(
            PduHeader::H2CTermReq(TermReq {
                fes: Fes::INVALID_HEADER_FIELD,
                fei: 0,
            }),
            &[],
        );
        wait_closed(&mut q);
        let (_, again) = try_io_connect(&t, a.cntlid, 2);
        assert!(
            again.status().is_success(),
            "round {round}: QID 2 refused after H2CTermReq: {:?}",
            again.status()
        );
    }
}

/// A protocol error ends the queue from the target's side (C2HTermReq): the QID is free.
#[test]
fn qid_is_free_after_c2h_term_req() {
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let a = admin_with_queues(&t, 0);
    let mut q = TestHost::io_queue(t.addr, a.cntlid, 1, false);
    // An ICReq on an established connection is a PDU sequence error.
    q.send_pdu(
        PduHeader::IcReq(IcReq {
            pfv: 0,
            hpda: 0,
            digests: Digests::default(),
            maxr2t: 0,
        }),
        &[],
    );
    let mut got_term = false;
    q.sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    while let Some((pdu, _)) = q.recv() {
        got_term |= matches!(pdu, PduHeader::C2HTermReq(_));
    }
    assert!(
        got_term,
        "the target should have answered with a C2HTermReq"
    );
    let (_, again) = try_io_connect(&t, a.cntlid, 1);
    assert!(again.status().is_success(), "{:?}", again.status());
}

/// A host that vanishes (closes its socket without a word): the QID comes back as soon as the
/// target reads the end of the stream.
#[test]
fn qid_is_free_after_the_host_vanishes() {
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let a = admin_with_queues(&t, 0);
    for _ in 0..10 {
        let q = TestHost::io_queue(t.addr, a.cntlid, 1, false);
        drop(q);
        reconnects_within(&t, a.cntlid, 1, Duration::from_secs(2));
    }
}

/// NVMe Base 2.0, section 3.9: a keep-alive timeout fails the controller; its queues end and
/// the host's new association gets the same QIDs.
#[test]
fn queues_end_with_a_keep_alive_timeout() {
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let mut a = admin_with_queues(&t, 300);
    let mut q = TestHost::io_queue(t.addr, a.cntlid, 1, false);
    // No Keep Alive: both queues are closed by the target.
    wait_closed(&mut q);
    wait_closed(&mut a);
    let a2 = admin_with_queues(&t, 0);
    let (_, c) = try_io_connect(&t, a2.cntlid, 1);
    assert!(c.status().is_success(), "{:?}", c.status());
}

/// NVMe Base 2.0, section 6.4: "If the Disconnect command is submitted on the Admin Queue, the
/// controller shall abort the command with a status code of Invalid Queue Type"; the admin
/// queue and the controller's I/O queues carry on.
#[test]
fn disconnect_on_the_admin_queue_is_invalid_queue_type() {
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let mut a = admin_with_queues(&t, 0);
    let mut q = TestHost::io_queue(t.addr, a.cntlid, 1, false);
    let c = disconnect(&mut a);
    assert!(
        same(c.status(), Status::INVALID_QUEUE_TYPE),
        "Disconnect on the admin queue: {:?}",
        c.status()
    );
    // The admin queue still answers, and so does the I/O queue.
    assert!(a.identify(1, 0).0.status().is_success());
    let data = pattern(4096, 3);
    assert!(q.write(1, 0, &data, 4096, 4096).status().is_success());
    let (c, back) = q.read(1, 0, 1, 4096);
    assert!(c.status().is_success());
    assert_eq!(back, data);
}

/// NVMe Base 2.0, section 3.7.2: CC.EN 1 -> 0 is a controller reset. It deletes the I/O queues
/// (their connections close) and keeps the admin queue, on which the host enables the
/// controller again and connects new I/O queues with the same QIDs.
#[test]
fn cc_en_0_resets_the_controller_and_keeps_the_admin_queue() {
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let mut a = admin_with_queues(&t, 0);
    let mut q1 = TestHost::io_queue(t.addr, a.cntlid, 1, false);
    let mut q2 = TestHost::io_queue(t.addr, a.cntlid, 2, false);
    let data = pattern(8192, 9);
    assert!(q1.write(1, 16, &data, 4096, 8192).status().is_success());

    assert!(a.prop_set(0x14, CC_DISABLED).status().is_success());
    assert_eq!(a.prop_get(0x1c, false) & 1, 0, "CSTS.RDY after the reset");
    wait_closed(&mut q1);
    wait_closed(&mut q2);
    // Not ready: commands other than fabrics ones wait for CC.EN = 1 (section 3.5.1).
    assert!(same(
        a.identify(1, 0).0.status(),
        Status::COMMAND_SEQUENCE_ERROR
    ));
    // An I/O Connect while disabled is refused.
    let (_, early) = try_io_connect(&t, a.cntlid, 1);
    assert!(!early.status().is_success(), "I/O Connect before CC.EN = 1");

    let cntlid = a.cntlid;
    assert!(a.prop_set(0x14, CC_ENABLED).status().is_success());
    assert_eq!(
        a.prop_get(0x1c, false) & 1,
        1,
        "CSTS.RDY after enabling again"
    );
    assert!(a.identify(1, 0).0.status().is_success());
    assert!(a.set_num_queues(2).status().is_success());
    for qid in [1, 2] {
        let (_, c) = try_io_connect(&t, cntlid, qid);
        assert!(c.status().is_success(), "QID {qid}: {:?}", c.status());
    }
    let mut q = reconnects_within(&t, cntlid, 1, Duration::from_secs(1));
    let (c, back) = q.read(1, 16, 2, 4096);
    assert!(c.status().is_success());
    assert_eq!(back, data, "the namespace kept its data across the reset");
}

/// A host that reconnects its I/O queue again and again on one controller: the controller and
/// the namespace's device keep one set of counters per live queue or channel (not per queue
/// ever connected), and the SMART log still counts every command (NVMe Base 2.0, section
/// 5.16.1.3: Host Write Commands).
#[test]
fn reconnected_queues_do_not_grow_the_controller() {
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let mut a = admin_with_queues(&t, 0);
    for i in 0..50u8 {
        let mut q = TestHost::io_queue(t.addr, a.cntlid, 1, false);
        assert!(
            q.write(1, 0, &pattern(4096, i), 4096, 4096)
                .status()
                .is_success()
        );
        assert!(disconnect(&mut q).status().is_success());
        wait_closed(&mut q);
    }
    let ctrl = t
        .target
        .subsystem(NQN)
        .unwrap()
        .controller(a.cntlid)
        .unwrap();
    assert_eq!(
        ctrl.counters.live_queues(),
        1,
        "only the admin queue is live"
    );
    let (c, smart) = a.log_page(0x02, 512, 0);
    assert!(c.status().is_success());
    let writes = u64::from_le_bytes(smart[80..88].try_into().unwrap());
    assert_eq!(
        writes, 50,
        "Host Write Commands counts the ended queues' writes"
    );
    // Each I/O queue opened a channel to the namespace's device: none is left open, and the
    // device's counters still hold their writes.
    let bdev = t.target.subsystem(NQN).unwrap().namespace(1).unwrap().bdev;
    assert_eq!(bdev.info().open_channels(), 0);
    assert_eq!(bdev.info().iostat().num_write_ops, 50);
}
