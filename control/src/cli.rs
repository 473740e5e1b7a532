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

/// Sends `method` to `path` of the API at `base` with an optional JSON body; the answer's
/// body (`null` for 204).
///
/// # Errors
/// [`CliError`].
pub async fn send(
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, CliError> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let http = |source| CliError::Http {
        url: url.clone(),
        source,
    };
    // A snapshot pauses a volume's writes for at most 10 s; a create waits for its nodes.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(http)?;
    let mut req = client.request(method, &url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.map_err(http)?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(http)?;
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).map_err(|e| CliError::Decode(e.to_string()))?
    };
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

/// A progress bar of `width` cells for `pct` percent: `[#####.....] 50%`.
#[must_use]
pub fn bar(pct: u8, width: usize) -> String {
    let pct = pct.min(100);
    let full = width * usize::from(pct) / 100;
    format!(
        "[{}{}] {pct:>3}%",
        "#".repeat(full),
        ".".repeat(width.saturating_sub(full))
    )
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("-")
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut b = bytes;
    let mut u = 0;
    while b >= 1024 && b.is_multiple_of(1024) && u + 1 < UNITS.len() {
        b /= 1024;
        u += 1;
    }
    format!("{b} {}", UNITS.get(u).unwrap_or(&"B"))
}

/// One replica's line: node, pool, state, and the rebuild's progress bar or why it is faulted.
#[must_use]
pub fn replica_line(r: &Value) -> String {
    let state = s(r, "state");
    let mut out = format!("  {:<20} {:<12} {:<11}", s(r, "node"), s(r, "pool"), state);
    if let Some(p) = r.get("rebuild_progress").and_then(Value::as_u64) {
        out.push(' ');
        out.push_str(&bar(u8::try_from(p.min(100)).unwrap_or(100), 20));
    }
    if let Some(reason) = r.get("reason").and_then(Value::as_str) {
        let _ = write!(out, " ({reason})");
    }
    if let Some(old) = r.get("replaces").and_then(Value::as_str) {
        let _ = write!(out, " (replaces the replica on {old})");
    }
    out.trim_end().to_owned() + "\n"
}

/// The table `shoal-control volume list` / `volume get` prints: a line per volume, then one
/// per replica.
#[must_use]
pub fn volume_table(volumes: &[Value]) -> String {
    let mut out = format!(
        "{:<36} {:<20} {:>10} {:<9} {:<8} {}\n",
        "VOLUME", "NAME", "SIZE", "STATE", "REPLICAS", "TARGET"
    );
    for v in volumes {
        let reps = v
            .get("replica_list")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let up = reps.iter().filter(|r| s(r, "state") == "online").count();
        let target = v
            .get("target")
            .filter(|t| t.is_object())
            .map_or("-".to_owned(), |t| {
                format!("{} {}:{}", s(t, "node"), s(t, "traddr"), s(t, "trsvcid"))
            });
        let _ = writeln!(
            out,
            "{:<36} {:<20} {:>10} {:<9} {:<8} {}",
            s(v, "id"),
            s(v, "name"),
            size(v.get("size_bytes").and_then(Value::as_u64).unwrap_or(0)),
            s(v, "state"),
            format!(
                "{up}/{}",
                v.get("replicas").and_then(Value::as_u64).unwrap_or(0)
            ),
            target
        );
        for r in &reps {
            out.push_str(&replica_line(r));
        }
    }
    out
}

/// The table `shoal-control snapshot list` / `snapshot get` prints: a line per snapshot,
/// then one per replica's snapshot.
#[must_use]
pub fn snapshot_table(snapshots: &[Value]) -> String {
    let mut out = format!(
        "{:<36} {:<20} {:<36} {:>10} {:<9} {}\n",
        "SNAPSHOT", "NAME", "VOLUME", "SIZE", "STATE", "TAKEN (UTC)"
    );
    for v in snapshots {
        let _ = writeln!(
            out,
            "{:<36} {:<20} {:<36} {:>10} {:<9} {}",
            s(v, "id"),
            s(v, "name"),
            s(v, "volume_id"),
            size(v.get("size_bytes").and_then(Value::as_u64).unwrap_or(0)),
            s(v, "state"),
            utc(v
                .get("created_unix")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .saturating_mul(1000))
        );
        for r in v
            .get("replica_list")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let _ = writeln!(
                out,
                "  {:<20} {:<12} {}",
                s(r, "node"),
                s(r, "pool"),
                s(r, "lvol_uuid")
            );
        }
    }
    out
}

/// `ms` since the epoch as `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
#[must_use]
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// The table `shoal-control event list` prints.
#[must_use]
pub fn event_table(events: &[Value]) -> String {
    let mut out = format!(
        "{:<23} {:<16} {:<10} {}\n",
        "TIME (UTC)", "KIND", "NODE", "MESSAGE"
    );
    for e in events {
        let _ = writeln!(
            out,
            "{:<23} {:<16} {:<10} {}",
            utc(e.get("time_ms").and_then(Value::as_u64).unwrap_or(0)),
            s(e, "kind"),
            s(e, "node"),
            s(e, "message")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_show_replica_states_progress_and_events() {
        assert_eq!(bar(45, 20), "[#########...........]  45%");
        assert_eq!(bar(200, 4), "[####] 100%");
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20.123");
        let v = json!({"id": "6a1f3e56-0000-4000-8000-00000000c0de", "name": "v", "size_bytes": 64 << 20,
            "replicas": 3, "state": "degraded", "target": null,
            "replica_list": [
                {"node": "n1", "pool": "pool", "state": "online"},
                {"node": "n4", "pool": "pool", "state": "rebuilding", "rebuild_progress": 50, "replaces": "n2"},
                {"node": "n3", "pool": "pool", "state": "faulted", "reason": "io_error"}]});
        let t = volume_table(&[v]);
        assert!(t.contains("64 MiB"), "{t}");
        assert!(t.contains("1/3"), "{t}");
        assert!(
            t.contains("[##########..........]  50% (replaces the replica on n2)"),
            "{t}"
        );
        assert!(t.contains("faulted     (io_error)"), "{t}");
        let snap = json!({"id": "s1", "name": "daily", "volume_id": "v1", "size_bytes": 16 << 20,
            "created_unix": 1_700_000_000, "ready": true, "state": "ready",
            "replica_list": [{"node": "n1", "pool": "pool", "lvol_uuid": "u1"}]});
        let t = snapshot_table(&[snap]);
        assert!(
            t.contains("16 MiB ready     2023-11-14 22:13:20.000"),
            "{t}"
        );
        assert!(t.contains("  n1                   pool         u1"), "{t}");
        let e = json!({"id": "x", "time_ms": 0, "kind": "node_offline", "node": "n2", "message": "node n2 is offline"});
        assert!(event_table(&[e]).contains("node_offline     n2         node n2 is offline"));
    }
}
