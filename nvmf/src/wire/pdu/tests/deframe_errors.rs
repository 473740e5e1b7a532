//! One test per deframer error, each on otherwise valid input.

use super::{encode, params};
use crate::wire::pdu::*;
use crate::wire::spec::opcode::{admin, io};
use crate::wire::spec::{SglDescriptor, Sqe};

const DIGESTS: FrameOptions = FrameOptions {
    header_digest: true,
    data_digest: true,
    pda: 0,
};
const PLAIN: FrameOptions = FrameOptions {
    header_digest: false,
    data_digest: false,
    pda: 0,
};

fn controller(opts: &FrameOptions) -> Deframer {
    Deframer::established(Role::Controller, params(opts))
}

fn host(opts: &FrameOptions) -> Deframer {
    Deframer::established(Role::Host, params(opts))
}

fn write_cmd(data_len: u32) -> PduHeader {
    let mut sqe = Sqe::new(io::WRITE, 3);
    sqe.dptr = SglDescriptor::in_capsule(data_len);
    PduHeader::CapsuleCmd(CapsuleCmd { sqe })
}

fn h2c(datal: u32) -> PduHeader {
    PduHeader::H2CData(DataHeader {
        cccid: 3,
        ttag: 1,
        datao: 0,
        datal,
        last_pdu: true,
        success: false,
    })
}

fn field(fei: u32) -> impl Fn(&DeframeError) -> bool {
    move |e| matches!(e, DeframeError::InvalidHeaderField { fei: f, .. } if *f == fei)
}

#[track_caller]
fn assert_field_error(d: &Deframer, input: &[u8], fei: u32) {
    let err = d.decode(input).expect_err("expected an error");
    assert!(field(fei)(&err), "expected FEI {fei}, got {err:?}");
    let term = err.term_req().expect("a termination request");
    assert_eq!((term.fes, term.fei), (Fes::INVALID_HEADER_FIELD, fei));
}

#[test]
fn unknown_pdu_type() {
    for t in [0x08u8, 0x0A, 0x0C, 0xFE] {
        let mut wire = encode(&write_cmd(0), &[], &PLAIN);
        wire[0] = t;
        assert_field_error(&controller(&PLAIN), &wire, 0);
    }
}

#[test]
fn wrong_direction() {
    let resp = PduHeader::CapsuleResp(CapsuleResp {
        cqe: crate::wire::spec::Cqe::new(1, 0, 0, crate::wire::spec::Status::SUCCESS),
    });
    let wire = encode(&resp, &[], &PLAIN);
    assert_field_error(&controller(&PLAIN), &wire, 0);
    let wire = encode(&write_cmd(0), &[], &PLAIN);
    assert_field_error(&host(&PLAIN), &wire, 0);
}

#[test]
fn sequence_errors() {
    // A capsule before the IC exchange.
    let wire = encode(&write_cmd(0), &[], &PLAIN);
    let err = Deframer::new(Role::Controller).decode(&wire).unwrap_err();
    assert_eq!(
        err,
        DeframeError::SequenceError {
            pdu_type: PduType::CAPSULE_CMD
        }
    );
    assert_eq!(err.term_req().map(|t| t.fes), Some(Fes::PDU_SEQUENCE_ERROR));
    // A second ICReq.
    let ic = PduHeader::IcReq(IcReq {
        pfv: 0,
        hpda: 0,
        digests: Digests::default(),
        maxr2t: 0,
    });
    let wire = encode(&ic, &[], &PLAIN);
    assert!(Deframer::new(Role::Controller).decode(&wire).is_ok());
    let err = controller(&PLAIN).decode(&wire).unwrap_err();
    assert_eq!(
        err,
        DeframeError::SequenceError {
            pdu_type: PduType::IC_REQ
        }
    );
    // A termination request is fine before the IC exchange.
    let term = PduHeader::H2CTermReq(TermReq {
        fes: Fes(1),
        fei: 0,
    });
    let wire = encode(&term, &[], &PLAIN);
    assert!(matches!(
        Deframer::new(Role::Controller).decode(&wire),
        Ok(Deframed::Frame(_))
    ));
}

