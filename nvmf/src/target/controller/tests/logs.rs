//! Get Log Page: windows, SMART, firmware, changed namespaces, effects, discovery.

use zerocopy::FromBytes;

use super::*;
use crate::target::controller::log_page::{self, GetLogPage};
use crate::target::controller::take_async_event;
use crate::wire::spec::log::{
    CommandEffectsLog, DiscoveryLogEntry, DiscoveryLogHeader, FirmwareSlotLog, SmartLog, effects,
};

const INVALID: Status = Status::INVALID_FIELD.with_dnr();

#[test]
fn smart_log_counts_in_thousands_rounded_up() {
    let f = Fixture::new();
    enable(&f, &f.ctrl);
    // Two queues: 5 reads of 1001 512-byte units in all, 3 writes of 1 unit in all.
    let (q1, q2) = (f.ctrl.counters.register(), f.ctrl.counters.register());
    for _ in 0..4 {
        q1.read(512 * 200);
    }
    q2.read(512 * 201);
    q2.write(512);
    q1.write(0);
    q2.write(0);
    let data = data_of(f.run(&get_log_sqe(0x02, 512, 0, false)));
    assert_eq!(data.len(), 512);
    let log = SmartLog::read_from_bytes(&data).unwrap();
    assert_eq!(log.critical_warning, 0);
    assert_eq!(log.composite_temperature.get(), 300);
    assert_eq!(
        (
            log.available_spare,
            log.available_spare_threshold,
            log.percentage_used
        ),
        (100, 10, 0)
    );
    assert_eq!(log.data_units_read.get(), 2);
    assert_eq!(log.data_units_written.get(), 1);
    assert_eq!(log.host_read_commands.get(), 5);
    assert_eq!(log.host_write_commands.get(), 3);
    assert_eq!(log.power_on_hours.get(), 0);
    assert_eq!(log_page::data_units(0), 0);
    assert_eq!(log_page::data_units(1000), 1);
    assert_eq!(
        log_page::data_units(u64::MAX),
        u128::from(u64::MAX).div_ceil(1000)
    );
}

#[test]
fn offsets_and_lengths() {
    let f = Fixture::new();
    enable(&f, &f.ctrl);
    let whole = data_of(f.run(&get_log_sqe(0x02, 512, 0, false)));
    // A dword-aligned window inside the page.
    assert_eq!(
        data_of(f.run(&get_log_sqe(0x02, 8, 32, false))),
        &whole[32..40]
    );
    // Longer than the page: zero padded to the requested length.
    let padded = data_of(f.run(&get_log_sqe(0x02, 1024, 256, false)));
    assert_eq!(padded.len(), 1024);
    assert_eq!(&padded[..256], &whole[256..]);
    assert!(padded[256..].iter().all(|&b| b == 0));
    // At the very end: zeroes; beyond it, or unaligned: Invalid Field (Base 2.0 5.16).
    assert!(
        data_of(f.run(&get_log_sqe(0x02, 4, 512, false)))
            .iter()
            .all(|&b| b == 0)
    );
    assert_eq!(status_of(f.run(&get_log_sqe(0x02, 4, 516, false))), INVALID);
    assert_eq!(status_of(f.run(&get_log_sqe(0x02, 4, 2, false))), INVALID);
    assert_eq!(
        status_of(f.run(&get_log_sqe(0x02, 4, u64::MAX - 3, false))),
        INVALID
    );
    // Offset Type = index is not supported by these pages.
    let mut sqe = get_log_sqe(0x02, 512, 0, false);
    sqe.cdw14 = zerocopy::little_endian::U32::new(1 << 23);
    assert_eq!(status_of(f.run(&sqe)), INVALID);
    // Beyond MDTS (128 KiB), or beyond the SGL.
    assert_eq!(
        status_of(f.run(&get_log_sqe(0x02, 256 * 1024, 0, false))),
        INVALID
    );
    let mut sqe = get_log_sqe(0x02, 512, 0, false);
    sqe.dptr = SglDescriptor::transport(256);
    assert_eq!(
        status_of(f.run(&sqe)),
        Status::DATA_SGL_LENGTH_INVALID.with_dnr()
    );
    // The largest NUMD (2^32 dwords) does not overflow: the page function returns what exists.
    let huge = GetLogPage {
        lid: 2,
        lsp: 0,
        rae: false,
        numd: 1 << 32,
        lsi: 0,
        offset: 0,
        ot: false,
        csi: 0,
        nsid: 0,
    };
    assert_eq!(huge.len_bytes(), 1 << 34);
    let page = log_page::get_log_page(&f.ctrl, &f.target, &f.transport, &huge).unwrap();
    assert_eq!(page.len(), 512);
    let mut sqe = get_log_sqe(0x02, 4, 0, false);
    sqe.cdw10 = zerocopy::little_endian::U32::new(0xFFFF_0002);
    sqe.cdw11 = zerocopy::little_endian::U32::new(0xFFFF);
    assert_eq!(status_of(f.run(&sqe)), INVALID);
}

