//! The client of `shoal-control`'s volume API: HTTP/JSON under `/v1`, the contract that
//! `control/openapi.json` documents (volumes, publish/unpublish, resize, snapshots, capacity).
//!
//! Every error the API can answer arrives as [`ControlError::Api`] with its HTTP status and
//! its machine-readable code; [`crate::status`] maps those to the CSI spec's gRPC codes. The
//! identifiers put into URL paths are checked to be UUIDs first ([`parse_id`]), so a CO's
//! volume or snapshot id can never reach another resource of the API.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a call to `shoal-control` failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The API answered an error: HTTP status, code (e.g. `already_exists`), message.
    #[error("shoal-control: {status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The contract's code (`invalid_argument`, `not_found`, ...), or empty when the body
        /// had none.
        code: String,
        /// What is wrong, as the API said it.
        message: String,
    },
    /// No answer: connection refused, timeout, reset.
    #[error("shoal-control unreachable: {0}")]
    Transport(String),
    /// An answer that is not what the contract says (bad JSON, missing field).
    #[error("shoal-control answered something unexpected: {0}")]
    Decode(String),
}

impl ControlError {
    /// Whether this is the API's 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ControlError::Api { status: 404, .. })
    }
}

/// Placement constraints of a volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Zones the replicas must be in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
    /// Nodes the replicas must be on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
}

/// What a new volume is made from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// A snapshot's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// Another volume's id (a clone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_id: Option<String>,
}

/// Where a published volume is served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The node whose `shoald` serves the volume's nexus.
    pub node: String,
    /// The volume's subsystem NQN.
    pub nqn: String,
    /// NVMe/TCP address.
    pub traddr: String,
    /// NVMe/TCP port.
    pub trsvcid: String,
}

/// One replica of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// Its node.
    pub node: String,
    /// Its pool.
    pub pool: String,
    /// Its logical volume.
    pub lvol_uuid: String,
    /// Its state.
    pub state: String,
}

/// A volume as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// UUID.
    pub id: String,
    /// The name it was created with (the CO's idempotency key).
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Replica count.
    pub replicas: u32,
    /// Thin provisioned.
    pub thin: bool,
    /// Placement constraints.
    #[serde(default)]
    pub topology: Option<Topology>,
    /// What it was made from.
    #[serde(default)]
    pub source: Option<Source>,
    /// `creating`, `online`, `degraded`, `faulted` or `deleting`.
    pub state: String,
    /// Its replicas.
    #[serde(default)]
    pub replica_list: Vec<Replica>,
    /// Where it is published, if it is.
    #[serde(default)]
    pub target: Option<Target>,
}

/// The body of `POST /v1/volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateVolume {
    /// The CO's name for it.
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Replica count.
    pub replicas: u32,
    /// Thin provisioned.
    pub thin: bool,
    /// Placement constraints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology: Option<Topology>,
    /// Content source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// A snapshot as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// UUID.
    pub id: String,
    /// The CO's name for it.
    pub name: String,
    /// The volume it was taken of.
    pub volume_id: String,
    /// Size of that volume when it was taken.
    pub size_bytes: u64,
    /// When, in seconds since the epoch.
    pub created_unix: u64,
    /// Whether it can be used as a source.
    pub ready: bool,
}

