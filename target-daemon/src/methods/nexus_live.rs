//! The nexuses alive in this process, as the other methods see them: the typed nexus behind a
//! registered bdev, every nexus of the daemon, and which nexus has a given child (a claim).
//! The `nexus_*` methods that create and change nexuses are in [`super::nexus`], above this
//! file; this file imports no method file.

use std::sync::{Arc, Mutex, Weak};

use shoal_bdev::Bdev;
use shoal_replication::{ChildUri, Nexus};

use super::common::lock;
use crate::daemon::Daemon;

/// Every nexus ever created in this process, to get the typed nexus behind a registered bdev.
pub(super) static LIVE: Mutex<Vec<Weak<Nexus>>> = Mutex::new(Vec::new());

/// The nexus registered in `daemon` as `name`.
pub(super) fn lookup(daemon: &Daemon, name: &str) -> Option<Arc<Nexus>> {
    let bdev = daemon.bdevs.get(name)?;
    let live = lock(&LIVE);
    live.iter()
        .filter_map(Weak::upgrade)
        .find(|n| std::ptr::addr_eq(Arc::as_ptr(n), Arc::as_ptr(&bdev)))
}

/// Every nexus of `daemon`.
pub fn nexuses(daemon: &Daemon) -> Vec<Arc<Nexus>> {
    daemon
        .bdevs
        .list()
        .iter()
        .filter(|b| b.info().product_name == shoal_replication::PRODUCT_NAME)
        .filter_map(|b| lookup(daemon, &b.info().name))
        .collect()
}

/// The nexus of `daemon` that has bdev `name` as a child, if any: for the claim checks of bdev
/// deletion and namespace creation (a child must not be deleted or exported on its own).
pub fn child_of(daemon: &Daemon, name: &str) -> Option<String> {
    nexus_using(
        daemon,
        &ChildUri::Local {
            name: name.to_owned(),
        },
        None,
    )
}

/// Which nexus of this daemon (other than `except`) has the child `uri`.
pub(super) fn nexus_using(
    daemon: &Daemon,
    uri: &ChildUri,
    except: Option<&Nexus>,
) -> Option<String> {
    let uri = uri.to_string();
    nexuses(daemon)
        .into_iter()
        .filter(|n| except.is_none_or(|e| !std::ptr::eq(Arc::as_ptr(n), e)))
        .find(|n| n.status().children.iter().any(|c| c.uri == uri))
        .map(|n| n.info().name.clone())
}
