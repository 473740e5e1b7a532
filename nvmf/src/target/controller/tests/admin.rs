//! Admin command dispatch: readiness, opcodes, keep-alive, AER, Abort and `nvme_status_for`.

use std::time::Duration;

use shoal_bdev::{BdevError, IoType};

use super::*;
use crate::target::controller::{AsyncEvent, nvme_status_for, take_async_event};

#[test]
fn only_fabrics_commands_before_enable() {
    let f = Fixture::new();
    let seq = Status::COMMAND_SEQUENCE_ERROR.with_dnr();
    assert_eq!(status_of(f.run(&identify_sqe(1, 0, 0))), seq);
    assert_eq!(
        status_of(f.run(&admin_sqe(op::KEEP_ALIVE, 0, 0, 0, 0))),
        seq
    );
    // Property Get works before enabling.
    assert!(matches!(
        f.run(&property_get(0x1C, 0)),
        AdminOutcome::Property {
            status: Status::SUCCESS,
            ..
        }
    ));
    enable(&f, &f.ctrl);
    assert_eq!(
        done(f.run(&admin_sqe(op::KEEP_ALIVE, 0, 0, 0, 0))).0,
        Status::SUCCESS
    );
    // After a reset, commands are refused again.
    let _ = f.run(&property_set(0x14, 0, 0));
    assert_eq!(status_of(f.run(&identify_sqe(1, 0, 0))), seq);
}

#[test]
fn unsupported_opcodes() {
    let f = Fixture::new();
    enable(&f, &f.ctrl);
    let bad = Status::INVALID_OPCODE.with_dnr();
    // Create / delete I/O queues (replaced by Connect), Format NVM, Namespace Management,
    // vendor specific, Firmware Commit.
    for opc in [0x00, 0x01, 0x04, 0x05, 0x0D, 0x10, 0x80, 0xC0, 0xFF] {
        assert_eq!(
            status_of(f.run(&admin_sqe(Opcode(opc), 0, 0, 0, 4096))),
            bad,
            "opcode {opc:#x}"
        );
    }
    // A second Connect is a sequence error; authentication and Disconnect are not supported here.
    let connect = Sqe::new_fabrics(FabricsType::CONNECT, 3);
    assert_eq!(
        status_of(f.run(&connect)),
        Status::COMMAND_SEQUENCE_ERROR.with_dnr()
    );
    for fct in [
        FabricsType::AUTHENTICATION_SEND,
        FabricsType::DISCONNECT,
        FabricsType(0x7E),
    ] {
        assert_eq!(status_of(f.run(&Sqe::new_fabrics(fct, 3))), bad);
    }
    // Fused admin commands are invalid.
    let mut fused = identify_sqe(1, 0, 0);
    fused.flags |= 0b01;
    assert_eq!(status_of(f.run(&fused)), Status::INVALID_FIELD.with_dnr());
    // The discovery controller has no Abort.
    let disc = f.discovery();
    enable(&f, &disc);
    assert_eq!(
        status_of(f.run_on(&disc, &admin_sqe(op::ABORT, 0, 0x0007_0001, 0, 0))),
        bad
    );
}

#[test]
fn abort_aer_and_keep_alive() {
    let f = Fixture::new();
    enable(&f, &f.ctrl);
    assert_eq!(
        f.run(&admin_sqe(op::ABORT, 0, 0x0007_0001, 0, 0)),
        AdminOutcome::Abort { sqid: 1, cid: 7 }
    );
    assert_eq!(
        f.run(&admin_sqe(op::ASYNC_EVENT_REQUEST, 0, 0, 0, 0)),
        AdminOutcome::AsyncEventRequest
    );
    assert_eq!(take_async_event(&f.ctrl), None);
    f.ctrl
        .state()
        .pending_events
        .push_back(AsyncEvent::NS_ATTR_CHANGED);
    assert_eq!(take_async_event(&f.ctrl), Some(0x0004_0002));
    assert_eq!(take_async_event(&f.ctrl), None);

    // Keep Alive restarts the timer; other commands do not (no TBKAS).
    f.ctrl
        .kato_ms
        .store(30, std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(60));
    assert!(f.ctrl.keep_alive_expired());
    let _ = f.run(&identify_sqe(1, 0, 0));
    assert!(f.ctrl.keep_alive_expired());
    assert_eq!(
        done(f.run(&admin_sqe(op::KEEP_ALIVE, 0, 0, 0, 0))).0,
        Status::SUCCESS
    );
    assert!(!f.ctrl.keep_alive_expired());
}

#[test]
fn bdev_errors_map_to_nvme_statuses() {
    let io = || BdevError::Os(std::io::Error::from_raw_os_error(5));
    let cases = [
        (
            BdevError::OutOfRange {
                offset: 9,
                count: 1,
                capacity: 8,
            },
            IoType::Read,
            Status::LBA_OUT_OF_RANGE.with_dnr(),
        ),
        (
            BdevError::BadLength {
                bytes: 1,
                blocks: 1,
                block_size: 512,
            },
            IoType::Write,
            Status::INVALID_FIELD.with_dnr(),
        ),
        (
            BdevError::Unsupported(IoType::Unmap),
            IoType::Unmap,
            Status::INVALID_OPCODE.with_dnr(),
        ),
        (BdevError::Closed, IoType::Read, Status::NAMESPACE_NOT_READY),
        (io(), IoType::Read, Status::UNRECOVERED_READ_ERROR),
        (io(), IoType::Write, Status::WRITE_FAULT),
        (BdevError::Injected, IoType::Flush, Status::WRITE_FAULT),
        (
            BdevError::ShortIo {
                done: 1,
                expected: 2,
            },
            IoType::WriteZeroes,
            Status::WRITE_FAULT,
        ),
        (BdevError::TimedOut, IoType::Read, Status::INTERNAL_ERROR),
    ];
    for (err, io_type, want) in cases {
        assert_eq!(
            nvme_status_for(&err, io_type),
            want,
            "{err} during {io_type:?}"
        );
    }
    // Media errors leave DNR clear so the host may retry.
    assert!(!nvme_status_for(&io(), IoType::Read).dnr);
}
