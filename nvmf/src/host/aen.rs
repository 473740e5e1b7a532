//! Asynchronous events from the remote controller, and namespace sizes that follow them.
//!
//! Once an association is up, the host enables namespace attribute notices (Set Features
//! Asynchronous Event Configuration, bit 8: NVMe Base 2.0 section 5.27.1.7) and keeps one
//! Asynchronous Event Request outstanding (section 5.2; it has no completion deadline, so the
//! command timeout does not apply to it). A Namespace Attribute Changed notice (event type
//! 010b, information 00h, log page 04h: Figure 150) is answered by reading the Changed
//! Namespace List (section 5.16.1.5; reading it with RAE cleared unmasks the notice), then
//! Identify Namespace (CNS 00h) of each namespace it lists, or of every known one when the
//! list overflowed (first entry FFFFFFFFh), and then a new request. A namespace whose size
//! changed is recorded and its watchers told ([`CtrlShared::update_namespaces`]): a
//! [`RemoteBdev`](super::RemoteBdev) resizes itself.
//!
//! [`AdminCtx::refresh_namespaces`] does the same Identify on request (the nexus asks before it
//! grows, so as not to depend on when the notice arrives). A request that fails (the
//! association ended) is not reissued: the next association arms its own.

use std::rc::Rc;

use shoal_bdev::SgList;

use super::admin::{AdminCtx, first_page};
use super::cmd::{self, Dir};
use super::conn::QueueState;
use super::error::HostError;
use super::info::NamespaceInfo;
use super::queue::sg_zeroed;
use crate::wire::spec::features::FeatureId;
use crate::wire::spec::identify::{Cns, IDENTIFY_DATA_SIZE, IdentifyNamespace};
use crate::wire::spec::log::LogPageId;

/// Asynchronous Event Configuration bit 8: Namespace Attribute Notices (Figure 324).
const AEC_NS_ATTR_NOTICES: u32 = 1 << 8;
/// Asynchronous event type 010b: notice (Figure 147).
const EVENT_NOTICE: u32 = 2;
/// Notice information 00h: namespace attribute changed (Figure 150).
const NOTICE_NS_ATTR_CHANGED: u32 = 0;
/// The Changed Namespace List holds at most 1024 NSIDs (section 5.16.1.5).
const CHANGED_LIST_BYTES: u32 = 4096;
/// First entry of an overflowed Changed Namespace List.
const LIST_OVERFLOW: u32 = 0xFFFF_FFFF;

/// Done with the fresh data of the namespaces asked for (inactive ones left out).
pub(crate) type Refreshed = Box<dyn FnOnce(Result<Vec<NamespaceInfo>, HostError>)>;

impl AdminCtx {
    /// Whether association `assoc` is still the live one.
    fn live(&self, assoc: u64) -> bool {
        !self.closing.get()
            && self.shared.lock().assoc == assoc
            && self.conn.state() == QueueState::Connected
    }

    /// Enables namespace attribute notices and posts the first Asynchronous Event Request of
    /// association `assoc`.
    pub(crate) fn arm_events(&self, assoc: u64) {
        let Some(me) = self.rc() else { return };
        let weak = Rc::downgrade(&me);
        self.conn.raw(
            cmd::set_features(FeatureId::ASYNC_EVENT_CONFIG, AEC_NS_ATTR_NOTICES),
            Dir::None,
            SgList::new(),
            move |r| {
                let Some(a) = weak.upgrade() else { return };
                match r {
                    Ok(c) if c.cqe.status().is_success() => {
                        a.request_event(assoc);
                        a.catch_up(assoc);
                    }
                    Ok(c) => {
                        tracing::info!(subnqn = %a.shared.opts.subnqn, status = ?c.cqe.status(),
                        "namespace attribute notices refused: sizes follow explicit refreshes only")
                    }
                    Err(_) => {}
                }
            },
        );
    }

    /// Re-reads every known namespace once notices are on: a size that changed between the
    /// association's first Identify and the Set Features raised no notice (notices were off).
    fn catch_up(&self, assoc: u64) {
        if !self.live(assoc) {
            return;
        }
        let Some(me) = self.rc() else { return };
        let weak = Rc::downgrade(&me);
        let known: Vec<u32> = self
            .shared
            .lock()
            .namespaces
            .iter()
            .map(|n| n.nsid)
            .collect();
        self.refresh_namespaces(
            known,
            Box::new(move |r| {
                let Some(a) = weak.upgrade() else { return };
                match r {
                    Ok(fresh) => a.shared.update_namespaces(&fresh),
                    Err(e) => tracing::debug!(subnqn = %a.shared.opts.subnqn, error = %e,
                        "namespaces not re-read after enabling notices"),
                }
            }),
        );
    }

    fn request_event(&self, assoc: u64) {
        if !self.live(assoc) {
            return;
        }
        let Some(me) = self.rc() else { return };
        let weak = Rc::downgrade(&me);
        self.conn.raw(
            cmd::async_event_request(),
            Dir::None,
            SgList::new(),
            move |r| {
                let Some(a) = weak.upgrade() else { return };
                // An error: the association ended (the next one arms its own request).
                let Ok(c) = r else { return };
                if !c.cqe.status().is_success() {
                    // E.g. Asynchronous Event Request Limit Exceeded: stop asking.
                    tracing::info!(subnqn = %a.shared.opts.subnqn, status = ?c.cqe.status(),
                        "asynchronous event request refused");
                    return;
                }
                // Completion dword 0 (Figure 146): type in bits 2:0, information in 15:8,
                // the log page to read in 23:16.
                let dw0 = c.cqe.dw0.get();
                let (ty, info, lid) = (dw0 & 7, (dw0 >> 8) & 0xFF, (dw0 >> 16) & 0xFF);
                if ty == EVENT_NOTICE
                    && info == NOTICE_NS_ATTR_CHANGED
                    && lid == u32::from(LogPageId::CHANGED_NAMESPACE_LIST.0)
                {
                    a.read_changed_list(assoc);
                } else {
                    // Not acted on; that event type stays masked (its log page unread).
                    tracing::debug!(subnqn = %a.shared.opts.subnqn, ty, info, lid, "asynchronous event ignored");
                    a.request_event(assoc);
                }
            },
        );
    }

