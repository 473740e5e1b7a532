//! Leader election: one `shoal-control` acts, the others wait.
//!
//! Each instance takes an etcd lease of `ttl` seconds, keeps it alive every `ttl / 3` and
//! campaigns in the etcd election [`keys::election`] with its [`InstanceInfo`]. etcd makes
//! the candidate with the oldest key the leader; the others' campaigns block. When the
//! leader dies its lease expires after at most `ttl` and the next candidate's campaign
//! returns: that is the failover time (a leader that stops cleanly resigns and revokes its
//! lease, so the next one takes over at once).
//!
//! A leader that cannot renew its lease for `ttl` (etcd unreachable, its process stalled)
//! cannot know whether it still leads, so it steps down at once and campaigns again with a
//! new lease; every write it makes is fenced on its election key as well
//! ([`crate::store::Store::fenced_put`]), so the window where two instances think they lead
//! never lets both write.
//!
//! While it leads, an instance runs [`lead`]: it records each node's online/offline
//! transitions with the time they were seen (the clock healing starts from) and logs them as
//! events, brings pools online ([`crate::pool::reconcile`]), finishes interrupted volume
//! operations ([`crate::volume_ops::reconcile`]) and heals volumes ([`crate::heal`]); the
//! API's changes run on the leader too.
//!
//! It sits above the operations its loop runs, which never use it: the leadership they check
//! is the [`crate::ctx::LeaderState`] in their context, which [`run`] publishes. Only the API
//! uses this module, for [`current`] (whom to forward a change to).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::LeaderKey;
use tokio::sync::watch;

use crate::ctx::Ctx;
use crate::events::{Event, EventKind};
use crate::model::{InstanceInfo, NodeState, Status};
use crate::store::{Store, encode};
use crate::{Error, Result, keys, now_ms};

