//! Admin commands on the admin queue (qid 0): executed by the pure admin command set of
//! [`crate::target::controller`]; Asynchronous Event Requests parked here until an event comes.

use super::QueuePair;
use crate::target::controller::{self, AdminContext, AdminOutcome, ControllerShared};
use crate::wire::spec::{Sqe, Status};
use shoal_bdev::IoBuf;

impl<C: Clone> QueuePair<C> {
    pub(super) fn on_admin(&mut self, sqe: &Sqe) {
        let Some(ctrl) = self.ctrl.clone() else {
            return;
        };
        let cid = sqe.cid();
        let ctx = AdminContext {
            ctrl: &ctrl,
            target: &self.target,
            transport: &self.transport,
        };
        match controller::execute(&ctx, sqe) {
            AdminOutcome::Done { status, dw0, data } => match data {
                // The data is exactly what the command transfers (its SGL's length): one
                // C2HData PDU (NVMe/TCP 1.0a section 3.6.2.9), then the response. When the
                // SUCCESS flag stands for the response, dword 0 is 0 (admin commands with
                // data return nothing in it).
                Some(d) if status.is_success() && !d.is_empty() => {
                    self.send_data(cid, IoBuf::copy_from(&d));
                }
                _ => self.respond(cid, status, dw0),
            },
            AdminOutcome::Property { status, value, .. } => {
                self.respond(cid, status, (value & 0xFFFF_FFFF) as u32)
            }
            AdminOutcome::AsyncEventRequest => {
                // NVMe Base 2.0, section 5.2: at most AERL + 1 outstanding requests.
                if self.aers.len() >= controller::identify::AER_LIMIT {
                    self.respond(cid, Status::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED, 0);
                } else {
                    self.aers.push(cid);
                    self.deliver_events(&ctrl);
                }
            }
            AdminOutcome::Abort { sqid, cid: victim } => {
                // NVMe Base 2.0, section 5.1: dword 0 bit 0 set means the command was not
                // aborted. Shoal aborts only AERs it holds on this queue; others complete on
                // their own.
                let mut not_aborted = 1;
                if sqid == 0
                    && let Some(i) = self.aers.iter().position(|&c| c == victim)
                {
                    self.aers.remove(i);
                    self.respond(victim, Status::ABORT_REQUESTED, 0);
                    not_aborted = 0;
                }
                self.respond(cid, Status::SUCCESS, not_aborted);
            }
        }
    }

    /// Completes waiting AERs with pending events.
    pub(super) fn deliver_events(&mut self, ctrl: &ControllerShared) {
        while !self.aers.is_empty() {
            let Some(ev) = ctrl.state().pending_events.pop_front() else {
                return;
            };
            let cid = self.aers.remove(0);
            self.respond(cid, Status::SUCCESS, ev.dw0());
        }
    }
}
