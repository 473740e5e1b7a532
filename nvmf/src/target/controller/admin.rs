//! The admin command set of a fabrics controller (NVMe Base 2.0 section 5; NVMe-oF 1.1
//! section 5 for the discovery controller's subset), as one pure function: [`execute`] takes
//! the controller, the target and an SQE and says how to complete it.
//!
//! | opcode | I/O controller | discovery controller |
//! |---|---|---|
//! | 02h Get Log Page | 01h-05h | 70h |
//! | 06h Identify | CNS 00h-03h, 05h-07h | CNS 01h |
//! | 08h Abort | yes (the caller looks for the command) | no |
//! | 09h / 0Ah Set / Get Features | see `features` | KATO, AEC |
//! | 0Ch Asynchronous Event Request | yes (the caller parks it) | yes |
//! | 18h Keep Alive | yes | yes |
//! | 7Fh Fabrics Property Get / Set | yes | yes |
//!
//! Every other opcode, including the I/O queue management commands that fabrics replace with
//! Connect and all I/O opcodes, is Invalid Command Opcode.

use crate::target::subsystem::{SubsystemKind, Target, TransportConfig};
use crate::wire::command::{AdminCommand, FabricsCommand};
use crate::wire::spec::property::{Cc, Csts};
use crate::wire::spec::sqe::fuse;
use crate::wire::spec::{Sqe, Status};

use super::ControllerShared;
use super::features::{self, FeatureCommand};
use super::identify::{self, IdentifyCommand};
use super::log_page::{self, GetLogPage};
use super::props::{self, PropertyEffect};

/// What an admin command needs to run.
#[derive(Clone, Copy)]
pub struct AdminContext<'a> {
    /// The controller the admin queue belongs to.
    pub ctrl: &'a ControllerShared,
    /// Every subsystem (for the discovery log).
    pub target: &'a Target,
    /// Transport limits (queue depths, in-capsule size, MDTS).
    pub transport: &'a TransportConfig,
}

impl std::fmt::Debug for AdminContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminContext")
            .field("ctrl", &self.ctrl)
            .finish_non_exhaustive()
    }
}

/// How to complete an admin command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOutcome {
    /// Complete now with this status and dword 0, sending `data` (exactly the length the
    /// command transfers) to the host first when there is some.
    Done {
        /// Completion status.
        status: Status,
        /// Completion dword 0.
        dw0: u32,
        /// Controller-to-host data.
        data: Option<Vec<u8>>,
    },
    /// A Property Get / Set completed: `value` goes in dwords 0 and 1 of the completion (low
    /// half in dword 0), and `effect` says what the caller must do next.
    Property {
        /// Completion status.
        status: Status,
        /// The property's value (Property Get) or 0.
        value: u64,
        /// What a Property Set did.
        effect: PropertyEffect,
    },
    /// An Asynchronous Event Request: park it until an event is pending (see
    /// [`take_async_event`]); beyond [`identify::AER_LIMIT`] outstanding, complete it with
    /// Asynchronous Event Request Limit Exceeded (NVMe Base 2.0 section 5.2).
    AsyncEventRequest,
    /// Abort (NVMe Base 2.0 section 5.1): look for command `cid` on queue `sqid`; complete
    /// the Abort with dword 0 bit 0 cleared if it was aborted, set if not.
    Abort {
        /// Submission queue of the command to abort.
        sqid: u16,
        /// Its command identifier.
        cid: u16,
    },
}

impl AdminOutcome {
    /// A completion with only a status.
    pub fn status(status: Status) -> AdminOutcome {
        AdminOutcome::Done {
            status,
            dw0: 0,
            data: None,
        }
    }

    fn success(dw0: u32) -> AdminOutcome {
        AdminOutcome::Done {
            status: Status::SUCCESS,
            dw0,
            data: None,
        }
    }
}

/// Takes the oldest pending asynchronous event, as the dword 0 of the AER completion that
/// carries it (NVMe Base 2.0 Figure 150).
pub fn take_async_event(ctrl: &ControllerShared) -> Option<u32> {
    ctrl.state().pending_events.pop_front().map(|e| e.dw0())
}

