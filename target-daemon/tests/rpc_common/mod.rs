//! Helpers shared by the RPC integration tests: temp dirs, a test registry, a running server.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use shoal_target::config::ConfigDocument;
use shoal_target::rpc::params::bdev::{BdevDelete, BdevMallocCreate, refuse_metadata};
use shoal_target::rpc::params::misc::FrameworkGetConfig;
use shoal_target::rpc::params::nvmf::NvmfCreateTransport;
use shoal_target::rpc::params::{HOUSEKEEPING_METHODS, NoParams};
use shoal_target::rpc::{
    Registry, RpcClient, RpcError, RpcServer, RunningServer, ServerConfig, StateMask,
};

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

/// The context handed to test handlers.
#[derive(Default)]
pub struct TestCtx {
    pub bdevs: std::sync::Mutex<Vec<String>>,
    pub calls: AtomicUsize,
}

/// A registry with a few handlers exercising every error path.
pub fn test_registry() -> Registry<TestCtx> {
    let mut r = Registry::<TestCtx>::new();
    r.register("echo", |ctx: &TestCtx, p: Value| {
        ctx.calls.fetch_add(1, Ordering::Relaxed);
        Ok(p)
    });
    r.register(
        "bdev_malloc_create",
        |ctx: &TestCtx, p: BdevMallocCreate| {
            refuse_metadata("bdev_malloc_create", p.md_size, p.dif_type)?;
            let name = p.name.unwrap_or_else(|| "Malloc0".to_owned());
            let mut bdevs = ctx.bdevs.lock().expect("lock");
            if bdevs.contains(&name) {
                return Err(RpcError::already_exists(format!("bdev {name}")));
            }
            bdevs.push(name.clone());
            Ok(Value::String(name))
        },
    );
    r.register("bdev_malloc_delete", |ctx: &TestCtx, p: BdevDelete| {
        let mut bdevs = ctx.bdevs.lock().expect("lock");
        let before = bdevs.len();
        bdevs.retain(|b| *b != p.name);
        if bdevs.len() == before {
            return Err(RpcError::no_such_device(format!("bdev {}", p.name)));
        }
        Ok(Value::Bool(true))
    });
    r.register(
        "nvmf_create_transport",
        |_ctx: &TestCtx, p: NvmfCreateTransport| {
            Ok(json!({"trtype": p.trtype, "max_queue_depth": p.max_queue_depth}))
        },
    );
    r.register(
        "panic",
        |_ctx: &TestCtx, _p: NoParams| -> Result<Value, RpcError> { panic!("handler bug") },
    );
    r.register("slow", |_ctx: &TestCtx, p: Value| {
        std::thread::sleep(Duration::from_millis(p["ms"].as_u64().unwrap_or(10)));
        Ok(Value::Bool(true))
    });
    r.register_in(
        "startup_only",
        StateMask::STARTUP,
        |_ctx: &TestCtx, _p: NoParams| Ok(Value::Bool(true)),
    );
    r.register_alias("construct_malloc_bdev", "bdev_malloc_create");
    // What rpc.py save_config calls: the live state as an SPDK config.
    r.register("framework_get_subsystems", |ctx: &TestCtx, _p: NoParams| {
        Ok(live_config(ctx).subsystems_json())
    });
    r.register(
        "framework_get_config",
        |ctx: &TestCtx, p: FrameworkGetConfig| {
            live_config(ctx)
                .subsystem_json(&p.name)
                .ok_or_else(|| RpcError::no_such_device(format!("subsystem {}", p.name)))
        },
    );
    r.register_ignored(HOUSEKEEPING_METHODS);
    r
}

/// The live state of a [`TestCtx`] as a config document.
pub fn live_config(ctx: &TestCtx) -> ConfigDocument {
    let mut doc = ConfigDocument::default();
    doc.ensure_subsystem("sock");
    doc.ensure_subsystem("bdev");
    for name in ctx.bdevs.lock().expect("lock").iter() {
        doc.push(
            "bdev",
            "bdev_malloc_create",
            Some(json!({"name": name, "num_blocks": 8, "block_size": 512})),
        );
    }
    doc
}

/// A server on `dir/rpc.sock` with the test registry.
pub fn start_server(dir: &TempDir) -> (RunningServer, PathBuf, Arc<TestCtx>) {
    start_server_with(ServerConfig::with_path(dir.path().join("rpc.sock")))
}

pub fn start_server_with(config: ServerConfig) -> (RunningServer, PathBuf, Arc<TestCtx>) {
    let path = config.socket_path.clone();
    let ctx = Arc::new(TestCtx::default());
    let server = RpcServer::bind(config, Arc::new(test_registry()), Arc::clone(&ctx))
        .expect("bind RPC server");
    (server.spawn().expect("spawn"), path, ctx)
}

pub fn client(path: &Path) -> RpcClient {
    let c = RpcClient::connect(path).expect("connect");
    c.set_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    c
}
