//! Growing a nexus online ([`crate::Nexus::resize`], `nexus_resize`), on the control task.
//!
//! Order, so that no write past the old end is ever lost or left unmirrored:
//! 1. checks: a growth only (shrinking is refused: the host's file system may use the end),
//!    no child rebuilding (its copy would have to cover the new part too; asked again once
//!    it is in sync), and every online child holding the metadata region plus the new size
//!    (a remote child's size is the one its host last read: `nexus_resize` in the daemon
//!    re-reads it first);
//! 2. the new size goes into the labels of every online child, at a new generation
//!    ([`crate::commit::Ctx::commit`]); until then no I/O can reach past the old end, so a
//!    crash leaves labels of either size and nothing written there (`nexus_create` with the
//!    larger size takes both: a smaller label is a growth);
//! 3. the bdev grows ([`shoal_bdev::BdevInfo::resize`]): requests are checked against the new
//!    size from then on, and its watchers (the NVMe-oF subsystem) send hosts a Namespace
//!    Attribute Changed event.
//!
//! What depends on the size afterwards: writes past the old end go to every child in the
//! write path like any other; a child faulted later and added back has a dirty-segment map
//! of the old size, and its rebuild copies every segment past that map's end
//! ([`crate::rebuild`]); a new child gets a map of the new size. The write-intent bitmap
//! keeps its regions (the old size): writes past them go out without marking, and the
//! bitmap on the children no longer matches the labels' size, so a restart after a crash
//! resynchronises in full until the nexus is next created (which sizes a new bitmap).

use std::sync::atomic::Ordering;

use crate::NexusError;
use crate::commit::Ctx;
use crate::state::ChildState;

pub(crate) async fn resize(ctx: &Ctx, size_bytes: u64) -> Result<(), NexusError> {
    let nx = &ctx.nx;
    let bs = u64::from(nx.geo.block_size);
    if size_bytes == 0 || !size_bytes.is_multiple_of(bs) {
        return Err(NexusError::Invalid(format!(
            "size {size_bytes} is not a non-zero multiple of the block size {bs}"
        )));
    }
    let blocks = size_bytes / bs;
    let old = nx.label_blocks.load(Ordering::Acquire);
    if blocks < old {
        return Err(NexusError::Invalid(format!(
            "nexus {} has {} bytes; shrinking to {size_bytes} is not supported",
            nx.info.name,
            old.saturating_mul(bs)
        )));
    }
    if blocks == old {
        return Ok(());
    }
    let meta = nx.geo.meta_blocks;
    let need = meta
        .checked_add(blocks)
        .ok_or_else(|| NexusError::Invalid(format!("size {size_bytes} is too large")))?;
    {
        let st = nx.lock_state();
        if st.destroying {
            return Err(NexusError::Destroyed);
        }
        if let Some(c) = st
            .children
            .iter()
            .find(|c| c.state == ChildState::Rebuilding)
        {
            return Err(NexusError::Busy {
                uri: c.uri.to_string(),
                reason: "it is being rebuilt; grow the nexus once it is in sync".into(),
            });
        }
        for c in st.children.iter().filter(|c| c.state == ChildState::Online) {
            let have = c.shared.bdev.info().num_blocks();
            if have < need {
                return Err(NexusError::Invalid(format!(
                    "child {} has {have} blocks; {size_bytes} bytes need {need} ({meta} of them for metadata): grow the replica first",
                    c.uri
                )));
            }
        }
    }
    nx.label_blocks.store(blocks, Ordering::Release);
    if let Err(e) = ctx.commit(None, false).await {
        // No child took the labels (the nexus is faulted): the size stays.
        nx.label_blocks.store(old, Ordering::Release);
        return Err(e);
    }
    nx.info
        .resize(&nx.size_key, blocks)
        .map_err(|e| NexusError::Invalid(e.to_string()))?;
    tracing::info!(nexus = %nx.info.name, old_bytes = old.saturating_mul(bs), new_bytes = size_bytes, "nexus grown");
    Ok(())
}
