//! What keeps a child from coming back into a nexus: writes of its own that may still land on
//! it. A child is added back (and rebuilt) only once every I/O to it that was given up after a
//! timeout has come back and any rebuild of it has ended; otherwise old data could land on
//! it after the new copy, on a child that serves reads.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::ChildUri;
use crate::rebuild::ctl::RebuildCtl;
use crate::routing::ChildShared;

/// A removed child that may still receive writes of its own (see `State::departed`).
pub(crate) struct Departed {
    pub uri: ChildUri,
    pub shared: Arc<ChildShared>,
    pub rebuild: Option<Arc<RebuildCtl>>,
}

impl Departed {
    /// What still keeps it busy, if anything.
    pub fn busy(&self) -> Option<String> {
        busy_reason(&self.shared, self.rebuild.as_ref())
    }
}

/// Why a child cannot be added back now: I/Os to it given up after a timeout and still out,
/// or a rebuild of it still stopping (its copy writes may still land).
pub(crate) fn busy_reason(
    shared: &ChildShared,
    rebuild: Option<&Arc<RebuildCtl>>,
) -> Option<String> {
    let n = shared.abandoned.load(Ordering::Acquire);
    if n > 0 {
        return Some(format!(
            "{n} I/Os given up after a timeout are still outstanding"
        ));
    }
    if rebuild.is_some_and(|r| !r.is_finished()) {
        return Some("its previous rebuild is still stopping".into());
    }
    None
}
