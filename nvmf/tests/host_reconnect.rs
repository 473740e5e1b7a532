//! Losing the target: killed mid-run and restarted on the same port (the host reconnects and
//! completes what was outstanding), or gone for good (after the controller-loss timeout every
//! request fails with a clear error).
#![allow(missing_docs, clippy::cast_possible_truncation)]

mod common;
mod host_common;

use std::time::{Duration, Instant};

use host_common::*;
use shoal_bdev::{BdevError, BdevIo};
use shoal_nvmf::host::{
    Controller, ControllerState, HostError, IoQueuePair, QueueState, host_error,
};
use shoal_nvmf::target::subsystem::TransportConfig;

const BLOCKS: u64 = 4096;

fn fast_options(addr: std::net::SocketAddr) -> shoal_nvmf::host::ConnectOptions {
    let mut o = options(addr);
    o.reconnect_delay = Duration::from_millis(100);
    o.kato = Duration::from_secs(2);
    o.admin_timeout = Duration::from_secs(1);
    o.io_timeout = Duration::from_secs(5);
    o.connect_timeout = Duration::from_secs(1);
    o
}

#[test]
fn target_restart_mid_run_completes_outstanding_io() {
    let port = free_port();
    let mut t = start_target(&[(4096, BLOCKS)], TransportConfig::default(), port);
    let host = host_reactors();
    let mut o = fast_options(t.addr);
    o.ctrl_loss_tmo = Duration::from_secs(15);
    let states = state_log(&mut o);
    let ctrl = Controller::connect(&host.handles()[0], o).unwrap();
    let ns = ctrl.namespace(1).unwrap();
    let d = Driver::new();
    let qp = IoQueuePair::open(&ctrl).unwrap();
    d.until("the I/O queue to connect", || {
        qp.state() == QueueState::Connected
    });

    // Many 64 KiB writes: a good part of them is on the wire or waiting when the target dies.
    let n = 256u64;
    for i in 0..n {
        let io = BdevIo::write((i * 16) % BLOCKS, 16, sg(&pattern(64 << 10, i as u32)));
        qp.submit(&ns, io, d.sink(), i);
    }
    d.run_for(Duration::from_millis(2));
    let before = d.sink.done.borrow().len();
    kill(&mut t);
    d.until("the queue to notice", || {
        qp.state() != QueueState::Connected
    });
    let restart = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        start_target(&[(4096, BLOCKS)], TransportConfig::default(), port)
    });
    let done = d.wait(n as usize);
    let _t2 = restart.join().unwrap();
    assert!(
        before < n as usize,
        "some writes were outstanding when the target died"
    );
    for (tag, _, r) in &done {
        assert!(r.is_ok(), "write {tag}: {r:?}");
    }
    assert_eq!(ctrl.state(), ControllerState::Connected);
    let log = states.lock().unwrap().clone();
    let rc = log.iter().position(|s| *s == ControllerState::Reconnecting);
    let back = log.iter().rposition(|s| *s == ControllerState::Connected);
    assert!(rc.is_some() && back > rc, "states: {log:?}");
    assert!(!log.contains(&ControllerState::Failed), "states: {log:?}");
    // The target closed the connections (an error if a send raced with the close).
    assert!(
        matches!(
            ctrl.last_error(),
            Some(HostError::ConnectionClosed | HostError::Io { .. })
        ),
        "{:?}",
        ctrl.last_error()
    );

    // The new target has the data written after the reconnect.
    d.until("the queue to reconnect", || {
        qp.state() == QueueState::Connected
    });
    let data = pattern(8192, 99);
    qp.submit(&ns, BdevIo::write(7, 2, sg(&data)), d.sink(), 1);
    d.wait(1).pop().unwrap().2.unwrap();
    qp.submit(&ns, BdevIo::read(7, 2, sg_zeroed(&[8192])), d.sink(), 2);
    let (_, io, r) = d.wait(1).pop().unwrap();
    r.unwrap();
    assert!(flatten(&io.bufs) == data);
}

#[test]
fn controller_loss_timeout_fails_io_with_a_clear_error() {
    let port = free_port();
    let mut t = start_target(&[(4096, BLOCKS)], TransportConfig::default(), port);
    let host = host_reactors();
    let mut o = fast_options(t.addr);
    o.reconnect_delay = Duration::from_millis(200);
    o.ctrl_loss_tmo = Duration::from_secs(1);
    let states = state_log(&mut o);
    let ctrl = Controller::connect(&host.handles()[0], o).unwrap();
    let ns = ctrl.namespace(1).unwrap();
    let d = Driver::new();
    let qp = IoQueuePair::open(&ctrl).unwrap();
    d.until("the I/O queue to connect", || {
        qp.state() == QueueState::Connected
    });

    kill(&mut t);
    let killed = Instant::now();
    d.until("the queue to notice", || {
        qp.state() != QueueState::Connected
    });
    // Requests made while the host reconnects are held, then failed.
    for i in 0..8 {
        qp.submit(&ns, BdevIo::read(i, 1, sg_zeroed(&[4096])), d.sink(), i);
    }
    let done = d.wait(8);
    let waited = killed.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "failed after {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "failed after {waited:?}");
    for (tag, io, r) in done {
        let e = r.unwrap_err();
        match &e {
            BdevError::Os(os) => assert_eq!(os.kind(), std::io::ErrorKind::NotConnected),
            other => panic!("read {tag}: {other:?}"),
        }
        assert!(
            matches!(host_error(&e), Some(HostError::ControllerLost(_))),
            "{e}"
        );
        assert_eq!(io.bufs.len(), 1, "the buffers come back");
    }
    assert_eq!(ctrl.state(), ControllerState::Failed);
    assert!(matches!(
        ctrl.last_error(),
        Some(HostError::ControllerLost(_))
    ));
    assert_eq!(
        states.lock().unwrap().last(),
        Some(&ControllerState::Failed)
    );
    // And new requests fail at once.
    qp.submit(&ns, BdevIo::read(0, 1, sg_zeroed(&[4096])), d.sink(), 99);
    let (_, _, r) = d.wait(1).pop().unwrap();
    assert!(matches!(
        host_error(&r.unwrap_err()),
        Some(HostError::ControllerLost(_))
    ));
    assert!(matches!(
        IoQueuePair::open(&ctrl),
        Err(HostError::ControllerLost(_))
    ));
}

#[test]
fn silent_target_is_noticed_by_keep_alive() {
    let port = free_port();
    let mut t = start_target(&[(4096, BLOCKS)], TransportConfig::default(), port);
    let host = host_reactors();
    let mut o = fast_options(t.addr);
    o.kato = Duration::from_secs(1);
    o.admin_timeout = Duration::from_millis(500);
    o.ctrl_loss_tmo = Duration::from_secs(1);
    o.connect_timeout = Duration::from_millis(500);
    let ctrl = Controller::connect(&host.handles()[0], o).unwrap();
    // No I/O at all: only Keep Alive (every 500 ms, answered within 500 ms) can tell.
    freeze(&mut t);
    let frozen = Instant::now();
    while ctrl.state() == ControllerState::Connected && frozen.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(10));
    }
    let noticed = frozen.elapsed();
    assert!(
        noticed < Duration::from_secs(3),
        "noticed after {noticed:?}"
    );
    assert!(
        matches!(ctrl.last_error(), Some(HostError::Timeout(_))),
        "{:?}",
        ctrl.last_error()
    );
    while ctrl.state() != ControllerState::Failed && frozen.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(ctrl.state(), ControllerState::Failed);
    assert!(matches!(
        ctrl.last_error(),
        Some(HostError::ControllerLost(_))
    ));
}
