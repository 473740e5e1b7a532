//! Identify: the controller structure as the Linux 6.1 host checks it, namespaces, lists,
//! descriptors and the NVM command set structures.

use zerocopy::FromBytes;

use super::*;
use crate::wire::spec::identify::{IdentifyController, IdentifyNamespace, Nidt, ns_id_descriptors};

fn id_ctrl(f: &Fixture, ctrl: &ControllerShared) -> IdentifyController {
    let data = data_of(f.run_on(ctrl, &identify_sqe(1, 0, 0)));
    assert_eq!(data.len(), 4096);
    IdentifyController::read_from_bytes(&data).unwrap()
}

/// The checks the Linux 6.1 host makes before it uses a fabrics controller
/// (`nvme_init_identify`, `nvme_tcp_setup_ctrl`; see LINUX-HOST.md).
fn linux_61_accepts(
    id: &IdentifyController,
    connect_cntlid: u16,
    discovery: bool,
) -> Result<(), &'static str> {
    if id.cntlid.get() != connect_cntlid {
        return Err("Mismatching cntlid");
    }
    if !discovery && id.kas.get() == 0 {
        return Err("keep-alive support is mandatory for fabrics");
    }
    if id.icdoff.get() != 0 {
        return Err("icdoff is not supported");
    }
    if id.sgls.get() & 0b11 == 0 {
        return Err("Mandatory sgls are not supported");
    }
    if id.ioccsz.get() < 4 || id.iorcsz.get() < 1 {
        return Err("capsule sizes");
    }
    if id.maxcmd.get() == 0 {
        return Err("maxcmd");
    }
    Ok(())
}

#[test]
fn identify_controller_for_an_io_controller() {
    let f = Fixture::new();
    enable(&f, &f.ctrl);
    let data = data_of(f.run(&identify_sqe(1, 0, 0)));
    let id = IdentifyController::read_from_bytes(&data).unwrap();
    linux_61_accepts(&id, f.ctrl.cntlid, false).unwrap();
    assert_eq!((id.vid.get(), id.ssvid.get()), (0, 0));
    assert_eq!(&id.sn, b"SHOAL00000000000001 ");
    assert_eq!(&id.mn[..17], b"Shoal Controller ");
    assert_eq!(&id.fr, b"0.1.0   ");
    assert_eq!(id.mdts, 5, "128 KiB in 4 KiB pages");
    assert_eq!(id.ver.get(), 0x0001_0400);
    assert_eq!(id.cntrltype, 1);
    assert_eq!(id.cmic, 0x03);
    assert_eq!(id.oaes.get(), 0x100);
    assert_eq!(id.ctratt.get() & 1, 1);
    assert_eq!(
        (id.acl, id.aerl, id.elpe, id.lpa, id.frmw),
        (3, 3, 0, 0x06, 0x03)
    );
    assert_eq!(id.kas.get(), 10);
    assert_eq!((id.sqes, id.cqes), (0x66, 0x44));
    assert_eq!(id.maxcmd.get(), 128);
    assert_eq!(id.nn.get(), 32);
    assert_eq!(id.oncs.get(), 0x1D);
    assert_eq!(id.fuses.get(), 0);
    assert_eq!(id.vwc, 0x05);
    assert_eq!(id.sgls.get(), 0x0010_0001);
    assert_eq!(id.oacs.get(), 0);
    assert_eq!(id.ioccsz.get(), (64 + 8192) / 16);
    assert_eq!(id.iorcsz.get(), 1);
    assert_eq!((id.fcatt, id.msdbd), (0, 1));
    assert_eq!(id.wctemp.get(), 343);
    // Raw offsets (NVMe Base 2.0 Figure 275 / NVMe-oF 1.1 Figure 27).
    assert_eq!(&data[77..80], &[5, u8::try_from(f.ctrl.cntlid).unwrap(), 0]);
    assert_eq!(&data[320..322], &[10, 0]);
    assert_eq!(&data[512..514], &[0x66, 0x44]);
    assert_eq!(&data[536..540], &[0x01, 0, 0x10, 0]);
    assert_eq!(
        &data[768..768 + SUBNQN.len() + 1],
        format!("{SUBNQN}\0").as_bytes()
    );
    assert_eq!(&data[1792..1796], &516u32.to_le_bytes());
    assert_eq!(&data[1800..1802], &[0, 0]);
    // MDTS follows the transport: 1 MiB is 2^8 pages; a size that is not a power of two
    // rounds down; the smallest value is 1 (0 would mean "no limit").
    let mut t = TransportConfig {
        max_io_size: 1 << 20,
        ..TransportConfig::default()
    };
    assert_eq!(crate::target::controller::identify::mdts(&t), 8);
    t.max_io_size = 3 * 4096;
    assert_eq!(crate::target::controller::identify::mdts(&t), 1);
    t.max_io_size = 4096;
    assert_eq!(crate::target::controller::identify::mdts(&t), 1);
}

