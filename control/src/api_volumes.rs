//! The API's handlers for pools, volumes, capacity and events (see [`crate::api`]; what the
//! handlers share is in `api_common.rs`).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::api_common::{ApiError, ApiState, answer, forward, parse_body};
use crate::model::Status;
use crate::pool::{self, PoolSpec, PoolState};
use crate::volume::{VolumeRecord, VolumeSpec};
use crate::{events, keys, nexus_state, volume_ops, volume_store};

/// Most volumes per page.
const MAX_PAGE: i64 = 1000;

macro_rules! leader_only {
    ($s:expr, $method:expr, $uri:expr, $body:expr) => {
        if let Some(r) = forward(&$s, $method, &$uri, $body).await {
            return r;
        }
    };
}

pub async fn list_pools(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let pools = pool::list(&s).await?;
    Ok(answer(StatusCode::OK, json!({ "pools": pools })))
}

pub async fn get_pool(
    State(s): State<ApiState>,
    Path((node, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    pool::list(&s)
        .await?
        .into_iter()
        .find(|p| p.record.spec.node == node && p.record.spec.name == name)
        .map(|p| answer(StatusCode::OK, p))
        .ok_or_else(|| ApiError::not_found(format!("no pool {node}/{name}")))
}

pub async fn declare_pool(
    State(s): State<ApiState>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    leader_only!(s, method, uri, Some(&body));
    let spec: PoolSpec = parse_body(&body)?;
    let (rec, created) = pool::declare(&s, spec).await?;
    let view = pool::list(&s)
        .await?
        .into_iter()
        .find(|p| p.record.spec == rec.spec);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(answer(status, view))
}

pub async fn remove_pool(
    State(s): State<ApiState>,
    method: Method,
    uri: Uri,
    Path((node, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    leader_only!(s, method, uri, None);
    pool::remove(&s, &node, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn view(s: &ApiState, v: &VolumeRecord) -> Result<serde_json::Value, ApiError> {
    let nodes = s.store.list_nodes().await?;
    Ok(serde_json::to_value(v.view(&nodes)).unwrap_or_default())
}

pub async fn list_volumes(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| ApiError::invalid(format!("limit {l:?}: 1 to {MAX_PAGE}")))?,
        None => MAX_PAGE,
    };
    let start = q.get("start").filter(|s| !s.is_empty());
    if let Some(st) = start
        && (st.len() != 36 || !st.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
    {
        return Err(ApiError::invalid(format!(
            "start {st:?}: not a token of ours"
        )));
    }
    let (vols, more): (Vec<VolumeRecord>, bool) = s
        .store
        .page(&keys::volumes(), start.map(String::as_str), limit)
        .await?;
    let nodes = s.store.list_nodes().await?;
    let next = if more {
        vols.last().map(|v| v.id.clone())
    } else {
        None
    };
    let views: Vec<_> = vols.iter().map(|v| v.view(&nodes)).collect();
    Ok(answer(
        StatusCode::OK,
        json!({ "volumes": views, "next": next }),
    ))
}

pub async fn get_volume(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let v = volume_store::get(&s, &id).await?;
    let nodes = s.store.list_nodes().await?;
    let mut view = v.view(&nodes);
    nexus_state::live_progress(&s, &v, &mut view).await;
    Ok(answer(StatusCode::OK, view))
}

pub async fn create_volume(
    State(s): State<ApiState>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    leader_only!(s, method, uri, Some(&body));
    let spec: VolumeSpec = parse_body(&body)?;
    let (v, created) = volume_ops::create(&s, spec).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(answer(status, view(&s, &v).await?))
}

pub async fn delete_volume(
    State(s): State<ApiState>,
    method: Method,
    uri: Uri,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    leader_only!(s, method, uri, None);
    volume_ops::delete(&s, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishReq {
    #[serde(default)]
    node: Option<String>,
}

pub async fn publish(
    State(s): State<ApiState>,
    method: Method,
    uri: Uri,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    leader_only!(s, method, uri, Some(&body));
    let req: PublishReq = parse_body(&body)?;
    let t = volume_ops::publish(&s, &id, req.node).await?;
    Ok(answer(StatusCode::OK, t))
}

pub async fn unpublish(
    State(s): State<ApiState>,
    method: Method,
    uri: Uri,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    leader_only!(s, method, uri, None);
    volume_ops::unpublish(&s, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResizeReq {
    size_bytes: u64,
}

pub async fn resize(
    State(s): State<ApiState>,
    method: Method,
    uri: Uri,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    leader_only!(s, method, uri, Some(&body));
    let req: ResizeReq = parse_body(&body)?;
    let v = volume_ops::resize(&s, &id, req.size_bytes).await?;
    Ok(answer(StatusCode::OK, view(&s, &v).await?))
}

pub async fn capacity(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let zone = q.get("zone");
    let nodes = s.store.list_nodes().await?;
    let available: u64 = pool::list(&s)
        .await?
        .into_iter()
        .filter(|p| p.node_status == Status::Online && p.record.state == PoolState::Online)
        .filter(|p| {
            zone.is_none_or(|z| {
                nodes
                    .iter()
                    .any(|n| n.record.id == p.record.spec.node && n.record.zone() == Some(z))
            })
        })
        .map(|p| p.record.free_bytes)
        .fold(0u64, u64::saturating_add);
    Ok(answer(
        StatusCode::OK,
        json!({ "available_bytes": available }),
    ))
}

/// Default and largest number of events answered.
const EVENTS_DEFAULT: usize = 100;

pub async fn list_events(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let mut f = events::Filter {
        limit: EVENTS_DEFAULT,
        ..events::Filter::default()
    };
    for (k, val) in &q {
        match k.as_str() {
            "limit" => {
                f.limit = val
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=events::MAX_EVENTS).contains(l))
                    .ok_or_else(|| {
                        ApiError::invalid(format!("limit {val:?}: 1 to {}", events::MAX_EVENTS))
                    })?;
            }
            "volume" => {
                volume_store::get_check_id(val)?;
                f.volume = Some(val.clone());
            }
            "node" => {
                crate::model::validate_name("node", val)?;
                f.node = Some(val.clone());
            }
            "kind" => {
                let k: events::EventKind = serde_json::from_value(json!(val))
                    .map_err(|_| ApiError::invalid(format!("kind {val:?}: not an event kind")))?;
                f.kind = Some(k);
            }
            other => return Err(ApiError::invalid(format!("unknown parameter {other:?}"))),
        }
    }
    let list = events::list(&s.store, &f).await?;
    Ok(answer(StatusCode::OK, json!({ "events": list })))
}
