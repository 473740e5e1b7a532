//! The routing snapshot: which child takes which I/O, as the channels see it.
//!
//! The control path publishes a new immutable [`Routing`] (behind an `Arc`) and bumps an epoch;
//! a channel compares the epoch with the one it last saw on every submission (one atomic load)
//! and takes the new snapshot when it moved (a mutex, on the control path's rare changes only).
//! Routes are per child *slot* (bit `slot` of the masks); a child keeps its slot while it is
//! part of the nexus.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use shoal_bdev::Bdev;

use crate::dirty::DirtyMap;

/// Most children a nexus can have (the masks are `u64`).
pub const MAX_CHILDREN: usize = 64;

/// One opened child: what the I/O path needs of it.
pub(crate) struct ChildShared {
    /// Unique per nexus and per opening (a re-added child gets a new id).
    pub id: u64,
    /// The device.
    pub bdev: Arc<dyn Bdev>,
    /// A bdev of this daemon (reads prefer local children).
    pub local: bool,
    /// Segments written while the child was out of the write path (kept across re-adds).
    pub dirty: Arc<DirtyMap>,
    /// Child I/Os given up after a timeout that have not come back yet.
    pub abandoned: AtomicU64,
}

/// What a child does for host I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Online: reads and writes.
    Read,
    /// Rebuilding: writes only.
    Write,
    /// Faulted: no I/O; writes mark its dirty map.
    Track,
}

/// A child's route.
#[derive(Clone)]
pub(crate) struct Route {
    /// The child.
    pub child: Arc<ChildShared>,
    /// Its role.
    pub role: Role,
}

/// An immutable routing snapshot.
#[derive(Clone, Default)]
pub(crate) struct Routing {
    /// Routes by slot (`None`: free slot).
    pub slots: Vec<Option<Route>>,
    /// Children that serve reads.
    pub read_mask: u64,
    /// Children that take writes (online and rebuilding).
    pub write_mask: u64,
    /// Faulted children whose dirty maps writes mark.
    pub track_mask: u64,
    /// Local children.
    pub local_mask: u64,
}

fn bit(slot: usize) -> u64 {
    u32::try_from(slot)
        .ok()
        .and_then(|s| 1u64.checked_shl(s))
        .unwrap_or(0)
}

impl Routing {
    /// The route of `slot`.
    pub fn route(&self, slot: usize) -> Option<&Route> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    /// Sets (or clears) the route of `slot`, keeping the masks in step.
    pub fn set(&mut self, slot: usize, route: Option<Route>) {
        if slot >= MAX_CHILDREN {
            return;
        }
        if self.slots.len() <= slot {
            self.slots.resize(slot + 1, None);
        }
        if let Some(s) = self.slots.get_mut(slot) {
            *s = route;
        }
        self.recompute();
    }

    /// Changes the role of `slot` (no-op for a free slot).
    pub fn set_role(&mut self, slot: usize, role: Role) {
        if let Some(Some(r)) = self.slots.get_mut(slot) {
            r.role = role;
        }
        self.recompute();
    }

    fn recompute(&mut self) {
        let (mut read, mut write, mut track, mut local) = (0, 0, 0, 0);
        for (slot, r) in self.slots.iter().enumerate() {
            let Some(r) = r else { continue };
            let b = bit(slot);
            match r.role {
                Role::Read => {
                    read |= b;
                    write |= b;
                }
                Role::Write => write |= b,
                Role::Track => track |= b,
            }
            if r.child.local {
                local |= b;
            }
        }
        self.read_mask = read;
        self.write_mask = write;
        self.track_mask = track;
        self.local_mask = local;
    }
}

/// Bit of `slot` in the masks.
pub(crate) fn slot_bit(slot: usize) -> u64 {
    bit(slot)
}

/// The slots whose bits are set in `mask`, lowest first.
pub(crate) fn slots(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let s = mask.trailing_zeros();
        mask &= mask - 1;
        usize::try_from(s).ok()
    })
}

/// The `n`-th (from 0, modulo the count) set bit of a non-zero `mask`.
#[inline]
pub(crate) fn nth_slot(mask: u64, n: u64) -> usize {
    let count = u64::from(mask.count_ones()).max(1);
    // Two or four children (the usual counts) need no division.
    let k = if count.is_power_of_two() {
        n & (count - 1)
    } else {
        n % count
    };
    // Drop the `k` lowest set bits: the lowest one left is the slot. Without a branch on `k`:
    // it is as random as the I/O's offset, and a mispredicted branch per read costs more than
    // the whole choice. The loop runs `count - 1` times, the same for every I/O.
    let mut m = mask;
    for i in 1..count {
        let drop = 0u64.wrapping_sub(u64::from(i <= k));
        m ^= m & m.wrapping_neg() & drop;
    }
    if m == 0 {
        return 0;
    }
    usize::try_from(m.trailing_zeros()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_helpers() {
        assert_eq!(slots(0b1010_0001).collect::<Vec<_>>(), vec![0, 5, 7]);
        assert_eq!(nth_slot(0b1010_0001, 1), 5);
        assert_eq!(nth_slot(0b1010_0001, 4), 5);
        assert_eq!(nth_slot(0b1010_0000, 3), 7);
        assert_eq!(nth_slot(0b1010_0000, 4), 5);
        assert_eq!(slot_bit(63), 1 << 63);
        assert_eq!(slot_bit(64), 0);
    }

    #[test]
    fn nth_slot_is_the_nth_set_bit_modulo_the_count() {
        let masks = [
            1,
            0b11,
            0b1010_0001,
            0b1111,
            1 << 63,
            (1 << 63) | 1,
            0x8000_0400_0010_0002,
            u64::MAX,
            0x5555_5555_5555_5555,
        ];
        for mask in masks {
            let all: Vec<usize> = slots(mask).collect();
            for n in 0..300u64 {
                let want = all[usize::try_from(n).unwrap() % all.len()];
                assert_eq!(nth_slot(mask, n), want, "mask {mask:#x}, n {n}");
            }
        }
    }
}
