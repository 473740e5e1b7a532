//! Controller properties through the Fabrics Property Get / Property Set commands
//! (NVMe-oF 1.1 "Controller Properties", Figure 14, and the Property Get / Set commands;
//! register layouts in NVMe Base 2.0 section 3.1.3).
//!
//! A fabrics controller has no BAR: the host reads CAP, VS, CC and CSTS with Property Get and
//! enables, resets and shuts the controller down with Property Set of CC. The controller here
//! is always ready at once, so CSTS follows a CC write before the Property Set completes:
//! - CC.EN 0 -> 1: the enable-time fields are checked, then CSTS.RDY = 1
//!   ([`PropertyEffect::Enabled`]);
//! - CC.EN 1 -> 0: a controller reset, CSTS = 0 ([`PropertyEffect::Reset`]: the caller deletes
//!   the I/O queues and aborts what is outstanding, NVMe-oF 1.1 section 3.5);
//! - CC.SHN 00b -> 01b/10b: CSTS.SHST = 10b "shutdown processing complete" at once
//!   ([`PropertyEffect::Shutdown`]).

use crate::target::subsystem::{SubsystemKind, TransportConfig};
use crate::wire::spec::Status;
use crate::wire::spec::fabrics::property_size;
use crate::wire::spec::property::{self, Cap, Cc, Csts, Vs, shn, shst};

use super::ControllerShared;

/// CAP.TO: worst-case time to become ready after CC.EN changes, in 500 ms units (NVMe Base 2.0
/// Figure 36). The controller is ready before the Property Set completes; 30 s only bounds how
/// long a host waits if something goes wrong.
pub const CAP_TIMEOUT_500MS: u8 = 60;

/// CC.CSS value selecting the NVM command set (NVMe Base 2.0 Figure 41).
const CC_CSS_NVM: u8 = 0b000;

/// CC.IOSQES the controller requires: 2^6 = 64-byte submission queue entries.
pub const REQUIRED_IOSQES: u8 = 6;

/// CC.IOCQES the controller requires: 2^4 = 16-byte completion queue entries.
pub const REQUIRED_IOCQES: u8 = 4;

/// CC bits the controller keeps: EN (0), CSS (6:4), MPS (10:7), AMS (13:11), SHN (15:14),
/// IOSQES (19:16), IOCQES (23:20). Bits 3:1 and 31:24 are reserved (NVMe Base 2.0 Figure 41;
/// bit 24, CRIME, is only defined when CAP.CRMS says so, and it does not).
const CC_WRITABLE: u32 = 0x00FF_FFF1;

/// What a Property Set did, for the caller to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyEffect {
    /// Nothing beyond the register write.
    None,
    /// CC.EN went 0 -> 1 and CSTS.RDY is now 1: the admin queue accepts commands.
    Enabled,
    /// CC.EN went 1 -> 0 (controller reset, NVMe Base 2.0 section 3.7.2): delete the I/O
    /// queues and abort every outstanding command, including Asynchronous Event Requests.
    Reset,
    /// CC.SHN asked for a shutdown, which is complete (CSTS.SHST = 10b): stop I/O.
    Shutdown,
}

/// The version a controller reports in VS and in Identify Controller VER.
///
/// I/O controllers say 1.4.0: what SPDK's target reports to the Linux 6.1 host in
/// `/work/shared/LINUX-HOST.md`, so the host takes its known-good path (CNS 02h namespace
/// scan, namespace identification descriptors, command effects log), and the structures
/// served are 1.4-compatible. Claiming 2.0 would promise what 2.0 makes mandatory and this
/// controller lacks (CAP.CRMS and CRTO, the I/O Command Set profile and CNS 1Ch).
/// Discovery controllers say 1.3.0, like SPDK's and Linux's discovery controllers.
pub fn version(kind: SubsystemKind) -> Vs {
    match kind {
        SubsystemKind::Nvme => Vs::V1_4,
        SubsystemKind::Discovery => Vs::V1_3,
    }
}

/// CAP for a controller of this subsystem kind (NVMe Base 2.0 Figure 36):
/// - MQES: the deeper of the I/O and admin queue limits, 0's based (a fabrics host sizes each
///   queue in Connect; the admin queue is checked against `max_aq_depth` there);
/// - CQR = 1: a fabrics queue is not host memory and is never split (SPDK's and Linux's
///   targets report the same);
/// - TO = [`CAP_TIMEOUT_500MS`]; DSTRD = 0; NSSRS = 0; MPSMIN = MPSMAX = 0 (4 KiB);
/// - CSS: NVM command set, for discovery controllers too. The Linux host writes CC.CSS = 000b
///   to every fabrics controller (and SPDK's and Linux's targets report CSS bit 0 on their
///   discovery controllers), so advertising only bit 7 "no I/O command set" would make a
///   conforming CC write look invalid.
pub fn capabilities(transport: &TransportConfig) -> Cap {
    let deepest = transport.max_queue_depth.max(transport.max_aq_depth);
    Cap::default()
        .with_mqes(deepest.saturating_sub(1))
        .with_cqr(true)
        .with_to(CAP_TIMEOUT_500MS)
        .with_css(Cap::CSS_NVM)
        .with_mpsmin(0)
        .with_mpsmax(0)
}

/// Decodes the Property Get / Set ATTRIB field (SQE byte 40, bits 2:0: 0 = 4 bytes, 1 = 8
/// bytes; NVMe-oF 1.1 Figures 24 and 26) into a size in bytes. Other values are reserved.
pub fn attrib_size(attrib: u8) -> Option<u8> {
    match attrib & 0x7 {
        property_size::FOUR_BYTES => Some(4),
        property_size::EIGHT_BYTES => Some(8),
        _ => None,
    }
}