#[test]
fn error_firmware_and_unknown_pages() {
    let f = Fixture::new();
    enable(&f, &f.ctrl);
    let err = data_of(f.run(&get_log_sqe(0x01, 64, 0, false)));
    assert!(err.iter().all(|&b| b == 0), "no errors recorded");
    let fw = FirmwareSlotLog::read_from_bytes(&data_of(f.run(&get_log_sqe(0x03, 512, 0, false))))
        .unwrap();
    assert_eq!(fw.afi, 1);
    assert_eq!(&fw.frs[0], b"0.1.0   ");
    assert_eq!(fw.frs[1], [0; 8]);
    for lid in [0x00, 0x06, 0x0C, 0x70, 0x80, 0xC0] {
        assert_eq!(
            status_of(f.run(&get_log_sqe(lid, 512, 0, false))),
            Status::INVALID_LOG_PAGE.with_dnr()
        );
    }
}

#[test]
fn commands_supported_and_effects() {
    let f = Fixture::new();
    enable(&f, &f.ctrl);
    let log =
        CommandEffectsLog::read_from_bytes(&data_of(f.run(&get_log_sqe(0x05, 4096, 0, false))))
            .unwrap();
    for opc in [0x02, 0x06, 0x08, 0x09, 0x0A, 0x0C, 0x18] {
        assert_eq!(log.admin[opc].get(), effects::CSUPP, "admin {opc:#x}");
    }
    for opc in [0x00, 0x01, 0x04, 0x05, 0x0D, 0x10, 0x80, 0x7F] {
        assert_eq!(log.admin[opc].get(), 0, "admin {opc:#x}");
    }
    assert_eq!(log.io[0x00].get(), effects::CSUPP);
    assert_eq!(log.io[0x01].get(), effects::CSUPP | effects::LBCC);
    assert_eq!(log.io[0x02].get(), effects::CSUPP);
    assert_eq!(log.io[0x05].get(), effects::CSUPP);
    assert_eq!(log.io[0x08].get(), effects::CSUPP | effects::LBCC);
    assert_eq!(log.io[0x09].get(), effects::CSUPP | effects::LBCC);
    assert_eq!(log.io[0x04].get(), 0);
    // Only the NVM command set's page exists.
    let mut sqe = get_log_sqe(0x05, 4096, 0, false);
    sqe.cdw14 = zerocopy::little_endian::U32::new(2 << 24);
    assert_eq!(status_of(f.run(&sqe)), INVALID);
}

fn changed_list(f: &Fixture, rae: bool) -> Vec<u32> {
    let data = data_of(f.run(&get_log_sqe(0x04, 4096, 0, rae)));
    data.chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .take_while(|&n| n != 0)
        .collect()
}

