//! `shoal-csi`: Shoal's Container Storage Interface driver (CSI spec v1.9, gRPC on a Unix
//! socket with tonic), one binary in two modes.
//!
//! - **Controller** (`--mode controller`, one per cluster, next to `shoal-control` and the
//!   Kubernetes CSI sidecars): Identity + Controller. Every Controller RPC is a call to the
//!   control plane's HTTP/JSON volume API ([`control`]); the controller itself keeps no state.
//! - **Node** (`--mode node`, on every node that runs pods): Identity + Node. It connects the
//!   volume's NVMe/TCP subsystem with `nvme-cli` (`ctrl-loss-tmo`, `reconnect-delay`), finds the
//!   namespace in sysfs, makes a file system if the namespace is empty, mounts it at the staging
//!   path and bind-mounts it into pods ([`node`]).
//!
//! ```text
//!  kubelet ──CSI/unix──▶ shoal-csi --mode node ──nvme connect──▶ shoald (nexus) ──▶ replicas
//!  external-provisioner/attacher/resizer/snapshotter
//!          ──CSI/unix──▶ shoal-csi --mode controller ──HTTP/JSON──▶ shoal-control ──▶ etcd
//! ```
//!
//! The CSI messages and services come from the `bpfman-csi` crate (generated from the spec's
//! `csi.proto` v1.9); errors go out with the codes the spec names for each case
//! ([`status`], [`validate`]).

// Every CSI handler answers `tonic::Status` (176 bytes): the helpers that build it return it
// as it is rather than boxing it only to unbox it at the handler.
#![allow(clippy::result_large_err)]

pub use bpfman_csi::v1 as csi;

pub mod control;
pub mod controller;
pub mod identity;
pub mod inflight;
pub mod node;
pub mod server;
pub mod status;
pub mod validate;
