//! A scripted, misbehaving NVMe/TCP target (a std `TcpListener` thread speaking just enough
//! of the protocol) against the host: every violation ends the connection with a typed
//! error, nothing panics, nothing lands outside the caller's buffers, and the controller
//! reconnects and completes the request once the target behaves.
#![allow(missing_docs, clippy::cast_possible_truncation)]

mod common;
mod host_common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use host_common::*;
use shoal_bdev::{BdevError, BdevIo};
use shoal_nvmf::host::{
    ConnectOptions, Controller, ControllerState, HostError, IoQueuePair, ProtocolError, QueueState,
};
use shoal_nvmf::wire::pdu::{
    CapsuleResp, ConnectionParams, DataHeader, Deframed, Deframer, Digests, Fes, FrameOptions,
    IcResp, PduHeader, R2t, Role, TermReq,
};
use shoal_nvmf::wire::spec::identify::{IdentifyController, IdentifyNamespace};
use shoal_nvmf::wire::spec::opcode::{admin, io};
use shoal_nvmf::wire::spec::property::Cap;
use shoal_nvmf::wire::spec::{Cqe, FabricsType, Opcode, Sqe, Status};
use zerocopy::IntoBytes;

/// What the fake target does wrong, once, to the first I/O command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Misbehave {
    C2HBeyondCommand,
    ResponseForUnknownCid,
    BadDataDigest,
    R2tOutsideCommand,
    C2HWrongOffset,
    GarbagePdu,
    TermReq,
    Silent,
}

/// The byte a good read returns.
const GOOD: u8 = 0x5A;
/// The byte misbehaving data carries.
const EVIL: u8 = 0xEE;

struct Script {
    what: Misbehave,
    done: AtomicBool,
    connections: AtomicUsize,
}

struct FakeConn {
    sock: TcpStream,
    rx: Vec<u8>,
    deframer: Deframer,
    opts: FrameOptions,
    script: Arc<Script>,
    qid: u16,
    shutdown: bool,
}

fn start_fake(what: Misbehave) -> (std::net::SocketAddr, Arc<Script>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let script = Arc::new(Script {
        what,
        done: AtomicBool::new(false),
        connections: AtomicUsize::new(0),
    });
    let s = script.clone();
    std::thread::spawn(move || {
        for sock in l.incoming() {
            let Ok(sock) = sock else { return };
            s.connections.fetch_add(1, Ordering::SeqCst);
            let s = s.clone();
            std::thread::spawn(move || {
                let mut c = FakeConn {
                    sock,
                    rx: Vec::new(),
                    deframer: Deframer::new(Role::Controller),
                    opts: FrameOptions::default(),
                    script: s,
                    qid: 0,
                    shutdown: false,
                };
                c.serve();
            });
        }
    });
    (addr, script)
}

impl FakeConn {
    fn send(&mut self, h: PduHeader, data: &[u8]) {
        let mut out = vec![0u8; 256];
        let e = h.encode_header(data.len(), &self.opts, &mut out).unwrap();
        out.truncate(e.header_len);
        out.extend_from_slice(data);
        if e.data_digest {
            out.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
        }
        let _ = self.sock.write_all(&out);
    }

    fn recv(&mut self) -> Option<(PduHeader, Vec<u8>)> {
        loop {
            match self.deframer.decode(&self.rx) {
                Ok(Deframed::Frame(f)) => {
                    let data = f.data(&self.rx).to_vec();
                    self.rx.drain(..f.len);
                    return Some((f.header, data));
                }
                Ok(Deframed::NeedMore(_)) => {
                    let mut buf = [0u8; 65536];
                    match self.sock.read(&mut buf) {
                        Ok(0) | Err(_) => return None,
                        Ok(n) => self.rx.extend_from_slice(&buf[..n]),
                    }
                }
                _ => return None,
            }
        }
    }

    fn respond(&mut self, cid: u16, dw0: u32, dw1: u32) {
        let cqe = Cqe::new(cid, self.qid, 0, Status::SUCCESS)
            .with_dw0(dw0)
            .with_dw1(dw1);
        self.send(PduHeader::CapsuleResp(CapsuleResp { cqe }), &[]);
    }

    fn c2h(&mut self, cid: u16, datao: u32, data: &[u8]) {
        let h = DataHeader {
            cccid: cid,
            ttag: 0,
            datao,
            datal: data.len() as u32,
            last_pdu: true,
            success: false,
        };
        self.send(PduHeader::C2HData(h), data);
    }

