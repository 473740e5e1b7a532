//! The `uring` backend: geometry detection, refused configurations, byte-exact placement in the
//! file, hole punching, the write-zeroes fallback on tmpfs, and a real block device (a loop
//! device, when the test runs as root with `losetup`).

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::common::{Harness, disk_tempdir, flatten, make_file, pattern, sg, sg_zeroed};
use shoal_bdev::uring::UringBdev;
use shoal_bdev::{Bdev, BdevError, BdevIo};

fn create(path: &Path, bs: Option<u32>) -> Result<Arc<UringBdev>, BdevError> {
    UringBdev::create("Uring9", path, bs, None)
}

fn read_file(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(off)).unwrap();
    let mut v = vec![0; len];
    f.read_exact(&mut v).unwrap();
    v
}

#[test]
fn size_and_block_size_detection() {
    let dir = disk_tempdir();
    let path = make_file(dir.path(), "f", (1 << 20) + 1000);
    let d = create(&path, None).unwrap();
    assert!(d.is_direct() && !d.is_block_device());
    assert_eq!(d.path(), path);
    assert_eq!(d.min_block_size(), 512, "ext4 on a 512-byte disk");
    let info = d.info();
    assert_eq!(
        (info.block_size, info.num_blocks()),
        (512, 2049),
        "the partial block is unused"
    );
    assert_eq!(info.product_name, "URING bdev");
    let d = create(&path, Some(4096)).unwrap();
    assert_eq!((d.info().block_size, d.info().num_blocks()), (4096, 256));
    let uuid = uuid::Uuid::new_v4();
    let d = UringBdev::create("U", &path, None, Some(uuid)).unwrap();
    assert_eq!(d.info().uuid, uuid);
}