#[test]
fn identify_controller_for_the_discovery_controller() {
    let f = Fixture::new();
    let disc = f.discovery();
    enable(&f, &disc);
    let id = id_ctrl(&f, &disc);
    linux_61_accepts(&id, disc.cntlid, true).unwrap();
    assert_eq!(id.cntrltype, 2);
    assert_eq!(id.ver.get(), 0x0001_0300);
    assert_eq!(id.kas.get(), 10);
    assert_eq!(id.lpa, 0x04);
    assert_eq!(
        (id.oaes.get(), id.nn.get(), id.oncs.get(), id.vwc),
        (0, 0, 0, 0)
    );
    assert_eq!(
        crate::wire::spec::field_str(&id.subnqn),
        Some(DISCOVERY_NQN)
    );
    // Only CNS 01h.
    for cns in [0x00, 0x02, 0x03, 0x06] {
        assert_eq!(
            status_of(f.run_on(&disc, &identify_sqe(cns, 1, 0))),
            Status::INVALID_FIELD.with_dnr()
        );
    }
}

#[test]
fn identify_namespace_and_nsid_rules() {
    let f = Fixture::new();
    let big = MallocBdev::create("m4k", None, 300, 4096).unwrap();
    f.sub
        .add_namespace(big, Some(5), None, None, Some([1, 2, 3, 4, 5, 6, 7, 8]))
        .unwrap();
    enable(&f, &f.ctrl);
    let ns1 = f.sub.namespace(1).unwrap();

    let id = IdentifyNamespace::read_from_bytes(&data_of(f.run(&identify_sqe(0, 1, 0)))).unwrap();
    assert_eq!(
        (id.nsze.get(), id.ncap.get(), id.nuse.get()),
        (2048, 2048, 2048)
    );
    assert_eq!((id.nsfeat, id.nlbaf, id.flbas, id.nmic), (0, 0, 0, 1));
    assert_eq!(id.lbaf[0].lbads, 9);
    assert_eq!(
        id.dlfeat, 0x09,
        "a RAM disk reads deallocated blocks as zeroes"
    );
    assert_eq!(id.nguid, ns1.nguid);
    assert_eq!(id.eui64, [0; 8]);
    assert_eq!(u128::from_le_bytes(id.nvmcap), 2048 * 512);

    let id5 = IdentifyNamespace::read_from_bytes(&data_of(f.run(&identify_sqe(0, 5, 0)))).unwrap();
    assert_eq!(id5.lbaf[0].lbads, 12);
    assert_eq!(id5.nsze.get(), 300);
    assert_eq!(id5.eui64, [1, 2, 3, 4, 5, 6, 7, 8]);

    // A valid but inactive NSID: all zeroes (NVMe Base 2.0 Figure 274).
    assert!(
        data_of(f.run(&identify_sqe(0, 2, 0)))
            .iter()
            .all(|&b| b == 0)
    );
    assert!(
        data_of(f.run(&identify_sqe(0, 32, 0)))
            .iter()
            .all(|&b| b == 0)
    );
    // NSID 0, above NN, and the broadcast NSID (no Namespace Management): invalid.
    for nsid in [0, 33, 0xFFFF_FFFE, 0xFFFF_FFFF] {
        assert_eq!(
            status_of(f.run(&identify_sqe(0, nsid, 0))),
            Status::INVALID_NAMESPACE.with_dnr()
        );
    }
    // CNS 05h (NVM): zero filled for active and inactive NSIDs, other CSIs invalid.
    assert!(
        data_of(f.run(&identify_sqe(5, 1, 0)))
            .iter()
            .all(|&b| b == 0)
    );
    assert_eq!(
        status_of(f.run(&identify_sqe(5, 1, 2))),
        Status::INVALID_FIELD.with_dnr()
    );
}

#[test]
fn active_namespace_lists() {
    let f = Fixture::new();
    for (name, nsid) in [("a", 7), ("b", 3)] {
        let b = MallocBdev::create(name, None, 8, 512).unwrap();
        f.sub
            .add_namespace(b, Some(nsid), None, None, None)
            .unwrap();
    }
    enable(&f, &f.ctrl);
    let list = |data: Vec<u8>| -> Vec<u32> {
        assert_eq!(data.len(), 4096);
        data.chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .take_while(|&n| n != 0)
            .collect()
    };
    assert_eq!(list(data_of(f.run(&identify_sqe(2, 0, 0)))), vec![1, 3, 7]);
    assert_eq!(list(data_of(f.run(&identify_sqe(2, 3, 0)))), vec![7]);
    assert_eq!(
        list(data_of(f.run(&identify_sqe(2, 7, 0)))),
        Vec::<u32>::new()
    );
    assert_eq!(list(data_of(f.run(&identify_sqe(7, 1, 0)))), vec![3, 7]);
    assert_eq!(
        status_of(f.run(&identify_sqe(7, 0, 1))),
        Status::INVALID_FIELD.with_dnr()
    );
    for nsid in [0xFFFF_FFFE, 0xFFFF_FFFF] {
        assert_eq!(
            status_of(f.run(&identify_sqe(2, nsid, 0))),
            Status::INVALID_NAMESPACE.with_dnr()
        );
    }
}

