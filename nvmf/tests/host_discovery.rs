//! Discovery against Shoal's target: the discovery controller's log names the subsystem
//! with the listener it was added with; the options it yields connect to it.
#![allow(missing_docs)]

mod common;
mod host_common;

use host_common::{Driver, free_port, host_reactors, start_target};
use shoal_nvmf::host::{ConnectOptions, Controller, discover, discover_async};
use shoal_nvmf::target::subsystem::TransportConfig;
use shoal_nvmf::wire::spec::log::discovery;

#[test]
fn discovery_log_lists_the_subsystem() {
    let port = free_port();
    let t = start_target(&[(4096, 256)], TransportConfig::default(), port);
    let host = host_reactors();
    let mut opts = ConnectOptions::discovery("127.0.0.1", port);
    opts.hostnqn = common::HOSTNQN.into();
    let entries = discover(&host.handles()[0], opts.clone()).unwrap();
    let nvm: Vec<_> = entries.iter().filter(|e| e.is_tcp_subsystem()).collect();
    assert_eq!(nvm.len(), 1, "{entries:?}");
    let e = nvm[0];
    assert_eq!(e.subnqn, common::NQN);
    assert_eq!(e.traddr, "127.0.0.1");
    assert_eq!(e.trsvcid, port.to_string());
    assert_eq!(e.trtype, discovery::TRTYPE_TCP);
    assert_eq!(e.adrfam, discovery::ADRFAM_IPV4);
    assert_eq!(e.cntlid, 0xFFFF, "dynamic controllers");

    // The entry is enough to connect.
    let o = e.connect_options(&opts).unwrap();
    let ctrl = Controller::connect(&host.handles()[0], o).unwrap();
    assert_eq!(ctrl.namespaces().len(), 1);
    drop(ctrl);

    // The discovery controller was disconnected (controllers of the discovery subsystem
    // go away once the host has read the log).
    let disc = t.target.subsystem(discovery::DISCOVERY_NQN).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !disc.controllers().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(disc.controllers().is_empty());
}

#[test]
fn discovery_on_the_callers_reactor() {
    let port = free_port();
    let _t = start_target(&[(512, 256)], TransportConfig::default(), port);
    let d = Driver::new();
    let out = std::rc::Rc::new(std::cell::RefCell::new(None));
    let o = out.clone();
    discover_async(ConnectOptions::discovery("127.0.0.1", port), move |r| {
        *o.borrow_mut() = Some(r)
    });
    d.until("the discovery log", || out.borrow().is_some());
    let entries = out.borrow_mut().take().unwrap().unwrap();
    assert!(entries.iter().any(|e| e.subnqn == common::NQN));
    // A blocking discover refuses to run on the reactor it would wait for.
    let r = discover(
        &d.reactor.handle(),
        ConnectOptions::discovery("127.0.0.1", port),
    );
    assert!(r.is_err());
}
