//! The explicit state machines: a child's states with the table of allowed transitions, the
//! reasons a child is faulted, and the nexus's own state derived from its children.
//!
//! As in Oxide crucible's `is_state_transition_valid`, every change of a child's state goes
//! through [`ChildState::can_become`]; a change the table does not list is refused with
//! [`crate::NexusError::InvalidTransition`] rather than applied.
//!
//! ```text
//!            +--------------------------------+
//!            |                                v
//!   Init --> Rebuilding --> Online --> Faulted(reason)
//!     |          ^  |                    |    |
//!     |          |  +--------------------+    |
//!     |          +---------- re-add ----------+
//!     +--> Online (a current replica at creation)
//!   any state but Closed --> Closed (removed or destroyed)
//! ```

use std::fmt;

/// Why a child was faulted (Mayastor's `Faulted(IoError)`, `Faulted(TimedOut)`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultReason {
    /// An I/O failed on the child.
    IoError,
    /// An I/O did not complete within the nexus's I/O timeout.
    TimedOut,
    /// The child ran out of space.
    NoSpace,
    /// The child went away (closed, or its connection was lost beyond the reconnect window).
    Disconnected,
    /// Writing the child's metadata failed.
    MetadataError,
    /// An operator faulted the child (`nexus_fault_child`).
    Admin,
    /// An operator stopped the child's rebuild (`nexus_stop_rebuild`).
    RebuildStopped,
    /// The child could not be opened when the nexus was created.
    CannotOpen,
}

impl FaultReason {
    /// The name used in `nexus_get` (`io_error`, `timed_out`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            FaultReason::IoError => "io_error",
            FaultReason::TimedOut => "timed_out",
            FaultReason::NoSpace => "no_space",
            FaultReason::Disconnected => "disconnected",
            FaultReason::MetadataError => "metadata_error",
            FaultReason::Admin => "admin",
            FaultReason::RebuildStopped => "rebuild_stopped",
            FaultReason::CannotOpen => "cannot_open",
        }
    }

    /// The fault reason for an I/O error of a child.
    pub fn from_bdev_error(e: &shoal_bdev::BdevError) -> FaultReason {
        use shoal_bdev::{BdevError, ErrorKind};
        if let BdevError::Os(io) = e {
            if io.raw_os_error() == Some(28) {
                // ENOSPC.
                return FaultReason::NoSpace;
            }
            if matches!(
                io.kind(),
                std::io::ErrorKind::NotConnected
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            ) {
                // A remote replica whose connection was lost beyond its reconnect window.
                return FaultReason::Disconnected;
            }
        }
        match e.kind() {
            ErrorKind::TimedOut => FaultReason::TimedOut,
            ErrorKind::Closed => FaultReason::Disconnected,
            _ => FaultReason::IoError,
        }
    }
}

impl fmt::Display for FaultReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one child of a nexus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChildState {
    /// Being opened or labelled; no I/O yet.
    Init,
    /// Receives writes and is being copied to; serves no reads.
    Rebuilding,
    /// In sync: receives writes and serves reads.
    Online,
    /// Out of the I/O path, for the recorded reason. Writes since are tracked so that a
    /// return is rebuilt only where it missed them.
    Faulted(FaultReason),
    /// Removed from the nexus, or the nexus was destroyed. Final.
    Closed,
}

impl ChildState {
    /// Whether the state machine allows going from `self` to `to` (the transition table).
    pub fn can_become(self, to: ChildState) -> bool {
        use ChildState::{Closed, Faulted, Init, Online, Rebuilding};
        matches!(
            (self, to),
            (Init, Rebuilding)
                | (Init, Online)
                | (Init, Faulted(_))
                | (Rebuilding, Online)
                | (Rebuilding, Faulted(_))
                | (Online, Faulted(_))
                | (Faulted(_), Rebuilding)
                | (Init | Rebuilding | Online | Faulted(_), Closed)
        )
    }

