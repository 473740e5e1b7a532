//! Receive-side handling of a connection: PDUs in, commands dispatched, responses queued.

use std::sync::Arc;
use std::time::Duration;

use shoal_bdev::IoBuf;

use super::io;
use super::slots::SlotState;
use super::wire::{self, Incoming};
use super::{Conn, Phase, State};
use crate::command::FabricsCommand;
use crate::controller::{self, AdminContext, AdminOutcome, ControllerShared, PropertyEffect};
use crate::spec::fabrics::{self, ConnectData, InvalidParameterIn};
use crate::spec::{Cqe, Opcode, Sqe, Status};
use crate::subsystem::SubsystemKind;

/// Handles every complete PDU in the receive buffer, unless the send queue reaches its bound
/// first: then the rest waits, and the connection reads nothing more until the host has read
/// (back-pressure: a host that never reads its socket cannot make the target queue without end).
pub(super) fn process_rx(conn: &Conn) {
    let limit = conn.unsent_limit();
    loop {
        let mut st = conn.st.borrow_mut();
        if st.phase == Phase::Closing {
            return;
        }
        if st.tx.held() >= limit {
            st.paused = true;
            return;
        }
        let Some(rx) = st.rx.take() else { return };
        let pos = st.rx_pos;
        let input = rx.as_slice().get(pos..).unwrap_or(&[]);
        let step = st.deframer.next(input);
        let consumed = match step {
            Ok(None) => {
                st.rx = Some(rx);
                return;
            }
            Ok(Some((pdu, used))) => match handle_pdu(conn, &mut st, pdu) {
                Ok(()) => used,
                Err(fatal) => {
                    super::limits::note_protocol_error(conn.id, &fatal);
                    let mut hdr = [0u8; 160];
                    let n = wire::encode_term_req(&mut hdr, &fatal, input);
                    st.tx.push_hdr(&hdr[..n]);
                    st.rx = Some(rx);
                    drop(st);
                    conn.close("fatal protocol error");
                    return;
                }
            },
            Err(fatal) => {
                super::limits::note_protocol_error(conn.id, &fatal);
                let mut hdr = [0u8; 160];
                let n = wire::encode_term_req(&mut hdr, &fatal, input);
                st.tx.push_hdr(&hdr[..n]);
                st.rx = Some(rx);
                drop(st);
                conn.close("fatal protocol error");
                return;
            }
        };
        st.rx_pos = pos + consumed;
        st.rx = Some(rx);
    }
}

fn handle_pdu(conn: &Conn, st: &mut State, pdu: Incoming<'_>) -> Result<(), wire::Fatal> {
    match pdu {
        Incoming::IcReq(ic) => {
            if st.phase != Phase::AwaitIcReq {
                // A second ICReq is a PDU sequence error (section 3.6.2.2); the deframer
                // already refuses it once established, this is belt and braces.
                return Err(wire::Fatal::invalid_header_field(0));
            }
            // NVMe/TCP 1.0, section 3.6.2.2: PFV shall be 0; the deframer has already refused a
            // second ICReq (PDU sequence error).
            st.hpda = ic.hpda;
            st.hdgst = ic.hdgst;
            st.ddgst = ic.ddgst;
            st.maxr2t = ic.maxr2t.saturating_add(1);
            st.deframer.set_digests(ic.hdgst, ic.ddgst);
            let mut out = [0u8; 128];
            let n = wire::encode_ic_resp(&mut out, &conn.transport, ic.hdgst, ic.ddgst);
            st.tx.push_hdr(&out[..n]);
            st.phase = Phase::Ready;
        }
        Incoming::Capsule { sqe, data } => on_capsule(conn, st, &sqe, data),
        Incoming::H2CData(h) => io::on_h2c_data(conn, st, &h)?,
        Incoming::H2CTermReq { fes } => {
            tracing::debug!(
                conn = conn.id,
                "host terminated the connection (FES {fes:#x})"
            );
            conn.close_locked(st, "H2CTermReq from the host");
        }
        Incoming::DataDigestError { cid, ttag } => {
            // NVMe/TCP 1.0, section 3.6.2.9 (7.4.9): a data digest error fails the command
            // with Transient Transport Error; the connection carries on.
            if let Some(t) = ttag
                && st.slots.get(t).is_some()
            {
                st.slots.release(t);
            }
            respond(st, cid, Status::TRANSIENT_TRANSPORT_ERROR, 0);
        }
    }
    Ok(())
}

/// Queues a response capsule for `cid`.
pub(super) fn respond(st: &mut State, cid: u16, status: Status, dw0: u32) {
    let cqe = Cqe::new(cid, st.qid.unwrap_or(0), st.sqhd, status).with_dw0(dw0);
    let mut out = [0u8; 32];
    let n = wire::encode_capsule_resp(&mut out, &cqe, st.hdgst);
    st.tx.push_hdr(&out[..n]);
}

