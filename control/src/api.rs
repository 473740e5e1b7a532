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
//!
//! This file holds the router and the handlers of nodes, the leader and the instance; the
//! pools', volumes', capacity's and events' handlers are in `api_volumes.rs`, the snapshots'
//! in `api_snapshots.rs`, and what all of them share (the state, [`ApiError`] and its mapping
//! of errors, forwarding to the leader, JSON bodies) in `api_common.rs`, re-exported here.
//! The arrow points one way: the router uses the handlers, the handlers use `api_common`.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

pub use crate::api_common::{ApiError, ApiState, answer, forward, parse_body};
use crate::api_snapshots as snap;
use crate::api_volumes as v;
use crate::leader;

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
