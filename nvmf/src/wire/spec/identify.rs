//! Identify data structures (NVMe Base 2.0, Identify command): Identify Controller (CNS 01h),
//! Identify Namespace for the NVM command set (CNS 00h, NVM Command Set 1.0) and the
//! Namespace Identification Descriptor list (CNS 03h).

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::wire::codec::{BufferTooSmall, Reader, Writer};

/// Size of every Identify data structure.
pub const IDENTIFY_DATA_SIZE: usize = 4096;

/// Controller or Namespace Structure (CNS) values, Identify CDW10 bits 7:0 (NVMe Base 2.0
/// "CNS Values").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cns(pub u8);

impl Cns {
    /// Identify Namespace (NVM command set) for NSID.
    pub const NAMESPACE: Cns = Cns(0x00);
    /// Identify Controller.
    pub const CONTROLLER: Cns = Cns(0x01);
    /// Active Namespace ID list (NSIDs greater than NSID).
    pub const ACTIVE_NAMESPACE_LIST: Cns = Cns(0x02);
    /// Namespace Identification Descriptor list for NSID.
    pub const NAMESPACE_ID_DESCRIPTORS: Cns = Cns(0x03);
    /// NVM Set List.
    pub const NVM_SET_LIST: Cns = Cns(0x04);
    /// I/O Command Set specific Identify Namespace.
    pub const CSI_NAMESPACE: Cns = Cns(0x05);
    /// I/O Command Set specific Identify Controller.
    pub const CSI_CONTROLLER: Cns = Cns(0x06);
    /// Active Namespace ID list for an I/O command set.
    pub const CSI_ACTIVE_NAMESPACE_LIST: Cns = Cns(0x07);
    /// I/O Command Set Independent Identify Namespace.
    pub const CS_INDEPENDENT_NAMESPACE: Cns = Cns(0x08);
    /// Allocated Namespace ID list.
    pub const ALLOCATED_NAMESPACE_LIST: Cns = Cns(0x10);
    /// Controller list attached to NSID.
    pub const NAMESPACE_CONTROLLER_LIST: Cns = Cns(0x12);
    /// Controller list of the NVM subsystem.
    pub const CONTROLLER_LIST: Cns = Cns(0x13);
    /// I/O Command Set data structure.
    pub const IO_COMMAND_SET: Cns = Cns(0x1C);
}

/// Power State Descriptor, 32 bytes (NVMe Base 2.0, "Power State Descriptor Data Structure").
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct PowerStateDescriptor {
    /// MP: maximum power, in units set by MXPS.
    pub mp: U16,
    /// Reserved.
    pub reserved2: u8,
    /// MXPS (bit 0) and NOPS (bit 1).
    pub flags: u8,
    /// ENLAT: entry latency, microseconds.
    pub enlat: U32,
    /// EXLAT: exit latency, microseconds.
    pub exlat: U32,
    /// RRT: relative read throughput.
    pub rrt: u8,
    /// RRL: relative read latency.
    pub rrl: u8,
    /// RWT: relative write throughput.
    pub rwt: u8,
    /// RWL: relative write latency.
    pub rwl: u8,
    /// IDLP: idle power.
    pub idlp: U16,
    /// IPS: idle power scale (bits 7:6).
    pub ips: u8,
    /// Reserved.
    pub reserved19: u8,
    /// ACTP: active power.
    pub actp: U16,
    /// APW (bits 2:0) and APS (bits 7:6).
    pub apw_aps: u8,
    /// Reserved.
    pub reserved23: [u8; 9],
}

const _: () = assert!(size_of::<PowerStateDescriptor>() == 32);