    fn serve(&mut self) {
        let Some((PduHeader::IcReq(ic), _)) = self.recv() else {
            return;
        };
        let digests = ic.digests;
        let resp = IcResp {
            pfv: 0,
            cpda: 0,
            digests,
            maxh2cdata: 4096,
        };
        self.send(PduHeader::IcResp(resp), &[]);
        self.opts = FrameOptions {
            header_digest: digests.header,
            data_digest: digests.data,
            pda: 0,
        };
        self.deframer.establish(ConnectionParams {
            header_digest: digests.header,
            data_digest: digests.data,
            rx_pda: 0,
            max_in_capsule_data: 8192,
            max_h2c_data: 4096,
            max_c2h_data: 0,
        });
        while let Some((h, data)) = self.recv() {
            match h {
                PduHeader::CapsuleCmd(c) => self.command(&c.sqe, &data),
                PduHeader::H2CData(d) if d.last_pdu => self.respond(d.cccid, 0, 0),
                _ => {}
            }
        }
    }

    fn command(&mut self, sqe: &Sqe, data: &[u8]) {
        let cid = sqe.cid();
        if sqe.opcode() == Opcode::FABRICS {
            return self.fabrics(sqe);
        }
        if self.qid == 0 {
            return self.admin(sqe);
        }
        let first = !self.script.done.swap(true, Ordering::SeqCst);
        let len = (sqe.cdw12.get() & 0xFFFF) as usize + 1;
        let bytes = len * 4096;
        if first {
            return self.misbehave(sqe, bytes);
        }
        match sqe.opcode() {
            io::READ => {
                self.c2h(cid, 0, &vec![GOOD; bytes]);
                self.respond(cid, 0, 0);
            }
            io::WRITE if data.is_empty() => {
                let r = R2t {
                    cccid: cid,
                    ttag: 1,
                    r2to: 0,
                    r2tl: bytes as u32,
                };
                self.send(PduHeader::R2t(r), &[]);
            }
            _ => self.respond(cid, 0, 0),
        }
    }

    fn misbehave(&mut self, sqe: &Sqe, bytes: usize) {
        let cid = sqe.cid();
        match self.script.what {
            Misbehave::C2HBeyondCommand => self.c2h(cid, 0, &vec![EVIL; bytes * 2]),
            Misbehave::ResponseForUnknownCid => self.respond(cid.wrapping_add(1000), 0, 0),
            Misbehave::BadDataDigest => {
                let mut out = vec![0u8; 256];
                let h = DataHeader {
                    cccid: cid,
                    ttag: 0,
                    datao: 0,
                    datal: bytes as u32,
                    last_pdu: true,
                    success: false,
                };
                let e = PduHeader::C2HData(h)
                    .encode_header(bytes, &self.opts, &mut out)
                    .unwrap();
                out.truncate(e.header_len);
                out.extend_from_slice(&vec![EVIL; bytes]);
                out.extend_from_slice(&0xDEAD_BEEFu32.to_le_bytes());
                let _ = self.sock.write_all(&out);
            }
            Misbehave::R2tOutsideCommand => {
                let r = R2t {
                    cccid: cid,
                    ttag: 1,
                    r2to: 0,
                    r2tl: (bytes * 2) as u32,
                };
                self.send(PduHeader::R2t(r), &[]);
            }
            Misbehave::C2HWrongOffset => self.c2h(cid, 512, &vec![EVIL; 512]),
            Misbehave::GarbagePdu => {
                let _ = self.sock.write_all(&[0x42, 0, 24, 0, 24, 0, 0, 0]);
            }
            Misbehave::TermReq => {
                let t = TermReq {
                    fes: Fes::INVALID_HEADER_FIELD,
                    fei: 2,
                };
                let mut out = vec![0u8; 64];
                let e = PduHeader::C2HTermReq(t)
                    .encode_header(0, &FrameOptions::default(), &mut out)
                    .unwrap();
                let _ = self.sock.write_all(&out[..e.header_len]);
            }
            Misbehave::Silent => {}
        }
    }

    fn fabrics(&mut self, sqe: &Sqe) {
        let cid = sqe.cid();
        match sqe.fctype() {
            FabricsType::CONNECT => {
                self.qid = (sqe.cdw10.get() >> 16) as u16;
                self.respond(cid, 1, 0);
            }
            FabricsType::PROPERTY_GET => match sqe.cdw11.get() {
                0x00 => {
                    let cap = Cap::default()
                        .with_mqes(127)
                        .with_to(2)
                        .with_css(Cap::CSS_NVM);
                    self.respond(cid, cap.0 as u32, (cap.0 >> 32) as u32)
                }
                0x1C => {
                    let shst = if self.shutdown { 0b1000 } else { 0 };
                    self.respond(cid, 1 | shst, 0)
                }
                _ => self.respond(cid, 0, 0),
            },
            FabricsType::PROPERTY_SET => {
                self.shutdown = sqe.cdw12.get() & (0b11 << 14) != 0;
                self.respond(cid, 0, 0);
            }
            _ => self.respond(cid, 0, 0),
        }
    }

