//! `shoalctl nexus ...`: replicated volumes (the `nexus_*` methods), with a progress bar for
//! running rebuilds (`nexus list`, and `nexus watch` that follows them until they end).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Subcommand;
use serde_json::{Value, json};

use crate::parse::{human_size, size};
use crate::show::{field, table, text};

/// The nexus subcommands.
#[derive(Subcommand, Debug)]
pub enum NexusCmd {
    /// Create a nexus over CHILD URIs (bdev:///NAME, nvmf://HOST:PORT/NQN).
    Create {
        name: String,
        /// Size the host sees, e.g. 10GiB.
        #[arg(long)]
        size: String,
        #[arg(required = true)]
        children: Vec<String>,
        /// Volume UUID (default: from the children's metadata, or new).
        #[arg(long)]
        uuid: Option<String>,
        /// Fault a child whose I/O takes longer than this (milliseconds).
        #[arg(long)]
        io_timeout_ms: Option<u64>,
    },
    /// Destroy a nexus (its children keep their data and metadata).
    Destroy { name: String },
    /// List nexuses (or one) with their children and rebuild progress.
    List { name: Option<String> },
    /// Add a child (rebuilt online; a faulted child comes back with a partial rebuild).
    AddChild { name: String, uri: String },
    /// Remove a child.
    RemoveChild { name: String, uri: String },
    /// Fault a child on purpose.
    FaultChild { name: String, uri: String },
    /// Limit rebuild copies to MIB_PER_SEC (0: unlimited; omitted: the default policy,
    /// unlimited while the host is idle and 128 MiB/s while it does I/O).
    RebuildRate {
        name: String,
        mib_per_sec: Option<u64>,
    },
    /// Pause the rebuild of URI (or every rebuild of the nexus).
    PauseRebuild { name: String, uri: Option<String> },
    /// Resume the rebuild of URI (or every rebuild of the nexus).
    ResumeRebuild { name: String, uri: Option<String> },
    /// Stop the rebuild of URI (the child becomes faulted).
    StopRebuild { name: String, uri: String },
    /// Hold the nexus's host writes (for a snapshot of its replicas) until `resume-io`, or
    /// for TIMEOUT_MS at most; prints the pause's generation.
    PauseIo {
        name: String,
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// End pause GENERATION (fails if it lapsed at its deadline).
    ResumeIo { name: String, generation: u64 },
    /// Follow the rebuilds of a nexus with progress bars until none is running.
    Watch {
        name: String,
        /// Refresh interval in milliseconds.
        #[arg(long, default_value_t = 500)]
        interval_ms: u64,
    },
}

/// What a nexus command prints: the raw result and its rendering.
pub enum NexusOut {
    /// A table or a line (the JSON result with `--json`).
    Done(Value, String),
    /// Already printed (watch).
    Printed,
}

/// Runs a nexus command; `call` sends one RPC.
pub fn run(
    call: &mut dyn FnMut(&str, Value) -> Result<Value, String>,
    c: NexusCmd,
) -> Result<NexusOut, String> {
    let done = |v: Value, line: String| Ok(NexusOut::Done(v, format!("{line}\n")));
    match c {
        NexusCmd::Create {
            name,
            size: sz,
            children,
            uuid,
            io_timeout_ms,
        } => {
            let mut p = json!({"name": name, "size": size(&sz)?, "children": children});
            if let Value::Object(m) = &mut p {
                if let Some(u) = uuid {
                    m.insert("uuid".into(), json!(u));
                }
                if let Some(t) = io_timeout_ms {
                    m.insert("io_timeout_ms".into(), json!(t));
                }
            }
            let v = call("nexus_create", p)?;
            done(v, format!("created nexus {name}"))
        }
        NexusCmd::Destroy { name } => {
            let v = call("nexus_destroy", json!({"name": name}))?;
            done(v, format!("destroyed nexus {name}"))
        }
        NexusCmd::List { name } => {
            let p = name.map_or_else(|| json!({}), |n| json!({"name": n}));
            let v = call("nexus_get", p)?;
            let s = render(&v);
            Ok(NexusOut::Done(v, s))
        }
        NexusCmd::AddChild { name, uri } => {
            let v = call("nexus_add_child", json!({"name": name, "uri": uri}))?;
            done(v, format!("{name}: added {uri} (rebuilding)"))
        }
        NexusCmd::RemoveChild { name, uri } => {
            let v = call("nexus_remove_child", json!({"name": name, "uri": uri}))?;
            done(v, format!("{name}: removed {uri}"))
        }
        NexusCmd::FaultChild { name, uri } => {
            let v = call("nexus_fault_child", json!({"name": name, "uri": uri}))?;
            done(v, format!("{name}: faulted {uri}"))
        }
        NexusCmd::RebuildRate { name, mib_per_sec } => {
            let mut p = json!({"name": name});
            if let Some(m) = mib_per_sec {
                p["mib_per_sec"] = json!(m);
            }
            let v = call("nexus_set_rebuild_rate", p)?;
            let what = match mib_per_sec {
                None => "back to the default policy".to_owned(),
                Some(0) => "unlimited".to_owned(),
                Some(m) => format!("{m} MiB/s"),
            };
            done(v, format!("{name}: rebuild rate {what}"))
        }
        NexusCmd::PauseRebuild { name, uri } => {
            pause_resume(call, "nexus_pause_rebuild", name, uri)
        }
        NexusCmd::ResumeRebuild { name, uri } => {
            pause_resume(call, "nexus_resume_rebuild", name, uri)
        }
        NexusCmd::StopRebuild { name, uri } => {
            let v = call("nexus_stop_rebuild", json!({"name": name, "uri": uri}))?;
            done(v, format!("{name}: stopped the rebuild of {uri}"))
        }
        NexusCmd::PauseIo { name, timeout_ms } => {
            let v = call(
                "nexus_pause_io",
                json!({"name": name, "timeout_ms": timeout_ms}),
            )?;
            let g = v.get("generation").cloned().unwrap_or(Value::Null);
            done(
                v,
                format!("{name}: host writes paused (pause {g}, at most {timeout_ms} ms)"),
            )
        }
        NexusCmd::ResumeIo { name, generation } => {
            let v = call(
                "nexus_resume_io",
                json!({"name": name, "generation": generation}),
            )?;
            done(
                v,
                format!("{name}: host writes resumed (pause {generation})"),
            )
        }
        NexusCmd::Watch { name, interval_ms } => watch(call, &name, interval_ms),
    }
}

fn pause_resume(
    call: &mut dyn FnMut(&str, Value) -> Result<Value, String>,
    method: &str,
    name: String,
    uri: Option<String>,
) -> Result<NexusOut, String> {
    let mut p = json!({"name": name});
    if let (Some(u), Value::Object(m)) = (&uri, &mut p) {
        m.insert("uri".into(), json!(u));
    }
    let v = call(method, p)?;
    let verb = if method.contains("pause") {
        "paused"
    } else {
        "resumed"
    };
    let what = uri.unwrap_or_else(|| "every rebuild".to_owned());
    Ok(NexusOut::Done(v, format!("{name}: {verb} {what}\n")))
}

/// A progress bar: `[#########-----------]  45%`.
pub fn bar(percent: u64, width: usize) -> String {
    let p = percent.min(100);
    let w = u64::try_from(width).unwrap_or(20);
    let filled = usize::try_from(p * w / 100).unwrap_or(0);
    format!(
        "[{}{}] {p:>3}%",
        "#".repeat(filled),
        "-".repeat(width.saturating_sub(filled))
    )
}

fn child_rows(n: &Value) -> Vec<Vec<String>> {
    let kids = n
        .get("children")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    kids.iter()
        .map(|c| {
            let state = field(c, "state");
            let progress = c
                .get("rebuild_progress")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let detail = match state.as_str() {
                "rebuilding" => {
                    let r = c.get("rebuild").unwrap_or(&Value::Null);
                    let copied = r.get("bytes_copied").and_then(Value::as_u64).unwrap_or(0);
                    let kind = if r.get("full") == Some(&Value::Bool(true)) {
                        "full"
                    } else {
                        "partial"
                    };
                    let paused = if r.get("paused") == Some(&Value::Bool(true)) {
                        ", paused"
                    } else {
                        ""
                    };
                    format!(
                        "{} {kind}, {} copied{paused}",
                        bar(progress, 20),
                        human_size(copied)
                    )
                }
                "faulted" => format!("reason: {}", field(c, "fault_reason")),
                _ => String::new(),
            };
            vec![format!("  {}", field(c, "uri")), state, detail]
        })
        .collect()
}

/// `nexus_get` as text: a line per nexus, then its children.
pub fn render(v: &Value) -> String {
    let list = v.as_array().map_or(&[][..], Vec::as_slice);
    let mut out = String::new();
    for n in list {
        let size = n.get("size").and_then(Value::as_u64).unwrap_or(0);
        let rate = n.get("rebuild_rate").unwrap_or(&Value::Null);
        out.push_str(&format!(
            "{}  {}  {}  uuid {}  generation {}  rebuild rate {} {} MiB/s\n",
            field(n, "name"),
            field(n, "state"),
            human_size(size),
            field(n, "uuid"),
            field(n, "generation"),
            text(rate.get("mode").unwrap_or(&Value::Null)),
            text(rate.get("mib_per_sec").unwrap_or(&Value::Null)),
        ));
        out.push_str(&table(&["  CHILD", "STATE", "REBUILD"], &child_rows(n)));
    }
    out
}

fn watch(
    call: &mut dyn FnMut(&str, Value) -> Result<Value, String>,
    name: &str,
    interval_ms: u64,
) -> Result<NexusOut, String> {
    let tty = std::io::stdout().is_terminal();
    let mut lines_drawn = 0usize;
    loop {
        let v = call("nexus_get", json!({"name": name}))?;
        let text = render(&v);
        let mut stdout = std::io::stdout().lock();
        if tty && lines_drawn > 0 {
            // Move up and redraw in place.
            let _ = write!(stdout, "\x1b[{lines_drawn}A\x1b[J");
        }
        let _ = write!(stdout, "{text}");
        let _ = stdout.flush();
        lines_drawn = text.lines().count();
        let running = v
            .get(0)
            .and_then(|n| n.get("children"))
            .and_then(Value::as_array)
            .is_some_and(|k| k.iter().any(|c| field(c, "state") == "rebuilding"));
        if !running {
            return Ok(NexusOut::Printed);
        }
        std::thread::sleep(Duration::from_millis(interval_ms.max(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars() {
        assert_eq!(bar(0, 10), "[----------]   0%");
        assert_eq!(bar(45, 20), "[#########-----------]  45%");
        assert_eq!(bar(100, 4), "[####] 100%");
        assert_eq!(bar(250, 4), "[####] 100%");
    }

    #[test]
    fn renders_children_and_progress() {
        let v = json!([{
            "name": "vol1", "state": "degraded", "size": 1u64 << 30, "uuid": "u",
            "generation": 7, "rebuild_rate": {"mode": "adaptive", "mib_per_sec": 128},
            "children": [
                {"uri": "bdev:///a", "state": "online", "rebuild_progress": 100},
                {"uri": "bdev:///b", "state": "rebuilding", "rebuild_progress": 50,
                 "rebuild": {"full": true, "paused": false, "bytes_copied": 512u64 << 20}},
                {"uri": "bdev:///c", "state": "faulted", "fault_reason": "io_error"},
            ]
        }]);
        let s = render(&v);
        assert!(s.starts_with("vol1  degraded  1 GiB"), "{s}");
        assert!(
            s.contains("[##########----------]  50% full, 512 MiB copied"),
            "{s}"
        );
        assert!(s.contains("reason: io_error"), "{s}");
        // Odd shapes print what they can.
        assert_eq!(render(&json!({"x": 1})), "");
        assert!(render(&json!([{}])).contains("CHILD"));
    }
}
