//! The method registry: typed handlers, JSON-RPC 2.0 request semantics, RPC states.
//!
//! A handler is a closure over the daemon context `C` and a typed params struct:
//!
//! ```
//! use shoal_target::rpc::{Registry, RpcError};
//! use shoal_target::rpc::params::bdev::BdevMallocCreate;
//!
//! struct Daemon;
//! let mut registry = Registry::<Daemon>::new();
//! registry.register("bdev_malloc_create", |_daemon: &Daemon, p: BdevMallocCreate| {
//!     let name = p.name.unwrap_or_else(|| "Malloc0".to_owned());
//!     Ok(serde_json::Value::String(name))
//! });
//! let answer = registry.call(&Daemon, "bdev_malloc_create",
//!     Some(serde_json::json!({"num_blocks": 8, "block_size": 512})));
//! assert_eq!(answer, Ok(serde_json::json!("Malloc0")));
//! ```
//!
//! The registry decodes `params` with serde (absent or `null` params decode as `{}`, which is
//! what `rpc.py` means when it omits them), answers `-32602` naming the field at fault, logs a
//! warning naming the tuning knobs that were accepted but have no effect in Shoal
//! ([`RpcParams::ignored_knobs`]), and turns a handler panic into `-32603`.
//!
//! Like SPDK (`lib/rpc/rpc.c`) each method carries a [`StateMask`]: `Startup` methods run before
//! `framework_start_init`, `Runtime` ones after. `shoald` starts in [`RpcState::Runtime`] unless
//! the lead chooses otherwise through [`Registry::state`].

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::RpcError;
use super::params::misc::{RpcGetMethods, SpdkGetVersion};

/// A params struct: its tuning knobs that Shoal accepts for compatibility but ignores.
pub trait RpcParams {
    /// Names of the fields present in this request that have no effect in Shoal. The registry
    /// logs a warning naming them; it is empty for most requests.
    fn ignored_knobs(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// Parameters present in this request that ask for something Shoal does not implement
    /// and that it must not drop, because serving the request without them would weaken what
    /// was asked (TLS, host authentication, access control): each as `(name, what it asks
    /// for)`. The registry refuses such a request (`-95`, naming them) before the handler
    /// runs, over RPC and from a configuration file alike.
    fn refused(&self) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }
}

/// The error for a request with [`RpcParams::refused`] parameters, or `None`.
#[must_use]
pub fn refusal(method: &str, refused: &[(&'static str, &'static str)]) -> Option<RpcError> {
    let parts: Vec<String> = refused
        .iter()
        .map(|(name, what)| format!("parameter `{name}` ({what})"))
        .collect();
    (!parts.is_empty()).then(|| {
        RpcError::not_supported(format!(
            "{method}: {} not supported by Shoal; refused rather than ignored, which would \
             serve without what was asked",
            parts.join(" and ") + if parts.len() == 1 { " is" } else { " are" }
        ))
    })
}

impl RpcParams for Value {}
impl RpcParams for Map<String, Value> {}

/// The RPC server's state, as in SPDK (`SPDK_RPC_STARTUP` / `SPDK_RPC_RUNTIME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcState {
    /// Before `framework_start_init`: only startup methods are allowed.
    Startup,
    /// After initialisation: runtime methods are allowed.
    Runtime,
}

/// The states in which a method may be called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateMask(u8);

impl StateMask {
    /// Only before `framework_start_init`.
    pub const STARTUP: Self = Self(1);
    /// Only after initialisation (SPDK's default for nearly all methods).
    pub const RUNTIME: Self = Self(2);
    /// In both states.
    pub const ANY: Self = Self(3);

    /// True if a method with this mask may run in `state`.
    #[must_use]
    pub fn allows(self, state: RpcState) -> bool {
        let bit = match state {
            RpcState::Startup => Self::STARTUP.0,
            RpcState::Runtime => Self::RUNTIME.0,
        };
        self.0 & bit != 0
    }
}

/// A shared, thread-safe cell holding the current [`RpcState`]; clones see the same state.
#[derive(Debug, Clone)]
pub struct StateCell(Arc<AtomicU8>);

impl StateCell {
    fn new(state: RpcState) -> Self {
        let cell = Self(Arc::new(AtomicU8::new(0)));
        cell.set(state);
        cell
    }

    /// The current state.
    #[must_use]
    pub fn get(&self) -> RpcState {
        if self.0.load(Ordering::Acquire) == 0 {
            RpcState::Startup
        } else {
            RpcState::Runtime
        }
    }

