//! The admin queue on its reactor: bringing a controller up (Connect, CAP, CC.EN, CSTS.RDY,
//! Identify, Number of Queues, namespaces), keep-alive, and shutdown.
//!
//! Bring-up is a chain of steps, each one admin command whose completion starts the next
//! (the reactor never blocks). A [`Job`] carries what the steps learn; any failure ends the
//! job with the error, and the caller ([`start`] or the reconnect logic) decides what next.
//!
//! [`AdminCtx`] and its outage record ([`Recovery`]) live here, below the reconnect logic
//! ([`super::reconnect`]) and the events ([`super::aen`]) that add methods to it; so does
//! [`CtrlShared::report_failure`], the way any queue pair reaches the admin reactor.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_bdev::SgList;
use shoal_reactor::{Reactor, TimerId};

use super::cmd::{self, Dir};
use super::conn::{Conn, ConnConfig, QueueState};
use super::error::HostError;
use super::info::{ControllerInfo, NamespaceInfo};
use super::options::{ConnectOptions, ControllerState};
use super::queue::{Limits, RawCompletion, sg_zeroed};
use super::shared::{Controller, CtrlShared, QueueEvent};
use crate::wire::spec::Sqe;
use crate::wire::spec::fabrics::CNTLID_DYNAMIC;
use crate::wire::spec::features::FeatureId;
use crate::wire::spec::identify::{Cns, IDENTIFY_DATA_SIZE, IdentifyController, IdentifyNamespace};
use crate::wire::spec::property::{self, Cap, Cc, Csts, shn, shst};

/// Most data bytes of one admin command: NVMe/TCP admin queues take 8 KiB in-capsule, and
/// the host reads log pages in chunks of at most this much.
pub(crate) const ADMIN_MAX_XFER: u32 = 32 * 1024;

/// The most active namespaces the host reads (1024 per Identify CNS 02h page).
const MAX_NAMESPACES: usize = 16 * 1024;

/// What bring-up produced.
pub(crate) struct Established {
    pub(crate) cntlid: u16,
    pub(crate) info: ControllerInfo,
    pub(crate) namespaces: Vec<NamespaceInfo>,
}

type JobDone = Box<dyn FnOnce(Result<Established, HostError>)>;

/// A bring-up in progress.
struct Job {
    done: JobDone,
    cntlid: u16,
    cap: Cap,
    ready_by: Instant,
    info: Option<ControllerInfo>,
    nsids: Vec<u32>,
    next_ns: usize,
    namespaces: Vec<NamespaceInfo>,
}

impl Job {
    fn fail(self, e: HostError) {
        (self.done)(Err(e));
    }
}

type Step = fn(&Rc<AdminCtx>, Job, RawCompletion);

/// The admin side of one controller, on its reactor.
pub(crate) struct AdminCtx {
    me: Weak<AdminCtx>,
    pub(crate) shared: Arc<CtrlShared>,
    pub(crate) conn: Rc<Conn>,
    pub(crate) reactor: Reactor,
    keep_alive: Cell<Option<TimerId>>,
    ka_outstanding: Cell<bool>,
    pub(crate) recovery: RefCell<Recovery>,
    /// Bumped for every bring-up, so late results of an abandoned one are ignored.
    pub(crate) attempt: Cell<u64>,
    pub(crate) closing: Cell<bool>,
}

/// The outage in progress, if any.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    /// When the association was lost.
    pub(crate) since: Option<Instant>,
    /// Reconnect attempts of this outage.
    pub(crate) attempts: u32,
    pub(crate) retry: Option<TimerId>,
    pub(crate) deadline: Option<TimerId>,
}

thread_local! {
    static ADMINS: RefCell<HashMap<u64, Rc<AdminCtx>>> = RefCell::new(HashMap::new());
}

/// Runs `f` on the admin context of controller `id`, if it lives on this reactor.
pub(crate) fn with_admin(id: u64, f: impl FnOnce(&Rc<AdminCtx>)) {
    // `try_with`: at thread exit the table may be gone while its entries still drop.
    let a = ADMINS
        .try_with(|m| m.borrow().get(&id).cloned())
        .ok()
        .flatten();
    if let Some(a) = a {
        f(&a);
    }
}

impl CtrlShared {
    /// A connection of association `assoc` failed: the admin reactor starts recovery (if
    /// that association is still the current one).
    pub(crate) fn report_failure(&self, assoc: u64, err: HostError) {
        let id = self.id;
        self.admin
            .send(move || with_admin(id, |a| a.on_failure(assoc, err)));
    }
}