#[test]
fn bad_hlen_for_type() {
    let mut wire = encode(&write_cmd(0), &[], &PLAIN);
    wire[2] = 24;
    assert_field_error(&controller(&PLAIN), &wire, 2);
    let mut wire = encode(&h2c(4), &[0; 4], &PLAIN);
    wire[2] = 72;
    assert_field_error(&controller(&PLAIN), &wire, 2);
}

#[test]
fn plen_smaller_than_header() {
    let mut wire = encode(&write_cmd(0), &[], &PLAIN);
    wire[4] = 71;
    assert_field_error(&controller(&PLAIN), &wire, 4);
    // A PDU without data whose PLEN claims some.
    let r2t = PduHeader::R2t(R2t {
        cccid: 0,
        ttag: 0,
        r2to: 0,
        r2tl: 8,
    });
    let mut wire = encode(&r2t, &[], &PLAIN);
    wire[4] = 25;
    assert_field_error(&host(&PLAIN), &wire, 4);
}

#[test]
fn plen_beyond_limit_is_rejected_from_the_common_header() {
    // 8 bytes claiming a 1 GiB CapsuleCmd: rejected before anything else arrives.
    let mut ch = encode(&write_cmd(0), &[], &PLAIN);
    ch[3] = 72;
    ch[4..8].copy_from_slice(&(1u32 << 30).to_le_bytes());
    let mut d = controller(&PLAIN);
    d.params_mut().unwrap().max_in_capsule_data = 8192;
    let err = d.decode(&ch[..8]).unwrap_err();
    assert_eq!(
        err,
        DeframeError::DataLimitExceeded {
            len: (1 << 30) - 72,
            limit: 8192
        }
    );
    assert_eq!(
        err.term_req().map(|t| t.fes),
        Some(Fes::DATA_TRANSFER_LIMIT_EXCEEDED)
    );
    // Exactly at the limit is fine and asks only for the PDU's bytes.
    ch[4..8].copy_from_slice(&(72u32 + 8192).to_le_bytes());
    assert_eq!(d.decode(&ch[..8]), Ok(Deframed::NeedMore(72 + 8192 - 8)));
    // H2CData above MAXH2CDATA.
    let mut wire = encode(&h2c(4), &[0; 4], &PLAIN);
    wire[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    d.params_mut().unwrap().max_h2c_data = 65536;
    assert!(matches!(
        d.decode(&wire[..8]),
        Err(DeframeError::DataLimitExceeded { limit: 65536, .. })
    ));
    // C2HData above what the host accepts.
    let c2h = PduHeader::C2HData(DataHeader {
        cccid: 3,
        ttag: 0,
        datao: 0,
        datal: 4,
        last_pdu: false,
        success: false,
    });
    let mut wire = encode(&c2h, &[0; 4], &PLAIN);
    wire[4..8].copy_from_slice(&(24u32 + 65537).to_le_bytes());
    let mut h = host(&PLAIN);
    h.params_mut().unwrap().max_c2h_data = 65536;
    let err = h.decode(&wire[..8]).unwrap_err();
    assert_eq!(
        err,
        DeframeError::DataOutOfRange {
            len: 65537,
            limit: 65536
        }
    );
    assert_eq!(
        err.term_req().map(|t| t.fes),
        Some(Fes::DATA_TRANSFER_OUT_OF_RANGE)
    );
}

#[test]
fn pdo_misaligned_or_outside() {
    let data = [0u8; 16];
    // CPDA 3: data must start at a multiple of 16; PDO 76 (with digest) is not.
    let opts = FrameOptions {
        header_digest: true,
        data_digest: false,
        pda: 0,
    };
    let wire = encode(&write_cmd(16), &data, &opts);
    assert_eq!(wire[3], 76);
    let strict = Deframer::established(Role::Controller, params(&FrameOptions { pda: 3, ..opts }));
    assert_field_error(&strict, &wire, 3);
    // Padded correctly it is accepted.
    let padded = encode(&write_cmd(16), &data, &FrameOptions { pda: 3, ..opts });
    assert_eq!(padded[3], 80);
    assert!(matches!(strict.decode(&padded), Ok(Deframed::Frame(_))));
    // PDO inside the header, or past PLEN.
    let mut wire = encode(&write_cmd(16), &data, &PLAIN);
    wire[3] = 68;
    assert_field_error(&controller(&PLAIN), &wire, 3);
    wire[3] = 92;
    assert_field_error(&controller(&PLAIN), &wire, 3);
}

#[test]
fn header_digest_mismatch() {
    let mut wire = encode(&write_cmd(4), &[1, 2, 3, 4], &DIGESTS);
    wire[72] ^= 0xFF;
    let err = controller(&DIGESTS).decode(&wire).unwrap_err();
    assert!(matches!(err, DeframeError::HeaderDigest { .. }));
    assert_eq!(
        err.term_req(),
        Some(TermReq {
            fes: Fes::HEADER_DIGEST_ERROR,
            fei: 0
        })
    );
    // Detected as soon as the header is in, before the data.
    assert!(controller(&DIGESTS).decode(&wire[..76]).is_err());
    // A flipped header bit is caught too.
    let mut wire = encode(&write_cmd(4), &[1, 2, 3, 4], &DIGESTS);
    wire[10] ^= 1;
    assert!(matches!(
        controller(&DIGESTS).decode(&wire),
        Err(DeframeError::HeaderDigest { .. })
    ));
}

#[test]
fn data_digest_mismatch_is_reported_with_the_frame() {
    let data = [7u8; 32];
    let mut wire = encode(&h2c(32), &data, &DIGESTS);
    let last = wire.len() - 1;
    wire[last] ^= 0x01;
    match controller(&DIGESTS).decode(&wire) {
        Ok(Deframed::DataDigestMismatch {
            frame,
            received,
            computed,
        }) => {
            assert_eq!(frame.header, h2c(32));
            assert_eq!(frame.len, wire.len());
            assert_eq!(computed, DataDigest::of(&data));
            assert_ne!(received, computed);
        }
        other => panic!("expected a data digest mismatch, got {other:?}"),
    }
    // Corrupt data instead of the digest.
    let mut wire = encode(&write_cmd(32), &data, &DIGESTS);
    wire[80] ^= 0x80;
    assert!(matches!(
        controller(&DIGESTS).decode(&wire),
        Ok(Deframed::DataDigestMismatch { .. })
    ));
}

#[test]
fn digest_flags_must_match_negotiation() {
    // Header digests negotiated, PDU without HDGSTF.
    let wire = encode(&write_cmd(0), &[], &PLAIN);
    let hd = FrameOptions {
        header_digest: true,
        ..PLAIN
    };
    assert_field_error(&controller(&hd), &wire, 1);
    // HDGSTF without negotiation.
    let wire = encode(&write_cmd(0), &[], &hd);
    assert_field_error(&controller(&PLAIN), &wire, 1);
    // DDGSTF without negotiation.
    let wire = encode(&h2c(4), &[0; 4], &DIGESTS);
    let no_dd = FrameOptions {
        header_digest: true,
        data_digest: false,
        pda: 0,
    };
    assert_field_error(&controller(&no_dd), &wire, 1);
    // Data digests negotiated, data present, DDGSTF missing.
    let wire = encode(&h2c(4), &[0; 4], &no_dd);
    assert_field_error(&controller(&DIGESTS), &wire, 1);
    // Data digests negotiated, no data: DDGSTF absent is right.
    let wire = encode(&write_cmd(0), &[], &DIGESTS);
    assert!(matches!(
        controller(&DIGESTS).decode(&wire),
        Ok(Deframed::Frame(_))
    ));
}

#[test]
fn c2h_success_requires_last_pdu() {
    let c2h = PduHeader::C2HData(DataHeader {
        cccid: 3,
        ttag: 0,
        datao: 0,
        datal: 4,
        last_pdu: true,
        success: true,
    });
    let mut wire = encode(&c2h, &[0; 4], &PLAIN);
    wire[1] &= !flags::LAST_PDU;
    assert_field_error(&host(&PLAIN), &wire, 1);
}

#[test]
fn datal_must_match_data() {
    let mut wire = encode(&h2c(8), &[0; 8], &PLAIN);
    wire[16] = 9;
    assert_field_error(&controller(&PLAIN), &wire, 16);
}

#[test]
fn term_req_with_bad_plen_closes_silently() {
    let term = PduHeader::C2HTermReq(TermReq {
        fes: Fes(1),
        fei: 0,
    });
    let mut wire = encode(&term, &[0; 8], &PLAIN);
    wire[4..8].copy_from_slice(&153u32.to_le_bytes());
    let err = host(&PLAIN).decode(&wire[..8]).unwrap_err();
    assert_eq!(err, DeframeError::InvalidTermReqLength { plen: 153 });
    assert_eq!(err.term_req(), None);
    wire[4..8].copy_from_slice(&23u32.to_le_bytes());
    assert!(matches!(
        host(&PLAIN).decode(&wire),
        Err(DeframeError::InvalidTermReqLength { .. })
    ));
}

#[test]
fn ic_parameter_checks() {
    let ic = |pfv, hpda| {
        PduHeader::IcReq(IcReq {
            pfv,
            hpda,
            digests: Digests::default(),
            maxr2t: 0,
        })
    };
    let d = Deframer::new(Role::Controller);
    let err = d.decode(&encode(&ic(1, 0), &[], &PLAIN)).unwrap_err();
    assert_eq!(
        err.term_req(),
        Some(TermReq {
            fes: Fes::UNSUPPORTED_PARAMETER,
            fei: 8
        })
    );
    assert_field_error(&d, &encode(&ic(0, 32), &[], &PLAIN), 10);
    let resp = |maxh2cdata| {
        PduHeader::IcResp(IcResp {
            pfv: 0,
            cpda: 0,
            digests: Digests::default(),
            maxh2cdata,
        })
    };
    let h = Deframer::new(Role::Host);
    assert!(h.decode(&encode(&resp(4096), &[], &PLAIN)).is_ok());
    assert_field_error(&h, &encode(&resp(4095), &[], &PLAIN), 12);
    assert_field_error(&h, &encode(&resp(8190), &[], &PLAIN), 12);
}

#[test]
fn term_req_pdu_and_offending_header() {
    let mut wire = encode(&write_cmd(0), &[], &PLAIN);
    wire[2] = 200;
    let err = controller(&PLAIN).decode(&wire).unwrap_err();
    let pdu = err.term_req_pdu(Role::Controller).unwrap();
    assert_eq!(
        pdu,
        PduHeader::C2HTermReq(TermReq {
            fes: Fes::INVALID_HEADER_FIELD,
            fei: 2
        })
    );
    // HLEN 200 claimed but 72 bytes here: send what there is.
    assert_eq!(offending_header(&wire), &wire[..72]);
    let ok = encode(&write_cmd(0), &[], &PLAIN);
    assert_eq!(offending_header(&ok).len(), 72);
    assert_eq!(offending_header(&[]), &[] as &[u8]);
    let keep_alive = PduHeader::CapsuleCmd(CapsuleCmd {
        sqe: Sqe::new(admin::KEEP_ALIVE, 1),
    });
    let mut bigger = encode(&keep_alive, &[], &PLAIN);
    bigger.extend_from_slice(&[0; 200]);
    bigger[2] = 255;
    assert_eq!(offending_header(&bigger).len(), 128);
}

#[test]
fn empty_data_pdu_is_invalid() {
    // An H2CData with PLEN = HLEN (no data) and DATAL 0.
    let mut wire = encode(&h2c(4), &[0; 4], &PLAIN);
    wire.truncate(24);
    wire[3] = 0;
    wire[4..8].copy_from_slice(&24u32.to_le_bytes());
    wire[16..20].copy_from_slice(&0u32.to_le_bytes());
    assert_field_error(&controller(&PLAIN), &wire, 16);
}
