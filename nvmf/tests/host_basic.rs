//! The host side against Shoal's own target over loopback: connect, identify, I/O of every
//! size class (in-capsule, one R2T, several R2Ts, split beyond MDTS), digests, deep queues,
//! statuses, queue limits and disconnect.
#![allow(missing_docs, clippy::cast_possible_truncation)]

mod common;
mod host_common;

use std::time::Duration;

use host_common::*;
use shoal_bdev::{BdevError, BdevIo, ErrorKind, IoType};
use shoal_nvmf::host::{
    Controller, ControllerState, HostError, IoQueuePair, NamespaceInfo, QueueState, host_error,
};
use shoal_nvmf::target::subsystem::TransportConfig;
use shoal_nvmf::wire::spec::Status;

const BLOCKS_4K: u64 = 4096; // 16 MiB
const BLOCKS_512: u64 = 32768; // 16 MiB

/// Writes `data` at `slba` and reads it back through `qp`.
fn write_read(d: &Driver, qp: &IoQueuePair, ns: &NamespaceInfo, slba: u64, data: &[u8]) {
    let bs = ns.block_size as usize;
    let blocks = (data.len() / bs) as u64;
    qp.submit(ns, BdevIo::write(slba, blocks, sg(data)), d.sink(), 1);
    let (_, _, r) = d.wait(1).pop().unwrap();
    r.unwrap_or_else(|e| panic!("write of {} bytes: {e}", data.len()));
    qp.submit(
        ns,
        BdevIo::read(slba, blocks, sg_zeroed(&[data.len()])),
        d.sink(),
        2,
    );
    let (_, io, r) = d.wait(1).pop().unwrap();
    r.unwrap_or_else(|e| panic!("read of {} bytes: {e}", data.len()));
    assert!(
        flatten(&io.bufs) == data,
        "{} bytes at {slba} read back",
        data.len()
    );
}

fn connect_and_verify(digests: bool) {
    let t = start_target(
        &[(4096, BLOCKS_4K), (512, BLOCKS_512)],
        TransportConfig::default(),
        free_port(),
    );
    let host = host_reactors();
    let mut opts = options(t.addr);
    opts.header_digest = digests;
    opts.data_digest = digests;
    let ctrl = Controller::connect(&host.handles()[0], opts).unwrap();
    assert_eq!(ctrl.state(), ControllerState::Connected);
    let info = ctrl.info().unwrap();
    assert_eq!(
        info.mdts_bytes,
        Some(128 << 10),
        "MDTS of the default transport"
    );
    assert_eq!(info.max_transfer, 128 << 10);
    assert_eq!(info.in_capsule, 8192, "IOCCSZ * 16 - 64");
    assert_eq!(info.subnqn, common::NQN);
    assert_eq!(info.io_queues, 4);
    assert_eq!(info.cntlid, ctrl.cntlid());
    let nss = ctrl.namespaces();
    assert_eq!(nss.len(), 2);
    assert_eq!(
        (nss[0].nsid, nss[0].block_size, nss[0].num_blocks),
        (1, 4096, BLOCKS_4K)
    );
    assert_eq!(
        (nss[1].nsid, nss[1].block_size, nss[1].num_blocks),
        (2, 512, BLOCKS_512)
    );
    assert!(
        nss.iter().all(|n| n.stable_uuid().is_some()),
        "UUID or NGUID reported"
    );

    let d = Driver::new();
    let qp = IoQueuePair::open(&ctrl).unwrap();
    d.until("the I/O queue to connect", || {
        qp.state() == QueueState::Connected
    });
    assert_eq!(qp.depth(), 128);
    for ns in &nss {
        // In-capsule (<= 8 KiB), one R2T (16 KiB, 128 KiB), split beyond MDTS (1 MiB).
        for (i, len) in [4096usize, 8192, 16384, 128 << 10, 1 << 20]
            .into_iter()
            .enumerate()
        {
            let data = pattern(len, ns.nsid * 100 + i as u32);
            write_read(&d, &qp, ns, 300 * i as u64, &data);
        }
        // Scattered buffers, in and out.
        let data = pattern(24 << 10, 77);
        let parts = [&data[..4096], &data[4096..12288], &data[12288..]];
        let bufs = parts
            .iter()
            .map(|p| shoal_bdev::IoBuf::copy_from(p))
            .collect();
        let blocks = (data.len() / ns.block_size as usize) as u64;
        qp.submit(ns, BdevIo::write(4000, blocks, bufs), d.sink(), 3);
        d.wait(1).pop().unwrap().2.unwrap();
        let out = sg_zeroed(&[512, 20480, 3584]);
        qp.submit(ns, BdevIo::read(4000, blocks, out), d.sink(), 4);
        let (_, io, r) = d.wait(1).pop().unwrap();
        r.unwrap();
        assert_eq!(io.bufs.len(), 3);
        assert!(flatten(&io.bufs) == data);
    }
    drop(qp);
    ctrl.disconnect().unwrap();
    assert_eq!(ctrl.state(), ControllerState::Closed);
}

