//! Get Log Page (NVMe Base 2.0 section 5.16) and the Discovery log page (NVMe-oF 1.1 section
//! 5.3).
//!
//! An I/O controller serves Error Information (01h), SMART / Health Information (02h),
//! Firmware Slot Information (03h), Changed Namespace List (04h) and Commands Supported and
//! Effects (05h); a discovery controller serves the Discovery log page (70h) only. Any other
//! LID is Invalid Log Page.
//!
//! Each page is built whole (the largest, a discovery log, is 1 KiB per subsystem port), then
//! the requested window is cut from it: LPO must be dword aligned and within the page; a
//! window reaching past the end gets what exists, and the caller zero-fills up to the length
//! the host asked for (see `admin::execute`).

use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32, U64, U128};

use crate::target::subsystem::{ListenAddress, SubsystemKind, Target, TransportConfig};
use crate::wire::spec::log::{
    ChangedNamespaceList, CommandEffectsLog, DiscoveryLogEntry, DiscoveryLogHeader, ErrorLogEntry,
    FirmwareSlotLog, LogPageId, SmartLog, discovery, effects,
};
use crate::wire::spec::opcode::{Opcode, admin as admin_op, io as io_op};
use crate::wire::spec::{Status, ascii_field, nqn_field};

use super::ControllerShared;
use super::identify::ELPE;

/// The Get Log Page command's fields (NVMe Base 2.0 section 5.16), as
/// `command::AdminCommand::GetLogPage` parses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetLogPage {
    /// Log Page Identifier (CDW10 bits 7:0).
    pub lid: u8,
    /// Log Specific Parameter (CDW10 bits 14:8).
    pub lsp: u8,
    /// Retain Asynchronous Event (CDW10 bit 15).
    pub rae: bool,
    /// Number of dwords to return: (NUMDU:NUMDL) + 1, widened so 0xFFFF_FFFF + 1 cannot wrap.
    pub numd: u64,
    /// Log Specific Identifier (CDW11 bits 31:16).
    pub lsi: u16,
    /// Log Page Offset in bytes (CDW13:CDW12).
    pub offset: u64,
    /// Offset Type (CDW14 bit 23): LPO is an index rather than a byte offset.
    pub ot: bool,
    /// Command Set Identifier (CDW14 bits 31:24).
    pub csi: u8,
    /// Namespace Identifier.
    pub nsid: u32,
}

impl GetLogPage {
    /// Bytes the host asked for (NUMD dwords; at most 16 GiB, so no overflow).
    pub fn len_bytes(&self) -> u64 {
        self.numd * 4
    }
}

/// Returns the part of `page` from `cmd.offset`, at most `cmd.len_bytes()` long.
///
/// NVMe Base 2.0 section 5.16: the Log Page Offset "shall be dword aligned", otherwise Invalid
/// Field in Command, as is an offset beyond the end of the log page. An offset equal to the
/// page size yields nothing (the caller zero-fills).
fn window(page: &[u8], cmd: &GetLogPage) -> Result<Vec<u8>, Status> {
    let invalid = Status::INVALID_FIELD.with_dnr();
    if !cmd.offset.is_multiple_of(4) {
        return Err(invalid);
    }
    let start = usize::try_from(cmd.offset).map_err(|_| invalid)?;
    let rest = page.get(start..).ok_or(invalid)?;
    let len = usize::try_from(cmd.len_bytes())
        .unwrap_or(usize::MAX)
        .min(rest.len());
    Ok(rest.get(..len).unwrap_or(rest).to_vec())
}

/// Executes Get Log Page: the requested bytes of the page (possibly shorter than asked for
/// when the page ends first), or the status to complete with.
pub fn get_log_page(
    ctrl: &ControllerShared,
    target: &Target,
    transport: &TransportConfig,
    cmd: &GetLogPage,
) -> Result<Vec<u8>, Status> {
    let invalid_field = Status::INVALID_FIELD.with_dnr();
    let lid = LogPageId(cmd.lid);
    // NVMe Base 2.0 section 5.16: OT = 1 selects an index offset, which only some log pages
    // (none served here) define.
    if cmd.ot {
        return Err(invalid_field);
    }
    if ctrl.subsystem.kind == SubsystemKind::Discovery {
        // NVMe-oF 1.1 section 5.3: the discovery controller's log is LID 70h.
        if lid != LogPageId::DISCOVERY {
            return Err(Status::INVALID_LOG_PAGE.with_dnr());
        }
        let page = discovery_log(ctrl, target, transport);
        return window(&page, cmd);
    }
    // SMART and the other controller-wide pages are not per namespace (LPA bit 0 is 0); the
    // NSID is accepted as 0, FFFFFFFFh or any namespace, as SPDK and Linux targets do.
    match lid {
        LogPageId::ERROR_INFORMATION => {
            // No error is recorded: ELPE + 1 entries with Error Count 0 ("invalid entry").
            let page = vec![0u8; (usize::from(ELPE) + 1) * size_of::<ErrorLogEntry>()];
            window(&page, cmd)
        }
        LogPageId::SMART_HEALTH => window(smart_log(ctrl).as_bytes(), cmd),
        LogPageId::FIRMWARE_SLOT => window(firmware_slot_log().as_bytes(), cmd),
        LogPageId::CHANGED_NAMESPACE_LIST => {
            let page = changed_namespace_list(ctrl, cmd.rae);
            window(page.as_bytes(), cmd)
        }
        LogPageId::COMMANDS_SUPPORTED_EFFECTS => {
            // NVMe Base 2.0 section 5.16.1.6: the page is per command set; only NVM (CSI 00h).
            if cmd.csi != 0 {
                return Err(invalid_field);
            }
            window(commands_supported_and_effects().as_bytes(), cmd)
        }
        _ => Err(Status::INVALID_LOG_PAGE.with_dnr()),
    }
}

