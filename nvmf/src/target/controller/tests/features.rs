//! Get / Set Features.

use std::sync::atomic::Ordering;

use super::*;

const INVALID: Status = Status::INVALID_FIELD.with_dnr();

fn get(
    f: &Fixture,
    ctrl: &ControllerShared,
    fid: u8,
    sel: u8,
    cdw11: u32,
) -> Result<(u32, Option<Vec<u8>>), Status> {
    let sqe = admin_sqe(
        op::GET_FEATURES,
        0,
        u32::from(fid) | (u32::from(sel) << 8),
        cdw11,
        4096,
    );
    let (status, dw0, data) = done(f.run_on(ctrl, &sqe));
    if status.is_success() {
        Ok((dw0, data))
    } else {
        Err(status)
    }
}

fn get0(f: &Fixture, fid: u8) -> u32 {
    get(f, &f.ctrl, fid, 0, 0).unwrap().0
}

fn set_ns(
    f: &Fixture,
    ctrl: &ControllerShared,
    nsid: u32,
    fid: u8,
    save: bool,
    cdw11: u32,
) -> Result<u32, Status> {
    let sqe = admin_sqe(
        op::SET_FEATURES,
        nsid,
        u32::from(fid) | (u32::from(save) << 31),
        cdw11,
        0,
    );
    let (status, dw0, data) = done(f.run_on(ctrl, &sqe));
    assert!(data.is_none());
    if status.is_success() {
        Ok(dw0)
    } else {
        Err(status)
    }
}

fn set(f: &Fixture, fid: u8, cdw11: u32) -> Result<u32, Status> {
    set_ns(f, &f.ctrl, 0, fid, false, cdw11)
}

#[test]
fn number_of_queues() {
    let f = Fixture::new();
    enable(&f, &f.ctrl);
    // Before any Set: the most the controller would grant (127 queues, 0's based 126).
    assert_eq!(get0(&f, 0x07), 126 | (126 << 16));
    // What Linux asks for with 2 vCPUs: 2 queues, 0's based 1.
    assert_eq!(set(&f, 0x07, 0x0001_0001), Ok(0x0001_0001));
    assert_eq!(get0(&f, 0x07), 0x0001_0001);
    assert_eq!(set(&f, 0x07, 0x0004_0002), Ok(0x0004_0002));
    // Clamped to the transport's limit.
    assert_eq!(set(&f, 0x07, 0x00FF_00FF), Ok(126 | (126 << 16)));
    // 65535 is invalid (NVMe Base 2.0 section 5.27.1.7).
    assert_eq!(set(&f, 0x07, 0xFFFF_0000), Err(INVALID));
    assert_eq!(set(&f, 0x07, 0x0000_FFFF), Err(INVALID));
    // Once an I/O queue exists: Command Sequence Error.
    f.ctrl.state().io_queues.insert(1);
    assert_eq!(
        set(&f, 0x07, 0x0001_0001),
        Err(Status::COMMAND_SEQUENCE_ERROR.with_dnr())
    );
    assert_eq!(get0(&f, 0x07), 126 | (126 << 16));
    // A discovery controller has no I/O queues.
    let disc = f.discovery();
    enable(&f, &disc);
    assert_eq!(set_ns(&f, &disc, 0, 0x07, false, 1), Err(INVALID));
    assert_eq!(get(&f, &disc, 0x07, 0, 0), Err(INVALID));
}

#[test]
fn keep_alive_timer_and_async_event_configuration() {
    let f = Fixture::new();
    enable(&f, &f.ctrl);
    // KATO rounds up to the 1 s granularity (KAS = 10).
    assert_eq!(set(&f, 0x0F, 4500), Ok(0));
    assert_eq!(f.ctrl.kato_ms.load(Ordering::Relaxed), 5000);
    assert_eq!(get0(&f, 0x0F), 5000);
    assert_eq!(set(&f, 0x0F, u32::MAX), Ok(0));
    assert_eq!(get0(&f, 0x0F), u32::MAX);
    assert_eq!(set(&f, 0x0F, 0), Ok(0));
    assert_eq!(get0(&f, 0x0F), 0);
    // Only namespace attribute notices stay enabled.
    assert_eq!(set(&f, 0x0B, u32::MAX), Ok(0));
    assert_eq!(get0(&f, 0x0B), 1 << 8);
    // The discovery controller supports both, and reports no events.
    let disc = f.discovery();
    enable(&f, &disc);
    assert_eq!(set_ns(&f, &disc, 0, 0x0B, false, 0x8000_0100), Ok(0));
    assert_eq!(get(&f, &disc, 0x0B, 0, 0), Ok((0, None)));
    assert_eq!(set_ns(&f, &disc, 0, 0x0F, false, 10_000), Ok(0));
    assert_eq!(disc.kato_ms.load(Ordering::Relaxed), 10_000);
    for fid in [0x01, 0x02, 0x04, 0x06, 0x81] {
        assert_eq!(get(&f, &disc, fid, 0, 1), Err(INVALID), "fid {fid:#x}");
    }
}

