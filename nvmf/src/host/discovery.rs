//! Discovery (NVMe-oF 1.1 section 5): connect to a discovery controller, read the Discovery
//! log page (Get Log Page 70h), disconnect.
//!
//! The log is read as NVMe-oF 1.1 section 5.3 describes: the header first (GENCTR, NUMREC),
//! then the header and all records in chunks, then the header again; if GENCTR moved in
//! between, the log changed under the reader and it starts over (at most
//! [`MAX_DISCOVERY_TRIES`] times).

use std::rc::Rc;
use std::sync::Arc;

use shoal_reactor::ReactorHandle;

use super::admin::{ADMIN_MAX_XFER, AdminCtx, with_admin};
use super::cmd::{self, Dir};
use super::error::HostError;
use super::options::ConnectOptions;
use super::queue::sg_zeroed;
use super::shared::{Controller, on_reactor};
use crate::wire::spec::log::{
    DISCOVERY_RECORD_SIZE, DiscoveryLogEntry, DiscoveryLogHeader, LogPageId, discovery,
};

/// Times the log is read again because its generation counter changed.
pub const MAX_DISCOVERY_TRIES: u32 = 10;

/// The most records the host reads from one discovery log.
pub const MAX_DISCOVERY_RECORDS: u64 = 4096;

/// The well-known port of NVMe/TCP discovery controllers (IANA-assigned, as NVMe/TCP 1.0a
/// names it).
pub const DISCOVERY_PORT: u16 = 8009;

/// One Discovery log page entry (NVMe-oF 1.1 section 5.3, Figure 41).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryEntry {
    /// TRTYPE (3: TCP).
    pub trtype: u8,
    /// ADRFAM (1: IPv4, 2: IPv6).
    pub adrfam: u8,
    /// SUBTYPE (2: NVM subsystem, 1 and 3: discovery).
    pub subtype: u8,
    /// TREQ.
    pub treq: u8,
    /// PORTID.
    pub portid: u16,
    /// CNTLID (0xFFFF: dynamic).
    pub cntlid: u16,
    /// ASQSZ.
    pub asqsz: u16,
    /// TRSVCID: the port.
    pub trsvcid: String,
    /// SUBNQN.
    pub subnqn: String,
    /// TRADDR: the address.
    pub traddr: String,
    /// TSAS SECTYPE (TCP).
    pub sectype: u8,
}

fn text(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(field.get(..end).unwrap_or(&[]))
        .trim_end_matches(' ')
        .to_string()
}

impl DiscoveryEntry {
    /// Reads an entry. Text fields are NUL-terminated or space-padded ASCII; invalid UTF-8
    /// is replaced rather than refused.
    pub fn parse(e: &DiscoveryLogEntry) -> DiscoveryEntry {
        DiscoveryEntry {
            trtype: e.trtype,
            adrfam: e.adrfam,
            subtype: e.subtype,
            treq: e.treq,
            portid: e.portid.get(),
            cntlid: e.cntlid.get(),
            asqsz: e.asqsz.get(),
            trsvcid: text(&e.trsvcid),
            subnqn: text(&e.subnqn),
            traddr: text(&e.traddr),
            sectype: e.tsas.first().copied().unwrap_or(0),
        }
    }

    /// Whether this is an NVM subsystem reachable over TCP.
    pub fn is_tcp_subsystem(&self) -> bool {
        self.trtype == discovery::TRTYPE_TCP && self.subtype == discovery::SUBTYPE_NVME
    }

    /// Options to connect to this entry's subsystem with the host identity of `base`.
    pub fn connect_options(&self, base: &ConnectOptions) -> Option<ConnectOptions> {
        let port = self.trsvcid.trim().parse().ok()?;
        let mut o = base.clone();
        o.host = self.traddr.clone();
        o.port = port;
        o.subnqn = self.subnqn.clone();
        Some(o)
    }
}

impl ConnectOptions {
    /// Options for the discovery controller at `host:port` (keep-alive off: the host reads
    /// the log and disconnects).
    pub fn discovery(host: &str, port: u16) -> ConnectOptions {
        let mut o = ConnectOptions::new(host, port, discovery::DISCOVERY_NQN);
        o.kato = std::time::Duration::ZERO;
        o
    }
}

