//! The command-line client of the API (`shoal-control node list`, ...): tables by default,
//! `--json` for scripts.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

use crate::model::{NodeView, Status};

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The API could not be reached.
    #[error("cannot reach the control plane at {url}: {source}")]
    Http {
        /// The URL.
        url: String,
        /// The error.
        #[source]
        source: reqwest::Error,
    },
    /// The API answered with an error.
    #[error("{status}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The API's message.
        message: String,
    },
    /// The answer does not decode.
    #[error("unexpected answer: {0}")]
    Decode(String),
}

/// GETs `path` from the API at `base`.
///
/// # Errors
/// [`CliError`].
pub async fn get(base: &str, path: &str) -> Result<Value, CliError> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let http = |source| CliError::Http {
        url: url.clone(),
        source,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(http)?;
    let resp = client.get(&url).send().await.map_err(http)?;
    let status = resp.status();
    let body: Value = resp.json().await.map_err(http)?;
    if !status.is_success() {
        return Err(CliError::Api {
            status: status.as_u16(),
            message: body["error"]["message"]
                .as_str()
                .unwrap_or("(no message)")
                .to_owned(),
        });
    }
    Ok(body)
}

/// The node table `shoal-control node list` prints.
///
/// # Errors
/// [`CliError::Decode`] if `body` is not a node list.
pub fn node_table(body: &Value) -> Result<String, CliError> {
    let nodes: Vec<NodeView> =
        serde_json::from_value(body.get("nodes").cloned().unwrap_or_default())
            .map_err(|e| CliError::Decode(e.to_string()))?;
    let mut out = format!(
        "{:<20} {:<8} {:<22} {:<22} {}\n",
        "NODE", "STATUS", "NVMF", "RPC", "LABELS"
    );
    for n in nodes {
        let labels: Vec<String> = n
            .record
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let status = match n.status {
            Status::Online => "online",
            Status::Offline => "offline",
        };
        let _ = writeln!(
            out,
            "{:<20} {:<8} {:<22} {:<22} {}",
            n.record.id,
            status,
            n.record.nvmf_addr.to_string(),
            n.record.rpc_endpoint.to_string(),
            labels.join(",")
        );
    }
    Ok(out)
}
