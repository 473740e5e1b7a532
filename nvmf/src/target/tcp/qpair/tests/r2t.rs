//! Host data: in-capsule, and R2T / H2CData flows (NVMe/TCP 1.0a sections 3.6.2.8, 3.6.2.10).

use super::*;
use crate::wire::pdu::term::Fes;
use crate::wire::spec::dsm::DsmRange;
use crate::wire::spec::opcode::io;
use zerocopy::IntoBytes;

/// The next PDU, which must be an R2T; returns (cccid, ttag, r2to, r2tl).
fn r2t(s: &mut Sim) -> (u16, u16, u32, u32) {
    match s.next_pdu() {
        Some((PduHeader::R2t(r), _)) => (r.cccid, r.ttag, r.r2to, r.r2tl),
        other => panic!("expected an R2T, got {other:?}"),
    }
}

/// Writes `data` at block `slba` through R2T, answering each R2T with H2CData PDUs of at most
/// `chunk` bytes; returns the number of R2Ts.
fn write_r2t(q: &mut Sim, cid: u16, slba: u64, data: &[u8], chunk: usize) -> usize {
    let nlb = u32::try_from(data.len()).unwrap() / BS;
    q.capsule(rw(io::WRITE, cid, slba, nlb, false), &[]);
    let mut r2ts = 0;
    let mut done = 0usize;
    while done < data.len() {
        let (cccid, ttag, off, len) = r2t(q);
        r2ts += 1;
        assert_eq!((cccid, off as usize), (cid, done), "R2Ts come in order");
        let end = off as usize + len as usize;
        assert!(end <= data.len(), "an R2T never asks beyond the command");
        while done < end {
            let n = chunk.min(end - done);
            let (at, n32) = (u32::try_from(done).unwrap(), u32::try_from(n).unwrap());
            let h = h2c(cid, ttag, at, n32, done + n == end);
            q.send(h, &data[done..done + n]);
            done += n;
        }
    }
    r2ts
}

#[test]
fn a_write_through_one_r2t_reaches_the_device() {
    let (_t, _a, mut q) = pair(TransportConfig::default(), false);
    let data = pattern(4 * BS as usize, 1);
    assert_eq!(write_r2t(&mut q, 3, 8, &data, 1 << 20), 1);
    assert_eq!(q.pending.len(), 1);
    q.complete_all();
    let c = resp(&mut q);
    assert!(c.cid() == 3 && c.status().is_success());
    let disk = q.disk("SimDisk").unwrap();
    assert_eq!(&disk[8 * BS as usize..12 * BS as usize], &data[..]);
    sound(&mut q);
}

#[test]
fn a_write_larger_than_maxh2cdata_gets_one_r2t_at_a_time_in_small_h2c_data_pdus() {
    let t = TransportConfig {
        io_unit_size: 8192,
        ..Default::default()
    };
    let (_t, _a, mut q) = pair(t, false);
    let data = pattern(32 * BS as usize, 2);
    // 128 KiB in R2Ts of 8 KiB, each answered with H2CData of 3000 bytes.
    assert_eq!(write_r2t(&mut q, 4, 0, &data, 3000), 16);
    q.complete_all();
    assert!(resp(&mut q).status().is_success());
    assert_eq!(&q.disk("SimDisk").unwrap()[..data.len()], &data[..]);
    sound(&mut q);
}

#[test]
fn the_next_r2t_waits_for_the_previous_range() {
    let t = TransportConfig {
        io_unit_size: 8192,
        ..Default::default()
    };
    let (_t, _a, mut q) = pair(t, false);
    q.capsule(rw(io::WRITE, 5, 0, 4, false), &[]);
    let (_, ttag, off, len) = r2t(&mut q);
    assert_eq!((off, len), (0, 8192));
    q.send(h2c(5, ttag, 0, 4096, false), &[1; 4096]);
    assert!(q.next_pdu().is_none(), "half the range: no new R2T yet");
    q.send(h2c(5, ttag, 4096, 4096, true), &[1; 4096]);
    assert_eq!(r2t(&mut q).2, 8192);
    assert!(
        q.pending.is_empty(),
        "nothing runs before all the data is in"
    );
    sound(&mut q);
}

