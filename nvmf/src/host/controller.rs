//! The user's handle to a remote controller: [`Controller`]'s methods (connect, state,
//! namespaces, refresh, disconnect) and its drop (shutdown). The struct itself is in
//! [`super::shared`]; its calls go to the admin queue on its reactor ([`super::admin`]).

use std::sync::Arc;

use shoal_reactor::ReactorHandle;

use super::admin;
use super::error::HostError;
use super::info::{ControllerInfo, NamespaceInfo};
use super::options::{ConnectOptions, ControllerState};
use super::shared::{Controller, on_reactor};

impl Controller {
    /// Connects to the controller of `opts.subnqn` with its admin queue on the reactor `admin`,
    /// and waits until it is enabled, identified and its namespaces are known. Blocks the
    /// calling thread (control path); call it from any thread but that reactor's own.
    pub fn connect(
        admin: &ReactorHandle,
        opts: ConnectOptions,
    ) -> Result<Arc<Controller>, HostError> {
        if on_reactor(admin) {
            return Err(HostError::Reactor(
                "Controller::connect blocks: call connect_async on the admin reactor",
            ));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let sent = admin.send(move || {
            Controller::connect_async(opts, move |r| {
                let _ = tx.send(r);
            });
        });
        if !sent {
            return Err(HostError::Reactor("the admin reactor has stopped"));
        }
        rx.recv()
            .unwrap_or(Err(HostError::Reactor("the admin reactor has stopped")))
    }

    /// Connects with the admin queue on the current reactor; `done` runs on it once the
    /// controller is ready or the connect failed (no retries: the controller-loss timeout
    /// applies to connections lost later).
    pub fn connect_async(
        opts: ConnectOptions,
        done: impl FnOnce(Result<Arc<Controller>, HostError>) + 'static,
    ) {
        admin::start(opts, false, Box::new(done));
    }

    /// The state.
    pub fn state(&self) -> ControllerState {
        self.shared.lock().state
    }

    /// Why the controller last left the connected state.
    pub fn last_error(&self) -> Option<HostError> {
        self.shared.lock().last_error.clone()
    }

    /// Identify Controller data of the current association.
    pub fn info(&self) -> Option<ControllerInfo> {
        self.shared.lock().info.clone()
    }

    /// The controller ID of the current association.
    pub fn cntlid(&self) -> u16 {
        self.shared.lock().cntlid
    }

    /// The usable active namespaces.
    pub fn namespaces(&self) -> Vec<NamespaceInfo> {
        self.shared.lock().namespaces.clone()
    }

    /// Namespace `nsid`, if active and usable.
    pub fn namespace(&self, nsid: u32) -> Option<NamespaceInfo> {
        self.shared
            .lock()
            .namespaces
            .iter()
            .find(|n| n.nsid == nsid)
            .cloned()
    }

    /// Reads Identify Namespace of `nsid` again and records it (telling its watchers, e.g. a
    /// [`RemoteBdev`](super::RemoteBdev), if its size changed); what a Namespace Attribute
    /// Changed notice does by itself, for a caller that cannot wait for the notice. Blocks;
    /// call it from any thread but the admin reactor's.
    ///
    /// # Errors
    /// `Reconnecting` while the association is down; `Closed`; `NoNamespace` for a namespace
    /// not active (any more); the command's status or transport error.
    pub fn refresh_namespace(&self, nsid: u32) -> Result<NamespaceInfo, HostError> {
        if on_reactor(&self.shared.admin) {
            return Err(HostError::Reactor(
                "Controller::refresh_namespace blocks on the admin reactor",
            ));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let id = self.shared.id;
        let sent = self.shared.admin.send(move || {
            let mut tx = Some(tx);
            admin::with_admin(id, |a| {
                let Some(tx) = tx.take() else { return };
                let shared = a.shared.clone();
                a.refresh_namespaces(
                    vec![nsid],
                    Box::new(move |r| {
                        let r = r.and_then(|fresh| {
                            shared.update_namespaces(&fresh);
                            fresh.into_iter().next().ok_or(HostError::NoNamespace(nsid))
                        });
                        let _ = tx.send(r);
                    }),
                );
            });
            if let Some(tx) = tx {
                let _ = tx.send(Err(HostError::Closed));
            }
        });
        if !sent {
            return Err(HostError::Closed);
        }
        rx.recv().unwrap_or(Err(HostError::Closed))
    }

    /// The options it was connected with.
    pub fn options(&self) -> &ConnectOptions {
        &self.shared.opts
    }

    /// Shuts the controller down (CC.SHN normal, wait for CSTS.SHST complete) and closes
    /// every queue; I/O still outstanding fails with `Closed`. Blocks until done; call it
    /// from any thread but the admin reactor's (there, drop the handle instead).
    pub fn disconnect(&self) -> Result<(), HostError> {
        if on_reactor(&self.shared.admin) {
            return Err(HostError::Reactor(
                "Controller::disconnect blocks on the admin reactor",
            ));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let id = self.shared.id;
        let sent = self.shared.admin.send(move || {
            let mut tx = Some(tx);
            admin::with_admin(id, |a| {
                let tx = tx.take();
                a.shutdown(Box::new(move |r| {
                    if let Some(tx) = tx {
                        let _ = tx.send(r);
                    }
                }));
            });
            if let Some(tx) = tx {
                let _ = tx.send(Ok(()));
            }
        });
        if !sent {
            return Ok(());
        }
        rx.recv().unwrap_or(Ok(()))
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let id = self.shared.id;
        self.shared
            .admin
            .send(move || admin::with_admin(id, |a| a.shutdown(Box::new(|_| {}))));
    }
}
