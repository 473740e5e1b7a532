//! The `shoald` daemon: configuration, JSON-RPC control plane and reactor start-up, and the
//! `shoalctl` command-line client.

pub mod config;
pub mod daemon;
pub mod methods;
pub mod rpc;
pub mod stacked;
