//! A target on a reactor thread and a blocking NVMe/TCP test host built from the PDU codec.
#![allow(dead_code, missing_docs)]

pub mod procfs;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use shoal_bdev::malloc::MallocBdev;
use shoal_nvmf::target::subsystem::{ListenAddress, SubsystemOptions, Target, TransportConfig};
use shoal_nvmf::target::tcp::TcpTransport;
use shoal_nvmf::wire::pdu::{
    CapsuleCmd, ConnectionParams, DataHeader, Deframed, Deframer, Digests, FrameOptions, IcReq,
    PduHeader, Role,
};
use shoal_nvmf::wire::spec::fabrics::ConnectData;
use shoal_nvmf::wire::spec::opcode::{admin, io};
use shoal_nvmf::wire::spec::{Cqe, FabricsType, Opcode, SglDescriptor, Sqe, Status};
use shoal_reactor::{Reactor, ReactorConfig, ReactorSet};

pub const NQN: &str = "nqn.2016-06.io.shoal:test";
pub const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555";

/// A running target: one reactor, one subsystem with a RAM namespace per block size given.
pub struct TestTarget {
    pub set: Option<ReactorSet>,
    pub target: Arc<Target>,
    pub tcp: TcpTransport,
    pub addr: SocketAddr,
}

impl TestTarget {
    pub fn start(block_sizes: &[u32], transport: TransportConfig) -> TestTarget {
        let set =
            ReactorSet::start(&[0], ReactorConfig::default(), Arc::new(|_: &Reactor| {})).unwrap();
        let target = Arc::new(Target::new());
        target.create_transport(transport).unwrap();
        let sub = target
            .create_subsystem(
                NQN,
                SubsystemOptions {
                    allow_any_host: true,
                    ..Default::default()
                },
            )
            .unwrap();
        for (i, bs) in block_sizes.iter().enumerate() {
            let blocks = (16u64 << 20) / u64::from(*bs);
            let b = MallocBdev::create(&format!("Malloc{i}"), None, blocks, *bs).unwrap();
            sub.add_namespace(b, None, None, None, None).unwrap();
        }
        let la = ListenAddress::tcp("127.0.0.1", "0");
        sub.add_listener(la.clone()).unwrap();
        let tcp = TcpTransport::new(target.clone());
        let t = tcp.clone();
        let limits = listener_limits(&target);
        let reactors = set.handles().to_vec();
        let addr = set.handles()[0]
            .call(move || t.listen(la, reactors, limits).unwrap())
            .unwrap();
        TestTarget {
            set: Some(set),
            target,
            tcp,
            addr,
        }
    }
}

fn listener_limits(target: &Target) -> shoal_nvmf::target::tcp::limits::ListenLimits {
    (&target.transport()).into()
}

impl Drop for TestTarget {
    fn drop(&mut self) {
        if let Some(s) = self.set.take() {
            s.shutdown();
        }
    }
}

/// A minimal blocking NVMe/TCP host.
pub struct TestHost {
    pub sock: TcpStream,
    deframer: Deframer,
    opts: FrameOptions,
    rx: Vec<u8>,
    next_cid: u16,
    pub cntlid: u16,
    /// Subsystem NQN used by Connect.
    pub subnqn: String,
}

/// A received PDU and its data.
pub type Pdu = (PduHeader, Vec<u8>);

impl TestHost {
    pub fn connect(addr: SocketAddr) -> TestHost {
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        sock.set_nodelay(true).unwrap();
        TestHost {
            sock,
            deframer: Deframer::new(Role::Host),
            opts: FrameOptions::default(),
            rx: Vec::new(),
            next_cid: 1,
            cntlid: 0xFFFF,
            subnqn: NQN.to_string(),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).unwrap();
    }

