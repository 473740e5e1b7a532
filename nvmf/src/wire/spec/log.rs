//! Log pages (NVMe Base 2.0, Get Log Page): identifiers and the layouts of the pages a fabrics
//! target serves, plus the Discovery log page (NVMe-oF 1.1, "Discovery Log Page").

use zerocopy::little_endian::{U16, U32, U64, U128};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A Log Page Identifier (Get Log Page CDW10 bits 7:0; NVMe Base 2.0, "Log Page Identifiers").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogPageId(pub u8);

impl LogPageId {
    /// Supported Log Pages.
    pub const SUPPORTED_LOG_PAGES: LogPageId = LogPageId(0x00);
    /// Error Information.
    pub const ERROR_INFORMATION: LogPageId = LogPageId(0x01);
    /// SMART / Health Information.
    pub const SMART_HEALTH: LogPageId = LogPageId(0x02);
    /// Firmware Slot Information.
    pub const FIRMWARE_SLOT: LogPageId = LogPageId(0x03);
    /// Changed Namespace List.
    pub const CHANGED_NAMESPACE_LIST: LogPageId = LogPageId(0x04);
    /// Commands Supported and Effects.
    pub const COMMANDS_SUPPORTED_EFFECTS: LogPageId = LogPageId(0x05);
    /// Device Self-test.
    pub const DEVICE_SELF_TEST: LogPageId = LogPageId(0x06);
    /// Telemetry Host-Initiated.
    pub const TELEMETRY_HOST: LogPageId = LogPageId(0x07);
    /// Telemetry Controller-Initiated.
    pub const TELEMETRY_CONTROLLER: LogPageId = LogPageId(0x08);
    /// Endurance Group Information.
    pub const ENDURANCE_GROUP: LogPageId = LogPageId(0x09);
    /// Asymmetric Namespace Access.
    pub const ANA: LogPageId = LogPageId(0x0C);
    /// Persistent Event Log.
    pub const PERSISTENT_EVENT: LogPageId = LogPageId(0x0D);
    /// Discovery (discovery controllers only).
    pub const DISCOVERY: LogPageId = LogPageId(0x70);
    /// Reservation Notification.
    pub const RESERVATION_NOTIFICATION: LogPageId = LogPageId(0x80);
    /// Sanitize Status.
    pub const SANITIZE_STATUS: LogPageId = LogPageId(0x81);
}

/// Error Information log entry, 64 bytes (NVMe Base 2.0, "Error Information Log Entry").
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ErrorLogEntry {
    /// Error Count: unique, incrementing identifier of this error (0: entry invalid).
    pub error_count: U64,
    /// Submission Queue ID of the failed command.
    pub sqid: U16,
    /// Command ID of the failed command.
    pub cid: U16,
    /// Status field of the completion (bit 0 is the phase tag).
    pub status: U16,
    /// Parameter Error Location: byte (bits 7:0) and bit (bits 10:8) in the SQE.
    pub parameter_error_location: U16,
    /// First LBA that experienced the error.
    pub lba: U64,
    /// Namespace of the error.
    pub nsid: U32,
    /// Vendor Specific Information Available.
    pub vendor_specific: u8,
    /// Transport Type.
    pub trtype: u8,
    /// Reserved.
    pub reserved30: [u8; 2],
    /// Command Specific Information.
    pub command_specific: U64,
    /// Transport Type Specific Information.
    pub transport_specific: U16,
    /// Reserved.
    pub reserved42: [u8; 22],
}

const _: () = assert!(size_of::<ErrorLogEntry>() == 64);

/// SMART / Health Information log page, 512 bytes (NVMe Base 2.0, "SMART / Health Information
/// Log"). The counters are 128-bit little-endian values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SmartLog {
    /// Critical Warning bits.
    pub critical_warning: u8,
    /// Composite Temperature, kelvin.
    pub composite_temperature: U16,
    /// Available Spare, percent.
    pub available_spare: u8,
    /// Available Spare Threshold, percent.
    pub available_spare_threshold: u8,
    /// Percentage Used.
    pub percentage_used: u8,
    /// Endurance Group Critical Warning Summary.
    pub endurance_group_warning: u8,
    /// Reserved.
    pub reserved7: [u8; 25],
    /// Data Units Read, in thousands of 512-byte units (rounded up).
    pub data_units_read: U128,
    /// Data Units Written, in thousands of 512-byte units (rounded up).
    pub data_units_written: U128,
    /// Host Read Commands completed.
    pub host_read_commands: U128,
    /// Host Write Commands completed.
    pub host_write_commands: U128,
    /// Controller Busy Time, minutes.
    pub controller_busy_time: U128,
    /// Power Cycles.
    pub power_cycles: U128,
    /// Power On Hours.
    pub power_on_hours: U128,
    /// Unsafe Shutdowns.
    pub unsafe_shutdowns: U128,
    /// Media and Data Integrity Errors.
    pub media_errors: U128,
    /// Number of Error Information Log Entries over the controller's life.
    pub error_log_entries: U128,
    /// Warning Composite Temperature Time, minutes.
    pub warning_temperature_time: U32,
    /// Critical Composite Temperature Time, minutes.
    pub critical_temperature_time: U32,
    /// Temperature Sensors 1 to 8, kelvin.
    pub temperature_sensors: [U16; 8],
    /// Thermal Management Temperature 1 Transition Count.
    pub tmt1_transitions: U32,
    /// Thermal Management Temperature 2 Transition Count.
    pub tmt2_transitions: U32,
    /// Total Time For Thermal Management Temperature 1, seconds.
    pub tmt1_time: U32,
    /// Total Time For Thermal Management Temperature 2, seconds.
    pub tmt2_time: U32,
    /// Reserved.
    pub reserved232: [u8; 280],
}

