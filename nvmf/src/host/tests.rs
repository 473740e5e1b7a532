//! Sans-IO tests of the queue pair core: bytes in, bytes out, no socket.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use shoal_bdev::{BdevError, BdevIo, IoBuf, IoFlags, IoSink, IoType, SgList};

use super::cmd::{self, Dir};
use super::error::{HostError, ProtocolError};
use super::queue::{Gate, Limits, QueueCore, Waiter, Work, sg_of};
use crate::wire::command::IoCommand;
use crate::wire::pdu::{
    CapsuleResp, ConnectionParams, DataHeader, Deframed, Deframer, Digests, FrameOptions, IcResp,
    PduHeader, R2t, Role,
};
use crate::wire::spec::{Cqe, Status};

type Done = (u64, BdevIo, Result<(), BdevError>);

#[derive(Default)]
struct Sink(RefCell<Vec<Done>>);

impl IoSink for Sink {
    fn io_done(&self, tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        self.0.borrow_mut().push((tag, io, result));
    }
}

fn one(b: IoBuf) -> SgList {
    std::iter::once(b).collect()
}

fn limits(max_xfer: u32, in_capsule: u32) -> Limits {
    Limits {
        hdgst: false,
        ddgst: false,
        cpda: 0,
        maxh2cdata: 4096,
        in_capsule,
        max_xfer,
        sq_flow_disabled: true,
    }
}

/// A controller's view of what the host sent.
struct Peer {
    deframer: Deframer,
    opts: FrameOptions,
}

impl Peer {
    fn new(digests: Digests, cpda: u8) -> Peer {
        let mut deframer = Deframer::new(Role::Controller);
        deframer.establish(ConnectionParams {
            header_digest: digests.header,
            data_digest: digests.data,
            rx_pda: cpda,
            max_in_capsule_data: 1 << 20,
            max_h2c_data: 1 << 20,
            max_c2h_data: 0,
        });
        Peer {
            deframer,
            opts: FrameOptions {
                header_digest: digests.header,
                data_digest: digests.data,
                pda: 0,
            },
        }
    }

    /// Everything the core queued, decoded.
    fn take(&self, core: &mut QueueCore) -> Vec<(PduHeader, Vec<u8>)> {
        let mut bytes = Vec::new();
        while let Some((batch, skip)) = core.tx.take_batch() {
            let mut sent = Vec::new();
            for b in &batch {
                sent.extend_from_slice(b.as_slice());
            }
            sent.drain(..skip);
            let n = sent.len();
            bytes.extend_from_slice(&sent);
            core.tx.sent(batch, n);
        }
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            match self.deframer.decode(&bytes[at..]).unwrap() {
                Deframed::Frame(f) => {
                    out.push((f.header, f.data(&bytes[at..]).to_vec()));
                    at += f.len;
                }
                other => panic!("{other:?}"),
            }
        }
        out
    }

    fn encode(&self, h: PduHeader, data: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 256];
        let e = h.encode_header(data.len(), &self.opts, &mut out).unwrap();
        out.truncate(e.header_len);
        out.extend_from_slice(data);
        if e.data_digest {
            out.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
        }
        out
    }
}

fn open_core(l: Limits) -> QueueCore {
    let mut core = QueueCore::new(1, 8, l, Duration::from_secs(1));
    core.deframer.establish(ConnectionParams {
        max_c2h_data: l.max_xfer,
        ..ConnectionParams::default()
    });
    core.gate = Gate::Open;
    core
}

fn io(core: &mut QueueCore, sink: &Rc<Sink>, io_type: IoType, slba: u64, n: u64, bufs: SgList) {
    let work = Work::Io {
        io_type,
        flags: IoFlags::NONE,
        nsid: 1,
        block_size: 512,
        offset_blocks: slba,
        num_blocks: n,
        capacity: 1 << 20,
    };
    let sink: Rc<dyn IoSink> = sink.clone();
    core.push(work, bufs, Waiter::Sink { sink, tag: slba });
}