    /// The name used in `nexus_get`: `init`, `rebuilding`, `online`, `faulted` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChildState::Init => "init",
            ChildState::Rebuilding => "rebuilding",
            ChildState::Online => "online",
            ChildState::Faulted(_) => "faulted",
            ChildState::Closed => "closed",
        }
    }

    /// The fault reason, if faulted.
    pub fn fault_reason(self) -> Option<FaultReason> {
        match self {
            ChildState::Faulted(r) => Some(r),
            _ => None,
        }
    }
}

impl fmt::Display for ChildState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildState::Faulted(r) => write!(f, "faulted({r})"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// The state of a nexus, derived from its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NexusState {
    /// Every child is online.
    Online,
    /// At least one child is online and at least one is not.
    Degraded,
    /// No child is online: host I/O fails.
    Faulted,
}

impl NexusState {
    /// The state of a nexus whose children are in `states` (closed children do not count).
    pub fn from_children(states: impl IntoIterator<Item = ChildState>) -> NexusState {
        let (mut online, mut other) = (0usize, 0usize);
        for s in states {
            match s {
                ChildState::Online => online += 1,
                ChildState::Closed => {}
                _ => other += 1,
            }
        }
        match (online, other) {
            (0, _) => NexusState::Faulted,
            (_, 0) => NexusState::Online,
            _ => NexusState::Degraded,
        }
    }

    /// The name used in `nexus_get`.
    pub fn as_str(self) -> &'static str {
        match self {
            NexusState::Online => "online",
            NexusState::Degraded => "degraded",
            NexusState::Faulted => "faulted",
        }
    }
}

impl fmt::Display for NexusState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ChildState::{Closed, Faulted, Init, Online, Rebuilding};
    use super::*;

    const ALL: [ChildState; 5] = [
        Init,
        Rebuilding,
        Online,
        Faulted(FaultReason::IoError),
        Closed,
    ];

    #[test]
    fn transition_table() {
        let allowed = |a: ChildState, b: ChildState| a.can_become(b);
        // The edges of the diagram, and nothing else.
        let expect = [
            (Init, Rebuilding),
            (Init, Online),
            (Init, Faulted(FaultReason::IoError)),
            (Init, Closed),
            (Rebuilding, Online),
            (Rebuilding, Faulted(FaultReason::IoError)),
            (Rebuilding, Closed),
            (Online, Faulted(FaultReason::IoError)),
            (Online, Closed),
            (Faulted(FaultReason::IoError), Rebuilding),
            (Faulted(FaultReason::IoError), Closed),
        ];
        for a in ALL {
            for b in ALL {
                assert_eq!(allowed(a, b), expect.contains(&(a, b)), "{a} -> {b}");
            }
        }
        // An online child cannot serve again without a rebuild, and a closed one is final.
        assert!(!Faulted(FaultReason::TimedOut).can_become(Online));
        assert!(!Closed.can_become(Rebuilding));
        assert!(!Online.can_become(Rebuilding));
    }

    #[test]
    fn nexus_state_from_children() {
        use NexusState as N;
        assert_eq!(N::from_children([Online, Online]), N::Online);
        assert_eq!(N::from_children([Online, Rebuilding]), N::Degraded);
        assert_eq!(N::from_children([Online, Closed]), N::Online);
        assert_eq!(N::from_children([Faulted(FaultReason::Admin)]), N::Faulted);
        assert_eq!(N::from_children([Rebuilding]), N::Faulted);
        assert_eq!(N::from_children([]), N::Faulted);
    }

    #[test]
    fn reasons_from_errors() {
        use shoal_bdev::BdevError;
        let enospc = BdevError::Os(std::io::Error::from_raw_os_error(28));
        assert_eq!(FaultReason::from_bdev_error(&enospc), FaultReason::NoSpace);
        assert_eq!(
            FaultReason::from_bdev_error(&BdevError::TimedOut),
            FaultReason::TimedOut
        );
        assert_eq!(
            FaultReason::from_bdev_error(&BdevError::Closed),
            FaultReason::Disconnected
        );
        assert_eq!(
            FaultReason::from_bdev_error(&BdevError::Injected),
            FaultReason::IoError
        );
        assert_eq!(
            Faulted(FaultReason::TimedOut).to_string(),
            "faulted(timed_out)"
        );
    }
}
