//! A namespace of a remote subsystem as a block device.
//!
//! [`RemoteBdev`] implements [`Bdev`]: each reactor that opens a channel gets its own I/O queue
//! pair to the target ([`IoQueuePair`]), created by `create_channel` on that reactor and
//! connected in the background (I/O submitted meanwhile waits), so the I/O path takes no lock
//! and crosses no thread. The admin queue stays on the reactor the controller was connected
//! from. Errors follow [`super::to_bdev_error`].
//!
//! Its size follows the namespace's: when the target reports a Namespace Attribute Changed
//! event (or on [`RemoteBdev::refresh_size`]) the host re-reads Identify Namespace and the
//! bdev takes the new NSZE ([`BdevInfo::resize`]); requests are checked against it from then
//! on, so after a shrink nothing goes past the new end (and the target refuses what was
//! already on its way, LBA Out of Range).

use std::sync::{Arc, Weak};

use shoal_bdev::{
    Bdev, BdevChannel, BdevError, BdevInfo, BdevIo, IoFlags, IoSink, IoType, SizeKey,
    valid_block_size,
};
use shoal_reactor::{Reactor, ReactorHandle};

use super::error::HostError;
use super::info::{NamespaceInfo, ONCS_DSM, ONCS_WRITE_ZEROES};
use super::io::IoQueuePair;
use super::shared::Controller;
use super::uri::NvmfUri;

/// What [`RemoteBdev`]s report as their product name (SPDK's NVMe bdevs say the same).
pub const PRODUCT_NAME: &str = "NVMe disk";

/// One namespace of a remote NVMe/TCP controller, as a bdev.
pub struct RemoteBdev {
    info: BdevInfo,
    size_key: SizeKey,
    ctrl: Arc<Controller>,
    ns: NamespaceInfo,
    oncs: u16,
    /// Its registration with the controller's namespace watchers.
    watch: u64,
}

impl Drop for RemoteBdev {
    fn drop(&mut self) {
        self.ctrl.shared.unwatch_namespace(self.watch);
    }
}

impl std::fmt::Debug for RemoteBdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteBdev")
            .field("name", &self.info.name)
            .field("nsid", &self.ns.nsid)
            .field("ctrl", &self.ctrl)
            .finish()
    }
}

impl RemoteBdev {
    /// The bdev `name` for namespace `nsid` of a connected controller. Its UUID is the
    /// namespace's UUID, else its NGUID, else a random one.
    pub fn new(ctrl: Arc<Controller>, nsid: u32, name: &str) -> Result<Arc<RemoteBdev>, HostError> {
        let ns = ctrl.namespace(nsid).ok_or(HostError::NoNamespace(nsid))?;
        if !valid_block_size(ns.block_size) {
            return Err(HostError::Invalid(format!(
                "namespace {nsid} has {}-byte blocks; bdevs have 512 or 4096",
                ns.block_size
            )));
        }
        let oncs = ctrl.info().map_or(0, |i| i.oncs);
        let (info, size_key) = BdevInfo::new_resizable(
            name,
            ns.stable_uuid(),
            ns.block_size,
            ns.num_blocks,
            PRODUCT_NAME,
        );
        Ok(Arc::new_cyclic(|me: &Weak<RemoteBdev>| {
            let me = me.clone();
            let watch = ctrl.shared.watch_namespace(
                nsid,
                Arc::new(move |fresh: &NamespaceInfo| {
                    if let Some(b) = me.upgrade() {
                        b.follow(fresh);
                    }
                }),
            );
            RemoteBdev {
                info,
                size_key,
                ctrl,
                ns,
                oncs,
                watch,
            }
        }))
    }

    /// Takes the namespace's new size.
    fn follow(&self, fresh: &NamespaceInfo) {
        if fresh.block_size == self.ns.block_size
            && let Err(e) = self.info.resize(&self.size_key, fresh.num_blocks)
        {
            tracing::warn!(bdev = %self.info.name, error = %e, "size not followed");
        }
    }

