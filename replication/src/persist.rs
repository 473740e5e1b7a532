//! Reading and writing replica labels through the children's bdevs (control path, on the
//! home reactor). A label write is the write of its slot followed by a flush; only then is it
//! considered durable.

use std::sync::Arc;
use std::time::Duration;

use shoal_bdev::{BdevError, BdevIo, IoBuf, IoChannel, SgList};

use crate::exec;
use crate::label::{Label, SLOT_BYTES, SLOTS, SlotError};
use crate::routing::ChildShared;

/// What a child's reserved region holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LabelRead {
    /// Never labelled.
    Blank,
    /// The newest valid label.
    Found(Label),
    /// Labelled, but no slot can be used (corrupt, or a version this code does not know).
    Unreadable(String),
}

fn one_buf(len: usize) -> SgList {
    let mut bufs = SgList::new();
    bufs.push(IoBuf::zeroed(len));
    bufs
}

/// Reads the label slots of a child with blocks of `bs` bytes.
pub(crate) async fn read_label(
    chan: &IoChannel,
    bs: u32,
    timeout: Duration,
) -> Result<LabelRead, BdevError> {
    let len = SLOTS * SLOT_BYTES;
    let blocks = u64::try_from(len).unwrap_or(0) / u64::from(bs.max(1));
    let (io, r) = exec::io(chan, BdevIo::read(0, blocks, one_buf(len)), timeout).await;
    r?;
    let data = io.bufs.first().map(IoBuf::as_slice).unwrap_or(&[]);
    Ok(match Label::newest(data) {
        Ok(l) => LabelRead::Found(l),
        Err(SlotError::Blank) => LabelRead::Blank,
        Err(e) => LabelRead::Unreadable(format!("{e:?}")),
    })
}

/// Flushes `child`, writes `label` into its slot for it and flushes again: the label never
/// becomes durable before the data written before it (a rebuilt child's copies, above all:
/// an `in_sync` label must not survive a power cut that loses them). Given up after
/// `timeout`, the write counts in the child's `abandoned` until it completes (an old label
/// must not land after a newer one).
pub(crate) async fn write_label(
    child: &Arc<ChildShared>,
    chan: &IoChannel,
    bs: u32,
    label: &Label,
    timeout: Duration,
) -> Result<(), BdevError> {
    let bs64 = u64::from(bs.max(1));
    let slot_bytes = u64::try_from(SLOT_BYTES).unwrap_or(0);
    let slot = u64::try_from(label.slot()).unwrap_or(0);
    let offset = slot * slot_bytes / bs64;
    let blocks = slot_bytes / bs64;
    let mut bufs = SgList::new();
    bufs.push(IoBuf::copy_from(&label.encode()));
    exec::io(chan, BdevIo::flush(), timeout).await.1?;
    let (_, r) = exec::write_to(child, chan, BdevIo::write(offset, blocks, bufs), timeout).await;
    r?;
    let (_, r) = exec::io(chan, BdevIo::flush(), timeout).await;
    r
}

/// Flushes a child.
pub(crate) async fn flush(chan: &IoChannel, timeout: Duration) -> Result<(), BdevError> {
    exec::io(chan, BdevIo::flush(), timeout).await.1
}
