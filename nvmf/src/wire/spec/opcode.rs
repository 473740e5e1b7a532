//! Command opcodes (NVMe Base 2.0 "Opcodes for Admin Commands"; NVM Command Set 1.0 "Opcodes
//! for NVM Commands"; NVMe-oF 1.1 "Fabrics Command Type").
//!
//! Opcodes are open sets: an unknown value is still representable, and a command parser
//! turns it into an `Unknown` arm that completes with Invalid Command Opcode.

/// A command opcode (SQE byte 0). Admin and I/O opcodes share the numeric space, so their
/// named values live in the [`admin`] and [`io`] modules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Opcode(pub u8);

impl Opcode {
    /// Fabrics command (NVMe-oF 1.1 "Fabrics Command Set"): valid on admin and I/O queues; the
    /// command type is in byte 4 ([`FabricsType`]).
    pub const FABRICS: Opcode = Opcode(0x7F);

    /// Data transfer direction, bits 1:0 of the opcode (NVMe Base 2.0 "Opcodes for Admin
    /// Commands"): 00b none, 01b host to controller, 10b controller to host, 11b bidirectional.
    pub fn data_direction(self) -> u8 {
        self.0 & 0b11
    }
}

/// Admin command opcodes.
pub mod admin {
    use super::Opcode;

    /// Delete I/O Submission Queue.
    pub const DELETE_IO_SQ: Opcode = Opcode(0x00);
    /// Create I/O Submission Queue.
    pub const CREATE_IO_SQ: Opcode = Opcode(0x01);
    /// Get Log Page.
    pub const GET_LOG_PAGE: Opcode = Opcode(0x02);
    /// Delete I/O Completion Queue.
    pub const DELETE_IO_CQ: Opcode = Opcode(0x04);
    /// Create I/O Completion Queue.
    pub const CREATE_IO_CQ: Opcode = Opcode(0x05);
    /// Identify.
    pub const IDENTIFY: Opcode = Opcode(0x06);
    /// Abort.
    pub const ABORT: Opcode = Opcode(0x08);
    /// Set Features.
    pub const SET_FEATURES: Opcode = Opcode(0x09);
    /// Get Features.
    pub const GET_FEATURES: Opcode = Opcode(0x0A);
    /// Asynchronous Event Request.
    pub const ASYNC_EVENT_REQUEST: Opcode = Opcode(0x0C);
    /// Namespace Management.
    pub const NAMESPACE_MANAGEMENT: Opcode = Opcode(0x0D);
    /// Firmware Commit.
    pub const FIRMWARE_COMMIT: Opcode = Opcode(0x10);
    /// Firmware Image Download.
    pub const FIRMWARE_IMAGE_DOWNLOAD: Opcode = Opcode(0x11);
    /// Device Self-test.
    pub const DEVICE_SELF_TEST: Opcode = Opcode(0x14);
    /// Namespace Attachment.
    pub const NAMESPACE_ATTACHMENT: Opcode = Opcode(0x15);
    /// Keep Alive.
    pub const KEEP_ALIVE: Opcode = Opcode(0x18);
    /// Directive Send.
    pub const DIRECTIVE_SEND: Opcode = Opcode(0x19);
    /// Directive Receive.
    pub const DIRECTIVE_RECEIVE: Opcode = Opcode(0x1A);
    /// Format NVM.
    pub const FORMAT_NVM: Opcode = Opcode(0x80);
    /// Security Send.
    pub const SECURITY_SEND: Opcode = Opcode(0x81);
    /// Security Receive.
    pub const SECURITY_RECEIVE: Opcode = Opcode(0x82);
    /// Sanitize.
    pub const SANITIZE: Opcode = Opcode(0x84);
}

/// NVM command set I/O opcodes.
pub mod io {
    use super::Opcode;

    /// Flush.
    pub const FLUSH: Opcode = Opcode(0x00);
    /// Write.
    pub const WRITE: Opcode = Opcode(0x01);
    /// Read.
    pub const READ: Opcode = Opcode(0x02);
    /// Write Uncorrectable.
    pub const WRITE_UNCORRECTABLE: Opcode = Opcode(0x04);
    /// Compare.
    pub const COMPARE: Opcode = Opcode(0x05);
    /// Write Zeroes.
    pub const WRITE_ZEROES: Opcode = Opcode(0x08);
    /// Dataset Management (deallocate / TRIM).
    pub const DATASET_MANAGEMENT: Opcode = Opcode(0x09);
    /// Verify.
    pub const VERIFY: Opcode = Opcode(0x0C);
    /// Reservation Register.
    pub const RESERVATION_REGISTER: Opcode = Opcode(0x0D);
    /// Reservation Report.
    pub const RESERVATION_REPORT: Opcode = Opcode(0x0E);
    /// Reservation Acquire.
    pub const RESERVATION_ACQUIRE: Opcode = Opcode(0x11);
    /// Reservation Release.
    pub const RESERVATION_RELEASE: Opcode = Opcode(0x15);
    /// Copy.
    pub const COPY: Opcode = Opcode(0x19);
}

/// A fabrics command type (FCTYPE, SQE byte 4 of a command with opcode 0x7F; NVMe-oF 1.1
/// "Fabrics Command Type").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FabricsType(pub u8);

impl FabricsType {
    /// Property Set.
    pub const PROPERTY_SET: FabricsType = FabricsType(0x00);
    /// Connect.
    pub const CONNECT: FabricsType = FabricsType(0x01);
    /// Property Get.
    pub const PROPERTY_GET: FabricsType = FabricsType(0x04);
    /// Authentication Send.
    pub const AUTHENTICATION_SEND: FabricsType = FabricsType(0x05);
    /// Authentication Receive.
    pub const AUTHENTICATION_RECEIVE: FabricsType = FabricsType(0x06);
    /// Disconnect: tears down an I/O queue.
    pub const DISCONNECT: FabricsType = FabricsType(0x08);
}