#[test]
fn changed_namespace_list_and_notice() {
    let f = Fixture::new();
    enable(&f, &f.ctrl);
    // Enable namespace attribute notices, as the Linux host does.
    let set_aec = admin_sqe(op::SET_FEATURES, 0, 0x0B, 1 << 8, 0);
    assert_eq!(done(f.run(&set_aec)).0, Status::SUCCESS);

    let add = |name: &str, nsid: u32| {
        let b = MallocBdev::create(name, None, 8, 512).unwrap();
        f.sub
            .add_namespace(b, Some(nsid), None, None, None)
            .unwrap();
    };
    add("a", 4);
    assert_eq!(take_async_event(&f.ctrl), Some(0x0004_0002));
    add("b", 2);
    assert_eq!(
        take_async_event(&f.ctrl),
        None,
        "masked until the log is read"
    );
    // RAE = 1: read, keep the list and the mask.
    assert_eq!(changed_list(&f, true), vec![2, 4]);
    assert_eq!(changed_list(&f, true), vec![2, 4]);
    f.sub.remove_namespace(4).unwrap();
    assert_eq!(take_async_event(&f.ctrl), None);
    // RAE = 0: read, clear, re-arm.
    assert_eq!(changed_list(&f, false), vec![2, 4]);
    assert_eq!(changed_list(&f, false), Vec::<u32>::new());
    add("c", 9);
    assert_eq!(take_async_event(&f.ctrl), Some(0x0004_0002));

    // More than 1024 changes: FFFFFFFFh first, zeroes after.
    f.ctrl.state().changed_namespaces.extend(1..=1025);
    let data = data_of(f.run(&get_log_sqe(0x04, 4096, 0, false)));
    assert_eq!(&data[..8], &[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]);
    assert!(f.ctrl.state().changed_namespaces.is_empty());
}

fn discovery_log(
    f: &Fixture,
    ctrl: &ControllerShared,
) -> (DiscoveryLogHeader, Vec<DiscoveryLogEntry>) {
    // Like the Linux host: the header first, then header and entries.
    let head = data_of(f.run_on(ctrl, &get_log_sqe(0x70, 1024, 0, false)));
    let header = DiscoveryLogHeader::read_from_bytes(&head).unwrap();
    let n = u32::try_from(header.numrec.get()).unwrap();
    let all = data_of(f.run_on(ctrl, &get_log_sqe(0x70, 1024 * (n + 1), 0, false)));
    let entries = all[1024..]
        .chunks(1024)
        .map(|c| DiscoveryLogEntry::read_from_bytes(c).unwrap())
        .collect();
    (
        DiscoveryLogHeader::read_from_bytes(&all[..1024]).unwrap(),
        entries,
    )
}

#[test]
fn discovery_log_shows_only_allowed_subsystems() {
    let f = Fixture::new();
    let private = f
        .target
        .create_subsystem("nqn.2026-01.io.shoal:private", SubsystemOptions::default())
        .unwrap();
    private
        .add_listener(ListenAddress::tcp("127.0.0.1", "4420"))
        .unwrap();
    private
        .add_listener(ListenAddress::tcp("::1", "4421"))
        .unwrap();
    let disc = f.discovery();
    enable(&f, &disc);

    let (header, entries) = discovery_log(&f, &disc);
    assert_eq!(header.numrec.get(), 1);
    assert_eq!(header.recfmt.get(), 0);
    let e = &entries[0];
    assert_eq!((e.trtype, e.adrfam, e.subtype, e.treq), (3, 1, 2, 0x06));
    assert_eq!((e.cntlid.get(), e.asqsz.get()), (0xFFFF, 128));
    assert_eq!(&e.trsvcid[..6], b"4420  ");
    assert_eq!(&e.traddr[..10], b"127.0.0.1 ");
    assert_eq!(crate::wire::spec::field_str(&e.subnqn), Some(SUBNQN));
    assert_eq!(e.tsas[0], 0);

    // Allowing the host adds the private subsystem's ports; the generation moves.
    let gen_before = header.genctr.get();
    private.add_host(HOST).unwrap();
    let (header, entries) = discovery_log(&f, &disc);
    assert_ne!(header.genctr.get(), gen_before);
    assert_eq!(header.numrec.get(), 3);
    let private_entries: Vec<_> = entries
        .iter()
        .filter(|e| crate::wire::spec::field_str(&e.subnqn) == Some("nqn.2026-01.io.shoal:private"))
        .collect();
    assert_eq!(private_entries.len(), 2);
    // Same address, same port ID, across subsystems; IPv6 reported as such.
    let v4 = private_entries.iter().find(|e| e.adrfam == 1).unwrap();
    let public = entries
        .iter()
        .find(|e| crate::wire::spec::field_str(&e.subnqn) == Some(SUBNQN))
        .unwrap();
    assert_eq!(v4.portid.get(), public.portid.get());
    let v6 = private_entries.iter().find(|e| e.adrfam == 2).unwrap();
    assert_ne!(v6.portid.get(), v4.portid.get());
    assert_eq!(&v6.traddr[..4], b"::1 ");

    // Reading the entries alone, at an offset, as a chunked reader would.
    let second = data_of(f.run_on(&disc, &get_log_sqe(0x70, 1024, 2048, false)));
    assert_eq!(
        DiscoveryLogEntry::read_from_bytes(&second).unwrap(),
        entries[1]
    );
    // The discovery controller serves no other log page.
    for lid in [0x01, 0x02, 0x04, 0x05] {
        assert_eq!(
            status_of(f.run_on(&disc, &get_log_sqe(lid, 512, 0, false))),
            Status::INVALID_LOG_PAGE.with_dnr()
        );
    }
}

