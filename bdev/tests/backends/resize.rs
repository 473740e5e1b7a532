//! A device's size changing at run time (`BdevInfo::resize`, by the device alone): requests
//! are checked against the size of the moment, and watchers hear of each change once; a user
//! of the device cannot change its size.

use std::sync::{Arc, Mutex};

use crate::common::{Harness, pattern};
use shoal_bdev::malloc::MallocBdev;
use shoal_bdev::null::NullBdev;
use shoal_bdev::{Bdev, BdevError, BdevEvent, BdevInfo, BdevIo};

const BS: usize = 512;
const BLOCKS: u64 = 64;

#[test]
fn io_follows_the_size_and_watchers_hear_each_change() {
    let m = MallocBdev::create("MallocResize", None, BLOCKS, 512).unwrap();
    let d: Arc<dyn Bdev> = m.clone();
    let h = Harness::new(&d);
    let seen: Arc<Mutex<Vec<(String, BdevEvent)>>> = Arc::default();
    let s2 = seen.clone();
    let id = d.info().watch(Arc::new(move |info, ev| {
        s2.lock().unwrap().push((info.name.clone(), ev));
    }));
    assert_eq!(d.info().watchers(), 1);
    let data = pattern(BS, 7);
    h.write(BLOCKS - 1, &data).unwrap();

    // Smaller (the RAM stays: only the checks change): the last blocks are out of range.
    assert_eq!(m.resize(BLOCKS / 2).unwrap(), BLOCKS);
    assert_eq!(d.info().num_blocks(), BLOCKS / 2);
    assert_eq!(d.info().size_bytes(), BLOCKS / 2 * BS as u64);
    let r = h.read(BLOCKS - 1, 1);
    assert!(
        matches!(r, Err(BdevError::OutOfRange { capacity, .. }) if capacity == BLOCKS / 2),
        "{r:?}"
    );
    let r = h.run(BdevIo::write_zeroes(BLOCKS / 2 - 1, 2)).1;
    assert!(matches!(r, Err(BdevError::OutOfRange { .. })), "{r:?}");
    h.run(BdevIo::write_zeroes(BLOCKS / 2 - 1, 1)).1.unwrap();
    // The same size again tells nobody.
    m.resize(BLOCKS / 2).unwrap();
    // Back to the whole device: the block written before is there again.
    m.resize(BLOCKS).unwrap();
    assert_eq!(h.read(BLOCKS - 1, 1).unwrap(), data);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (
                "MallocResize".to_string(),
                BdevEvent::Resized {
                    old: BLOCKS,
                    new: BLOCKS / 2
                }
            ),
            (
                "MallocResize".to_string(),
                BdevEvent::Resized {
                    old: BLOCKS / 2,
                    new: BLOCKS
                }
            ),
        ]
    );
    d.info().unwatch(id);
    assert_eq!(d.info().watchers(), 0);
    m.resize(BLOCKS / 4).unwrap();
    m.resize(BLOCKS).unwrap();
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "an unwatched watcher hears nothing"
    );
}

/// Only the device changes its size: a key made for another device, or any key for a device
/// of fixed size, is refused and changes nothing; a RAM disk does not grow past its memory.
#[test]
fn only_the_device_resizes_itself() {
    let m = MallocBdev::create("MallocKeyed", None, BLOCKS, 512).unwrap();
    let (_other, key) = BdevInfo::new_resizable("other", None, 512, BLOCKS, "test");
    let d: Arc<dyn Bdev> = m.clone();
    assert!(matches!(
        d.info().resize(&key, BLOCKS * 2),
        Err(BdevError::Invalid(_))
    ));
    assert_eq!(d.info().num_blocks(), BLOCKS);
    let n = NullBdev::create("NullKeyed", None, BLOCKS, 512).unwrap();
    assert!(n.info().resize(&key, BLOCKS * 2).is_err());
    assert_eq!(n.info().num_blocks(), BLOCKS);
    assert!(m.resize(BLOCKS + 1).is_err());
    assert_eq!(d.info().num_blocks(), BLOCKS);
}
