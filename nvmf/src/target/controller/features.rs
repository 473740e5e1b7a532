//! Get Features and Set Features (NVMe Base 2.0 sections 5.15 and 5.27, features in 5.27.1).
//!
//! Supported on an I/O controller: Arbitration (01h), Power Management (02h), Temperature
//! Threshold (04h), Error Recovery (05h), Volatile Write Cache (06h), Number of Queues (07h),
//! Interrupt Coalescing (08h), Interrupt Vector Configuration (09h), Write Atomicity Normal
//! (0Ah), Asynchronous Event Configuration (0Bh), Keep Alive Timer (0Fh) and Host Identifier
//! (81h). A discovery controller supports Asynchronous Event Configuration and the Keep Alive
//! Timer only (NVMe-oF 1.1 section 5). No feature is saveable (Set with SV = 1 is Feature
//! Identifier Not Saveable; Get of the saved value returns the default, Base 2.0 section 5.15).

use std::sync::atomic::Ordering;

use crate::target::subsystem::{SubsystemKind, TransportConfig};
use crate::wire::spec::Status;
use crate::wire::spec::features::{FeatureId, select};

use super::ControllerShared;
use super::identify::{KAS_100MS, WCTEMP_K};

/// Supported capabilities bits returned for SEL = 011b (NVMe Base 2.0 section 5.15).
pub mod capability {
    /// The feature is saveable.
    pub const SAVEABLE: u32 = 1 << 0;
    /// The feature is namespace specific.
    pub const NAMESPACE_SPECIFIC: u32 = 1 << 1;
    /// The feature is changeable.
    pub const CHANGEABLE: u32 = 1 << 2;
}

/// The Asynchronous Event Configuration bits an I/O controller acts on: Namespace Attribute
/// Notices (bit 8), the only event it generates (OAES = 100h). Other bits are accepted and
/// dropped, so Get Features reports what is in effect.
pub const AEC_SUPPORTED_IO: u32 = 1 << 8;

/// The Get / Set Features fields (NVMe Base 2.0 sections 5.15 and 5.27): FID and SEL / SV in
/// CDW10, the feature specific CDW11 (from `command::AdminCommand::{GetFeatures, SetFeatures}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureCommand {
    /// Feature Identifier (CDW10 bits 7:0).
    pub fid: FeatureId,
    /// Get Features Select (CDW10 bits 10:8).
    pub sel: u8,
    /// Set Features Save (CDW10 bit 31).
    pub sv: bool,
    /// Feature specific dword 11.
    pub cdw11: u32,
    /// Namespace Identifier.
    pub nsid: u32,
}

/// What Get Features returns: completion dword 0 and, for the Host Identifier, data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureValue {
    /// Completion queue entry dword 0.
    pub dw0: u32,
    /// Data returned to the host, if the feature has any.
    pub data: Option<Vec<u8>>,
}

impl FeatureValue {
    fn dw0(dw0: u32) -> FeatureValue {
        FeatureValue { dw0, data: None }
    }
}

fn invalid() -> Status {
    Status::INVALID_FIELD.with_dnr()
}

/// Whether `fid` is supported by this kind of controller, and whether it is changeable.
fn supported(kind: SubsystemKind, fid: FeatureId) -> Option<bool> {
    let io = kind == SubsystemKind::Nvme;
    match fid {
        FeatureId::ASYNC_EVENT_CONFIG | FeatureId::KEEP_ALIVE_TIMER => Some(true),
        _ if !io => None,
        FeatureId::ARBITRATION
        | FeatureId::POWER_MANAGEMENT
        | FeatureId::TEMPERATURE_THRESHOLD
        | FeatureId::ERROR_RECOVERY
        | FeatureId::NUMBER_OF_QUEUES
        | FeatureId::INTERRUPT_COALESCING
        | FeatureId::INTERRUPT_VECTOR_CONFIG
        | FeatureId::WRITE_ATOMICITY => Some(true),
        // Volatile Write Cache: the cache of a `uring` bdev (the page cache) cannot be turned
        // off from here, so WCE stays 1. Host Identifier: set by Connect (NVMe-oF 1.1).
        FeatureId::VOLATILE_WRITE_CACHE | FeatureId::HOST_IDENTIFIER => Some(false),
        _ => None,
    }
}

/// The number of I/O queues the controller grants at most, 0's based.
fn max_queues(transport: &TransportConfig) -> u16 {
    transport.max_io_qpairs_per_ctrlr.saturating_sub(1)
}

/// The default (power-on) value of a feature, as completion dword 0.
fn default_value(transport: &TransportConfig, cmd: &FeatureCommand) -> Result<u32, Status> {
    Ok(match cmd.fid {
        FeatureId::TEMPERATURE_THRESHOLD => temperature(cmd.cdw11, packed_thresholds(None))?,
        FeatureId::VOLATILE_WRITE_CACHE => 1,
        FeatureId::NUMBER_OF_QUEUES => {
            let q = u32::from(max_queues(transport));
            q | (q << 16)
        }
        FeatureId::INTERRUPT_VECTOR_CONFIG => cmd.cdw11 & 0xFFFF,
        _ => 0,
    })
}