/// Connects to the discovery controller `opts` names (see [`ConnectOptions::discovery`]),
/// reads its log and disconnects, with the admin queue on `admin`. Blocks the calling thread
/// (not `admin`'s).
pub fn discover(
    admin: &ReactorHandle,
    opts: ConnectOptions,
) -> Result<Vec<DiscoveryEntry>, HostError> {
    if on_reactor(admin) {
        return Err(HostError::Reactor("discover blocks: use discover_async"));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    if !admin.send(move || {
        discover_async(opts, move |r| {
            let _ = tx.send(r);
        });
    }) {
        return Err(HostError::Reactor("the admin reactor has stopped"));
    }
    rx.recv()
        .unwrap_or(Err(HostError::Reactor("the admin reactor has stopped")))
}

type Done = Box<dyn FnOnce(Result<Vec<DiscoveryEntry>, HostError>)>;

/// [`discover`] on the current reactor; `done` runs on it.
pub fn discover_async(
    opts: ConnectOptions,
    done: impl FnOnce(Result<Vec<DiscoveryEntry>, HostError>) + 'static,
) {
    let done: Done = Box::new(done);
    super::admin::start(
        opts,
        true,
        Box::new(move |r| match r {
            Err(e) => done(Err(e)),
            Ok(ctrl) => {
                let id = ctrl.shared.id;
                let mut slot = Some((ctrl, done));
                with_admin(id, |a| {
                    if let Some((ctrl, done)) = slot.take() {
                        read_log(a, ctrl, 0, done);
                    }
                });
                if let Some((_, done)) = slot {
                    done(Err(HostError::Closed));
                }
            }
        }),
    )
}

/// Reads `len` bytes of the discovery log at `offset` in chunks.
fn get_log(
    a: &Rc<AdminCtx>,
    offset: u64,
    len: usize,
    mut acc: Vec<u8>,
    done: Box<dyn FnOnce(Result<Vec<u8>, HostError>)>,
) {
    let max = a
        .shared
        .lock()
        .info
        .as_ref()
        .map_or(ADMIN_MAX_XFER, |i| i.max_transfer.min(ADMIN_MAX_XFER));
    let max = usize::try_from(max).unwrap_or(4096) / DISCOVERY_RECORD_SIZE * DISCOVERY_RECORD_SIZE;
    let chunk = (len - acc.len()).min(max.max(DISCOVERY_RECORD_SIZE));
    let at = offset + u64::try_from(acc.len()).unwrap_or(u64::MAX);
    let sqe = cmd::get_log_page(
        LogPageId::DISCOVERY,
        0,
        at,
        u32::try_from(chunk).unwrap_or(u32::MAX),
    );
    let weak = Rc::downgrade(a);
    a.conn.raw(sqe, Dir::ToHost, sg_zeroed(chunk), move |r| {
        let c = match r {
            Ok(c) if c.cqe.status().is_success() => c,
            Ok(c) => {
                return done(Err(HostError::Status {
                    status: c.cqe.status(),
                }));
            }
            Err(e) => return done(Err(e)),
        };
        let start = acc.len();
        acc.resize(start + chunk, 0);
        if let Some(dst) = acc.get_mut(start..) {
            shoal_bdev::buf::sg_copy_out(&c.data, 0, dst);
        }
        match weak.upgrade() {
            Some(a) if acc.len() < len => get_log(&a, offset, len, acc, done),
            Some(_) => done(Ok(acc)),
            None => done(Err(HostError::Closed)),
        }
    });
}

fn header(bytes: &[u8]) -> DiscoveryLogHeader {
    zerocopy::FromBytes::read_from_prefix(bytes)
        .map(|(h, _)| h)
        .unwrap_or_else(|_| DiscoveryLogHeader::zeroed())
}

type Log = Box<dyn FnOnce(Result<(Rc<AdminCtx>, Vec<u8>), HostError>)>;

/// [`get_log`] whose callback also gets the admin context back.
fn get_log_then(a: &Rc<AdminCtx>, len: usize, next: Log) {
    let weak = Rc::downgrade(a);
    get_log(
        a,
        0,
        len,
        Vec::new(),
        Box::new(move |r| match (r, weak.upgrade()) {
            (Ok(bytes), Some(a)) => next(Ok((a, bytes))),
            (Err(e), _) => next(Err(e)),
            (Ok(_), None) => next(Err(HostError::Closed)),
        }),
    );
}

/// Header, then header and records, then header again (NVMe-oF 1.1 section 5.3).
fn read_log(a: &Rc<AdminCtx>, ctrl: Arc<Controller>, tries: u32, done: Done) {
    if tries >= MAX_DISCOVERY_TRIES {
        return done(Err(HostError::Invalid(
            "the discovery log kept changing".into(),
        )));
    }
    get_log_then(
        a,
        DISCOVERY_RECORD_SIZE,
        Box::new(move |r| {
            let (a, first) = match r {
                Ok(x) => x,
                Err(e) => return done(Err(e)),
            };
            let h = header(&first);
            let numrec = h.numrec.get();
            if numrec > MAX_DISCOVERY_RECORDS {
                return done(Err(HostError::Invalid(format!(
                    "discovery log with {numrec} records"
                ))));
            }
            let records = usize::try_from(numrec).unwrap_or(0);
            let genctr = h.genctr.get();
            get_log_then(
                &a,
                (records + 1) * DISCOVERY_RECORD_SIZE,
                Box::new(move |r| {
                    let (a, log) = match r {
                        Ok(x) => x,
                        Err(e) => return done(Err(e)),
                    };
                    get_log_then(
                        &a,
                        DISCOVERY_RECORD_SIZE,
                        Box::new(move |r| {
                            let (a, last) = match r {
                                Ok(x) => x,
                                Err(e) => return done(Err(e)),
                            };
                            let same = header(&log).genctr.get() == genctr
                                && header(&last).genctr.get() == genctr;
                            if !same {
                                return read_log(&a, ctrl, tries + 1, done);
                            }
                            let entries = log
                                .chunks_exact(DISCOVERY_RECORD_SIZE)
                                .skip(1)
                                .take(records)
                                .filter_map(|rec| {
                                    zerocopy::FromBytes::read_from_bytes(rec)
                                        .ok()
                                        .map(|e: DiscoveryLogEntry| DiscoveryEntry::parse(&e))
                                })
                                .collect();
                            drop(ctrl);
                            done(Ok(entries));
                        }),
                    );
                }),
            );
        }),
    );
}
