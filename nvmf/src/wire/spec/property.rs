//! Controller properties reached through Property Get / Set (NVMe-oF 1.1 "Property
//! Definitions"; layouts in NVMe Base 2.0 "Controller Properties").

/// Controller Capabilities, 8 bytes.
pub const CAP: u32 = 0x00;
/// Version, 4 bytes.
pub const VS: u32 = 0x08;
/// Controller Configuration, 4 bytes.
pub const CC: u32 = 0x14;
/// Controller Status, 4 bytes.
pub const CSTS: u32 = 0x1C;
/// NVM Subsystem Reset, 4 bytes.
pub const NSSR: u32 = 0x20;

/// The size in bytes of the property at `offset`, or `None` if fabrics define no property
/// there (NVMe-oF 1.1 "Property Definitions": only CAP is 8 bytes).
pub fn size_of_property(offset: u32) -> Option<u8> {
    match offset {
        CAP => Some(8),
        VS | CC | CSTS | NSSR => Some(4),
        _ => None,
    }
}

fn get(value: u64, shift: u32, width: u32) -> u64 {
    (value >> shift) & ((1u64 << width) - 1)
}

fn set(value: u64, shift: u32, width: u32, field: u64) -> u64 {
    let mask = ((1u64 << width) - 1) << shift;
    (value & !mask) | ((field << shift) & mask)
}

fn narrow_u8(v: u64) -> u8 {
    u8::try_from(v).unwrap_or(u8::MAX)
}

/// CAP, Controller Capabilities (NVMe Base 2.0 "Offset 0h: CAP").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Cap(pub u64);

impl Cap {
    /// CSS bit: NVM command set supported.
    pub const CSS_NVM: u8 = 1 << 0;
    /// CSS bit: one or more I/O command sets supported (Identify CNS 1Ch).
    pub const CSS_IO_COMMAND_SETS: u8 = 1 << 6;
    /// CSS bit: only the admin command set (e.g. a discovery controller).
    pub const CSS_NO_IO: u8 = 1 << 7;

    /// MQES: maximum queue entries supported, 0's based.
    pub fn mqes(self) -> u16 {
        u16::try_from(get(self.0, 0, 16)).unwrap_or(u16::MAX)
    }
    /// Sets MQES (0's based).
    pub fn with_mqes(self, v: u16) -> Self {
        Self(set(self.0, 0, 16, u64::from(v)))
    }
    /// CQR: contiguous queues required.
    pub fn cqr(self) -> bool {
        get(self.0, 16, 1) != 0
    }
    /// Sets CQR.
    pub fn with_cqr(self, v: bool) -> Self {
        Self(set(self.0, 16, 1, u64::from(v)))
    }
    /// TO: worst-case time to become ready, in 500 ms units.
    pub fn to(self) -> u8 {
        narrow_u8(get(self.0, 24, 8))
    }
    /// Sets TO.
    pub fn with_to(self, v: u8) -> Self {
        Self(set(self.0, 24, 8, u64::from(v)))
    }
    /// DSTRD: doorbell stride (fabrics: 0).
    pub fn dstrd(self) -> u8 {
        narrow_u8(get(self.0, 32, 4))
    }
    /// CSS: command sets supported (see the `CSS_*` constants).
    pub fn css(self) -> u8 {
        narrow_u8(get(self.0, 37, 8))
    }
    /// Sets CSS.
    pub fn with_css(self, v: u8) -> Self {
        Self(set(self.0, 37, 8, u64::from(v)))
    }
    /// MPSMIN: minimum memory page size is 2^(12 + MPSMIN).
    pub fn mpsmin(self) -> u8 {
        narrow_u8(get(self.0, 48, 4))
    }
    /// Sets MPSMIN.
    pub fn with_mpsmin(self, v: u8) -> Self {
        Self(set(self.0, 48, 4, u64::from(v)))
    }
    /// MPSMAX: maximum memory page size is 2^(12 + MPSMAX).
    pub fn mpsmax(self) -> u8 {
        narrow_u8(get(self.0, 52, 4))
    }
    /// Sets MPSMAX.
    pub fn with_mpsmax(self, v: u8) -> Self {
        Self(set(self.0, 52, 4, u64::from(v)))
    }
}

/// VS, Version (NVMe Base 2.0 "Offset 8h: VS").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Vs(pub u32);

impl Vs {
    /// NVMe 1.3.0.
    pub const V1_3: Vs = Vs::new(1, 3, 0);
    /// NVMe 1.4.0.
    pub const V1_4: Vs = Vs::new(1, 4, 0);
    /// NVMe 2.0.0.
    pub const V2_0: Vs = Vs::new(2, 0, 0);

    /// A version from its major, minor and tertiary numbers.
    pub const fn new(major: u16, minor: u8, tertiary: u8) -> Self {
        Self(((major as u32) << 16) | ((minor as u32) << 8) | (tertiary as u32))
    }
    /// Major version.
    pub fn major(self) -> u16 {
        let [_, _, lo, hi] = self.0.to_le_bytes();
        u16::from_le_bytes([lo, hi])
    }
    /// Minor version.
    pub fn minor(self) -> u8 {
        self.0.to_le_bytes()[1]
    }
    /// Tertiary version.
    pub fn tertiary(self) -> u8 {
        self.0.to_le_bytes()[0]
    }
}

/// CC.SHN values: shutdown notification.
pub mod shn {
    /// No notification.
    pub const NONE: u8 = 0b00;
    /// Normal shutdown.
    pub const NORMAL: u8 = 0b01;
    /// Abrupt shutdown.
    pub const ABRUPT: u8 = 0b10;
}

