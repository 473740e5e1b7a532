//! Typed commands parsed from a raw [`Sqe`].
//!
//! Parsing never fails: every field is taken from the command dwords with masks and
//! widening (0's based counts become `u32`/`u64` counts, so `0xFFFF` means 65536 blocks, not
//! an overflow), and an opcode this crate does not know becomes an `Unknown` arm, which the
//! controller completes with [`Status::INVALID_OPCODE`]. Checks that need controller state
//! (namespace size, limits) are helpers returning a [`Status`]: [`lba_range`],
//! [`data_transfer`], [`check_fabrics_sqe`].

use crate::wire::spec::features::FeatureId;
use crate::wire::spec::identify::Cns;
use crate::wire::spec::log::LogPageId;
use crate::wire::spec::opcode::{FabricsType, Opcode, admin, io};
use crate::wire::spec::sqe::{Sqe, fuse, psdt, sgl_subtype, sgl_type};
use crate::wire::spec::status::Status;

#[cfg(test)]
mod tests;

/// The kind of queue a command arrived on, which decides how its opcode is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueKind {
    /// The admin queue (QID 0).
    Admin,
    /// An I/O queue.
    Io,
}

/// A parsed command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// A command on the admin queue.
    Admin(AdminCommand),
    /// A command on an I/O queue.
    Io(IoCommand),
}

impl Command {
    /// Parses `sqe` as a command on a queue of the given kind.
    pub fn parse(sqe: &Sqe, queue: QueueKind) -> Self {
        match queue {
            QueueKind::Admin => Self::Admin(AdminCommand::parse(sqe)),
            QueueKind::Io => Self::Io(IoCommand::parse(sqe)),
        }
    }
}

fn lo16(v: u32) -> u16 {
    let [a, b, _, _] = v.to_le_bytes();
    u16::from_le_bytes([a, b])
}

fn hi16(v: u32) -> u16 {
    let [_, _, c, d] = v.to_le_bytes();
    u16::from_le_bytes([c, d])
}

fn byte(v: u32, n: usize) -> u8 {
    v.to_le_bytes().get(n).copied().unwrap_or(0)
}

fn bit(v: u32, n: u32) -> bool {
    (v >> n) & 1 != 0
}

/// Admin commands (NVMe Base 2.0, "Admin Command Set").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminCommand {
    /// Identify.
    Identify {
        /// Controller or Namespace Structure (CDW10 bits 7:0).
        cns: Cns,
        /// Controller Identifier (CDW10 bits 31:16).
        cntid: u16,
        /// Namespace identifier.
        nsid: u32,
        /// CNS Specific Identifier (CDW11 bits 15:0).
        cns_specific_id: u16,
        /// Command Set Identifier (CDW11 bits 31:24).
        csi: u8,
    },
    /// Get Log Page.
    GetLogPage {
        /// Log Page Identifier (CDW10 bits 7:0).
        lid: LogPageId,
        /// Namespace identifier.
        nsid: u32,
        /// Number of dwords to return: NUMDU:NUMDL + 1 (0's based on the wire), widened so
        /// the largest request (2^32 dwords) is representable.
        num_dwords: u64,
        /// Log Page Offset in bytes (CDW13:CDW12), or an index if `offset_is_index`.
        offset: u64,
        /// Log Specific Parameter (CDW10 bits 14:8).
        lsp: u8,
        /// Log Specific Identifier (CDW11 bits 31:16).
        lsi: u16,
        /// Retain Asynchronous Event (CDW10 bit 15).
        rae: bool,
        /// Offset Type (CDW14 bit 23): the offset is an index of a data structure.
        offset_is_index: bool,
        /// Command Set Identifier (CDW14 bits 31:24).
        csi: u8,
    },
    /// Get Features.
    GetFeatures {
        /// Feature Identifier (CDW10 bits 7:0).
        fid: FeatureId,
        /// Select (CDW10 bits 10:8), see `spec::features::select`.
        sel: u8,
        /// Namespace identifier.
        nsid: u32,
        /// Feature specific CDW11.
        cdw11: u32,
    },
    /// Set Features.
    SetFeatures {
        /// Feature Identifier (CDW10 bits 7:0).
        fid: FeatureId,
        /// Save (CDW10 bit 31).
        save: bool,
        /// Namespace identifier.
        nsid: u32,
        /// Feature specific CDW11 (the value for most features).
        cdw11: u32,
    },
    /// Asynchronous Event Request.
    AsyncEventRequest,
    /// Keep Alive.
    KeepAlive,
    /// Abort.
    Abort {
        /// Submission Queue Identifier (CDW10 bits 15:0).
        sqid: u16,
        /// Command Identifier to abort (CDW10 bits 31:16).
        cid: u16,
    },
    /// A fabrics command (opcode 7Fh).
    Fabrics(FabricsCommand),
    /// Any other opcode: complete with [`Status::INVALID_OPCODE`].
    Unknown(Opcode),
}

