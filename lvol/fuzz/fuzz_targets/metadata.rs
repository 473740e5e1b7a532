//! Arbitrary bytes through every decoder of a pool's on-disk metadata: the superblock, a
//! checkpoint header and payload (and the table check), a journal page and its records.
//! None may panic; whatever decodes must encode back to something that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_lvol::format::checkpoint::{CkptHeader, decode_table, encode_table};
use shoal_lvol::format::journal::decode_page;
use shoal_lvol::format::superblock::Superblock;
use shoal_lvol::format::PAGE;
use uuid::Uuid;

fuzz_target!(|data: &[u8]| {
    let _ = Superblock::decode(data);
    let _ = CkptHeader::decode(data);
    if let Ok(t) = decode_table(data) {
        let _ = t.validate(1 << 16);
        assert_eq!(decode_table(&encode_table(&t)).as_ref(), Ok(&t));
    }
    // A journal page: the first 16 bytes choose the pool, the rest is the page (padded, so
    // that the record decoder is reached once a page's CRC is right; the CRC is recomputed
    // by the fuzzer's mutations rarely, so records are also fed straight to the decoder).
    let lvs = Uuid::from_bytes(data.get(..16).and_then(|b| b.try_into().ok()).unwrap_or([0; 16]));
    let mut page = data.get(16..).unwrap_or_default().to_vec();
    page.resize(PAGE, 0);
    let _ = decode_page(&page, &lvs, 1, 0);
    let mut r = shoal_lvol::format::codec::Reader::new(data, "fuzz");
    while r.remaining() > 0 {
        if shoal_lvol::format::record::Record::decode(&mut r).is_err() {
            break;
        }
    }
});
