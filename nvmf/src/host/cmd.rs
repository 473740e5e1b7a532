//! Building the commands a host sends: fabrics (Connect, Property Get / Set), admin (Identify,
//! Get Log Page, Set Features, Keep Alive) and NVM I/O (Read, Write, Flush, Write Zeroes,
//! Dataset Management). The CID and the SGL descriptor are filled in by the queue pair when
//! it issues the command ([`super::queue`]).

use crate::wire::spec::fabrics::{self, ConnectData};
use crate::wire::spec::features::FeatureId;
use crate::wire::spec::identify::Cns;
use crate::wire::spec::log::LogPageId;
use crate::wire::spec::opcode::{admin, io};
use crate::wire::spec::{FabricsType, Opcode, Sqe};

/// Which way a command's data moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// No data.
    None,
    /// Controller to host (Read, Identify, Get Log Page): C2HData PDUs.
    ToHost,
    /// Host to controller (Write, Connect, Dataset Management): in-capsule, or H2CData after
    /// R2T.
    ToCtrl,
}

fn lo32(v: u64) -> u32 {
    u32::try_from(v & 0xFFFF_FFFF).unwrap_or(0)
}

fn hi32(v: u64) -> u32 {
    u32::try_from(v >> 32).unwrap_or(0)
}

/// Fabrics Connect (NVMe-oF 1.1 section 3.3, "Connect Command"): QID in CDW10 bits 31:16
/// (RECFMT 0 in bits 15:0), SQSIZE (0's based) in CDW11 bits 15:0, CATTR in bits 23:16, KATO
/// (milliseconds, admin queue only) in CDW12. Its 1024-byte [`ConnectData`] goes in-capsule.
pub fn connect(qid: u16, sqsize: u16, cattr: u8, kato_ms: u32) -> Sqe {
    let mut sqe = Sqe::new_fabrics(FabricsType::CONNECT, 0);
    sqe.cdw10.set(u32::from(qid) << 16);
    sqe.cdw11.set(u32::from(sqsize) | (u32::from(cattr) << 16));
    sqe.cdw12.set(kato_ms);
    sqe
}

/// The Connect data: host identifier, controller ID (0xFFFF for the admin queue of a dynamic
/// controller), subsystem and host NQNs.
pub fn connect_data(hostid: [u8; 16], cntlid: u16, subnqn: &str, hostnqn: &str) -> ConnectData {
    ConnectData::new(hostid, cntlid, subnqn, hostnqn)
}

/// Property Get of the property at `offset` (NVMe-oF 1.1 "Property Get Command": ATTRIB in
/// CDW10 bits 2:0, 1 for an 8-byte property; OFST in CDW11). The value comes back in DW0
/// (and DW1 for 8 bytes).
pub fn property_get(offset: u32) -> Sqe {
    let mut sqe = Sqe::new_fabrics(FabricsType::PROPERTY_GET, 0);
    let eight = crate::wire::spec::property::size_of_property(offset) == Some(8);
    sqe.cdw10.set(u32::from(if eight {
        fabrics::property_size::EIGHT_BYTES
    } else {
        fabrics::property_size::FOUR_BYTES
    }));
    sqe.cdw11.set(offset);
    sqe
}

/// Property Set of a 4-byte property (CC): VALUE in CDW12.
pub fn property_set(offset: u32, value: u32) -> Sqe {
    let mut sqe = Sqe::new_fabrics(FabricsType::PROPERTY_SET, 0);
    sqe.cdw11.set(offset);
    sqe.cdw12.set(value);
    sqe
}

/// Identify (NVMe Base 2.0 section 5.17): CNS in CDW10 bits 7:0; 4096 bytes to the host.
pub fn identify(cns: Cns, nsid: u32) -> Sqe {
    let mut sqe = Sqe::new(admin::IDENTIFY, 0);
    sqe.nsid.set(nsid);
    sqe.cdw10.set(u32::from(cns.0));
    sqe
}

/// Get Log Page (NVMe Base 2.0 section 5.16) of `len` bytes (a multiple of 4, at least 4) at
/// byte `offset`: NUMD (0's based dwords) split over CDW10 bits 31:16 and CDW11 bits 15:0,
/// LPO in CDW12 / CDW13.
pub fn get_log_page(lid: LogPageId, nsid: u32, offset: u64, len: u32) -> Sqe {
    let mut sqe = Sqe::new(admin::GET_LOG_PAGE, 0);
    sqe.nsid.set(nsid);
    let numd = (len / 4).saturating_sub(1);
    sqe.cdw10.set(u32::from(lid.0) | ((numd & 0xFFFF) << 16));
    sqe.cdw11.set(numd >> 16);
    sqe.cdw12.set(lo32(offset));
    sqe.cdw13.set(hi32(offset));
    sqe
}