#[test]
fn bad_configurations_are_refused() {
    let dir = disk_tempdir();
    let path = make_file(dir.path(), "f", 64 * 1024);
    for bs in [0, 256, 520, 1024, 2048, 8192] {
        assert!(
            matches!(create(&path, Some(bs)), Err(BdevError::Invalid(_))),
            "block size {bs}"
        );
    }
    let small = make_file(dir.path(), "small", 4000);
    assert!(matches!(
        create(&small, Some(4096)),
        Err(BdevError::Invalid(_))
    ));
    assert_eq!(create(&small, None).unwrap().info().num_blocks(), 7);
    let empty = make_file(dir.path(), "empty", 0);
    assert!(matches!(create(&empty, None), Err(BdevError::Invalid(_))));
    assert!(matches!(
        create(dir.path(), None),
        Err(BdevError::Invalid(_)) | Err(BdevError::Os(_))
    ));
    let missing = dir.path().join("missing");
    match create(&missing, None) {
        Err(BdevError::Os(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[test]
fn data_lands_at_block_times_block_size_in_the_file() {
    let dir = disk_tempdir();
    let path = make_file(dir.path(), "f", 256 * 4096);
    for bs in [512usize, 4096] {
        let d: Arc<dyn Bdev> = create(&path, Some(bs as u32)).unwrap();
        let h = Harness::new(&d);
        let data = pattern(3 * bs, bs as u32);
        // Scatter-gather write of 1 + 2 blocks at block 7.
        h.run(BdevIo::write(7, 3, sg(&[&data[..bs], &data[bs..]])))
            .1
            .unwrap();
        h.run(BdevIo::flush()).1.unwrap();
        assert_eq!(read_file(&path, 7 * bs as u64, 3 * bs), data);
        // And the other way: bytes written to the file are read at the right block.
        let outside = pattern(bs, 99);
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(20 * bs as u64)).unwrap();
        f.write_all(&outside).unwrap();
        f.sync_all().unwrap();
        let (io, r) = h.run(BdevIo::read(19, 3, sg_zeroed(&[bs, bs, bs])));
        r.unwrap();
        assert_eq!(io.bufs[1].as_slice(), &outside[..]);
    }
}

#[test]
fn unmap_punches_a_hole() {
    let dir = disk_tempdir();
    let path = make_file(dir.path(), "f", 1 << 20);
    let d: Arc<dyn Bdev> = create(&path, Some(4096)).unwrap();
    let h = Harness::new(&d);
    h.write(0, &pattern(1 << 20, 1)).unwrap();
    h.run(BdevIo::flush()).1.unwrap();
    let before = std::fs::metadata(&path).unwrap().blocks();
    h.run(BdevIo::unmap(16, 128)).1.unwrap();
    let after = std::fs::metadata(&path).unwrap().blocks();
    assert!(
        after + 1024 <= before,
        "512 KiB deallocated: {before} -> {after} sectors"
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        1 << 20,
        "the size is kept"
    );
    assert!(h.read(16, 128).unwrap().iter().all(|&b| b == 0));
    assert_eq!(
        h.read(15, 1).unwrap(),
        pattern(1 << 20, 1)[15 * 4096..16 * 4096]
    );
}

#[test]
fn write_zeroes_falls_back_to_writing_zeroes_on_tmpfs() {
    // tmpfs has no FALLOC_FL_ZERO_RANGE: the device writes zero buffers instead, in chunks.
    let dir = tempfile::Builder::new().tempdir_in("/dev/shm").unwrap();
    let len: u64 = 4 << 20;
    let path = make_file(dir.path(), "f", len);
    let d: Arc<dyn Bdev> = create(&path, Some(512)).unwrap();
    let h = Harness::new(&d);
    let blocks = len / 512;
    let data = pattern(len as usize, 3);
    h.write(0, &data).unwrap();
    // 3 MiB + 1 block: several chunks and a short last one.
    let (off, n) = (100u64, 6145u64);
    h.run(BdevIo::write_zeroes(off, n)).1.unwrap();
    let got = h.read(0, blocks).unwrap();
    let (a, b) = ((off * 512) as usize, ((off + n) * 512) as usize);
    assert_eq!(got[..a], data[..a]);
    assert!(got[a..b].iter().all(|&x| x == 0));
    assert_eq!(got[b..], data[b..]);
    // Again, now on the remembered fallback path.
    h.run(BdevIo::write_zeroes(0, 1)).1.unwrap();
    assert_eq!(h.read(0, 1).unwrap(), vec![0; 512]);
}

/// A loop device over a file, detached on drop.
struct Loop {
    dev: PathBuf,
}

impl Loop {
    fn attach(file: &Path, sector: u32) -> Option<Loop> {
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show", "--sector-size", &sector.to_string()])
            .arg(file)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!("losetup failed: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        let dev = String::from_utf8(out.stdout).ok()?.trim().to_string();
        Some(Loop {
            dev: PathBuf::from(dev),
        })
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .arg("-d")
            .arg(&self.dev)
            .status();
    }
}

#[test]
fn block_device_geometry_and_io() {
    let dir = disk_tempdir();
    let file = make_file(dir.path(), "backing", 8 << 20);
    let Some(lo) = Loop::attach(&file, 4096) else {
        // Needs root and loop devices; CI runs as root, a developer may not.
        eprintln!("skipped: no loop device could be attached");
        return;
    };
    let d = create(&lo.dev, None).unwrap();
    assert!(d.is_block_device());
    assert_eq!(
        d.min_block_size(),
        4096,
        "BLKSSZGET of a 4096-byte-sector loop device"
    );
    assert_eq!(
        (d.info().block_size, d.info().num_blocks()),
        (4096, 2048),
        "BLKGETSIZE64"
    );
    assert!(matches!(
        create(&lo.dev, Some(512)),
        Err(BdevError::Invalid(_))
    ));
    let d: Arc<dyn Bdev> = d;
    let h = Harness::new(&d);
    let data = pattern(8 * 4096, 8);
    h.write(100, &data).unwrap();
    h.run(BdevIo::flush()).1.unwrap();
    assert_eq!(h.read(100, 8).unwrap(), data);
    h.run(BdevIo::write_zeroes(101, 2)).1.unwrap();
    h.run(BdevIo::unmap(105, 2)).1.unwrap();
    let got = h.read(100, 8).unwrap();
    assert_eq!(got[..4096], data[..4096]);
    assert!(got[4096..3 * 4096].iter().all(|&x| x == 0), "write zeroes");
    assert_eq!(got[3 * 4096..5 * 4096], data[3 * 4096..5 * 4096]);
    assert!(
        got[5 * 4096..7 * 4096].iter().all(|&x| x == 0),
        "unmap (loop: punched hole)"
    );
    let (io, r) = h.run(BdevIo::read(100, 1, sg_zeroed(&[4096])));
    r.unwrap();
    assert_eq!(flatten(&io.bufs), data[..4096]);
    drop(h);
    drop(d);
    drop(lo);
}
