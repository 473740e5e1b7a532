//! Replicated volumes: the nexus, its children and online rebuild.
//!
//! A [`Nexus`] is a block device ([`shoal_bdev::Bdev`]) over one or more *children*, each a
//! bdev holding one replica of the volume: a local bdev (`bdev:///NAME`) or a namespace of
//! another daemon (`nvmf://HOST:PORT/NQN`, parsed by the NVMe/TCP host's [`NvmfUri`] and
//! opened by the daemon with that host; see [`ChildUri`] and [`ChildOpener`]). The nexus
//! itself only sees bdevs: it uses `shoal_nvmf` for the URI type alone.
//!
//! * **I/O** (module `io`): writes, write zeroes, deallocate and flush go to every child
//!   in the write path; reads go to one online child (local first, else the fastest) and are
//!   retried on another if they fail. A failing child is faulted with a reason and leaves the
//!   I/O path; the host sees no error while one healthy child remains. A write that overlaps
//!   one in flight waits for it, so that every child applies overlapping writes in one order
//!   (module `order`).
//! * **States** ([`state`]): an explicit child state machine with a transition table, fault
//!   reasons, and the nexus state derived from its children.
//! * **Metadata** ([`label`]): each child carries a label with the volume and replica UUIDs, a
//!   generation and an in-sync flag, in a reserved region; after a restart the nexus tells
//!   current replicas from stale ones on its own.
//! * **Rebuild** ([`rebuild`]): a new or returning child is copied online, segment by segment
//!   under range locks, at a rate that can be limited; a child back from a short absence is
//!   copied only where it missed writes (a dirty-segment map, [`dirty`]).
//! * **Write-intent bitmap** ([`intent`]): the regions that may hold writes not every replica
//!   has are recorded on every child before such a write goes out, so that after a crash of
//!   the nexus only those regions are resynchronised.
//!
//! * **Pause** (module `pause`): host writes held at one point of the stream, with a
//!   deadline, while the control plane snapshots every in-sync replica.
//!
//! The control path runs as `async` tasks on the nexus's *home reactor* (module `exec`); its
//! operations answer through a [`Ticket`]. The I/O path takes no lock and allocates nothing
//! per I/O; it learns about control-path changes through an epoch and a gate (module `gate`).

mod control;
mod create;
mod destroy;
pub mod dirty;
mod error;
mod exec;
mod gate;
mod guard;
pub mod intent;
mod io;
pub mod label;
mod nexus;
mod order;
mod pause;
mod persist;
pub mod rebuild;
mod routing;
pub mod state;
mod uri;

pub use error::{NexusError, NexusErrorKind};
pub use exec::Ticket;
pub use label::{Label, META_BYTES};
pub use nexus::{
    ChildSpec, ChildStatus, DEFAULT_IO_TIMEOUT, DEFAULT_SEGMENT_BYTES, IntentStatus, Nexus,
    NexusOptions, NexusStatus, PRODUCT_NAME,
};
pub use pause::{MAX_PAUSE, PauseInfo, PauseStatus};
pub use rebuild::{RebuildOutcome, RebuildRate, RebuildStatus, RebuildSummary};
pub use routing::MAX_CHILDREN;
pub use state::{ChildState, FaultReason, NexusState};
pub use uri::{ChildOpener, ChildUri, NvmfUri};
