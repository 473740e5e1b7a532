//! Incremental, bounded framing of concatenated JSON values on a byte stream.
//!
//! SPDK's JSON-RPC has no framing of its own: `rpc.py` writes `json.dumps(request, indent=2)`
//! (several requests joined by `"\n"`, or one batch array) and reads responses by
//! `json.JSONDecoder().raw_decode` on an accumulating buffer, and the SPDK server
//! (`lib/jsonrpc/jsonrpc_server_tcp.c`) runs `spdk_json_parse` on whatever has been received,
//! waiting for more bytes when the value is incomplete. A value therefore ends where its JSON
//! syntax ends; whitespace (including the `"\n"` SPDK appends to each response) separates values.
//!
//! [`Deframer`] does the same in O(n): a small scanner follows string/escape state and bracket
//! depth over each byte once, across reads, and only a complete value is handed to `serde_json`.
//! A value larger than the configured limit is refused before it is buffered further, so a peer
//! cannot make the daemon allocate without bound. After an error the stream cannot be
//! resynchronised (there is no resync point in streaming JSON) and the caller must close it.

use serde_json::Value;

/// Why the byte stream cannot yield another JSON value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeframeError {
    /// The bytes are not JSON.
    #[error("{0}")]
    Syntax(String),
    /// A single value grew past the limit.
    #[error("JSON value exceeds the {limit}-byte limit")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
}

/// Where the scanner stands inside the value being received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between values: skipping whitespace.
    Idle,
    /// Inside an object or array.
    Container {
        depth: usize,
        in_string: bool,
        escaped: bool,
    },
    /// Inside a top-level string.
    TopString { escaped: bool },
    /// Inside a top-level number or literal (`true`, `null`, garbage...).
    Scalar,
}

/// Splits a byte stream into complete JSON values; see the module documentation.
#[derive(Debug)]
pub struct Deframer {
    buf: Vec<u8>,
    /// Index of the next byte to scan.
    pos: usize,
    /// Index of the first byte of the value being scanned (meaningful when not `Idle`).
    start: usize,
    phase: Phase,
    max_value_bytes: usize,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn is_delimiter(b: u8) -> bool {
    is_ws(b) || matches!(b, b'{' | b'}' | b'[' | b']' | b'"' | b',' | b':')
}

impl Deframer {
    /// A deframer refusing values longer than `max_value_bytes`.
    #[must_use]
    pub fn new(max_value_bytes: usize) -> Self {
        Self {
            buf: Vec::new(),
            pos: 0,
            start: 0,
            phase: Phase::Idle,
            max_value_bytes,
        }
    }

    /// Changes the size limit, e.g. once a TCP client has authenticated (bytes already
    /// received are kept).
    pub fn set_max_value_bytes(&mut self, max_value_bytes: usize) {
        self.max_value_bytes = max_value_bytes;
    }

    /// Appends received bytes. Call [`Deframer::next_value`] until it returns `Ok(None)`.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// True when part of a value has been received but not its end.
    #[must_use]
    pub fn has_partial_value(&self) -> bool {
        self.phase != Phase::Idle
            || self
                .buf
                .get(self.pos..)
                .is_some_and(|rest| !rest.is_empty())
    }

    /// The next complete value, `Ok(None)` if more bytes are needed.
    ///
    /// # Errors
    /// [`DeframeError::Syntax`] if the bytes are not JSON, [`DeframeError::TooLarge`] if the
    /// value being received exceeds the limit. The deframer must not be used after an error.
    pub fn next_value(&mut self) -> Result<Option<Value>, DeframeError> {
        while let Some(&b) = self.buf.get(self.pos) {
            let end = match self.step(b)? {
                Some(end) => end,
                None => {
                    self.pos = self.pos.saturating_add(1);
                    continue;
                }
            };
            let value = self.take_value(end)?;
            return Ok(Some(value));
        }
        // Out of bytes: forget leading whitespace, and bound the partial value.
        if self.phase == Phase::Idle {
            self.buf.clear();
            self.pos = 0;
            self.start = 0;
        } else if self.pos.saturating_sub(self.start) > self.max_value_bytes {
            return Err(DeframeError::TooLarge {
                limit: self.max_value_bytes,
            });
        }
        Ok(None)
    }