/// Identify Controller data structure, 4096 bytes (NVMe Base 2.0, "Identify Controller
/// Data Structure"; the fabrics fields at 1792 are from NVMe-oF 1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct IdentifyController {
    /// PCI Vendor ID.
    pub vid: U16,
    /// PCI Subsystem Vendor ID.
    pub ssvid: U16,
    /// Serial Number (ASCII, space padded).
    pub sn: [u8; 20],
    /// Model Number (ASCII, space padded).
    pub mn: [u8; 40],
    /// Firmware Revision (ASCII, space padded).
    pub fr: [u8; 8],
    /// Recommended Arbitration Burst.
    pub rab: u8,
    /// IEEE OUI Identifier.
    pub ieee: [u8; 3],
    /// Controller Multi-Path I/O and Namespace Sharing Capabilities.
    pub cmic: u8,
    /// Maximum Data Transfer Size, as a power of two in units of CAP.MPSMIN (0: no limit).
    pub mdts: u8,
    /// Controller ID.
    pub cntlid: U16,
    /// Version (same encoding as the VS property).
    pub ver: U32,
    /// RTD3 Resume Latency.
    pub rtd3r: U32,
    /// RTD3 Entry Latency.
    pub rtd3e: U32,
    /// Optional Asynchronous Events Supported.
    pub oaes: U32,
    /// Controller Attributes.
    pub ctratt: U32,
    /// Read Recovery Levels Supported.
    pub rrls: U16,
    /// Reserved.
    pub reserved102: [u8; 9],
    /// Controller Type (1: I/O, 2: discovery, 3: administrative).
    pub cntrltype: u8,
    /// FRU Globally Unique Identifier.
    pub fguid: [u8; 16],
    /// Command Retry Delay Time 1.
    pub crdt1: U16,
    /// Command Retry Delay Time 2.
    pub crdt2: U16,
    /// Command Retry Delay Time 3.
    pub crdt3: U16,
    /// Reserved.
    pub reserved134: [u8; 119],
    /// NVM Subsystem Report (NVMe-MI).
    pub nvmsr: u8,
    /// VPD Write Cycle Information (NVMe-MI).
    pub vwci: u8,
    /// Management Endpoint Capabilities (NVMe-MI).
    pub mec: u8,
    /// Optional Admin Command Support.
    pub oacs: U16,
    /// Abort Command Limit, 0's based.
    pub acl: u8,
    /// Asynchronous Event Request Limit, 0's based.
    pub aerl: u8,
    /// Firmware Updates.
    pub frmw: u8,
    /// Log Page Attributes.
    pub lpa: u8,
    /// Error Log Page Entries, 0's based.
    pub elpe: u8,
    /// Number of Power States Support, 0's based.
    pub npss: u8,
    /// Admin Vendor Specific Command Configuration.
    pub avscc: u8,
    /// Autonomous Power State Transition Attributes.
    pub apsta: u8,
    /// Warning Composite Temperature Threshold (kelvin).
    pub wctemp: U16,
    /// Critical Composite Temperature Threshold (kelvin).
    pub cctemp: U16,
    /// Maximum Time for Firmware Activation.
    pub mtfa: U16,
    /// Host Memory Buffer Preferred Size.
    pub hmpre: U32,
    /// Host Memory Buffer Minimum Size.
    pub hmmin: U32,
    /// Total NVM Capacity (bytes, 128-bit).
    pub tnvmcap: [u8; 16],
    /// Unallocated NVM Capacity (bytes, 128-bit).
    pub unvmcap: [u8; 16],
    /// Replay Protected Memory Block Support.
    pub rpmbs: U32,
    /// Extended Device Self-test Time.
    pub edstt: U16,
    /// Device Self-test Options.
    pub dsto: u8,
    /// Firmware Update Granularity.
    pub fwug: u8,
    /// Keep Alive Support: granularity of the keep alive timer in 100 ms units (0: none).
    pub kas: U16,
    /// Host Controlled Thermal Management Attributes.
    pub hctma: U16,
    /// Minimum Thermal Management Temperature.
    pub mntmt: U16,
    /// Maximum Thermal Management Temperature.
    pub mxtmt: U16,
    /// Sanitize Capabilities.
    pub sanicap: U32,
    /// Host Memory Buffer Minimum Descriptor Entry Size.
    pub hmminds: U32,
    /// Host Memory Maximum Descriptors Entries.
    pub hmmaxd: U16,
    /// NVM Set Identifier Maximum.
    pub nsetidmax: U16,
    /// Endurance Group Identifier Maximum.
    pub endgidmax: U16,
    /// ANA Transition Time.
    pub anatt: u8,
    /// Asymmetric Namespace Access Capabilities.
    pub anacap: u8,
    /// ANA Group Identifier Maximum.
    pub anagrpmax: U32,
    /// Number of ANA Group Identifiers.
    pub nanagrpid: U32,
    /// Persistent Event Log Size.
    pub pels: U32,
    /// Domain Identifier.
    pub domainid: U16,
    /// Reserved.
    pub reserved358: [u8; 10],
    /// Max Endurance Group Capacity.
    pub megcap: [u8; 16],
    /// Reserved.
    pub reserved384: [u8; 128],
    /// Submission Queue Entry Size: required (bits 3:0) and maximum (bits 7:4), as powers of
    /// two (0x66 for 64 bytes).
    pub sqes: u8,
    /// Completion Queue Entry Size (0x44 for 16 bytes).
    pub cqes: u8,
    /// Maximum Outstanding Commands.
    pub maxcmd: U16,
    /// Number of Namespaces (maximum valid NSID).
    pub nn: U32,
    /// Optional NVM Command Support.
    pub oncs: U16,
    /// Fused Operation Support.
    pub fuses: U16,
    /// Format NVM Attributes.
    pub fna: u8,
    /// Volatile Write Cache (bit 0: present).
    pub vwc: u8,
    /// Atomic Write Unit Normal, 0's based blocks.
    pub awun: U16,
    /// Atomic Write Unit Power Fail, 0's based blocks.
    pub awupf: U16,
    /// I/O Command Set Vendor Specific Command Configuration (was NVSCC).
    pub icsvscc: u8,
    /// Namespace Write Protection Capabilities.
    pub nwpc: u8,
    /// Atomic Compare & Write Unit.
    pub acwu: U16,
    /// Copy Descriptor Formats Supported.
    pub ocfs: U16,
    /// SGL Support (bits 1:0 must be nonzero for fabrics; bit 2 keyed; bit 20 offset).
    pub sgls: U32,
    /// Maximum Number of Allowed Namespaces.
    pub mnan: U32,
    /// Maximum Domain Namespace Attachments.
    pub maxdna: [u8; 16],
    /// Maximum I/O Controller Namespace Attachments.
    pub maxcna: U32,
    /// Reserved.
    pub reserved564: [u8; 204],
    /// NVM Subsystem NVMe Qualified Name, NUL terminated.
    pub subnqn: [u8; 256],
    /// Reserved.
    pub reserved1024: [u8; 768],
    /// I/O Queue Command Capsule Supported Size, in 16-byte units (at least 4).
    pub ioccsz: U32,
    /// I/O Queue Response Capsule Supported Size, in 16-byte units (at least 1).
    pub iorcsz: U32,
    /// In Capsule Data Offset, in 16-byte units (NVMe/TCP: 0).
    pub icdoff: U16,
    /// Fabrics Controller Attributes.
    pub fcatt: u8,
    /// Maximum SGL Data Block Descriptors (NVMe/TCP: 1).
    pub msdbd: u8,
    /// Optional Fabric Commands Support.
    pub ofcs: U16,
    /// Discovery Controller Type.
    pub dctype: u8,
    /// Reserved.
    pub reserved1807: [u8; 241],
    /// Power State Descriptors 0 to 31.
    pub psd: [PowerStateDescriptor; 32],
    /// Vendor Specific.
    pub vs: [u8; 1024],
}

