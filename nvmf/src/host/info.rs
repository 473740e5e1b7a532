//! What Identify Controller, Identify Namespace and CAP say, as the host uses them: the
//! bottom of the host's controller types, using nothing of the host but the wire formats.

use uuid::Uuid;

use crate::wire::spec::identify::{IdentifyController, IdentifyNamespace, Nidt, ns_id_descriptors};
use crate::wire::spec::property::Cap;

/// What Identify Controller (NVMe Base 2.0 section 5.17.2.1) and CAP said, as the host uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerInfo {
    /// Controller ID of the current association.
    pub cntlid: u16,
    /// PCI vendor ID.
    pub vid: u16,
    /// Serial number.
    pub serial: String,
    /// Model number.
    pub model: String,
    /// Firmware revision.
    pub firmware: String,
    /// Subsystem NQN reported by the controller.
    pub subnqn: String,
    /// VER.
    pub version: u32,
    /// MDTS in bytes (2^MDTS units of 2^(12 + CAP.MPSMIN) bytes); `None`: no limit.
    pub mdts_bytes: Option<u64>,
    /// Data bytes the host puts in one command: MDTS and `max_io_size`, whichever is less.
    pub max_transfer: u32,
    /// In-capsule data bytes an I/O command may carry: IOCCSZ * 16 - 64 (NVMe-oF 1.1).
    pub in_capsule: u32,
    /// MAXCMD (0: not reported).
    pub maxcmd: u16,
    /// CAP.MQES + 1: the deepest queue the controller supports.
    pub max_queue_entries: u32,
    /// NN.
    pub nn: u32,
    /// ONCS: bit 2 Dataset Management, bit 3 Write Zeroes.
    pub oncs: u16,
    /// VWC.
    pub vwc: u8,
    /// KAS in 100 ms units.
    pub kas: u16,
    /// CNTRLTYPE: 1 I/O, 2 discovery, 3 administrative.
    pub cntrltype: u8,
    /// I/O queues granted by Set Features Number of Queues.
    pub io_queues: u16,
}

/// ONCS bit: Dataset Management supported (NVMe Base 2.0 Identify Controller).
pub const ONCS_DSM: u16 = 1 << 2;
/// ONCS bit: Write Zeroes supported.
pub const ONCS_WRITE_ZEROES: u16 = 1 << 3;

fn ascii(field: &[u8]) -> String {
    String::from_utf8_lossy(field)
        .trim_end_matches([' ', '\0'])
        .to_string()
}

impl ControllerInfo {
    /// Reads the fields the host uses from Identify Controller and CAP; `max_io_size` is the
    /// host's own transfer limit.
    pub fn parse(id: &IdentifyController, cap: Cap, max_io_size: u32) -> ControllerInfo {
        let page_shift = 12 + u32::from(cap.mpsmin());
        // MDTS 0: no limit. A shift that would overflow is as good as none.
        let mdts_bytes = match id.mdts {
            0 => None,
            m => 1u64.checked_shl(page_shift + u32::from(m)),
        };
        let max_transfer = mdts_bytes.map_or(max_io_size, |m| {
            u32::try_from(m.min(u64::from(max_io_size))).unwrap_or(max_io_size)
        });
        let ioccsz = u64::from(id.ioccsz.get());
        let in_capsule = u32::try_from((ioccsz * 16).saturating_sub(64)).unwrap_or(u32::MAX);
        ControllerInfo {
            cntlid: id.cntlid.get(),
            vid: id.vid.get(),
            serial: ascii(&id.sn),
            model: ascii(&id.mn),
            firmware: ascii(&id.fr),
            subnqn: crate::wire::spec::field_str(&id.subnqn)
                .unwrap_or_default()
                .to_string(),
            version: id.ver.get(),
            mdts_bytes,
            max_transfer: max_transfer.max(512),
            in_capsule,
            maxcmd: id.maxcmd.get(),
            max_queue_entries: u32::from(cap.mqes()) + 1,
            nn: id.nn.get(),
            oncs: id.oncs.get(),
            vwc: id.vwc,
            kas: id.kas.get(),
            cntrltype: id.cntrltype,
            io_queues: 0,
        }
    }
}

/// An active namespace of the remote controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Namespace ID.
    pub nsid: u32,
    /// Logical block size (the formatted LBA format's LBADS).
    pub block_size: u32,
    /// NSZE: blocks.
    pub num_blocks: u64,
    /// NGUID (zero if not reported).
    pub nguid: [u8; 16],
    /// EUI64 (zero if not reported).
    pub eui64: [u8; 8],
    /// The namespace UUID from the identification descriptors (CNS 03h), if any.
    pub uuid: Option<Uuid>,
    /// DLFEAT bits 2:0 = 001b: deallocated blocks read as zeroes.
    pub deallocate_zeroes: bool,
}

impl NamespaceInfo {
    /// Reads Identify Namespace (NVM Command Set 1.0 section 4.1.5.1). `None` for a namespace
    /// the host cannot use: inactive (NSZE 0), an LBA format index beyond NLBAF, a block size
    /// outside 512 B to 64 KiB, or metadata (LBA formats with MS != 0).
    pub fn parse(nsid: u32, id: &IdentifyNamespace) -> Option<NamespaceInfo> {
        let nsze = id.nsze.get();
        let idx = id.formatted_lba_index();
        if nsze == 0 || idx > usize::from(id.nlbaf) {
            return None;
        }
        let lbaf = id.lbaf.get(idx)?;
        if !(9..=16).contains(&lbaf.lbads) || lbaf.ms.get() != 0 {
            return None;
        }
        Some(NamespaceInfo {
            nsid,
            block_size: 1u32 << lbaf.lbads,
            num_blocks: nsze,
            nguid: id.nguid,
            eui64: id.eui64,
            uuid: None,
            deallocate_zeroes: id.dlfeat & 0x7 == 1,
        })
    }

    /// Takes the UUID from a namespace identification descriptor list (CNS 03h), checking
    /// NIDL against the type (NVMe Base 2.0 section 5.17.2.3).
    pub fn set_descriptors(&mut self, list: &[u8]) {
        for d in ns_id_descriptors(list) {
            if d.nidt == Nidt::UUID && d.nid.len() == 16 {
                self.uuid = Uuid::from_slice(d.nid).ok().filter(|u| !u.is_nil());
            }
        }
    }

    /// A stable identifier: the namespace UUID, else the NGUID, else `None`.
    pub fn stable_uuid(&self) -> Option<Uuid> {
        self.uuid
            .or_else(|| Some(Uuid::from_bytes(self.nguid)).filter(|u| !u.is_nil()))
    }
}