#[derive(Deserialize)]
struct VolumePage {
    volumes: Vec<Volume>,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct SnapshotPage {
    snapshots: Vec<Snapshot>,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct Capacity {
    available_bytes: u64,
}

/// Checks that an id from a CO is a UUID (the only ids the API hands out), and returns it in
/// canonical form for use in a URL path.
pub fn parse_id(id: &str) -> Option<String> {
    uuid::Uuid::parse_str(id)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// A client of one `shoal-control` endpoint (a Service in front of every instance: any of
/// them answers, the leader acts).
#[derive(Clone)]
pub struct ControlClient {
    base: String,
    http: reqwest::Client,
}

impl ControlClient {
    /// A client of the API at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, timeout: Duration) -> Result<Self, ControlError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| ControlError::Transport(e.to_string()))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request; returns the status and body of a 2xx answer, the API's error otherwise.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), ControlError> {
        let resp = req
            .send()
            .await
            .map_err(|e| ControlError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| ControlError::Transport(e.to_string()))?;
        if (200..300).contains(&status) {
            Ok((status, body.to_vec()))
        } else {
            Err(api_error(status, &body))
        }
    }

    async fn json<T: for<'de> Deserialize<'de>>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ControlError> {
        let (_, body) = self.send(req).await?;
        serde_json::from_slice(&body).map_err(|e| ControlError::Decode(e.to_string()))
    }

    /// `POST /v1/volumes`: creates the volume, or returns the one of that name with the same
    /// parameters.
    pub async fn create_volume(&self, v: &CreateVolume) -> Result<Volume, ControlError> {
        self.json(self.http.post(self.url("/v1/volumes")).json(v))
            .await
    }

    /// `GET /v1/volumes/{id}`.
    pub async fn get_volume(&self, id: &str) -> Result<Volume, ControlError> {
        self.json(self.http.get(self.url(&format!("/v1/volumes/{id}"))))
            .await
    }

    /// `GET /v1/volumes?limit=&start=`: one page and the token of the next.
    pub async fn list_volumes(
        &self,
        limit: u32,
        start: Option<&str>,
    ) -> Result<(Vec<Volume>, Option<String>), ControlError> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if limit > 0 {
            q.push(("limit", limit.to_string()));
        }
        if let Some(s) = start {
            q.push(("start", s.to_string()));
        }
        let p: VolumePage = self
            .json(self.http.get(self.url("/v1/volumes")).query(&q))
            .await?;
        Ok((p.volumes, p.next))
    }

    /// `DELETE /v1/volumes/{id}`.
    pub async fn delete_volume(&self, id: &str) -> Result<(), ControlError> {
        self.send(self.http.delete(self.url(&format!("/v1/volumes/{id}"))))
            .await
            .map(|_| ())
    }

    /// `POST /v1/volumes/{id}/publish`: the volume's nexus on `node` (or where the control plane
    /// chooses), exported over NVMe/TCP.
    pub async fn publish(&self, id: &str, node: Option<&str>) -> Result<Target, ControlError> {
        let body = match node {
            Some(n) => serde_json::json!({ "node": n }),
            None => serde_json::json!({}),
        };
        self.json(
            self.http
                .post(self.url(&format!("/v1/volumes/{id}/publish")))
                .json(&body),
        )
        .await
    }

    /// `POST /v1/volumes/{id}/unpublish`.
    pub async fn unpublish(&self, id: &str) -> Result<(), ControlError> {
        let req = self
            .http
            .post(self.url(&format!("/v1/volumes/{id}/unpublish")));
        self.send(req.json(&serde_json::json!({})))
            .await
            .map(|_| ())
    }

    /// `POST /v1/volumes/{id}/resize`.
    pub async fn resize(&self, id: &str, size_bytes: u64) -> Result<Volume, ControlError> {
        let req = self
            .http
            .post(self.url(&format!("/v1/volumes/{id}/resize")));
        self.json(req.json(&serde_json::json!({ "size_bytes": size_bytes })))
            .await
    }

    /// `POST /v1/snapshots`.
    pub async fn create_snapshot(
        &self,
        name: &str,
        volume_id: &str,
    ) -> Result<Snapshot, ControlError> {
        let body = serde_json::json!({ "name": name, "volume_id": volume_id });
        self.json(self.http.post(self.url("/v1/snapshots")).json(&body))
            .await
    }

    /// `GET /v1/snapshots/{id}`.
    pub async fn get_snapshot(&self, id: &str) -> Result<Snapshot, ControlError> {
        self.json(self.http.get(self.url(&format!("/v1/snapshots/{id}"))))
            .await
    }

    /// `DELETE /v1/snapshots/{id}`.
    pub async fn delete_snapshot(&self, id: &str) -> Result<(), ControlError> {
        self.send(self.http.delete(self.url(&format!("/v1/snapshots/{id}"))))
            .await
            .map(|_| ())
    }

    /// `GET /v1/snapshots?volume_id=&limit=&start=`.
    pub async fn list_snapshots(
        &self,
        volume_id: Option<&str>,
        limit: u32,
        start: Option<&str>,
    ) -> Result<(Vec<Snapshot>, Option<String>), ControlError> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(v) = volume_id {
            q.push(("volume_id", v.to_string()));
        }
        if limit > 0 {
            q.push(("limit", limit.to_string()));
        }
        if let Some(s) = start {
            q.push(("start", s.to_string()));
        }
        let p: SnapshotPage = self
            .json(self.http.get(self.url("/v1/snapshots")).query(&q))
            .await?;
        Ok((p.snapshots, p.next))
    }

    /// `GET /v1/capacity?zone=`.
    pub async fn capacity(&self, zone: Option<&str>) -> Result<u64, ControlError> {
        let mut req = self.http.get(self.url("/v1/capacity"));
        if let Some(z) = zone {
            req = req.query(&[("zone", z)]);
        }
        let c: Capacity = self.json(req).await?;
        Ok(c.available_bytes)
    }

    /// `GET /v1/leader`: whether the API answers at all (the controller's Probe).
    pub async fn ping(&self) -> Result<(), ControlError> {
        self.send(self.http.get(self.url("/v1/leader")))
            .await
            .map(|_| ())
    }
}

/// Decodes an error answer: `{"error": {"code", "message"}}` as the contract says, or the
/// older `{"error": "message"}`, or anything else (kept as the message, cut short).
pub fn api_error(status: u16, body: &[u8]) -> ControlError {
    #[derive(Deserialize)]
    struct Coded {
        code: String,
        message: String,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Inner {
        Coded(Coded),
        Plain(String),
    }
    #[derive(Deserialize)]
    struct Body {
        error: Inner,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(Body {
            error: Inner::Coded(c),
        }) => ControlError::Api {
            status,
            code: c.code,
            message: c.message,
        },
        Ok(Body {
            error: Inner::Plain(m),
        }) => ControlError::Api {
            status,
            code: String::new(),
            message: m,
        },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let message: String = text.chars().take(200).collect();
            ControlError::Api {
                status,
                code: String::new(),
                message,
            }
        }
    }
}