/// Over and under composite temperature thresholds packed in one stored value: over in bits
/// 15:0, under in bits 31:16. The default over threshold is WCTEMP, the under threshold 0
/// (NVMe Base 2.0 section 5.27.1.4).
fn packed_thresholds(stored: Option<u32>) -> u32 {
    stored.unwrap_or(u32::from(WCTEMP_K))
}

/// Reads the threshold that CDW11's TMPSEL / THSEL select from the packed thresholds, in the
/// completion dword 0 format (NVMe Base 2.0 section 5.27.1.4). Only the composite temperature
/// (TMPSEL 0) exists; THSEL 00b is over, 01b under.
fn temperature(cdw11: u32, packed: u32) -> Result<u32, Status> {
    let tmpsel = (cdw11 >> 16) & 0xF;
    let thsel = (cdw11 >> 20) & 0x3;
    if tmpsel != 0 || thsel > 1 {
        return Err(invalid());
    }
    let value = if thsel == 0 {
        packed & 0xFFFF
    } else {
        packed >> 16
    };
    Ok(value | (thsel << 20))
}

/// Executes Get Features (NVMe Base 2.0 section 5.15).
pub fn get_features(
    ctrl: &ControllerShared,
    transport: &TransportConfig,
    cmd: &FeatureCommand,
) -> Result<FeatureValue, Status> {
    let changeable = supported(ctrl.subsystem.kind, cmd.fid).ok_or_else(invalid)?;
    match cmd.sel {
        select::CURRENT => {}
        // Nothing is saveable: the saved value is the default (Base 2.0 section 5.15).
        select::DEFAULT | select::SAVED => {
            if cmd.fid == FeatureId::HOST_IDENTIFIER {
                return host_identifier(ctrl, cmd);
            }
            return Ok(FeatureValue::dw0(default_value(transport, cmd)?));
        }
        select::SUPPORTED_CAPABILITIES => {
            let caps = if changeable {
                capability::CHANGEABLE
            } else {
                0
            };
            return Ok(FeatureValue::dw0(caps));
        }
        _ => return Err(invalid()),
    }
    let st = ctrl.state();
    let stored = st.other_features.get(&cmd.fid.0).copied();
    let dw0 = match cmd.fid {
        FeatureId::ASYNC_EVENT_CONFIG => st.async_event_config,
        FeatureId::KEEP_ALIVE_TIMER => ctrl.kato_ms.load(Ordering::Relaxed),
        FeatureId::NUMBER_OF_QUEUES => match st.num_queues {
            Some((nsq, ncq)) => u32::from(nsq) | (u32::from(ncq) << 16),
            None => default_value(transport, cmd)?,
        },
        FeatureId::VOLATILE_WRITE_CACHE => 1,
        FeatureId::TEMPERATURE_THRESHOLD => temperature(cmd.cdw11, packed_thresholds(stored))?,
        // Interrupt Vector Configuration (Base 2.0 section 5.27.1.9): CDW11 names the vector;
        // coalescing is never disabled per vector (CD = 0). Fabrics have no interrupts.
        FeatureId::INTERRUPT_VECTOR_CONFIG => cmd.cdw11 & 0xFFFF,
        FeatureId::HOST_IDENTIFIER => {
            drop(st);
            return host_identifier(ctrl, cmd);
        }
        _ => stored.unwrap_or(0),
    };
    Ok(FeatureValue::dw0(dw0))
}

/// Host Identifier (NVMe Base 2.0 section 5.27.1.25): the 128-bit host ID from the Connect
/// data. A fabrics controller only has the extended 128-bit form, so EXHID (CDW11 bit 0) must
/// be 1 (NVMe-oF 1.1 section 3.3: the Host Identifier is 128 bits).
fn host_identifier(ctrl: &ControllerShared, cmd: &FeatureCommand) -> Result<FeatureValue, Status> {
    if cmd.cdw11 & 1 == 0 {
        return Err(invalid());
    }
    Ok(FeatureValue {
        dw0: 0,
        data: Some(ctrl.hostid.to_vec()),
    })
}

