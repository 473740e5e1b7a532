//! Hostile and broken hosts against the target, measured: a host that never reads is held at
//! the connection's bound; connections that end (however they end) give their memory and
//! descriptors back. Each test measures this process's resident memory and descriptors, so the
//! tests of this file run one at a time (`SERIAL`).
#![allow(missing_docs)]

mod common;

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use common::procfs::{eventually, fd_count, rss_kib};
use common::*;
use shoal_nvmf::target::subsystem::TransportConfig;
use shoal_nvmf::wire::pdu::{CapsuleCmd, DataHeader, FrameOptions, PduHeader};
use shoal_nvmf::wire::spec::opcode::io;
use shoal_nvmf::wire::spec::{FabricsType, Sqe, Status};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The bytes of one PDU without digests.
fn encode(h: PduHeader, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 256];
    let e = h
        .encode_header(data.len(), &FrameOptions::default(), &mut out)
        .unwrap();
    out.truncate(e.header_len);
    out.extend_from_slice(data);
    out
}

/// `n` read commands of `blocks` 4 KiB blocks each, as one byte stream, and their CIDs.
fn read_flood(h: &mut TestHost, n: usize, blocks: u32) -> (Vec<u8>, Vec<u16>) {
    let mut bytes = Vec::new();
    let mut cids = Vec::new();
    for i in 0..n {
        let sqe = h.rw_sqe(
            io::READ,
            1,
            (i as u64 * 8) % 4000,
            blocks,
            blocks * 4096,
            false,
        );
        cids.push(sqe.cid());
        bytes.extend(encode(PduHeader::CapsuleCmd(CapsuleCmd { sqe }), &[]));
    }
    (bytes, cids)
}

/// Connection objects alive on the target's reactor (closing ones included).
fn conns(t: &TestTarget) -> usize {
    let tcp = t.tcp.clone();
    t.set.as_ref().unwrap().handles()[0]
        .call(move || tcp.conn_objects())
        .unwrap()
}

fn io_pair(t: &TestTarget) -> (TestHost, TestHost) {
    let mut a = TestHost::admin(t.addr, false, 0);
    assert!(a.set_num_queues(1).status().is_success());
    let q = TestHost::io_queue(t.addr, a.cntlid, 1, false);
    (a, q)
}

const MIB: u64 = 1024;

/// Issue 19, point 1: 8,000 reads of 16 KiB from a host that does not read its socket. Without
/// back-pressure the target queued every answer (about 20 KiB each beyond what the kernel's
/// socket buffers take: well over 100 MiB); with it, the connection stops reading commands at
/// `max_unsent_bytes` and holds at most its bound. When the host reads, every command is
/// answered, in order, and nothing is lost.
#[test]
fn a_host_that_never_reads_is_held_at_the_bound() {
    let _s = serial();
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let (_a, mut q) = io_pair(&t);
    // Warm the pools with one read of each kind.
    assert!(q.read(1, 0, 4, 4096).0.status().is_success());
    let before = rss_kib();

    const N: usize = 8000;
    let (bytes, cids) = read_flood(&mut q, N, 4);
    let mut w = q.sock.try_clone().unwrap();
    // Bursts of 100 commands, so that most find a free slot (the host stays near its queue
    // size, as a real one would) and are answered with data.
    let pdu_len = bytes.len() / N;
    let writer = std::thread::spawn(move || {
        bytes.chunks(100 * pdu_len).all(|burst| {
            std::thread::sleep(Duration::from_millis(2));
            w.write_all(burst).is_ok()
        })
    });
    // Let the target do all it will do.
    std::thread::sleep(Duration::from_millis(2000));
    let peak = rss_kib();
    let grown = peak.saturating_sub(before);
    eprintln!("flood: RSS {before} KiB -> {peak} KiB (+{grown} KiB) with the host not reading");
    assert!(
        grown < 32 * MIB,
        "a host that does not read grew the target by {grown} KiB"
    );

    // Now the host reads: every command is answered once, with its data or (beyond the queue
    // size the host connected with, which this host ignores) a Transient Transport Error.
    q.sock
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answered = std::collections::HashMap::new();
    let (mut data_ok, mut refused) = (0, 0);
    while answered.len() < N {
        let Some((pdu, data)) = q.recv() else {
            panic!("closed after {} answers", answered.len())
        };
        let cid = match pdu {
            PduHeader::C2HData(d) => {
                assert!(d.success, "C2HData with SUCCESS (SQ flow control is off)");
                assert_eq!(data.len(), 16384);
                data_ok += 1;
                d.cccid
            }
            PduHeader::CapsuleResp(r) => {
                assert!(
                    same(r.cqe.status(), Status::TRANSIENT_TRANSPORT_ERROR),
                    "{:?}",
                    r.cqe.status()
                );
                refused += 1;
                r.cqe.cid()
            }
            other => panic!("unexpected {other:?}"),
        };
        *answered.entry(cid).or_insert(0) += 1;
    }
    assert!(cids.iter().all(|c| answered.get(c) == Some(&1)));
    eprintln!("flood: {data_ok} reads answered with data, {refused} beyond the queue size");
    assert!(data_ok > 0);
    assert!(writer.join().unwrap(), "the host's writes all went through");
    drop(q);
    drop(_a);
    assert!(eventually(Duration::from_secs(5), || conns(&t) == 0));
    let after = rss_kib();
    eprintln!("flood: RSS {after} KiB after the host left");
}

