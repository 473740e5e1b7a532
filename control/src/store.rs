//! The cluster state in etcd: typed reads and writes over the layout of [`crate::keys`].
//!
//! Every call has a deadline ([`Store::op_timeout`]): an etcd that is down makes a read or a
//! write fail after it, it never blocks the caller for good. Values written by something
//! else that do not decode are skipped with a warning when listing (one bad record does not
//! hide the others) and are an error when asked for by name.

use std::collections::HashMap;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::{Liveness, NodeRecord, NodeState, NodeView, Status, validate_name};
use crate::{Error, Result, keys};

/// A handle on etcd; cheap to clone.
#[derive(Clone)]
pub struct Store {
    client: Client,
    op_timeout: Duration,
}

fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T> {
    serde_json::from_slice(value).map_err(|e| Error::BadValue {
        key: String::from_utf8_lossy(key).into_owned(),
        detail: e.to_string(),
    })
}

/// Our own types as the JSON stored in etcd.
#[must_use]
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our own types always serialise.
    serde_json::to_vec(value).unwrap_or_default()
}

impl Store {
    /// Connects to etcd (`http://host:port`, one or more endpoints of one cluster).
    ///
    /// # Errors
    /// If no endpoint answers within `op_timeout`.
    pub async fn connect(endpoints: &[String], op_timeout: Duration) -> Result<Self> {
        let options = ConnectOptions::new()
            .with_connect_timeout(op_timeout)
            .with_keep_alive(Duration::from_secs(2), op_timeout);
        let client = tokio::time::timeout(op_timeout, Client::connect(endpoints, Some(options)))
            .await
            .map_err(|_| etcd_client::Error::InvalidArgs("etcd connect timed out".into()))??;
        Ok(Self { client, op_timeout })
    }

