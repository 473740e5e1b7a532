//! NVMe controllers: what a Fabrics Connect creates and the admin queue drives.
//!
//! - [`shared`]: the state a controller's queue pairs share (registers, features, events,
//!   keep-alive, counters).
//! - [`props`]: Property Get / Set of CAP, VS, CC and CSTS, with enable, reset and shutdown.
//! - [`identify`]: the Identify data structures.
//! - [`log_page`]: Get Log Page, including the discovery log.
//! - [`features`]: Get / Set Features.
//! - [`admin`]: [`admin::execute`], one admin command in, its completion out.
//!
//! Everything here is a pure function of the controller state and the command: no sockets,
//! no reactor. The transport calls it and turns the outcome into PDUs.

pub mod shared;
pub use shared::*;

pub mod admin;
pub mod features;
pub mod identify;
pub mod log_page;
pub mod props;

#[cfg(test)]
mod tests;

pub use admin::{AdminContext, AdminOutcome, execute, take_async_event};
pub use props::{PropertyEffect, property_get, property_set};

use shoal_bdev::{BdevError, ErrorKind, IoType};

use crate::wire::spec::Status;

/// The NVMe status for a failed block I/O (the one place bdev errors meet the wire, see
/// STYLE.md habit 6). `io_type` is what the command asked the bdev to do.
///
/// - OutOfRange: LBA Out of Range, DNR (NVM Command Set 1.0; retrying cannot help).
/// - InvalidRequest: Invalid Field in Command, DNR (the request itself is malformed).
/// - Unsupported: Invalid Command Opcode, DNR (the namespace's device lacks the operation).
/// - Closed: Namespace Not Ready, DNR clear: the device is being removed; the host retries a
///   few times, and a multipath host moves on once the namespace is reported gone.
/// - Io: Unrecovered Read Error for reads, Write Fault for writes, write zeroes, unmap and
///   flush (media errors, SCT 2h); DNR clear, since an I/O error may be transient.
/// - TimedOut: Internal Error, DNR clear, so the host retries (nothing more precise fits:
///   Command Interrupted needs the host to have enabled retries, and Transient Transport Error
///   blames the network).
/// - NoSpace: Capacity Exceeded, DNR (NVMe Base 2.0, Figure 102, 81h: "the command would
///   cause the capacity of the namespace to be exceeded"; a thin volume's pool is full).
/// - ReadOnly: Namespace is Write Protected, DNR (NVMe Base 2.0, Figure 101, 20h).
pub fn nvme_status_for(err: &BdevError, io_type: IoType) -> Status {
    match err.kind() {
        ErrorKind::OutOfRange => Status::LBA_OUT_OF_RANGE.with_dnr(),
        ErrorKind::InvalidRequest => Status::INVALID_FIELD.with_dnr(),
        ErrorKind::Unsupported => Status::INVALID_OPCODE.with_dnr(),
        ErrorKind::Closed => Status::NAMESPACE_NOT_READY,
        ErrorKind::Io => match io_type {
            IoType::Read => Status::UNRECOVERED_READ_ERROR,
            IoType::Write | IoType::WriteZeroes | IoType::Unmap | IoType::Flush => {
                Status::WRITE_FAULT
            }
        },
        ErrorKind::TimedOut => Status::INTERNAL_ERROR,
        ErrorKind::NoSpace => Status::CAPACITY_EXCEEDED.with_dnr(),
        ErrorKind::ReadOnly => Status::NAMESPACE_WRITE_PROTECTED.with_dnr(),
    }
}