/// Creates the admin queue of a new controller on the current reactor and brings it up.
pub(crate) fn start(
    opts: ConnectOptions,
    discovery: bool,
    done: Box<dyn FnOnce(Result<Arc<Controller>, HostError>)>,
) {
    let Some(reactor) = Reactor::current() else {
        done(Err(HostError::Reactor("not on a reactor thread")));
        return;
    };
    if let Err(e) = opts.validate() {
        reactor.defer(move || done(Err(e)));
        return;
    }
    let kato_ms = u32::try_from(opts.kato.as_millis()).unwrap_or(u32::MAX);
    let cfg = ConnConfig {
        qid: 0,
        depth: opts.admin_queue_depth,
        kato_ms,
        timeout: opts.admin_timeout,
    };
    let shared = Arc::new(CtrlShared::new(opts, reactor.handle(), discovery));
    let limits = Limits {
        hdgst: false,
        ddgst: false,
        cpda: 0,
        maxh2cdata: crate::wire::pdu::ic::MIN_MAXH2CDATA,
        in_capsule: 8192,
        max_xfer: ADMIN_MAX_XFER,
        sq_flow_disabled: false,
    };
    let conn = Conn::new(shared.clone(), &reactor, cfg, limits);
    let ctx = Rc::new_cyclic(|me| AdminCtx {
        me: me.clone(),
        shared: shared.clone(),
        conn,
        reactor: reactor.clone(),
        keep_alive: Cell::new(None),
        ka_outstanding: Cell::new(false),
        recovery: RefCell::new(Recovery::default()),
        attempt: Cell::new(0),
        closing: Cell::new(false),
    });
    ADMINS.with(|m| m.borrow_mut().insert(shared.id, ctx.clone()));
    let weak = Rc::downgrade(&ctx);
    ctx.establish(Box::new(move |r| {
        let Some(ctx) = weak.upgrade() else {
            return done(Err(HostError::Closed));
        };
        match r {
            Ok(est) => {
                ctx.on_established(est);
                done(Ok(Arc::new(Controller {
                    shared: ctx.shared.clone(),
                })));
            }
            Err(e) => {
                ctx.shared
                    .set_state(ControllerState::Failed, Some(e.clone()));
                ctx.close_now();
                done(Err(e));
            }
        }
    }));
}

impl AdminCtx {
    pub(crate) fn rc(&self) -> Option<Rc<AdminCtx>> {
        self.me.upgrade()
    }

    /// Connects the admin queue and brings the controller up.
    pub(crate) fn establish(&self, done: JobDone) {
        let attempt = self.attempt.get() + 1;
        self.attempt.set(attempt);
        let next_assoc = self.shared.lock().assoc + 1;
        let weak = self.me.clone();
        self.conn.connect(
            CNTLID_DYNAMIC,
            next_assoc,
            Box::new(move |r| {
                let Some(ctx) = weak.upgrade() else {
                    return done(Err(HostError::Closed));
                };
                if ctx.attempt.get() != attempt {
                    return done(Err(HostError::Reconnecting));
                }
                let job = Job {
                    done,
                    cntlid: 0,
                    cap: Cap::default(),
                    ready_by: Instant::now(),
                    info: None,
                    nsids: Vec::new(),
                    next_ns: 0,
                    namespaces: Vec::new(),
                };
                match r {
                    Ok(cntlid) => {
                        let job = Job { cntlid, ..job };
                        ctx.cmd(cmd::property_get(property::CAP), Dir::None, 0, job, got_cap);
                    }
                    Err(e) => job.fail(e),
                }
            }),
        );
    }

    /// Sends an admin command of the current bring-up; `next` runs on success, any error
    /// (or an error status) ends the job.
    fn cmd(&self, sqe: Sqe, dir: Dir, len: usize, job: Job, next: Step) {
        self.cmd_any(sqe, dir, len, job, move |ctx, job, c| {
            let status = c.cqe.status();
            if status.is_success() {
                next(ctx, job, c);
            } else {
                job.fail(HostError::Status { status });
            }
        });
    }

    /// Like [`AdminCtx::cmd`], but `next` also gets error statuses.
    fn cmd_any(
        &self,
        sqe: Sqe,
        dir: Dir,
        len: usize,
        job: Job,
        next: impl FnOnce(&Rc<AdminCtx>, Job, RawCompletion) + 'static,
    ) {
        let attempt = self.attempt.get();
        let weak = self.me.clone();
        let bufs = if len > 0 {
            sg_zeroed(len)
        } else {
            SgList::new()
        };
        self.conn.raw(sqe, dir, bufs, move |r| {
            let Some(ctx) = weak.upgrade() else {
                return job.fail(HostError::Closed);
            };
            if ctx.attempt.get() != attempt {
                return job.fail(HostError::Reconnecting);
            }
            match r {
                Ok(c) => next(&ctx, job, c),
                Err(e) => job.fail(e),
            }
        });
    }

