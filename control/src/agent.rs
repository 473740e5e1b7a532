//! `shoal-agent`: registers a node and keeps it online while its `shoald` answers.
//!
//! Why an agent next to `shoald` rather than an etcd client inside it: `shoald` is a
//! polled-mode data-path daemon without an async runtime, and an etcd client brings tokio,
//! tonic and a gRPC stack into it; a bug or a stall there would share a process with the I/O
//! path, and every `shoald` upgrade would carry the control plane's dependencies. The agent
//! judges the node the way the control plane will use it: it probes `shoald`'s JSON-RPC over
//! TCP (the same endpoint and token as the control plane), so a node is online only while it
//! answers there, not merely while a process exists.
//!
//! The cycle: wait until `shoald` answers `spdk_get_version`; write the node's record; grant
//! a lease of `ttl` seconds and bind the liveness key to it; then every `ttl / 3` probe
//! `shoald` and renew the lease. Two failed probes in a row revoke the lease (the node is
//! offline at once); `kill -9` of the agent lets the lease expire after `ttl`; a lease lost
//! while etcd was unreachable is replaced by a new registration. A stopped agent revokes its
//! lease. None of this touches `shoald`'s I/O: with etcd or the agent down, volumes go on.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use crate::model::{Liveness, NodeRecord, validate_name};
use crate::node_rpc::call_once;
use crate::store::Store;
use crate::{Error, Result, now_ms};

/// What the agent registers and how.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The node's id.
    pub node_id: String,
    /// Its NVMe/TCP address for hosts and other nodes.
    pub nvmf_addr: SocketAddr,
    /// Its `shoald --rpc-listen` address.
    pub rpc_endpoint: SocketAddr,
    /// The RPC token, if `shoald` has one.
    pub token: Option<String>,
    /// Topology labels.
    pub labels: BTreeMap<String, String>,
    /// Lease TTL in seconds.
    pub ttl_secs: i64,
}

impl AgentConfig {
    /// Checks the id and labels before anything is written.
    ///
    /// # Errors
    /// [`Error::Invalid`].
    pub fn validate(&self) -> Result<()> {
        validate_name("node id", &self.node_id)?;
        self.record(String::new()).validate()?;
        if !(1..=3600).contains(&self.ttl_secs) {
            return Err(Error::Invalid {
                what: "lease TTL",
                detail: format!("{} s; 1 to 3600", self.ttl_secs),
            });
        }
        Ok(())
    }

    fn record(&self, shoald_version: String) -> NodeRecord {
        NodeRecord {
            id: self.node_id.clone(),
            nvmf_addr: self.nvmf_addr,
            rpc_endpoint: self.rpc_endpoint,
            labels: self.labels.clone(),
            registered_at_ms: now_ms(),
            shoald_version,
        }
    }

    fn period(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.ttl_secs).unwrap_or(1) * 1000 / 3)
    }
}

/// Asks `shoald` for its version: the liveness probe.
async fn probe(cfg: &AgentConfig) -> Result<String> {
    let timeout = cfg.period().max(Duration::from_millis(300));
    let v = call_once(
        cfg.rpc_endpoint,
        cfg.token.as_deref(),
        timeout,
        "spdk_get_version",
        Value::Null,
    )
    .await?;
    Ok(v.get("version")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned())
}

/// Runs until `shutdown` turns true.
pub async fn run(store: Store, cfg: AgentConfig, mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        let outcome = tokio::select! {
            r = one_life(&store, &cfg) => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        if let Err(e) = outcome {
            tracing::warn!(node = %cfg.node_id, error = %e, "registration interrupted; retrying");
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(300)) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Registers, then renews until `shoald` stops answering or the lease is lost.
async fn one_life(store: &Store, cfg: &AgentConfig) -> Result<()> {
    let version = loop {
        match probe(cfg).await {
            Ok(v) => break v,
            Err(e) => tracing::debug!(error = %e, "shoald not answering yet"),
        }
        tokio::time::sleep(cfg.period()).await;
    };
    store.put_node(&cfg.record(version)).await?;
    let mut lc = store.client().lease_client();
    let lease = store.deadline(lc.grant(cfg.ttl_secs, None)).await?.id();
    let guard = LeaseGuard {
        store: store.clone(),
        lease,
    };
    store
        .put_alive(
            &cfg.node_id,
            &Liveness {
                lease,
                since_ms: now_ms(),
            },
        )
        .await?;
    tracing::info!(node = %cfg.node_id, lease, "node registered; online");
    let (mut keeper, mut responses) = store.deadline(lc.keep_alive(lease)).await?;
    let mut failed_probes = 0u32;
    let mut last_renewed = std::time::Instant::now();
    let ttl = Duration::from_secs(u64::try_from(cfg.ttl_secs).unwrap_or(1));
    loop {
        tokio::time::sleep(cfg.period()).await;
        match probe(cfg).await {
            Ok(_) => failed_probes = 0,
            Err(e) => {
                failed_probes += 1;
                tracing::warn!(node = %cfg.node_id, error = %e, failed_probes, "shoald probe failed");
                if failed_probes >= 2 {
                    guard.revoke().await;
                    tracing::warn!(node = %cfg.node_id, "shoald not answering: node offline");
                    return Ok(());
                }
                continue;
            }
        }
        let renewed = async {
            keeper.keep_alive().await?;
            responses.message().await
        };
        match tokio::time::timeout(cfg.period(), renewed).await {
            Ok(Ok(Some(r))) if r.ttl() > 0 => last_renewed = std::time::Instant::now(),
            Ok(Ok(Some(_))) => {
                return Err(Error::Etcd(etcd_client::Error::LeaseKeepAliveError(
                    "lease expired; registering again".into(),
                )));
            }
            _ if last_renewed.elapsed() >= ttl => {
                return Err(Error::Etcd(etcd_client::Error::LeaseKeepAliveError(
                    "lease not renewed within its TTL; registering again".into(),
                )));
            }
            _ => {}
        }
    }
}

/// Revokes the lease when a life ends (the node goes offline at once, not after the TTL).
struct LeaseGuard {
    store: Store,
    lease: i64,
}

impl LeaseGuard {
    async fn revoke(&self) {
        let mut lc = self.store.client().lease_client();
        let _ = self.store.deadline(lc.revoke(self.lease)).await;
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let store = self.store.clone();
        let lease = self.lease;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let mut lc = store.client().lease_client();
                let _ = store.deadline(lc.revoke(lease)).await;
            });
        }
    }
}