const _: () = assert!(size_of::<SmartLog>() == 512);

/// Firmware Slot Information log page, 512 bytes (NVMe Base 2.0, "Firmware Slot Information Log").
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct FirmwareSlotLog {
    /// Active Firmware Info: active slot in bits 2:0, next slot in bits 6:4.
    pub afi: u8,
    /// Reserved.
    pub reserved1: [u8; 7],
    /// Firmware Revision for slots 1 to 7 (ASCII, space padded; zero if empty).
    pub frs: [[u8; 8]; 7],
    /// Reserved.
    pub reserved64: [u8; 448],
}

const _: () = assert!(size_of::<FirmwareSlotLog>() == 512);

/// Changed Namespace List log page: up to 1024 NSIDs, zero-terminated; an entry of
/// 0xFFFFFFFF first means more than 1024 changed (NVMe Base 2.0, "Changed Namespace List Log").
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ChangedNamespaceList {
    /// Changed NSIDs.
    pub nsids: [U32; 1024],
}

const _: () = assert!(size_of::<ChangedNamespaceList>() == 4096);

/// Commands Supported and Effects log page, 4096 bytes (NVMe Base 2.0, "Commands Supported and
/// Effects Log"), indexed by opcode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct CommandEffectsLog {
    /// Admin Command Supported entries.
    pub admin: [U32; 256],
    /// I/O Command Supported entries.
    pub io: [U32; 256],
    /// Reserved.
    pub reserved2048: [u8; 2048],
}

const _: () = assert!(size_of::<CommandEffectsLog>() == 4096);

/// Bits of a Commands Supported and Effects entry (NVMe Base 2.0, "Commands Supported and Effects
/// Data Structure").
pub mod effects {
    /// CSUPP: command supported.
    pub const CSUPP: u32 = 1 << 0;
    /// LBCC: logical block content change.
    pub const LBCC: u32 = 1 << 1;
    /// NCC: namespace capability change.
    pub const NCC: u32 = 1 << 2;
    /// NIC: namespace inventory change.
    pub const NIC: u32 = 1 << 3;
    /// CCC: controller capability change.
    pub const CCC: u32 = 1 << 4;
}

/// Size of the Discovery log page header and of each entry.
pub const DISCOVERY_RECORD_SIZE: usize = 1024;

/// Discovery log page header, 1024 bytes; entries follow at 1024 (NVMe-oF 1.1, "Discovery Log
/// Page").
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DiscoveryLogHeader {
    /// Generation Counter: changes whenever the log changes.
    pub genctr: U64,
    /// Number of Records.
    pub numrec: U64,
    /// Record Format (0).
    pub recfmt: U16,
    /// Reserved.
    pub reserved18: [u8; 1006],
}

const _: () = assert!(size_of::<DiscoveryLogHeader>() == DISCOVERY_RECORD_SIZE);

/// Discovery Log Page Entry, 1024 bytes (NVMe-oF 1.1, "Discovery Log Page Entry").
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DiscoveryLogEntry {
    /// Transport Type (see [`discovery::TRTYPE_TCP`]).
    pub trtype: u8,
    /// Address Family.
    pub adrfam: u8,
    /// Subsystem Type.
    pub subtype: u8,
    /// Transport Requirements.
    pub treq: u8,
    /// Port ID.
    pub portid: U16,
    /// Controller ID (0xFFFF: dynamic).
    pub cntlid: U16,
    /// Admin Max SQ Size.
    pub asqsz: U16,
    /// Entry Flags.
    pub eflags: U16,
    /// Reserved.
    pub reserved12: [u8; 20],
    /// Transport Service Identifier (TCP: port number as ASCII, space padded).
    pub trsvcid: [u8; 32],
    /// Reserved.
    pub reserved64: [u8; 192],
    /// NVM Subsystem Qualified Name.
    pub subnqn: [u8; 256],
    /// Transport Address (TCP: IP address as ASCII, space padded).
    pub traddr: [u8; 256],
    /// Transport Specific Address Subtype (TCP: SECTYPE in byte 0).
    pub tsas: [u8; 256],
}

