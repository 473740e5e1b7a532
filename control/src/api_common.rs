//! What the API's handlers share ([`crate::api`], and its volume and snapshot handlers):
//! their state ([`ApiState`]), the error they answer with ([`ApiError`], and how a
//! control-plane [`Error`] maps to an HTTP status and code), forwarding a change to the
//! leader ([`forward`]), and reading and writing JSON bodies ([`parse_body`], [`answer`]).
//!
//! A leaf under the handlers: it uses the shared context, the leader's identity
//! ([`crate::leader::current`]) and the node errors, no handler.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Error;
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