const _: () = assert!(size_of::<IdentifyController>() == IDENTIFY_DATA_SIZE);

impl IdentifyController {
    /// An all-zero structure to fill in.
    pub fn zeroed() -> Self {
        zerocopy::FromZeros::new_zeroed()
    }
}

/// An LBA Format descriptor (NVM Command Set 1.0, "LBA Format Data Structure").
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct LbaFormat {
    /// Metadata Size in bytes.
    pub ms: U16,
    /// LBA Data Size as a power of two (9: 512 bytes, 12: 4096 bytes).
    pub lbads: u8,
    /// Relative Performance (bits 1:0).
    pub rp: u8,
}

const _: () = assert!(size_of::<LbaFormat>() == 4);

/// Identify Namespace data structure for the NVM command set, 4096 bytes (NVM Command Set 1.0,
/// "Identify Namespace Data Structure"). Holds 64 LBA formats as NVMe 2.0 allows (NVMe 1.4 had 16
/// followed by reserved bytes, so the first 16 are at the same offsets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct IdentifyNamespace {
    /// Namespace Size, in logical blocks.
    pub nsze: U64,
    /// Namespace Capacity, in logical blocks.
    pub ncap: U64,
    /// Namespace Utilization, in logical blocks.
    pub nuse: U64,
    /// Namespace Features.
    pub nsfeat: u8,
    /// Number of LBA Formats, 0's based.
    pub nlbaf: u8,
    /// Formatted LBA Size: format index in bits 3:0 (and 6:5 for indices above 15).
    pub flbas: u8,
    /// Metadata Capabilities.
    pub mc: u8,
    /// End-to-end Data Protection Capabilities.
    pub dpc: u8,
    /// End-to-end Data Protection Type Settings.
    pub dps: u8,
    /// Namespace Multi-path I/O and Namespace Sharing Capabilities.
    pub nmic: u8,
    /// Reservation Capabilities.
    pub rescap: u8,
    /// Format Progress Indicator.
    pub fpi: u8,
    /// Deallocate Logical Block Features.
    pub dlfeat: u8,
    /// Namespace Atomic Write Unit Normal.
    pub nawun: U16,
    /// Namespace Atomic Write Unit Power Fail.
    pub nawupf: U16,
    /// Namespace Atomic Compare & Write Unit.
    pub nacwu: U16,
    /// Namespace Atomic Boundary Size Normal.
    pub nabsn: U16,
    /// Namespace Atomic Boundary Offset.
    pub nabo: U16,
    /// Namespace Atomic Boundary Size Power Fail.
    pub nabspf: U16,
    /// Namespace Optimal I/O Boundary.
    pub noiob: U16,
    /// NVM Capacity (bytes, 128-bit).
    pub nvmcap: [u8; 16],
    /// Namespace Preferred Write Granularity.
    pub npwg: U16,
    /// Namespace Preferred Write Alignment.
    pub npwa: U16,
    /// Namespace Preferred Deallocate Granularity.
    pub npdg: U16,
    /// Namespace Preferred Deallocate Alignment.
    pub npda: U16,
    /// Namespace Optimal Write Size.
    pub nows: U16,
    /// Maximum Single Source Range Length (Copy).
    pub mssrl: U16,
    /// Maximum Copy Length.
    pub mcl: U32,
    /// Maximum Source Range Count.
    pub msrc: u8,
    /// Reserved.
    pub reserved81: [u8; 11],
    /// ANA Group Identifier.
    pub anagrpid: U32,
    /// Reserved.
    pub reserved96: [u8; 3],
    /// Namespace Attributes.
    pub nsattr: u8,
    /// NVM Set Identifier.
    pub nvmsetid: U16,
    /// Endurance Group Identifier.
    pub endgid: U16,
    /// Namespace Globally Unique Identifier.
    pub nguid: [u8; 16],
    /// IEEE Extended Unique Identifier.
    pub eui64: [u8; 8],
    /// LBA Format 0 to 63.
    pub lbaf: [LbaFormat; 64],
    /// Reserved.
    pub reserved384: [u8; 3328],
    /// Vendor Specific.
    pub vs: [u8; 384],
}

