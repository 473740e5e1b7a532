//! The host side: Shoal's NVMe/TCP initiator, on Shoal's reactors, built on the same PDU
//! codec ([`crate::wire::pdu`]) and NVMe structures ([`crate::wire::spec`]) as the target.
//!
//! # Layers
//!
//! - `info` and `shared` (private): the bottom, importing none of the files listed below:
//!   what Identify and CAP say ([`ControllerInfo`], [`NamespaceInfo`]), and a controller's
//!   core state: the part its queue pairs on every reactor share, the [`Controller`] handle
//!   struct and the events the admin reactor sends its I/O queues. The files below add
//!   `impl` blocks to these types; none of them is imported back.
//! - `queue` and `rx` (private): the sans-IO core of a queue pair: requests, the command
//!   slot table (CID = slot), command issue with in-capsule data or R2T / H2CData, C2HData
//!   into the caller's buffers, every controller-supplied field checked ([`ProtocolError`]).
//! - `conn` (private): a queue pair on a reactor: one `recv` always outstanding, PDUs queued
//!   during a reactor pass sent by the queue's poller (`sendmsg`s of at most 64 buffers, one
//!   in flight), command timeouts,
//!   and the connect sequence (TCP, ICReq / ICResp, Fabrics Connect).
//! - `admin` and `reconnect` (private): the admin queue on one reactor: enable (CC.EN,
//!   CSTS.RDY within CAP.TO), Identify, Number of Queues, namespaces, keep-alive every
//!   KATO / 2, shutdown (CC.SHN); and recovery from a lost association with a
//!   controller-loss timeout.
//! - `aen` (private): an Asynchronous Event Request kept outstanding; a Namespace Attribute
//!   Changed notice (or [`RemoteBdev::refresh_size`]) re-reads Identify Namespace, and a
//!   [`RemoteBdev`] follows its namespace's new size.
//! - `io` (private): [`IoQueuePair`], and the I/O queues' side of controller events.
//! - `controller` (private): [`Controller`]'s methods, over the admin queue.
//! - The public API: [`Controller`], [`IoQueuePair`], [`RemoteBdev`], [`discover`].
//!
//! # Using it
//!
//! A load tool (`shoal-perf`) connects once, then opens queue pairs on its reactors and
//! drives them like a bdev channel, with no lock and no allocation per I/O:
//!
//! ```no_run
//! # use std::{rc::Rc, sync::Arc};
//! # use shoal_bdev::{BdevIo, IoSink, reactor::ReactorSet};
//! use shoal_nvmf::host::{ConnectOptions, Controller, HostError, IoQueuePair};
//! # fn demo(set: &ReactorSet, sink: Rc<dyn IoSink>, io: BdevIo) -> Result<(), HostError> {
//! let opts = ConnectOptions::new("10.0.0.2", 4420, "nqn.2016-06.io.shoal:vol1");
//! let ctrl = Controller::connect(&set.handles()[0], opts)?; // blocking, control path
//! let ns = ctrl.namespace(1).expect("namespace 1");
//! // On each worker reactor (e.g. in a message sent with ReactorHandle::send):
//! let qp = IoQueuePair::open(&ctrl)?; // connects in the background
//! qp.submit(&ns, io, sink, 7); // sink.io_done(7, io, result) on a later pass
//! # Ok(()) }
//! ```
//!
//! The nexus makes remote replicas bdevs: [`RemoteBdev::connect_uri`] with a URI such as
//! `nvmf://10.0.0.2:4420/nqn.2016-06.io.shoal:vol1?hostnqn=...&nsid=1` (see [`NvmfUri`]),
//! or [`RemoteBdev::new`] on a [`Controller`] it already has. `open_channel` on any reactor
//! then gives that reactor its own I/O queue pair to the target.
//!
//! # Failures
//!
//! A command's NVMe status fails that request. A connection that drops, a command that
//! times out, or a controller that breaks the protocol resets the whole association: the
//! controller is [`ControllerState::Reconnecting`], block I/Os are held and reissued after
//! the reconnect; after `ctrl_loss_tmo` without success it is
//! [`ControllerState::Failed`] and every request fails with [`HostError::ControllerLost`]
//! (as a `BdevError`, see [`to_bdev_error`]).

mod admin;
mod aen;
mod cmd;
mod conn;
mod controller;
mod discovery;
mod error;
mod info;
mod io;
mod options;
mod queue;
mod reconnect;
mod remote_bdev;
mod rx;
mod shared;
mod uri;

pub use cmd::Dir;
pub use conn::QueueState;
pub use discovery::{
    DISCOVERY_PORT, DiscoveryEntry, MAX_DISCOVERY_RECORDS, MAX_DISCOVERY_TRIES, discover,
    discover_async,
};
pub use error::{HostError, ProtocolError, host_error, to_bdev_error};
pub use info::{ControllerInfo, NamespaceInfo, ONCS_DSM, ONCS_WRITE_ZEROES};
pub use io::IoQueuePair;
pub use options::{ConnectOptions, ControllerState, DEFAULT_PORT, StateCallback};
pub use queue::RawCompletion;
pub use remote_bdev::{PRODUCT_NAME, RemoteBdev};
pub use shared::Controller;
pub use uri::{MAX_URI_BYTES, NvmfUri, UriError, UriParam};

#[cfg(test)]
mod tests;