    /// Moves to `state` (the `framework_start_init` handler sets [`RpcState::Runtime`]).
    pub fn set(&self, state: RpcState) {
        let v = match state {
            RpcState::Startup => 0,
            RpcState::Runtime => 1,
        };
        self.0.store(v, Ordering::Release);
    }
}

type Handler<C> = Box<dyn Fn(&C, &str, Value) -> Result<Value, RpcError> + Send + Sync>;

enum Kind<C> {
    Handler(Handler<C>),
    /// The built-in `rpc_get_methods`, which needs the registry itself.
    GetMethods,
    /// A deprecated alias of another method.
    Alias(String),
}

struct Entry<C> {
    kind: Kind<C>,
    mask: StateMask,
}

/// The method table; `C` is the daemon context handed to every handler.
pub struct Registry<C> {
    methods: BTreeMap<String, Entry<C>>,
    state: StateCell,
}

impl<C> Default for Registry<C> {
    fn default() -> Self {
        Self::new()
    }
}

/// Decodes a method's params into `P`, naming the field at fault on error (`-32602`).
///
/// `None` and `null` decode as `{}`; a non-object (positional array) is refused.
///
/// # Errors
/// `-32602` with a message such as ``bdev_malloc_create: missing field `num_blocks` `` or
/// ``bdev_malloc_create: invalid `block_size`: invalid type: string "4k", expected u32``.
pub fn decode_params<P: DeserializeOwned>(
    method: &str,
    params: Option<Value>,
) -> Result<P, RpcError> {
    let params = match params {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v,
        Some(Value::Array(_)) => {
            return Err(RpcError::invalid_params(format!(
                "{method}: params must be a JSON object (positional params are not supported)"
            )));
        }
        Some(_) => {
            return Err(RpcError::invalid_params(format!(
                "{method}: params must be a JSON object"
            )));
        }
    };
    serde_path_to_error::deserialize::<_, P>(params).map_err(|e| {
        let mut path = e.path().to_string();
        let inner = e.into_inner();
        if inner.to_string().starts_with("unknown field") {
            // The path ends with the unknown key itself; name the object holding it.
            path = path
                .rsplit_once('.')
                .map(|(p, _)| p.to_owned())
                .unwrap_or_default();
            if !path.is_empty() {
                return RpcError::invalid_params(format!("{method}: in `{path}`: {inner}"));
            }
        }
        if path.is_empty() || path == "." {
            RpcError::invalid_params(format!("{method}: {inner}"))
        } else {
            RpcError::invalid_params(format!("{method}: invalid `{path}`: {inner}"))
        }
    })
}

