//! An async JSON-RPC client for a node's `shoald` over TCP (`shoald --rpc-listen`), with the
//! `rpc_auth` step when the cluster has a token.
//!
//! Framing as `shoald` and SPDK's `rpc.py` use it: bare JSON values on the stream. A node is
//! a peer, not a friend: a response is bounded ([`MAX_RESPONSE_BYTES`]), must carry our id,
//! and every call has a deadline, so a node that answers nonsense or nothing costs a typed
//! error, never a hang or a panic.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response accepted.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Why a node call failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeRpcError {
    /// Connecting, reading or writing failed.
    #[error("{addr}: {source}")]
    Io {
        /// The node's endpoint.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("{addr}: no answer within {timeout:?}")]
    Timeout {
        /// The node's endpoint.
        addr: SocketAddr,
        /// The deadline.
        timeout: Duration,
    },
    /// The node refused our token (or wanted one we do not have).
    #[error("{addr}: authentication refused: {message}")]
    Auth {
        /// The node's endpoint.
        addr: SocketAddr,
        /// The node's message.
        message: String,
    },
    /// The node answered with a JSON-RPC error.
    #[error("{addr}: {method}: error {code}: {message}")]
    Rpc {
        /// The node's endpoint.
        addr: SocketAddr,
        /// The method called.
        method: String,
        /// The error code.
        code: i64,
        /// The message.
        message: String,
    },
    /// The node's bytes are not a JSON-RPC answer to our request.
    #[error("{addr}: malformed answer: {detail}")]
    Protocol {
        /// The node's endpoint.
        addr: SocketAddr,
        /// What is wrong.
        detail: String,
    },
}

/// `shoald`'s code for a failed authentication (`shoal_target::rpc::error::AUTH_FAILED`).
pub const AUTH_FAILED: i64 = -32001;

/// A connection to one node's `shoald`.
#[derive(Debug)]
pub struct NodeClient {
    addr: SocketAddr,
    stream: TcpStream,
    buf: Vec<u8>,
    next_id: u64,
    timeout: Duration,
}

impl NodeClient {
    /// Connects to `addr` and, with a token, authenticates; every step within `timeout`.
    ///
    /// # Errors
    /// [`NodeRpcError`]; [`NodeRpcError::Auth`] if the node refuses the token.
    pub async fn connect(
        addr: SocketAddr,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, NodeRpcError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| NodeRpcError::Timeout { addr, timeout })?
            .map_err(|source| NodeRpcError::Io { addr, source })?;
        let _ = stream.set_nodelay(true);
        let mut client = Self {
            addr,
            stream,
            buf: Vec::new(),
            next_id: 0,
            timeout,
        };
        if let Some(token) = token {
            match client.call("rpc_auth", json!({ "token": token })).await {
                Ok(Value::Bool(true)) => {}
                Ok(other) => {
                    return Err(NodeRpcError::Protocol {
                        addr,
                        detail: format!("rpc_auth answered {other}"),
                    });
                }
                Err(NodeRpcError::Rpc { code, message, .. }) if code == AUTH_FAILED => {
                    return Err(NodeRpcError::Auth { addr, message });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(client)
    }

    /// The node's endpoint.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Calls `method` with `params` (`null` for none) and returns its result.
    ///
    /// # Errors
    /// [`NodeRpcError`].
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, NodeRpcError> {
        let addr = self.addr;
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.call_inner(method, params))
            .await
            .map_err(|_| NodeRpcError::Timeout { addr, timeout })?
    }

    async fn call_inner(&mut self, method: &str, params: Value) -> Result<Value, NodeRpcError> {
        let addr = self.addr;
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let mut req = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if !params.is_null() {
            req["params"] = params;
        }
        let bytes = serde_json::to_vec(&req).map_err(|e| NodeRpcError::Protocol {
            addr,
            detail: e.to_string(),
        })?;
        self.stream
            .write_all(&bytes)
            .await
            .map_err(|source| NodeRpcError::Io { addr, source })?;
        let resp = self.read_value().await?;
        if resp.get("id") != Some(&Value::from(id)) {
            if let Some(err) = resp.get("error") {
                // shoald answers a refused authentication with a null id.
                return Err(rpc_error(addr, method, err));
            }
            return Err(NodeRpcError::Protocol {
                addr,
                detail: format!("answer id {:?}, expected {id}", resp.get("id")),
            });
        }
        if let Some(err) = resp.get("error") {
            return Err(rpc_error(addr, method, err));
        }
        resp.get("result")
            .cloned()
            .ok_or_else(|| NodeRpcError::Protocol {
                addr,
                detail: "neither result nor error".to_owned(),
            })
    }

    /// The next JSON value on the stream.
    async fn read_value(&mut self) -> Result<Value, NodeRpcError> {
        let addr = self.addr;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
            match it.next() {
                Some(Ok(v)) => {
                    let used = it.byte_offset();
                    self.buf.drain(..used);
                    return Ok(v);
                }
                Some(Err(e)) if !e.is_eof() => {
                    return Err(NodeRpcError::Protocol {
                        addr,
                        detail: e.to_string(),
                    });
                }
                _ => {}
            }
            if self.buf.len() > MAX_RESPONSE_BYTES {
                return Err(NodeRpcError::Protocol {
                    addr,
                    detail: format!("answer larger than {MAX_RESPONSE_BYTES} bytes"),
                });
            }
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|source| NodeRpcError::Io { addr, source })?;
            if n == 0 {
                return Err(NodeRpcError::Io {
                    addr,
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                });
            }
            self.buf
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
    }
}

fn rpc_error(addr: SocketAddr, method: &str, err: &Value) -> NodeRpcError {
    NodeRpcError::Rpc {
        addr,
        method: method.to_owned(),
        code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
        message: err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("(no message)")
            .to_owned(),
    }
}

/// One call on a fresh connection (for probes and rare operations).
///
/// # Errors
/// [`NodeRpcError`].
pub async fn call_once(
    addr: SocketAddr,
    token: Option<&str>,
    timeout: Duration,
    method: &str,
    params: Value,
) -> Result<Value, NodeRpcError> {
    let mut c = NodeClient::connect(addr, token, timeout).await?;
    c.call(method, params).await
}

/// Reads a token file (trailing whitespace removed), as `shoald --rpc-token-file` does.
///
/// # Errors
/// If the file cannot be read or is empty.
pub fn read_token(path: &std::path::Path) -> std::io::Result<String> {
    let t = std::fs::read_to_string(path)?.trim_end().to_owned();
    if t.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(t)
}
