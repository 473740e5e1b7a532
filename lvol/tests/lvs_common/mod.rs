//! A pool for tests: its base, its home reactor (a thread of its own) and the pool.

#![allow(dead_code)]

use std::sync::Arc;

use shoal_bdev::Bdev;
use shoal_bdev::malloc::MallocBdev;
use shoal_lvol::Lvs;
use shoal_reactor::{ReactorConfig, ReactorHandle, ReactorSet};

/// A reactor thread that stops when dropped.
pub struct HomeReactor(Option<ReactorSet>);

impl HomeReactor {
    /// Starts one (unpinned in effect: core 0 is shared with the test threads).
    pub fn start() -> HomeReactor {
        let set = ReactorSet::start(&[0], ReactorConfig::default(), Arc::new(|_| {})).unwrap();
        HomeReactor(Some(set))
    }

    /// Its handle.
    pub fn handle(&self) -> ReactorHandle {
        self.0.as_ref().unwrap().handles()[0].clone()
    }
}

impl Drop for HomeReactor {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            s.shutdown();
        }
    }
}

/// A pool with what keeps it running. Fields drop in order: the pool, then its reactor.
pub struct Pool {
    pub lvs: Arc<Lvs>,
    pub base: Arc<dyn Bdev>,
    pub home: HomeReactor,
}

/// A pool on a RAM disk of `bytes` with `bs`-byte blocks and `cluster`-byte clusters.
pub fn pool_on_malloc(bs: u32, bytes: u64, cluster: u64) -> Pool {
    let base: Arc<dyn Bdev> =
        MallocBdev::create("Malloc0", None, bytes / u64::from(bs), bs).unwrap();
    pool_on(base, cluster)
}

/// A pool on `base`.
pub fn pool_on(base: Arc<dyn Bdev>, cluster: u64) -> Pool {
    let home = HomeReactor::start();
    let lvs = Lvs::create(base.clone(), "lvs0", cluster, None, home.handle()).unwrap();
    Pool { lvs, base, home }
}

/// The crash tests' seeded generator (splitmix64).
pub fn rng(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A block of `bs` bytes holding `v` over and over: a torn block shows as a mix.
pub fn block(bs: u32, v: u64) -> Vec<u8> {
    v.to_le_bytes().repeat(bs as usize / 8)
}

/// Cuts the power of `pf` (keeping `keep` of its cache) from the current reactor, and checks
/// that the cut went through.
pub fn cut(pf: &Arc<shoal_bdev::pfail::PfailBdev>, keep: shoal_bdev::pfail::Keep) {
    let done = std::rc::Rc::new(std::cell::RefCell::new(None));
    let d = done.clone();
    pf.cut(keep, Box::new(move |r| *d.borrow_mut() = Some(r.is_ok())));
    let r = shoal_reactor::Reactor::current().expect("on a reactor");
    assert!(r.run_until(std::time::Duration::from_secs(30), || {
        done.borrow().is_some()
    }));
    assert_eq!(*done.borrow(), Some(true), "the power cut failed");
}