/// Runs the election until `shutdown` turns true; publishes the leadership on `state`.
pub async fn run(
    ctx: Arc<Ctx>,
    info: InstanceInfo,
    ttl_secs: i64,
    state: watch::Sender<Option<Vec<u8>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let value = serde_json::to_vec(&info).unwrap_or_default();
    while !*shutdown.borrow() {
        match term(&ctx, &value, ttl_secs, &state, &mut shutdown).await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(error = %e, "election: retrying");
                state.send_replace(None);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}

/// One lease: campaign, lead until the lease is lost or shutdown, then give it up.
async fn term(
    ctx: &Ctx,
    value: &[u8],
    ttl_secs: i64,
    state: &watch::Sender<Option<Vec<u8>>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    let store = &ctx.store;
    let mut lease_client = store.client().lease_client();
    let lease = store
        .deadline(lease_client.grant(ttl_secs, None))
        .await?
        .id();
    let (lost_tx, mut lost_rx) = watch::channel(false);
    let keeper = tokio::spawn(keep_alive(store.clone(), lease, ttl_secs, lost_tx));
    let result = async {
        let mut election = store.client().election_client();
        let campaign = election.campaign(keys::election(), value.to_vec(), lease);
        let leader_key: LeaderKey = tokio::select! {
            r = campaign => r?.take_leader().ok_or_else(|| Error::BadValue {
                key: keys::election(),
                detail: "campaign answered without a leader key".into(),
            })?,
            _ = lost_rx.wait_for(|lost| *lost) => return Err(lease_lost()),
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        };
        let key = leader_key.key().to_vec();
        tracing::info!(key = %String::from_utf8_lossy(&key), "event: leader elected (this instance)");
        state.send_replace(Some(key.clone()));
        let outcome = tokio::select! {
            r = lead(ctx, &key) => r,
            _ = lost_rx.wait_for(|lost| *lost) => Err(lease_lost()),
            _ = shutdown.wait_for(|s| *s) => Ok(()),
        };
        state.send_replace(None);
        tracing::info!("event: leadership ended (this instance)");
        if outcome.is_ok() {
            let _ = store.deadline(election.resign(Some(etcd_client::ResignOptions::new().with_leader(leader_key)))).await;
        }
        outcome
    }
    .await;
    keeper.abort();
    let _ = store.deadline(lease_client.revoke(lease)).await;
    result
}

fn lease_lost() -> Error {
    Error::Etcd(etcd_client::Error::LeaseKeepAliveError(
        "lease not renewed within its TTL; stepping down".into(),
    ))
}

/// Renews `lease` every ttl/3; signals `lost` when it expired or could not be renewed for a
/// whole TTL.
async fn keep_alive(store: Store, lease: i64, ttl_secs: i64, lost: watch::Sender<bool>) {
    let ttl = Duration::from_secs(u64::try_from(ttl_secs).unwrap_or(1));
    let period = ttl / 3;
    let mut last_ok = Instant::now();
    let mut stream = None;
    loop {
        if last_ok.elapsed() >= ttl {
            lost.send_replace(true);
            return;
        }
        if stream.is_none() {
            let mut lc = store.client().lease_client();
            stream = store.deadline(lc.keep_alive(lease)).await.ok();
        }
        if let Some((keeper, responses)) = stream.as_mut() {
            let renewed = async {
                keeper.keep_alive().await?;
                responses.message().await
            };
            match tokio::time::timeout(period.max(Duration::from_millis(200)), renewed).await {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => last_ok = Instant::now(),
                Ok(Ok(Some(_))) => {
                    // TTL 0: the lease is gone (expired while we could not reach etcd).
                    lost.send_replace(true);
                    return;
                }
                _ => stream = None,
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// The leader's work, every half second: records nodes going offline and online with their
/// events (fenced on `leader_key`), brings declared pools online and refreshes their free
/// space (every other pass), finishes the volume operations a crash interrupted, heals the
/// published volumes ([`crate::heal`]) and keeps the last [`crate::events::MAX_EVENTS`]
/// events (every tenth pass).
///
/// # Errors
/// [`Error::NotLeader`] once the fence fails; etcd errors end the term too.
pub async fn lead(ctx: &Ctx, leader_key: &[u8]) -> Result<()> {
    let store = &ctx.store;
    let mut pass = 0u64;
    let mut healer = crate::heal::Healer::new();
    let mut known: HashMap<String, Status> = store
        .node_states()
        .await?
        .into_iter()
        .map(|(id, s)| (id, s.status))
        .collect();
    loop {
        for node in store.list_nodes().await? {
            let id = &node.record.id;
            if known.get(id) == Some(&node.status) {
                continue;
            }
            let state = NodeState {
                status: node.status,
                since_ms: now_ms(),
            };
            let (kind, what) = match node.status {
                Status::Offline => (EventKind::NodeOffline, "offline"),
                Status::Online => (EventKind::NodeOnline, "online"),
            };
            let event = Event::new(kind, None, Some(id), format!("node {id} is {what}"));
            store
                .fenced_txn(
                    leader_key,
                    vec![],
                    vec![(keys::node_state(id), encode(&state)), event.put()],
                    vec![],
                )
                .await?;
            event.log();
            known.insert(id.clone(), node.status);
        }
        let nodes = store.list_nodes().await?;
        if pass.is_multiple_of(2) {
            crate::pool::reconcile(ctx, &nodes).await?;
        }
        crate::volume_ops::reconcile(ctx, &nodes).await?;
        crate::snapshot::reconcile(ctx, &nodes).await?;
        crate::heal::pass(ctx, &mut healer, &nodes).await?;
        if pass.is_multiple_of(10) {
            crate::events::trim(store, leader_key, crate::events::MAX_EVENTS).await?;
        }
        pass += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The current leader, as etcd's election says (`None` when nobody leads).
///
/// # Errors
/// etcd errors other than "no leader".
pub async fn current(store: &Store) -> Result<Option<InstanceInfo>> {
    let mut election = store.client().election_client();
    match store.deadline(election.leader(keys::election())).await {
        Ok(resp) => match resp.kv() {
            Some(kv) => Ok(serde_json::from_slice(kv.value()).ok()),
            None => Ok(None),
        },
        Err(Error::Etcd(etcd_client::Error::GRpcStatus(s)))
            if s.message().contains("no leader") =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