    /// The raw client (for leases and the election).
    #[must_use]
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The deadline of one etcd call.
    #[must_use]
    pub fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// Runs an etcd call with the deadline.
    ///
    /// # Errors
    /// The call's error, or a timeout.
    pub async fn deadline<T>(
        &self,
        fut: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.op_timeout, fut).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(Error::Etcd(etcd_client::Error::InvalidArgs(format!(
                "etcd did not answer within {:?}",
                self.op_timeout
            )))),
        }
    }

    async fn get_prefix(&self, prefix: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut kv = self.client.kv_client();
        let resp = self
            .deadline(kv.get(prefix, Some(GetOptions::new().with_prefix())))
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
            .collect())
    }

    /// Writes (or rewrites) a node's record.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad id or labels; etcd errors.
    pub async fn put_node(&self, record: &NodeRecord) -> Result<()> {
        record.validate()?;
        let mut kv = self.client.kv_client();
        self.deadline(kv.put(keys::node(&record.id), encode(record), None))
            .await?;
        Ok(())
    }

    /// Writes a node's liveness key bound to `lease`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad id; etcd errors (e.g. the lease has expired).
    pub async fn put_alive(&self, id: &str, liveness: &Liveness) -> Result<()> {
        validate_name("node id", id)?;
        let mut kv = self.client.kv_client();
        let opts = PutOptions::new().with_lease(liveness.lease);
        self.deadline(kv.put(keys::alive(id), encode(liveness), Some(opts)))
            .await?;
        Ok(())
    }

    /// Every node with its status.
    ///
    /// # Errors
    /// etcd errors.
    pub async fn list_nodes(&self) -> Result<Vec<NodeView>> {
        let records = self.get_prefix(&keys::nodes()).await?;
        let alive = self.get_prefix(&keys::alive_prefix()).await?;
        let states = self.get_prefix(&keys::node_states()).await?;
        let alive: std::collections::HashSet<Vec<u8>> = alive
            .into_iter()
            .filter_map(|(k, _)| {
                k.strip_prefix(keys::alive_prefix().as_bytes())
                    .map(<[u8]>::to_vec)
            })
            .collect();
        let states: HashMap<Vec<u8>, NodeState> = states
            .into_iter()
            .filter_map(|(k, v)| {
                let id = k.strip_prefix(keys::node_states().as_bytes())?.to_vec();
                decode(&k, &v).ok().map(|s| (id, s))
            })
            .collect();
        let mut out = Vec::new();
        for (k, v) in records {
            let record: NodeRecord = match decode(&k, &v).and_then(|r: NodeRecord| {
                r.validate()?;
                Ok(r)
            }) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a node record that does not decode");
                    continue;
                }
            };
            let id = record.id.as_bytes().to_vec();
            let status = if alive.contains(&id) {
                Status::Online
            } else {
                Status::Offline
            };
            let status_since_ms = states
                .get(&id)
                .filter(|s| s.status == status)
                .map(|s| s.since_ms);
            out.push(NodeView {
                record,
                status,
                status_since_ms,
            });
        }
        out.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        Ok(out)
    }

    /// One node, `None` if it never registered.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad id; etcd errors.
    pub async fn get_node(&self, id: &str) -> Result<Option<NodeView>> {
        validate_name("node id", id)?;
        Ok(self
            .list_nodes()
            .await?
            .into_iter()
            .find(|n| n.record.id == id))
    }

    /// The leader's record of each node's status.
    ///
    /// # Errors
    /// etcd errors.
    pub async fn node_states(&self) -> Result<HashMap<String, NodeState>> {
        let states = self.get_prefix(&keys::node_states()).await?;
        Ok(states
            .into_iter()
            .filter_map(|(k, v)| {
                let id =
                    String::from_utf8(k.strip_prefix(keys::node_states().as_bytes())?.to_vec())
                        .ok()?;
                decode(&k, &v).ok().map(|s| (id, s))
            })
            .collect())
    }

    /// The value at `key` and its modification revision, `None` if absent.
    ///
    /// # Errors
    /// [`Error::BadValue`] if it does not decode; etcd errors.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, i64)>> {
        let mut kv = self.client.kv_client();
        let resp = self.deadline(kv.get(key, None)).await?;
        match resp.kvs().first() {
            Some(kv) => Ok(Some((decode(kv.key(), kv.value())?, kv.mod_revision()))),
            None => Ok(None),
        }
    }

    /// Every value under `prefix` that decodes (the others are skipped with a warning).
    ///
    /// # Errors
    /// etcd errors.
    pub async fn list<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>> {
        Ok(self
            .get_prefix(prefix)
            .await?
            .into_iter()
            .filter_map(|(k, v)| match decode(&k, &v) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a value that does not decode");
                    None
                }
            })
            .collect())
    }

    /// Up to `limit` values under `prefix` whose key comes after `prefix` + `after` (all from
    /// the start when `after` is `None`), in key order, and whether more follow.
    ///
    /// # Errors
    /// etcd errors.
    pub async fn page<T: DeserializeOwned>(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<T>, bool)> {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1; // '/' + 1: the end of the prefix's range
        }
        let start = match after {
            Some(a) => {
                let mut k = format!("{prefix}{a}").into_bytes();
                k.push(0);
                k
            }
            None => prefix.as_bytes().to_vec(),
        };
        let mut kv = self.client.kv_client();
        let opts = GetOptions::new()
            .with_range(end)
            .with_limit(limit.saturating_add(1));
        let resp = self.deadline(kv.get(start, Some(opts))).await?;
        let mut out = Vec::new();
        for kv in resp.kvs() {
            match decode(kv.key(), kv.value()) {
                Ok(t) => out.push(t),
                Err(e) => tracing::warn!(error = %e, "skipping a value that does not decode"),
            }
        }
        let more = i64::try_from(resp.kvs().len()).unwrap_or(i64::MAX) > limit;
        out.truncate(usize::try_from(limit).unwrap_or(0));
        Ok((out, more))
    }

    /// A transaction fenced on `leader_key` (and on `compares`): `puts` written and `deletes`
    /// removed together, or nothing. [`Error::NotLeader`] when this instance no longer leads;
    /// [`Error::FailedPrecondition`] when another compare failed (a concurrent change).
    ///
    /// # Errors
    /// As above; etcd errors.
    pub async fn fenced_txn(
        &self,
        leader_key: &[u8],
        compares: Vec<Compare>,
        puts: Vec<(String, Vec<u8>)>,
        deletes: Vec<String>,
    ) -> Result<()> {
        let mut all = vec![Compare::version(leader_key.to_vec(), CompareOp::Greater, 0)];
        all.extend(compares);
        let mut ops: Vec<TxnOp> = puts
            .into_iter()
            .map(|(k, v)| TxnOp::put(k, v, None))
            .collect();
        ops.extend(deletes.into_iter().map(|k| TxnOp::delete(k, None)));
        let txn = Txn::new().when(all).and_then(ops);
        let mut kv = self.client.kv_client();
        let resp = self.deadline(kv.txn(txn)).await?;
        if resp.succeeded() {
            return Ok(());
        }
        // Which compare failed: the fence or another one.
        let resp = self.deadline(kv.get(leader_key.to_vec(), None)).await?;
        if resp.kvs().is_empty() {
            Err(Error::NotLeader)
        } else {
            Err(Error::FailedPrecondition(
                "a concurrent change; retry".into(),
            ))
        }
    }

    /// Writes `value` at `key` only while `leader_key` (this instance's election key) exists:
    /// a deposed leader's write fails with [`Error::NotLeader`] instead of racing the new one.
    ///
    /// # Errors
    /// [`Error::NotLeader`]; etcd errors.
    pub async fn fenced_put<T: Serialize>(
        &self,
        leader_key: &[u8],
        key: &str,
        value: &T,
    ) -> Result<()> {
        let txn = Txn::new()
            .when([Compare::version(leader_key.to_vec(), CompareOp::Greater, 0)])
            .and_then([TxnOp::put(key, encode(value), None)]);
        let mut kv = self.client.kv_client();
        let resp = self.deadline(kv.txn(txn)).await?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }
}