    /// Scans byte `b` at `self.pos`; returns the end (exclusive) of a completed value.
    fn step(&mut self, b: u8) -> Result<Option<usize>, DeframeError> {
        let here = self.pos;
        let after = here.saturating_add(1);
        match &mut self.phase {
            Phase::Idle => {
                if is_ws(b) {
                    return Ok(None);
                }
                self.start = here;
                self.phase = match b {
                    b'{' | b'[' => Phase::Container {
                        depth: 1,
                        in_string: false,
                        escaped: false,
                    },
                    b'"' => Phase::TopString { escaped: false },
                    b'}' | b']' | b',' | b':' => {
                        return Err(DeframeError::Syntax(format!(
                            "unexpected character `{}` at start of a JSON value",
                            char::from(b)
                        )));
                    }
                    _ => Phase::Scalar,
                };
                Ok(None)
            }
            Phase::Container {
                depth,
                in_string,
                escaped,
            } => {
                if *in_string {
                    if *escaped {
                        *escaped = false;
                    } else if b == b'\\' {
                        *escaped = true;
                    } else if b == b'"' {
                        *in_string = false;
                    }
                    return Ok(None);
                }
                match b {
                    b'"' => *in_string = true,
                    b'{' | b'[' => *depth = depth.saturating_add(1),
                    b'}' | b']' => {
                        *depth = depth.saturating_sub(1);
                        if *depth == 0 {
                            return Ok(Some(after));
                        }
                    }
                    _ => {}
                }
                Ok(None)
            }
            Phase::TopString { escaped } => {
                if *escaped {
                    *escaped = false;
                } else if b == b'\\' {
                    *escaped = true;
                } else if b == b'"' {
                    return Ok(Some(after));
                }
                Ok(None)
            }
            Phase::Scalar => {
                if is_delimiter(b) {
                    Ok(Some(here))
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Parses `buf[start..end]` and removes it (and everything before it) from the buffer.
    fn take_value(&mut self, end: usize) -> Result<Value, DeframeError> {
        if end.saturating_sub(self.start) > self.max_value_bytes {
            return Err(DeframeError::TooLarge {
                limit: self.max_value_bytes,
            });
        }
        let slice = self
            .buf
            .get(self.start..end)
            .ok_or_else(|| DeframeError::Syntax("internal framing error".to_owned()))?;
        let value = serde_json::from_slice::<Value>(slice)
            .map_err(|e| DeframeError::Syntax(e.to_string()))?;
        self.buf.drain(..end);
        self.pos = 0;
        self.start = 0;
        self.phase = Phase::Idle;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(d: &mut Deframer) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(v) = d.next_value().expect("valid") {
            out.push(v);
        }
        out
    }

    #[test]
    fn splits_concatenated_values_and_waits_for_partial_ones() {
        let mut d = Deframer::new(1024);
        d.push(br#"{"a":"}{\"x"} [1,[2]] "s\"}" 12 {"b":"#);
        let got = all(&mut d);
        assert_eq!(
            got,
            vec![
                serde_json::json!({"a": "}{\"x"}),
                serde_json::json!([1, [2]]),
                serde_json::json!("s\"}"),
                serde_json::json!(12),
            ]
        );
        assert!(d.has_partial_value());
        d.push(b" 2}");
        assert_eq!(all(&mut d), vec![serde_json::json!({"b": 2})]);
        assert!(!d.has_partial_value());
    }

    #[test]
    fn byte_by_byte_equals_all_at_once() {
        let text = br#"{"jsonrpc":"2.0","method":"m","params":{"s":"a\\\"b[{"},"id":7}
{"x":[]}"#;
        let mut d = Deframer::new(1024);
        let mut got = Vec::new();
        for b in text {
            d.push(std::slice::from_ref(b));
            got.extend(all(&mut d));
        }
        let mut whole = Deframer::new(1024);
        whole.push(text);
        assert_eq!(got, all(&mut whole));
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn garbage_is_a_syntax_error() {
        for bad in [
            &b"}"[..],
            b"nope ",
            b"{\"a\" 1}",
            b"[1,]",
            b"{\"a\":\"\xff\"}",
        ] {
            let mut d = Deframer::new(1024);
            d.push(bad);
            assert!(
                matches!(d.next_value(), Err(DeframeError::Syntax(_))),
                "{bad:?}"
            );
        }
    }

    /// Everything a deframer yields for `input` pushed in `chunks`-sized pieces.
    fn outcome(input: &[u8], chunk: usize) -> (Vec<Value>, Option<DeframeError>) {
        let mut d = Deframer::new(64);
        let mut values = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            d.push(piece);
            loop {
                match d.next_value() {
                    Ok(Some(v)) => values.push(v),
                    Ok(None) => break,
                    Err(e) => return (values, Some(e)),
                }
            }
        }
        (values, None)
    }

    #[test]
    fn random_input_never_panics_and_chunking_does_not_matter() {
        const ALPHABET: &[u8] = b"{}[]\",:\\ \n0123456789.-+eEtrufalsn\"\"{}ab\xff";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let len = usize::try_from(next() % 80).unwrap_or(0);
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    let i = usize::try_from(next() % 40).unwrap_or(0);
                    ALPHABET.get(i).copied().unwrap_or(b' ')
                })
                .collect();
            let whole = outcome(&input, input.len());
            let chunk = usize::try_from(next() % 7).unwrap_or(0) + 1;
            // The values and the first error do not depend on how the bytes arrive.
            assert_eq!(
                outcome(&input, chunk),
                whole,
                "{:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }

    #[test]
    fn oversize_values_are_refused_complete_or_partial() {
        let mut d = Deframer::new(16);
        d.push(br#"{"k":"0123456789abcdef"}"#);
        assert_eq!(d.next_value(), Err(DeframeError::TooLarge { limit: 16 }));
        let mut d = Deframer::new(16);
        d.push(br#"{"k":"0123456789abcdef"#);
        assert_eq!(d.next_value(), Err(DeframeError::TooLarge { limit: 16 }));
        // Whitespace between values does not count against the limit.
        let mut d = Deframer::new(16);
        d.push(&[b' '; 100]);
        assert_eq!(d.next_value(), Ok(None));
        d.push(br#"{"k":1}"#);
        assert_eq!(d.next_value(), Ok(Some(serde_json::json!({"k": 1}))));
    }
}
