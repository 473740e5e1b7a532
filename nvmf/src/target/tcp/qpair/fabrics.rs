//! Fabrics commands on a queue pair: Connect, Property Get / Set, Disconnect (NVMe-oF 1.1,
//! section 3.3 and "Fabrics Command Set").

use std::sync::Arc;
use std::time::Instant;

use super::{KEEP_ALIVE_CHECK, QueuePair};
use crate::target::controller::{self, ControllerShared, PropertyEffect};
use crate::target::subsystem::SubsystemKind;
use crate::wire::command::FabricsCommand;
use crate::wire::spec::fabrics::{self, ConnectData, InvalidParameterIn};
use crate::wire::spec::{Cqe, Sqe, Status};

/// The fields of a Connect command (NVMe-oF 1.1, section 3.3.1).
struct Connect {
    qid: u16,
    sqsize: u16,
    cattr: u8,
    kato: u32,
    recfmt: u16,
}

fn invalid_cmd(off: u16) -> (Status, u32) {
    (
        Status::CONNECT_INVALID_PARAMETERS,
        fabrics::connect_invalid_parameters_dw0(InvalidParameterIn::Command, off),
    )
}

fn invalid_data(off: u16) -> (Status, u32) {
    (
        Status::CONNECT_INVALID_PARAMETERS,
        fabrics::connect_invalid_parameters_dw0(InvalidParameterIn::Data, off),
    )
}

impl<C: Clone> QueuePair<C> {
    pub(super) fn on_fabrics(&mut self, sqe: &Sqe, data: &[u8], now: Instant) {
        let cid = sqe.cid();
        match FabricsCommand::parse(sqe) {
            FabricsCommand::Connect {
                qid,
                sqsize,
                cattr,
                kato,
                recfmt,
            } => {
                let c = Connect {
                    qid,
                    sqsize,
                    cattr,
                    kato,
                    recfmt,
                };
                match self.connect(&c, data, now) {
                    Ok(cntlid) => {
                        self.respond(cid, Status::SUCCESS, fabrics::connect_success_dw0(cntlid))
                    }
                    Err((status, dw0)) => self.respond(cid, status, dw0),
                }
            }
            FabricsCommand::PropertyGet { offset, size8 } => {
                // NVMe-oF 1.1, section 3.4: properties are reached on the admin queue only.
                let Some(ctrl) = self.ctrl.clone().filter(|_| self.qid == Some(0)) else {
                    self.respond(cid, Status::COMMAND_SEQUENCE_ERROR, 0);
                    return;
                };
                match controller::property_get(&ctrl, &self.transport, offset, u8::from(size8)) {
                    Ok(v) => {
                        let cqe = Cqe::new(cid, 0, self.sqhd, Status::SUCCESS)
                            .with_dw0((v & 0xFFFF_FFFF) as u32)
                            .with_dw1((v >> 32) as u32);
                        self.respond_cqe(&cqe);
                    }
                    Err(s) => self.respond(cid, s, 0),
                }
            }
            FabricsCommand::PropertySet {
                offset,
                size8,
                value,
            } => {
                let Some(ctrl) = self.ctrl.clone().filter(|_| self.qid == Some(0)) else {
                    self.respond(cid, Status::COMMAND_SEQUENCE_ERROR, 0);
                    return;
                };
                match controller::property_set(&ctrl, offset, u8::from(size8), value) {
                    Ok(effect) => {
                        if effect == PropertyEffect::Reset {
                            // NVMe Base 2.0, section 3.7.2 (Controller Reset): on CC.EN 1 -> 0
                            // the controller deletes every I/O Submission and Completion
                            // Queue; on a message-based controller the Admin Queue and the
                            // association stay, and the host sets CC.EN to 1 again on the same
                            // admin queue.
                            ctrl.reset_io_queues();
                        }
                        self.respond(cid, Status::SUCCESS, 0);
                    }
                    Err(s) => self.respond(cid, s, 0),
                }
            }
            FabricsCommand::Disconnect { .. } => {
                let Some(qid) = self.qid else {
                    // NVMe-oF 1.1, section 3.3: the first command on a queue shall be Connect.
                    self.respond(cid, Status::COMMAND_SEQUENCE_ERROR, 0);
                    return;
                };
                if qid == 0 {
                    // NVMe Base 2.0, section 6.4 (Disconnect): a Disconnect submitted on the
                    // Admin Queue is aborted with the status Invalid Queue Type (paraphrased:
                    // the wording was not checked against the spec's text here, and SPDK does
                    // not implement Disconnect to compare with); the admin queue, the
                    // controller and its I/O queues carry on (the host ends an association by
                    // closing the admin queue).
                    self.respond(cid, Status::INVALID_QUEUE_TYPE.with_dnr(), 0);
                    return;
                }
                // Section 6.4: the Disconnect deletes the I/O queue it was submitted on; its
                // queue ID is free again once the response is queued.
                self.respond(cid, Status::SUCCESS, 0);
                self.close("Disconnect", now);
            }
            FabricsCommand::Unknown(_) => self.respond(cid, Status::INVALID_OPCODE, 0),
        }
    }