    pub fn send_pdu(&mut self, h: PduHeader, data: &[u8]) {
        let mut out = vec![0u8; 256];
        let e = h.encode_header(data.len(), &self.opts, &mut out).unwrap();
        out.truncate(e.header_len);
        out.extend_from_slice(data);
        if e.data_digest {
            out.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
        }
        self.send_raw(&out);
    }

    /// Next PDU, or `None` if the target closed the connection.
    pub fn recv(&mut self) -> Option<Pdu> {
        loop {
            match self
                .deframer
                .decode(&self.rx)
                .expect("target sent a malformed PDU")
            {
                Deframed::Frame(f) => {
                    let data = f.data(&self.rx).to_vec();
                    self.rx.drain(..f.len);
                    return Some((f.header, data));
                }
                Deframed::DataDigestMismatch { .. } => panic!("target sent a bad data digest"),
                Deframed::NeedMore(_) => {
                    let mut buf = [0u8; 65536];
                    match self.sock.read(&mut buf) {
                        Ok(0) | Err(_) => return None,
                        Ok(n) => self.rx.extend_from_slice(&buf[..n]),
                    }
                }
            }
        }
    }

    pub fn ic(&mut self, hdgst: bool, ddgst: bool) {
        let req = IcReq {
            pfv: 0,
            hpda: 0,
            digests: Digests {
                header: hdgst,
                data: ddgst,
            },
            maxr2t: 0,
        };
        self.send_pdu(PduHeader::IcReq(req), &[]);
        let (h, _) = self.recv().expect("no ICResp");
        let PduHeader::IcResp(r) = h else {
            panic!("expected ICResp, got {h:?}")
        };
        assert_eq!((r.digests.header, r.digests.data), (hdgst, ddgst));
        self.opts = FrameOptions {
            header_digest: hdgst,
            data_digest: ddgst,
            pda: 0,
        };
        self.deframer.establish(ConnectionParams {
            header_digest: hdgst,
            data_digest: ddgst,
            rx_pda: 0,
            max_in_capsule_data: 0,
            max_h2c_data: 0,
            max_c2h_data: 1 << 20,
        });
    }

    pub fn cid(&mut self) -> u16 {
        self.next_cid = self.next_cid.wrapping_add(1);
        self.next_cid
    }

    pub fn submit(&mut self, sqe: Sqe, data: &[u8]) {
        self.send_pdu(PduHeader::CapsuleCmd(CapsuleCmd { sqe }), data);
    }

    /// Sends a command and collects its C2H data and completion (answering nothing else).
    pub fn command(&mut self, sqe: Sqe, data: &[u8]) -> (Cqe, Vec<u8>) {
        let cid = sqe.cid();
        self.submit(sqe, data);
        self.collect(cid)
    }

    pub fn collect(&mut self, cid: u16) -> (Cqe, Vec<u8>) {
        let mut got = Vec::new();
        loop {
            let (h, d) = self
                .recv()
                .expect("connection closed while waiting for a completion");
            match h {
                PduHeader::C2HData(dh) => {
                    assert_eq!(dh.cccid, cid);
                    assert_eq!(usize::try_from(dh.datao).unwrap(), got.len());
                    got.extend_from_slice(&d);
                    if dh.success {
                        return (Cqe::new(cid, 0, 0, Status::SUCCESS), got);
                    }
                }
                PduHeader::CapsuleResp(r) if r.cqe.cid() == cid => return (r.cqe, got),
                other => panic!("unexpected PDU {other:?}"),
            }
        }
    }

    pub fn fabrics_connect(&mut self, qid: u16, sqsize: u16, kato: u32) -> Cqe {
        let cid = self.cid();
        let mut sqe = Sqe::new_fabrics(FabricsType::CONNECT, cid);
        sqe.cdw10.set(u32::from(qid) << 16);
        sqe.cdw11.set(u32::from(sqsize) | (1 << 18)); // CATTR: SQ flow control disabled
        sqe.cdw12.set(kato);
        sqe.dptr = SglDescriptor::in_capsule(1024);
        let cd = ConnectData::new([7; 16], self.cntlid, &self.subnqn, HOSTNQN);
        let (cqe, _) = self.command(sqe, zerocopy::IntoBytes::as_bytes(&cd));
        if cqe.status().is_success() {
            self.cntlid = u16::try_from(cqe.dw0.get() & 0xFFFF).unwrap();
        }
        cqe
    }

