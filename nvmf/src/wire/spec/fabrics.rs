//! Fabrics command layouts (NVMe-oF 1.1, "Fabrics Command Set"): Connect command, data and
//! response, Property Get, Property Set.
//!
//! The command fields live in the SQE's command dwords; this module names where. Parsing
//! into typed commands is in `crate::wire::command`.

use zerocopy::little_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of the Connect command's data (NVMe-oF 1.1, "Connect Command Data").
pub const CONNECT_DATA_SIZE: usize = 1024;

/// Size of an NQN field in the Connect data and log pages.
pub const NQN_FIELD_SIZE: usize = 256;

/// Longest NQN the specification allows, in bytes, excluding the terminating NUL (NVMe Base
/// 2.0, "NVM Qualified Names").
pub const NQN_MAX_LEN: usize = 223;

/// Queue ID of the admin queue in a Connect command.
pub const ADMIN_QUEUE_ID: u16 = 0;

/// Controller ID a host puts in the Connect data to ask for any controller of a dynamic
/// controller model (NVMe-oF 1.1, "Connect Command and Response").
pub const CNTLID_DYNAMIC: u16 = 0xFFFF;

/// Controller ID a host puts in the Connect data to ask for any controller of a static
/// controller model.
pub const CNTLID_STATIC_ANY: u16 = 0xFFFE;

/// Connect Attributes (CATTR, Connect SQE byte 46) bit: the host asks the controller to
/// disable SQ flow control (SQHD in completions is then reserved; NVMe-oF 1.1, "Connect Command").
pub const CATTR_DISABLE_SQ_FLOW_CONTROL: u8 = 1 << 2;

/// The 1024-byte data of a Connect command (NVMe-oF 1.1, "Connect Command Data"), carried
/// in-capsule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ConnectData {
    /// Host Identifier (128-bit, usually a UUID).
    pub hostid: [u8; 16],
    /// Controller ID requested (0xFFFF: any, dynamic model).
    pub cntlid: U16,
    /// Reserved.
    pub reserved18: [u8; 238],
    /// Subsystem NQN, NUL terminated.
    pub subnqn: [u8; NQN_FIELD_SIZE],
    /// Host NQN, NUL terminated.
    pub hostnqn: [u8; NQN_FIELD_SIZE],
    /// Reserved.
    pub reserved768: [u8; 256],
}

const _: () = assert!(size_of::<ConnectData>() == CONNECT_DATA_SIZE);

impl ConnectData {
    /// Reads the Connect data from the start of an in-capsule data buffer, or `None` if it
    /// is shorter than 1024 bytes.
    pub fn from_prefix(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(data, _)| data)
    }

    /// Builds Connect data (used by hosts and tests).
    pub fn new(hostid: [u8; 16], cntlid: u16, subnqn: &str, hostnqn: &str) -> Self {
        let mut data: Self = zerocopy::FromZeros::new_zeroed();
        data.hostid = hostid;
        data.cntlid = U16::new(cntlid);
        data.subnqn = super::nqn_field(subnqn);
        data.hostnqn = super::nqn_field(hostnqn);
        data
    }

    /// The subsystem NQN, if it is NUL terminated within the field, no longer than
    /// [`NQN_MAX_LEN`] and valid UTF-8.
    pub fn subnqn(&self) -> Option<&str> {
        nqn(&self.subnqn)
    }

    /// The host NQN, under the same conditions as [`ConnectData::subnqn`].
    pub fn hostnqn(&self) -> Option<&str> {
        nqn(&self.hostnqn)
    }
}

fn nqn(field: &[u8; NQN_FIELD_SIZE]) -> Option<&str> {
    let end = field.iter().position(|&b| b == 0)?;
    if end > NQN_MAX_LEN {
        return None;
    }
    core::str::from_utf8(field.get(..end)?).ok()
}

/// DW0 of a successful Connect response: the controller ID in bits 15:0 (NVMe-oF 1.1
/// "Connect Response").
pub fn connect_success_dw0(cntlid: u16) -> u32 {
    u32::from(cntlid)
}

/// Where an invalid Connect parameter was found, for the DW0 of a response with status
/// Connect Invalid Parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidParameterIn {
    /// The offset is a byte offset in the SQE.
    Command,
    /// The offset is a byte offset in the Connect data.
    Data,
}

/// DW0 of a Connect response with status Connect Invalid Parameters (NVMe-oF 1.1, "Connect
/// Response"): IPO, the byte offset of the invalid parameter, in bits 15:0 and IATTR in bits 23:16,
/// whose bit 0 says whether the offset is in the Connect data (1) or the SQE (0).
pub fn connect_invalid_parameters_dw0(location: InvalidParameterIn, offset: u16) -> u32 {
    let iattr: u32 = match location {
        InvalidParameterIn::Command => 0,
        InvalidParameterIn::Data => 1,
    };
    (iattr << 16) | u32::from(offset)
}

/// Property Get / Set attribute byte (SQE byte 40), bits 2:0: the property size.
pub mod property_size {
    /// A 4-byte property.
    pub const FOUR_BYTES: u8 = 0;
    /// An 8-byte property.
    pub const EIGHT_BYTES: u8 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn connect_data_layout() {
        assert_eq!(offset_of!(ConnectData, cntlid), 16);
        assert_eq!(offset_of!(ConnectData, subnqn), 256);
        assert_eq!(offset_of!(ConnectData, hostnqn), 512);
        let data = ConnectData::new([7; 16], CNTLID_DYNAMIC, "nqn.a", "nqn.host");
        let bytes = data.as_bytes();
        assert_eq!(&bytes[16..18], &[0xFF, 0xFF]);
        assert_eq!(&bytes[256..262], b"nqn.a\0");
        assert_eq!(&bytes[512..521], b"nqn.host\0");
        let back = ConnectData::from_prefix(bytes).unwrap();
        assert_eq!(back.subnqn(), Some("nqn.a"));
        assert_eq!(back.hostnqn(), Some("nqn.host"));
        assert_eq!(ConnectData::from_prefix(&bytes[..1023]), None);
    }

    #[test]
    fn nqn_validation() {
        let mut data = ConnectData::new([0; 16], 0, "x", "y");
        // No terminating NUL: rejected.
        data.subnqn = [b'a'; NQN_FIELD_SIZE];
        assert_eq!(data.subnqn(), None);
        // 224 bytes: longer than the 223-byte maximum.
        data.subnqn = [0; NQN_FIELD_SIZE];
        data.subnqn[..224].fill(b'a');
        assert_eq!(data.subnqn(), None);
        data.subnqn[223] = 0;
        assert_eq!(data.subnqn().map(str::len), Some(223));
        data.hostnqn[0] = 0xFF;
        assert_eq!(data.hostnqn(), None);
    }

    #[test]
    fn connect_response_dw0() {
        assert_eq!(connect_success_dw0(0x1234), 0x1234);
        assert_eq!(
            connect_invalid_parameters_dw0(InvalidParameterIn::Data, 256),
            0x0001_0100
        );
        assert_eq!(
            connect_invalid_parameters_dw0(InvalidParameterIn::Command, 42),
            0x0000_002A
        );
    }
}