    fn read_changed_list(&self, assoc: u64) {
        let Some(me) = self.rc() else { return };
        let weak = Rc::downgrade(&me);
        // NSID FFFFFFFFh: the log is controller-wide. RAE (CDW10 bit 15) is 0, so reading it
        // clears the event.
        self.conn.raw(
            cmd::get_log_page(
                LogPageId::CHANGED_NAMESPACE_LIST,
                0xFFFF_FFFF,
                0,
                CHANGED_LIST_BYTES,
            ),
            Dir::ToHost,
            sg_zeroed(CHANGED_LIST_BYTES as usize),
            move |r| {
                let Some(a) = weak.upgrade() else { return };
                let nsids = match r {
                    Ok(c) if c.cqe.status().is_success() => {
                        let mut page = [0u8; CHANGED_LIST_BYTES as usize];
                        shoal_bdev::buf::sg_copy_out(&c.data, 0, &mut page);
                        changed_nsids(&page)
                    }
                    // A list that cannot be read: every namespace may have changed.
                    Ok(_) => None,
                    Err(_) => return,
                };
                let known: Vec<u32> = a.shared.lock().namespaces.iter().map(|n| n.nsid).collect();
                let nsids = match nsids {
                    Some(l) => l.into_iter().filter(|n| known.contains(n)).collect(),
                    None => known,
                };
                let weak = Rc::downgrade(&a);
                a.refresh_namespaces(
                    nsids,
                    Box::new(move |r| {
                        let Some(a) = weak.upgrade() else { return };
                        match r {
                            Ok(fresh) => a.shared.update_namespaces(&fresh),
                            Err(e) => tracing::warn!(subnqn = %a.shared.opts.subnqn, error = %e,
                                "namespaces not re-read after a change notice"),
                        }
                        a.request_event(assoc);
                    }),
                );
            },
        );
    }

    /// Identify Namespace of each of `nsids` (known namespaces; a UUID from the earlier
    /// descriptors is kept), in order; `done` gets those still active and usable. The caller
    /// records them ([`CtrlShared::update_namespaces`]).
    pub(crate) fn refresh_namespaces(&self, nsids: Vec<u32>, done: Refreshed) {
        self.refresh_next(nsids, 0, Vec::new(), done);
    }

    fn refresh_next(
        &self,
        nsids: Vec<u32>,
        i: usize,
        mut got: Vec<NamespaceInfo>,
        done: Refreshed,
    ) {
        let Some(&nsid) = nsids.get(i) else {
            return done(Ok(got));
        };
        if self.conn.state() != QueueState::Connected {
            return done(Err(HostError::Reconnecting));
        }
        let Some(me) = self.rc() else {
            return done(Err(HostError::Closed));
        };
        let weak = Rc::downgrade(&me);
        self.conn.raw(
            cmd::identify(Cns::NAMESPACE, nsid),
            Dir::ToHost,
            sg_zeroed(IDENTIFY_DATA_SIZE),
            move |r| {
                let Some(a) = weak.upgrade() else {
                    return done(Err(HostError::Closed));
                };
                let c = match r {
                    Ok(c) if c.cqe.status().is_success() => c,
                    Ok(c) => {
                        return done(Err(HostError::Status {
                            status: c.cqe.status(),
                        }));
                    }
                    Err(e) => return done(Err(e)),
                };
                let id: IdentifyNamespace =
                    zerocopy::FromBytes::read_from_bytes(&first_page(&c)[..])
                        .unwrap_or_else(|_| IdentifyNamespace::zeroed());
                match NamespaceInfo::parse(nsid, &id) {
                    Some(mut ns) => {
                        ns.uuid = a
                            .shared
                            .lock()
                            .namespaces
                            .iter()
                            .find(|n| n.nsid == nsid)
                            .and_then(|n| n.uuid);
                        got.push(ns);
                    }
                    None => tracing::warn!(subnqn = %a.shared.opts.subnqn, nsid,
                        "namespace now inactive or unusable; its size is left as it was"),
                }
                a.refresh_next(nsids, i + 1, got, done);
            },
        );
    }
}

/// The NSIDs of a Changed Namespace List page: `None` when it overflowed (section 5.16.1.5:
/// "If more than 1,024 namespaces have changed ... the first entry is FFFFFFFFh").
fn changed_nsids(page: &[u8]) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for chunk in page.chunks_exact(4) {
        let nsid = <[u8; 4]>::try_from(chunk).map_or(0, u32::from_le_bytes);
        if nsid == LIST_OVERFLOW && out.is_empty() {
            return None;
        }
        if nsid == 0 {
            break;
        }
        out.push(nsid);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_list() {
        let mut page = [0u8; 4096];
        page[..4].copy_from_slice(&3u32.to_le_bytes());
        page[4..8].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(changed_nsids(&page), Some(vec![3, 7]));
        page[..4].copy_from_slice(&LIST_OVERFLOW.to_le_bytes());
        assert_eq!(changed_nsids(&page), None);
        assert_eq!(changed_nsids(&[0u8; 4096]), Some(vec![]));
    }
}
