//! The HTTP/JSON API for operators, `shoal-control`'s client commands and the CSI driver.
//!
//! Why HTTP/JSON rather than gRPC: the issue asks for REST with an OpenAPI document
//! (`control/openapi.json`, tested against the server), `curl` and the command-line client
//! use it without generated code, and the CSI driver needs only a handful of calls. Every
//! instance serves it: reads come from etcd, so a follower answers them as well as the
//! leader; a change (POST, DELETE) received by a follower is forwarded to the leader, which
//! alone acts (`503 unavailable` while nobody leads).
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/v1/nodes`, `/v1/nodes/{id}` | `{"nodes": [NodeView]}`, `NodeView` |
//! | GET | `/v1/leader`, `/v1/instance` | who leads; this instance |
//! | GET, POST | `/v1/pools` | `{"pools": [PoolView]}`; declare `{node, name, disk}` (201, 200 same, 409 other disk) |
//! | GET, DELETE | `/v1/pools/{node}/{name}` | `PoolView`; 204 |
//! | GET, POST | `/v1/volumes` | `{"volumes", "next"}` (`?limit=&start=`); create (201, 200 same, 409) |
//! | GET, DELETE | `/v1/volumes/{id}` | `Volume`; 204 |
//! | POST | `/v1/volumes/{id}/publish`, `/unpublish`, `/resize` | `Target`; 204; `Volume` |
//! | GET, POST | `/v1/snapshots` | `{"snapshots", "next"}` (`?volume_id=&limit=&start=`); take `{name, volume_id}` (201, 200 same, 409 other volume) |
//! | GET, DELETE | `/v1/snapshots/{id}` | `Snapshot`; 204 (412 while several volumes on a node use it) |
//! | GET | `/v1/capacity?zone=` | `{"available_bytes"}` |
//! | GET | `/v1/events?volume=&node=&kind=&limit=` | `{"events": [Event]}`, the newest `limit` (100; at most 1000), oldest first |
//!
//! Errors are `{"error": {"code", "message"}}`: `invalid_argument` 400, `not_found` 404,
//! `already_exists` 409, `failed_precondition` 412, `out_of_range` 416,
//! `resource_exhausted` 507, `unavailable` 503, `internal` 500.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::Error;
use crate::api_snapshots as snap;
use crate::api_volumes as v;
use crate::ctx::Ctx;
use crate::leader;
use crate::node_rpc::NodeRpcError;

/// What the handlers share.
pub type ApiState = Arc<Ctx>;

/// An error as the API answers it.
pub struct ApiError(pub StatusCode, pub &'static str, pub String);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        use StatusCode as S;
        let (status, code) = match &e {
            Error::Invalid { .. } => (S::BAD_REQUEST, "invalid_argument"),
            Error::NotFound(_) => (S::NOT_FOUND, "not_found"),
            Error::AlreadyExists(_) => (S::CONFLICT, "already_exists"),
            Error::FailedPrecondition(_) => (S::PRECONDITION_FAILED, "failed_precondition"),
            Error::OutOfRange(_) => (S::RANGE_NOT_SATISFIABLE, "out_of_range"),
            Error::Exhausted(_) => (S::INSUFFICIENT_STORAGE, "resource_exhausted"),
            Error::Etcd(_) | Error::NotLeader | Error::Unavailable(_) => {
                (S::SERVICE_UNAVAILABLE, "unavailable")
            }
            Error::NodeRpc(NodeRpcError::Rpc { .. }) | Error::BadValue { .. } => {
                (S::INTERNAL_SERVER_ERROR, "internal")
            }
            Error::NodeRpc(_) => (S::SERVICE_UNAVAILABLE, "unavailable"),
        };
        Self(status, code, e.to_string())
    }
}

impl ApiError {
    /// 404 with a message.
    #[must_use]
    pub fn not_found(msg: String) -> Self {
        Self(StatusCode::NOT_FOUND, "not_found", msg)
    }

    /// 400 with a message.
    #[must_use]
    pub fn invalid(msg: String) -> Self {
        Self(StatusCode::BAD_REQUEST, "invalid_argument", msg)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({ "error": { "code": self.1, "message": self.2 } })),
        )
            .into_response()
    }
}

/// The router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/nodes/{id}", get(get_node))
        .route("/v1/leader", get(get_leader))
        .route("/v1/instance", get(get_instance))
        .route("/v1/pools", get(v::list_pools).post(v::declare_pool))
        .route(
            "/v1/pools/{node}/{name}",
            get(v::get_pool).delete(v::remove_pool),
        )
        .route("/v1/volumes", get(v::list_volumes).post(v::create_volume))
        .route(
            "/v1/volumes/{id}",
            get(v::get_volume).delete(v::delete_volume),
        )
        .route("/v1/volumes/{id}/publish", post(v::publish))
        .route("/v1/volumes/{id}/unpublish", post(v::unpublish))
        .route("/v1/volumes/{id}/resize", post(v::resize))
        .route(
            "/v1/snapshots",
            get(snap::list_snapshots).post(snap::create_snapshot),
        )
        .route(
            "/v1/snapshots/{id}",
            get(snap::get_snapshot).delete(snap::delete_snapshot),
        )
        .route("/v1/capacity", get(v::capacity))
        .route("/v1/events", get(v::list_events))
        .fallback(|| async { ApiError::not_found("no such resource".into()) })
        .with_state(state)
}

/// When this instance does not lead: the leader's answer to the same request (`None` when
/// this instance leads and should act itself).
pub async fn forward(
    s: &Ctx,
    method: Method,
    uri: &Uri,
    body: Option<&[u8]>,
) -> Option<Result<Response, ApiError>> {
    if s.leading.borrow().is_some() {
        return None;
    }
    let unavailable = |m: String| ApiError(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m);
    let l = match leader::current(&s.store).await {
        Ok(Some(l)) if l.api != s.instance.api => l,
        Ok(_) => return Some(Err(unavailable("no leader at the moment; retry".into()))),
        Err(e) => return Some(Err(e.into())),
    };
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let url = format!("{}{path}", l.api.trim_end_matches('/'));
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
    {
        Ok(c) => c,
        Err(e) => return Some(Err(unavailable(e.to_string()))),
    };
    let m = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut req = client.request(m, &url).header("x-shoal-forwarded", "1");
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_vec());
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            return Some(Err(unavailable(format!(
                "the leader {} at {}: {e}",
                l.id, l.api
            ))));
        }
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let bytes = resp.bytes().await.unwrap_or_default();
    Some(Ok((
        status,
        [("content-type", "application/json")],
        bytes.to_vec(),
    )
        .into_response()))
}

async fn list_nodes(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let nodes = s.store.list_nodes().await?;
    Ok(Json(json!({ "nodes": nodes })).into_response())
}

async fn get_node(State(s): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match s.store.get_node(&id).await? {
        Some(n) => Ok(Json(n).into_response()),
        None => Err(ApiError::not_found(format!("no node {id:?}"))),
    }
}

async fn get_leader(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let l = leader::current(&s.store).await?;
    Ok(Json(json!({ "leader": l })).into_response())
}

async fn get_instance(State(s): State<ApiState>) -> Response {
    let leading = s.leading.borrow().is_some();
    Json(json!({ "id": s.instance.id, "api": s.instance.api, "leader": leading })).into_response()
}

/// Parses a JSON body (an empty body is `{}`).
///
/// # Errors
/// 400 naming what does not decode.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("request body: {e}")))
}

/// A value as a JSON answer with `status`.
pub fn answer(status: StatusCode, v: impl serde::Serialize) -> Response {
    (status, Json(v)).into_response()
}