impl AdminCommand {
    /// Parses an admin command.
    pub fn parse(sqe: &Sqe) -> Self {
        let (cdw10, cdw11) = (sqe.cdw10.get(), sqe.cdw11.get());
        let nsid = sqe.nsid();
        match sqe.opcode() {
            Opcode::FABRICS => Self::Fabrics(FabricsCommand::parse(sqe)),
            admin::IDENTIFY => Self::Identify {
                cns: Cns(byte(cdw10, 0)),
                cntid: hi16(cdw10),
                nsid,
                cns_specific_id: lo16(cdw11),
                csi: byte(cdw11, 3),
            },
            admin::GET_LOG_PAGE => {
                let numd = u64::from(hi16(cdw10)) | (u64::from(lo16(cdw11)) << 16);
                let cdw14 = sqe.cdw14.get();
                Self::GetLogPage {
                    lid: LogPageId(byte(cdw10, 0)),
                    nsid,
                    num_dwords: numd + 1,
                    offset: u64::from(sqe.cdw12.get()) | (u64::from(sqe.cdw13.get()) << 32),
                    lsp: byte(cdw10, 1) & 0x7F,
                    lsi: hi16(cdw11),
                    rae: bit(cdw10, 15),
                    offset_is_index: bit(cdw14, 23),
                    csi: byte(cdw14, 3),
                }
            }
            admin::GET_FEATURES => Self::GetFeatures {
                fid: FeatureId(byte(cdw10, 0)),
                sel: byte(cdw10, 1) & 0x7,
                nsid,
                cdw11,
            },
            admin::SET_FEATURES => Self::SetFeatures {
                fid: FeatureId(byte(cdw10, 0)),
                save: bit(cdw10, 31),
                nsid,
                cdw11,
            },
            admin::ASYNC_EVENT_REQUEST => Self::AsyncEventRequest,
            admin::KEEP_ALIVE => Self::KeepAlive,
            admin::ABORT => Self::Abort {
                sqid: lo16(cdw10),
                cid: hi16(cdw10),
            },
            other => Self::Unknown(other),
        }
    }
}

impl AdminCommand {
    /// Bytes a Get Log Page asks for (`num_dwords * 4`), `None` for other commands.
    pub fn log_page_len(&self) -> Option<u64> {
        match self {
            Self::GetLogPage { num_dwords, .. } => Some(num_dwords * 4),
            _ => None,
        }
    }
}

/// NVM command set I/O commands (NVM Command Set 1.0, "I/O Commands for the NVM Command Set").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoCommand {
    /// Read.
    Read {
        /// Starting LBA (CDW11:CDW10).
        slba: u64,
        /// Number of logical blocks: NLB (CDW12 bits 15:0, 0's based) + 1.
        nlb: u32,
        /// Force Unit Access (CDW12 bit 30).
        fua: bool,
    },
    /// Write.
    Write {
        /// Starting LBA.
        slba: u64,
        /// Number of logical blocks (NLB + 1).
        nlb: u32,
        /// Force Unit Access.
        fua: bool,
    },
    /// Flush (of the SQE's NSID; 0xFFFFFFFF: all namespaces).
    Flush,
    /// Write Zeroes.
    WriteZeroes {
        /// Starting LBA.
        slba: u64,
        /// Number of logical blocks (NLB + 1).
        nlb: u32,
        /// Deallocate (CDW12 bit 25).
        deac: bool,
        /// Force Unit Access.
        fua: bool,
    },
    /// Compare.
    Compare {
        /// Starting LBA.
        slba: u64,
        /// Number of logical blocks (NLB + 1).
        nlb: u32,
    },
    /// Dataset Management: the ranges (16 bytes each) are the command's data.
    DatasetManagement {
        /// Number of ranges: NR (CDW10 bits 7:0, 0's based) + 1, so 1 to 256.
        nr: u16,
        /// Attribute - Deallocate (CDW11 bit 2). The integral dataset hints (bits 1:0) are
        /// in the SQE.
        ad: bool,
    },
    /// A fabrics command (Connect and Disconnect arrive on I/O queues).
    Fabrics(FabricsCommand),
    /// Any other opcode: complete with [`Status::INVALID_OPCODE`].
    Unknown(Opcode),
}