/// Property Get (NVMe-oF 1.1, "Property Get Command", Figure 24): the value of the property
/// at `offset`, `attrib` being the raw ATTRIB byte. The size must be the property's own size
/// (NVMe-oF 1.1 Figure 14: CAP is 8 bytes, VS / CC / CSTS are 4); an undefined offset, a
/// reserved size or a mismatched size is Invalid Field in Command. NSSR is not readable:
/// CAP.NSSRS is 0, which makes it reserved (NVMe Base 2.0 Figure 36).
pub fn property_get(
    ctrl: &ControllerShared,
    transport: &TransportConfig,
    offset: u32,
    attrib: u8,
) -> Result<u64, Status> {
    let invalid = Status::INVALID_FIELD.with_dnr();
    let size = attrib_size(attrib).ok_or(invalid)?;
    let expected = match offset {
        property::CAP | property::VS | property::CC | property::CSTS => {
            property::size_of_property(offset)
        }
        _ => None,
    };
    if expected != Some(size) {
        return Err(invalid);
    }
    Ok(match offset {
        property::CAP => capabilities(transport).0,
        property::VS => u64::from(version(ctrl.subsystem.kind).0),
        property::CC => u64::from(ctrl.state().cc),
        property::CSTS => u64::from(ctrl.state().csts),
        _ => return Err(invalid),
    })
}

/// Property Set (NVMe-oF 1.1, "Property Set Command", Figure 26): writes `value` to the
/// property at `offset`. Only CC is writable here; CAP, VS and CSTS are read-only and NSSR
/// is reserved (CAP.NSSRS = 0), so a write to any of them, to an undefined offset or with the
/// wrong size is Invalid Field in Command. For a 4-byte property, bits 63:32 of `value` are
/// ignored.
pub fn property_set(
    ctrl: &ControllerShared,
    offset: u32,
    attrib: u8,
    value: u64,
) -> Result<PropertyEffect, Status> {
    let invalid = Status::INVALID_FIELD.with_dnr();
    let size = attrib_size(attrib).ok_or(invalid)?;
    if offset != property::CC || size != 4 {
        return Err(invalid);
    }
    let new = Cc(u32::try_from(value & 0xFFFF_FFFF).unwrap_or(0) & CC_WRITABLE);
    write_cc(ctrl, new)
}

fn write_cc(ctrl: &ControllerShared, new: Cc) -> Result<PropertyEffect, Status> {
    let invalid = Status::INVALID_FIELD.with_dnr();
    let io_controller = ctrl.subsystem.kind == SubsystemKind::Nvme;
    let mut st = ctrl.state();
    let old = Cc(st.cc);

    if old.en() && new.en() {
        // NVMe Base 2.0 Figure 41: CSS, MPS and AMS "shall only be changed when EN is cleared
        // to '0'"; a change while enabled is refused rather than silently applied.
        if new.css() != old.css() || new.mps() != old.mps() || new.ams() != old.ams() {
            return Err(invalid);
        }
    }

    if new.en() && !old.en() {
        // Enabling. NVMe Base 2.0 Figure 41, CC.CSS: only a command set CAP.CSS reports may be
        // selected (CAP.CSS = NVM only, so 000b).
        if new.css() != CC_CSS_NVM {
            return Err(invalid);
        }
        // CC.MPS must lie in CAP.MPSMIN..=CAP.MPSMAX (both 0: 4 KiB pages).
        if new.mps() != 0 {
            return Err(invalid);
        }
        // CC.AMS: only round robin (000b); CAP.AMS reports no other mechanism.
        if new.ams() != 0 {
            return Err(invalid);
        }
        // CC.IOSQES / IOCQES: an I/O controller requires 64-byte SQEs and 16-byte CQEs
        // (Identify Controller SQES / CQES = 66h / 44h; a fabrics command capsule starts with
        // a 64-byte SQE and a response capsule is a 16-byte CQE, NVMe-oF 1.1 section 2). A
        // discovery controller has no I/O queues, for which the fields are reserved, so they
        // are not checked there.
        if io_controller && (new.iosqes() != REQUIRED_IOSQES || new.iocqes() != REQUIRED_IOCQES) {
            return Err(invalid);
        }
        // A shut-down controller must be reset (EN 1 -> 0) before it is enabled again (NVMe
        // Base 2.0 section 3.6.2); EN is 0 here, so SHST was already cleared by that reset.
    }

    let mut effect = PropertyEffect::None;
    let mut csts = Csts(st.csts);
    if new.en() && !old.en() {
        csts = csts.with_rdy(true);
        effect = PropertyEffect::Enabled;
    }
    if !new.en() && old.en() {
        // Controller reset (NVMe Base 2.0 section 3.7.2): CSTS back to its reset value and
        // the features that a reset returns to their defaults.
        csts = Csts::default();
        st.async_event_config = 0;
        st.pending_events.clear();
        st.ns_notice_masked = false;
        st.other_features.clear();
        effect = PropertyEffect::Reset;
    }
    if new.shn() != shn::NONE && old.shn() == shn::NONE {
        // NVMe Base 2.0 section 3.6.2: shutdown processing; nothing is cached, so it is
        // complete before this command completes. A reset in the same write dominates.
        csts = csts.with_shst(shst::COMPLETE);
        if effect != PropertyEffect::Reset {
            effect = PropertyEffect::Shutdown;
        }
    }
    if new.shn() == shn::NONE && old.shn() != shn::NONE && new.en() {
        // The host withdrew the notification without a reset: back to normal operation.
        csts = csts.with_shst(shst::NORMAL);
    }
    st.cc = new.0;
    st.csts = csts.0;
    ctrl.set_ready(csts.rdy());
    Ok(effect)
}
