//! A thick creation or growth appends its records only once its clusters are zeroed; until
//! then what it will add (a name, clusters of volume size) must count in every other
//! operation's checks, or two operations that each fit leave a table the pool refuses to open
//! (two volumes of one name, or more than `MAX_POOL_CLUSTERS` clusters of volumes).

// The shared bdev test helpers do arithmetic on small constants.
#![allow(clippy::cast_possible_truncation)]

#[path = "../../bdev/tests/common/mod.rs"]
mod common;
mod lvs_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lvs_common::pool_on;
use shoal_bdev::Bdev;
use shoal_bdev::IoType;
use shoal_bdev::error_bdev::{ErrorBdev, Injection, RuleId};
use shoal_bdev::malloc::MallocBdev;
use shoal_lvol::format::MAX_POOL_CLUSTERS;
use shoal_lvol::format::record::ClearMethod;
use shoal_lvol::{LvolError, LvolOptions, Lvs};

const MIB: u64 = 1 << 20;
const CLUSTER: u64 = 4096;

fn opts(name: &str, bytes: u64, thin: bool) -> LvolOptions {
    LvolOptions {
        name: name.into(),
        size_bytes: bytes,
        thin,
        clear: ClearMethod::Default,
    }
}

/// A pool on a RAM disk under an `error` device, whose next write zeroes is held.
fn held_pool() -> (lvs_common::Pool, Arc<ErrorBdev>) {
    let ram: Arc<dyn Bdev> = MallocBdev::create("ram", None, 32 * MIB / 4096, 4096).unwrap();
    let err = ErrorBdev::create(ram, None).unwrap();
    let p = pool_on(err.clone(), CLUSTER);
    (p, err)
}

fn hold(err: &ErrorBdev) -> RuleId {
    err.inject(Injection::pending(IoType::WriteZeroes).count(1))
        .unwrap()
}

fn until_held(err: &ErrorBdev) {
    let t0 = Instant::now();
    while err.held() == 0 {
        assert!(t0.elapsed() < common::WAIT, "nothing is zeroed");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn release(err: &ErrorBdev, rule: RuleId) {
    err.remove(rule);
    err.resume_pending();
}

/// Closes the pool and opens it again from its device.
fn reopen(p: lvs_common::Pool) -> Result<Arc<Lvs>, LvolError> {
    p.lvs.close().unwrap();
    Lvs::open(p.base.clone(), p.home.handle())
}

#[test]
fn a_name_being_created_thick_is_taken() {
    let (p, err) = held_pool();
    let rule = hold(&err);
    let lvs = p.lvs.clone();
    let thick = std::thread::spawn(move || lvs.create_lvol(opts("a", 8 * CLUSTER, false)));
    until_held(&err);
    let e = p.lvs.create_lvol(opts("a", CLUSTER, true)).unwrap_err();
    assert!(matches!(e, LvolError::Exists(_)), "{e}");
    let b = p.lvs.create_lvol(opts("b", CLUSTER, true)).unwrap();
    let e = p.lvs.rename_lvol(b.uuid(), "a").unwrap_err();
    assert!(matches!(e, LvolError::Exists(_)), "{e}");
    release(&err, rule);
    thick.join().unwrap().unwrap();
    let lvs = reopen(p).expect("the pool opens");
    assert_eq!(lvs.lvols().len(), 2);
}

#[test]
fn a_thick_growth_in_flight_counts_towards_the_pool_bound() {
    let (p, err) = held_pool();
    let v = p.lvs.create_lvol(opts("v", 2 * CLUSTER, false)).unwrap();
    let rule = hold(&err);
    let (lvs, vu) = (p.lvs.clone(), v.uuid());
    let grow = std::thread::spawn(move || lvs.resize_lvol(vu, 6 * CLUSTER));
    until_held(&err);
    // What the table alone leaves room for; the growth in flight takes 4 of it.
    let room = MAX_POOL_CLUSTERS - 2;
    let e = p
        .lvs
        .create_lvol(opts("big", room * CLUSTER, true))
        .unwrap_err();
    assert!(matches!(e, LvolError::Invalid(_)), "{e}");
    release(&err, rule);
    grow.join().unwrap().unwrap();
    let lvs = reopen(p).expect("the pool opens");
    assert_eq!(lvs.lvols().len(), 1);
}
