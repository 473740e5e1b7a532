//! Errors of the host side, and their one mapping to [`BdevError`].
//!
//! [`ProtocolError`] is what a misbehaving controller can cause: every check on a received PDU
//! fails with one of its variants, never with a panic. A protocol error ends the connection and
//! sends the controller through the reconnect logic ([`super::reconnect`]). [`HostError`] is
//! what callers of the host API see.

use std::sync::Arc;
use std::time::Duration;

use shoal_bdev::{BdevError, IoType};
use thiserror::Error;

use crate::wire::pdu::DeframeError;
use crate::wire::spec::{Status, StatusCodeType};

/// A controller broke the NVMe/TCP protocol. The connection is closed (after an H2CTermReq
/// where the transport binding defines one) and the controller is reconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// The deframer refused a PDU header: unknown type, wrong HLEN / PDO / PLEN, bad flags,
    /// a header digest mismatch, a C2HData above the host's limit (NVMe-oF 1.1 section 7.4.7).
    #[error("malformed PDU: {0}")]
    Malformed(#[from] DeframeError),
    /// A C2HData PDU failed its data digest (NVMe/TCP 1.0a section 3.6.2.9; the data is not
    /// used).
    #[error("data digest mismatch on C2HData for CID {cid}: {received:#010x} != {computed:#010x}")]
    DataDigest {
        /// The command the data was for.
        cid: u16,
        /// DDGST in the PDU.
        received: u32,
        /// CRC32C of the data.
        computed: u32,
    },
    /// A CapsuleResp, C2HData or R2T named a CID that is not outstanding (NVMe Base 2.0
    /// section 4.2: a completion refers to a command the host submitted).
    #[error("{pdu} for CID {cid}, which is not outstanding")]
    UnknownCid {
        /// The PDU type.
        pdu: &'static str,
        /// The CID it named.
        cid: u16,
    },
    /// C2HData for a command that moves no data to the host, or an R2T for one that moves
    /// none to the controller (NVMe/TCP 1.0a sections 3.6.2.9 and 3.6.2.10).
    #[error("{pdu} for CID {cid}, whose command has no data in that direction")]
    WrongDirection {
        /// The PDU type.
        pdu: &'static str,
        /// The CID it named.
        cid: u16,
    },
    /// C2HData not at the next expected offset (NVMe/TCP 1.0a section 3.6.2.9: a command's
    /// data is sent in order, without gaps or overlap).
    #[error("C2HData for CID {cid} at offset {offset}, expected {expected}")]
    DataOffset {
        /// The command.
        cid: u16,
        /// DATAO received.
        offset: u32,
        /// The next byte the host expected.
        expected: u32,
    },
    /// Data beyond the command's own length (NVMe/TCP 1.0a section 3.6.2.9, FES Data
    /// Transfer Out of Range): it would have been written outside the caller's buffers.
    #[error("data for CID {cid} ends at byte {end}, beyond the command's {len} bytes")]
    DataBeyondCommand {
        /// The command.
        cid: u16,
        /// DATAO + DATAL.
        end: u64,
        /// The command's data length.
        len: u32,
    },
    /// An R2T asking for bytes the command does not have, or that were already asked for,
    /// or zero bytes (NVMe/TCP 1.0a section 3.6.2.10).
    #[error("R2T for CID {cid} asks for bytes {offset}+{len}; next is {expected} of {cmd_len}")]
    BadR2t {
        /// The command.
        cid: u16,
        /// R2TO.
        offset: u32,
        /// R2TL.
        len: u32,
        /// The next byte not yet asked for.
        expected: u32,
        /// The command's data length.
        cmd_len: u32,
    },
    /// A successful completion (CapsuleResp, or C2HData with SUCCESS) before all of a read's
    /// data arrived (NVMe/TCP 1.0a section 3.6.2.9: SUCCESS is set on the last data PDU).
    #[error("success for CID {cid} after {received} of {len} data bytes")]
    MissingData {
        /// The command.
        cid: u16,
        /// Bytes received.
        received: u32,
        /// Bytes the command transfers.
        len: u32,
    },
    /// The ICResp did not grant exactly the digests asked for (NVMe/TCP 1.0a section
    /// 3.6.2.3; Linux refuses the same).
    #[error("ICResp digests (header {header}, data {data}) differ from the request")]
    DigestMismatch {
        /// Header digest granted.
        header: bool,
        /// Data digest granted.
        data: bool,
    },
    /// A PDU that cannot be valid at this point (e.g. a second ICResp).
    #[error("unexpected {0} PDU")]
    UnexpectedPdu(&'static str),
}

/// An error of the host side.
#[derive(Debug, Clone, Error)]
pub enum HostError {
    /// A socket operation failed (connect, send, receive).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The controller closed the connection.
    #[error("the controller closed the connection")]
    ConnectionClosed,
    /// The controller broke the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The controller ended the connection with a C2HTermReq (NVMe/TCP 1.0a section 3.6.2.5).
    #[error("the controller terminated the connection: FES {fes:#x}, FEI {fei}")]
    Terminated {
        /// Fatal Error Status.
        fes: u16,
        /// Fatal Error Information.
        fei: u32,
    },
    /// A command completed with an error status.
    #[error("command failed with status {status:?}")]
    Status {
        /// The status.
        status: Status,
    },
    /// Fabrics Connect was refused (NVMe-oF 1.1 section 3.3; DW0 locates an invalid parameter).
    #[error("connect refused: {status:?} (DW0 {dw0:#x})")]
    ConnectRefused {
        /// The status.
        status: Status,
        /// DW0 of the response.
        dw0: u32,
    },
    /// A command got no completion in time.
    #[error("command timed out after {0:?}")]
    Timeout(Duration),
    /// The controller did not become ready (CSTS.RDY) or shut down (CSTS.SHST) in time, or
    /// reported a fatal status (CSTS.CFS).
    #[error("controller not ready: {0}")]
    NotReady(&'static str),
    /// The controller could not be reconnected within the controller-loss timeout.
    #[error("controller lost: no reconnect within {0:?}")]
    ControllerLost(Duration),
    /// The controller is reconnecting; admin commands are refused until it is back.
    #[error("the controller is reconnecting")]
    Reconnecting,
    /// The queue pair or controller was closed by its user.
    #[error("closed")]
    Closed,
    /// No I/O queue is left: the controller granted this many (Set Features Number of Queues).
    #[error("no I/O queue left (the controller granted {0})")]
    NoQueues(u16),
    /// A request or an option is invalid.
    #[error("invalid: {0}")]
    Invalid(String),
    /// A namespace does not exist or is not active.
    #[error("namespace {0} is not active")]
    NoNamespace(u32),
    /// A call that needs a reactor was made off one, or a blocking call on the reactor it
    /// would wait for.
    #[error("{0}")]
    Reactor(&'static str),
}

impl HostError {
    /// An I/O error with context.
    pub fn io(context: &'static str, e: std::io::Error) -> HostError {
        HostError::Io {
            context,
            source: Arc::new(e),
        }
    }

    /// Whether the error comes from the connection (transport or protocol) rather than from a
    /// command or an argument: such errors send the controller through reconnection.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            HostError::Io { .. }
                | HostError::ConnectionClosed
                | HostError::Protocol(_)
                | HostError::Terminated { .. }
                | HostError::Timeout(_)
        )
    }
}

/// The [`BdevError`] a failed request of `io_type` at `offset`+`count` (device of `capacity`
/// blocks) completes with. This is the host side's one mapping to the bdev layer:
///
/// - LBA Out of Range and Capacity Exceeded (NVM Command Set 1.0): `OutOfRange`;
/// - Invalid Command Opcode: `Unsupported(io_type)` (the remote namespace lacks it);
/// - Namespace Not Ready: `Closed` (what the target reports for a device being removed);
/// - a command timeout: `TimedOut`;
/// - the queue pair closed by its user: `Closed`;
/// - anything else (other statuses, controller lost, transport errors) is
///   `Os(io::Error)` whose inner error is the [`HostError`] (see [`host_error`]) and whose
///   kind is `NotConnected` for a lost controller, `InvalidInput` for Invalid Field / SGL
///   errors, `Other` otherwise.
pub fn to_bdev_error(e: &HostError, io_type: IoType, io: (u64, u64, u64)) -> BdevError {
    let (offset, count, capacity) = io;
    match e {
        HostError::Status { status } => {
            let same = |s: Status| s.sct == status.sct && s.sc == status.sc;
            if same(Status::LBA_OUT_OF_RANGE) || same(Status::CAPACITY_EXCEEDED) {
                return BdevError::OutOfRange {
                    offset,
                    count,
                    capacity,
                };
            }
            if same(Status::INVALID_OPCODE) {
                return BdevError::Unsupported(io_type);
            }
            if same(Status::NAMESPACE_NOT_READY) {
                return BdevError::Closed;
            }
            let kind =
                if status.sct == StatusCodeType::GENERIC && (0x02..=0x16).contains(&status.sc) {
                    std::io::ErrorKind::InvalidInput
                } else {
                    std::io::ErrorKind::Other
                };
            BdevError::Os(std::io::Error::new(kind, e.clone()))
        }
        HostError::Timeout(_) => BdevError::TimedOut,
        HostError::Closed => BdevError::Closed,
        HostError::ControllerLost(_) => BdevError::Os(std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            e.clone(),
        )),
        other => BdevError::Os(std::io::Error::other(other.clone())),
    }
}