const _: () = assert!(size_of::<DiscoveryLogEntry>() == DISCOVERY_RECORD_SIZE);

/// Values for Discovery log entry fields (NVMe-oF 1.1, "Discovery Log Page Entry"; NVMe/TCP TSAS).
pub mod discovery {
    /// TRTYPE: RDMA.
    pub const TRTYPE_RDMA: u8 = 1;
    /// TRTYPE: Fibre Channel.
    pub const TRTYPE_FC: u8 = 2;
    /// TRTYPE: TCP.
    pub const TRTYPE_TCP: u8 = 3;
    /// ADRFAM: IPv4.
    pub const ADRFAM_IPV4: u8 = 1;
    /// ADRFAM: IPv6.
    pub const ADRFAM_IPV6: u8 = 2;
    /// SUBTYPE: a referral to another discovery service.
    pub const SUBTYPE_DISCOVERY_REFERRAL: u8 = 1;
    /// SUBTYPE: an NVM subsystem.
    pub const SUBTYPE_NVME: u8 = 2;
    /// SUBTYPE: the current discovery subsystem.
    pub const SUBTYPE_CURRENT_DISCOVERY: u8 = 3;
    /// TREQ: secure channel requirement not specified.
    pub const TREQ_NOT_SPECIFIED: u8 = 0;
    /// TREQ: secure channel required.
    pub const TREQ_REQUIRED: u8 = 1;
    /// TREQ: secure channel not required.
    pub const TREQ_NOT_REQUIRED: u8 = 2;
    /// TREQ bit: SQ flow control disable supported.
    pub const TREQ_DISABLE_SQFLOW: u8 = 1 << 2;
    /// TCP TSAS SECTYPE: no security.
    pub const TCP_SECTYPE_NONE: u8 = 0;
    /// The well-known discovery subsystem NQN.
    pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";
}

macro_rules! zeroed_ctor {
    ($($t:ty),*) => {$(
        impl $t {
            /// An all-zero page to fill in.
            pub fn zeroed() -> Self {
                zerocopy::FromZeros::new_zeroed()
            }
        }
    )*};
}

zeroed_ctor!(
    ErrorLogEntry,
    SmartLog,
    FirmwareSlotLog,
    ChangedNamespaceList,
    CommandEffectsLog,
    DiscoveryLogHeader,
    DiscoveryLogEntry
);

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn log_layouts() {
        assert_eq!(offset_of!(ErrorLogEntry, status), 12);
        assert_eq!(offset_of!(ErrorLogEntry, lba), 16);
        assert_eq!(offset_of!(ErrorLogEntry, nsid), 24);
        assert_eq!(offset_of!(ErrorLogEntry, trtype), 29);
        assert_eq!(offset_of!(ErrorLogEntry, command_specific), 32);
        assert_eq!(offset_of!(SmartLog, composite_temperature), 1);
        assert_eq!(offset_of!(SmartLog, available_spare), 3);
        assert_eq!(offset_of!(SmartLog, data_units_read), 32);
        assert_eq!(offset_of!(SmartLog, data_units_written), 48);
        assert_eq!(offset_of!(SmartLog, host_read_commands), 64);
        assert_eq!(offset_of!(SmartLog, host_write_commands), 80);
        assert_eq!(offset_of!(SmartLog, power_on_hours), 128);
        assert_eq!(offset_of!(SmartLog, error_log_entries), 176);
        assert_eq!(offset_of!(SmartLog, warning_temperature_time), 192);
        assert_eq!(offset_of!(SmartLog, temperature_sensors), 200);
        assert_eq!(offset_of!(SmartLog, tmt2_time), 228);
        assert_eq!(offset_of!(FirmwareSlotLog, frs), 8);
        assert_eq!(offset_of!(CommandEffectsLog, io), 1024);
        assert_eq!(offset_of!(DiscoveryLogHeader, recfmt), 16);
        assert_eq!(offset_of!(DiscoveryLogEntry, portid), 4);
        assert_eq!(offset_of!(DiscoveryLogEntry, cntlid), 6);
        assert_eq!(offset_of!(DiscoveryLogEntry, asqsz), 8);
        assert_eq!(offset_of!(DiscoveryLogEntry, trsvcid), 32);
        assert_eq!(offset_of!(DiscoveryLogEntry, subnqn), 256);
        assert_eq!(offset_of!(DiscoveryLogEntry, traddr), 512);
        assert_eq!(offset_of!(DiscoveryLogEntry, tsas), 768);
    }

    #[test]
    fn smart_counters_are_128_bit_le() {
        let mut log = SmartLog::zeroed();
        log.data_units_read = U128::new(u128::from(u64::MAX) + 2);
        let bytes = log.as_bytes();
        assert_eq!(&bytes[32..41], &[1, 0, 0, 0, 0, 0, 0, 0, 1]);
        log.composite_temperature = U16::new(0x0136);
        assert_eq!(&log.as_bytes()[1..3], &[0x36, 0x01]);
    }
}