#[test]
fn connect_identify_write_read() {
    connect_and_verify(false);
}

#[test]
fn connect_identify_write_read_with_digests() {
    connect_and_verify(true);
}

#[test]
fn several_r2ts_and_no_in_capsule_data() {
    // MAXH2CDATA 8 KiB: the target asks for a 64 KiB write in 8 R2Ts; no in-capsule data on
    // I/O queues (IOCCSZ 4): even 512 bytes go through R2T.
    let transport = TransportConfig {
        io_unit_size: 8192,
        in_capsule_data_size: 0,
        ..TransportConfig::default()
    };
    let t = start_target(&[(512, BLOCKS_512)], transport, free_port());
    let host = host_reactors();
    let mut opts = options(t.addr);
    opts.data_digest = true;
    let ctrl = Controller::connect(&host.handles()[0], opts).unwrap();
    assert_eq!(ctrl.info().unwrap().in_capsule, 0);
    let ns = ctrl.namespace(1).unwrap();
    let d = Driver::new();
    let qp = IoQueuePair::open(&ctrl).unwrap();
    for (i, len) in [512usize, 4096, 64 << 10, 300 << 10]
        .into_iter()
        .enumerate()
    {
        write_read(&d, &qp, &ns, 1000 * i as u64, &pattern(len, i as u32));
    }
}

#[test]
fn deep_queue_and_more_requests_than_slots() {
    let t = start_target(
        &[(4096, BLOCKS_4K)],
        TransportConfig::default(),
        free_port(),
    );
    let host = host_reactors();
    let mut opts = options(t.addr);
    opts.io_queue_depth = 16;
    let ctrl = Controller::connect(&host.handles()[0], opts).unwrap();
    let ns = ctrl.namespace(1).unwrap();
    let d = Driver::new();
    let qp = IoQueuePair::open(&ctrl).unwrap();
    assert_eq!(qp.depth(), 16);
    // 500 requests on 16 slots, submitted before the queue is even connected.
    let n = 500u64;
    for i in 0..n {
        let io = BdevIo::write(i * 3, 2, sg(&pattern(8192, i as u32)));
        qp.submit(&ns, io, d.sink(), i);
    }
    assert_eq!(qp.outstanding(), n as usize);
    let done = d.wait(n as usize);
    let mut tags: Vec<u64> = done.iter().map(|x| x.0).collect();
    tags.sort_unstable();
    assert_eq!(tags, (0..n).collect::<Vec<_>>(), "every tag completes once");
    assert!(done.iter().all(|x| x.2.is_ok()));
    for i in 0..n {
        qp.submit(&ns, BdevIo::read(i * 3, 2, sg_zeroed(&[8192])), d.sink(), i);
    }
    for (tag, io, r) in d.wait(n as usize) {
        r.unwrap();
        assert_eq!(io.offset_blocks, tag * 3);
        assert!(
            flatten(&io.bufs) == pattern(8192, tag as u32),
            "request {tag}"
        );
    }
    assert_eq!(qp.outstanding(), 0);
}