fn resp(peer: &Peer, cid: u16, status: Status) -> Vec<u8> {
    let cqe = Cqe::new(cid, 1, 0, status);
    peer.encode(PduHeader::CapsuleResp(CapsuleResp { cqe }), &[])
}

#[test]
fn connect_capsule_honours_cpda_and_digests() {
    let mut core = QueueCore::new(0, 4, limits(32768, 8192), Duration::from_secs(1));
    let want = Digests {
        header: true,
        data: true,
    };
    core.begin(want);
    let sqe = cmd::connect(0, 31, 0, 5000);
    let data = cmd::connect_data([1; 16], 0xFFFF, "nqn.a", "nqn.h");
    let work = Work::Raw {
        sqe,
        dir: Dir::ToCtrl,
        len: 1024,
        connect: true,
    };
    let bufs = sg_of(zerocopy::IntoBytes::as_bytes(&data));
    core.push(work, bufs, Waiter::Callback(Box::new(|_| {})));
    core.issue(Instant::now());
    // Only the ICReq goes out before the ICResp.
    let mut ic = Vec::new();
    if let Some((b, _)) = core.tx.take_batch() {
        ic.extend_from_slice(b[0].as_slice());
        core.tx.sent(b, ic.len());
    }
    assert_eq!(ic.len(), 128);
    let resp = IcResp {
        pfv: 0,
        cpda: 3,
        digests: want,
        maxh2cdata: 8192,
    };
    let bytes = Peer::new(Digests::default(), 0).encode(PduHeader::IcResp(resp), &[]);
    assert_eq!(core.process_rx(&bytes, Instant::now()).unwrap(), 128);
    // The Connect capsule: data at a multiple of (CPDA + 1) * 4 = 16 bytes, with digests.
    let peer = Peer::new(want, 3);
    let pdus = peer.take(&mut core);
    assert_eq!(pdus.len(), 1);
    let (PduHeader::CapsuleCmd(c), d) = &pdus[0] else {
        panic!("{pdus:?}")
    };
    assert_eq!(d.len(), 1024);
    assert_eq!(c.sqe.dptr.len(), 1024, "in-capsule SGL");
    // A second ICResp is refused.
    assert!(core.process_rx(&bytes, Instant::now()).is_err());
}

#[test]
fn large_io_is_split_by_mdts_and_nlb() {
    let mut core = open_core(limits(64 * 1024, 0));
    let sink = Rc::new(Sink::default());
    let peer = Peer::new(Digests::default(), 0);
    // 1 MiB read at 512-byte blocks with a 64 KiB limit: 16 commands of 128 blocks; 8 slots.
    io(
        &mut core,
        &sink,
        IoType::Read,
        1000,
        2048,
        one(IoBuf::zeroed(1 << 20)),
    );
    core.issue(Instant::now());
    let mut slbas = Vec::new();
    for round in 0..2 {
        let pdus = peer.take(&mut core);
        assert_eq!(pdus.len(), 8, "round {round}: one command per slot");
        let mut rx = Vec::new();
        for (h, _) in &pdus {
            let PduHeader::CapsuleCmd(c) = h else {
                panic!()
            };
            let IoCommand::Read { slba, nlb, .. } = IoCommand::parse(&c.sqe) else {
                panic!()
            };
            assert_eq!(nlb, 128);
            slbas.push(slba);
            let data = vec![u8::try_from(slba % 251).unwrap(); 64 * 1024];
            let dh = DataHeader {
                cccid: c.sqe.cid(),
                ttag: 0,
                datao: 0,
                datal: 65536,
                last_pdu: true,
                success: true,
            };
            rx.extend(peer.encode(PduHeader::C2HData(dh), &data));
        }
        assert_eq!(core.process_rx(&rx, Instant::now()).unwrap(), rx.len());
        core.issue(Instant::now());
    }
    assert_eq!(slbas, (0..16).map(|i| 1000 + i * 128).collect::<Vec<_>>());
    let mut done = std::mem::take(&mut core.done);
    assert_eq!(done.len(), 1);
    done.pop().unwrap().deliver();
    let (_, io, r) = sink.0.borrow_mut().pop().unwrap();
    r.unwrap();
    let flat = io.bufs[0].as_slice();
    for i in 0..16u64 {
        let at = usize::try_from(i * 65536).unwrap();
        let want = u8::try_from((1000 + i * 128) % 251).unwrap();
        assert!(flat[at..at + 65536].iter().all(|&b| b == want), "chunk {i}");
    }
}

