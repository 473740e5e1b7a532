//! SPDK's JSON configuration format: loading it into RPC calls and saving calls back to it.
//!
//! ```json
//! {"subsystems": [
//!   {"subsystem": "bdev", "config": [
//!     {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": 8192, "block_size": 512}}]},
//!   {"subsystem": "nvmf", "config": [ ... ]}]}
//! ```
//!
//! Format rules, as SPDK's loader (`lib/init/json_config.c`) applies them: keys of the root
//! object other than `subsystems` are ignored; a missing `subsystems` means an empty config;
//! each subsystem object has exactly `subsystem` (a string) and `config` (an array or `null`);
//! each config entry has exactly `method` and optionally `params` (an object). SPDK v26 also
//! allows an entry to be an array of entries (a batch); Shoal flattens it in place. `//` and
//! `/* */` comments are allowed (SPDK parses configs with `SPDK_JSON_PARSE_FLAG_ALLOW_COMMENTS`).
//!
//! Order: SPDK applies calls in file order, subsystem by subsystem, and its `save_config` writes
//! subsystems in dependency order (`keyring`, `iobuf`, `sock`, `vmd`, `accel`, `bdev`, ...,
//! `nvmf`). A hand-written file may list `nvmf` before `bdev`, which SPDK would fail to load
//! (`nvmf_subsystem_add_ns` before the bdev exists); [`ConfigDocument::calls`] therefore sorts
//! subsystems stably by [`SUBSYSTEM_ORDER`] (unknown subsystems last, in file order), which is
//! the file order for any config SPDK saved. Within a subsystem, file order is kept.
//!
//! Method policy ([`ConfigDocument::plan`]):
//! * a method Shoal serves is applied (in-process, through [`crate::rpc::Registry::call`]);
//! * an SPDK housekeeping method ([`crate::rpc::params::HOUSEKEEPING_METHODS`]:
//!   `sock_impl_set_options`, `iobuf_set_options`, `accel_set_options`, `bdev_set_options`,
//!   `bdev_wait_for_examine`, `nvmf_set_max_subsystems`, `nvmf_set_config`, `nvmf_set_crdt`,
//!   `framework_set_scheduler`, ...) is skipped with a warning, in any subsystem;
//! * any other method is an error naming the subsystem, the entry index and the method: it
//!   would configure something Shoal does not have, and silently dropping it could expose less
//!   than the operator intended.
//!
//! Subsystems SPDK always saves with an empty config (`accel`, `sock`, `iobuf`, `vmd`,
//! `keyring`, `scheduler`, `scsi`, ...) are accepted whatever their name.

use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::rpc::params::{housekeeping_refused, is_housekeeping};
use crate::rpc::{Registry, RpcError};

/// Subsystems in the order SPDK's `save_config` writes them for an NVMe-oF target (its
/// dependency order). Configs are applied in this order; unknown subsystems come last.
pub const SUBSYSTEM_ORDER: &[&str] = &[
    "keyring",
    "iobuf",
    "sock",
    "vmd",
    "accel",
    "scheduler",
    "fsdev",
    "bdev",
    "nbd",
    "ublk",
    "scsi",
    "iscsi",
    "vhost_scsi",
    "vhost_blk",
    "vfio_user_target",
    "nvmf",
];

/// Largest config file read, in bytes.
pub const MAX_CONFIG_BYTES: u64 = 64 << 20;

/// Why a config could not be loaded or applied.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error("config {path} is larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// Not JSON, or not the shape of a config (the message ends with `at line L column C`).
    #[error("config: {message}")]
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// serde_json's description.
        message: String,
    },
    /// A config entry is malformed.
    #[error("config: subsystem `{subsystem}`, config[{index}]: {message}")]
    Entry {
        /// The subsystem.
        subsystem: String,
        /// Index of the entry in the subsystem's `config` array.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// A method Shoal does not serve and that is not SPDK housekeeping.
    #[error(
        "config: subsystem `{subsystem}`, config[{index}]: method `{method}` is not supported by Shoal"
    )]
    UnknownMethod {
        /// The subsystem.
        subsystem: String,
        /// Index of the entry.
        index: usize,
        /// The method.
        method: String,
    },
    /// Applying a call failed.
    #[error("config: subsystem `{subsystem}`, config[{index}]: {method} failed: {error}")]
    Apply {
        /// The subsystem.
        subsystem: String,
        /// Index of the entry.
        index: usize,
        /// The method.
        method: String,
        /// The RPC error.
        error: RpcError,
    },
}

/// One `{"method": .., "params": ..}` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodCall {
    /// The RPC method.
    pub method: String,
    /// Its params (an object), absent when the method takes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
}

/// One element of `subsystems`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubsystemConfig {
    /// The subsystem name.
    pub subsystem: String,
    /// Its calls; `None` is written as `null` (SPDK's "no config" for some subsystems).
    pub config: Option<Vec<MethodCall>>,
}

