//! Commands in progress on one queue pair, indexed by a slot number that doubles as the R2T
//! transfer tag (TTAG).

use shoal_bdev::SgList;

use crate::spec::{Sqe, Status};

/// Where a command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotState {
    /// Unused.
    Free,
    /// Waiting for H2CData after R2T (NVMe/TCP 1.0, section 3.3.4).
    AwaitData,
    /// Running on the device (or parked, for an AER).
    Executing,
}

/// One command in progress.
pub(super) struct Slot {
    pub(super) state: SlotState,
    pub(super) cid: u16,
    pub(super) sqe: Sqe,
    /// Host data (writes, compares, dataset management) or read data.
    pub(super) data: SgList,
    /// Bytes the command transfers.
    pub(super) data_len: u32,
    /// Bytes of host data received so far.
    pub(super) received: u32,
    /// End of the range asked for by the R2Ts sent so far.
    pub(super) r2t_end: u32,
    /// Device operations still running (dataset management may issue several).
    pub(super) pending: u32,
    /// First error status among them.
    pub(super) status: Status,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            state: SlotState::Free,
            cid: 0,
            sqe: Sqe::new_zeroed_sqe(),
            data: SgList::new(),
            data_len: 0,
            received: 0,
            r2t_end: 0,
            pending: 0,
            status: Status::SUCCESS,
        }
    }
}

/// The slots of a queue pair and the set of command IDs in use.
#[derive(Default)]
pub(super) struct Slots {
    slots: Vec<Slot>,
    free: Vec<u16>,
    /// One bit per CID in use; allocated at Connect (a connection that never connects holds
    /// nothing here).
    cids: Box<[u64]>,
}

fn bit(cid: u16) -> (usize, u64) {
    (usize::from(cid >> 6), 1u64 << (cid & 63))
}

impl Slots {
    /// Sizes the table for a queue of `depth` entries (at Connect).
    pub(super) fn resize(&mut self, depth: u16) {
        self.slots = (0..depth).map(|_| Slot::new()).collect();
        self.free = (0..depth).rev().collect();
        self.cids = vec![0u64; 1024].into_boxed_slice();
    }

    /// Whether a command with this CID is in progress.
    pub(super) fn cid_busy(&self, cid: u16) -> bool {
        let (w, b) = bit(cid);
        self.cids.get(w).is_some_and(|x| x & b != 0)
    }

    /// Takes a slot for `sqe`; `None` when the queue is full.
    pub(super) fn alloc(&mut self, sqe: &Sqe) -> Option<u16> {
        let idx = self.free.pop()?;
        let cid = sqe.cid();
        let (w, b) = bit(cid);
        if let Some(x) = self.cids.get_mut(w) {
            *x |= b;
        }
        let s = self.slots.get_mut(usize::from(idx))?;
        s.state = SlotState::Executing;
        s.cid = cid;
        s.sqe = *sqe;
        s.data.clear();
        s.data_len = 0;
        s.received = 0;
        s.r2t_end = 0;
        s.pending = 0;
        s.status = Status::SUCCESS;
        Some(idx)
    }

    /// The slot `idx`, if it is in use.
    pub(super) fn get(&mut self, idx: u16) -> Option<&mut Slot> {
        self.slots
            .get_mut(usize::from(idx))
            .filter(|s| s.state != SlotState::Free)
    }

    /// Releases a slot; returns its data buffers to the caller.
    pub(super) fn release(&mut self, idx: u16) -> Option<SgList> {
        let s = self.slots.get_mut(usize::from(idx))?;
        if s.state == SlotState::Free {
            return None;
        }
        s.state = SlotState::Free;
        let (w, b) = bit(s.cid);
        if let Some(x) = self.cids.get_mut(w) {
            *x &= !b;
        }
        self.free.push(idx);
        Some(std::mem::take(&mut s.data))
    }
}
