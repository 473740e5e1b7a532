//! The JSON-RPC 2.0 control plane, wire-compatible with SPDK's `scripts/rpc.py`.
//!
//! * [`tcp`]: the same over TCP for the control plane, with a token ([`auth`]) required off
//!   loopback.
//! * [`server`]: a Unix-socket server (default [`server::DEFAULT_SOCKET_PATH`], mode 0600),
//!   one thread per client, bare JSON values on the stream (no newline framing).
//! * [`dispatch`]: the method [`Registry`], generic over the daemon context, with typed params.
//! * [`params`]: serde structs for the params of every SPDK method Shoal serves.
//! * [`client`]: a blocking client for `shoalctl` and tests.
//! * [`framing`]: the incremental, bounded JSON value splitter shared by server and client.
//! * [`error`]: [`RpcError`] and the codes SPDK answers with.
//!
//! Running a server:
//!
//! ```no_run
//! use std::sync::Arc;
//! use shoal_target::rpc::{Registry, RpcServer, ServerConfig};
//! use shoal_target::rpc::params::nvmf::NvmfSubsystemRef;
//!
//! struct Daemon { /* bdevs, subsystems, ... */ }
//! let mut registry = Registry::<Daemon>::new();
//! registry.register("nvmf_delete_subsystem", |_d: &Daemon, p: NvmfSubsystemRef| {
//!     Err(shoal_target::rpc::RpcError::no_such_device(format!("subsystem {}", p.nqn)))
//! });
//! let server = RpcServer::bind(ServerConfig::default(), Arc::new(registry), Arc::new(Daemon {}))?;
//! let stop = server.shutdown_handle(); // e.g. from a signal handler thread: stop.shutdown()
//! server.run()?; // returns after stop.shutdown(); the socket file is removed
//! # Ok::<(), shoal_target::rpc::ServerError>(())
//! ```

pub mod auth;
pub mod client;
pub mod dispatch;
pub mod error;
pub mod framing;
pub mod params;
pub mod server;
pub mod tcp;

pub use auth::{AuthError, AuthToken};
pub use client::{ClientError, RpcClient};
pub use dispatch::{Registry, RpcParams, RpcState, StateCell, StateMask, decode_params};
pub use error::RpcError;
pub use server::{RpcServer, RunningServer, ServerConfig, ServerError, ShutdownHandle};
pub use tcp::{TcpRpcServer, TcpServerConfig, TcpServerError, TcpShutdownHandle};