/// CSTS.SHST values: shutdown status.
pub mod shst {
    /// Normal operation.
    pub const NORMAL: u8 = 0b00;
    /// Shutdown processing occurring.
    pub const OCCURRING: u8 = 0b01;
    /// Shutdown processing complete.
    pub const COMPLETE: u8 = 0b10;
}

/// CC, Controller Configuration (NVMe Base 2.0 "Offset 14h: CC").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Cc(pub u32);

impl Cc {
    fn get(self, shift: u32, width: u32) -> u8 {
        narrow_u8(get(u64::from(self.0), shift, width))
    }
    fn set(self, shift: u32, width: u32, v: u8) -> Self {
        let raw = set(u64::from(self.0), shift, width, u64::from(v));
        Self(u32::try_from(raw).unwrap_or(self.0))
    }
    /// EN: enable.
    pub fn en(self) -> bool {
        self.get(0, 1) != 0
    }
    /// Sets EN.
    pub fn with_en(self, v: bool) -> Self {
        self.set(0, 1, u8::from(v))
    }
    /// CSS: I/O command set selected.
    pub fn css(self) -> u8 {
        self.get(4, 3)
    }
    /// MPS: memory page size is 2^(12 + MPS).
    pub fn mps(self) -> u8 {
        self.get(7, 4)
    }
    /// AMS: arbitration mechanism selected.
    pub fn ams(self) -> u8 {
        self.get(11, 3)
    }
    /// SHN: shutdown notification (see [`shn`]).
    pub fn shn(self) -> u8 {
        self.get(14, 2)
    }
    /// Sets SHN.
    pub fn with_shn(self, v: u8) -> Self {
        self.set(14, 2, v)
    }
    /// IOSQES: I/O submission queue entry size is 2^IOSQES (6 for 64 bytes).
    pub fn iosqes(self) -> u8 {
        self.get(16, 4)
    }
    /// Sets IOSQES.
    pub fn with_iosqes(self, v: u8) -> Self {
        self.set(16, 4, v)
    }
    /// IOCQES: I/O completion queue entry size is 2^IOCQES (4 for 16 bytes).
    pub fn iocqes(self) -> u8 {
        self.get(20, 4)
    }
    /// Sets IOCQES.
    pub fn with_iocqes(self, v: u8) -> Self {
        self.set(20, 4, v)
    }
}

/// CSTS, Controller Status (NVMe Base 2.0 "Offset 1Ch: CSTS").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Csts(pub u32);

impl Csts {
    fn get(self, shift: u32, width: u32) -> u8 {
        narrow_u8(get(u64::from(self.0), shift, width))
    }
    fn set(self, shift: u32, width: u32, v: u8) -> Self {
        let raw = set(u64::from(self.0), shift, width, u64::from(v));
        Self(u32::try_from(raw).unwrap_or(self.0))
    }
    /// RDY: ready.
    pub fn rdy(self) -> bool {
        self.get(0, 1) != 0
    }
    /// Sets RDY.
    pub fn with_rdy(self, v: bool) -> Self {
        self.set(0, 1, u8::from(v))
    }
    /// CFS: controller fatal status.
    pub fn cfs(self) -> bool {
        self.get(1, 1) != 0
    }
    /// Sets CFS.
    pub fn with_cfs(self, v: bool) -> Self {
        self.set(1, 1, u8::from(v))
    }
    /// SHST: shutdown status (see [`shst`]).
    pub fn shst(self) -> u8 {
        self.get(2, 2)
    }
    /// Sets SHST.
    pub fn with_shst(self, v: u8) -> Self {
        self.set(2, 2, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_fields() {
        let cap = Cap::default()
            .with_mqes(127)
            .with_cqr(true)
            .with_to(30)
            .with_css(Cap::CSS_NVM)
            .with_mpsmin(0)
            .with_mpsmax(4);
        assert_eq!(cap.0, 127 | (1 << 16) | (30 << 24) | (1 << 37) | (4 << 52));
        assert_eq!(cap.mqes(), 127);
        assert!(cap.cqr());
        assert_eq!(cap.to(), 30);
        assert_eq!(cap.css(), Cap::CSS_NVM);
        assert_eq!(cap.mpsmax(), 4);
        assert_eq!(cap.dstrd(), 0);
        assert_eq!(Cap(u64::MAX).css(), 0xFF);
    }

    #[test]
    fn cc_csts_vs_fields() {
        // What Linux writes to enable a fabrics controller: EN, IOSQES=6, IOCQES=4.
        let cc = Cc(0x0046_0001);
        assert!(cc.en());
        assert_eq!(cc.iosqes(), 6);
        assert_eq!(cc.iocqes(), 4);
        assert_eq!(cc.shn(), shn::NONE);
        assert_eq!(
            Cc::default().with_en(true).with_iosqes(6).with_iocqes(4),
            cc
        );
        assert_eq!(cc.with_shn(shn::NORMAL).0, 0x0046_4001);
        let csts = Csts::default().with_rdy(true).with_shst(shst::COMPLETE);
        assert_eq!(csts.0, 0b1001);
        assert!(csts.rdy() && !csts.cfs());
        assert_eq!(csts.shst(), shst::COMPLETE);
        assert_eq!(Vs::V1_4.0, 0x0001_0400);
        assert_eq!(
            (Vs::V2_0.major(), Vs::V2_0.minor(), Vs::V1_3.minor()),
            (2, 0, 3)
        );
        assert_eq!(Vs::new(1, 2, 1).tertiary(), 1);
        assert_eq!(size_of_property(CAP), Some(8));
        assert_eq!(size_of_property(CSTS), Some(4));
        assert_eq!(size_of_property(0x04), None);
    }
}
