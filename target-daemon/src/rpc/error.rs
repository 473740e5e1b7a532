//! JSON-RPC error objects and the codes Shoal answers with.
//!
//! Two families of codes reach the wire, exactly as in SPDK:
//!
//! * the JSON-RPC 2.0 reserved codes (`-32700` .. `-32603`), used by the transport and the
//!   dispatcher (framing lost, malformed request, unknown method, bad params), and
//! * negated `errno` values chosen by a method handler. SPDK's handlers answer with
//!   `spdk_jsonrpc_send_error_response(request, rc, spdk_strerror(-rc))`, so for instance
//!   `bdev_malloc_create` with a name already taken answers `-17` ("File exists"),
//!   `bdev_*_delete` of a missing bdev answers `-19` ("No such device") and bad argument values
//!   answer `-22` ("Invalid argument"). Tools built on SPDK (CSI drivers, operators) test these
//!   numbers, so handlers should use [`RpcError::already_exists`], [`RpcError::no_such_device`]
//!   and [`RpcError::invalid_argument`] for those situations.
//!
//! What SPDK itself returns for the methods Shoal mirrors (from `module/bdev/*/*_rpc.c` and
//! `lib/nvmf/nvmf_rpc.c`):
//!
//! | situation | SPDK code | message |
//! |---|---|---|
//! | bdev name already taken (`bdev_*_create`) | `-17` | `File exists` |
//! | bdev to delete not found (`bdev_*_delete`, `bdev_delay_delete`) | `-19` | `No such device` |
//! | `nvmf_get_subsystems` with an unknown NQN | `-19` | `No such device` |
//! | NQN not found in the other `nvmf_subsystem_*` methods | `-32602` | `Unable to find subsystem with NQN ...` |
//! | `nvmf_create_subsystem` with an NQN already used | `-32603` | `Unable to create subsystem ...` |
//! | `nvmf_create_transport` twice for one type | `-32603` | `Transport type 'TCP' already exists` |
//! | method not allowed in the current RPC state | `-1` | `Method may only be called ...` |

use std::fmt;

use serde::{Deserialize, Serialize};

/// JSON-RPC 2.0: invalid JSON was received; the stream cannot be resynchronised.
pub const PARSE_ERROR: i32 = -32700;
/// JSON-RPC 2.0: the JSON sent is not a valid request object.
pub const INVALID_REQUEST: i32 = -32600;
/// JSON-RPC 2.0: the method does not exist.
pub const METHOD_NOT_FOUND: i32 = -32601;
/// JSON-RPC 2.0: invalid method parameters.
pub const INVALID_PARAMS: i32 = -32602;
/// JSON-RPC 2.0: internal error.
pub const INTERNAL_ERROR: i32 = -32603;
/// SPDK's custom code: the method exists but is not allowed in the current RPC state
/// (`SPDK_JSONRPC_ERROR_INVALID_STATE` in `include/spdk/jsonrpc.h`).
pub const INVALID_STATE: i32 = -1;

/// Shoal's code (in JSON-RPC's range for server errors): a TCP client did not authenticate
/// (see [`super::tcp`]). SPDK has no authentication and so no code for it.
pub const AUTH_FAILED: i32 = -32001;

/// `EPERM`.
pub const EPERM: i32 = 1;
/// `ENOENT`.
pub const ENOENT: i32 = 2;
/// `EIO`.
pub const EIO: i32 = 5;
/// `ENOMEM`.
pub const ENOMEM: i32 = 12;
/// `EBUSY`.
pub const EBUSY: i32 = 16;
/// `EEXIST`.
pub const EEXIST: i32 = 17;
/// `ENODEV`.
pub const ENODEV: i32 = 19;
/// `EINVAL`.
pub const EINVAL: i32 = 22;
/// `ENOSPC`.
pub const ENOSPC: i32 = 28;
/// `ENOTSUP` (same value as `EOPNOTSUPP` on Linux).
pub const ENOTSUP: i32 = 95;
/// `ETIMEDOUT`.
pub const ETIMEDOUT: i32 = 110;