const _: () = assert!(size_of::<IdentifyNamespace>() == IDENTIFY_DATA_SIZE);

impl IdentifyNamespace {
    /// An all-zero structure to fill in (also the answer for an inactive NSID).
    pub fn zeroed() -> Self {
        zerocopy::FromZeros::new_zeroed()
    }

    /// The index of the formatted LBA format (FLBAS bits 3:0 and 6:5).
    pub fn formatted_lba_index(&self) -> usize {
        usize::from(self.flbas & 0x0F) | (usize::from((self.flbas >> 5) & 0x3) << 4)
    }
}

/// Namespace Identifier Types (NIDT) of namespace identification descriptors (NVMe Base 2.0
/// "Namespace Identifier Type Values").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Nidt(pub u8);

impl Nidt {
    /// IEEE Extended Unique Identifier, 8 bytes.
    pub const EUI64: Nidt = Nidt(0x1);
    /// Namespace Globally Unique Identifier, 16 bytes.
    pub const NGUID: Nidt = Nidt(0x2);
    /// Namespace UUID, 16 bytes.
    pub const UUID: Nidt = Nidt(0x3);
    /// Command Set Identifier, 1 byte (0: NVM command set).
    pub const CSI: Nidt = Nidt(0x4);

    /// The NIDL the specification fixes for this type, if it is a known type.
    pub fn expected_len(self) -> Option<usize> {
        match self {
            Nidt::EUI64 => Some(8),
            Nidt::NGUID | Nidt::UUID => Some(16),
            Nidt::CSI => Some(1),
            _ => None,
        }
    }
}

