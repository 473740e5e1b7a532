//! Connection limits of a listener: per host address and per listener, refusals at accept,
//! places given back when connections close.
#![allow(missing_docs)]

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use shoal_nvmf::target::subsystem::TransportConfig;
use shoal_nvmf::target::tcp::limits;

/// Whether the target closed `s` (it reads the end of the stream, or a reset) within 5 s.
fn refused(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 8];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        // A timeout is not a refusal; a reset is.
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// An ICReq answered: the connection was admitted.
fn admitted(t: &TestTarget) -> TestHost {
    let mut h = TestHost::connect(t.addr);
    h.ic(false, false);
    h
}

#[test]
fn connections_beyond_the_per_host_limit_are_refused_until_one_closes() {
    let transport = TransportConfig {
        max_connections_per_host: 4,
        ..TransportConfig::default()
    };
    let t = TestTarget::start(&[4096], transport);
    let before = limits::CONN_REFUSALS.total();
    let mut held: Vec<TestHost> = (0..4).map(|_| admitted(&t)).collect();
    for _ in 0..20 {
        let mut extra = TcpStream::connect(t.addr).unwrap();
        assert!(refused(&mut extra), "a fifth connection from the same host");
    }
    assert!(limits::CONN_REFUSALS.total() >= before + 20);
    held.pop();
    // The place comes back when the target has dropped the connection.
    let start = std::time::Instant::now();
    loop {
        let mut h = TestHost::connect(t.addr);
        h.sock
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        h.send_pdu(
            shoal_nvmf::wire::pdu::PduHeader::IcReq(shoal_nvmf::wire::pdu::IcReq {
                pfv: 0,
                hpda: 0,
                digests: Default::default(),
                maxr2t: 0,
            }),
            &[],
        );
        if h.recv().is_some() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the place of a closed connection did not come back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn connections_beyond_the_per_listener_limit_are_refused() {
    let transport = TransportConfig {
        max_connections_per_listener: 3,
        ..TransportConfig::default()
    };
    let t = TestTarget::start(&[4096], transport);
    let _held: Vec<TestHost> = (0..3).map(|_| admitted(&t)).collect();
    let mut extra = TcpStream::connect(t.addr).unwrap();
    assert!(refused(&mut extra));
}

/// The backlog follows `somaxconn` when `acceptor_backlog` is 0.
#[test]
fn the_listen_backlog_follows_somaxconn() {
    let l = limits::ListenLimits::from(&TransportConfig::default());
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(l.effective_backlog(), somaxconn);
    let l = limits::ListenLimits { backlog: 77, ..l };
    assert_eq!(l.effective_backlog(), 77);
}

/// A connection that sends its ICReq and then nothing would hold a receive buffer for the
/// largest PDU for ever: without a Connect within `ic_timeout_ms` it is closed, while a
/// connected queue is not.
#[test]
fn a_connection_without_a_connect_is_closed_after_ic_timeout_ms() {
    let transport = TransportConfig {
        ic_timeout_ms: 500,
        ..TransportConfig::default()
    };
    let t = TestTarget::start(&[4096], transport);
    let mut connected = TestHost::admin(t.addr, false, 0);
    let mut idle = admitted(&t);
    let start = std::time::Instant::now();
    assert!(refused(&mut idle.sock), "closed without a Connect");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        connected.identify(1, 0).0.status().is_success(),
        "a connected queue stays"
    );
}
