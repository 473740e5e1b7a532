//! Identify (NVMe Base 2.0 section 5.17): the 4096-byte data structures a host reads to learn
//! the controller and its namespaces.
//!
//! Served CNS values (Base 2.0 Figure 274):
//! - 00h Identify Namespace (NVM Command Set 1.0 Figure 97), 01h Identify Controller,
//!   02h Active Namespace ID list, 03h Namespace Identification Descriptor list,
//!   05h / 06h / 07h the NVM command set (CSI 00h) specific structures;
//! - a discovery controller serves only 01h (NVMe-oF 1.1 section 5, "Discovery Controller");
//! - anything else is Invalid Field in Command.

use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32, U64};

use crate::target::subsystem::{Namespace, SubsystemKind, TransportConfig};
use crate::wire::spec::identify::{
    IDENTIFY_DATA_SIZE, IdentifyController, IdentifyNamespace, Nidt, NsIdDescriptor,
    write_ns_id_descriptors,
};
use crate::wire::spec::{Status, ascii_field, nqn_field};

use super::ControllerShared;
use super::props;

/// The broadcast NSID (NVMe Base 2.0 section 3.2.1.2).
pub const NSID_BROADCAST: u32 = 0xFFFF_FFFF;

/// PCI Vendor ID and Subsystem Vendor ID: 0. Shoal is not a PCI device and holds no PCI-SIG
/// vendor ID, so it does not borrow one (the Linux target reports 0 as well); hosts identify
/// the controller by its model number, firmware revision and subsystem NQN instead.
pub const VENDOR_ID: u16 = 0;

/// KAS: Keep Alive Timer granularity, in 100 ms units (NVMe Base 2.0 Figure 275): 1 second.
/// The Linux host refuses an I/O controller whose KAS is 0 ("keep-alive support is mandatory
/// for fabrics").
pub const KAS_100MS: u16 = 10;

/// ACL: Abort Command Limit, 0's based (4 concurrent Abort commands).
pub const ACL: u8 = 3;

/// AERL: Asynchronous Event Request Limit, 0's based: at most [`AER_LIMIT`] outstanding AERs.
pub const AERL: u8 = 3;

/// Outstanding Asynchronous Event Requests a controller accepts (AERL + 1). One more is
/// completed with Asynchronous Event Request Limit Exceeded (NVMe Base 2.0 section 5.2).
pub const AER_LIMIT: usize = AERL as usize + 1;

/// ELPE: Error Log Page Entries, 0's based: the Error Information log holds one 64-byte entry.
pub const ELPE: u8 = 0;

/// WCTEMP / CCTEMP (kelvin): 70 and 100 degrees Celsius. Nothing here heats up; the values
/// only give the SMART log's composite temperature a frame of reference.
pub const WCTEMP_K: u16 = 343;
/// See [`WCTEMP_K`].
pub const CCTEMP_K: u16 = 373;

/// OAES bit 8: Namespace Attribute Notices (NVMe Base 2.0 Figure 275).
pub const OAES_NS_ATTR_NOTICES: u32 = 1 << 8;

/// CTRATT bit 0: 128-bit Host Identifier supported (NVMe-oF requires the extended host ID).
pub const CTRATT_HID_128: u32 = 1 << 0;

/// Identify Controller CNTRLTYPE values (NVMe Base 2.0 Figure 275).
pub mod cntrltype {
    /// I/O controller.
    pub const IO: u8 = 1;
    /// Discovery controller.
    pub const DISCOVERY: u8 = 2;
}

/// ONCS: Compare (bit 0), Dataset Management (bit 2), Write Zeroes (bit 3), and the Save /
/// Select fields of Set / Get Features (bit 4). No Write Uncorrectable, reservations,
/// timestamp, verify or copy.
pub const ONCS: u16 = (1 << 0) | (1 << 2) | (1 << 3) | (1 << 4);

/// VWC = 05h: a volatile write cache is present (bit 0: the `uring` bdev writes through the page
/// cache, so completed writes are durable only after a Flush, which the host must be told to
/// send), and bits 2:1 = 10b: Flush with the broadcast NSID is not supported (the I/O path
/// completes it with Invalid Namespace or Format). Same value as SPDK's target.
pub const VWC: u8 = 0x05;