/// Checks that a controller-to-host transfer of `len` bytes is allowed, before building it:
/// within MDTS (NVMe Base 2.0 Figure 275: a larger command "is aborted with a status code of
/// Invalid Field in Command") and within the data SGL (section 4.3.2: an SGL shorter than the
/// transfer is Data SGL Length Invalid).
fn check_transfer(ctx: &AdminContext<'_>, sqe: &Sqe, len: u64) -> Result<usize, Status> {
    if len > identify::max_transfer_bytes(ctx.transport) {
        return Err(Status::INVALID_FIELD.with_dnr());
    }
    if len > u64::from(sqe.dptr.len()) {
        return Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr());
    }
    usize::try_from(len).map_err(|_| Status::INVALID_FIELD.with_dnr())
}

/// Completes with `data` cut or zero-padded to exactly `len` bytes.
fn with_data(mut data: Vec<u8>, len: usize) -> AdminOutcome {
    data.resize(len, 0);
    AdminOutcome::Done {
        status: Status::SUCCESS,
        dw0: 0,
        data: Some(data),
    }
}

fn done(result: Result<AdminOutcome, Status>) -> AdminOutcome {
    result.unwrap_or_else(AdminOutcome::status)
}

/// Executes one admin command (the admin queue's Connect excepted, which creates the
/// controller and is the transport's business). The caller has already checked the SQE's
/// PSDT / FUSE and its SGL (`command::check_fabrics_sqe`, `command::data_transfer`).
pub fn execute(ctx: &AdminContext<'_>, sqe: &Sqe) -> AdminOutcome {
    let cmd = AdminCommand::parse(sqe);
    if let AdminCommand::Fabrics(fabrics_cmd) = cmd {
        return fabrics(ctx, sqe, fabrics_cmd);
    }
    {
        // NVMe Base 2.0 section 3.5.1 and NVMe-oF 1.1 "Controller Initialization": the host
        // sends only Fabrics commands until it has enabled the controller (CC.EN = 1) and
        // seen CSTS.RDY = 1. Others are completed with Command Sequence Error, as the Linux
        // and SPDK targets do.
        let st = ctx.ctrl.state();
        if !Cc(st.cc).en() || !Csts(st.csts).rdy() {
            return AdminOutcome::status(Status::COMMAND_SEQUENCE_ERROR.with_dnr());
        }
    }
    // NVMe Base 2.0 section 3.4.2: fused operations are NVM I/O commands; FUSE is reserved for
    // admin commands.
    if sqe.fuse() != fuse::NORMAL {
        return AdminOutcome::status(Status::INVALID_FIELD.with_dnr());
    }
    let io = ctx.ctrl.subsystem.kind == SubsystemKind::Nvme;
    match cmd {
        AdminCommand::GetLogPage {
            lid,
            nsid,
            num_dwords,
            offset,
            lsp,
            lsi,
            rae,
            offset_is_index,
            csi,
        } => {
            let glp = GetLogPage {
                lid: lid.0,
                lsp,
                rae,
                numd: num_dwords,
                lsi,
                offset,
                ot: offset_is_index,
                csi,
                nsid,
            };
            done(get_log_page(ctx, sqe, &glp))
        }
        AdminCommand::Identify {
            cns,
            cntid,
            nsid,
            csi,
            ..
        } => {
            let id = IdentifyCommand {
                cns: cns.0,
                cntid,
                csi,
                nsid,
            };
            done(identify(ctx, sqe, &id))
        }
        AdminCommand::GetFeatures {
            fid,
            sel,
            nsid,
            cdw11,
        } => {
            let f = FeatureCommand {
                fid,
                sel,
                sv: false,
                cdw11,
                nsid,
            };
            done(get_features(ctx, sqe, &f))
        }
        AdminCommand::SetFeatures {
            fid,
            save,
            nsid,
            cdw11,
        } => {
            let f = FeatureCommand {
                fid,
                sel: 0,
                sv: save,
                cdw11,
                nsid,
            };
            match features::set_features(ctx.ctrl, ctx.transport, &f) {
                Ok(dw0) => AdminOutcome::success(dw0),
                Err(status) => AdminOutcome::status(status),
            }
        }
        AdminCommand::AsyncEventRequest => AdminOutcome::AsyncEventRequest,
        AdminCommand::KeepAlive => {
            // NVMe Base 2.0 section 3.9: without Traffic Based Keep Alive (CTRATT bit 6 is 0)
            // only Keep Alive restarts the timer.
            ctx.ctrl.keep_alive();
            AdminOutcome::success(0)
        }
        // Abort (NVMe Base 2.0 section 5.1): not a discovery controller command (NVMe-oF 1.1
        // section 5).
        AdminCommand::Abort { sqid, cid } if io => AdminOutcome::Abort { sqid, cid },
        // Create / Delete I/O SQ / CQ are replaced by Connect on fabrics (NVMe-oF 1.1 section
        // 2.1); everything else is not implemented (NVMe Base 2.0 section 4.6.1.2.1: Invalid
        // Command Opcode).
        _ => AdminOutcome::status(Status::INVALID_OPCODE.with_dnr()),
    }
}