/// The `error` member of a JSON-RPC response: a code and a human-readable message.
///
/// This is the only error type that crosses the RPC boundary; domain errors (bdev, nvmf) are
/// mapped to it by the handlers, never the other way round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(deny_unknown_fields)]
pub struct RpcError {
    /// The error code (JSON-RPC reserved code, [`INVALID_STATE`], or a negated errno).
    pub code: i32,
    /// A message for the operator; `rpc.py` prints it verbatim.
    pub message: String,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

/// The text `strerror(3)` gives for the errno values handlers commonly use (what SPDK's
/// `spdk_strerror` puts in its messages).
#[must_use]
pub fn errno_text(errno: i32) -> &'static str {
    match errno {
        EPERM => "Operation not permitted",
        ENOENT => "No such file or directory",
        EIO => "Input/output error",
        ENOMEM => "Cannot allocate memory",
        EBUSY => "Device or resource busy",
        EEXIST => "File exists",
        ENODEV => "No such device",
        EINVAL => "Invalid argument",
        ENOSPC => "No space left on device",
        ENOTSUP => "Operation not supported",
        ETIMEDOUT => "Connection timed out",
        _ => "Unknown error",
    }
}

impl RpcError {
    /// An error with an arbitrary code and message.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `-32700`: the bytes on the connection are not JSON.
    pub fn parse_error(detail: impl fmt::Display) -> Self {
        Self::new(PARSE_ERROR, format!("Parse error: {detail}"))
    }

    /// `-32600`: the JSON value is not a valid JSON-RPC 2.0 request.
    pub fn invalid_request(detail: impl fmt::Display) -> Self {
        Self::new(INVALID_REQUEST, format!("Invalid request: {detail}"))
    }

    /// [`AUTH_FAILED`]: a TCP client sent something other than a valid `rpc_auth` first.
    pub fn auth_failed(detail: impl fmt::Display) -> Self {
        Self::new(AUTH_FAILED, format!("Authentication failed: {detail}"))
    }

    /// `-32601`: no method of that name is registered.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(METHOD_NOT_FOUND, format!("Method not found: {method}"))
    }

    /// `-32602`: the params do not fit the method (missing/unknown field, bad type or value).
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }

    /// `-32603`: the handler failed for a reason that is not the caller's fault.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(INTERNAL_ERROR, message)
    }

    /// `-1`: the method exists but not in the current RPC state (SPDK's wording).
    pub fn invalid_state(message: impl Into<String>) -> Self {
        Self::new(INVALID_STATE, message)
    }

    /// A negated errno code, with `strerror` text followed by `detail` when it is not empty.
    pub fn errno(errno: i32, detail: impl fmt::Display) -> Self {
        let detail = detail.to_string();
        let text = errno_text(errno);
        let message = if detail.is_empty() {
            text.to_owned()
        } else {
            format!("{text}: {detail}")
        };
        Self::new(errno.saturating_neg(), message)
    }

    /// `-17` (`EEXIST`): the object to create already exists.
    pub fn already_exists(detail: impl fmt::Display) -> Self {
        Self::errno(EEXIST, detail)
    }

    /// `-19` (`ENODEV`): the object named does not exist.
    pub fn no_such_device(detail: impl fmt::Display) -> Self {
        Self::errno(ENODEV, detail)
    }

    /// `-22` (`EINVAL`): a parameter value is out of range or inconsistent.
    pub fn invalid_argument(detail: impl fmt::Display) -> Self {
        Self::errno(EINVAL, detail)
    }

    /// `-16` (`EBUSY`): the object is in use.
    pub fn busy(detail: impl fmt::Display) -> Self {
        Self::errno(EBUSY, detail)
    }

    /// `-95` (`ENOTSUP`): Shoal does not implement what was asked.
    pub fn not_supported(detail: impl fmt::Display) -> Self {
        Self::errno(ENOTSUP, detail)
    }
}

impl From<serde_json::Error> for RpcError {
    /// Serialising a handler's result failed: an internal error.
    fn from(e: serde_json::Error) -> Self {
        Self::internal(format!("cannot encode result: {e}"))
    }
}
