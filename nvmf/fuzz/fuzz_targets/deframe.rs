//! Arbitrary bytes through the NVMe/TCP deframer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_nvmf::wire::pdu::{
    ConnectionParams, DataDigest, Deframed, Deframer, FrameOptions, MAX_HEADER_SPACE, Role,
    offending_header,
};

fuzz_target!(|data: &[u8]| {
    // Two bytes of configuration, the rest is the stream.
    let [c0, c1, stream @ ..] = data else {
        return;
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
        max_in_capsule_data: 8192,
        max_h2c_data: 4096 << (c1 >> 5),
        max_c2h_data: 65536,
    };
    let mut deframer = if c0 & 8 == 0 {
        Deframer::established(role, params)
    } else {
        Deframer::new(role)
    };

    let mut input = stream;
    for _ in 0..64 {
        let whole = deframer.decode(input);
        // Any prefix gives NeedMore, or the same answer as the whole input when the whole
        // input is an error (checks run in header order on the bytes available).
        for cut in 0..input.len().min(200) {
            match deframer.decode(&input[..cut]) {
                Ok(Deframed::NeedMore(n)) => {
                    assert!(n > 0);
                    if let Ok(Deframed::Frame(f)) = &whole {
                        assert!(cut + n <= f.len);
                    }
                }
                other => assert_eq!(other, whole, "prefix {cut} disagrees"),
            }
        }
        match whole {
            Ok(Deframed::NeedMore(n)) => {
                assert!(n > 0);
                break;
            }
            Ok(Deframed::Frame(frame)) | Ok(Deframed::DataDigestMismatch { frame, .. }) => {
                assert!(frame.data.start <= frame.data.end && frame.data.end <= frame.len);
                assert!(frame.len <= input.len());
                let payload = frame.data(input);
                // Re-encode with this connection's options and decode again.
                let opts = match deframer.params() {
                    Some(p) => FrameOptions {
                        header_digest: p.header_digest,
                        data_digest: p.data_digest,
                        pda: p.rx_pda,
                    },
                    None => FrameOptions::default(),
                };
                let mut hdr = [0u8; MAX_HEADER_SPACE];
                let enc = frame
                    .header
                    .encode_header(payload.len(), &opts, &mut hdr)
                    .expect("a decoded header re-encodes");
                let mut wire = hdr[..enc.header_len].to_vec();
                wire.extend_from_slice(payload);
                if enc.data_digest {
                    wire.extend_from_slice(&DataDigest::of(payload).to_le_bytes());
                }
                match deframer.decode(&wire) {
                    Ok(Deframed::Frame(again)) => {
                        assert_eq!(again.header, frame.header);
                        assert_eq!(again.data(&wire), payload);
                        assert_eq!(again.len, wire.len());
                    }
                    other => panic!("re-encoded PDU decodes as {other:?}"),
                }
                if deframer.params().is_none()
                    && !matches!(
                        frame.header,
                        shoal_nvmf::wire::pdu::PduHeader::H2CTermReq(_)
                            | shoal_nvmf::wire::pdu::PduHeader::C2HTermReq(_)
                    )
                {
                    deframer.establish(params);
                }
                input = &input[frame.len..];
            }
            Err(e) => {
                let _ = e.term_req_pdu(role);
                assert!(offending_header(input).len() <= 128);
                break;
            }
        }
    }
});