    pub fn prop_get(&mut self, offset: u32, size8: bool) -> u64 {
        let cid = self.cid();
        let mut sqe = Sqe::new_fabrics(FabricsType::PROPERTY_GET, cid);
        sqe.cdw10.set(u32::from(size8));
        sqe.cdw11.set(offset);
        let (cqe, _) = self.command(sqe, &[]);
        assert!(
            cqe.status().is_success(),
            "property get {offset:#x}: {:?}",
            cqe.status()
        );
        u64::from(cqe.dw0.get()) | (u64::from(cqe.dw1.get()) << 32)
    }

    pub fn prop_set(&mut self, offset: u32, value: u32) -> Cqe {
        let cid = self.cid();
        let mut sqe = Sqe::new_fabrics(FabricsType::PROPERTY_SET, cid);
        sqe.cdw11.set(offset);
        sqe.cdw12.set(value);
        self.command(sqe, &[]).0
    }

    /// ICReq, admin Connect, CC.EN = 1 and wait for CSTS.RDY.
    pub fn admin(addr: SocketAddr, digests: bool, kato: u32) -> TestHost {
        TestHost::admin_to(addr, NQN, digests, kato)
    }

    /// Like [`TestHost::admin`] for another subsystem (e.g. discovery).
    pub fn admin_to(addr: SocketAddr, subnqn: &str, digests: bool, kato: u32) -> TestHost {
        let mut h = TestHost::connect(addr);
        h.subnqn = subnqn.to_string();
        h.ic(digests, digests);
        let c = h.fabrics_connect(0, 31, kato);
        assert!(c.status().is_success(), "admin connect: {:?}", c.status());
        // CC: EN=1, IOSQES=6, IOCQES=4.
        assert!(
            h.prop_set(0x14, 1 | (6 << 16) | (4 << 20))
                .status()
                .is_success()
        );
        assert_eq!(h.prop_get(0x1c, false) & 1, 1, "CSTS.RDY");
        h
    }

    /// An I/O queue of the admin host's controller.
    pub fn io_queue(addr: SocketAddr, cntlid: u16, qid: u16, digests: bool) -> TestHost {
        let mut h = TestHost::connect(addr);
        h.ic(digests, digests);
        h.cntlid = cntlid;
        let c = h.fabrics_connect(qid, 127, 0);
        assert!(c.status().is_success(), "I/O connect: {:?}", c.status());
        h
    }

    pub fn set_num_queues(&mut self, n: u16) -> Cqe {
        let cid = self.cid();
        let mut sqe = Sqe::new(admin::SET_FEATURES, cid);
        sqe.cdw10.set(0x07);
        sqe.cdw11.set(u32::from(n - 1) | (u32::from(n - 1) << 16));
        self.command(sqe, &[]).0
    }

    pub fn identify(&mut self, cns: u8, nsid: u32) -> (Cqe, Vec<u8>) {
        let cid = self.cid();
        let mut sqe = Sqe::new(admin::IDENTIFY, cid);
        sqe.nsid.set(nsid);
        sqe.cdw10.set(u32::from(cns));
        sqe.dptr = SglDescriptor::transport(4096);
        self.command(sqe, &[])
    }