/// Data units for the SMART log: thousands of 512-byte units, rounded up (NVMe Base 2.0
/// Figure 207, "a value of 1 indicates 1 to 1,000 units").
pub fn data_units(units_512: u64) -> u128 {
    u128::from(units_512).div_ceil(1000)
}

/// The SMART / Health Information log (NVMe Base 2.0 section 5.16.1.3): the controller's
/// counters, a composite temperature of 300 K (no sensor; below WCTEMP), full spare, nothing
/// used up, no critical warning.
pub fn smart_log(ctrl: &ControllerShared) -> SmartLog {
    let c = ctrl.counters.totals();
    let mut log = SmartLog::zeroed();
    log.critical_warning = 0;
    log.composite_temperature = U16::new(300);
    log.available_spare = 100;
    log.available_spare_threshold = 10;
    log.percentage_used = 0;
    log.data_units_read = U128::new(data_units(c.read_units));
    log.data_units_written = U128::new(data_units(c.write_units));
    log.host_read_commands = U128::new(u128::from(c.read_commands));
    log.host_write_commands = U128::new(u128::from(c.write_commands));
    log.power_cycles = U128::new(1);
    let hours = ctrl.created.elapsed().as_secs() / 3600;
    log.power_on_hours = U128::new(u128::from(hours));
    log
}

/// The Firmware Slot Information log (NVMe Base 2.0 section 5.16.1.4): slot 1 active, holding
/// this crate's version (the Identify Controller FR field).
pub fn firmware_slot_log() -> FirmwareSlotLog {
    let mut log = FirmwareSlotLog::zeroed();
    log.afi = 1;
    log.frs[0] = ascii_field(env!("CARGO_PKG_VERSION"));
    log
}

/// The Changed Namespace List log (NVMe Base 2.0 section 5.16.1.5): up to 1024 changed NSIDs
/// ascending, or FFFFFFFFh first and zeroes after when more changed.
///
/// Reading it with RAE = 0 clears the list and re-arms the Namespace Attribute Changed notice
/// (NVMe Base 2.0 section 5.2.1: the event is cleared by reading the log page it names, unless
/// RAE asks to retain it). With RAE = 1 the list and the masked notice are kept.
pub fn changed_namespace_list(ctrl: &ControllerShared, rae: bool) -> ChangedNamespaceList {
    let mut page = ChangedNamespaceList::zeroed();
    let mut st = ctrl.state();
    if st.changed_namespaces.len() > page.nsids.len() {
        page.nsids[0] = U32::new(0xFFFF_FFFF);
    } else {
        for (slot, nsid) in page.nsids.iter_mut().zip(st.changed_namespaces.iter()) {
            *slot = U32::new(*nsid);
        }
    }
    if !rae {
        st.changed_namespaces.clear();
        st.ns_notice_masked = false;
    }
    page
}

fn effects_of(table: &mut [U32; 256], op: Opcode, bits: u32) {
    if let Some(e) = table.get_mut(usize::from(op.0)) {
        *e = U32::new(bits);
    }
}