/// SGLS (NVMe Base 2.0 Figure 275): bits 1:0 = 01b, SGLs supported with no alignment or
/// granularity requirement (the Linux host refuses a fabrics controller with bits 1:0 = 00b),
/// and bit 20: the Address field of an SGL Data Block descriptor may be an offset, which
/// NVMe/TCP in-capsule data uses. No keyed SGLs (bit 2): those are RDMA's.
pub const SGLS: u32 = (1 << 0) | (1 << 20);

/// LPA (NVMe Base 2.0 Figure 275): bit 1 Commands Supported and Effects log, bit 2 extended
/// data for Get Log Page (NUMDU, LPOL / LPOU).
pub const LPA_IO: u8 = (1 << 1) | (1 << 2);
/// LPA of a discovery controller: extended data only (its only log is the discovery log).
pub const LPA_DISCOVERY: u8 = 1 << 2;

/// Recommended Arbitration Burst (2^6 commands).
pub const RAB: u8 = 6;

/// FRMW: the first slot is read-only (bit 0) and there is one slot (bits 3:1 = 1).
pub const FRMW: u8 = 0x03;

/// DMRSL (NVM command set Identify Controller): at most this many logical blocks per Dataset
/// Management range, so one deallocate costs the reactor a bounded amount of work.
pub const DMRSL_BLOCKS: u32 = 32_768;

/// WZSL (NVM command set Identify Controller): Write Zeroes up to 2^11 pages of 4 KiB (8 MiB)
/// per command (MDTS does not bound Write Zeroes, which moves no data).
pub const WZSL: u8 = 11;

/// The command set identifier (CSI) of the NVM command set.
pub const CSI_NVM: u8 = 0;

/// The Identify command's fields (NVMe Base 2.0 Figure 273): CNS and CNTID in CDW10, CSI in
/// CDW11 (from `command::AdminCommand::Identify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentifyCommand {
    /// Controller or Namespace Structure (CDW10 bits 7:0).
    pub cns: u8,
    /// Controller Identifier (CDW10 bits 31:16).
    pub cntid: u16,
    /// Command Set Identifier (CDW11 bits 31:24).
    pub csi: u8,
    /// Namespace Identifier.
    pub nsid: u32,
}

/// MDTS: the largest transfer as a power of two of 4 KiB pages (CAP.MPSMIN = 0). The value
/// rounds `max_io_size` down to a power of two and is at least 1, since 0 would mean "no
/// limit".
pub fn mdts(transport: &TransportConfig) -> u8 {
    let pages = (transport.max_io_size / 4096).max(2);
    u8::try_from(pages.ilog2()).unwrap_or(u8::MAX)
}

/// The largest data transfer in bytes a command may ask for: 2^MDTS pages of 4 KiB.
pub fn max_transfer_bytes(transport: &TransportConfig) -> u64 {
    4096u64 << mdts(transport).min(40)
}

/// NN: the largest NSID of the subsystem (its `max_namespaces`, 32 when unset).
pub fn max_nsid(ctrl: &ControllerShared) -> u32 {
    ctrl.subsystem.with_config(|c| {
        if c.max_namespaces == 0 {
            32
        } else {
            c.max_namespaces
        }
    })
}

fn firmware_revision() -> [u8; 8] {
    ascii_field(env!("CARGO_PKG_VERSION"))
}

