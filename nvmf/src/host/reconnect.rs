//! Losing and regaining a controller.
//!
//! Any queue pair whose connection fails (closed by the peer, a send or receive error, a
//! protocol violation, a command timeout, a C2HTermReq) reports it to the admin reactor with
//! the association it belonged to. The first report of the current association starts a
//! recovery, as the Linux host does for NVMe/TCP: the whole association is reset, because a
//! dynamic controller (NVMe-oF 1.1 section 3.3) does not outlive its admin queue.
//!
//! ```text
//!  Connected --failure--> Reconnecting --attempt ok--> Connected (new CNTLID, I/O queues
//!      ^                    |   ^    |                           reconnect and reissue)
//!      |                    |   +----+ attempt failed: retry after reconnect_delay
//!      |                    +--ctrl_loss_tmo since the failure--> Failed (all I/O fails)
//! ```
//!
//! While reconnecting, I/O queues hold their requests (nothing is failed, nothing is sent);
//! a block I/O that was on the wire is issued again from the start on the new connection,
//! from the buffers it still owns.
//!
//! This file holds the recovery methods of [`AdminCtx`]; the outage record they keep
//! ([`super::admin::Recovery`]) sits with the admin context in [`super::admin`].

use std::rc::Rc;
use std::time::Instant;

use shoal_reactor::TimerId;

use super::admin::AdminCtx;
use super::error::HostError;
use super::options::ControllerState;
use super::shared::QueueEvent;

/// Which reactor timer of a recovery to disarm.
fn cancel(a: &AdminCtx, t: Option<TimerId>) {
    if let Some(t) = t {
        a.reactor.cancel_timer(t);
    }
}

impl AdminCtx {
    /// A connection of association `assoc` failed with `err`.
    pub(crate) fn on_failure(self: &Rc<Self>, assoc: u64, err: HostError) {
        if self.closing.get() {
            return;
        }
        {
            let g = self.shared.lock();
            if g.state != ControllerState::Connected || g.assoc != assoc {
                return;
            }
        }
        tracing::warn!(subnqn = %self.shared.opts.subnqn, "controller lost: {err}");
        self.shared
            .set_state(ControllerState::Reconnecting, Some(err));
        self.stop_keep_alive();
        self.conn.teardown(&HostError::Reconnecting);
        self.shared.notify_queues(&QueueEvent::Disconnect { assoc });
        let tmo = self.shared.opts.ctrl_loss_tmo;
        let weak = Rc::downgrade(self);
        let deadline = self.reactor.call_after(tmo, move || {
            if let Some(a) = weak.upgrade() {
                a.give_up();
            }
        });
        {
            let mut r = self.recovery.borrow_mut();
            r.since = Some(Instant::now());
            r.attempts = 0;
            r.deadline = Some(deadline);
        }
        self.try_reconnect();
    }

    /// One reconnect attempt: the admin queue is connected and the controller brought up
    /// again; on failure the next attempt follows after `reconnect_delay`.
    fn try_reconnect(self: &Rc<Self>) {
        if self.closing.get() || self.shared.lock().state != ControllerState::Reconnecting {
            return;
        }
        let n = {
            let mut r = self.recovery.borrow_mut();
            r.retry = None;
            r.attempts += 1;
            r.attempts
        };
        tracing::debug!(attempt = n, "reconnecting");
        let weak = Rc::downgrade(self);
        self.establish(Box::new(move |r| {
            let Some(a) = weak.upgrade() else { return };
            if a.closing.get() || a.shared.lock().state != ControllerState::Reconnecting {
                return;
            }
            match r {
                Ok(est) => a.on_established(est),
                Err(e) => {
                    tracing::debug!("reconnect attempt failed: {e}");
                    a.shared.lock().last_error = Some(e);
                    a.conn.teardown(&HostError::Reconnecting);
                    let weak = Rc::downgrade(&a);
                    let t = a
                        .reactor
                        .call_after(a.shared.opts.reconnect_delay, move || {
                            if let Some(a) = weak.upgrade() {
                                a.try_reconnect();
                            }
                        });
                    a.recovery.borrow_mut().retry = Some(t);
                }
            }
        }));
    }

    /// The controller-loss timeout passed without a successful reconnect: every request
    /// fails with [`HostError::ControllerLost`], now and from now on.
    fn give_up(self: &Rc<Self>) {
        if self.closing.get() || self.shared.lock().state != ControllerState::Reconnecting {
            return;
        }
        // Abandon the attempt in progress, if any.
        self.attempt.set(self.attempt.get() + 1);
        let (retry, _) = {
            let mut r = self.recovery.borrow_mut();
            (r.retry.take(), r.deadline.take())
        };
        cancel(self, retry);
        let err = HostError::ControllerLost(self.shared.opts.ctrl_loss_tmo);
        tracing::warn!(subnqn = %self.shared.opts.subnqn, "{err}");
        // The state first, so that the abandoned attempt, failing below, schedules nothing.
        self.shared
            .set_state(ControllerState::Failed, Some(err.clone()));
        self.conn.fail(err.clone());
        self.shared.notify_queues(&QueueEvent::Fail(err));
    }

    /// The outage is over.
    pub(crate) fn recovery_done(&self) {
        let (retry, deadline) = {
            let mut r = self.recovery.borrow_mut();
            r.since = None;
            (r.retry.take(), r.deadline.take())
        };
        cancel(self, retry);
        cancel(self, deadline);
    }

    /// Stops any recovery (shutdown).
    pub(crate) fn cancel_recovery(&self) {
        self.recovery_done();
    }
}