#[test]
fn h2c_data_for_no_command_or_the_wrong_one_is_fatal() {
    // No R2T was sent: any TTAG is unknown.
    let (_t, _a, mut q) = pair(TransportConfig::default(), false);
    q.send(h2c(1, 0, 0, 512, true), &[0; 512]);
    assert_eq!(term(&mut q), Fes::INVALID_HEADER_FIELD.0);
    assert!(q.closed.is_some());

    // The right TTAG with another command's CID.
    let (_t, _a, mut q) = pair(TransportConfig::default(), false);
    q.capsule(rw(io::WRITE, 6, 0, 1, false), &[]);
    let (_, ttag, _, _) = r2t(&mut q);
    q.send(h2c(7, ttag, 0, BS, true), &[0; 4096]);
    assert_eq!(term(&mut q), Fes::INVALID_HEADER_FIELD.0);

    // Data after the command already has all of it.
    let (_t, _a, mut q) = pair(TransportConfig::default(), false);
    q.capsule(rw(io::WRITE, 8, 0, 1, false), &[]);
    let (_, ttag, _, _) = r2t(&mut q);
    q.send(h2c(8, ttag, 0, BS, true), &[0; 4096]);
    q.send(h2c(8, ttag, 0, BS, true), &[0; 4096]);
    assert_eq!(term(&mut q), Fes::INVALID_HEADER_FIELD.0);
    assert_eq!(q.pending.len(), 1, "the write itself still runs");
    q.complete_all();
    assert!(q.next_pdu().is_none(), "a closed queue answers nothing");
}

#[test]
fn h2c_data_out_of_order_or_beyond_the_r2t_is_out_of_range() {
    for (datao, datal) in [(512u32, 512u32), (0, 8192)] {
        let (_t, _a, mut q) = pair(TransportConfig::default(), false);
        q.capsule(rw(io::WRITE, 9, 0, 1, false), &[]);
        let (_, ttag, _, _) = r2t(&mut q);
        q.send(h2c(9, ttag, datao, datal, true), &vec![0; datal as usize]);
        assert_eq!(term(&mut q), Fes::DATA_TRANSFER_OUT_OF_RANGE.0);
        assert!(q.closed.is_some() && q.pending.is_empty());
    }
}

#[test]
fn in_capsule_writes_run_at_once_and_short_in_capsule_data_is_refused() {
    let (_t, _a, mut q) = pair(TransportConfig::default(), false);
    let data = pattern(BS as usize, 3);
    q.capsule(rw(io::WRITE, 10, 2, 1, true), &data);
    assert_eq!(q.pending.len(), 1);
    q.complete_all();
    assert!(resp(&mut q).status().is_success());
    assert_eq!(&q.disk("SimDisk").unwrap()[2 * 4096..3 * 4096], &data[..]);
    // An SGL that says 8 KiB of in-capsule data for a 1-block write with 4 KiB in the capsule.
    let mut sqe = rw(io::WRITE, 11, 0, 2, true);
    sqe.dptr = SglDescriptor::in_capsule(2 * BS);
    q.capsule(sqe, &data);
    assert!(!resp(&mut q).status().is_success());
    assert!(q.pending.is_empty());
    sound(&mut q);
}

#[test]
fn compare_through_r2t_succeeds_on_equal_data_and_fails_otherwise() {
    let (_t, _a, mut q) = pair(TransportConfig::default(), false);
    let data = pattern(2 * BS as usize, 4);
    q.capsule(rw(io::WRITE, 1, 20, 2, true), &data);
    q.complete_all();
    assert!(resp(&mut q).status().is_success());
    for (cid, bytes, ok) in [(2u16, data.clone(), true), (3, pattern(8192, 5), false)] {
        q.capsule(rw(io::COMPARE, cid, 20, 2, false), &[]);
        let (_, ttag, _, len) = r2t(&mut q);
        assert_eq!(len, 8192);
        q.send(h2c(cid, ttag, 0, len, true), &bytes);
        q.complete_all();
        let c = resp(&mut q);
        assert_eq!(c.cid(), cid);
        if ok {
            assert!(c.status().is_success());
        } else {
            assert!(same(c.status(), Status::COMPARE_FAILURE));
        }
    }
    sound(&mut q);
}