/// The Identify Controller data structure (CNS 01h; NVMe Base 2.0 Figure 275, fabrics fields
/// from NVMe-oF 1.1 Figure 27).
pub fn identify_controller(
    ctrl: &ControllerShared,
    transport: &TransportConfig,
) -> IdentifyController {
    let kind = ctrl.subsystem.kind;
    let io = kind == SubsystemKind::Nvme;
    let (sn, mn) = ctrl
        .subsystem
        .with_config(|c| (c.serial_number.clone(), c.model_number.clone()));
    let mut id = IdentifyController::zeroed();
    id.vid = U16::new(VENDOR_ID);
    id.ssvid = U16::new(VENDOR_ID);
    id.sn = ascii_field(&sn);
    id.mn = ascii_field(&mn);
    id.fr = firmware_revision();
    id.rab = RAB;
    id.mdts = mdts(transport);
    id.cntlid = U16::new(ctrl.cntlid);
    id.ver = U32::new(props::version(kind).0);
    id.ctratt = U32::new(CTRATT_HID_128);
    id.aerl = AERL;
    id.elpe = ELPE;
    id.kas = U16::new(KAS_100MS);
    // SQES / CQES: 64-byte SQEs, 16-byte CQEs, required and maximum (NVMe-oF 1.1 section 2).
    id.sqes = 0x66;
    id.cqes = 0x44;
    id.sgls = U32::new(SGLS);
    id.subnqn = nqn_field(&ctrl.subsystem.nqn);
    // IOCCSZ: the command capsule, 64-byte SQE plus in-capsule data, in 16-byte units; IORCSZ:
    // the 16-byte CQE (NVMe-oF 1.1 Figure 27). The Linux host refuses IOCCSZ < 4 or
    // IORCSZ < 1, and ICDOFF != 0 (NVMe/TCP in-capsule data starts right after the SQE).
    let ioccsz = (64 + u64::from(transport.in_capsule_data_size)) / 16;
    id.ioccsz = U32::new(u32::try_from(ioccsz).unwrap_or(u32::MAX));
    id.iorcsz = U32::new(1);
    id.icdoff = U16::new(0);
    // FCATT bit 0 = 0: dynamic controller model (each Connect gets a new controller).
    id.fcatt = 0;
    // MSDBD: one SGL Data Block descriptor per command (NVMe/TCP).
    id.msdbd = 1;
    if io {
        id.cntrltype = cntrltype::IO;
        // CMIC bit 0: the subsystem may have more than one port (several listeners); bit 1:
        // it may have more than one controller, so namespaces are shared (NMIC bit 0).
        id.cmic = 0x03;
        id.oaes = U32::new(OAES_NS_ATTR_NOTICES);
        id.acl = ACL;
        id.frmw = FRMW;
        id.lpa = LPA_IO;
        id.wctemp = U16::new(WCTEMP_K);
        id.cctemp = U16::new(CCTEMP_K);
        id.maxcmd = U16::new(transport.max_queue_depth);
        id.nn = U32::new(max_nsid(ctrl));
        id.oncs = U16::new(ONCS);
        id.vwc = VWC;
    } else {
        id.cntrltype = cntrltype::DISCOVERY;
        id.lpa = LPA_DISCOVERY;
        id.maxcmd = U16::new(transport.max_aq_depth);
    }
    id
}

/// log2 of a block size of 512 or 4096 bytes (the only sizes a bdev may have).
fn lbads(block_size: u32) -> u8 {
    u8::try_from(block_size.max(1).ilog2()).unwrap_or(9)
}

/// DLFEAT for a namespace (NVM Command Set 1.0 Figure 97): bits 2:0 = 001b when a deallocated
/// block is known to read back as zeroes, and bit 3 (the Deallocate bit of Write Zeroes is
/// supported) then too, which is when the Linux host uses it.
///
/// The bdev trait cannot say what a deallocated block reads as: a RAM disk zeroes it, a file
/// punches a hole (zeroes), but a block device's BLKDISCARD promises nothing. Only the devices
/// known to zero are reported, by product name; others report 000b "not reported".
pub fn dlfeat(ns: &Namespace) -> u8 {
    let info = ns.bdev.info();
    let zeroes = matches!(info.product_name, "Malloc disk" | "Null disk");
    if zeroes && ns.bdev.supports(shoal_bdev::IoType::Unmap) {
        0x09
    } else {
        0x00
    }
}

