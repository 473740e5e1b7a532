//! The daemon's typed handles to its stacked bdevs (error, delay, pfail), which the claim
//! rules consult; the methods that create them are in `methods::vbdev`. Its own module, so the
//! daemon's state does not depend on the RPC methods (which depend on it).

use std::collections::BTreeMap;
use std::sync::Arc;

use shoal_bdev::delay::DelayBdev;
use shoal_bdev::error_bdev::ErrorBdev;
use shoal_bdev::pfail::PfailBdev;

/// Typed handles to the stacked bdevs, by name. The mutex holding it in
/// [`Daemon`](crate::daemon::Daemon) also serialises every change to bdevs and claims
/// (creation, deletion, adding a namespace).
#[derive(Default)]
pub struct Stacked {
    pub(crate) errors: BTreeMap<String, Arc<ErrorBdev>>,
    pub(crate) delays: BTreeMap<String, Arc<DelayBdev>>,
    pub(crate) pfails: BTreeMap<String, Arc<PfailBdev>>,
}

impl Stacked {
    /// The stacked bdev built on `base`, if any.
    #[must_use]
    pub fn user_of(&self, base: &str) -> Option<String> {
        self.errors
            .iter()
            .find(|(_, e)| e.base().info().name == base)
            .map(|(n, _)| n.clone())
            .or_else(|| {
                self.delays
                    .iter()
                    .find(|(_, d)| d.base().info().name == base)
                    .map(|(n, _)| n.clone())
            })
            .or_else(|| {
                self.pfails
                    .iter()
                    .find(|(_, d)| d.base().info().name == base)
                    .map(|(n, _)| n.clone())
            })
    }

    /// The error bdev `name`.
    #[must_use]
    pub fn error(&self, name: &str) -> Option<Arc<ErrorBdev>> {
        self.errors.get(name).cloned()
    }

    /// The delay bdev `name`.
    #[must_use]
    pub fn delay(&self, name: &str) -> Option<Arc<DelayBdev>> {
        self.delays.get(name).cloned()
    }

    /// Forgets `name` (it was deleted).
    pub fn forget(&mut self, name: &str) {
        self.errors.remove(name);
        self.delays.remove(name);
        self.pfails.remove(name);
    }
}