#[test]
fn several_r2ts_and_bad_ones() {
    let mut core = open_core(limits(1 << 20, 0));
    let sink = Rc::new(Sink::default());
    let peer = Peer::new(Digests::default(), 0);
    let data: Vec<u8> = (0..12288u32)
        .map(|i| u8::try_from(i % 253).unwrap())
        .collect();
    io(
        &mut core,
        &sink,
        IoType::Write,
        0,
        24,
        one(IoBuf::copy_from(&data)),
    );
    core.issue(Instant::now());
    let pdus = peer.take(&mut core);
    let (PduHeader::CapsuleCmd(c), d) = &pdus[0] else {
        panic!()
    };
    assert!(d.is_empty(), "no in-capsule data: IOCCSZ says none");
    let cid = c.sqe.cid();
    let r2t = |o, l| {
        peer.encode(
            PduHeader::R2t(R2t {
                cccid: cid,
                ttag: 9,
                r2to: o,
                r2tl: l,
            }),
            &[],
        )
    };
    core.process_rx(&r2t(0, 8192), Instant::now()).unwrap();
    core.process_rx(&r2t(8192, 4096), Instant::now()).unwrap();
    let mut got = Vec::new();
    let pdus = peer.take(&mut core);
    assert_eq!(pdus.len(), 3, "MAXH2CDATA 4096: 2 + 1 H2CData PDUs");
    for (i, (h, d)) in pdus.iter().enumerate() {
        let PduHeader::H2CData(dh) = h else { panic!() };
        assert_eq!((dh.ttag, dh.datao as usize), (9, got.len()));
        assert_eq!(dh.last_pdu, i != 0, "LAST_PDU ends each R2T's data");
        got.extend_from_slice(d);
    }
    assert!(got == data);
    // Asking again for bytes already sent, or beyond the command, is a protocol error.
    for (o, l) in [(0u32, 4096u32), (12288, 4096)] {
        let mut c2 = open_core(limits(1 << 20, 0));
        io(
            &mut c2,
            &sink,
            IoType::Write,
            0,
            24,
            one(IoBuf::copy_from(&data)),
        );
        c2.issue(Instant::now());
        let _ = peer.take(&mut c2);
        if o == 0 {
            c2.process_rx(&r2t(0, 4096), Instant::now()).unwrap();
        }
        let e = c2.process_rx(&r2t(o, l), Instant::now()).unwrap_err();
        assert!(
            matches!(e, HostError::Protocol(ProtocolError::BadR2t { .. })),
            "{e}"
        );
    }
    core.process_rx(&resp(&peer, cid, Status::SUCCESS), Instant::now())
        .unwrap();
    assert_eq!(core.done.len(), 1);
}