/// One namespace identification descriptor: type and identifier bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsIdDescriptor<'a> {
    /// Namespace Identifier Type.
    pub nidt: Nidt,
    /// Namespace Identifier (NIDL bytes).
    pub nid: &'a [u8],
}

/// Writes a namespace identification descriptor list (a 4-byte header NIDT, NIDL, 2
/// reserved bytes, then NIDL bytes, per descriptor) and zero-fills the rest of `out`, whose
/// zero NIDT terminates the list. Returns the bytes used by descriptors. A `nid` longer than
/// 255 bytes cannot be described by NIDL and is reported as [`BufferTooSmall`].
pub fn write_ns_id_descriptors(
    descriptors: &[NsIdDescriptor<'_>],
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    let mut w = Writer::new(out);
    for d in descriptors {
        let nidl = u8::try_from(d.nid.len()).map_err(|_| BufferTooSmall {
            needed: d.nid.len(),
            available: 255,
        })?;
        w.put_u8(d.nidt.0)?;
        w.put_u8(nidl)?;
        w.put_zeros(2)?;
        w.put_slice(d.nid)?;
    }
    let used = w.len();
    let rest = w.remaining();
    w.put_zeros(rest)?;
    Ok(used)
}

/// Iterates over a namespace identification descriptor list, stopping at the first
/// descriptor with NIDT 0 or at a truncated descriptor.
pub fn ns_id_descriptors(list: &[u8]) -> impl Iterator<Item = NsIdDescriptor<'_>> {
    let mut r = Reader::new(list);
    core::iter::from_fn(move || {
        let nidt = r.u8()?;
        if nidt == 0 {
            return None;
        }
        let nidl = r.u8()?;
        r.skip(2)?;
        let nid = r.take(usize::from(nidl))?;
        Some(NsIdDescriptor {
            nidt: Nidt(nidt),
            nid,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn identify_controller_offsets() {
        type C = IdentifyController;
        let expected = [
            (offset_of!(C, sn), 4),
            (offset_of!(C, mn), 24),
            (offset_of!(C, fr), 64),
            (offset_of!(C, rab), 72),
            (offset_of!(C, ieee), 73),
            (offset_of!(C, cmic), 76),
            (offset_of!(C, mdts), 77),
            (offset_of!(C, cntlid), 78),
            (offset_of!(C, ver), 80),
            (offset_of!(C, oaes), 92),
            (offset_of!(C, ctratt), 96),
            (offset_of!(C, cntrltype), 111),
            (offset_of!(C, fguid), 112),
            (offset_of!(C, oacs), 256),
            (offset_of!(C, acl), 258),
            (offset_of!(C, aerl), 259),
            (offset_of!(C, frmw), 260),
            (offset_of!(C, lpa), 261),
            (offset_of!(C, elpe), 262),
            (offset_of!(C, npss), 263),
            (offset_of!(C, wctemp), 266),
            (offset_of!(C, tnvmcap), 280),
            (offset_of!(C, kas), 320),
            (offset_of!(C, anagrpmax), 344),
            (offset_of!(C, megcap), 368),
            (offset_of!(C, sqes), 512),
            (offset_of!(C, cqes), 513),
            (offset_of!(C, maxcmd), 514),
            (offset_of!(C, nn), 516),
            (offset_of!(C, oncs), 520),
            (offset_of!(C, fuses), 522),
            (offset_of!(C, fna), 524),
            (offset_of!(C, vwc), 525),
            (offset_of!(C, awun), 526),
            (offset_of!(C, awupf), 528),
            (offset_of!(C, icsvscc), 530),
            (offset_of!(C, acwu), 532),
            (offset_of!(C, sgls), 536),
            (offset_of!(C, mnan), 540),
            (offset_of!(C, subnqn), 768),
            (offset_of!(C, ioccsz), 1792),
            (offset_of!(C, iorcsz), 1796),
            (offset_of!(C, icdoff), 1800),
            (offset_of!(C, fcatt), 1802),
            (offset_of!(C, msdbd), 1803),
            (offset_of!(C, ofcs), 1804),
            (offset_of!(C, dctype), 1806),
            (offset_of!(C, psd), 2048),
            (offset_of!(C, vs), 3072),
        ];
        for (i, (got, want)) in expected.iter().enumerate() {
            assert_eq!(got, want, "field #{i}");
        }
    }

    #[test]
    fn identify_namespace_offsets() {
        type N = IdentifyNamespace;
        assert_eq!(offset_of!(N, ncap), 8);
        assert_eq!(offset_of!(N, nuse), 16);
        assert_eq!(offset_of!(N, nsfeat), 24);
        assert_eq!(offset_of!(N, nlbaf), 25);
        assert_eq!(offset_of!(N, flbas), 26);
        assert_eq!(offset_of!(N, mc), 27);
        assert_eq!(offset_of!(N, dpc), 28);
        assert_eq!(offset_of!(N, dps), 29);
        assert_eq!(offset_of!(N, nmic), 30);
        assert_eq!(offset_of!(N, dlfeat), 33);
        assert_eq!(offset_of!(N, nawun), 34);
        assert_eq!(offset_of!(N, noiob), 46);
        assert_eq!(offset_of!(N, nvmcap), 48);
        assert_eq!(offset_of!(N, npwg), 64);
        assert_eq!(offset_of!(N, nows), 72);
        assert_eq!(offset_of!(N, mcl), 76);
        assert_eq!(offset_of!(N, anagrpid), 92);
        assert_eq!(offset_of!(N, nsattr), 99);
        assert_eq!(offset_of!(N, nvmsetid), 100);
        assert_eq!(offset_of!(N, nguid), 104);
        assert_eq!(offset_of!(N, eui64), 120);
        assert_eq!(offset_of!(N, lbaf), 128);
        assert_eq!(offset_of!(N, vs), 3712);
        assert_eq!(offset_of!(PowerStateDescriptor, idlp), 16);
        assert_eq!(offset_of!(PowerStateDescriptor, actp), 20);
    }

    #[test]
    fn lba_format_index() {
        let mut ns = IdentifyNamespace::zeroed();
        ns.flbas = 0x13;
        assert_eq!(ns.formatted_lba_index(), 3);
        ns.flbas = 0b0110_0001;
        assert_eq!(ns.formatted_lba_index(), 0x31);
        ns.lbaf[1] = LbaFormat {
            ms: U16::new(0),
            lbads: 12,
            rp: 0,
        };
        assert_eq!(&ns.as_bytes()[132..136], &[0, 0, 12, 0]);
    }

    #[test]
    fn ns_id_descriptor_list_roundtrip() {
        let uuid = [0xAB; 16];
        let nguid = [0x11; 16];
        let descs = [
            NsIdDescriptor {
                nidt: Nidt::NGUID,
                nid: &nguid,
            },
            NsIdDescriptor {
                nidt: Nidt::UUID,
                nid: &uuid,
            },
            NsIdDescriptor {
                nidt: Nidt::CSI,
                nid: &[0],
            },
        ];
        let mut page = [0xFFu8; 4096];
        let used = write_ns_id_descriptors(&descs, &mut page).unwrap();
        assert_eq!(used, 20 + 20 + 5);
        assert_eq!(&page[0..4], &[2, 16, 0, 0]);
        assert!(page[used..].iter().all(|&b| b == 0));
        let parsed: Vec<_> = ns_id_descriptors(&page).collect();
        assert_eq!(parsed, descs);
        for d in &parsed {
            assert_eq!(d.nidt.expected_len(), Some(d.nid.len()));
        }
        // A truncated list ends the iteration instead of reading past the end.
        assert_eq!(ns_id_descriptors(&page[..30]).count(), 1);
        let mut small = [0u8; 10];
        assert!(write_ns_id_descriptors(&descs, &mut small).is_err());
    }
}