    /// Reads the namespace's size from the target now (Identify Namespace) and takes it;
    /// returns the blocks. A Namespace Attribute Changed event does the same by itself; this
    /// is for a caller that must not wait for it. Blocks; not on the admin reactor.
    ///
    /// # Errors
    /// See [`Controller::refresh_namespace`].
    pub fn refresh_size(&self) -> Result<u64, HostError> {
        self.ctrl.refresh_namespace(self.ns.nsid)?;
        Ok(self.info.num_blocks())
    }

    /// Connects to the target a URI names (see [`NvmfUri`]: `nvmf://HOST:PORT/NQN?
    /// hostnqn=...&nsid=N&name=...`) with the admin queue on `admin`, and makes the bdev.
    /// Blocks the calling thread (not `admin`'s) until the controller is up.
    pub fn connect_uri(admin: &ReactorHandle, uri: &str) -> Result<Arc<RemoteBdev>, HostError> {
        RemoteBdev::connect_parsed(admin, &NvmfUri::parse(uri)?)
    }

    /// [`RemoteBdev::connect_uri`] with a URI already parsed.
    pub fn connect_parsed(
        admin: &ReactorHandle,
        uri: &NvmfUri,
    ) -> Result<Arc<RemoteBdev>, HostError> {
        let name = uri.name().map_or_else(|| uri.default_name(), str::to_owned);
        let ctrl = Controller::connect(admin, uri.connect_options())?;
        RemoteBdev::new(ctrl, uri.nsid(), &name)
    }

    /// The controller.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.ctrl
    }

    /// The namespace.
    pub fn namespace(&self) -> &NamespaceInfo {
        &self.ns
    }
}

impl Bdev for RemoteBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn supports(&self, io_type: IoType) -> bool {
        match io_type {
            IoType::Read | IoType::Write | IoType::Flush => true,
            IoType::WriteZeroes => self.oncs & ONCS_WRITE_ZEROES != 0,
            IoType::Unmap => self.oncs & ONCS_DSM != 0,
        }
    }

    fn supports_flags(&self, io_type: IoType, flags: IoFlags) -> bool {
        // The FUA bit goes out in CDW12 of the Read, Write or Write Zeroes (NVM Command Set
        // 1.0, sections 3.2.4, 3.2.6, 3.2.8); every NVMe controller implements it.
        flags == IoFlags::FUA
            && matches!(io_type, IoType::Read | IoType::Write | IoType::WriteZeroes)
    }

    fn create_channel(
        self: Arc<Self>,
        reactor: &Reactor,
    ) -> Result<Box<dyn BdevChannel>, BdevError> {
        let qp = IoQueuePair::open_on(&self.ctrl.shared, reactor).map_err(|e| match e {
            HostError::Closed => BdevError::Closed,
            HostError::NoQueues(_) | HostError::Invalid(_) => BdevError::Invalid(e.to_string()),
            other => BdevError::Os(std::io::Error::other(other)),
        })?;
        Ok(Box::new(RemoteChannel {
            qp,
            ns: std::cell::RefCell::new(self.ns.clone()),
            bdev: self,
        }))
    }
}

/// A reactor's queue pair to the namespace.
struct RemoteChannel {
    qp: IoQueuePair,
    /// The namespace as the queue pair checks requests against it: its size is taken from
    /// the bdev's at each request (one load; it changes when the namespace is resized).
    ns: std::cell::RefCell<NamespaceInfo>,
    bdev: Arc<RemoteBdev>,
}

impl BdevChannel for RemoteChannel {
    fn submit(&self, io: BdevIo, sink: std::rc::Rc<dyn IoSink>, tag: u64) {
        let mut ns = self.ns.borrow_mut();
        ns.num_blocks = self.bdev.info.num_blocks();
        self.qp.submit(&ns, io, sink, tag);
    }
}