#[test]
fn dataset_management_deallocates_every_range_and_answers_once_after_all() {
    let (_t, _a, mut q) = pair(TransportConfig::default(), false);
    let mut sqe = Sqe::new(io::DATASET_MANAGEMENT, 12);
    sqe.nsid.set(1);
    sqe.cdw10.set(2); // three ranges
    sqe.cdw11.set(1 << 2); // deallocate
    sqe.dptr = SglDescriptor::in_capsule(48);
    let ranges = dsm_data(&[(0, 4), (10, 0), (100, 8)]);
    q.capsule(sqe, &ranges);
    assert_eq!(q.pending.len(), 2, "a range of 0 blocks does nothing");
    q.complete(0, None);
    assert!(q.next_pdu().is_none(), "one range still runs");
    q.complete(0, Some(shoal_bdev::BdevError::Closed));
    let c = resp(&mut q);
    assert!(c.cid() == 12 && !c.status().is_success());
    sound(&mut q);
}

/// The data of a Dataset Management: one 16-byte range per `(slba, nlb)`.
fn dsm_data(ranges: &[(u64, u32)]) -> Vec<u8> {
    ranges
        .iter()
        .flat_map(|&(slba, nlb)| DsmRange::new(slba, nlb).as_bytes().to_vec())
        .collect()
}

/// NVM Command Set 1.0, section 3.2.3: a range past the namespace's end (or whose end does not
/// fit in 64 bits) is LBA Out of Range, and no range of the command is deallocated.
#[test]
fn dataset_management_with_a_range_out_of_the_namespace_deallocates_nothing() {
    let (_t, _a, mut q) = pair(TransportConfig::default(), false);
    let bad = [
        (BLOCKS, 1),
        (BLOCKS - 1, 2),
        (u64::MAX, 1),
        (u64::MAX - 1, u32::MAX),
    ];
    for (cid, last) in (20u16..).zip(bad) {
        let mut sqe = Sqe::new(io::DATASET_MANAGEMENT, cid);
        sqe.nsid.set(1);
        sqe.cdw10.set(1); // two ranges
        sqe.cdw11.set(1 << 2);
        sqe.dptr = SglDescriptor::in_capsule(32);
        q.capsule(sqe, &dsm_data(&[(0, 4), last]));
        let c = resp(&mut q);
        assert_eq!(c.cid(), cid);
        assert!(
            same(c.status(), Status::LBA_OUT_OF_RANGE),
            "{last:?}: {:?}",
            c.status()
        );
        assert!(
            q.pending.is_empty(),
            "{last:?}: the good range was submitted"
        );
    }
    // The last block, and a range of no blocks anywhere, are fine.
    let mut sqe = Sqe::new(io::DATASET_MANAGEMENT, 30);
    sqe.nsid.set(1);
    sqe.cdw10.set(1);
    sqe.cdw11.set(1 << 2);
    sqe.dptr = SglDescriptor::in_capsule(32);
    q.capsule(sqe, &dsm_data(&[(BLOCKS - 1, 1), (u64::MAX, 0)]));
    assert_eq!(q.pending.len(), 1);
    q.complete(0, None);
    assert!(resp(&mut q).status().is_success());
    sound(&mut q);
}

#[test]
fn a_write_beyond_mdts_gets_no_r2t() {
    let t = TransportConfig {
        max_io_size: 16384,
        ..Default::default()
    };
    let (_t, _a, mut q) = pair(t, false);
    q.capsule(rw(io::WRITE, 13, 0, 8, false), &[]);
    assert!(same(resp(&mut q).status(), Status::INVALID_FIELD));
    assert!(q.next_pdu().is_none());
    sound(&mut q);
}
