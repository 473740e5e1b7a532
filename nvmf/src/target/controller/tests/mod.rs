//! Unit tests of the controller modules, driven through [`execute`] with real SQEs against a
//! real [`Target`] with RAM-disk namespaces.

mod admin;
mod features;
mod identify;
mod logs;
mod props;

use std::sync::Arc;

use shoal_bdev::malloc::MallocBdev;
use zerocopy::little_endian::U32;

use crate::target::controller::{AdminContext, AdminOutcome, ControllerShared, execute};
use crate::target::subsystem::{
    DISCOVERY_NQN, ListenAddress, Subsystem, SubsystemOptions, Target, TransportConfig,
};
use crate::wire::spec::opcode::admin as op;
use crate::wire::spec::{FabricsType, Opcode, SglDescriptor, Sqe, Status};

pub(super) const HOST: &str =
    "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001";
pub(super) const HOSTID: [u8; 16] = [0x11; 16];
pub(super) const SUBNQN: &str = "nqn.2026-01.io.shoal:test";

/// A target with one NVM subsystem (one 512-byte-block namespace, one listener) and one
/// controller of it.
pub(super) struct Fixture {
    pub target: Target,
    pub sub: Arc<Subsystem>,
    pub ctrl: Arc<ControllerShared>,
    pub transport: TransportConfig,
    /// Namespace 1's device (its owner may change its size).
    pub disk: Arc<MallocBdev>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let target = Target::new();
        let opts = SubsystemOptions {
            allow_any_host: true,
            ..Default::default()
        };
        let sub = target.create_subsystem(SUBNQN, opts).unwrap();
        let bdev = MallocBdev::create("m0", None, 2048, 512).unwrap();
        sub.add_namespace(bdev.clone(), None, None, None, None)
            .unwrap();
        sub.add_listener(ListenAddress::tcp("127.0.0.1", "4420"))
            .unwrap();
        let ctrl = connect(&sub);
        Fixture {
            target,
            sub,
            ctrl,
            transport: TransportConfig::default(),
            disk: bdev,
        }
    }

    /// The same target's discovery controller.
    pub fn discovery(&self) -> Arc<ControllerShared> {
        connect(&self.target.subsystem(DISCOVERY_NQN).unwrap())
    }

    pub fn ctx<'a>(&'a self, ctrl: &'a ControllerShared) -> AdminContext<'a> {
        AdminContext {
            ctrl,
            target: &self.target,
            transport: &self.transport,
        }
    }

    pub fn run(&self, sqe: &Sqe) -> AdminOutcome {
        execute(&self.ctx(&self.ctrl), sqe)
    }

    pub fn run_on(&self, ctrl: &ControllerShared, sqe: &Sqe) -> AdminOutcome {
        execute(&self.ctx(ctrl), sqe)
    }
}

pub(super) fn connect(sub: &Arc<Subsystem>) -> Arc<ControllerShared> {
    sub.register_controller(|id| Arc::new(ControllerShared::new(id, sub.clone(), HOST, HOSTID, 0)))
        .unwrap()
}

/// What the Linux 6.1 host writes to CC to enable a fabrics controller: EN, IOSQES 6,
/// IOCQES 4, CSS NVM, MPS 0, AMS round robin.
pub(super) const CC_LINUX_ENABLE: u64 = 0x0046_0001;

pub(super) fn property_set(offset: u32, attrib: u8, value: u64) -> Sqe {
    let mut sqe = Sqe::new_fabrics(FabricsType::PROPERTY_SET, 1);
    sqe.cdw10 = U32::new(u32::from(attrib));
    sqe.cdw11 = U32::new(offset);
    sqe.cdw12 = U32::new(u32::try_from(value & 0xFFFF_FFFF).unwrap());
    sqe.cdw13 = U32::new(u32::try_from(value >> 32).unwrap());
    sqe
}

pub(super) fn property_get(offset: u32, attrib: u8) -> Sqe {
    let mut sqe = Sqe::new_fabrics(FabricsType::PROPERTY_GET, 1);
    sqe.cdw10 = U32::new(u32::from(attrib));
    sqe.cdw11 = U32::new(offset);
    sqe
}

/// Enables a controller the way the Linux host does and checks it became ready.
pub(super) fn enable(f: &Fixture, ctrl: &ControllerShared) {
    match f.run_on(ctrl, &property_set(0x14, 0, CC_LINUX_ENABLE)) {
        AdminOutcome::Property { status, .. } => assert_eq!(status, Status::SUCCESS),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(ctrl.state().csts & 1, 1);
}

/// An admin SQE with a transport SGL of `len` bytes.
pub(super) fn admin_sqe(opcode: Opcode, nsid: u32, cdw10: u32, cdw11: u32, len: u32) -> Sqe {
    let mut sqe = Sqe::new(opcode, 9);
    sqe.nsid = U32::new(nsid);
    sqe.cdw10 = U32::new(cdw10);
    sqe.cdw11 = U32::new(cdw11);
    sqe.dptr = SglDescriptor::transport(len);
    sqe
}

pub(super) fn identify_sqe(cns: u8, nsid: u32, csi: u8) -> Sqe {
    admin_sqe(
        op::IDENTIFY,
        nsid,
        u32::from(cns),
        u32::from(csi) << 24,
        4096,
    )
}

/// A Get Log Page SQE for `len` bytes (a multiple of 4) at `offset`.
pub(super) fn get_log_sqe(lid: u8, len: u32, offset: u64, rae: bool) -> Sqe {
    let numd = len / 4 - 1;
    let cdw10 = u32::from(lid) | (u32::from(rae) << 15) | ((numd & 0xFFFF) << 16);
    let mut sqe = admin_sqe(op::GET_LOG_PAGE, 0xFFFF_FFFF, cdw10, numd >> 16, len);
    sqe.cdw12 = U32::new(u32::try_from(offset & 0xFFFF_FFFF).unwrap());
    sqe.cdw13 = U32::new(u32::try_from(offset >> 32).unwrap());
    sqe
}

/// The status, dword 0 and data of a `Done` outcome.
pub(super) fn done(out: AdminOutcome) -> (Status, u32, Option<Vec<u8>>) {
    match out {
        AdminOutcome::Done { status, dw0, data } => (status, dw0, data),
        other => panic!("expected Done, got {other:?}"),
    }
}

/// The data of a successful `Done` outcome.
pub(super) fn data_of(out: AdminOutcome) -> Vec<u8> {
    let (status, _, data) = done(out);
    assert_eq!(status, Status::SUCCESS);
    data.expect("data")
}

/// The status of an outcome that must have failed.
pub(super) fn status_of(out: AdminOutcome) -> Status {
    match out {
        AdminOutcome::Done { status, .. } | AdminOutcome::Property { status, .. } => status,
        other => panic!("expected a completion, got {other:?}"),
    }
}