/// Issue 19, point 2: 1,000 connect / I/O / disconnect cycles (an admin queue and an I/O queue
/// each) leave resident memory (within 1 MiB) and descriptors where they were after a warm-up
/// of 200 cycles.
#[test]
fn a_thousand_connect_disconnect_cycles_give_memory_and_descriptors_back() {
    let _s = serial();
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let cycle = |i: usize| {
        let (a, mut q) = io_pair(&t);
        let data = pattern(8192, u8::try_from(i % 251).unwrap());
        assert!(q.write(1, 8, &data, 4096, 8192).status().is_success());
        assert_eq!(q.read(1, 8, 2, 4096).1, data);
        let cid = q.cid();
        let (c, _) = q.command(Sqe::new_fabrics(FabricsType::DISCONNECT, cid), &[]);
        assert!(c.status().is_success());
        drop(q);
        drop(a);
    };
    for i in 0..200 {
        cycle(i);
    }
    assert!(eventually(Duration::from_secs(5), || conns(&t) == 0));
    let (rss0, fd0) = (rss_kib(), fd_count());
    for i in 0..1000 {
        cycle(i);
    }
    assert!(eventually(Duration::from_secs(5), || conns(&t) == 0));
    // Descriptors close when the last reference to a connection goes: allow them a moment.
    assert!(
        eventually(Duration::from_secs(5), || fd_count() <= fd0),
        "descriptors: {fd0} before, {} after 1,000 cycles",
        fd_count()
    );
    let rss1 = rss_kib();
    eprintln!(
        "1,000 cycles: RSS {rss0} KiB -> {rss1} KiB, descriptors {fd0} -> {}",
        fd_count()
    );
    // A leak of 1 KiB per cycle (a connection's state, a channel's counters) would show as
    // 1 MiB; the receive buffers alone are 256 KiB per connection.
    assert!(
        rss1 < rss0 + MIB,
        "1,000 cycles grew RSS from {rss0} KiB to {rss1} KiB"
    );
}

/// Issue 19, point 2: hosts that vanish in the middle of a PDU, after an R2T without sending
/// the data, and in the middle of a read flood they do not read: after a warm-up round,
/// 100 more rounds of each leave resident memory and descriptors where they were.
#[test]
fn hosts_vanishing_mid_pdu_mid_r2t_and_mid_flood_leave_nothing_behind() {
    let _s = serial();
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let round = || {
        // Mid-PDU: half a command capsule.
        let (a, mut q) = io_pair(&t);
        let sqe = q.rw_sqe(io::READ, 1, 0, 1, 4096, false);
        let pdu = encode(PduHeader::CapsuleCmd(CapsuleCmd { sqe }), &[]);
        q.send_raw(&pdu[..pdu.len() / 2]);
        drop(q);
        drop(a);
        // Mid-R2T: 32 writes of 128 KiB get their R2Ts; the host sends half of one's data.
        let (a, mut q) = io_pair(&t);
        let mut ttags = Vec::new();
        for i in 0..32u64 {
            let sqe = q.rw_sqe(io::WRITE, 1, i * 32, 32, 131_072, false);
            q.submit(sqe, &[]);
        }
        while ttags.len() < 32 {
            match q.recv() {
                Some((PduHeader::R2t(r), _)) => ttags.push((r.cccid, r.ttag)),
                other => panic!("expected an R2T, got {other:?}"),
            }
        }
        let (cccid, ttag) = ttags[0];
        let dh = DataHeader {
            cccid,
            ttag,
            datao: 0,
            datal: 65_536,
            last_pdu: false,
            success: false,
        };
        let pdu = encode(PduHeader::H2CData(dh), &[7u8; 65_536]);
        q.send_raw(&pdu[..40_000]);
        drop(q);
        drop(a);
        // Mid-flood: 3,000 reads of 16 KiB never read, then the host goes.
        let (a, mut q) = io_pair(&t);
        let (bytes, _) = read_flood(&mut q, 3000, 4);
        q.send_raw(&bytes);
        std::thread::sleep(Duration::from_millis(50));
        drop(q);
        drop(a);
    };
    round();
    assert!(eventually(Duration::from_secs(10), || conns(&t) == 0));
    let (rss0, fd0) = (rss_kib(), fd_count());
    for _ in 0..100 {
        round();
    }
    assert!(
        eventually(Duration::from_secs(10), || conns(&t) == 0),
        "{} connections left",
        conns(&t)
    );
    assert!(
        eventually(Duration::from_secs(10), || fd_count() <= fd0),
        "descriptors: {fd0} before, {} after",
        fd_count()
    );
    let rss1 = rss_kib();
    eprintln!(
        "100 rounds of vanishing hosts: RSS {rss0} KiB -> {rss1} KiB, descriptors {fd0} -> {}",
        fd_count()
    );
    assert!(
        rss1 < rss0 + 2 * MIB,
        "vanishing hosts grew RSS from {rss0} KiB to {rss1} KiB"
    );
}

