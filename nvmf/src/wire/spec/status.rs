//! Command completion status (NVMe Base 2.0 "Completion Queue Entry: Status Field" and the
//! status code tables that follow it; NVM Command Set 1.0 for the NVM codes; NVMe-oF 1.1
//! "Connect Command Status Values").

/// A status code type (SCT, CQE status bits 11:9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatusCodeType(pub u8);

impl StatusCodeType {
    /// Generic Command Status.
    pub const GENERIC: StatusCodeType = StatusCodeType(0x0);
    /// Command Specific Status.
    pub const COMMAND_SPECIFIC: StatusCodeType = StatusCodeType(0x1);
    /// Media and Data Integrity Errors.
    pub const MEDIA: StatusCodeType = StatusCodeType(0x2);
    /// Path Related Status.
    pub const PATH: StatusCodeType = StatusCodeType(0x3);
    /// Vendor Specific.
    pub const VENDOR_SPECIFIC: StatusCodeType = StatusCodeType(0x7);
}

/// The status of a completed command: status code type, status code, and the More and Do
/// Not Retry bits. The named constants leave DNR and More clear; see [`Status::with_dnr`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Status {
    /// Status code type.
    pub sct: StatusCodeType,
    /// Status code.
    pub sc: u8,
    /// Do Not Retry: the same command is expected to fail again.
    pub dnr: bool,
    /// More: more status information is available in the Error Information log page.
    pub more: bool,
}

const fn generic(sc: u8) -> Status {
    Status {
        sct: StatusCodeType::GENERIC,
        sc,
        dnr: false,
        more: false,
    }
}

const fn specific(sc: u8) -> Status {
    Status {
        sct: StatusCodeType::COMMAND_SPECIFIC,
        sc,
        dnr: false,
        more: false,
    }
}

const fn media(sc: u8) -> Status {
    Status {
        sct: StatusCodeType::MEDIA,
        sc,
        dnr: false,
        more: false,
    }
}

const fn path(sc: u8) -> Status {
    Status {
        sct: StatusCodeType::PATH,
        sc,
        dnr: false,
        more: false,
    }
}

impl Status {
    /// A status with the given type and code, DNR and More clear.
    pub const fn new(sct: StatusCodeType, sc: u8) -> Self {
        Status {
            sct,
            sc,
            dnr: false,
            more: false,
        }
    }

    /// The same status with Do Not Retry set.
    pub const fn with_dnr(self) -> Self {
        Status { dnr: true, ..self }
    }

    /// The same status with More set.
    pub const fn with_more(self) -> Self {
        Status { more: true, ..self }
    }

    /// True for Successful Completion (SCT 0, SC 0), whatever DNR and More say.
    pub const fn is_success(self) -> bool {
        self.sct.0 == 0 && self.sc == 0
    }

    /// The CQE status field (DW3 bits 31:16): phase in bit 0, SC in bits 8:1, SCT in bits
    /// 11:9, CRD (left 0) in bits 13:12, More in bit 14, DNR in bit 15.
    pub const fn to_field(self, phase: bool) -> u16 {
        (phase as u16)
            | ((self.sc as u16) << 1)
            | (((self.sct.0 & 0x7) as u16) << 9)
            | ((self.more as u16) << 14)
            | ((self.dnr as u16) << 15)
    }

    /// Decodes a CQE status field (the phase bit is ignored; see `Cqe::phase`).
    pub const fn from_field(field: u16) -> Self {
        let [lo, hi] = field.to_le_bytes();
        Status {
            sc: (lo >> 1) | ((hi & 1) << 7),
            sct: StatusCodeType((hi >> 1) & 0x7),
            more: hi & 0x40 != 0,
            dnr: hi & 0x80 != 0,
        }
    }