    fn poll_csts(&self, job: Job) {
        self.cmd(
            cmd::property_get(property::CSTS),
            Dir::None,
            0,
            job,
            got_csts,
        );
    }

    /// Keep Alive every KATO / 2 (NVMe Base 2.0 section 3.9: the host sends Keep Alive
    /// within KATO; half of it leaves room for the round trip).
    pub(crate) fn start_keep_alive(&self) {
        let kato = self.shared.opts.kato;
        if kato.is_zero() || self.keep_alive.get().is_some() {
            return;
        }
        let weak = self.me.clone();
        let t = self.reactor.every(kato / 2, move || {
            let Some(a) = weak.upgrade() else {
                return false;
            };
            a.send_keep_alive();
            true
        });
        self.keep_alive.set(Some(t));
    }

    pub(crate) fn stop_keep_alive(&self) {
        if let Some(t) = self.keep_alive.take() {
            self.reactor.cancel_timer(t);
        }
        self.ka_outstanding.set(false);
    }

    fn send_keep_alive(&self) {
        if self.ka_outstanding.get() || self.conn.state() != QueueState::Connected {
            return;
        }
        self.ka_outstanding.set(true);
        let weak = self.me.clone();
        self.conn
            .raw(cmd::keep_alive(), Dir::None, SgList::new(), move |_| {
                if let Some(a) = weak.upgrade() {
                    a.ka_outstanding.set(false);
                }
            });
    }

    /// A bring-up succeeded: publish the association and reconnect the I/O queues.
    pub(crate) fn on_established(&self, est: Established) {
        let (assoc, ev) = {
            let mut g = self.shared.lock();
            g.assoc += 1;
            g.cntlid = est.cntlid;
            let ev = QueueEvent::Reconnect {
                assoc: g.assoc,
                cntlid: est.cntlid,
                in_capsule: est.info.in_capsule,
                max_xfer: est.info.max_transfer,
            };
            g.info = Some(est.info);
            // Namespaces gone with the reconnect leave; the others are updated (and their
            // watchers told of a size that changed meanwhile) below.
            g.namespaces
                .retain(|n| est.namespaces.iter().any(|f| f.nsid == n.nsid));
            (g.assoc, ev)
        };
        self.shared.update_namespaces(&est.namespaces);
        tracing::debug!(assoc, cntlid = est.cntlid, "controller associated");
        self.recovery_done();
        self.shared.set_state(ControllerState::Connected, None);
        self.start_keep_alive();
        self.shared.notify_queues(&ev);
        if !self.shared.discovery {
            self.arm_events(assoc);
        }
    }

    fn close_now(&self) {
        self.stop_keep_alive();
        self.cancel_recovery();
        self.conn.close();
        let id = self.shared.id;
        let _ = ADMINS.try_with(|m| m.borrow_mut().remove(&id));
    }

    /// Shuts the controller down (NVMe Base 2.0 section 3.6.1: CC.SHN = 01b, then wait for
    /// CSTS.SHST = 10b) and closes every queue.
    pub(crate) fn shutdown(&self, done: Box<dyn FnOnce(Result<(), HostError>)>) {
        if self.closing.replace(true) {
            return done(Ok(()));
        }
        self.attempt.set(self.attempt.get() + 1);
        self.stop_keep_alive();
        self.cancel_recovery();
        self.shared.set_state(ControllerState::Closed, None);
        self.shared
            .notify_queues(&QueueEvent::Fail(HostError::Closed));
        let Some(me) = self.rc() else {
            return done(Ok(()));
        };
        if self.conn.state() != QueueState::Connected {
            self.close_now();
            return done(Ok(()));
        }
        let cc = enabled_cc().with_shn(shn::NORMAL);
        let deadline = Instant::now() + Duration::from_secs(5);
        let weak = Rc::downgrade(&me);
        self.conn.raw(
            cmd::property_set(property::CC, cc.0),
            Dir::None,
            SgList::new(),
            move |r| match (weak.upgrade(), r) {
                (Some(a), Ok(c)) if c.cqe.status().is_success() => a.wait_shst(deadline, done),
                (Some(a), r) => {
                    a.close_now();
                    done(r.and_then(|c| {
                        Err(HostError::Status {
                            status: c.cqe.status(),
                        })
                    }));
                }
                (None, _) => done(Ok(())),
            },
        );
    }

