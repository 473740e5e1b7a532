//! The operators' HTTP/JSON API (and, later, the CSI driver's).
//!
//! Why HTTP/JSON rather than gRPC: the issue asks for REST with an OpenAPI document
//! (`control/openapi.json`), `shoalctl` and `curl` can use it without generated code, and the
//! CSI driver (issue 17), though it serves gRPC to Kubernetes, needs only a handful of calls
//! to the control plane, which an HTTP client makes as easily. Every instance serves it
//! (reads come from etcd, so a follower answers as well as the leader).
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/v1/nodes` | `{"nodes": [NodeView]}` |
//! | GET | `/v1/nodes/{id}` | `NodeView`, 404 if unknown, 400 for a malformed id |
//! | GET | `/v1/leader` | `{"leader": InstanceInfo or null}` |
//! | GET | `/v1/instance` | `{"id", "api", "leader": bool}` of the instance asked |
//!
//! Errors are `{"error": "..."}` with 400 (bad input), 404, or 503 (etcd unreachable).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::Error;
use crate::leader::{self, LeaderState};
use crate::model::InstanceInfo;
use crate::store::Store;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// etcd.
    pub store: Store,
    /// This instance.
    pub instance: InstanceInfo,
    /// Whether it leads.
    pub leading: LeaderState,
}

/// An error as the API answers it.
struct ApiError(StatusCode, String);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Invalid { .. } => StatusCode::BAD_REQUEST,
            Error::Etcd(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// The router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/nodes/{id}", get(get_node))
        .route("/v1/leader", get(get_leader))
        .route("/v1/instance", get(get_instance))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such resource".into()) })
        .with_state(state)
}

async fn list_nodes(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let nodes = s.store.list_nodes().await?;
    Ok(Json(json!({ "nodes": nodes })).into_response())
}

async fn get_node(State(s): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match s.store.get_node(&id).await? {
        Some(n) => Ok(Json(n).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no node {id:?}"))),
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
