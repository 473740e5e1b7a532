//! The connect sequence of a queue pair: TCP connect on a helper thread, ICReq / ICResp, then
//! Fabrics Connect (NVMe-oF 1.1 section 3.3), all under one connect timeout.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use shoal_bdev::IoBuf;

use super::{Conn, ConnectDone, Phase, Sock, with_conn};
use crate::host::cmd::{self, Dir};
use crate::host::error::HostError;
use crate::host::queue::{Gate, RawCompletion, Waiter, Work};
use crate::wire::pdu::Digests;
use crate::wire::spec::fabrics::CATTR_DISABLE_SQ_FLOW_CONTROL;

fn connect_tcp(host: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "address did not resolve");
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl Conn {
    /// Starts connecting with controller ID `cntlid` under association `assoc`; `done` is
    /// called once with the result. An existing connection is torn down first.
    pub(crate) fn connect(&self, cntlid: u16, assoc: u64, done: ConnectDone) {
        self.teardown(&HostError::Reconnecting);
        let mut st = self.st.borrow_mut();
        if matches!(st.phase, Phase::Closed) {
            drop(st);
            done(Err(HostError::Closed));
            return;
        }
        st.epoch += 1;
        st.assoc = assoc;
        st.phase = Phase::Tcp;
        st.on_connect = Some(done);
        let epoch = st.epoch;
        let opts = &self.ctrl.opts;
        let weak = self.me.clone();
        st.connect_timer = Some(self.reactor.call_after(opts.connect_timeout, move || {
            if let Some(c) = weak.upgrade() {
                c.connect_deadline(epoch);
            }
        }));
        drop(st);
        let handle = self.reactor.handle();
        let (host, port, timeout) = (opts.host.clone(), opts.port, opts.connect_timeout);
        let id = self.id;
        let spawned = std::thread::Builder::new()
            .name("nvmf-connect".into())
            .spawn(move || {
                let r = connect_tcp(&host, port, timeout);
                handle.send(move || with_conn(id, |c| c.on_tcp(epoch, cntlid, r)));
            });
        if let Err(e) = spawned {
            self.connect_failed(epoch, HostError::io("spawning the connect thread", e));
        }
    }

    fn on_tcp(&self, epoch: u64, cntlid: u16, r: std::io::Result<TcpStream>) {
        let mut st = self.st.borrow_mut();
        if st.epoch != epoch || !matches!(st.phase, Phase::Tcp) {
            return;
        }
        let stream = match r {
            Ok(s) => s,
            Err(e) => {
                drop(st);
                self.connect_failed(epoch, HostError::io("TCP connect", e));
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        st.sock = Some(Sock {
            stream,
            epoch,
            recv: false,
            send: false,
        });
        st.phase = Phase::Ic;
        st.rx = Some(IoBuf::with_capacity(st.core.rx_capacity()));
        st.rx_pos = 0;
        let opts = &self.ctrl.opts;
        st.core.begin(Digests {
            header: opts.header_digest,
            data: opts.data_digest,
        });
        // Fabrics Connect (NVMe-oF 1.1 section 3.3): SQSIZE is 0's based; I/O queues ask for
        // SQ flow control to be disabled, so C2HData may carry SUCCESS.
        let cattr = if st.core.limits.sq_flow_disabled {
            CATTR_DISABLE_SQ_FLOW_CONTROL
        } else {
            0
        };
        let sqe = cmd::connect(
            self.cfg.qid,
            self.cfg.depth.saturating_sub(1),
            cattr,
            self.cfg.kato_ms,
        );
        let data = cmd::connect_data(opts.hostid, cntlid, &opts.subnqn, &opts.hostnqn);
        let bufs = crate::host::queue::sg_of(zerocopy::IntoBytes::as_bytes(&data));
        let weak = self.me.clone();
        let work = Work::Raw {
            sqe,
            dir: Dir::ToCtrl,
            len: 1024,
            connect: true,
        };
        let waiter = Waiter::Callback(Box::new(move |r| {
            if let Some(c) = weak.upgrade() {
                c.on_connect_response(epoch, r);
            }
        }));
        st.core.push(work, bufs, waiter);
        st.dirty = true;
        drop(st);
        self.post_recv();
    }

    fn on_connect_response(&self, epoch: u64, r: Result<RawCompletion, HostError>) {
        let comp = {
            let st = self.st.borrow();
            if st.epoch != epoch || !matches!(st.phase, Phase::Connect | Phase::Ic) {
                return;
            }
            match r {
                Ok(c) => c,
                Err(e) => {
                    drop(st);
                    self.connect_failed(epoch, e);
                    return;
                }
            }
        };
        let status = comp.cqe.status();
        if !status.is_success() {
            let dw0 = comp.cqe.dw0.get();
            self.connect_failed(epoch, HostError::ConnectRefused { status, dw0 });
            return;
        }
        let cntlid = u16::try_from(comp.cqe.dw0.get() & 0xFFFF).unwrap_or(u16::MAX);
        let done = {
            let mut st = self.st.borrow_mut();
            st.phase = Phase::Live;
            st.core.gate = Gate::Open;
            st.core.issue(Instant::now());
            st.dirty = true;
            if let Some(t) = st.connect_timer.take() {
                self.reactor.cancel_timer(t);
            }
            st.on_connect.take()
        };
        self.arm_timeout();
        if let Some(done) = done {
            done(Ok(cntlid));
        }
    }

    fn connect_deadline(&self, epoch: u64) {
        let timed_out = {
            let st = self.st.borrow();
            st.epoch == epoch && matches!(st.phase, Phase::Tcp | Phase::Ic | Phase::Connect)
        };
        if timed_out {
            let t = self.ctrl.opts.connect_timeout;
            self.connect_failed(epoch, HostError::Timeout(t));
        }
    }

    pub(super) fn connect_failed(&self, epoch: u64, err: HostError) {
        let done = {
            let mut st = self.st.borrow_mut();
            if st.epoch != epoch {
                return;
            }
            st.on_connect.take()
        };
        self.teardown(&err);
        {
            let mut st = self.st.borrow_mut();
            if !matches!(st.phase, Phase::Closed | Phase::Failed(_)) {
                st.phase = Phase::Down;
            }
        }
        if let Some(done) = done {
            done(Err(err));
        }
    }
}
