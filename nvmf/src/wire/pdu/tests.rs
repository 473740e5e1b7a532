//! Round-trip, incremental-feeding and byte-layout tests for PDU encoding and deframing.
//! Negative deframer tests are in `deframe_errors`.

mod deframe_errors;

use proptest::prelude::*;

use super::*;
use crate::wire::spec::{Cqe, Sqe};

/// Encodes a whole PDU into a vector (tests only; the real send path uses iovecs).
pub(super) fn encode(header: &PduHeader, data: &[u8], opts: &FrameOptions) -> Vec<u8> {
    let mut hdr = [0u8; MAX_HEADER_SPACE];
    let enc = header
        .encode_header(data.len(), opts, &mut hdr)
        .expect("encode");
    let mut v = hdr[..enc.header_len].to_vec();
    v.extend_from_slice(data);
    if enc.data_digest {
        v.extend_from_slice(&DataDigest::of(data).to_le_bytes());
    }
    assert_eq!(v.len(), usize::try_from(enc.plen).unwrap());
    v
}

/// Connection parameters matching `opts`, with generous limits.
pub(super) fn params(opts: &FrameOptions) -> ConnectionParams {
    ConnectionParams {
        header_digest: opts.header_digest,
        data_digest: opts.data_digest,
        rx_pda: opts.pda,
        max_in_capsule_data: 1 << 20,
        max_h2c_data: 1 << 20,
        max_c2h_data: 1 << 20,
    }
}

/// The deframer that receives `header`: the controller for host-to-controller types, the
/// host otherwise; established unless it is an IC PDU.
pub(super) fn receiver(header: &PduHeader, opts: &FrameOptions) -> Deframer {
    let t = header.pdu_type();
    let role = if t.is_host_to_controller() {
        Role::Controller
    } else {
        Role::Host
    };
    if matches!(t, PduType::IC_REQ | PduType::IC_RESP) {
        Deframer::new(role)
    } else {
        Deframer::established(role, params(opts))
    }
}

fn data_header(max: usize) -> impl Strategy<Value = (DataHeader, Vec<u8>)> {
    (
        any::<(u16, u16, u32, bool, bool)>(),
        proptest::collection::vec(any::<u8>(), 1..max),
    )
        .prop_map(|((cccid, ttag, datao, last_pdu, success), data)| {
            let datal = u32::try_from(data.len()).unwrap();
            let success = success && last_pdu;
            (
                DataHeader {
                    cccid,
                    ttag,
                    datao,
                    datal,
                    last_pdu,
                    success,
                },
                data,
            )
        })
}

fn digests() -> impl Strategy<Value = Digests> {
    any::<(bool, bool)>().prop_map(|(header, data)| Digests { header, data })
}

/// Any valid PDU with matching data.
fn any_pdu() -> impl Strategy<Value = (PduHeader, Vec<u8>)> {
    let no_data = |h: PduHeader| (h, Vec::new());
    prop_oneof![
        (0..=ic::MAX_PDA, digests(), any::<u32>()).prop_map(move |(hpda, digests, maxr2t)| {
            no_data(PduHeader::IcReq(IcReq {
                pfv: 0,
                hpda,
                digests,
                maxr2t,
            }))
        }),
        (0..=ic::MAX_PDA, digests(), 1024u32..=u32::MAX / 4).prop_map(move |(cpda, d, m)| {
            no_data(PduHeader::IcResp(IcResp {
                pfv: 0,
                cpda,
                digests: d,
                maxh2cdata: m * 4,
            }))
        }),
        (
            any::<(u16, u32, bool)>(),
            proptest::collection::vec(any::<u8>(), 0..=128)
        )
            .prop_map(|((fes, fei, h2c), data)| {
                let t = TermReq { fes: Fes(fes), fei };
                let h = if h2c {
                    PduHeader::H2CTermReq(t)
                } else {
                    PduHeader::C2HTermReq(t)
                };
                (h, data)
            }),
        (
            proptest::array::uniform32(any::<u8>()),
            proptest::array::uniform32(any::<u8>()),
            proptest::collection::vec(any::<u8>(), 0..600)
        )
            .prop_map(|(a, b, data)| {
                let mut raw = [0u8; 64];
                raw[..32].copy_from_slice(&a);
                raw[32..].copy_from_slice(&b);
                (
                    PduHeader::CapsuleCmd(CapsuleCmd {
                        sqe: Sqe::from_array(&raw),
                    }),
                    data,
                )
            }),
        proptest::array::uniform16(any::<u8>()).prop_map(move |raw| no_data(
            PduHeader::CapsuleResp(CapsuleResp {
                cqe: Cqe::from_array(&raw)
            })
        )),
        data_header(600).prop_map(|(mut d, data)| {
            d.success = false;
            (PduHeader::H2CData(d), data)
        }),
        data_header(600).prop_map(|(d, data)| (PduHeader::C2HData(d), data)),
        any::<(u16, u16, u32, u32)>().prop_map(move |(cccid, ttag, r2to, r2tl)| {
            no_data(PduHeader::R2t(R2t {
                cccid,
                ttag,
                r2to,
                r2tl,
            }))
        }),
    ]
}