/// Queues `data` as one C2HData PDU for `cid`, followed by a response capsule unless the
/// SUCCESS flag may stand for it (NVMe/TCP 1.0, section 3.3.5.1: only when the host disabled
/// SQ flow control, since the response would carry SQHD).
pub(super) fn send_data(conn: &Conn, st: &mut State, cid: u16, data: IoBuf) {
    let success = conn.transport.c2h_success && st.sq_flow_disabled;
    let mut hdr = [0u8; 160];
    let n = wire::encode_c2h_header(
        &mut hdr,
        cid,
        data.len(),
        success,
        st.hdgst,
        st.ddgst,
        st.hpda,
    );
    st.tx.push_hdr(&hdr[..n]);
    let digest = st.ddgst.then(|| wire::data_digest(data.as_slice()));
    st.tx.push_data(data);
    if let Some(d) = digest {
        st.tx.push_hdr(&d.to_le_bytes());
    }
    if !success {
        respond(st, cid, Status::SUCCESS, 0);
    }
}

fn on_capsule(conn: &Conn, st: &mut State, sqe: &Sqe, data: &[u8]) {
    let cid = sqe.cid();
    st.sqhd = st.sqhd.wrapping_add(1) % st.sqsize.max(1);
    if sqe.opcode() == Opcode::FABRICS {
        on_fabrics(conn, st, sqe, data);
        return;
    }
    // Borrowed, not cloned: no locked instruction on the I/O path (see
    // `ControllerShared::is_ready`).
    let (Some(qid), Some(ready)) = (st.qid, st.ctrl.as_ref().map(|c| c.is_ready())) else {
        // NVMe-oF 1.1, section 3.3: the first command on a queue shall be Connect.
        respond(st, cid, Status::COMMAND_SEQUENCE_ERROR, 0);
        return;
    };
    if st.slots.cid_busy(cid) {
        // NVMe Base 2.0, section 4.2: a CID in use on this queue is a Command ID Conflict.
        respond(st, cid, Status::COMMAND_ID_CONFLICT, 0);
        return;
    }
    if !ready {
        // Commands other than fabrics ones need CC.EN = 1 and CSTS.RDY = 1 (Base 2.0 3.5.1).
        respond(st, cid, Status::COMMAND_SEQUENCE_ERROR, 0);
        return;
    }
    if qid == 0 {
        let Some(ctrl) = st.ctrl.clone() else { return };
        on_admin(conn, st, &ctrl, sqe, data);
    } else {
        io::on_io_command(conn, st, sqe, data);
    }
}

fn on_admin(conn: &Conn, st: &mut State, ctrl: &Arc<ControllerShared>, sqe: &Sqe, data: &[u8]) {
    let cid = sqe.cid();
    let ctx = AdminContext {
        ctrl,
        target: &conn.target,
        transport: &conn.transport,
    };
    let _ = data;
    match controller::execute(&ctx, sqe) {
        AdminOutcome::Done { status, dw0, data } => match data {
            Some(d) if status.is_success() && !d.is_empty() => {
                send_data(conn, st, cid, IoBuf::copy_from(&d));
                // `send_data` answered with SUCCESS or a response; add dw0 when it matters.
                let _ = dw0;
            }
            _ => respond(st, cid, status, dw0),
        },
        AdminOutcome::Property { status, value, .. } => {
            respond(st, cid, status, (value & 0xFFFF_FFFF) as u32)
        }
        AdminOutcome::AsyncEventRequest => {
            // NVMe Base 2.0, section 5.2: at most AERL + 1 outstanding requests.
            if st.aers.len() >= controller::identify::AER_LIMIT {
                respond(st, cid, Status::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED, 0);
            } else {
                st.aers.push(cid);
                deliver_events_locked(st, ctrl);
            }
        }
        AdminOutcome::Abort { sqid, cid: victim } => {
            // NVMe Base 2.0, section 5.1: dword 0 bit 0 set means the command was not aborted.
            // Shoal aborts only AERs it holds on this queue; others complete on their own.
            let mut not_aborted = 1;
            if sqid == 0
                && let Some(i) = st.aers.iter().position(|&c| c == victim)
            {
                st.aers.remove(i);
                respond(st, victim, Status::ABORT_REQUESTED, 0);
                not_aborted = 0;
            }
            respond(st, cid, Status::SUCCESS, not_aborted);
        }
    }
}

/// Completes waiting AERs with pending events.
pub(super) fn deliver_events(conn: &Conn, ctrl: &ControllerShared) {
    let mut st = conn.st.borrow_mut();
    deliver_events_locked(&mut st, ctrl);
}