    fn admin(&mut self, sqe: &Sqe) {
        let cid = sqe.cid();
        if sqe.opcode() != admin::IDENTIFY {
            // Set Features Number of Queues: one I/O queue; Keep Alive and the rest: success.
            return self.respond(cid, 0, 0);
        }
        let mut page = vec![0u8; 4096];
        match sqe.cdw10.get() & 0xFF {
            1 => {
                let mut id = IdentifyController::zeroed();
                id.mdts = 5;
                id.cntlid.set(1);
                id.maxcmd.set(128);
                id.nn.set(1);
                id.oncs.set(0x0C);
                id.cntrltype = 1;
                // IOCCSZ 4: no in-capsule data, so writes go through R2T.
                id.ioccsz.set(4);
                id.subnqn = shoal_nvmf::wire::spec::nqn_field(common::NQN);
                page.copy_from_slice(id.as_bytes());
            }
            2 => page[..4].copy_from_slice(&1u32.to_le_bytes()),
            0 => {
                let mut ns = IdentifyNamespace::zeroed();
                ns.nsze.set(256);
                ns.ncap.set(256);
                ns.lbaf[0].lbads = 12;
                ns.nguid = [7; 16];
                page.copy_from_slice(ns.as_bytes());
            }
            _ => {}
        }
        self.c2h(cid, 0, &page);
        self.respond(cid, 0, 0);
    }
}

struct Rig {
    _host: shoal_reactor::ReactorSet,
    ctrl: Arc<Controller>,
    d: Driver,
    qp: IoQueuePair,
    states: Arc<std::sync::Mutex<Vec<ControllerState>>>,
    script: Arc<Script>,
}

fn rig(what: Misbehave, digests: bool) -> Rig {
    let (addr, script) = start_fake(what);
    let host = host_reactors();
    let mut o = ConnectOptions::new("127.0.0.1", addr.port(), common::NQN);
    o.header_digest = digests;
    o.data_digest = digests;
    o.reconnect_delay = Duration::from_millis(50);
    o.io_timeout = Duration::from_millis(500);
    o.admin_timeout = Duration::from_secs(2);
    let states = state_log(&mut o);
    let ctrl = Controller::connect(&host.handles()[0], o).unwrap();
    let d = Driver::new();
    let qp = IoQueuePair::open(&ctrl).unwrap();
    d.until("the I/O queue to connect", || {
        qp.state() == QueueState::Connected
    });
    Rig {
        _host: host,
        ctrl,
        d,
        qp,
        states,
        script,
    }
}

/// Reads one block through a misbehaving target: the read completes once the target
/// behaves, with the good data only, and the controller went through a reconnect.
fn read_through(what: Misbehave, digests: bool) -> HostError {
    let r = rig(what, digests);
    let ns = r.ctrl.namespace(1).unwrap();
    r.qp.submit(&ns, BdevIo::read(3, 1, sg_zeroed(&[4096])), r.d.sink(), 1);
    let (_, io, res) = r.d.wait(1).pop().unwrap();
    res.unwrap_or_else(|e| panic!("{what:?}: the reissued read failed: {e}"));
    assert_eq!(io.bufs.len(), 1);
    assert_eq!(io.bufs[0].len(), 4096, "the buffer keeps its length");
    assert!(
        io.bufs[0].as_slice().iter().all(|&b| b == GOOD),
        "{what:?}: only good data"
    );
    checks_after(&r, what)
}

fn checks_after(r: &Rig, what: Misbehave) -> HostError {
    assert!(r.script.done.load(Ordering::SeqCst));
    assert!(
        r.script.connections.load(Ordering::SeqCst) >= 4,
        "{what:?}: admin and I/O queue connected again"
    );
    let log = r.states.lock().unwrap().clone();
    assert!(
        log.contains(&ControllerState::Reconnecting),
        "{what:?}: {log:?}"
    );
    assert_eq!(
        log.last(),
        Some(&ControllerState::Connected),
        "{what:?}: {log:?}"
    );
    r.ctrl
        .last_error()
        .expect("the error that caused the reconnect")
}