impl IoCommand {
    /// Parses an I/O command.
    pub fn parse(sqe: &Sqe) -> Self {
        let slba = u64::from(sqe.cdw10.get()) | (u64::from(sqe.cdw11.get()) << 32);
        let cdw12 = sqe.cdw12.get();
        let nlb = u32::from(lo16(cdw12)) + 1;
        let fua = bit(cdw12, 30);
        match sqe.opcode() {
            Opcode::FABRICS => Self::Fabrics(FabricsCommand::parse(sqe)),
            io::READ => Self::Read { slba, nlb, fua },
            io::WRITE => Self::Write { slba, nlb, fua },
            io::FLUSH => Self::Flush,
            io::WRITE_ZEROES => Self::WriteZeroes {
                slba,
                nlb,
                deac: bit(cdw12, 25),
                fua,
            },
            io::COMPARE => Self::Compare { slba, nlb },
            io::DATASET_MANAGEMENT => Self::DatasetManagement {
                nr: crate::wire::spec::dsm::range_count(sqe.cdw10.get()),
                ad: bit(sqe.cdw11.get(), 2),
            },
            other => Self::Unknown(other),
        }
    }

    /// The LBA range `(slba, nlb)` the command touches, for the commands that have one.
    pub fn lba_range(&self) -> Option<(u64, u32)> {
        match *self {
            Self::Read { slba, nlb, .. }
            | Self::Write { slba, nlb, .. }
            | Self::WriteZeroes { slba, nlb, .. }
            | Self::Compare { slba, nlb, .. } => Some((slba, nlb)),
            _ => None,
        }
    }
}

/// Fabrics commands (NVMe-oF 1.1, "Fabrics Command Set").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FabricsCommand {
    /// Connect; its 1024-byte data is `spec::fabrics::ConnectData`.
    Connect {
        /// Record Format (CDW10 bits 15:0); 0 is the only one defined.
        recfmt: u16,
        /// Queue ID (CDW10 bits 31:16): 0 for the admin queue.
        qid: u16,
        /// Submission Queue Size, 0's based (CDW11 bits 15:0).
        sqsize: u16,
        /// Connect Attributes (CDW11 bits 23:16).
        cattr: u8,
        /// Keep Alive Timeout in milliseconds (CDW12); admin queue only.
        kato: u32,
    },
    /// Property Get.
    PropertyGet {
        /// Property offset (CDW11), see `spec::property`.
        offset: u32,
        /// ATTRIB bits 2:0 = 1: an 8-byte property.
        size8: bool,
    },
    /// Property Set.
    PropertySet {
        /// Property offset (CDW11).
        offset: u32,
        /// ATTRIB bits 2:0 = 1: an 8-byte property.
        size8: bool,
        /// Value (CDW13:CDW12).
        value: u64,
    },
    /// Disconnect.
    Disconnect {
        /// Record Format (CDW10 bits 15:0).
        recfmt: u16,
    },
    /// Any other fabrics command type (e.g. authentication): complete with
    /// [`Status::INVALID_OPCODE`] (NVMe-oF 1.1, "Fabrics Command Set": an unsupported
    /// FCTYPE is an invalid opcode).
    Unknown(FabricsType),
}

impl FabricsCommand {
    /// Parses a fabrics command (opcode 7Fh; FCTYPE in SQE byte 4).
    pub fn parse(sqe: &Sqe) -> Self {
        let (cdw10, cdw11) = (sqe.cdw10.get(), sqe.cdw11.get());
        let size8 = byte(cdw10, 0) & 0x7 == crate::wire::spec::fabrics::property_size::EIGHT_BYTES;
        match sqe.fctype() {
            FabricsType::CONNECT => Self::Connect {
                recfmt: lo16(cdw10),
                qid: hi16(cdw10),
                sqsize: lo16(cdw11),
                cattr: byte(cdw11, 2),
                kato: sqe.cdw12.get(),
            },
            FabricsType::PROPERTY_GET => Self::PropertyGet {
                offset: cdw11,
                size8,
            },
            FabricsType::PROPERTY_SET => Self::PropertySet {
                offset: cdw11,
                size8,
                value: u64::from(sqe.cdw12.get()) | (u64::from(sqe.cdw13.get()) << 32),
            },
            FabricsType::DISCONNECT => Self::Disconnect {
                recfmt: lo16(cdw10),
            },
            other => Self::Unknown(other),
        }
    }
}