#[test]
fn select_save_and_capabilities() {
    let f = Fixture::new();
    enable(&f, &f.ctrl);
    assert_eq!(set(&f, 0x01, 0x0302_0103), Ok(0));
    assert_eq!(get0(&f, 0x01), 0x0302_0103);
    // Default and saved values (nothing is saveable, so saved = default).
    assert_eq!(get(&f, &f.ctrl, 0x01, 1, 0), Ok((0, None)));
    assert_eq!(get(&f, &f.ctrl, 0x01, 2, 0), Ok((0, None)));
    // Supported capabilities: changeable, not saveable, not namespace specific.
    assert_eq!(get(&f, &f.ctrl, 0x01, 3, 0), Ok((0b100, None)));
    assert_eq!(get(&f, &f.ctrl, 0x06, 3, 0), Ok((0, None)));
    assert_eq!(get(&f, &f.ctrl, 0x01, 4, 0), Err(INVALID));
    // SV: not saveable.
    assert_eq!(
        set_ns(&f, &f.ctrl, 0, 0x0B, true, 0),
        Err(Status::FEATURE_ID_NOT_SAVEABLE.with_dnr())
    );
    // A namespace given for a controller-wide feature.
    assert_eq!(
        set_ns(&f, &f.ctrl, 1, 0x0B, false, 0),
        Err(Status::FEATURE_NOT_NAMESPACE_SPECIFIC.with_dnr())
    );
    assert_eq!(set_ns(&f, &f.ctrl, 0xFFFF_FFFF, 0x0B, false, 0), Ok(0));
    // Unknown or unsupported features.
    for fid in [0x00, 0x03, 0x0C, 0x0D, 0x0E, 0x10, 0x80, 0x82, 0xC0, 0xFF] {
        assert_eq!(get(&f, &f.ctrl, fid, 0, 0), Err(INVALID), "get {fid:#x}");
        assert_eq!(set(&f, fid, 0), Err(INVALID), "set {fid:#x}");
    }
}

#[test]
fn volatile_write_cache_and_host_identifier() {
    let f = Fixture::new();
    enable(&f, &f.ctrl);
    assert_eq!(get0(&f, 0x06), 1);
    assert_eq!(set(&f, 0x06, 1), Ok(0));
    assert_eq!(
        set(&f, 0x06, 0),
        Err(Status::FEATURE_NOT_CHANGEABLE.with_dnr())
    );
    assert_eq!(get0(&f, 0x06), 1);
    // The 128-bit host identifier from Connect, as data.
    assert_eq!(get(&f, &f.ctrl, 0x81, 0, 1), Ok((0, Some(HOSTID.to_vec()))));
    assert_eq!(get(&f, &f.ctrl, 0x81, 0, 0), Err(INVALID));
    assert_eq!(
        set(&f, 0x81, 1),
        Err(Status::COMMAND_SEQUENCE_ERROR.with_dnr())
    );
    // Its 16 bytes must fit the SGL.
    let mut sqe = admin_sqe(op::GET_FEATURES, 0, 0x81, 1, 8);
    sqe.dptr = SglDescriptor::transport(8);
    assert_eq!(
        status_of(f.run(&sqe)),
        Status::DATA_SGL_LENGTH_INVALID.with_dnr()
    );
}

#[test]
fn temperature_power_and_others() {
    let f = Fixture::new();
    enable(&f, &f.ctrl);
    // Over threshold defaults to WCTEMP, under to 0; THSEL in bits 21:20.
    assert_eq!(get0(&f, 0x04), 343);
    assert_eq!(get(&f, &f.ctrl, 0x04, 0, 1 << 20).unwrap().0, 1 << 20);
    assert_eq!(set(&f, 0x04, (1 << 20) | 260), Ok(0));
    assert_eq!(set(&f, 0x04, 350), Ok(0));
    assert_eq!(
        get(&f, &f.ctrl, 0x04, 0, 1 << 20).unwrap().0,
        (1 << 20) | 260
    );
    assert_eq!(get0(&f, 0x04), 350);
    assert_eq!(get(&f, &f.ctrl, 0x04, 1, 0).unwrap().0, 343);
    // Only the composite temperature (TMPSEL 0) and THSEL 00b / 01b exist.
    assert_eq!(set(&f, 0x04, 1 << 16), Err(INVALID));
    assert_eq!(set(&f, 0x04, 2 << 20), Err(INVALID));
    // One power state.
    assert_eq!(set(&f, 0x02, 1), Err(INVALID));
    assert_eq!(set(&f, 0x02, 0x20), Ok(0));
    assert_eq!(get0(&f, 0x02), 0x20);
    // Error Recovery without DULBE; Write Atomicity; Interrupt Coalescing / Vector.
    assert_eq!(set(&f, 0x05, 1 << 16), Err(INVALID));
    assert_eq!(set_ns(&f, &f.ctrl, 1, 0x05, false, 30), Ok(0));
    assert_eq!(get0(&f, 0x05), 30);
    assert_eq!(set(&f, 0x0A, 1), Ok(0));
    assert_eq!(get0(&f, 0x0A), 1);
    assert_eq!(set(&f, 0x08, 0x0A05), Ok(0));
    assert_eq!(get0(&f, 0x08), 0x0A05);
    assert_eq!(get(&f, &f.ctrl, 0x09, 0, 3).unwrap().0, 3);
}
