//! Property Get / Set: CAP, VS, CC, CSTS and the enable / shutdown / reset sequences.

use super::*;
use crate::target::controller::PropertyEffect;
use crate::wire::spec::property::{Cap, Csts, Vs};

fn get(f: &Fixture, ctrl: &ControllerShared, offset: u32, attrib: u8) -> Result<u64, Status> {
    match f.run_on(ctrl, &property_get(offset, attrib)) {
        AdminOutcome::Property {
            status,
            value,
            effect,
        } => {
            assert_eq!(effect, PropertyEffect::None);
            if status.is_success() {
                Ok(value)
            } else {
                Err(status)
            }
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn set(
    f: &Fixture,
    ctrl: &ControllerShared,
    offset: u32,
    attrib: u8,
    value: u64,
) -> Result<PropertyEffect, Status> {
    match f.run_on(ctrl, &property_set(offset, attrib, value)) {
        AdminOutcome::Property { status, effect, .. } => {
            if status.is_success() {
                Ok(effect)
            } else {
                Err(status)
            }
        }
        other => panic!("unexpected {other:?}"),
    }
}

const INVALID: Status = Status::INVALID_FIELD.with_dnr();

#[test]
fn cap_and_vs() {
    let f = Fixture::new();
    let cap = Cap(get(&f, &f.ctrl, 0x00, 1).unwrap());
    assert_eq!(cap.mqes(), 127);
    assert!(cap.cqr());
    assert_eq!(cap.to(), 60);
    assert_eq!(cap.css(), Cap::CSS_NVM);
    assert_eq!((cap.dstrd(), cap.mpsmin(), cap.mpsmax()), (0, 0, 0));
    // The deeper of the admin and I/O queue depths.
    let mut f2 = Fixture::new();
    f2.transport.max_aq_depth = 256;
    assert_eq!(Cap(get(&f2, &f2.ctrl, 0x00, 1).unwrap()).mqes(), 255);

    assert_eq!(get(&f, &f.ctrl, 0x08, 0), Ok(u64::from(Vs::V1_4.0)));
    let disc = f.discovery();
    assert_eq!(get(&f, &disc, 0x08, 0), Ok(0x0001_0300));
    assert_eq!(Cap(get(&f, &disc, 0x00, 1).unwrap()).css(), Cap::CSS_NVM);
}

#[test]
fn property_sizes_and_offsets_are_checked() {
    let f = Fixture::new();
    // CAP is 8 bytes, VS / CC / CSTS 4 (NVMe-oF 1.1 Figure 14).
    assert_eq!(get(&f, &f.ctrl, 0x00, 0), Err(INVALID));
    assert_eq!(get(&f, &f.ctrl, 0x08, 1), Err(INVALID));
    assert_eq!(get(&f, &f.ctrl, 0x14, 1), Err(INVALID));
    // Reserved ATTRIB sizes, undefined offsets, the unsupported NSSR.
    assert_eq!(get(&f, &f.ctrl, 0x14, 2), Err(INVALID));
    assert_eq!(get(&f, &f.ctrl, 0x04, 0), Err(INVALID));
    assert_eq!(get(&f, &f.ctrl, 0x0C, 0), Err(INVALID));
    assert_eq!(get(&f, &f.ctrl, 0x20, 0), Err(INVALID));
    assert_eq!(get(&f, &f.ctrl, u32::MAX, 1), Err(INVALID));
    // Read-only properties, NSSR, and CC with the wrong size cannot be written.
    assert_eq!(set(&f, &f.ctrl, 0x00, 1, 0), Err(INVALID));
    assert_eq!(set(&f, &f.ctrl, 0x08, 0, 0x20000), Err(INVALID));
    assert_eq!(set(&f, &f.ctrl, 0x1C, 0, 1), Err(INVALID));
    assert_eq!(set(&f, &f.ctrl, 0x20, 0, 0x4E56_4D65), Err(INVALID));
    assert_eq!(set(&f, &f.ctrl, 0x14, 1, CC_LINUX_ENABLE), Err(INVALID));
    assert_eq!(f.ctrl.state().csts, 0);
    assert_eq!(f.ctrl.state().cc, 0);
}

#[test]
fn linux_enable_then_shutdown_sequence() {
    let f = Fixture::new();
    let c = &f.ctrl;
    // What the 6.1 host does (LINUX-HOST.md): disable, read CC and CAP, enable, poll CSTS.
    assert_eq!(set(&f, c, 0x14, 0, 0), Ok(PropertyEffect::None));
    assert_eq!(get(&f, c, 0x14, 0), Ok(0));
    assert_eq!(get(&f, c, 0x1C, 0), Ok(0));
    assert_eq!(
        set(&f, c, 0x14, 0, CC_LINUX_ENABLE),
        Ok(PropertyEffect::Enabled)
    );
    assert_eq!(get(&f, c, 0x14, 0), Ok(CC_LINUX_ENABLE));
    let csts = Csts(u32::try_from(get(&f, c, 0x1C, 0).unwrap()).unwrap());
    assert!(csts.rdy() && !csts.cfs());
    assert_eq!(csts.shst(), 0);
    // Writing the same CC again changes nothing.
    assert_eq!(
        set(&f, c, 0x14, 0, CC_LINUX_ENABLE),
        Ok(PropertyEffect::None)
    );
    // Normal shutdown notification: complete at once, RDY untouched.
    assert_eq!(
        set(&f, c, 0x14, 0, CC_LINUX_ENABLE | 1 << 14),
        Ok(PropertyEffect::Shutdown)
    );
    let csts = Csts(u32::try_from(get(&f, c, 0x1C, 0).unwrap()).unwrap());
    assert_eq!(csts.shst(), 0b10);
    assert!(csts.rdy());
    // Reset: CSTS back to 0, and the controller can be enabled again.
    assert_eq!(set(&f, c, 0x14, 0, 0), Ok(PropertyEffect::Reset));
    assert_eq!(get(&f, c, 0x1C, 0), Ok(0));
    assert_eq!(
        set(&f, c, 0x14, 0, CC_LINUX_ENABLE),
        Ok(PropertyEffect::Enabled)
    );
    // Abrupt shutdown too.
    assert_eq!(
        set(&f, c, 0x14, 0, CC_LINUX_ENABLE | 2 << 14),
        Ok(PropertyEffect::Shutdown)
    );
    assert_eq!(
        Csts(u32::try_from(get(&f, c, 0x1C, 0).unwrap()).unwrap()).shst(),
        0b10
    );
    // Withdrawing the notification without a reset returns to normal operation.
    assert_eq!(
        set(&f, c, 0x14, 0, CC_LINUX_ENABLE),
        Ok(PropertyEffect::None)
    );
    assert_eq!(get(&f, c, 0x1C, 0), Ok(1));
}

#[test]
fn enable_checks_entry_sizes_and_command_set() {
    let f = Fixture::new();
    let c = &f.ctrl;
    // I/O controllers need IOSQES = 6 and IOCQES = 4.
    assert_eq!(set(&f, c, 0x14, 0, 0x0000_0001), Err(INVALID));
    assert_eq!(set(&f, c, 0x14, 0, 0x0047_0001), Err(INVALID));
    assert_eq!(set(&f, c, 0x14, 0, 0x0056_0001), Err(INVALID));
    // CSS 111b (admin only: CAP.CSS bit 7 is not set), MPS 1, AMS 1.
    assert_eq!(
        set(&f, c, 0x14, 0, CC_LINUX_ENABLE | 0b111 << 4),
        Err(INVALID)
    );
    assert_eq!(set(&f, c, 0x14, 0, CC_LINUX_ENABLE | 1 << 7), Err(INVALID));
    assert_eq!(set(&f, c, 0x14, 0, CC_LINUX_ENABLE | 1 << 11), Err(INVALID));
    assert_eq!(
        c.state().csts,
        0,
        "a refused enable leaves the controller disabled"
    );
    // The discovery controller has no I/O queues: the entry sizes are not checked.
    let disc = f.discovery();
    assert_eq!(set(&f, &disc, 0x14, 0, 1), Ok(PropertyEffect::Enabled));
    // Reserved CC bits are dropped.
    assert_eq!(
        set(&f, c, 0x14, 0, CC_LINUX_ENABLE | 0xFF00_000E),
        Ok(PropertyEffect::Enabled)
    );
    assert_eq!(get(&f, c, 0x14, 0), Ok(CC_LINUX_ENABLE));
    // CSS, MPS and AMS cannot change while enabled; bits 63:32 of a 4-byte value are ignored.
    assert_eq!(set(&f, c, 0x14, 0, CC_LINUX_ENABLE | 1 << 7), Err(INVALID));
    assert_eq!(
        set(&f, c, 0x14, 0, CC_LINUX_ENABLE | 0xFFFF_FFFF << 32),
        Ok(PropertyEffect::None)
    );
}

#[test]
fn reset_returns_features_to_defaults() {
    let f = Fixture::new();
    enable(&f, &f.ctrl);
    {
        let mut st = f.ctrl.state();
        st.async_event_config = 1 << 8;
        st.ns_notice_masked = true;
        st.pending_events
            .push_back(crate::target::controller::AsyncEvent::NS_ATTR_CHANGED);
        st.num_queues = Some((1, 1));
    }
    assert_eq!(
        set(&f, &f.ctrl, 0x14, 0, 0x0046_0000),
        Ok(PropertyEffect::Reset)
    );
    let st = f.ctrl.state();
    assert_eq!(st.async_event_config, 0);
    assert!(st.pending_events.is_empty() && !st.ns_notice_masked);
    // Number of Queues is kept across a reset (NVMe Base 2.0 section 5.27.1.7).
    assert_eq!(st.num_queues, Some((1, 1)));
    assert_eq!(st.cc, 0x0046_0000);
}
