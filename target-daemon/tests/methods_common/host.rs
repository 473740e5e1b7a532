//! A minimal blocking NVMe/TCP host: enough to create controllers and queue pairs on a
//! daemon (ICReq, Fabrics Connect, Property Set/Get), without digests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use shoal_nvmf::wire::pdu::{
    CapsuleCmd, ConnectionParams, Deframed, Deframer, Digests, FrameOptions, IcReq, PduHeader, Role,
};
use shoal_nvmf::wire::spec::{Cqe, FabricsType, SglDescriptor, Sqe};

/// A host queue pair (one TCP connection).
pub struct Host {
    sock: TcpStream,
    deframer: Deframer,
    rx: Vec<u8>,
    next_cid: u16,
    pub cntlid: u16,
}

/// Connect data (NVMe-oF 1.1, Figure 20): HOSTID at 0, CNTLID at 16, SUBNQN at 256, HOSTNQN
/// at 512, 1024 bytes in all.
fn connect_data(hostid: [u8; 16], cntlid: u16, subnqn: &str, hostnqn: &str) -> Vec<u8> {
    let mut d = vec![0u8; 1024];
    d[..16].copy_from_slice(&hostid);
    d[16..18].copy_from_slice(&cntlid.to_le_bytes());
    d[256..256 + subnqn.len()].copy_from_slice(subnqn.as_bytes());
    d[512..512 + hostnqn.len()].copy_from_slice(hostnqn.as_bytes());
    d
}

impl Host {
    /// Connects to `port` on 127.0.0.1 and does the ICReq/ICResp exchange.
    pub fn connect(port: u16) -> Host {
        let sock = TcpStream::connect(("127.0.0.1", port)).expect("connect to the target");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        sock.set_nodelay(true).expect("nodelay");
        let mut h = Host {
            sock,
            deframer: Deframer::new(Role::Host),
            rx: Vec::new(),
            next_cid: 0,
            cntlid: 0xFFFF,
        };
        let req = IcReq {
            pfv: 0,
            hpda: 0,
            digests: Digests {
                header: false,
                data: false,
            },
            maxr2t: 0,
        };
        h.send(PduHeader::IcReq(req), &[]);
        match h.recv() {
            Some((PduHeader::IcResp(_), _)) => {}
            other => panic!("expected ICResp, got {other:?}"),
        }
        h.deframer.establish(ConnectionParams {
            header_digest: false,
            data_digest: false,
            rx_pda: 0,
            max_in_capsule_data: 0,
            max_h2c_data: 0,
            max_c2h_data: 1 << 20,
        });
        h
    }

    fn send(&mut self, h: PduHeader, data: &[u8]) {
        let mut out = vec![0u8; 256];
        let e = h
            .encode_header(data.len(), &FrameOptions::default(), &mut out)
            .expect("encode");
        out.truncate(e.header_len);
        out.extend_from_slice(data);
        self.sock.write_all(&out).expect("send");
    }

    /// The next PDU, or `None` once the target closed the connection.
    pub fn recv(&mut self) -> Option<(PduHeader, Vec<u8>)> {
        loop {
            match self
                .deframer
                .decode(&self.rx)
                .expect("malformed PDU from the target")
            {
                Deframed::Frame(f) => {
                    let data = f.data(&self.rx).to_vec();
                    self.rx.drain(..f.len);
                    return Some((f.header, data));
                }
                Deframed::NeedMore(_) => {
                    let mut buf = [0u8; 65536];
                    match self.sock.read(&mut buf) {
                        Ok(0) | Err(_) => return None,
                        Ok(n) => self.rx.extend_from_slice(&buf[..n]),
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn command(&mut self, sqe: Sqe, data: &[u8]) -> Cqe {
        let cid = sqe.cid();
        self.send(PduHeader::CapsuleCmd(CapsuleCmd { sqe }), data);
        loop {
            match self.recv() {
                Some((PduHeader::CapsuleResp(r), _)) if r.cqe.cid() == cid => return r.cqe,
                Some(_) => {}
                None => panic!("connection closed while waiting for a completion"),
            }
        }
    }

    fn cid(&mut self) -> u16 {
        self.next_cid = self.next_cid.wrapping_add(1);
        self.next_cid
    }

    /// Fabrics Connect for queue `qid` (NVMe-oF 1.1, section 3.3).
    pub fn fabrics_connect(&mut self, qid: u16, subnqn: &str, hostnqn: &str) -> Cqe {
        let cid = self.cid();
        let mut sqe = Sqe::new_fabrics(FabricsType::CONNECT, cid);
        sqe.cdw10.set(u32::from(qid) << 16);
        sqe.cdw11.set(31 | (1 << 18));
        sqe.dptr = SglDescriptor::in_capsule(1024);
        let data = connect_data([7; 16], self.cntlid, subnqn, hostnqn);
        let cqe = self.command(sqe, &data);
        if cqe.status().is_success() {
            self.cntlid = u16::try_from(cqe.dw0.get() & 0xFFFF).expect("cntlid");
        }
        cqe
    }

    fn prop_set(&mut self, offset: u32, value: u32) -> Cqe {
        let cid = self.cid();
        let mut sqe = Sqe::new_fabrics(FabricsType::PROPERTY_SET, cid);
        sqe.cdw11.set(offset);
        sqe.cdw12.set(value);
        self.command(sqe, &[])
    }

    /// An admin queue: Connect and enable the controller (CC.EN = 1).
    pub fn admin(port: u16, subnqn: &str, hostnqn: &str) -> Host {
        let mut h = Host::connect(port);
        let c = h.fabrics_connect(0, subnqn, hostnqn);
        assert!(c.status().is_success(), "admin connect: {:?}", c.status());
        let c = h.prop_set(0x14, 1 | (6 << 16) | (4 << 20));
        assert!(c.status().is_success(), "CC.EN: {:?}", c.status());
        h
    }

    /// I/O queue `qid` of controller `cntlid`.
    pub fn io(port: u16, cntlid: u16, qid: u16, subnqn: &str, hostnqn: &str) -> Host {
        let mut h = Host::connect(port);
        h.cntlid = cntlid;
        let c = h.fabrics_connect(qid, subnqn, hostnqn);
        assert!(c.status().is_success(), "I/O connect: {:?}", c.status());
        h
    }

    /// True once the target has closed the connection (reads up to the timeout).
    pub fn closed_by_target(&mut self) -> bool {
        loop {
            match self.recv() {
                None => return true,
                Some((PduHeader::C2HTermReq(_), _)) => {}
                Some(_) => {}
            }
        }
    }
}