impl<C> Registry<C> {
    /// A registry holding the built-in methods `rpc_get_methods` and `spdk_get_version`, in
    /// state [`RpcState::Runtime`].
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Self {
            methods: BTreeMap::new(),
            state: StateCell::new(RpcState::Runtime),
        };
        registry.insert(
            "rpc_get_methods",
            Entry {
                kind: Kind::GetMethods,
                mask: StateMask::ANY,
            },
        );
        registry.register_in(
            "spdk_get_version",
            StateMask::ANY,
            |_ctx: &C, _p: SpdkGetVersion| Ok(SpdkGetVersion::shoal_version()),
        );
        registry
    }

    /// The RPC state cell; clone it into the context so `framework_start_init` can move the
    /// server to [`RpcState::Runtime`].
    #[must_use]
    pub fn state(&self) -> &StateCell {
        &self.state
    }

    fn insert(&mut self, name: &str, entry: Entry<C>) {
        assert!(
            !self.methods.contains_key(name),
            "RPC method `{name}` registered twice"
        );
        self.methods.insert(name.to_owned(), entry);
    }

    /// Registers a runtime method with typed params `P`.
    ///
    /// # Panics
    /// If `name` is already registered (a programming error at start-up).
    pub fn register<P, F>(&mut self, name: &str, handler: F) -> &mut Self
    where
        P: DeserializeOwned + RpcParams + 'static,
        F: Fn(&C, P) -> Result<Value, RpcError> + Send + Sync + 'static,
    {
        self.register_in(name, StateMask::RUNTIME, handler)
    }

    /// Registers a method allowed in the states of `mask`.
    ///
    /// # Panics
    /// If `name` is already registered.
    pub fn register_in<P, F>(&mut self, name: &str, mask: StateMask, handler: F) -> &mut Self
    where
        P: DeserializeOwned + RpcParams + 'static,
        F: Fn(&C, P) -> Result<Value, RpcError> + Send + Sync + 'static,
    {
        let erased: Handler<C> = Box::new(move |ctx: &C, method: &str, params: Value| {
            let params: P = decode_params(method, Some(params))?;
            if let Some(e) = refusal(method, &params.refused()) {
                return Err(e);
            }
            let knobs = params.ignored_knobs();
            if !knobs.is_empty() {
                tracing::warn!(
                    method,
                    ?knobs,
                    "accepted parameters that have no effect in Shoal"
                );
            }
            handler(ctx, params)
        });
        self.insert(
            name,
            Entry {
                kind: Kind::Handler(erased),
                mask,
            },
        );
        self
    }

    /// Registers `alias` as a deprecated alias of the registered method `target`.
    ///
    /// # Panics
    /// If `alias` is taken or `target` is not a registered, non-alias method.
    pub fn register_alias(&mut self, alias: &str, target: &str) -> &mut Self {
        let mask = match self.methods.get(target) {
            Some(Entry {
                kind: Kind::Handler(_) | Kind::GetMethods,
                mask,
            }) => *mask,
            _ => panic!("cannot alias `{alias}` to `{target}`: not a registered method"),
        };
        self.insert(
            alias,
            Entry {
                kind: Kind::Alias(target.to_owned()),
                mask,
            },
        );
        self
    }

    /// Registers SPDK housekeeping methods (see [`super::params::HOUSEKEEPING_METHODS`]) that
    /// Shoal accepts with any params, logs as ignored, and answers `true`.
    ///
    /// # Panics
    /// If one of `names` is already registered.
    pub fn register_ignored(&mut self, names: &[&'static str]) -> &mut Self {
        for &name in names {
            self.register_in(
                name,
                StateMask::ANY,
                move |_ctx: &C, p: Map<String, Value>| {
                    let refused = super::params::housekeeping_refused(name, &p);
                    if let Some(e) = refusal(name, &refused) {
                        return Err(e);
                    }
                    let keys: Vec<&String> = p.keys().collect();
                    tracing::warn!(?keys, "SPDK-only method accepted and ignored");
                    Ok(Value::Bool(true))
                },
            );
        }
        self
    }

    /// True if `name` is registered (method or alias).
    #[must_use]
    pub fn has_method(&self, name: &str) -> bool {
        self.methods.contains_key(name)
    }

    /// The registered method names, as `rpc_get_methods` lists them: sorted; only those
    /// callable now if `current`; aliases only if `include_aliases`.
    #[must_use]
    pub fn method_names(&self, current: bool, include_aliases: bool) -> Vec<String> {
        let state = self.state.get();
        self.methods
            .iter()
            .filter(|(_, e)| include_aliases || !matches!(e.kind, Kind::Alias(_)))
            .filter(|(_, e)| !current || e.mask.allows(state))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Calls `method` in-process (used for config files and by the server).
    ///
    /// # Errors
    /// `-32601` for an unknown method, `-1` if the state forbids it, `-32602` for bad params,
    /// `-32603` if the handler panicked, or whatever the handler answered.
    pub fn call(&self, ctx: &C, method: &str, params: Option<Value>) -> Result<Value, RpcError> {
        let mut entry = self
            .methods
            .get(method)
            .ok_or_else(|| RpcError::method_not_found(method))?;
        if let Kind::Alias(target) = &entry.kind {
            tracing::warn!(method, target = %target, "deprecated RPC alias used");
            entry = self
                .methods
                .get(target)
                .ok_or_else(|| RpcError::method_not_found(method))?;
        }
        let state = self.state.get();
        if !entry.mask.allows(state) {
            return Err(RpcError::invalid_state(match state {
                RpcState::Startup => {
                    "Method may only be called after framework is initialized using \
                     framework_start_init RPC."
                }
                RpcState::Runtime => {
                    "Method may only be called before framework is initialized. Use \
                     --wait-for-rpc command line parameter and then issue this RPC before \
                     the framework_start_init RPC."
                }
            }));
        }
        match &entry.kind {
            Kind::Handler(handler) => {
                let params = match params {
                    None | Some(Value::Null) => Value::Object(Map::new()),
                    Some(v @ Value::Object(_)) => v,
                    Some(other) => {
                        // Let decode_params phrase the error for arrays and scalars.
                        return decode_params::<Map<String, Value>>(method, Some(other))
                            .map(Value::Object);
                    }
                };
                catch_unwind(AssertUnwindSafe(|| handler(ctx, method, params))).unwrap_or_else(
                    |_| {
                        tracing::error!(method, "RPC handler panicked");
                        Err(RpcError::internal(format!("{method}: internal error")))
                    },
                )
            }
            Kind::GetMethods => {
                let p: RpcGetMethods = decode_params(method, params)?;
                let names = self.method_names(p.current, p.include_aliases);
                Ok(Value::Array(names.into_iter().map(Value::String).collect()))
            }
            Kind::Alias(_) => Err(RpcError::internal(format!("{method}: alias of an alias"))),
        }
    }

    /// Handles one decoded JSON-RPC message (a request object or a batch array) and returns
    /// the response to send, or `None` when nothing is to be sent (notifications).
    ///
    /// Semantics (JSON-RPC 2.0 and SPDK's `lib/jsonrpc/jsonrpc_server.c`): `jsonrpc` must be
    /// `"2.0"` when present; `id` must be a string, number or null and is echoed; a valid
    /// request without `id` is a notification and gets no response, not even an error (an
    /// invalid one is answered with `-32600` and a null `id`); members other
    /// than `jsonrpc`/`method`/`params`/`id` make the request invalid (`-32600`); a batch array
    /// yields an array of the non-notification responses, and an empty batch is `-32600`.
    pub fn handle_message(&self, ctx: &C, message: Value) -> Option<Value> {
        match message {
            Value::Array(items) => {
                if items.is_empty() {
                    return Some(error_response(
                        Value::Null,
                        &RpcError::invalid_request("empty batch"),
                    ));
                }
                let responses: Vec<Value> = items
                    .into_iter()
                    .filter_map(|item| self.handle_single(ctx, item))
                    .collect();
                if responses.is_empty() {
                    None
                } else {
                    Some(Value::Array(responses))
                }
            }
            other => self.handle_single(ctx, other),
        }
    }

    fn handle_single(&self, ctx: &C, message: Value) -> Option<Value> {
        let Value::Object(mut obj) = message else {
            return Some(error_response(
                Value::Null,
                &RpcError::invalid_request("a request must be a JSON object"),
            ));
        };
        let id = obj.remove("id");
        let notification = id.is_none();
        let id = id.unwrap_or(Value::Null);
        if !matches!(id, Value::String(_) | Value::Number(_) | Value::Null) {
            return Some(error_response(
                Value::Null,
                &RpcError::invalid_request("`id` must be a string, a number or null"),
            ));
        }
        let (method, params) = match parse_request(obj) {
            Ok(request) => request,
            // Not a valid request, hence not a notification either: always answered.
            Err(e) => return Some(error_response(id, &e)),
        };
        tracing::debug!(method = %method, "RPC call");
        let outcome = self.call(ctx, &method, params);
        if notification {
            if let Err(e) = outcome {
                tracing::debug!(error = %e, "error in a notification (not answered)");
            }
            return None;
        }
        Some(match outcome {
            Ok(result) => result_response(id, result),
            Err(e) => error_response(id, &e),
        })
    }
}

/// Checks the members of a request object (without `id`); returns method and params.
fn parse_request(mut obj: Map<String, Value>) -> Result<(String, Option<Value>), RpcError> {
    match obj.remove("jsonrpc") {
        None => {}
        Some(Value::String(v)) if v == "2.0" => {}
        Some(_) => return Err(RpcError::invalid_request("`jsonrpc` must be \"2.0\"")),
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        Some(_) => return Err(RpcError::invalid_request("`method` must be a string")),
        None => return Err(RpcError::invalid_request("missing `method`")),
    };
    let params = obj.remove("params");
    if let Some(p) = &params
        && !matches!(p, Value::Object(_) | Value::Array(_) | Value::Null)
    {
        return Err(RpcError::invalid_request(
            "`params` must be an object or an array",
        ));
    }
    if let Some(unknown) = obj.keys().next() {
        return Err(RpcError::invalid_request(format!(
            "unknown member `{unknown}`"
        )));
    }
    Ok((method, params))
}

/// `{"jsonrpc":"2.0","id":id,"result":result}`.
#[must_use]
pub fn result_response(id: Value, result: Value) -> Value {
    let mut m = Map::new();
    m.insert("jsonrpc".to_owned(), Value::String("2.0".to_owned()));
    m.insert("id".to_owned(), id);
    m.insert("result".to_owned(), result);
    Value::Object(m)
}

/// `{"jsonrpc":"2.0","id":id,"error":{"code":..,"message":..}}`.
#[must_use]
pub fn error_response(id: Value, error: &RpcError) -> Value {
    let mut e = Map::new();
    e.insert("code".to_owned(), Value::from(error.code));
    e.insert("message".to_owned(), Value::String(error.message.clone()));
    let mut m = Map::new();
    m.insert("jsonrpc".to_owned(), Value::String("2.0".to_owned()));
    m.insert("id".to_owned(), id);
    m.insert("error".to_owned(), Value::Object(e));
    Value::Object(m)
}