/// Set Features (NVMe Base 2.0 section 5.27): FID in CDW10 bits 7:0, the value in CDW11.
pub fn set_features(fid: FeatureId, cdw11: u32) -> Sqe {
    let mut sqe = Sqe::new(admin::SET_FEATURES, 0);
    sqe.cdw10.set(u32::from(fid.0));
    sqe.cdw11.set(cdw11);
    sqe
}

/// Keep Alive (NVMe Base 2.0 section 5.25).
pub fn keep_alive() -> Sqe {
    Sqe::new(admin::KEEP_ALIVE, 0)
}

/// Read or Write of `nlb` blocks (1 to 65536) at `slba` (NVM Command Set 1.0 sections 3.2.4
/// and 3.2.6): SLBA in CDW10 / CDW11, NLB 0's based in CDW12 bits 15:0.
pub fn read_write(opcode: Opcode, nsid: u32, slba: u64, nlb: u32) -> Sqe {
    let mut sqe = Sqe::new(opcode, 0);
    sqe.nsid.set(nsid);
    sqe.cdw10.set(lo32(slba));
    sqe.cdw11.set(hi32(slba));
    sqe.cdw12.set(nlb.saturating_sub(1) & 0xFFFF);
    sqe
}

/// `sqe` (a Read, Write or Write Zeroes) with Force Unit Access set when `fua` (NVM Command
/// Set 1.0, sections 3.2.4, 3.2.6 and 3.2.8: CDW12 bit 30).
pub fn with_fua(mut sqe: Sqe, fua: bool) -> Sqe {
    if fua {
        sqe.cdw12.set(sqe.cdw12.get() | 1 << 30);
    }
    sqe
}

/// Write Zeroes of `nlb` blocks (1 to 65536) at `slba` (NVM Command Set 1.0 section 3.2.8).
pub fn write_zeroes(nsid: u32, slba: u64, nlb: u32) -> Sqe {
    read_write(io::WRITE_ZEROES, nsid, slba, nlb)
}

/// Flush (NVM Command Set 1.0 section 3.2.2 / NVMe Base 2.0 section 7.1).
pub fn flush(nsid: u32) -> Sqe {
    let mut sqe = Sqe::new(io::FLUSH, 0);
    sqe.nsid.set(nsid);
    sqe
}

/// Dataset Management with the Deallocate attribute (NVM Command Set 1.0 section 3.2.3): NR
/// (0's based) in CDW10 bits 7:0, AD in CDW11 bit 2. One 16-byte range follows as data.
pub fn deallocate(nsid: u32) -> Sqe {
    let mut sqe = Sqe::new(io::DATASET_MANAGEMENT, 0);
    sqe.nsid.set(nsid);
    sqe.cdw10.set(0);
    sqe.cdw11.set(1 << 2);
    sqe
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::command::{AdminCommand, FabricsCommand, IoCommand};

    #[test]
    fn commands_parse_back_as_built() {
        match FabricsCommand::parse(&connect(3, 127, 4, 0)) {
            FabricsCommand::Connect {
                qid, sqsize, cattr, ..
            } => assert_eq!((qid, sqsize, cattr), (3, 127, 4)),
            other => panic!("{other:?}"),
        }
        match FabricsCommand::parse(&property_get(crate::wire::spec::property::CAP)) {
            FabricsCommand::PropertyGet { offset, size8 } => assert!(offset == 0 && size8),
            other => panic!("{other:?}"),
        }
        let sqe = get_log_page(LogPageId::DISCOVERY, 0, 4096, 1 << 20);
        match AdminCommand::parse(&sqe) {
            AdminCommand::GetLogPage {
                num_dwords, offset, ..
            } => assert_eq!((num_dwords, offset), (1 << 18, 4096)),
            other => panic!("{other:?}"),
        }
        match IoCommand::parse(&read_write(io::READ, 1, 1 << 40, 65536)) {
            IoCommand::Read { slba, nlb, .. } => assert_eq!((slba, nlb), (1 << 40, 65536)),
            other => panic!("{other:?}"),
        }
        match IoCommand::parse(&deallocate(1)) {
            IoCommand::DatasetManagement { nr, ad } => assert!(nr == 1 && ad),
            other => panic!("{other:?}"),
        }
    }
}
