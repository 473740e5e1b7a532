//! Errors of the replication layer.
//!
//! [`NexusError`] is what the nexus's control operations (create, add, remove, fault, destroy)
//! answer. Host I/O never sees it: the I/O path completes with a [`BdevError`] like any other
//! block device. JSON-RPC codes are chosen by the daemon ([`NexusError::kind`] helps it), never
//! here.

use shoal_bdev::BdevError;

use crate::state::{ChildState, FaultReason};

/// Why a nexus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NexusError {
    /// A child URI could not be parsed.
    #[error("invalid child URI `{uri}`: {reason}")]
    InvalidUri {
        /// The URI as given (truncated to 200 characters).
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Invalid arguments (size, block size, duplicate children, ...).
    #[error("{0}")]
    Invalid(String),
    /// The child could not be opened.
    #[error("cannot open child {uri}: {reason}")]
    Open {
        /// The child.
        uri: String,
        /// Why.
        reason: String,
    },
    /// A child of this URI is not part of the nexus.
    #[error("the nexus has no child {0}")]
    NoSuchChild(String),
    /// A child of this URI is already part of the nexus (and not faulted).
    #[error("child {0} is already part of the nexus")]
    ChildExists(String),
    /// None of the children is known to hold current data: creating the nexus would serve
    /// stale or diverged data.
    #[error("no child is known to be current: {0}")]
    NoCurrentChild(String),
    /// A child belongs to a different volume than the one asked for.
    #[error("child {uri} belongs to volume {found}, not {expected}")]
    ForeignChild {
        /// The child.
        uri: String,
        /// The volume its metadata names.
        found: uuid::Uuid,
        /// The volume asked for.
        expected: uuid::Uuid,
    },
    /// The operation would leave the nexus without a healthy child.
    #[error("child {0} is the last healthy child of the nexus")]
    LastHealthyChild(String),
    /// A child state change that the state machine does not allow.
    #[error("child {uri}: cannot go from {from} to {to}")]
    InvalidTransition {
        /// The child.
        uri: String,
        /// Its current state.
        from: ChildState,
        /// The state asked for.
        to: ChildState,
    },
    /// The child is busy (e.g. I/O abandoned after a timeout is still outstanding on it).
    #[error("child {uri} is busy: {reason}")]
    Busy {
        /// The child.
        uri: String,
        /// Why.
        reason: String,
    },
    /// A pause of the host writes conflicts: one is in force already, or the one named is
    /// over (it lapsed at its deadline).
    #[error("{0}")]
    Pause(String),
    /// The child has no rebuild running.
    #[error("child {0} has no rebuild running")]
    NoRebuild(String),
    /// I/O on a child's metadata failed; the child was faulted with `reason`.
    #[error("metadata I/O on child {uri} failed ({reason}): {source}")]
    MetadataIo {
        /// The child.
        uri: String,
        /// The fault reason recorded.
        reason: FaultReason,
        /// The error.
        #[source]
        source: BdevError,
    },
    /// The nexus has no healthy child left.
    #[error("the nexus is faulted: no healthy child is left")]
    Faulted,
    /// The nexus was destroyed (or is being destroyed).
    #[error("the nexus is destroyed")]
    Destroyed,
    /// Remote children need a transport that is not available.
    #[error("{0}")]
    Unsupported(String),
    /// The nexus's reactor did not answer in time.
    #[error("timed out waiting for the nexus's reactor")]
    Timeout,
    /// The nexus's reactor has stopped (or dropped the request).
    #[error("the nexus's reactor has stopped")]
    ReactorGone,
}

/// The broad class of a [`NexusError`], for mapping to protocol codes in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NexusErrorKind {
    /// Bad argument.
    Invalid,
    /// Something named does not exist.
    NotFound,
    /// Something already exists.
    Exists,
    /// Refused because of the current state (busy, last child, transition).
    State,
    /// An I/O failure.
    Io,
    /// Not supported.
    Unsupported,
    /// The reactor did not answer.
    Unavailable,
}

impl NexusError {
    /// The class of this error.
    pub fn kind(&self) -> NexusErrorKind {
        match self {
            NexusError::InvalidUri { .. } | NexusError::Invalid(_) => NexusErrorKind::Invalid,
            NexusError::NoSuchChild(_) | NexusError::NoRebuild(_) => NexusErrorKind::NotFound,
            NexusError::ChildExists(_) => NexusErrorKind::Exists,
            NexusError::NoCurrentChild(_)
            | NexusError::ForeignChild { .. }
            | NexusError::LastHealthyChild(_)
            | NexusError::InvalidTransition { .. }
            | NexusError::Busy { .. }
            | NexusError::Pause(_)
            | NexusError::Faulted
            | NexusError::Destroyed => NexusErrorKind::State,
            NexusError::Open { .. } | NexusError::MetadataIo { .. } => NexusErrorKind::Io,
            NexusError::Unsupported(_) => NexusErrorKind::Unsupported,
            NexusError::Timeout | NexusError::ReactorGone => NexusErrorKind::Unavailable,
        }
    }
}
