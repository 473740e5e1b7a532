//! The value types below the nexus: its geometry ([`Geometry`]), a child to add
//! ([`ChildSpec`]) and the check that a child fits the geometry and the nexus's capabilities
//! ([`check_spec`], at creation and when a child is added).

use std::sync::Arc;

use shoal_bdev::{Bdev, IoFlags, IoType};

use crate::{ChildUri, NexusError};

/// A child to add: its URI and the bdev the daemon opened for it.
#[derive(Clone)]
pub struct ChildSpec {
    /// Where it lives.
    pub uri: ChildUri,
    /// The opened device.
    pub bdev: Arc<dyn Bdev>,
    /// Whether reads should prefer it (defaults to `uri.is_local()`).
    pub local: bool,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("uri", &self.uri.to_string())
            .field("bdev", &self.bdev.info().name)
            .field("local", &self.local)
            .finish()
    }
}

impl ChildSpec {
    /// A child at `uri` opened as `bdev`.
    pub fn new(uri: ChildUri, bdev: Arc<dyn Bdev>) -> ChildSpec {
        let local = uri.is_local();
        ChildSpec { uri, bdev, local }
    }

    /// A local child `bdev:///<name of bdev>`.
    pub fn local(bdev: Arc<dyn Bdev>) -> ChildSpec {
        let uri = ChildUri::Local {
            name: bdev.info().name.clone(),
        };
        ChildSpec::new(uri, bdev)
    }
}

/// Geometry of a nexus.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub block_size: u32,
    /// Blocks reserved for metadata at the start of each child.
    pub meta_blocks: u64,
    /// Blocks the host sees.
    pub data_blocks: u64,
    /// Blocks per segment (a power of two: `create` checks it).
    pub seg_blocks: u64,
    /// Segments.
    pub segments: u64,
}

impl Geometry {
    /// Segments touched by `blocks` blocks at `offset` (first, last).
    #[inline]
    pub fn segs(&self, offset: u64, blocks: u64) -> (u64, u64) {
        let last = offset.saturating_add(blocks.max(1) - 1);
        (self.seg_of(offset), self.seg_of(last))
    }

    /// The segment of block `offset`: a shift, not a division (a 64-bit division is tens of
    /// cycles, on every host I/O).
    #[inline]
    pub fn seg_of(&self, offset: u64) -> u64 {
        debug_assert!(self.seg_blocks.is_power_of_two());
        offset >> self.seg_blocks.trailing_zeros()
    }
}

/// Checks a child against the nexus's geometry and capabilities.
pub(crate) fn check_spec(
    geo: &Geometry,
    caps: (bool, bool),
    spec: &ChildSpec,
) -> Result<(), NexusError> {
    let info = spec.bdev.info();
    let uri = spec.uri.to_string();
    if info.is_closed() {
        return Err(NexusError::Open {
            uri,
            reason: "the bdev is closed".into(),
        });
    }
    if info.block_size != geo.block_size {
        return Err(NexusError::Invalid(format!(
            "child {uri} has {}-byte blocks, the nexus {}-byte blocks",
            info.block_size, geo.block_size
        )));
    }
    let need = geo.meta_blocks.saturating_add(geo.data_blocks);
    if info.num_blocks() < need {
        return Err(NexusError::Invalid(format!(
            "child {uri} has {} blocks; the nexus needs {need} ({} of them for metadata)",
            info.num_blocks(),
            geo.meta_blocks
        )));
    }
    for (t, has) in [(IoType::WriteZeroes, caps.0), (IoType::Unmap, caps.1)] {
        if has && !spec.bdev.supports(t) {
            return Err(NexusError::Invalid(format!(
                "child {uri} does not support {t:?}, which the nexus offers"
            )));
        }
    }
    // The nexus answers a FUA write only when every in-sync child has made it durable, so a
    // child must honour FUA itself: it would otherwise refuse every such leg and be faulted.
    let fua = [
        (IoType::Read, true),
        (IoType::Write, true),
        (IoType::WriteZeroes, caps.0),
    ];
    for (t, has) in fua {
        if has && !spec.bdev.supports_flags(t, IoFlags::FUA) {
            return Err(NexusError::Invalid(format!(
                "child {uri} does not honour Force Unit Access on {t:?}"
            )));
        }
    }
    Ok(())
}