fn get_log_page(
    ctx: &AdminContext<'_>,
    sqe: &Sqe,
    cmd: &GetLogPage,
) -> Result<AdminOutcome, Status> {
    let len = check_transfer(ctx, sqe, cmd.len_bytes())?;
    let data = log_page::get_log_page(ctx.ctrl, ctx.target, ctx.transport, cmd)?;
    Ok(with_data(data, len))
}

fn identify(
    ctx: &AdminContext<'_>,
    sqe: &Sqe,
    cmd: &IdentifyCommand,
) -> Result<AdminOutcome, Status> {
    // NVMe Base 2.0 section 5.17: every Identify data structure is 4096 bytes.
    let len = check_transfer(ctx, sqe, 4096)?;
    let data = identify::identify(ctx.ctrl, ctx.transport, cmd)?;
    Ok(with_data(data, len))
}

fn get_features(
    ctx: &AdminContext<'_>,
    sqe: &Sqe,
    cmd: &FeatureCommand,
) -> Result<AdminOutcome, Status> {
    let value = features::get_features(ctx.ctrl, ctx.transport, cmd)?;
    match value.data {
        None => Ok(AdminOutcome::success(value.dw0)),
        Some(data) => {
            let len = check_transfer(ctx, sqe, u64::try_from(data.len()).unwrap_or(u64::MAX))?;
            let mut out = with_data(data, len);
            if let AdminOutcome::Done { dw0, .. } = &mut out {
                *dw0 = value.dw0;
            }
            Ok(out)
        }
    }
}

/// Fabrics commands on the admin queue once it is connected (NVMe-oF 1.1 section 6):
/// Property Get and Property Set. A second Connect is a Command Sequence Error; Disconnect
/// (for I/O queues) and authentication are Invalid Command Opcode here.
fn fabrics(ctx: &AdminContext<'_>, sqe: &Sqe, cmd: FabricsCommand) -> AdminOutcome {
    // The raw ATTRIB byte (SQE byte 40, CDW10 bits 7:0) so that reserved sizes are refused.
    let [attrib, ..] = sqe.cdw10.get().to_le_bytes();
    let property = |status: Status, value: u64, effect: PropertyEffect| AdminOutcome::Property {
        status,
        value,
        effect,
    };
    match cmd {
        FabricsCommand::PropertyGet { offset, .. } => {
            match props::property_get(ctx.ctrl, ctx.transport, offset, attrib) {
                Ok(value) => property(Status::SUCCESS, value, PropertyEffect::None),
                Err(status) => property(status, 0, PropertyEffect::None),
            }
        }
        FabricsCommand::PropertySet { offset, value, .. } => {
            match props::property_set(ctx.ctrl, offset, attrib, value) {
                Ok(effect) => property(Status::SUCCESS, 0, effect),
                Err(status) => property(status, 0, PropertyEffect::None),
            }
        }
        FabricsCommand::Connect { .. } => {
            AdminOutcome::status(Status::COMMAND_SEQUENCE_ERROR.with_dnr())
        }
        _ => AdminOutcome::status(Status::INVALID_OPCODE.with_dnr()),
    }
}
