//! The NVMe-oF target: what a host connects to.
//!
//! - [`subsystem`]: the [`subsystem::Target`] (subsystems, namespaces, listeners, allowed
//!   hosts, the discovery subsystem) that the daemon configures over JSON-RPC.
//! - [`controller`]: the admin side of a controller (Identify, Get/Set Features, log pages
//!   including discovery, properties, asynchronous events), sans-IO.
//! - [`tcp`]: the transport. [`tcp::qpair::QueuePair`] is the sans-IO queue pair (bytes and
//!   block-I/O completions in, actions out); the rest of [`tcp`] is the thin glue that feeds
//!   it from a reactor's sockets, and the listeners.

pub mod controller;
pub mod subsystem;
pub mod tcp;