    // Generic command status (SCT 0), NVMe Base 2.0 "Generic Command Status Values".
    /// Successful Completion.
    pub const SUCCESS: Status = generic(0x00);
    /// Invalid Command Opcode.
    pub const INVALID_OPCODE: Status = generic(0x01);
    /// Invalid Field in Command.
    pub const INVALID_FIELD: Status = generic(0x02);
    /// Command ID Conflict.
    pub const COMMAND_ID_CONFLICT: Status = generic(0x03);
    /// Data Transfer Error.
    pub const DATA_TRANSFER_ERROR: Status = generic(0x04);
    /// Commands Aborted due to Power Loss Notification.
    pub const ABORTED_POWER_LOSS: Status = generic(0x05);
    /// Internal Error.
    pub const INTERNAL_ERROR: Status = generic(0x06);
    /// Command Abort Requested.
    pub const ABORT_REQUESTED: Status = generic(0x07);
    /// Command Aborted due to SQ Deletion.
    pub const ABORTED_SQ_DELETION: Status = generic(0x08);
    /// Command Aborted due to Failed Fused Command.
    pub const ABORTED_FAILED_FUSED: Status = generic(0x09);
    /// Command Aborted due to Missing Fused Command.
    pub const ABORTED_MISSING_FUSED: Status = generic(0x0A);
    /// Invalid Namespace or Format.
    pub const INVALID_NAMESPACE: Status = generic(0x0B);
    /// Command Sequence Error.
    pub const COMMAND_SEQUENCE_ERROR: Status = generic(0x0C);
    /// Invalid SGL Segment Descriptor.
    pub const INVALID_SGL_SEGMENT_DESCRIPTOR: Status = generic(0x0D);
    /// Invalid Number of SGL Descriptors.
    pub const INVALID_NUMBER_OF_SGL_DESCRIPTORS: Status = generic(0x0E);
    /// Data SGL Length Invalid.
    pub const DATA_SGL_LENGTH_INVALID: Status = generic(0x0F);
    /// Metadata SGL Length Invalid.
    pub const METADATA_SGL_LENGTH_INVALID: Status = generic(0x10);
    /// SGL Descriptor Type Invalid.
    pub const SGL_DESCRIPTOR_TYPE_INVALID: Status = generic(0x11);
    /// Invalid Use of Controller Memory Buffer.
    pub const INVALID_CMB_USE: Status = generic(0x12);
    /// PRP Offset Invalid.
    pub const PRP_OFFSET_INVALID: Status = generic(0x13);
    /// Atomic Write Unit Exceeded.
    pub const ATOMIC_WRITE_UNIT_EXCEEDED: Status = generic(0x14);
    /// Operation Denied.
    pub const OPERATION_DENIED: Status = generic(0x15);
    /// SGL Offset Invalid.
    pub const INVALID_SGL_OFFSET: Status = generic(0x16);
    /// Host Identifier Inconsistent Format.
    pub const HOST_ID_INCONSISTENT_FORMAT: Status = generic(0x18);
    /// Keep Alive Timer Expired.
    pub const KEEP_ALIVE_EXPIRED: Status = generic(0x19);
    /// Keep Alive Timeout Invalid.
    pub const KEEP_ALIVE_INVALID: Status = generic(0x1A);
    /// Command Aborted due to Preempt and Abort.
    pub const ABORTED_PREEMPT: Status = generic(0x1B);
    /// Sanitize Failed.
    pub const SANITIZE_FAILED: Status = generic(0x1C);
    /// Sanitize In Progress.
    pub const SANITIZE_IN_PROGRESS: Status = generic(0x1D);
    /// SGL Data Block Granularity Invalid.
    pub const SGL_DATA_BLOCK_GRANULARITY_INVALID: Status = generic(0x1E);
    /// Namespace is Write Protected.
    pub const NAMESPACE_WRITE_PROTECTED: Status = generic(0x20);
    /// Command Interrupted.
    pub const COMMAND_INTERRUPTED: Status = generic(0x21);
    /// Transient Transport Error: the command may succeed if retried. NVMe/TCP completes a
    /// command whose data failed its data digest with this status.
    pub const TRANSIENT_TRANSPORT_ERROR: Status = generic(0x22);
    /// LBA Out of Range (NVM command set).
    pub const LBA_OUT_OF_RANGE: Status = generic(0x80);
    /// Capacity Exceeded (NVM command set).
    pub const CAPACITY_EXCEEDED: Status = generic(0x81);
    /// Namespace Not Ready (NVM command set).
    pub const NAMESPACE_NOT_READY: Status = generic(0x82);
    /// Reservation Conflict (NVM command set).
    pub const RESERVATION_CONFLICT: Status = generic(0x83);
    /// Format In Progress (NVM command set).
    pub const FORMAT_IN_PROGRESS: Status = generic(0x84);

