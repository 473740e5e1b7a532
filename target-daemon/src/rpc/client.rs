//! A blocking JSON-RPC client over a Unix socket, framed like SPDK's `rpc.py`.
//!
//! Like `JSONRPCClient` in `python/spdk/rpc/client.py`: each request carries
//! `"jsonrpc": "2.0"`, a method and an increasing integer id; `params` is omitted when empty;
//! the request is written without a trailing newline and the response is the next complete
//! JSON value on the stream (leading whitespace skipped).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::RpcError;
use super::framing::{DeframeError, Deframer};

/// Largest response the client accepts (`bdev_get_bdevs` on many bdevs is large).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No server at the path.
    #[error("cannot connect to {path}: {source} (is shoald running?)")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Reading or writing the socket failed (including a timeout).
    #[error("RPC connection: {0}")]
    Io(#[from] io::Error),
    /// The server closed the connection before answering.
    #[error("the server closed the connection")]
    Closed,
    /// The server's bytes are not a JSON-RPC response to our request.
    #[error("malformed response: {0}")]
    Protocol(String),
    /// The server answered with a JSON-RPC error.
    #[error("{0}")]
    Rpc(RpcError),
}

/// A connection to a JSON-RPC server.
#[derive(Debug)]
pub struct RpcClient {
    stream: UnixStream,
    deframer: Deframer,
    next_id: u64,
}

impl RpcClient {
    /// Connects to the server at `path`.
    ///
    /// # Errors
    /// [`ClientError::Connect`] if nothing listens there.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            stream,
            deframer: Deframer::new(DEFAULT_MAX_RESPONSE_BYTES),
            next_id: 0,
        })
    }

    /// Sets the read timeout for responses (`None`: wait forever; `rpc.py` uses 60 s).
    ///
    /// # Errors
    /// If the socket option cannot be set.
    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.stream.set_read_timeout(timeout)?;
        Ok(())
    }

    fn request(&mut self, method: &str, params: Option<Value>, with_id: bool) -> (Value, u64) {
        let mut req = Map::new();
        req.insert("jsonrpc".to_owned(), Value::String("2.0".to_owned()));
        req.insert("method".to_owned(), Value::String(method.to_owned()));
        self.next_id = self.next_id.wrapping_add(1);
        if with_id {
            req.insert("id".to_owned(), Value::from(self.next_id));
        }
        match params {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) if m.is_empty() => {}
            Some(p) => {
                req.insert("params".to_owned(), p);
            }
        }
        (Value::Object(req), self.next_id)
    }

    /// Calls `method` and returns its result.
    ///
    /// # Errors
    /// [`ClientError::Rpc`] for an error response, or a transport/protocol error.
    pub fn call(&mut self, method: &str, params: Option<Value>) -> Result<Value, ClientError> {
        let (req, id) = self.request(method, params, true);
        self.send_value(&req)?;
        let resp = self.read_response()?;
        let Value::Object(mut resp) = resp else {
            return Err(ClientError::Protocol(
                "response is not an object".to_owned(),
            ));
        };
        if resp.get("id") != Some(&Value::from(id)) {
            return Err(ClientError::Protocol(format!(
                "response id {:?} does not match request id {id}",
                resp.get("id")
            )));
        }
        if let Some(err) = resp.remove("error") {
            let err: RpcError = serde_json::from_value(err)
                .map_err(|e| ClientError::Protocol(format!("bad error object: {e}")))?;
            return Err(ClientError::Rpc(err));
        }
        resp.remove("result").ok_or_else(|| {
            ClientError::Protocol("response has neither result nor error".to_owned())
        })
    }

    /// Calls `method` with serialisable params and decodes the result.
    ///
    /// # Errors
    /// As [`RpcClient::call`], or [`ClientError::Protocol`] if the result does not decode.
    pub fn call_typed<P: Serialize, R: DeserializeOwned>(
        &mut self,
        method: &str,
        params: &P,
    ) -> Result<R, ClientError> {
        let params = serde_json::to_value(params)
            .map_err(|e| ClientError::Protocol(format!("cannot encode params: {e}")))?;
        let result = self.call(method, Some(params))?;
        serde_json::from_value(result)
            .map_err(|e| ClientError::Protocol(format!("unexpected result: {e}")))
    }

    /// Sends a notification (no `id`: the server does not answer).
    ///
    /// # Errors
    /// If the write fails.
    pub fn notify(&mut self, method: &str, params: Option<Value>) -> Result<(), ClientError> {
        let (req, _) = self.request(method, params, false);
        self.send_value(&req)
    }

    fn send_value(&mut self, value: &Value) -> Result<(), ClientError> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| ClientError::Protocol(format!("cannot encode request: {e}")))?;
        self.send_raw(&bytes)
    }

    /// Writes raw bytes (for tests of the server's framing).
    ///
    /// # Errors
    /// If the write fails.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// Reads the next JSON value the server sends.
    ///
    /// # Errors
    /// [`ClientError::Closed`] at end of stream, [`ClientError::Protocol`] for bytes that
    /// are not JSON, or an I/O error (including a read timeout).
    pub fn read_response(&mut self) -> Result<Value, ClientError> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.deframer.next_value() {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e @ (DeframeError::Syntax(_) | DeframeError::TooLarge { .. })) => {
                    return Err(ClientError::Protocol(e.to_string()));
                }
            }
            let n = match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            self.deframer.push(chunk.get(..n).unwrap_or_default());
        }
    }

    /// Shuts the write side down (the server sees end of stream after pending requests).
    ///
    /// # Errors
    /// If the socket call fails.
    pub fn close_write(&self) -> Result<(), ClientError> {
        self.stream.shutdown(std::net::Shutdown::Write)?;
        Ok(())
    }
}
