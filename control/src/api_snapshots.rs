//! The API's handlers for snapshots (see [`crate::api`] and [`crate::snapshot`]; what the
//! handlers share is in `api_common.rs`).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api_common::{ApiError, ApiState, answer, forward, parse_body};
use crate::snapshot::{self, SnapshotSpec};
use crate::volume_store;

/// Most snapshots per page.
const MAX_PAGE: usize = 1000;

fn check_token(what: &str, t: &str) -> Result<(), ApiError> {
    volume_store::get_check_id(t)
        .map_err(|_| ApiError::invalid(format!("{what} {t:?}: not an id of ours")))
}

pub async fn list_snapshots(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let mut limit = MAX_PAGE;
    let (mut start, mut volume) = (None, None);
    for (k, val) in &q {
        match k.as_str() {
            "limit" => {
                limit = val
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=MAX_PAGE).contains(l))
                    .ok_or_else(|| ApiError::invalid(format!("limit {val:?}: 1 to {MAX_PAGE}")))?;
            }
            "start" if val.is_empty() => {}
            "start" => {
                check_token("start", val)?;
                start = Some(val.as_str());
            }
            "volume_id" => {
                check_token("volume_id", val)?;
                volume = Some(val.as_str());
            }
            other => return Err(ApiError::invalid(format!("unknown parameter {other:?}"))),
        }
    }
    let (list, next) = snapshot::list(&s, volume, start, limit).await?;
    let views: Vec<_> = list.iter().map(snapshot::SnapshotRecord::view).collect();
    Ok(answer(
        StatusCode::OK,
        json!({ "snapshots": views, "next": next }),
    ))
}

pub async fn create_snapshot(
    State(s): State<ApiState>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Some(r) = forward(&s, method, &uri, Some(&body)).await {
        return r;
    }
    let spec: SnapshotSpec = parse_body(&body)?;
    let (snap, created) = snapshot::create(&s, spec).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(answer(status, snap.view()))
}

pub async fn get_snapshot(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let snap = snapshot::get(&s, &id).await?;
    Ok(answer(StatusCode::OK, snap.view()))
}

pub async fn delete_snapshot(
    State(s): State<ApiState>,
    method: Method,
    uri: Uri,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(r) = forward(&s, method, &uri, None).await {
        return r;
    }
    snapshot::delete(&s, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