fn any_opts() -> impl Strategy<Value = FrameOptions> {
    (
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(0u8), 0..=ic::MAX_PDA],
    )
        .prop_map(|(header_digest, data_digest, pda)| FrameOptions {
            header_digest,
            data_digest,
            pda,
        })
}

/// Options a PDU is sent with: IC PDUs and termination requests never use digests.
fn effective_opts(header: &PduHeader, opts: FrameOptions) -> FrameOptions {
    match header.pdu_type() {
        PduType::IC_REQ | PduType::IC_RESP => FrameOptions::default(),
        _ => opts,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// encode -> decode is the identity for every PDU type, with and without digests and
    /// with every data alignment; a following PDU's bytes do not disturb the result.
    #[test]
    fn roundtrip(
        (header, data) in any_pdu(),
        opts in any_opts(),
        trailing in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let opts = effective_opts(&header, opts);
        let wire = encode(&header, &data, &opts);
        let deframer = receiver(&header, &opts);
        let mut input = wire.clone();
        input.extend_from_slice(&trailing);
        let Deframed::Frame(frame) = deframer.decode(&input).unwrap() else {
            panic!("expected a frame");
        };
        prop_assert_eq!(frame.header, header);
        prop_assert_eq!(frame.len, wire.len());
        prop_assert_eq!(frame.data(&input), &data[..]);
        if let HeaderStatus::Ready(fh) = deframer.decode_header(&input).unwrap() {
            prop_assert_eq!(fh.header, header);
            prop_assert_eq!(fh.data_range(), frame.data.clone());
            prop_assert_eq!(fh.len, wire.len());
        } else {
            panic!("header incomplete");
        }
    }

    /// Feeding a PDU one byte at a time gives NeedMore at every prefix, never asks for more
    /// than the PDU's length, and ends with the same frame as feeding it at once.
    #[test]
    fn byte_by_byte_equals_at_once((header, data) in any_pdu(), opts in any_opts()) {
        let opts = effective_opts(&header, opts);
        let wire = encode(&header, &data, &opts);
        let deframer = receiver(&header, &opts);
        let at_once = deframer.decode(&wire).unwrap();
        for i in 0..wire.len() {
            match deframer.decode(&wire[..i]).unwrap() {
                Deframed::NeedMore(n) => prop_assert!(n > 0 && i + n <= wire.len()),
                other => panic!("prefix {i} gave {other:?}"),
            }
            match deframer.decode_header(&wire[..i]).unwrap() {
                HeaderStatus::NeedMore(n) => prop_assert!(n > 0 && i + n <= wire.len()),
                HeaderStatus::Ready(fh) => prop_assert_eq!(fh.header, header),
            }
        }
        prop_assert_eq!(deframer.decode(&wire).unwrap(), at_once);
    }

    /// A stream of PDUs cut into arbitrary chunks deframes into the same PDUs.
    #[test]
    fn stream_in_chunks(
        pdus in proptest::collection::vec(any_pdu(), 1..8),
        opts in any_opts(),
        chunk in 1usize..200,
    ) {
        let opts = FrameOptions { pda: opts.pda, ..opts };
        // Controller-bound PDUs only, on an established connection.
        let pdus: Vec<_> = pdus.into_iter().filter(|(h, _)| {
            h.pdu_type().is_host_to_controller() && h.pdu_type() != PduType::IC_REQ
        }).collect();
        let mut wire = Vec::new();
        for (h, d) in &pdus {
            wire.extend(encode(h, d, &opts));
        }
        let deframer = Deframer::established(Role::Controller, params(&opts));
        let mut buf: Vec<u8> = Vec::new();
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Deframed::Frame(f) = deframer.decode(&buf).unwrap() {
                got.push((f.header, f.data(&buf).to_vec()));
                buf.drain(..f.len);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, pdus);
    }
}

#[test]
fn crc32c_reference_vector() {
    // CRC-32C (Castagnoli) check value from RFC 3720 / iSCSI.
    assert_eq!(header_digest(b"123456789"), 0xE306_9283);
    let mut d = DataDigest::new();
    d.update(b"1234");
    d.update(b"56789");
    assert_eq!(d.value(), 0xE306_9283);
    assert_eq!(d.to_bytes(), [0x83, 0x92, 0x06, 0xE3]);
}

#[test]
fn icreq_bytes() {
    let h = PduHeader::IcReq(IcReq {
        pfv: 0,
        hpda: 0,
        digests: Digests {
            header: true,
            data: true,
        },
        maxr2t: 0,
    });
    let wire = encode(&h, &[], &FrameOptions::default());
    assert_eq!(wire.len(), 128);
    assert_eq!(
        &wire[..16],
        &[0, 0, 128, 0, 128, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0]
    );
    assert!(wire[16..].iter().all(|&b| b == 0));
}

#[test]
fn capsule_cmd_bytes_with_digests() {
    let mut sqe = Sqe::new(crate::wire::spec::opcode::io::WRITE, 0x0102);
    sqe.dptr = crate::wire::spec::SglDescriptor::in_capsule(8);
    let h = PduHeader::CapsuleCmd(CapsuleCmd { sqe });
    let data = [1u8, 2, 3, 4, 5, 6, 7, 8];
    let opts = FrameOptions {
        header_digest: true,
        data_digest: true,
        pda: 0,
    };
    let wire = encode(&h, &data, &opts);
    // CH: type 4, HDGSTF|DDGSTF, HLEN 72, PDO 76, PLEN 72 + 4 + 8 + 4.
    assert_eq!(&wire[..8], &[4, 3, 72, 76, 88, 0, 0, 0]);
    assert_eq!(&wire[8..12], &[0x01, 0x40, 0x02, 0x01]);
    assert_eq!(&wire[72..76], &header_digest(&wire[..72]).to_le_bytes());
    assert_eq!(&wire[76..84], &data);
    assert_eq!(&wire[84..88], &DataDigest::of(&data).to_le_bytes());
}

#[test]
fn c2h_data_padding_to_pda() {
    let h = PduHeader::C2HData(DataHeader {
        cccid: 7,
        ttag: 0,
        datao: 4096,
        datal: 4,
        last_pdu: true,
        success: true,
    });
    // HPDA 7: data aligned to 32 bytes; header + digest is 28 bytes, so PDO is 32.
    let opts = FrameOptions {
        header_digest: true,
        data_digest: false,
        pda: 7,
    };
    let wire = encode(&h, &[9, 9, 9, 9], &opts);
    assert_eq!(&wire[..8], &[7, 0x0D, 24, 32, 36, 0, 0, 0]);
    assert_eq!(&wire[8..20], &[7, 0, 0, 0, 0, 0x10, 0, 0, 4, 0, 0, 0]);
    assert_eq!(&wire[28..32], &[0, 0, 0, 0]);
    assert_eq!(&wire[32..], &[9, 9, 9, 9]);
}

#[test]
fn no_data_pdus_have_pdo_zero() {
    let opts = FrameOptions {
        header_digest: true,
        data_digest: true,
        pda: 3,
    };
    let resp = PduHeader::CapsuleResp(CapsuleResp {
        cqe: Cqe::new(1, 0, 0, crate::wire::spec::Status::SUCCESS),
    });
    let wire = encode(&resp, &[], &opts);
    assert_eq!(&wire[..8], &[5, 1, 24, 0, 28, 0, 0, 0]);
    let cmd = PduHeader::CapsuleCmd(CapsuleCmd {
        sqe: Sqe::new(crate::wire::spec::opcode::admin::KEEP_ALIVE, 1),
    });
    let wire = encode(&cmd, &[], &opts);
    // No data: no DDGSTF, PDO 0, PLEN = HLEN + HDGST.
    assert_eq!(&wire[..8], &[4, 1, 72, 0, 76, 0, 0, 0]);
    let term = PduHeader::C2HTermReq(TermReq {
        fes: Fes::HEADER_DIGEST_ERROR,
        fei: 0,
    });
    let wire = encode(&term, &[0xAA; 10], &opts);
    assert_eq!(&wire[..12], &[3, 0, 24, 0, 34, 0, 0, 0, 3, 0, 0, 0]);
}

#[test]
fn encode_errors() {
    let mut out = [0u8; MAX_HEADER_SPACE];
    let opts = FrameOptions::default();
    let r2t = PduHeader::R2t(R2t {
        cccid: 0,
        ttag: 0,
        r2to: 0,
        r2tl: 0,
    });
    assert_eq!(
        r2t.encode_header(1, &opts, &mut out),
        Err(EncodeError::UnexpectedData(PduType::R2T))
    );
    let d = DataHeader {
        cccid: 0,
        ttag: 0,
        datao: 0,
        datal: 5,
        last_pdu: false,
        success: false,
    };
    assert_eq!(
        PduHeader::H2CData(d).encode_header(4, &opts, &mut out),
        Err(EncodeError::DataLengthMismatch {
            datal: 5,
            data_len: 4
        })
    );
    let bad = DataHeader { success: true, ..d };
    assert_eq!(
        PduHeader::C2HData(bad).encode_header(5, &opts, &mut out),
        Err(EncodeError::SuccessWithoutLast)
    );
    let pda = FrameOptions { pda: 32, ..opts };
    assert_eq!(
        PduHeader::H2CData(d).encode_header(5, &pda, &mut out),
        Err(EncodeError::InvalidPda(32))
    );
    let term = PduHeader::H2CTermReq(TermReq {
        fes: Fes(1),
        fei: 0,
    });
    assert_eq!(
        term.encode_header(129, &opts, &mut out),
        Err(EncodeError::DataTooLong(129))
    );
    let mut small = [0u8; 100];
    let ic = PduHeader::IcReq(IcReq {
        pfv: 0,
        hpda: 0,
        digests: Digests::default(),
        maxr2t: 0,
    });
    assert!(matches!(
        ic.encode_header(0, &opts, &mut small),
        Err(EncodeError::BufferTooSmall(_))
    ));
    // The largest header: a CapsuleCmd with digest (76 bytes) padded to a 72-byte
    // alignment. Every alignment fits in MAX_HEADER_SPACE.
    let cmd = PduHeader::CapsuleCmd(CapsuleCmd {
        sqe: Sqe::new_zeroed_sqe(),
    });
    let mut largest = 0;
    for pda in 0..=ic::MAX_PDA {
        let opts = FrameOptions {
            header_digest: true,
            data_digest: true,
            pda,
        };
        let enc = cmd.encode_header(1, &opts, &mut out).unwrap();
        assert_eq!(enc.header_len % ((usize::from(pda) + 1) * 4), 0);
        assert_eq!(enc.plen, u32::try_from(enc.header_len).unwrap() + 1 + 4);
        largest = largest.max(enc.header_len);
    }
    assert_eq!(largest, MAX_HEADER_SPACE);
}

#[test]
fn h2c_data_ignores_reserved_success_bit() {
    let d = DataHeader {
        cccid: 1,
        ttag: 2,
        datao: 0,
        datal: 4,
        last_pdu: false,
        success: false,
    };
    let mut wire = encode(
        &PduHeader::H2CData(d),
        &[1, 2, 3, 4],
        &FrameOptions::default(),
    );
    wire[1] |= flags::SUCCESS;
    let deframer = Deframer::established(Role::Controller, ConnectionParams::default());
    match deframer.decode(&wire) {
        Ok(Deframed::Frame(f)) => assert_eq!(f.header, PduHeader::H2CData(d)),
        other => panic!("{other:?}"),
    }
}

/// The fuzz seeds were written by an independent encoder (`fuzz/gen_seeds.py`, with its own
/// CRC32C): every one must deframe completely, IC exchange included.
#[test]
fn independently_encoded_streams() {
    macro_rules! seeds {
        ($($name:literal),*) => {
            [$(($name, &include_bytes!(concat!("../../../fuzz/seeds/deframe/", $name))[..])),*]
        };
    }
    let seeds = seeds!(
        "ctrl_00_0",
        "ctrl_01_7",
        "ctrl_10_3",
        "ctrl_11_0",
        "ctrl_ic",
        "host_00_0",
        "host_01_7",
        "host_10_3",
        "host_11_0",
        "host_ic"
    );
    for (name, seed) in seeds {
        let [c0, c1, stream @ ..] = seed else {
            panic!("{name}: too short")
        };
        let role = if c0 & 1 == 0 {
            Role::Controller
        } else {
            Role::Host
        };
        let params = ConnectionParams {
            header_digest: c0 & 2 != 0,
            data_digest: c0 & 4 != 0,
            rx_pda: c1 & 0x1F,
            ..ConnectionParams::default()
        };
        let mut d = if c0 & 8 == 0 {
            Deframer::established(role, params)
        } else {
            Deframer::new(role)
        };
        let mut input = stream;
        let mut frames = 0;
        while !input.is_empty() {
            match d.decode(input) {
                Ok(Deframed::Frame(f)) => {
                    input = &input[f.len..];
                    frames += 1;
                    if d.params().is_none() {
                        d.establish(params);
                    }
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(frames >= 2, "{name}");
    }
}