/// A whole config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConfigDocument {
    /// The subsystems, in file order.
    pub subsystems: Vec<SubsystemConfig>,
}

/// A call located in a config: which subsystem and entry it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigCall {
    /// The subsystem.
    pub subsystem: String,
    /// Position of the call among the subsystem's calls (batches flattened; without batches,
    /// the index in the `config` array).
    pub index: usize,
    /// The method.
    pub method: String,
    /// Its params.
    pub params: Option<Value>,
}

/// The calls of a config split by [`ConfigDocument::plan`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigPlan {
    /// Calls to apply, in order.
    pub apply: Vec<ConfigCall>,
    /// SPDK housekeeping calls skipped.
    pub ignored: Vec<ConfigCall>,
}

#[derive(Deserialize)]
struct RawDocument {
    #[serde(default)]
    subsystems: Option<Vec<RawSubsystem>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubsystem {
    subsystem: String,
    config: Option<Vec<Value>>,
}

fn entry_error(subsystem: &str, index: usize, message: impl Into<String>) -> ConfigError {
    ConfigError::Entry {
        subsystem: subsystem.to_owned(),
        index,
        message: message.into(),
    }
}

/// Decodes one non-batch entry.
fn decode_entry(subsystem: &str, index: usize, value: Value) -> Result<MethodCall, ConfigError> {
    let shown = match &value {
        Value::Object(m) => match m.get("method") {
            Some(Value::String(s)) => format!("method `{s}`: "),
            _ => String::new(),
        },
        _ => String::new(),
    };
    let call: MethodCall = serde_json::from_value(value)
        .map_err(|e| entry_error(subsystem, index, format!("{shown}{e}")))?;
    match &call.params {
        None | Some(Value::Object(_)) => Ok(call),
        Some(Value::Null) => Ok(MethodCall {
            params: None,
            ..call
        }),
        Some(_) => Err(entry_error(
            subsystem,
            index,
            format!("method `{}`: `params` must be an object", call.method),
        )),
    }
}

/// Replaces `//` and `/* */` comments outside strings by spaces, keeping newlines so that
/// error positions stay right.
fn strip_comments(text: &str) -> Cow<'_, str> {
    if !text.contains("//") && !text.contains("/*") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    let mut escaped = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                    out.push(' ');
                }
            }
            ('/', Some('*')) => {
                out.push_str("  ");
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    out.push(if c == '\n' { '\n' } else { ' ' });
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn rank(subsystem: &str) -> usize {
    SUBSYSTEM_ORDER
        .iter()
        .position(|s| *s == subsystem)
        .unwrap_or(SUBSYSTEM_ORDER.len())
}

impl ConfigDocument {
    /// Parses a config text (see the [module documentation](self) for the rules).
    ///
    /// # Errors
    /// [`ConfigError::Syntax`] with line and column for bad JSON or a bad shape,
    /// [`ConfigError::Entry`] naming the subsystem and entry for a bad entry.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let text = strip_comments(text);
        let raw: RawDocument = serde_json::from_str(&text).map_err(|e| ConfigError::Syntax {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        let mut doc = Self::default();
        for raw_sub in raw.subsystems.unwrap_or_default() {
            let name = raw_sub.subsystem;
            let config = match raw_sub.config {
                None => None,
                Some(entries) => {
                    let mut calls = Vec::new();
                    for (index, entry) in entries.into_iter().enumerate() {
                        match entry {
                            Value::Array(batch) => {
                                for member in batch {
                                    if member.is_array() {
                                        return Err(entry_error(&name, index, "nested batch"));
                                    }
                                    calls.push(decode_entry(&name, index, member)?);
                                }
                            }
                            other => calls.push(decode_entry(&name, index, other)?),
                        }
                    }
                    Some(calls)
                }
            };
            doc.subsystems.push(SubsystemConfig {
                subsystem: name,
                config,
            });
        }
        Ok(doc)
    }

    /// Reads and parses a config file (at most [`MAX_CONFIG_BYTES`]).
    ///
    /// # Errors
    /// As [`ConfigDocument::parse`], plus read errors and [`ConfigError::TooLarge`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES.saturating_add(1))
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if u64::try_from(text.len()).unwrap_or(u64::MAX) > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_owned(),
            });
        }
        Self::parse(&text)
    }

    /// Every call, subsystems in apply order (see the [module documentation](self)), entries
    /// in file order, batches flattened.
    #[must_use]
    pub fn calls(&self) -> Vec<ConfigCall> {
        let mut subs: Vec<&SubsystemConfig> = self.subsystems.iter().collect();
        subs.sort_by_key(|s| rank(&s.subsystem));
        let mut out = Vec::new();
        for sub in subs {
            for (index, call) in sub.config.iter().flatten().enumerate() {
                out.push(ConfigCall {
                    subsystem: sub.subsystem.clone(),
                    index,
                    method: call.method.clone(),
                    params: call.params.clone(),
                });
            }
        }
        out
    }

    /// Splits the calls into those to apply and SPDK housekeeping to skip.
    ///
    /// # Errors
    /// [`ConfigError::UnknownMethod`] for the first call that is neither served
    /// (`is_served(method)`) nor housekeeping.
    pub fn plan(&self, is_served: impl Fn(&str) -> bool) -> Result<ConfigPlan, ConfigError> {
        let mut plan = ConfigPlan::default();
        for call in self.calls() {
            let refused = match &call.params {
                Some(Value::Object(p)) => housekeeping_refused(&call.method, p),
                _ => Vec::new(),
            };
            if is_housekeeping(&call.method) && refused.is_empty() {
                plan.ignored.push(call);
            } else if is_served(&call.method) {
                plan.apply.push(call);
            } else {
                return Err(ConfigError::UnknownMethod {
                    subsystem: call.subsystem,
                    index: call.index,
                    method: call.method,
                });
            }
        }
        Ok(plan)
    }

    /// Plans and applies the config through `registry`, stopping at the first failure (as
    /// SPDK's `spdk_subsystem_load_config` with `stop_on_error`). Returns the plan applied.
    ///
    /// # Errors
    /// [`ConfigError::UnknownMethod`] before anything is applied, or [`ConfigError::Apply`].
    pub fn apply<C>(&self, registry: &Registry<C>, ctx: &C) -> Result<ConfigPlan, ConfigError> {
        let plan = self.plan(|m| registry.has_method(m))?;
        for call in &plan.ignored {
            tracing::warn!(
                subsystem = %call.subsystem,
                method = %call.method,
                "config: SPDK-only method ignored"
            );
        }
        for call in &plan.apply {
            registry
                .call(ctx, &call.method, call.params.clone())
                .map_err(|error| ConfigError::Apply {
                    subsystem: call.subsystem.clone(),
                    index: call.index,
                    method: call.method.clone(),
                    error,
                })?;
        }
        Ok(plan)
    }

    /// Adds a subsystem with an empty config if it is not there yet (kept in
    /// [`SUBSYSTEM_ORDER`]).
    pub fn ensure_subsystem(&mut self, subsystem: &str) -> &mut SubsystemConfig {
        let pos = match self
            .subsystems
            .iter()
            .position(|s| s.subsystem == subsystem)
        {
            Some(pos) => pos,
            None => {
                let r = rank(subsystem);
                let at = self
                    .subsystems
                    .iter()
                    .position(|s| rank(&s.subsystem) > r)
                    .unwrap_or(self.subsystems.len());
                self.subsystems.insert(
                    at,
                    SubsystemConfig {
                        subsystem: subsystem.to_owned(),
                        config: Some(Vec::new()),
                    },
                );
                at
            }
        };
        match self.subsystems.get_mut(pos) {
            Some(s) => s,
            None => unreachable!("position {pos} was just found or inserted"),
        }
    }

    /// Appends a call to `subsystem` (created if needed): how `save_config` builds the
    /// document from the live state.
    pub fn push(&mut self, subsystem: &str, method: &str, params: Option<Value>) {
        let sub = self.ensure_subsystem(subsystem);
        sub.config.get_or_insert_with(Vec::new).push(MethodCall {
            method: method.to_owned(),
            params,
        });
    }

    /// The result of `framework_get_subsystems`: `[{"subsystem": .., "depends_on": [..]}]`,
    /// each subsystem depending on those before it in [`SUBSYSTEM_ORDER`] that are present.
    #[must_use]
    pub fn subsystems_json(&self) -> Value {
        let mut seen: Vec<Value> = Vec::new();
        let mut out = Vec::new();
        for sub in &self.subsystems {
            let mut m = Map::new();
            m.insert("subsystem".to_owned(), Value::String(sub.subsystem.clone()));
            m.insert("depends_on".to_owned(), Value::Array(seen.clone()));
            out.push(Value::Object(m));
            seen.push(Value::String(sub.subsystem.clone()));
        }
        Value::Array(out)
    }

    /// The result of `framework_get_config {"name": subsystem}`: its config array (or `null`),
    /// `None` if there is no such subsystem.
    #[must_use]
    pub fn subsystem_json(&self, subsystem: &str) -> Option<Value> {
        let sub = self.subsystems.iter().find(|s| s.subsystem == subsystem)?;
        Some(serde_json::to_value(&sub.config).unwrap_or(Value::Null))
    }

    /// The document as pretty JSON (2-space indent, as `rpc.py save_config`).
    ///
    /// # Errors
    /// Never in practice (every value is already JSON).
    pub fn to_json_pretty(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }
}