    fn wait_shst(&self, deadline: Instant, done: Box<dyn FnOnce(Result<(), HostError>)>) {
        let weak = self.me.clone();
        self.conn.raw(
            cmd::property_get(property::CSTS),
            Dir::None,
            SgList::new(),
            move |r| {
                let Some(a) = weak.upgrade() else {
                    return done(Ok(()));
                };
                let csts = match r {
                    Ok(c) if c.cqe.status().is_success() => Csts(c.cqe.dw0.get()),
                    Ok(c) => {
                        a.close_now();
                        return done(Err(HostError::Status {
                            status: c.cqe.status(),
                        }));
                    }
                    Err(e) => {
                        a.close_now();
                        return done(Err(e));
                    }
                };
                if csts.shst() == shst::COMPLETE {
                    a.close_now();
                    return done(Ok(()));
                }
                if Instant::now() >= deadline {
                    a.close_now();
                    return done(Err(HostError::NotReady("shutdown did not complete")));
                }
                let weak = Rc::downgrade(&a);
                a.reactor
                    .call_after(Duration::from_millis(10), move || match weak.upgrade() {
                        Some(a) => a.wait_shst(deadline, done),
                        None => done(Ok(())),
                    });
            },
        );
    }
}

/// CC for an enabled NVM controller (NVMe Base 2.0 section 3.1.3.5): EN = 1, CSS = 000b
/// (NVM command set), MPS = 0 (4 KiB), AMS = 000b (round robin), IOSQES = 6 (64-byte SQEs),
/// IOCQES = 4 (16-byte CQEs).
fn enabled_cc() -> Cc {
    Cc::default().with_en(true).with_iosqes(6).with_iocqes(4)
}

fn got_cap(ctx: &Rc<AdminCtx>, job: Job, c: RawCompletion) {
    // CAP is 8 bytes: DW0 holds bits 31:0, DW1 bits 63:32 (NVMe-oF 1.1 Property Get response).
    let cap = Cap(u64::from(c.cqe.dw0.get()) | (u64::from(c.cqe.dw1.get()) << 32));
    // CAP.TO: worst-case time to become ready, in 500 ms units; at least 500 ms here.
    let to = Duration::from_millis(500 * u64::from(cap.to().max(1)));
    let job = Job {
        cap,
        ready_by: Instant::now() + to,
        ..job
    };
    ctx.cmd(
        cmd::property_set(property::CC, enabled_cc().0),
        Dir::None,
        0,
        job,
        |ctx, job, _| ctx.poll_csts(job),
    );
}

fn got_csts(ctx: &Rc<AdminCtx>, job: Job, c: RawCompletion) {
    let csts = Csts(c.cqe.dw0.get());
    if csts.cfs() {
        return job.fail(HostError::NotReady("controller fatal status (CSTS.CFS)"));
    }
    if csts.rdy() {
        return ctx.cmd(
            cmd::identify(Cns::CONTROLLER, 0),
            Dir::ToHost,
            IDENTIFY_DATA_SIZE,
            job,
            got_identify_controller,
        );
    }
    if Instant::now() >= job.ready_by {
        return job.fail(HostError::NotReady("CSTS.RDY not set within CAP.TO"));
    }
    let weak = Rc::downgrade(ctx);
    ctx.reactor
        .call_after(Duration::from_millis(10), move || match weak.upgrade() {
            Some(ctx) => ctx.poll_csts(job),
            None => job.fail(HostError::Closed),
        });
}

pub(crate) fn first_page(c: &RawCompletion) -> [u8; IDENTIFY_DATA_SIZE] {
    let mut page = [0u8; IDENTIFY_DATA_SIZE];
    shoal_bdev::buf::sg_copy_out(&c.data, 0, &mut page);
    page
}

fn got_identify_controller(ctx: &Rc<AdminCtx>, job: Job, c: RawCompletion) {
    let page = first_page(&c);
    let id = IdentifyController::from_array(&page);
    let info = ControllerInfo::parse(&id, job.cap, ctx.shared.opts.max_io_size);
    let job = Job {
        info: Some(info),
        ..job
    };
    if ctx.shared.discovery {
        return finish(job);
    }
    // Set Features Number of Queues (NVMe Base 2.0 section 5.27.1.5): NSQR and NCQR, 0's
    // based, in CDW11; the counts allocated come back the same way in DW0.
    let n = u32::from(ctx.shared.opts.io_queues.max(1) - 1);
    ctx.cmd(
        cmd::set_features(FeatureId::NUMBER_OF_QUEUES, n | (n << 16)),
        Dir::None,
        0,
        job,
        got_queues,
    );
}