fn deliver_events_locked(st: &mut State, ctrl: &ControllerShared) {
    while !st.aers.is_empty() {
        let Some(ev) = ctrl.state().pending_events.pop_front() else {
            return;
        };
        let cid = st.aers.remove(0);
        respond(st, cid, Status::SUCCESS, ev.dw0());
    }
}

fn on_fabrics(conn: &Conn, st: &mut State, sqe: &Sqe, data: &[u8]) {
    let cid = sqe.cid();
    match FabricsCommand::parse(sqe) {
        FabricsCommand::Connect {
            qid,
            sqsize,
            cattr,
            kato,
            recfmt,
        } => {
            let r = connect(conn, st, sqe, data, qid, sqsize, cattr, kato, recfmt);
            match r {
                Ok(cntlid) => respond(
                    st,
                    cid,
                    Status::SUCCESS,
                    fabrics::connect_success_dw0(cntlid),
                ),
                Err((status, dw0)) => respond(st, cid, status, dw0),
            }
        }
        FabricsCommand::PropertyGet { offset, size8 } => {
            let Some(ctrl) = st.ctrl.clone().filter(|_| st.qid == Some(0)) else {
                respond(st, cid, Status::COMMAND_SEQUENCE_ERROR, 0);
                return;
            };
            match controller::property_get(&ctrl, &conn.transport, offset, u8::from(size8)) {
                Ok(v) => {
                    let cqe_dw0 = (v & 0xFFFF_FFFF) as u32;
                    let cqe_dw1 = (v >> 32) as u32;
                    let cqe = Cqe::new(cid, 0, st.sqhd, Status::SUCCESS)
                        .with_dw0(cqe_dw0)
                        .with_dw1(cqe_dw1);
                    let mut out = [0u8; 32];
                    let n = wire::encode_capsule_resp(&mut out, &cqe, st.hdgst);
                    st.tx.push_hdr(&out[..n]);
                }
                Err(s) => respond(st, cid, s, 0),
            }
        }
        FabricsCommand::PropertySet {
            offset,
            size8,
            value,
        } => {
            let Some(ctrl) = st.ctrl.clone().filter(|_| st.qid == Some(0)) else {
                respond(st, cid, Status::COMMAND_SEQUENCE_ERROR, 0);
                return;
            };
            match controller::property_set(&ctrl, offset, u8::from(size8), value) {
                Ok(effect) => {
                    if effect == PropertyEffect::Reset {
                        // NVMe Base 2.0, section 3.7.2 (Controller Reset): on CC.EN 1 -> 0 the
                        // controller deletes every I/O Submission and Completion Queue; on a
                        // message-based controller the Admin Queue and the association stay,
                        // and the host sets CC.EN to 1 again on the same admin queue.
                        ctrl.reset_io_queues();
                    }
                    respond(st, cid, Status::SUCCESS, 0);
                }
                Err(s) => respond(st, cid, s, 0),
            }
        }
        FabricsCommand::Disconnect { .. } => {
            let Some(qid) = st.qid else {
                // NVMe-oF 1.1, section 3.3: the first command on a queue shall be Connect.
                respond(st, cid, Status::COMMAND_SEQUENCE_ERROR, 0);
                return;
            };
            if qid == 0 {
                // NVMe Base 2.0, section 6.4 (Disconnect): "If the Disconnect command is
                // submitted on the Admin Queue, the controller shall abort the command with a
                // status code of Invalid Queue Type"; the admin queue, the controller and its
                // I/O queues carry on (the host ends an association by closing the admin queue).
                respond(st, cid, Status::INVALID_QUEUE_TYPE.with_dnr(), 0);
                return;
            }
            // Section 6.4: the Disconnect deletes the I/O queue it was submitted on; its queue
            // ID is free again once the response is queued.
            respond(st, cid, Status::SUCCESS, 0);
            conn.close_locked(st, "Disconnect");
        }
        _ => respond(st, cid, Status::INVALID_OPCODE, 0),
    }
}

