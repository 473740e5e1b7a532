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
//! * **Growth** (module `resize`, [`Nexus::resize`]): once every online child holds the new
//!   size, the labels record it, then the bdev grows; writes past the old end are mirrored
//!   and rebuilt like any other.
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
//!
//! Layers: module `nexus` holds the [`Nexus`] and its state, over leaf modules (`types`,
//! [`state`], `routing`, `gate`, `order`, `exec`, [`label`], [`dirty`], `guard`, the bitmap
//! of [`intent`], the rebuilds' state in `rebuild::ctl`). The operations use it and it uses
//! none of them: `create`, the control task `control` (with `commit`, `destroy`, `resize`),
//! the copy tasks of [`rebuild`], `pause`, the write-intent task `intent::task` and the I/O
//! path `io`.

mod commit;
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
mod resize;
mod routing;
pub mod state;
mod types;
mod uri;

pub use create::{DEFAULT_IO_TIMEOUT, DEFAULT_SEGMENT_BYTES, NexusOptions, PRODUCT_NAME};
pub use error::{NexusError, NexusErrorKind};
pub use exec::Ticket;
pub use label::{Label, META_BYTES};
pub use nexus::{ChildStatus, IntentStatus, Nexus, NexusStatus};
pub use pause::{MAX_PAUSE, PauseInfo, PauseStatus};
pub use rebuild::{RebuildOutcome, RebuildRate, RebuildStatus, RebuildSummary};
pub use routing::MAX_CHILDREN;
pub use state::{ChildState, FaultReason, NexusState};
pub use types::ChildSpec;
pub use uri::{ChildOpener, ChildUri, NvmfUri};