#[test]
fn c2h_data_beyond_the_command() {
    let e = read_through(Misbehave::C2HBeyondCommand, false);
    assert!(
        matches!(
            e,
            HostError::Protocol(ProtocolError::DataBeyondCommand {
                end: 8192,
                len: 4096,
                ..
            })
        ),
        "{e}"
    );
}

#[test]
fn response_for_a_cid_not_outstanding() {
    let e = read_through(Misbehave::ResponseForUnknownCid, false);
    assert!(
        matches!(
            e,
            HostError::Protocol(ProtocolError::UnknownCid {
                pdu: "CapsuleResp",
                ..
            })
        ),
        "{e}"
    );
}

#[test]
fn bad_data_digest() {
    let e = read_through(Misbehave::BadDataDigest, true);
    assert!(
        matches!(
            e,
            HostError::Protocol(ProtocolError::DataDigest {
                received: 0xDEAD_BEEF,
                ..
            })
        ),
        "{e}"
    );
}

#[test]
fn c2h_data_at_the_wrong_offset() {
    let e = read_through(Misbehave::C2HWrongOffset, false);
    assert!(
        matches!(
            e,
            HostError::Protocol(ProtocolError::DataOffset {
                offset: 512,
                expected: 0,
                ..
            })
        ),
        "{e}"
    );
}

#[test]
fn garbage_pdu() {
    let e = read_through(Misbehave::GarbagePdu, true);
    assert!(
        matches!(e, HostError::Protocol(ProtocolError::Malformed(_))),
        "{e}"
    );
}

#[test]
fn termination_request() {
    let e = read_through(Misbehave::TermReq, false);
    assert!(matches!(e, HostError::Terminated { fes: 1, fei: 2 }), "{e}");
}

#[test]
fn r2t_outside_the_command() {
    let r = rig(Misbehave::R2tOutsideCommand, false);
    let ns = r.ctrl.namespace(1).unwrap();
    let data = vec![0x33u8; 4096];
    r.qp.submit(&ns, BdevIo::write(5, 1, sg(&data)), r.d.sink(), 1);
    let (_, io, res) = r.d.wait(1).pop().unwrap();
    res.unwrap();
    assert!(flatten(&io.bufs) == data, "a write leaves its data alone");
    let e = checks_after(&r, Misbehave::R2tOutsideCommand);
    assert!(
        matches!(
            e,
            HostError::Protocol(ProtocolError::BadR2t {
                len: 8192,
                cmd_len: 4096,
                ..
            })
        ),
        "{e}"
    );
}

#[test]
fn silent_target_times_the_command_out() {
    let r = rig(Misbehave::Silent, false);
    let ns = r.ctrl.namespace(1).unwrap();
    r.qp.submit(&ns, BdevIo::read(3, 1, sg_zeroed(&[4096])), r.d.sink(), 1);
    let (_, io, res) = r.d.wait(1).pop().unwrap();
    assert!(matches!(res, Err(BdevError::TimedOut)), "{res:?}");
    assert_eq!(io.bufs.len(), 1);
    // The association is reset and the queue comes back; the next read works.
    r.d.until("the queue to reconnect", || {
        r.qp.state() == QueueState::Connected && r.ctrl.state() == ControllerState::Connected
    });
    r.qp.submit(&ns, BdevIo::read(3, 1, sg_zeroed(&[4096])), r.d.sink(), 2);
    let (_, io, res) = r.d.wait(1).pop().unwrap();
    res.unwrap();
    assert!(io.bufs[0].as_slice().iter().all(|&b| b == GOOD));
    let e = checks_after(&r, Misbehave::Silent);
    assert!(matches!(e, HostError::Timeout(_)), "{e}");
}

#[test]
fn digest_negotiation_is_checked() {
    // A target that grants digests nobody asked for: the connect fails, typed.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut req = [0u8; 128];
        s.read_exact(&mut req).unwrap();
        let resp = IcResp {
            pfv: 0,
            cpda: 0,
            digests: Digests {
                header: true,
                data: true,
            },
            maxh2cdata: 4096,
        };
        let mut out = [0u8; 128];
        PduHeader::IcResp(resp)
            .encode_header(0, &FrameOptions::default(), &mut out)
            .unwrap();
        s.write_all(&out).unwrap();
        let _ = s.read(&mut req);
    });
    let host = host_reactors();
    let o = ConnectOptions::new("127.0.0.1", port, common::NQN);
    match Controller::connect(&host.handles()[0], o) {
        Err(HostError::Protocol(ProtocolError::DigestMismatch {
            header: true,
            data: true,
        })) => {}
        other => panic!("{other:?}"),
    }
}
