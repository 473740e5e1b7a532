//! Commands in progress on one queue pair, indexed by a slot number that doubles as the R2T
//! transfer tag (TTAG, NVMe/TCP 1.0a section 3.6.2.10). A slot holds the command as it was
//! parsed on arrival and the namespace channel it was looked up with: neither is done twice.

use shoal_bdev::SgList;

use crate::wire::command::IoCommand;
use crate::wire::spec::Status;

/// Where a command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotState {
    /// Unused.
    Free,
    /// Waiting for H2CData after R2T (NVMe/TCP 1.0a section 3.6.2.10).
    AwaitData,
    /// Running on the device.
    Executing,
}

/// One command in progress, on namespace channel `C`.
pub(super) struct Slot<C> {
    pub(super) state: SlotState,
    pub(super) cid: u16,
    /// The command, parsed once when its capsule arrived.
    pub(super) cmd: IoCommand,
    /// Its namespace's channel, looked up once when its capsule arrived.
    pub(super) chan: Option<C>,
    /// Its namespace's block size.
    pub(super) block_size: u32,
    /// Its namespace's size in blocks when its capsule arrived (for the ranges of a Dataset
    /// Management, which come with its data).
    pub(super) ns_blocks: u64,
    /// Host data (writes, compares, dataset management).
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

impl<C> Slot<C> {
    fn new() -> Slot<C> {
        Slot {
            state: SlotState::Free,
            cid: 0,
            cmd: IoCommand::Flush,
            chan: None,
            block_size: 0,
            ns_blocks: 0,
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
pub(super) struct Slots<C> {
    slots: Vec<Slot<C>>,
    free: Vec<u16>,
    /// One bit per CID in use; allocated at Connect (a connection that never connects holds
    /// nothing here).
    cids: Box<[u64]>,
}

impl<C> Default for Slots<C> {
    fn default() -> Self {
        Slots {
            slots: Vec::new(),
            free: Vec::new(),
            cids: Box::default(),
        }
    }
}

fn bit(cid: u16) -> (usize, u64) {
    (usize::from(cid >> 6), 1u64 << (cid & 63))
}

impl<C> Slots<C> {
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

    /// Slots in use.
    pub(super) fn in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Takes a slot for command `cid`; `None` when the queue is full.
    pub(super) fn alloc(
        &mut self,
        cid: u16,
        cmd: IoCommand,
        chan: C,
        block_size: u32,
        ns_blocks: u64,
    ) -> Option<u16> {
        let idx = self.free.pop()?;
        let (w, b) = bit(cid);
        if let Some(x) = self.cids.get_mut(w) {
            *x |= b;
        }
        let s = self.slots.get_mut(usize::from(idx))?;
        s.state = SlotState::Executing;
        s.cid = cid;
        s.cmd = cmd;
        s.chan = Some(chan);
        s.block_size = block_size;
        s.ns_blocks = ns_blocks;
        s.data.clear();
        s.data_len = 0;
        s.received = 0;
        s.r2t_end = 0;
        s.pending = 0;
        s.status = Status::SUCCESS;
        Some(idx)
    }

    /// The slot `idx`, if it is in use.
    pub(super) fn get(&mut self, idx: u16) -> Option<&mut Slot<C>> {
        self.slots
            .get_mut(usize::from(idx))
            .filter(|s| s.state != SlotState::Free)
    }

    /// Releases every slot whose command waits for host data (the connection is closing: that
    /// data will not come). Slots whose I/O runs stay until it completes.
    pub(super) fn release_waiting(&mut self) {
        for idx in 0..self.slots.len() {
            let waiting = self
                .slots
                .get(idx)
                .is_some_and(|s| s.state == SlotState::AwaitData);
            if waiting && let Ok(idx) = u16::try_from(idx) {
                self.release(idx);
            }
        }
    }

    /// Releases a slot (its channel and data buffers go with it).
    pub(super) fn release(&mut self, idx: u16) {
        let Some(s) = self.slots.get_mut(usize::from(idx)) else {
            return;
        };
        if s.state == SlotState::Free {
            return;
        }
        s.state = SlotState::Free;
        s.chan = None;
        s.data.clear();
        let (w, b) = bit(s.cid);
        if let Some(x) = self.cids.get_mut(w) {
            *x &= !b;
        }
        self.free.push(idx);
    }
}