/// The [`HostError`] inside a [`BdevError`] produced by [`to_bdev_error`], if any: how a
/// caller such as the nexus tells an NVMe status from a lost controller.
pub fn host_error(e: &BdevError) -> Option<&HostError> {
    match e {
        BdevError::Os(io) => io.get_ref()?.downcast_ref::<HostError>(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_bdev_errors() {
        let st = |s: Status| HostError::Status {
            status: s.with_dnr(),
        };
        let io = (5, 2, 6);
        assert!(matches!(
            to_bdev_error(&st(Status::LBA_OUT_OF_RANGE), IoType::Read, io),
            BdevError::OutOfRange {
                offset: 5,
                count: 2,
                capacity: 6
            }
        ));
        assert!(matches!(
            to_bdev_error(&st(Status::INVALID_OPCODE), IoType::Unmap, io),
            BdevError::Unsupported(IoType::Unmap)
        ));
        assert!(matches!(
            to_bdev_error(
                &HostError::Timeout(Duration::from_secs(1)),
                IoType::Read,
                io
            ),
            BdevError::TimedOut
        ));
        let media = to_bdev_error(&st(Status::WRITE_FAULT), IoType::Write, io);
        match host_error(&media) {
            Some(HostError::Status { status }) => assert_eq!(status.sc, 0x80),
            other => panic!("{other:?}"),
        }
        let lost = to_bdev_error(
            &HostError::ControllerLost(Duration::from_secs(10)),
            IoType::Write,
            io,
        );
        match &lost {
            BdevError::Os(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotConnected),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            host_error(&lost),
            Some(HostError::ControllerLost(_))
        ));
        let invalid = to_bdev_error(&st(Status::INVALID_FIELD), IoType::Read, io);
        assert!(
            matches!(&invalid, BdevError::Os(e) if e.kind() == std::io::ErrorKind::InvalidInput)
        );
    }
}