    /// Fabrics Connect (NVMe-oF 1.1, section 3.3).
    fn connect(&mut self, c: &Connect, data: &[u8], now: Instant) -> Result<u16, (Status, u32)> {
        if self.qid.is_some() {
            // A queue connects once (section 3.3: Connect is the first and only such command).
            return Err((Status::COMMAND_SEQUENCE_ERROR, 0));
        }
        if c.recfmt != 0 {
            // Section 3.3.1: record format 0 is the only one defined.
            return Err((Status::CONNECT_INCOMPATIBLE_FORMAT, 0));
        }
        let Some(cd) = ConnectData::from_prefix(data) else {
            // The Connect data (1024 bytes, NVMe-oF 1.1 section 3.3.1) must arrive in the
            // capsule.
            return Err((Status::DATA_SGL_LENGTH_INVALID, 0));
        };
        let (Some(subnqn), Some(hostnqn)) = (cd.subnqn(), cd.hostnqn()) else {
            return Err(invalid_data(256));
        };
        let Some(sub) = self.target.subsystem(subnqn) else {
            return Err(invalid_data(256));
        };
        if !sub.host_allowed(hostnqn) {
            return Err((Status::CONNECT_INVALID_HOST, 0));
        }
        if sub.kind == SubsystemKind::Nvme {
            let (traddr, trsvcid) = (&self.listen.traddr, &self.listen.trsvcid);
            let here = sub.with_config(|cfg| {
                cfg.listeners
                    .iter()
                    .any(|l| &l.trsvcid == trsvcid && &l.traddr == traddr)
            });
            if !here {
                // The subsystem is not exported on this listener.
                return Err(invalid_data(256));
            }
        }
        // SQSIZE is 0's based and shall be at least 1 (section 3.3.1, Figure 20).
        let depth = u32::from(c.sqsize) + 1;
        let limit = if c.qid == 0 {
            self.transport.max_aq_depth
        } else {
            self.transport.max_queue_depth
        };
        if c.sqsize == 0 || depth > u32::from(limit) {
            return Err(invalid_cmd(44));
        }
        let depth = u16::try_from(depth).unwrap_or(u16::MAX);
        let cntlid = cd.cntlid.get();
        let ctrl = if c.qid == 0 {
            if cntlid != fabrics::CNTLID_DYNAMIC && cntlid != fabrics::CNTLID_STATIC_ANY {
                return Err(invalid_data(16));
            }
            let hostid = cd.hostid;
            let made = sub.register_controller(|id| {
                Arc::new(ControllerShared::new(
                    id,
                    sub.clone(),
                    hostnqn,
                    hostid,
                    c.kato,
                ))
            });
            let Some(ctrl) = made else {
                return Err((Status::CONNECT_CONTROLLER_BUSY, 0));
            };
            ctrl.keep_alive();
            self.keep_alive_check = Some(now + KEEP_ALIVE_CHECK);
            ctrl
        } else {
            if sub.kind == SubsystemKind::Discovery {
                return Err(invalid_cmd(42));
            }
            let Some(ctrl) = sub.controller(cntlid).filter(|c| !c.is_failed()) else {
                return Err(invalid_data(16));
            };
            if ctrl.hostnqn != hostnqn {
                return Err(invalid_data(512));
            }
            let mut cs = ctrl.state();
            let granted = cs
                .num_queues
                .map_or(self.transport.max_io_qpairs_per_ctrlr, |(sq, _)| {
                    sq.saturating_add(1)
                });
            if cs.csts & 1 == 0 || c.qid > granted || cs.io_queues.contains(&c.qid) {
                return Err(invalid_cmd(42));
            }
            cs.io_queues.insert(c.qid);
            self.io_generation = cs.io_generation;
            drop(cs);
            ctrl
        };
        self.qid = Some(c.qid);
        self.ic_deadline = None;
        self.sqsize = depth;
        self.sqhd = 1 % depth;
        self.sq_flow_disabled = c.cattr & fabrics::CATTR_DISABLE_SQ_FLOW_CONTROL != 0;
        self.slots.resize(depth);
        self.subsystem = Some(sub.clone());
        let waker = self.waker.clone();
        ctrl.add_hook(c.qid, self.id, Box::new(move || waker()));
        if c.qid != 0 && ctrl.io_queue_deleted(self.io_generation) {
            // A controller reset between the queue ID check and the hook: the hook missed it.
            (self.waker)();
        }
        let cntlid = ctrl.cntlid;
        self.counters = Some(ctrl.counters.register());
        self.ctrl = Some(ctrl);
        Ok(cntlid)
    }
}
