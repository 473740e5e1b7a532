//! Two targets in one process, on the same reactor: each target's transport has its own
//! connection and listener tables, so neither lists, disconnects nor closes the other's
//! connections (issue 18: connection tables owned by a target object, not globals).
#![allow(missing_docs)]

mod common;

use std::sync::Arc;

use common::{NQN, TestHost};
use shoal_bdev::malloc::MallocBdev;
use shoal_nvmf::target::subsystem::{ListenAddress, SubsystemOptions, Target, TransportConfig};
use shoal_nvmf::target::tcp::TcpTransport;
use shoal_nvmf::target::tcp::limits::ListenLimits;
use shoal_reactor::{Reactor, ReactorConfig, ReactorSet};

/// A target with one RAM namespace, listening on a free loopback port on `set`'s reactor.
fn target_on(set: &ReactorSet, name: &str) -> (TcpTransport, std::net::SocketAddr) {
    let target = Arc::new(Target::new());
    target.create_transport(TransportConfig::default()).unwrap();
    let sub = target
        .create_subsystem(
            NQN,
            SubsystemOptions {
                allow_any_host: true,
                ..Default::default()
            },
        )
        .unwrap();
    let b = MallocBdev::create(name, None, 2048, 512).unwrap();
    sub.add_namespace(b, None, None, None, None).unwrap();
    let la = ListenAddress::tcp("127.0.0.1", "0");
    sub.add_listener(la.clone()).unwrap();
    let tcp = TcpTransport::new(target.clone());
    let t = tcp.clone();
    let limits = ListenLimits::from(&target.transport());
    let reactors = set.handles().to_vec();
    let addr = set.handles()[0]
        .call(move || t.listen(la, reactors, limits).unwrap())
        .unwrap();
    (tcp, addr)
}

fn on_reactor<R: Send + 'static>(
    set: &ReactorSet,
    t: &TcpTransport,
    f: impl FnOnce(&TcpTransport) -> R + Send + 'static,
) -> R {
    let t = t.clone();
    set.handles()[0].call(move || f(&t)).unwrap()
}

#[test]
fn each_target_sees_and_closes_only_its_own_connections() {
    let set =
        ReactorSet::start(&[0], ReactorConfig::default(), Arc::new(|_: &Reactor| {})).unwrap();
    let (a, addr_a) = target_on(&set, "TwoA");
    let (b, addr_b) = target_on(&set, "TwoB");

    let mut ha = TestHost::admin(addr_a, false, 0);
    let mut hb1 = TestHost::admin(addr_b, false, 0);
    let hb2 = TestHost::io_queue(addr_b, hb1.cntlid, 1, false);

    // Each transport lists only its own queue pairs.
    let qa = on_reactor(&set, &a, |t| t.qpairs());
    let qb = on_reactor(&set, &b, |t| t.qpairs());
    assert_eq!(qa.len(), 1, "target A lists {qa:?}");
    assert_eq!(qb.len(), 2, "target B lists {qb:?}");
    assert_eq!(on_reactor(&set, &a, |t| t.conn_count()), 1);

    // Both listeners were asked for 127.0.0.1:0: the same listen address. Removing it from
    // A closes A's connection and none of B's.
    let any = ListenAddress::tcp("127.0.0.1", "0");
    let n = on_reactor(&set, &a, move |t| t.disconnect_listener(&any, None));
    assert_eq!(n, 1, "A closed {n} connections");
    assert!(ha.recv().is_none(), "A's connection should be closed");
    assert_eq!(on_reactor(&set, &b, |t| t.conn_count()), 2);
    let (cqe, data) = hb1.identify(1, 0);
    assert!(
        cqe.status().is_success(),
        "B's admin queue: {:?}",
        cqe.status()
    );
    assert_eq!(data.len(), 4096);

    // Shutting B down ends B's connections and listener; A keeps accepting and serving.
    on_reactor(&set, &b, |t| t.close_all());
    assert!(hb1.recv().is_none(), "B's connection should be closed");
    assert_eq!(on_reactor(&set, &b, |t| t.conn_count()), 0);
    let mut ha2 = TestHost::admin(addr_a, false, 0);
    assert!(ha2.identify(1, 0).0.status().is_success());
    assert_eq!(on_reactor(&set, &a, |t| t.conn_count()), 1);
    drop(hb2);
    set.shutdown();
}