#[test]
fn zeroes_deallocate_flush_and_statuses() {
    let t = start_target(
        &[(4096, BLOCKS_4K)],
        TransportConfig::default(),
        free_port(),
    );
    let host = host_reactors();
    let ctrl = Controller::connect(&host.handles()[0], options(t.addr)).unwrap();
    let ns = ctrl.namespace(1).unwrap();
    let d = Driver::new();
    let qp = IoQueuePair::open(&ctrl).unwrap();
    assert!(qp.supports(IoType::WriteZeroes) && qp.supports(IoType::Unmap));
    let data = pattern(16 * 4096, 5);
    write_read(&d, &qp, &ns, 100, &data);
    qp.submit(&ns, BdevIo::write_zeroes(102, 2), d.sink(), 1);
    qp.submit(&ns, BdevIo::unmap(110, 4), d.sink(), 2);
    qp.submit(&ns, BdevIo::flush(), d.sink(), 3);
    assert!(d.wait(3).iter().all(|x| x.2.is_ok()));
    qp.submit(
        &ns,
        BdevIo::read(100, 16, sg_zeroed(&[16 * 4096])),
        d.sink(),
        4,
    );
    let (_, io, r) = d.wait(1).pop().unwrap();
    r.unwrap();
    let mut want = data.clone();
    want[2 * 4096..4 * 4096].fill(0);
    want[10 * 4096..14 * 4096].fill(0);
    assert!(flatten(&io.bufs) == want);

    // Checked here: out of range, bad lengths, zero blocks.
    qp.submit(
        &ns,
        BdevIo::read(BLOCKS_4K, 1, sg_zeroed(&[4096])),
        d.sink(),
        5,
    );
    qp.submit(
        &ns,
        BdevIo::read(u64::MAX, 2, sg_zeroed(&[8192])),
        d.sink(),
        6,
    );
    qp.submit(&ns, BdevIo::write(0, 1, sg_zeroed(&[512])), d.sink(), 7);
    qp.submit(&ns, BdevIo::unmap(0, 0), d.sink(), 8);
    for (tag, _, r) in d.wait(4) {
        let kind = r.unwrap_err().kind();
        let want = if tag == 7 {
            ErrorKind::InvalidRequest
        } else {
            ErrorKind::OutOfRange
        };
        assert_eq!(kind, want, "request {tag}");
    }
    // Checked by the target: a namespace that claims more blocks than it has gets LBA Out of
    // Range back, and one that does not exist Invalid Namespace, as typed host errors.
    let big = NamespaceInfo {
        num_blocks: BLOCKS_4K * 2,
        ..ns.clone()
    };
    qp.submit(
        &big,
        BdevIo::read(BLOCKS_4K, 1, sg_zeroed(&[4096])),
        d.sink(),
        9,
    );
    let (_, _, r) = d.wait(1).pop().unwrap();
    assert!(
        matches!(
            r,
            Err(BdevError::OutOfRange {
                offset: BLOCKS_4K,
                count: 1,
                ..
            })
        ),
        "{r:?}"
    );
    let missing = NamespaceInfo {
        nsid: 9,
        ..ns.clone()
    };
    qp.submit(
        &missing,
        BdevIo::read(0, 1, sg_zeroed(&[4096])),
        d.sink(),
        10,
    );
    let (_, _, r) = d.wait(1).pop().unwrap();
    let e = r.unwrap_err();
    match host_error(&e) {
        Some(HostError::Status { status }) => {
            assert_eq!(
                (status.sct, status.sc),
                (Status::INVALID_NAMESPACE.sct, Status::INVALID_NAMESPACE.sc)
            )
        }
        other => panic!("{e}: {other:?}"),
    }
    // The queue carries on.
    write_read(&d, &qp, &ns, 0, &pattern(4096, 1));
}

#[test]
fn queues_are_limited_to_what_the_controller_grants() {
    let t = start_target(
        &[(4096, BLOCKS_4K)],
        TransportConfig::default(),
        free_port(),
    );
    let host = host_reactors();
    let mut opts = options(t.addr);
    opts.io_queues = 2;
    let ctrl = Controller::connect(&host.handles()[0], opts).unwrap();
    let _d = Driver::new();
    let a = IoQueuePair::open(&ctrl).unwrap();
    let b = IoQueuePair::open(&ctrl).unwrap();
    assert_ne!(a.qid(), b.qid());
    assert!(matches!(
        IoQueuePair::open(&ctrl),
        Err(HostError::NoQueues(2))
    ));
    let qid = a.qid();
    drop(a);
    let c = IoQueuePair::open(&ctrl).unwrap();
    assert_eq!(c.qid(), qid, "a closed queue's QID is free again");
}

#[test]
fn disconnect_fails_outstanding_and_later_io() {
    let t = start_target(
        &[(4096, BLOCKS_4K)],
        TransportConfig::default(),
        free_port(),
    );
    let host = host_reactors();
    let ctrl = Controller::connect(&host.handles()[0], options(t.addr)).unwrap();
    let ns = ctrl.namespace(1).unwrap();
    let d = Driver::new();
    let qp = IoQueuePair::open(&ctrl).unwrap();
    write_read(&d, &qp, &ns, 0, &pattern(4096, 1));
    let sub = t.target.subsystem(common::NQN).unwrap();
    assert_eq!(sub.controllers().len(), 1);
    ctrl.disconnect().unwrap();
    d.until("the queue to close", || qp.state() == QueueState::Failed);
    qp.submit(&ns, BdevIo::read(0, 1, sg_zeroed(&[4096])), d.sink(), 1);
    let (_, _, r) = d.wait(1).pop().unwrap();
    assert!(matches!(r, Err(BdevError::Closed)), "{r:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !sub.controllers().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        sub.controllers().is_empty(),
        "the target's controller is gone"
    );
}

#[test]
fn connect_failures_are_typed() {
    let host = host_reactors();
    // Nobody listening.
    let mut o = options("127.0.0.1:1".parse().unwrap());
    o.port = free_port();
    match Controller::connect(&host.handles()[0], o) {
        Err(HostError::Io { .. }) => {}
        other => panic!("{other:?}"),
    }
    // A subsystem the target does not have: Connect Invalid Parameters.
    let t = start_target(&[(4096, 256)], TransportConfig::default(), free_port());
    let mut o = options(t.addr);
    o.subnqn = "nqn.2016-06.io.shoal:nope".into();
    match Controller::connect(&host.handles()[0], o) {
        Err(HostError::ConnectRefused { status, .. }) => {
            assert_eq!(status.sc, Status::CONNECT_INVALID_PARAMETERS.sc)
        }
        other => panic!("{other:?}"),
    }
}