#[test]
fn success_flag_and_early_responses_are_checked() {
    let sink = Rc::new(Sink::default());
    let peer = Peer::new(Digests::default(), 0);
    let read = |core: &mut QueueCore| {
        io(core, &sink, IoType::Read, 0, 8, one(IoBuf::zeroed(4096)));
        core.issue(Instant::now());
        let pdus = peer.take(core);
        let PduHeader::CapsuleCmd(c) = pdus[0].0 else {
            panic!()
        };
        c.sqe.cid()
    };
    // SUCCESS on a queue that kept SQ flow control (the admin queue, as SPDK's target sends
    // it by default): accepted, as Linux accepts it; the read completes with the data.
    let mut core = open_core(Limits {
        sq_flow_disabled: false,
        ..limits(1 << 20, 0)
    });
    let cid = read(&mut core);
    let dh = DataHeader {
        cccid: cid,
        ttag: 0,
        datao: 0,
        datal: 4096,
        last_pdu: true,
        success: true,
    };
    core.process_rx(
        &peer.encode(PduHeader::C2HData(dh), &[1; 4096]),
        Instant::now(),
    )
    .unwrap();
    core.done.pop().expect("the read completed").deliver();
    let (_, io, r) = sink.0.borrow_mut().pop().unwrap();
    r.unwrap();
    assert!(io.bufs[0].as_slice().iter().all(|&b| b == 1));
    // SUCCESS before all of the data has come is still a protocol error.
    let mut core = open_core(limits(1 << 20, 0));
    let cid = read(&mut core);
    let half = DataHeader {
        cccid: cid,
        datal: 2048,
        ..dh
    };
    let e = core
        .process_rx(
            &peer.encode(PduHeader::C2HData(half), &[1; 2048]),
            Instant::now(),
        )
        .unwrap_err();
    assert!(matches!(
        e,
        HostError::Protocol(ProtocolError::MissingData { received: 2048, .. })
    ));
    // A successful response before the data.
    let mut core = open_core(limits(1 << 20, 0));
    let cid = read(&mut core);
    let e = core
        .process_rx(&resp(&peer, cid, Status::SUCCESS), Instant::now())
        .unwrap_err();
    assert!(matches!(
        e,
        HostError::Protocol(ProtocolError::MissingData { received: 0, .. })
    ));
    // An error response before the data is fine, and fails the request.
    let mut core = open_core(limits(1 << 20, 0));
    let cid = read(&mut core);
    core.process_rx(&resp(&peer, cid, Status::WRITE_FAULT), Instant::now())
        .unwrap();
    let f = core.done.pop().unwrap();
    f.deliver();
    let (_, _, r) = sink.0.borrow_mut().pop().unwrap();
    assert!(matches!(r, Err(BdevError::Os(_))));
}

#[test]
fn reset_reissues_block_io_and_fails_raw_commands() {
    let mut core = open_core(limits(1 << 20, 8192));
    let sink = Rc::new(Sink::default());
    let peer = Peer::new(Digests::default(), 0);
    io(
        &mut core,
        &sink,
        IoType::Write,
        7,
        8,
        one(IoBuf::copy_from(&[3; 4096])),
    );
    let failed = Rc::new(RefCell::new(None));
    let f = failed.clone();
    let work = Work::Raw {
        sqe: cmd::keep_alive(),
        dir: Dir::None,
        len: 0,
        connect: false,
    };
    core.push(
        work,
        SgList::new(),
        Waiter::Callback(Box::new(move |r| *f.borrow_mut() = Some(r.is_err()))),
    );
    core.issue(Instant::now());
    assert_eq!(peer.take(&mut core).len(), 2);
    core.reset(&HostError::Reconnecting);
    assert_eq!(core.outstanding(), 0);
    for f in std::mem::take(&mut core.done) {
        f.deliver();
    }
    assert_eq!(*failed.borrow(), Some(true), "the raw command failed");
    assert_eq!(
        core.requests(),
        1,
        "the write waits for the next connection"
    );
    core.gate = Gate::Open;
    core.issue(Instant::now());
    let pdus = peer.take(&mut core);
    let (PduHeader::CapsuleCmd(c), d) = &pdus[0] else {
        panic!()
    };
    assert_eq!(d.as_slice(), &[3; 4096][..], "issued again with its data");
    core.process_rx(&resp(&peer, c.sqe.cid(), Status::SUCCESS), Instant::now())
        .unwrap();
    core.done.pop().unwrap().deliver();
    assert!(sink.0.borrow_mut().pop().unwrap().2.is_ok());
}