/// Checks that `nlb` blocks starting at `slba` lie within a namespace of `ns_blocks` blocks.
/// NVM Command Set 1.0 (Read, Write, Compare, Write Zeroes): a command that accesses LBAs
/// beyond the end of the namespace is aborted with LBA Out of Range. Uses checked
/// arithmetic: `slba = u64::MAX` is a status, never an overflow.
pub fn lba_range(slba: u64, nlb: u32, ns_blocks: u64) -> Result<(), Status> {
    let out_of_range = Status::LBA_OUT_OF_RANGE.with_dnr();
    let end = slba.checked_add(u64::from(nlb)).ok_or(out_of_range)?;
    if end > ns_blocks {
        return Err(out_of_range);
    }
    Ok(())
}

/// Checks the SQE fields every fabrics capsule must get right, before parsing the command.
///
/// - PSDT shall be 01b: fabrics use SGLs with MPTR as a contiguous buffer (NVMe-oF 1.1
///   "Capsules and Data Transfer"; Linux nvmet enforces the same).
/// - FUSE shall be 00b: this controller reports no fused operations (Identify FUSES = 0,
///   NVMe Base 2.0 "Fused Operations": only with FUSES support).
///
/// Both fail with Invalid Field in Command, DNR set.
pub fn check_fabrics_sqe(sqe: &Sqe) -> Result<(), Status> {
    if sqe.psdt() != psdt::SGL_MPTR_CONTIGUOUS || sqe.fuse() != fuse::NORMAL {
        return Err(Status::INVALID_FIELD.with_dnr());
    }
    Ok(())
}

/// How a command's data moves over NVMe/TCP, from its SGL descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataTransfer {
    /// No data.
    None,
    /// `len` bytes of in-capsule data arrived with the CapsuleCmd.
    InCapsule {
        /// Data length.
        len: u32,
    },
    /// `len` bytes move in C2HData PDUs (controller to host) or through R2T + H2CData
    /// (host to controller).
    Transport {
        /// Data length.
        len: u32,
    },
}

/// Validates the SGL descriptor of an NVMe/TCP command (NVMe-oF 1.1 section 7.4, "NVMe/TCP
/// Transport Binding": a command carries one SGL descriptor (MSDBD = 1), either an SGL Data
/// Block with the Offset sub type for in-capsule data, or a Transport SGL Data Block with
/// the transport sub type Ah for data moved by C2HData / R2T + H2CData).
///
/// `in_capsule_len` is the number of data bytes that arrived in the CapsuleCmd PDU.
///
/// - A length of 0 with either descriptor (or a zeroed Data Block) means no data; that is
///   how hosts describe commands without data.
/// - In-capsule data: the offset (Address field) shall be 0 because NVMe/TCP controllers
///   report ICDOFF = 0, else SGL Offset Invalid; the length shall equal the bytes received,
///   else Data SGL Length Invalid; only commands that move data host to controller may
///   carry it (opcode or FCTYPE bits 1:0 = 01b), else Invalid Field.
/// - Any other descriptor type or sub type: SGL Descriptor Type Invalid.
/// - Bytes in the capsule that no in-capsule descriptor accounts for: Data SGL Length
///   Invalid.
///
/// Every error carries DNR. The controller still checks the length against MDTS and the
/// command's own expectations.
pub fn data_transfer(sqe: &Sqe, in_capsule_len: usize) -> Result<DataTransfer, Status> {
    let desc = &sqe.dptr;
    let len = desc.len();
    let kind = (desc.desc_type(), desc.subtype());
    let transfer = match kind {
        (sgl_type::TRANSPORT_DATA_BLOCK, sgl_subtype::TRANSPORT) if len > 0 => {
            DataTransfer::Transport { len }
        }
        (sgl_type::TRANSPORT_DATA_BLOCK, sgl_subtype::TRANSPORT) => DataTransfer::None,
        (sgl_type::DATA_BLOCK, sgl_subtype::OFFSET | sgl_subtype::ADDRESS) if len == 0 => {
            DataTransfer::None
        }
        (sgl_type::DATA_BLOCK, sgl_subtype::OFFSET) => {
            if desc.address.get() != 0 {
                return Err(Status::INVALID_SGL_OFFSET.with_dnr());
            }
            let direction = if sqe.opcode() == Opcode::FABRICS {
                sqe.fctype().0 & 0b11
            } else {
                sqe.opcode().data_direction()
            };
            if direction != 0b01 {
                return Err(Status::INVALID_FIELD.with_dnr());
            }
            DataTransfer::InCapsule { len }
        }
        _ => return Err(Status::SGL_DESCRIPTOR_TYPE_INVALID.with_dnr()),
    };
    let expected_in_capsule = match transfer {
        DataTransfer::InCapsule { len } => usize::try_from(len).unwrap_or(usize::MAX),
        _ => 0,
    };
    if in_capsule_len != expected_in_capsule {
        return Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr());
    }
    Ok(transfer)
}