fn got_queues(ctx: &Rc<AdminCtx>, mut job: Job, c: RawCompletion) {
    let dw0 = c.cqe.dw0.get();
    let nsqa = dw0 & 0xFFFF;
    let ncqa = dw0 >> 16;
    let granted = u16::try_from(nsqa.min(ncqa) + 1).unwrap_or(u16::MAX);
    if let Some(info) = job.info.as_mut() {
        info.io_queues = granted.min(ctx.shared.opts.io_queues.max(1));
    }
    list_namespaces(ctx, job, 0);
}

/// Identify CNS 02h: active NSIDs above `after`, 1024 per page, ascending, ended by 0.
fn list_namespaces(ctx: &Rc<AdminCtx>, job: Job, after: u32) {
    ctx.cmd(
        cmd::identify(Cns::ACTIVE_NAMESPACE_LIST, after),
        Dir::ToHost,
        IDENTIFY_DATA_SIZE,
        job,
        got_ns_list,
    );
}

fn got_ns_list(ctx: &Rc<AdminCtx>, mut job: Job, c: RawCompletion) {
    let page = first_page(&c);
    let mut count = 0;
    for chunk in page.chunks_exact(4) {
        let nsid = <[u8; 4]>::try_from(chunk).map_or(0, u32::from_le_bytes);
        // NVMe Base 2.0 section 5.17.2.2: the list is in increasing order; anything else (or
        // more than the host is willing to track) ends it.
        let last = job.nsids.last().copied().unwrap_or(0);
        if nsid == 0 || nsid <= last || job.nsids.len() >= MAX_NAMESPACES {
            break;
        }
        job.nsids.push(nsid);
        count += 1;
    }
    let last = job.nsids.last().copied().unwrap_or(0);
    if count == IDENTIFY_DATA_SIZE / 4 && last < 0xFFFF_FFFE {
        return list_namespaces(ctx, job, last);
    }
    next_namespace(ctx, job);
}

fn next_namespace(ctx: &Rc<AdminCtx>, job: Job) {
    let Some(&nsid) = job.nsids.get(job.next_ns) else {
        return finish(job);
    };
    ctx.cmd(
        cmd::identify(Cns::NAMESPACE, nsid),
        Dir::ToHost,
        IDENTIFY_DATA_SIZE,
        job,
        got_namespace,
    );
}

fn got_namespace(ctx: &Rc<AdminCtx>, mut job: Job, c: RawCompletion) {
    let nsid = job.nsids.get(job.next_ns).copied().unwrap_or(0);
    let id = IdentifyNamespace::from_array(&first_page(&c));
    job.next_ns += 1;
    let Some(ns) = NamespaceInfo::parse(nsid, &id) else {
        tracing::warn!(
            nsid,
            "namespace skipped: inactive, metadata or unusable format"
        );
        return next_namespace(ctx, job);
    };
    // Namespace identification descriptors (CNS 03h) for the UUID; optional before NVMe 1.3,
    // so an error status just leaves the UUID out.
    ctx.cmd_any(
        cmd::identify(Cns::NAMESPACE_ID_DESCRIPTORS, nsid),
        Dir::ToHost,
        IDENTIFY_DATA_SIZE,
        job,
        move |ctx, mut job, c| {
            let mut ns = ns;
            if c.cqe.status().is_success() {
                ns.set_descriptors(&first_page(&c));
            }
            job.namespaces.push(ns);
            next_namespace(ctx, job);
        },
    );
}

fn finish(job: Job) {
    let Some(info) = job.info else {
        return (job.done)(Err(HostError::NotReady("no Identify Controller data")));
    };
    let est = Established {
        cntlid: job.cntlid,
        info: ControllerInfo {
            cntlid: job.cntlid,
            ..info
        },
        namespaces: job.namespaces,
    };
    (job.done)(Ok(est));
}

trait FromPage {
    fn from_array(page: &[u8; IDENTIFY_DATA_SIZE]) -> Self;
}

impl FromPage for IdentifyController {
    fn from_array(page: &[u8; IDENTIFY_DATA_SIZE]) -> Self {
        zerocopy::FromBytes::read_from_bytes(&page[..]).unwrap_or_else(|_| Self::zeroed())
    }
}

impl FromPage for IdentifyNamespace {
    fn from_array(page: &[u8; IDENTIFY_DATA_SIZE]) -> Self {
        zerocopy::FromBytes::read_from_bytes(&page[..]).unwrap_or_else(|_| Self::zeroed())
    }
}