    pub fn rw_sqe(
        &mut self,
        op: Opcode,
        nsid: u32,
        slba: u64,
        nlb: u32,
        len: u32,
        in_capsule: bool,
    ) -> Sqe {
        let cid = self.cid();
        let mut sqe = Sqe::new(op, cid);
        sqe.nsid.set(nsid);
        sqe.cdw10.set((slba & 0xFFFF_FFFF) as u32);
        sqe.cdw11.set((slba >> 32) as u32);
        sqe.cdw12.set(nlb.wrapping_sub(1) & 0xFFFF);
        sqe.dptr = if in_capsule {
            SglDescriptor::in_capsule(len)
        } else {
            SglDescriptor::transport(len)
        };
        sqe
    }

    pub fn read(&mut self, nsid: u32, slba: u64, nlb: u32, bs: u32) -> (Cqe, Vec<u8>) {
        let sqe = self.rw_sqe(io::READ, nsid, slba, nlb, nlb * bs, false);
        self.command(sqe, &[])
    }

    /// Writes with in-capsule data when it fits in 8 KiB, else through R2T, answering each
    /// R2T with H2CData PDUs of at most `chunk` bytes.
    pub fn write(&mut self, nsid: u32, slba: u64, data: &[u8], bs: u32, chunk: usize) -> Cqe {
        let nlb = u32::try_from(data.len()).unwrap() / bs;
        let len = u32::try_from(data.len()).unwrap();
        if data.len() <= 4096 {
            let sqe = self.rw_sqe(io::WRITE, nsid, slba, nlb, len, true);
            return self.command(sqe, data).0;
        }
        let sqe = self.rw_sqe(io::WRITE, nsid, slba, nlb, len, false);
        let cid = sqe.cid();
        self.submit(sqe, &[]);
        loop {
            let (h, _) = self.recv().expect("closed during write");
            match h {
                PduHeader::R2t(r) => {
                    assert_eq!(r.cccid, cid);
                    let (off, l) = (r.r2to as usize, r.r2tl as usize);
                    let mut at = off;
                    while at < off + l {
                        let n = chunk.min(off + l - at);
                        let dh = DataHeader {
                            cccid: cid,
                            ttag: r.ttag,
                            datao: u32::try_from(at).unwrap(),
                            datal: u32::try_from(n).unwrap(),
                            last_pdu: at + n == off + l,
                            success: false,
                        };
                        self.send_pdu(PduHeader::H2CData(dh), &data[at..at + n]);
                        at += n;
                    }
                }
                PduHeader::CapsuleResp(r) => {
                    assert_eq!(r.cqe.cid(), cid);
                    return r.cqe;
                }
                other => panic!("unexpected PDU during write: {other:?}"),
            }
        }
    }
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i % 251).to_le_bytes()[0]
                .wrapping_mul(31)
                .wrapping_add(seed)
        })
        .collect()
}

/// Same status code type and code, whatever DNR and More say.
pub fn same(a: Status, b: Status) -> bool {
    a.sct == b.sct && a.sc == b.sc
}

impl TestHost {
    /// Get Log Page `lid` of `len` bytes at `offset`.
    pub fn log_page(&mut self, lid: u8, len: u32, offset: u64) -> (Cqe, Vec<u8>) {
        let cid = self.cid();
        let mut sqe = Sqe::new(admin::GET_LOG_PAGE, cid);
        sqe.nsid.set(0xFFFF_FFFF);
        let numd = len / 4 - 1;
        sqe.cdw10.set(u32::from(lid) | ((numd & 0xFFFF) << 16));
        sqe.cdw11.set(numd >> 16);
        sqe.cdw12.set((offset & 0xFFFF_FFFF) as u32);
        sqe.cdw13.set((offset >> 32) as u32);
        sqe.dptr = SglDescriptor::transport(len);
        self.command(sqe, &[])
    }

    /// Set Features with dword 11.
    pub fn set_feature(&mut self, fid: u8, cdw11: u32) -> Cqe {
        let cid = self.cid();
        let mut sqe = Sqe::new(admin::SET_FEATURES, cid);
        sqe.cdw10.set(u32::from(fid));
        sqe.cdw11.set(cdw11);
        self.command(sqe, &[]).0
    }
}