/// The Identify Namespace data structure (CNS 00h; NVM Command Set 1.0 Figure 97).
///
/// NSFEAT is 0: no thin provisioning (NUSE = NSZE), no namespace atomicity fields beyond the
/// controller's one-block AWUN / AWUPF, no error on deallocated blocks, no promise that
/// NGUID / EUI64 are never reused (they are operator-supplied), and no preferred granularity
/// beyond one logical block (OPTPERF would make Linux report an odd 512-byte optimal I/O).
pub fn identify_namespace(ns: &Namespace) -> IdentifyNamespace {
    let info = ns.bdev.info();
    // Read once: the size may change meanwhile (a volume resized), and NSZE, NCAP, NUSE and
    // NVMCAP must describe one size.
    let blocks = info.num_blocks();
    let mut id = IdentifyNamespace::zeroed();
    id.nsze = U64::new(blocks);
    id.ncap = U64::new(blocks);
    id.nuse = U64::new(blocks);
    id.nsfeat = 0;
    // One LBA format (NLBAF is 0's based), formatted with it (FLBAS 0), no metadata.
    id.nlbaf = 0;
    id.flbas = 0;
    id.lbaf[0].lbads = lbads(info.block_size);
    // NMIC bit 0: the namespace may be attached to several controllers at once.
    id.nmic = 1;
    id.dlfeat = dlfeat(ns);
    id.nvmcap = (u128::from(blocks) * u128::from(info.block_size)).to_le_bytes();
    id.nguid = ns.nguid;
    id.eui64 = ns.eui64.unwrap_or([0; 8]);
    id
}

/// The Namespace Identification Descriptor list (CNS 03h; NVMe Base 2.0 section 5.17.2.3,
/// Figure 278): EUI64 if the namespace has one, NGUID, UUID, and the command set identifier
/// (NVM). Identifiers that are all zero are left out (a zero identifier means "none").
pub fn namespace_descriptors(ns: &Namespace) -> Vec<u8> {
    let eui64 = ns.eui64.unwrap_or([0; 8]);
    let uuid = *ns.uuid.as_bytes();
    let csi = [CSI_NVM];
    let mut descs = Vec::with_capacity(4);
    if eui64 != [0; 8] {
        descs.push(NsIdDescriptor {
            nidt: Nidt::EUI64,
            nid: &eui64,
        });
    }
    if ns.nguid != [0; 16] {
        descs.push(NsIdDescriptor {
            nidt: Nidt::NGUID,
            nid: &ns.nguid,
        });
    }
    if uuid != [0; 16] {
        descs.push(NsIdDescriptor {
            nidt: Nidt::UUID,
            nid: &uuid,
        });
    }
    descs.push(NsIdDescriptor {
        nidt: Nidt::CSI,
        nid: &csi,
    });
    let mut out = vec![0u8; IDENTIFY_DATA_SIZE];
    // Four descriptors of at most 20 bytes always fit in 4096 bytes.
    let _ = write_ns_id_descriptors(&descs, &mut out);
    out
}

/// The Active Namespace ID list (CNS 02h / CNS 07h with CSI 00h; NVMe Base 2.0 section
/// 5.17.2.2): up to 1024 active NSIDs greater than `after`, ascending, zero filled.
pub fn active_namespace_list(ctrl: &ControllerShared, after: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(IDENTIFY_DATA_SIZE);
    ctrl.subsystem.with_config(|c| {
        for nsid in c
            .namespaces
            .keys()
            .filter(|&&n| n > after)
            .take(IDENTIFY_DATA_SIZE / 4)
        {
            out.extend_from_slice(&nsid.to_le_bytes());
        }
    });
    out.resize(IDENTIFY_DATA_SIZE, 0);
    out
}

/// The NVM command set specific Identify Controller data structure (CNS 06h, CSI 00h; NVM
/// Command Set 1.0, "I/O Command Set Specific Identify Controller"): VSL (byte 0) 0 (no
/// Verify), WZSL (byte 1), WUSL (byte 2) 0 (no Write Uncorrectable), DMRL (byte 3) 0 (the 256
/// ranges of the command), DMRSL (bytes 7:4), DMSL (bytes 15:8) 0 (no total limit). The Linux
/// 6.1 host reads DMRL, DMRSL and WZSL from it to size discards and write-zeroes.
pub fn nvm_controller_data() -> Vec<u8> {
    let mut out = vec![0u8; IDENTIFY_DATA_SIZE];
    out[1] = WZSL;
    out[4..8].copy_from_slice(&DMRSL_BLOCKS.to_le_bytes());
    out
}