#[test]
fn namespace_identification_descriptors() {
    let f = Fixture::new();
    let b = MallocBdev::create("e", None, 8, 512).unwrap();
    let uuid = uuid::Uuid::from_bytes([0xAB; 16]);
    f.sub
        .add_namespace(b, Some(2), Some(uuid), Some([0x22; 16]), Some([9; 8]))
        .unwrap();
    enable(&f, &f.ctrl);
    let data = data_of(f.run(&identify_sqe(3, 2, 0)));
    let descs: Vec<_> = ns_id_descriptors(&data)
        .map(|d| (d.nidt, d.nid.to_vec()))
        .collect();
    assert_eq!(
        descs,
        vec![
            (Nidt::EUI64, vec![9; 8]),
            (Nidt::NGUID, vec![0x22; 16]),
            (Nidt::UUID, vec![0xAB; 16]),
            (Nidt::CSI, vec![0]),
        ]
    );
    // Namespace 1 has no EUI64, and its NGUID defaults to its UUID.
    let data = data_of(f.run(&identify_sqe(3, 1, 0)));
    let ns1 = f.sub.namespace(1).unwrap();
    let descs: Vec<_> = ns_id_descriptors(&data)
        .map(|d| (d.nidt, d.nid.to_vec()))
        .collect();
    assert_eq!(descs[0], (Nidt::NGUID, ns1.uuid.as_bytes().to_vec()));
    assert_eq!(descs[1], (Nidt::UUID, ns1.uuid.as_bytes().to_vec()));
    // Inactive or invalid NSIDs.
    for nsid in [0, 4, 0xFFFF_FFFF] {
        assert_eq!(
            status_of(f.run(&identify_sqe(3, nsid, 0))),
            Status::INVALID_NAMESPACE.with_dnr()
        );
    }
}

#[test]
fn nvm_command_set_controller_and_unsupported_cns() {
    let f = Fixture::new();
    enable(&f, &f.ctrl);
    let data = data_of(f.run(&identify_sqe(6, 0, 0)));
    assert_eq!(data[0], 0, "VSL");
    assert_eq!(data[1], 11, "WZSL: 8 MiB");
    assert_eq!(data[3], 0, "DMRL: the command's 256 ranges");
    assert_eq!(
        u32::from_le_bytes(data[4..8].try_into().unwrap()),
        32_768,
        "DMRSL"
    );
    let invalid = Status::INVALID_FIELD.with_dnr();
    assert_eq!(status_of(f.run(&identify_sqe(6, 0, 2))), invalid);
    for cns in [0x04, 0x08, 0x10, 0x12, 0x13, 0x1C, 0xFF] {
        assert_eq!(
            status_of(f.run(&identify_sqe(cns, 1, 0))),
            invalid,
            "cns {cns:#x}"
        );
    }
}

#[test]
fn identify_transfer_length() {
    let f = Fixture::new();
    enable(&f, &f.ctrl);
    // An SGL shorter than the 4096-byte structure.
    let mut sqe = identify_sqe(1, 0, 0);
    sqe.dptr = SglDescriptor::transport(512);
    assert_eq!(
        status_of(f.run(&sqe)),
        Status::DATA_SGL_LENGTH_INVALID.with_dnr()
    );
    // A longer one still gets exactly 4096 bytes.
    sqe.dptr = SglDescriptor::transport(8192);
    assert_eq!(data_of(f.run(&sqe)).len(), 4096);
}

/// A namespace whose device is resized while Identify Namespace is built: NSZE, NCAP, NUSE
/// and NVMCAP always describe one size (the size is read once).
#[test]
fn identify_namespace_reads_one_size_while_the_device_resizes() {
    let f = Fixture::new();
    let ns = f.sub.namespace(1).unwrap();
    let disk = f.disk.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let resizer = std::thread::spawn(move || {
        let mut n = 0u64;
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            disk.resize(if n.is_multiple_of(2) { 1024 } else { 2048 })
                .unwrap();
            n += 1;
        }
        n
    });
    let t0 = std::time::Instant::now();
    let mut bad = None;
    while t0.elapsed() < std::time::Duration::from_secs(1) {
        let id = crate::target::controller::identify::identify_namespace(&ns);
        let (a, b, c) = (id.nsze.get(), id.ncap.get(), id.nuse.get());
        let cap = u128::from_le_bytes(id.nvmcap);
        if a != b || b != c || cap != u128::from(a) * 512 {
            bad = Some((a, b, c, cap));
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let resizes = resizer.join().unwrap();
    assert_eq!(bad, None, "after {resizes} resizes");
    assert!(resizes > 2, "the device was not resized meanwhile");
}