/// Fabrics Connect (NVMe-oF 1.1, section 3.3).
#[allow(clippy::too_many_arguments)]
fn connect(
    conn: &Conn,
    st: &mut State,
    sqe: &Sqe,
    data: &[u8],
    qid: u16,
    sqsize: u16,
    cattr: u8,
    kato: u32,
    recfmt: u16,
) -> Result<u16, (Status, u32)> {
    let invalid_cmd = |off| {
        (
            Status::CONNECT_INVALID_PARAMETERS,
            fabrics::connect_invalid_parameters_dw0(InvalidParameterIn::Command, off),
        )
    };
    let invalid_data = |off| {
        (
            Status::CONNECT_INVALID_PARAMETERS,
            fabrics::connect_invalid_parameters_dw0(InvalidParameterIn::Data, off),
        )
    };
    if st.qid.is_some() {
        // A queue connects once (section 3.3: Connect is the first and only such command).
        return Err((Status::COMMAND_SEQUENCE_ERROR, 0));
    }
    if recfmt != 0 {
        return Err((Status::CONNECT_INCOMPATIBLE_FORMAT, 0));
    }
    let Some(cd) = ConnectData::from_prefix(data) else {
        // The Connect data (1024 bytes) must arrive in the capsule.
        return Err((Status::DATA_SGL_LENGTH_INVALID, 0));
    };
    let _ = sqe;
    let (Some(subnqn), Some(hostnqn)) = (cd.subnqn(), cd.hostnqn()) else {
        return Err(invalid_data(256));
    };
    let Some(sub) = conn.target.subsystem(subnqn) else {
        return Err(invalid_data(256));
    };
    if !sub.host_allowed(hostnqn) {
        return Err((Status::CONNECT_INVALID_HOST, 0));
    }
    if sub.kind == SubsystemKind::Nvme {
        let here = sub.with_config(|c| {
            c.listeners
                .iter()
                .any(|l| l.trsvcid == conn.listen.trsvcid && l.traddr == conn.listen.traddr)
        });
        if !here {
            // The subsystem is not exported on this listener.
            return Err(invalid_data(256));
        }
    }
    // SQSIZE is 0's based and shall be at least 1 (section 3.3.1, Figure 20).
    let depth = u32::from(sqsize) + 1;
    let limit = if qid == 0 {
        conn.transport.max_aq_depth
    } else {
        conn.transport.max_queue_depth
    };
    if sqsize == 0 || depth > u32::from(limit) {
        return Err(invalid_cmd(44));
    }
    let depth = u16::try_from(depth).unwrap_or(u16::MAX);
    let cntlid = cd.cntlid.get();
    let ctrl = if qid == 0 {
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
                kato,
            ))
        });
        let Some(c) = made else {
            return Err((Status::CONNECT_CONTROLLER_BUSY, 0));
        };
        c.keep_alive();
        start_keep_alive_timer(conn, st, &c);
        c
    } else {
        if sub.kind == SubsystemKind::Discovery {
            return Err(invalid_cmd(42));
        }
        let Some(c) = sub.controller(cntlid).filter(|c| !c.is_failed()) else {
            return Err(invalid_data(16));
        };
        if c.hostnqn != hostnqn {
            return Err(invalid_data(512));
        }
        let mut cs = c.state();
        let granted = cs
            .num_queues
            .map_or(conn.transport.max_io_qpairs_per_ctrlr, |(sq, _)| {
                sq.saturating_add(1)
            });
        if cs.csts & 1 == 0 || qid > granted || cs.io_queues.contains(&qid) {
            return Err(invalid_cmd(42));
        }
        cs.io_queues.insert(qid);
        st.io_generation = cs.io_generation;
        drop(cs);
        c
    };
    st.qid = Some(qid);
    if let Some(t) = st.ic_timer.take() {
        conn.reactor.cancel_timer(t);
    }
    st.sqsize = depth;
    st.sqhd = 1 % depth;
    st.sq_flow_disabled = cattr & fabrics::CATTR_DISABLE_SQ_FLOW_CONTROL != 0;
    st.slots.resize(depth);
    st.subsystem = Some(sub.clone());
    let handle = conn.reactor.handle();
    let id = conn.id;
    let hook_handle = handle.clone();
    ctrl.add_hook(
        qid,
        id,
        Box::new(move || {
            hook_handle.send(move || super::with_conn(id, |c| c.poke()));
        }),
    );
    if qid != 0 && ctrl.io_queue_deleted(st.io_generation) {
        // A controller reset between the queue ID check and the hook: the hook missed it.
        handle.send(move || super::with_conn(id, |c| c.poke()));
    }
    let cntlid = ctrl.cntlid;
    st.counters = Some(ctrl.counters.register());
    st.ctrl = Some(ctrl);
    Ok(cntlid)
}

fn start_keep_alive_timer(conn: &Conn, st: &mut State, ctrl: &Arc<ControllerShared>) {
    let weak = Arc::downgrade(ctrl);
    // Check at a fraction of the timeout; 100 ms granularity is what KAS advertises.
    let t = conn.reactor.every(Duration::from_millis(100), move || {
        let Some(c) = weak.upgrade() else {
            return false;
        };
        if c.is_failed() {
            return false;
        }
        if c.keep_alive_expired() {
            // NVMe Base 2.0, section 3.9.4: on expiry the controller shall... treat it as a
            // fatal condition and delete its queues.
            c.fail("keep-alive timeout expired");
            return false;
        }
        true
    });
    st.keep_alive_timer = Some(t);
}

/// Whether the slot's command is still waiting for data (for tests of the deframer).
#[allow(dead_code)]
pub(super) fn awaiting(st: &mut State, idx: u16) -> bool {
    st.slots
        .get(idx)
        .is_some_and(|s| s.state == SlotState::AwaitData)
}