/// Executes Set Features (NVMe Base 2.0 section 5.27) and returns completion dword 0 (the
/// queues allocated for Number of Queues, 0 otherwise).
pub fn set_features(
    ctrl: &ControllerShared,
    transport: &TransportConfig,
    cmd: &FeatureCommand,
) -> Result<u32, Status> {
    let changeable = supported(ctrl.subsystem.kind, cmd.fid).ok_or_else(invalid)?;
    // Base 2.0 section 5.27: SV set for a feature that is not saveable.
    if cmd.sv {
        return Err(Status::FEATURE_ID_NOT_SAVEABLE.with_dnr());
    }
    // Base 2.0 section 5.27: these features are not namespace specific, so the NSID must be
    // 0h or FFFFFFFFh (Error Recovery is per namespace in 2.0 and takes any NSID).
    if cmd.fid != FeatureId::ERROR_RECOVERY && cmd.nsid != 0 && cmd.nsid != 0xFFFF_FFFF {
        return Err(Status::FEATURE_NOT_NAMESPACE_SPECIFIC.with_dnr());
    }
    if cmd.fid == FeatureId::HOST_IDENTIFIER {
        // NVMe-oF 1.1 section 3.3 / Base 2.0 section 5.27.1.25: on a fabrics controller the
        // host identifier comes with Connect; setting it is a Command Sequence Error.
        return Err(Status::COMMAND_SEQUENCE_ERROR.with_dnr());
    }
    if !changeable {
        // Volatile Write Cache: enabling the already enabled cache changes nothing.
        if cmd.fid == FeatureId::VOLATILE_WRITE_CACHE && cmd.cdw11 & 1 == 1 {
            return Ok(0);
        }
        return Err(Status::FEATURE_NOT_CHANGEABLE.with_dnr());
    }
    let mut st = ctrl.state();
    match cmd.fid {
        FeatureId::NUMBER_OF_QUEUES => {
            // Base 2.0 section 5.27.1.7: only before any I/O queue exists, otherwise Command
            // Sequence Error.
            if !st.io_queues.is_empty() {
                return Err(Status::COMMAND_SEQUENCE_ERROR.with_dnr());
            }
            let [nsq_lo, nsq_hi, ncq_lo, ncq_hi] = cmd.cdw11.to_le_bytes();
            let nsqr = u16::from_le_bytes([nsq_lo, nsq_hi]);
            let ncqr = u16::from_le_bytes([ncq_lo, ncq_hi]);
            // "A value of 65,535 ... is invalid": Invalid Field in Command.
            if nsqr == u16::MAX || ncqr == u16::MAX {
                return Err(invalid());
            }
            let max = max_queues(transport);
            let granted = (nsqr.min(max), ncqr.min(max));
            st.num_queues = Some(granted);
            Ok(u32::from(granted.0) | (u32::from(granted.1) << 16))
        }
        FeatureId::ASYNC_EVENT_CONFIG => {
            // Base 2.0 section 5.27.1.11: only events the controller can report stay enabled
            // (a discovery controller reports none: OAES is 0).
            let mask = if ctrl.subsystem.kind == SubsystemKind::Nvme {
                AEC_SUPPORTED_IO
            } else {
                0
            };
            st.async_event_config = cmd.cdw11 & mask;
            Ok(0)
        }
        FeatureId::KEEP_ALIVE_TIMER => {
            // Base 2.0 section 5.27.1.12: KATO in milliseconds, rounded up to the KAS
            // granularity; the timer restarts with the new value.
            let unit = u64::from(KAS_100MS) * 100;
            let kato = u64::from(cmd.cdw11).div_ceil(unit) * unit;
            ctrl.kato_ms
                .store(u32::try_from(kato).unwrap_or(u32::MAX), Ordering::Relaxed);
            drop(st);
            ctrl.keep_alive();
            Ok(0)
        }
        FeatureId::POWER_MANAGEMENT => {
            // One power state (NPSS = 0): PS (bits 4:0) must be 0 (Base 2.0 section 5.27.1.2).
            if cmd.cdw11 & 0x1F != 0 {
                return Err(invalid());
            }
            st.other_features.insert(cmd.fid.0, cmd.cdw11 & 0xFF);
            Ok(0)
        }
        FeatureId::TEMPERATURE_THRESHOLD => {
            let old = packed_thresholds(st.other_features.get(&cmd.fid.0).copied());
            temperature(cmd.cdw11, old)?;
            let value = cmd.cdw11 & 0xFFFF;
            let new = if (cmd.cdw11 >> 20) & 0x3 == 0 {
                (old & 0xFFFF_0000) | value
            } else {
                (old & 0xFFFF) | (value << 16)
            };
            st.other_features.insert(cmd.fid.0, new);
            Ok(0)
        }
        FeatureId::ERROR_RECOVERY => {
            // DULBE (bit 16) needs NSFEAT bit 2 (deallocated blocks reported as errors), which
            // no namespace sets (Base 2.0 section 5.27.1.5).
            if cmd.cdw11 & (1 << 16) != 0 {
                return Err(invalid());
            }
            st.other_features.insert(cmd.fid.0, cmd.cdw11 & 0xFFFF);
            Ok(0)
        }
        FeatureId::ARBITRATION => {
            st.other_features.insert(cmd.fid.0, cmd.cdw11);
            Ok(0)
        }
        FeatureId::INTERRUPT_COALESCING => {
            st.other_features.insert(cmd.fid.0, cmd.cdw11 & 0xFFFF);
            Ok(0)
        }
        FeatureId::INTERRUPT_VECTOR_CONFIG => Ok(0),
        FeatureId::WRITE_ATOMICITY => {
            st.other_features.insert(cmd.fid.0, cmd.cdw11 & 1);
            Ok(0)
        }
        _ => Err(invalid()),
    }
}
