//! Helpers for the method tests: an in-process daemon (one reactor, the real registry), free
//! ports, temp dirs, and a minimal NVMe/TCP host to make real controllers.
#![allow(dead_code, missing_docs)]

pub mod host;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use shoal_reactor::{Reactor, ReactorConfig, ReactorSet};
use shoal_target::daemon::Daemon;
use shoal_target::methods;
use shoal_target::rpc::{Registry, RpcError};

/// A daemon running in the test process.
pub struct TestDaemon {
    pub daemon: Arc<Daemon>,
    pub registry: Registry<Daemon>,
    set: Option<ReactorSet>,
}

impl TestDaemon {
    pub fn start() -> TestDaemon {
        let set = ReactorSet::start(&[0], ReactorConfig::default(), Arc::new(|_: &Reactor| {}))
            .expect("start a reactor");
        let daemon = Arc::new(Daemon::new(set.handles().to_vec()));
        let registry = methods::registry();
        methods::finish_init(&registry);
        TestDaemon {
            daemon,
            registry,
            set: Some(set),
        }
    }

    /// Calls a method with params (`null` for none).
    pub fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        self.registry.call(&self.daemon, method, Some(params))
    }

    /// Calls a method that must succeed.
    #[track_caller]
    pub fn ok(&self, method: &str, params: Value) -> Value {
        match self.call(method, params) {
            Ok(v) => v,
            Err(e) => panic!("{method} failed: {e}"),
        }
    }

    /// Calls a method that must fail with `code`; returns the message.
    #[track_caller]
    pub fn err(&self, method: &str, params: Value, code: i32) -> String {
        match self.call(method, params) {
            Ok(v) => panic!("{method} succeeded with {v}, expected error {code}"),
            Err(e) => {
                assert_eq!(e.code, code, "{method}: {}", e.message);
                e.message
            }
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.daemon.quiesce();
        self.daemon.wait_drained();
        if let Some(s) = self.set.take() {
            s.shutdown();
        }
    }
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("shoal-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `nvmf_subsystem_add_listener` params for 127.0.0.1:`port`.
pub fn listener(nqn: &str, port: u16) -> Value {
    serde_json::json!({"nqn": nqn, "listen_address": {
        "trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": port.to_string()}})
}