    // Command specific status (SCT 1), NVMe Base 2.0 "Command Specific Status Values".
    /// Completion Queue Invalid.
    pub const COMPLETION_QUEUE_INVALID: Status = specific(0x00);
    /// Invalid Queue Identifier.
    pub const INVALID_QUEUE_IDENTIFIER: Status = specific(0x01);
    /// Invalid Queue Size.
    pub const INVALID_QUEUE_SIZE: Status = specific(0x02);
    /// Abort Command Limit Exceeded.
    pub const ABORT_COMMAND_LIMIT_EXCEEDED: Status = specific(0x03);
    /// Asynchronous Event Request Limit Exceeded.
    pub const ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED: Status = specific(0x05);
    /// Invalid Firmware Slot.
    pub const INVALID_FIRMWARE_SLOT: Status = specific(0x06);
    /// Invalid Firmware Image.
    pub const INVALID_FIRMWARE_IMAGE: Status = specific(0x07);
    /// Invalid Interrupt Vector.
    pub const INVALID_INTERRUPT_VECTOR: Status = specific(0x08);
    /// Invalid Log Page.
    pub const INVALID_LOG_PAGE: Status = specific(0x09);
    /// Invalid Format.
    pub const INVALID_FORMAT: Status = specific(0x0A);
    /// Feature Identifier Not Saveable.
    pub const FEATURE_ID_NOT_SAVEABLE: Status = specific(0x0D);
    /// Feature Not Changeable.
    pub const FEATURE_NOT_CHANGEABLE: Status = specific(0x0E);
    /// Feature Not Namespace Specific.
    pub const FEATURE_NOT_NAMESPACE_SPECIFIC: Status = specific(0x0F);
    /// Connect: Incompatible Format (NVMe-oF 1.1 "Connect Command Status Values").
    pub const CONNECT_INCOMPATIBLE_FORMAT: Status = specific(0x80);
    /// Connect: Controller Busy.
    pub const CONNECT_CONTROLLER_BUSY: Status = specific(0x81);
    /// Connect: Invalid Parameters (the CQE's DW0 says which, see
    /// `fabrics::connect_invalid_parameters_dw0`).
    pub const CONNECT_INVALID_PARAMETERS: Status = specific(0x82);
    /// Connect: Restart Discovery.
    pub const CONNECT_RESTART_DISCOVERY: Status = specific(0x83);
    /// Connect: Invalid Host.
    pub const CONNECT_INVALID_HOST: Status = specific(0x84);
    /// Connect: Invalid Queue Type.
    pub const CONNECT_INVALID_QUEUE_TYPE: Status = specific(0x85);
    /// Invalid Queue Type, as a Disconnect submitted on the Admin Queue is answered (NVMe Base
    /// 2.0, section 6.4; the same code as [`Status::CONNECT_INVALID_QUEUE_TYPE`]).
    pub const INVALID_QUEUE_TYPE: Status = specific(0x85);
    /// Discover Restart (Get Log Page of the discovery log).
    pub const DISCOVER_RESTART: Status = specific(0x90);
    /// Authentication Required.
    pub const AUTHENTICATION_REQUIRED: Status = specific(0x91);

    // Media and data integrity errors (SCT 2), NVM Command Set 1.0 "Media and Data Integrity
    // Errors".
    /// Write Fault.
    pub const WRITE_FAULT: Status = media(0x80);
    /// Unrecovered Read Error.
    pub const UNRECOVERED_READ_ERROR: Status = media(0x81);
    /// End-to-end Guard Check Error.
    pub const GUARD_CHECK_ERROR: Status = media(0x82);
    /// End-to-end Application Tag Check Error.
    pub const APPLICATION_TAG_CHECK_ERROR: Status = media(0x83);
    /// End-to-end Reference Tag Check Error.
    pub const REFERENCE_TAG_CHECK_ERROR: Status = media(0x84);
    /// Compare Failure.
    pub const COMPARE_FAILURE: Status = media(0x85);
    /// Access Denied.
    pub const ACCESS_DENIED: Status = media(0x86);
    /// Deallocated or Unwritten Logical Block.
    pub const DEALLOCATED_OR_UNWRITTEN_BLOCK: Status = media(0x87);

    // Path related status (SCT 3), NVMe Base 2.0 "Path Related Status Values".
    /// Internal Path Error.
    pub const INTERNAL_PATH_ERROR: Status = path(0x00);
    /// Asymmetric Access Persistent Loss.
    pub const ANA_PERSISTENT_LOSS: Status = path(0x01);
    /// Asymmetric Access Inaccessible.
    pub const ANA_INACCESSIBLE: Status = path(0x02);
    /// Asymmetric Access Transition.
    pub const ANA_TRANSITION: Status = path(0x03);
    /// Controller Pathing Error.
    pub const CONTROLLER_PATHING_ERROR: Status = path(0x60);
    /// Host Pathing Error.
    pub const HOST_PATHING_ERROR: Status = path(0x70);
    /// Command Aborted By Host.
    pub const ABORTED_BY_HOST: Status = path(0x71);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_field_roundtrip() {
        let s = Status::COMPARE_FAILURE.with_dnr();
        let field = s.to_field(true);
        // phase 1, SC 0x85 in bits 8:1, SCT 2 in bits 11:9, DNR bit 15.
        assert_eq!(field, 1 | (0x85 << 1) | (2 << 9) | (1 << 15));
        assert_eq!(Status::from_field(field), s);
        let m = Status::INVALID_LOG_PAGE.with_more();
        assert_eq!(Status::from_field(m.to_field(false)), m);
        assert!(Status::SUCCESS.is_success());
        assert!(!Status::LBA_OUT_OF_RANGE.is_success());
        assert_eq!(Status::SUCCESS.to_field(false), 0);
    }

    #[test]
    fn every_sc_and_sct_roundtrips() {
        for sct in 0..8u8 {
            for sc in 0..=255u8 {
                for flags in 0..4u8 {
                    let s = Status {
                        sct: StatusCodeType(sct),
                        sc,
                        dnr: flags & 1 != 0,
                        more: flags & 2 != 0,
                    };
                    assert_eq!(Status::from_field(s.to_field(sc % 2 == 0)), s);
                }
            }
        }
    }
}