/// The Commands Supported and Effects log for the NVM command set (NVMe Base 2.0 section
/// 5.16.1.6): the admin commands `admin::execute` implements, and the NVM commands the I/O
/// path implements, with LBCC ("logical block content change") on those that write.
pub fn commands_supported_and_effects() -> CommandEffectsLog {
    use effects::{CSUPP, LBCC};
    let mut log = CommandEffectsLog::zeroed();
    for op in [
        admin_op::GET_LOG_PAGE,
        admin_op::IDENTIFY,
        admin_op::ABORT,
        admin_op::SET_FEATURES,
        admin_op::GET_FEATURES,
        admin_op::ASYNC_EVENT_REQUEST,
        admin_op::KEEP_ALIVE,
    ] {
        effects_of(&mut log.admin, op, CSUPP);
    }
    effects_of(&mut log.io, io_op::FLUSH, CSUPP);
    effects_of(&mut log.io, io_op::READ, CSUPP);
    effects_of(&mut log.io, io_op::COMPARE, CSUPP);
    effects_of(&mut log.io, io_op::WRITE, CSUPP | LBCC);
    effects_of(&mut log.io, io_op::WRITE_ZEROES, CSUPP | LBCC);
    effects_of(&mut log.io, io_op::DATASET_MANAGEMENT, CSUPP | LBCC);
    log
}

/// A stable Port ID for a listener address (NVMe-oF 1.1 Figure 32: "a particular NVM subsystem
/// port"): a 16-bit digest of transport, family, address and service, so every subsystem
/// listening on the same address reports the same port, independently of other listeners.
pub fn port_id(addr: &ListenAddress) -> u16 {
    // 32-bit FNV-1a (a fixed, documented function, so the value survives restarts and
    // upgrades), folded to 16 bits.
    let mut h: u32 = 0x811C_9DC5;
    let fields = [
        addr.trtype.to_ascii_uppercase(),
        addr.adrfam.to_ascii_uppercase(),
        addr.traddr.clone(),
        addr.trsvcid.clone(),
    ];
    for field in &fields {
        for b in field.bytes().chain([0u8]) {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    }
    let [a, b, c, d] = h.to_le_bytes();
    u16::from_le_bytes([a ^ c, b ^ d])
}

/// ADRFAM for a listener (NVMe-oF 1.1 Figure 32): IPv4 (1) or IPv6 (2), from the address
/// itself when it is an IP literal (a listener created with the IPv4 default for `::1` is
/// still IPv6), otherwise from the configured family.
pub fn adrfam(addr: &ListenAddress) -> u8 {
    match addr.traddr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => discovery::ADRFAM_IPV4,
        Ok(std::net::IpAddr::V6(_)) => discovery::ADRFAM_IPV6,
        Err(_) if addr.adrfam.eq_ignore_ascii_case("ipv6") => discovery::ADRFAM_IPV6,
        Err(_) => discovery::ADRFAM_IPV4,
    }
}

/// One Discovery Log Page Entry (NVMe-oF 1.1 Figure 32) for an NVM subsystem port: TCP, no
/// secure channel required and SQ flow control disable supported (TREQ = 06h), dynamic
/// controllers (CNTLID FFFFh), the admin queue depth as ASQSZ, and TCP's TSAS with SECTYPE 0
/// (no security). TRADDR and TRSVCID are ASCII, space padded; SUBNQN is NUL padded.
pub fn discovery_entry(
    subnqn: &str,
    addr: &ListenAddress,
    transport: &TransportConfig,
) -> DiscoveryLogEntry {
    let mut e = DiscoveryLogEntry::zeroed();
    e.trtype = discovery::TRTYPE_TCP;
    e.adrfam = adrfam(addr);
    e.subtype = discovery::SUBTYPE_NVME;
    e.treq = discovery::TREQ_NOT_REQUIRED | discovery::TREQ_DISABLE_SQFLOW;
    e.portid = U16::new(port_id(addr));
    e.cntlid = U16::new(0xFFFF);
    e.asqsz = U16::new(transport.max_aq_depth);
    e.trsvcid = ascii_field(&addr.trsvcid);
    e.subnqn = nqn_field(subnqn);
    e.traddr = ascii_field(&addr.traddr);
    e.tsas[0] = discovery::TCP_SECTYPE_NONE;
    e
}

/// The Discovery log page (NVMe-oF 1.1 section 5.3, Figures 31 and 32): the generation
/// counter, then one entry per port of every NVM subsystem this host may connect to (a host
/// not on a subsystem's access list does not see it).
pub fn discovery_log(
    ctrl: &ControllerShared,
    target: &Target,
    transport: &TransportConfig,
) -> Vec<u8> {
    let entries = target.discovery_entries(&ctrl.hostnqn);
    let mut header = DiscoveryLogHeader::zeroed();
    header.genctr = U64::new(target.discovery_generation());
    header.numrec = U64::new(u64::try_from(entries.len()).unwrap_or(u64::MAX));
    header.recfmt = U16::new(0);
    let mut page = Vec::with_capacity((entries.len() + 1) * size_of::<DiscoveryLogEntry>());
    page.extend_from_slice(header.as_bytes());
    for (nqn, addr) in &entries {
        page.extend_from_slice(discovery_entry(nqn, addr, transport).as_bytes());
    }
    page
}