/// A connection that never sends its ICReq holds a small buffer (not a receive buffer for the
/// largest PDU, 256 KiB by default) and is closed after `ic_timeout_ms`.
#[test]
fn connections_without_an_icreq_hold_little_and_are_closed_in_time() {
    let _s = serial();
    let transport = TransportConfig {
        ic_timeout_ms: 1500,
        ..TransportConfig::default()
    };
    let t = TestTarget::start(&[4096], transport);
    let (rss0, fd0) = (rss_kib(), fd_count());
    const N: usize = 300;
    let mut socks: Vec<std::net::TcpStream> = (0..N)
        .map(|_| std::net::TcpStream::connect(t.addr).unwrap())
        .collect();
    assert!(eventually(Duration::from_secs(5), || conns(&t) == N));
    let rss1 = rss_kib();
    let grown = rss1.saturating_sub(rss0);
    eprintln!("{N} connections without ICReq: RSS {rss0} KiB -> {rss1} KiB (+{grown} KiB)");
    assert!(
        grown < 8 * MIB,
        "{N} idle connections took {grown} KiB (256 KiB each before the fix)"
    );
    // Closed by the target after the timeout: each socket reads the end of the stream.
    let start = std::time::Instant::now();
    for s in &mut socks {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 8];
        let n = std::io::Read::read(s, &mut b).unwrap_or(0);
        assert_eq!(n, 0, "the target closes a connection without ICReq");
    }
    let waited = start.elapsed();
    eprintln!("closed after {waited:?} (ic_timeout_ms 1500)");
    assert!(
        waited >= Duration::from_millis(1000),
        "not before the timeout"
    );
    drop(socks);
    assert!(eventually(Duration::from_secs(5), || conns(&t) == 0));
    assert!(eventually(Duration::from_secs(5), || fd_count() <= fd0));
}

/// A connection that ends while its host neither reads nor closes its socket (here a host
/// flooding reads whose controller is reset, which deletes the I/O queue) would keep its last
/// send, and all it holds, for ever: it is shut after the 5 s linger.
#[test]
fn a_closing_connection_whose_host_does_not_read_is_shut_after_the_linger() {
    let _s = serial();
    let t = TestTarget::start(&[4096], TransportConfig::default());
    let (mut a, mut q) = io_pair(&t);
    let (bytes, _) = read_flood(&mut q, 4000, 4);
    let pdu_len = bytes.len() / 4000;
    let mut w = q.sock.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for burst in bytes.chunks(100 * pdu_len) {
            std::thread::sleep(Duration::from_millis(2));
            if w.write_all(burst).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(conns(&t), 2);
    // CC.EN = 0: the I/O queue is deleted; its connection closes but cannot send.
    assert!(
        a.prop_set(0x14, (6 << 16) | (4 << 20))
            .status()
            .is_success()
    );
    let start = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || conns(&t) == 1),
        "the flooded I/O queue's connection is still alive"
    );
    let took = start.elapsed();
    eprintln!("closing connection with a host that does not read: gone after {took:?}");
    assert!(
        took >= Duration::from_secs(4),
        "gone before the linger: {took:?}"
    );
    drop(q);
    let _ = writer.join();
}