/// Checks an NSID that must name one namespace (CNS 00h, 03h, 05h): 0, the broadcast value
/// (no Namespace Management, OACS bit 3 = 0) and values above NN are invalid (NVMe Base 2.0
/// section 3.2.1.5 and Figure 274).
fn check_nsid(ctrl: &ControllerShared, nsid: u32) -> Result<(), Status> {
    if nsid == 0 || nsid == NSID_BROADCAST || nsid > max_nsid(ctrl) {
        return Err(Status::INVALID_NAMESPACE.with_dnr());
    }
    Ok(())
}

/// Executes an Identify command: the 4096-byte data structure, or the status to complete it
/// with.
pub fn identify(
    ctrl: &ControllerShared,
    transport: &TransportConfig,
    cmd: &IdentifyCommand,
) -> Result<Vec<u8>, Status> {
    let invalid_field = Status::INVALID_FIELD.with_dnr();
    if ctrl.subsystem.kind == SubsystemKind::Discovery {
        // NVMe-oF 1.1 section 5: a discovery controller implements Identify Controller only.
        return match cmd.cns {
            0x01 => Ok(identify_controller(ctrl, transport).as_bytes().to_vec()),
            _ => Err(invalid_field),
        };
    }
    match cmd.cns {
        // CNS 00h: an active NSID gets its structure, a valid inactive one a zero-filled
        // structure (Base 2.0 Figure 274).
        0x00 => {
            check_nsid(ctrl, cmd.nsid)?;
            Ok(match ctrl.subsystem.namespace(cmd.nsid) {
                Some(ns) => identify_namespace(&ns).as_bytes().to_vec(),
                None => vec![0u8; IDENTIFY_DATA_SIZE],
            })
        }
        0x01 => Ok(identify_controller(ctrl, transport).as_bytes().to_vec()),
        // CNS 02h: NSIDs FFFFFFFEh and FFFFFFFFh are invalid starting points (Base 2.0 section
        // 5.17.2.2).
        0x02 => active_list(ctrl, cmd.nsid),
        // CNS 03h: only for an active NSID (Base 2.0 section 5.17.2.3 and 3.2.1.5).
        0x03 => {
            check_nsid(ctrl, cmd.nsid)?;
            let ns = ctrl
                .subsystem
                .namespace(cmd.nsid)
                .ok_or(Status::INVALID_NAMESPACE.with_dnr())?;
            Ok(namespace_descriptors(&ns))
        }
        // CNS 05h, CSI 00h: the NVM command set specific Identify Namespace structure (NVM
        // Command Set 1.0): no protection information, no storage tags, so
        // all zero, for an active or a valid inactive NSID. Other command sets are not
        // supported (CAP.CSS bit 6 is 0).
        0x05 => {
            if cmd.csi != CSI_NVM {
                return Err(invalid_field);
            }
            check_nsid(ctrl, cmd.nsid)?;
            Ok(vec![0u8; IDENTIFY_DATA_SIZE])
        }
        0x06 => {
            if cmd.csi != CSI_NVM {
                return Err(invalid_field);
            }
            Ok(nvm_controller_data())
        }
        0x07 => {
            if cmd.csi != CSI_NVM {
                return Err(invalid_field);
            }
            active_list(ctrl, cmd.nsid)
        }
        // Namespace management lists (10h-13h), NVM set, UUID, domain and endurance group
        // lists, the I/O Command Set data structure (1Ch, only with CAP.CSS bit 6): not
        // supported (Base 2.0 Figure 274: "Invalid Field in Command").
        _ => Err(invalid_field),
    }
}

fn active_list(ctrl: &ControllerShared, after: u32) -> Result<Vec<u8>, Status> {
    if after >= 0xFFFF_FFFE {
        return Err(Status::INVALID_NAMESPACE.with_dnr());
    }
    Ok(active_namespace_list(ctrl, after))
}