/// A namespace's device that changes size: the controllers that enabled namespace attribute
/// notices get one (and the namespace in the Changed Namespace List), Identify Namespace
/// reports the new size, and a removed namespace's device no longer notifies anyone.
#[test]
fn a_resized_namespace_is_a_changed_namespace() {
    use crate::wire::spec::identify::IdentifyNamespace;
    use zerocopy::FromBytes;

    let f = Fixture::new();
    enable(&f, &f.ctrl);
    let quiet = super::connect(&f.sub);
    enable(&f, &quiet);
    let set_aec = admin_sqe(op::SET_FEATURES, 0, 0x0B, 1 << 8, 0);
    assert_eq!(done(f.run(&set_aec)).0, Status::SUCCESS);
    let bdev = f.sub.namespace(1).unwrap().bdev;
    assert_eq!(bdev.info().watchers(), 1);
    let nsze = |f: &Fixture| {
        let data = data_of(f.run(&super::identify_sqe(0, 1, 0)));
        let id = IdentifyNamespace::read_from_prefix(&data).unwrap().0;
        (id.nsze.get(), id.ncap.get(), id.nuse.get())
    };
    assert_eq!(nsze(&f), (2048, 2048, 2048));
    f.disk.resize(1024).unwrap();
    assert_eq!(nsze(&f), (1024, 1024, 1024));
    assert_eq!(take_async_event(&f.ctrl), Some(0x0004_0002));
    assert_eq!(changed_list(&f, false), vec![1]);
    // A controller that did not enable the notices gets none, but the list has it.
    assert_eq!(take_async_event(&quiet), None);
    assert_eq!(
        quiet
            .state()
            .changed_namespaces
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![1]
    );
    // The same size again tells nobody.
    f.disk.resize(1024).unwrap();
    assert_eq!(take_async_event(&f.ctrl), None);
    f.disk.resize(2048).unwrap();
    assert_eq!(take_async_event(&f.ctrl), Some(0x0004_0002));
    assert_eq!(changed_list(&f, false), vec![1]);
    // Removed: the subsystem stops watching; the removal itself is the last notice.
    f.sub.remove_namespace(1).unwrap();
    assert_eq!(bdev.info().watchers(), 0);
    assert_eq!(take_async_event(&f.ctrl), Some(0x0004_0002));
    assert_eq!(changed_list(&f, false), vec![1]);
    f.disk.resize(512).unwrap();
    assert_eq!(take_async_event(&f.ctrl), None);
    assert!(f.ctrl.state().changed_namespaces.is_empty());
}
