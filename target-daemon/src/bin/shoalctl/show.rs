//! Human-readable rendering of RPC results: aligned tables. Every field is read with `get`,
//! so a result of an unexpected shape prints `-` rather than failing.

use serde_json::Value;

use crate::parse::human_size;

/// A field as text: strings without quotes, `-` when absent or null.
pub fn field(v: &Value, key: &str) -> String {
    text(v.get(key).unwrap_or(&Value::Null))
}

/// A value as text: strings without quotes, `-` for null.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// An aligned table with a header row; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let w = widths.get(i).copied().unwrap_or(0);
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `bdev_get_bdevs`.
pub fn bdevs(v: &Value) -> String {
    let rows: Vec<Vec<String>> = items(v)
        .iter()
        .map(|b| {
            let bs = b.get("block_size").and_then(Value::as_u64).unwrap_or(0);
            let n = b.get("num_blocks").and_then(Value::as_u64).unwrap_or(0);
            vec![
                field(b, "name"),
                field(b, "product_name"),
                human_size(bs.saturating_mul(n)),
                field(b, "block_size"),
                field(b, "num_blocks"),
                if b.get("claimed") == Some(&Value::Bool(true)) {
                    "yes"
                } else {
                    "no"
                }
                .to_owned(),
                field(b, "uuid"),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "PRODUCT", "SIZE", "BLOCK", "BLOCKS", "CLAIMED", "UUID",
        ],
        &rows,
    )
}

/// `bdev_get_iostat`.
pub fn iostat(v: &Value) -> String {
    let rows: Vec<Vec<String>> = items(v.get("bdevs").unwrap_or(&Value::Null))
        .iter()
        .map(|b| {
            let bytes = |k: &str| human_size(b.get(k).and_then(Value::as_u64).unwrap_or(0));
            vec![
                field(b, "name"),
                field(b, "num_read_ops"),
                bytes("bytes_read"),
                field(b, "num_write_ops"),
                bytes("bytes_written"),
                field(b, "num_unmap_ops"),
                field(b, "num_write_zeroes_ops"),
                field(b, "num_flush_ops"),
                field(b, "num_errors"),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "READS", "READ", "WRITES", "WRITTEN", "UNMAPS", "ZEROES", "FLUSHES", "ERRORS",
        ],
        &rows,
    )
}

/// An object as `key: value` lines (`nvmf_get_transports` entries, `spdk_get_version`).
pub fn object(v: &Value) -> String {
    match v.as_object() {
        Some(m) => m
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", text(v)))
            .collect(),
        None => format!("{}\n", text(v)),
    }
}

fn address(a: &Value) -> String {
    let ip = field(a, "traddr");
    let port = field(a, "trsvcid");
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn joined(list: &[Value], f: impl Fn(&Value) -> String) -> String {
    if list.is_empty() {
        return "-".to_owned();
    }
    list.iter().map(f).collect::<Vec<_>>().join(",")
}

/// `nvmf_get_subsystems`.
pub fn subsystems(v: &Value) -> String {
    let rows: Vec<Vec<String>> = items(v)
        .iter()
        .map(|s| {
            let list = |k: &str| items(s.get(k).unwrap_or(&Value::Null)).to_vec();
            vec![
                field(s, "nqn"),
                field(s, "subtype"),
                if s.get("allow_any_host") == Some(&Value::Bool(true)) {
                    "yes"
                } else {
                    "no"
                }
                .to_owned(),
                joined(&list("listen_addresses"), address),
                joined(&list("hosts"), |h| field(h, "nqn")),
                joined(&list("namespaces"), |n| {
                    format!("{}:{}", field(n, "nsid"), field(n, "bdev_name"))
                }),
            ]
        })
        .collect();
    table(
        &[
            "NQN",
            "TYPE",
            "ANY HOST",
            "LISTENERS",
            "HOSTS",
            "NAMESPACES",
        ],
        &rows,
    )
}

/// `nvmf_subsystem_get_listeners`.
pub fn listeners(v: &Value) -> String {
    let rows: Vec<Vec<String>> = items(v)
        .iter()
        .map(|l| {
            let a = l.get("address").unwrap_or(&Value::Null);
            vec![field(a, "trtype"), field(a, "adrfam"), address(a)]
        })
        .collect();
    table(&["TRTYPE", "ADRFAM", "ADDRESS"], &rows)
}

/// `nvmf_subsystem_get_controllers`.
pub fn controllers(v: &Value) -> String {
    let rows: Vec<Vec<String>> = items(v)
        .iter()
        .map(|c| {
            vec![
                field(c, "cntlid"),
                field(c, "cntrltype"),
                field(c, "num_io_qpairs"),
                field(c, "hostid"),
                field(c, "hostnqn"),
            ]
        })
        .collect();
    table(&["CNTLID", "TYPE", "IO QPAIRS", "HOSTID", "HOSTNQN"], &rows)
}

/// `nvmf_subsystem_get_qpairs`.
pub fn qpairs(v: &Value) -> String {
    let rows: Vec<Vec<String>> = items(v)
        .iter()
        .map(|q| {
            let listen = q
                .get("listen_address")
                .map_or_else(|| "-".to_owned(), address);
            vec![
                field(q, "cntlid"),
                field(q, "qid"),
                field(q, "state"),
                listen,
                field(q, "hostnqn"),
            ]
        })
        .collect();
    table(&["CNTLID", "QID", "STATE", "LISTENER", "HOSTNQN"], &rows)
}

/// `nvmf_get_stats`.
pub fn stats(v: &Value) -> String {
    let rows: Vec<Vec<String>> = items(v.get("poll_groups").unwrap_or(&Value::Null))
        .iter()
        .map(|g| {
            vec![
                field(g, "name"),
                field(g, "current_qpairs"),
                field(g, "current_admin_qpairs"),
                field(g, "current_io_qpairs"),
            ]
        })
        .collect();
    table(
        &[
            "POLL GROUP",
            "CONNECTIONS",
            "ADMIN QPAIRS",
            "IO QPAIRS",
            "PENDING IO",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["xxxx".into(), "1".into()],
                vec!["y".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A     LONGER\nxxxx  1\ny     22\n");
    }

    #[test]
    fn odd_shapes_do_not_fail() {
        assert_eq!(
            bdevs(&json!({"not": "a list"})),
            "NAME  PRODUCT  SIZE  BLOCK  BLOCKS  CLAIMED  UUID\n"
        );
        let s = subsystems(&json!([{"nqn": 5, "listen_addresses": [{"traddr": "::1"}]}]));
        assert!(s.contains("[::1]:-"), "{s}");
        assert_eq!(field(&json!({"a": null}), "a"), "-");
    }
}
