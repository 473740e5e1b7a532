//! Feature identifiers for Get / Set Features (NVMe Base 2.0, Set Features,
//! "Feature Identifiers").

/// A Feature Identifier (Get/Set Features CDW10 bits 7:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FeatureId(pub u8);

impl FeatureId {
    /// Arbitration.
    pub const ARBITRATION: FeatureId = FeatureId(0x01);
    /// Power Management.
    pub const POWER_MANAGEMENT: FeatureId = FeatureId(0x02);
    /// LBA Range Type.
    pub const LBA_RANGE_TYPE: FeatureId = FeatureId(0x03);
    /// Temperature Threshold.
    pub const TEMPERATURE_THRESHOLD: FeatureId = FeatureId(0x04);
    /// Error Recovery.
    pub const ERROR_RECOVERY: FeatureId = FeatureId(0x05);
    /// Volatile Write Cache.
    pub const VOLATILE_WRITE_CACHE: FeatureId = FeatureId(0x06);
    /// Number of Queues: CDW11/DW0 hold NSQR (bits 15:0) and NCQR (bits 31:16), 0's based.
    pub const NUMBER_OF_QUEUES: FeatureId = FeatureId(0x07);
    /// Interrupt Coalescing.
    pub const INTERRUPT_COALESCING: FeatureId = FeatureId(0x08);
    /// Interrupt Vector Configuration.
    pub const INTERRUPT_VECTOR_CONFIG: FeatureId = FeatureId(0x09);
    /// Write Atomicity Normal.
    pub const WRITE_ATOMICITY: FeatureId = FeatureId(0x0A);
    /// Asynchronous Event Configuration.
    pub const ASYNC_EVENT_CONFIG: FeatureId = FeatureId(0x0B);
    /// Autonomous Power State Transition.
    pub const AUTONOMOUS_POWER_STATE_TRANSITION: FeatureId = FeatureId(0x0C);
    /// Host Memory Buffer.
    pub const HOST_MEMORY_BUFFER: FeatureId = FeatureId(0x0D);
    /// Timestamp.
    pub const TIMESTAMP: FeatureId = FeatureId(0x0E);
    /// Keep Alive Timer: CDW11 holds KATO in milliseconds.
    pub const KEEP_ALIVE_TIMER: FeatureId = FeatureId(0x0F);
    /// Host Controlled Thermal Management.
    pub const HOST_CONTROLLED_THERMAL_MGMT: FeatureId = FeatureId(0x10);
    /// Non-Operational Power State Config.
    pub const NON_OPERATIONAL_POWER_STATE: FeatureId = FeatureId(0x11);
    /// Software Progress Marker.
    pub const SOFTWARE_PROGRESS_MARKER: FeatureId = FeatureId(0x80);
    /// Host Identifier (fabrics: read-only, set by Connect).
    pub const HOST_IDENTIFIER: FeatureId = FeatureId(0x81);
    /// Reservation Notification Mask.
    pub const RESERVATION_NOTIFICATION_MASK: FeatureId = FeatureId(0x82);
    /// Reservation Persistence.
    pub const RESERVATION_PERSISTENCE: FeatureId = FeatureId(0x83);
}

/// Get Features Select field values (CDW10 bits 10:8, NVMe Base 2.0 Get Features).
pub mod select {
    /// Current value.
    pub const CURRENT: u8 = 0b000;
    /// Default value.
    pub const DEFAULT: u8 = 0b001;
    /// Saved value.
    pub const SAVED: u8 = 0b010;
    /// Supported capabilities.
    pub const SUPPORTED_CAPABILITIES: u8 = 0b011;
}
