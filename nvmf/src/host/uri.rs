//! `nvmf://` URIs: how a nexus names a remote replica, and the one parser for them.
//!
//! ```text
//! nvmf://HOST[:PORT]/SUBNQN[?key=value&...]
//! nvmf://[fd00::1]:4420/nqn.2016-06.io.shoal:vol1?hostnqn=nqn.2014-08...&nsid=1
//! ```
//!
//! * `nvmf+tcp://` is the same scheme; the URI is shown back as `nvmf://`.
//! * `HOST` is a name or IPv4 address (letters, digits, `.`, `-`, `_`) or an IPv6 address in
//!   brackets. `PORT` is 1 to 65535 and defaults to 4420 (the NVMe/TCP port).
//! * `SUBNQN` and the values may be %-encoded (`nqn.a%3Ab` is `nqn.a:b`). An NQN is 1 to 223
//!   bytes of UTF-8 (NVMe Base 2.0, section 4.5) without blanks or control characters.
//! * Keys follow Linux `nvme connect` (`-` and `_` are the same): `hostnqn`, `hostid` (a
//!   UUID), `nsid` (default 1), `name` (the bdev name), `hdr-digest`/`hdgst`,
//!   `data-digest`/`ddgst` (`true`/`false`/`1`/`0`/`yes`/`no`/`on`/`off`; a bare key is
//!   `true`), `keep-alive-tmo`/`kato`, `reconnect-delay`, `ctrl-loss-tmo`, `io-timeout`
//!   (seconds, fractions allowed, or ending in `s` or `ms`), `queue-size`, `nr-io-queues`.
//!   Unknown keys, a key given twice, and empty values are errors.
//!
//! URIs come from RPC requests: [`NvmfUri::parse`] checks every part, never panics, and
//! keeps the parameters as written (in order), so [`NvmfUri`]'s `Display` gives back the URI
//! it parsed (with the port filled in, the scheme as `nvmf://` and the minimal %-encoding),
//! and parsing that again gives the same value.

use std::fmt;
use std::time::Duration;

use uuid::Uuid;

use super::error::HostError;
use super::options::{ConnectOptions, DEFAULT_PORT};
use crate::wire::spec::fabrics::NQN_MAX_LEN;

/// Longest URI accepted, in bytes.
pub const MAX_URI_BYTES: usize = 1024;

/// An `nvmf://` URI that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid URI `{uri}`: {reason}")]
pub struct UriError {
    /// The URI as given (its first 200 characters).
    pub uri: String,
    /// What is wrong with it.
    pub reason: String,
}

impl From<UriError> for HostError {
    fn from(e: UriError) -> HostError {
        HostError::Invalid(e.to_string())
    }
}

/// One query parameter, typed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UriParam {
    /// `hostnqn`: the host NQN to connect as.
    HostNqn(String),
    /// `hostid`: the host identifier.
    HostId(Uuid),
    /// `nsid`: the namespace.
    Nsid(u32),
    /// `name`: the bdev's name.
    Name(String),
    /// `hdr-digest`: ask for PDU header digests.
    HeaderDigest(bool),
    /// `data-digest`: ask for PDU data digests.
    DataDigest(bool),
    /// `keep-alive-tmo`: the keep-alive timeout.
    KeepAlive(Duration),
    /// `reconnect-delay`: the wait between reconnect attempts.
    ReconnectDelay(Duration),
    /// `ctrl-loss-tmo`: how long to keep reconnecting.
    CtrlLossTmo(Duration),
    /// `io-timeout`: an I/O command's timeout.
    IoTimeout(Duration),
    /// `queue-size`: entries per I/O queue.
    QueueSize(u16),
    /// `nr-io-queues`: I/O queues to ask for.
    IoQueues(u16),
}

/// A parameter as written (key and decoded value) and its meaning.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Param {
    key: String,
    value: String,
    typed: UriParam,
}

/// A parsed `nvmf://` URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NvmfUri {
    host: String,
    port: u16,
    subnqn: String,
    params: Vec<Param>,
}

struct Parser<'a> {
    uri: &'a str,
}

impl Parser<'_> {
    fn err(&self, reason: impl Into<String>) -> UriError {
        UriError {
            uri: self.uri.chars().take(200).collect(),
            reason: reason.into(),
        }
    }

    /// Checks an NQN (NVMe Base 2.0, section 4.5: "NQNs ... shall be no more than 223 bytes"
    /// of UTF-8; blanks and controls only come from typos).
    fn nqn(&self, what: &str, nqn: &str) -> Result<(), UriError> {
        if nqn.is_empty() {
            return Err(self.err(format!("the {what} is empty")));
        }
        if nqn.len() > NQN_MAX_LEN {
            return Err(self.err(format!("the {what} is longer than {NQN_MAX_LEN} bytes")));
        }
        if nqn.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(self.err(format!("the {what} contains blanks or controls")));
        }
        Ok(())
    }

    fn decode(&self, what: &str, s: &str) -> Result<String, UriError> {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if b == b'%' {
                let digit = |at: usize| {
                    bytes
                        .get(at)
                        .and_then(|&d| char::from(d).to_digit(16))
                        .and_then(|d| u8::try_from(d).ok())
                };
                let (Some(h), Some(l)) = (digit(i + 1), digit(i + 2)) else {
                    return Err(self.err(format!("a bad %-escape in the {what}")));
                };
                out.push((h << 4) | l);
                i += 3;
            } else {
                out.push(b);
                i += 1;
            }
        }
        String::from_utf8(out).map_err(|_| self.err(format!("the {what} is not UTF-8")))
    }

    fn authority(&self, authority: &str) -> Result<(String, u16), UriError> {
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| self.err("an unclosed `[` in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(self.err("expected :PORT after the IPv6 address")),
            };
            h.parse::<std::net::Ipv6Addr>()
                .map_err(|_| self.err("not an IPv6 address between `[` and `]`"))?;
            (h, port)
        } else {
            let (h, port) = match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            if h.contains(':') {
                return Err(self.err("an IPv6 address must be in brackets: [ADDRESS]:PORT"));
            }
            let ok = !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
            if !ok {
                return Err(self.err("the host is empty or has invalid characters"));
            }
            (h, port)
        };
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| self.err("the port is not a number from 1 to 65535"))?,
        };
        Ok((host.to_owned(), port))
    }

    fn param(&self, key: &str, v: &str) -> Result<UriParam, UriError> {
        let duration = || {
            let bad = || self.err(format!("{key}: `{v}` is not a duration"));
            let (num, scale) = match v.strip_suffix("ms") {
                Some(n) => (n, 1e-3),
                None => (v.strip_suffix('s').unwrap_or(v), 1.0),
            };
            let x: f64 = num.parse().map_err(|_| bad())?;
            Duration::try_from_secs_f64(x * scale).map_err(|_| bad())
        };
        let boolean = || match v {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(self.err(format!("{key}: `{v}` is not a boolean"))),
        };
        fn number<T: std::str::FromStr>(p: &Parser<'_>, key: &str, v: &str) -> Result<T, UriError> {
            v.parse()
                .map_err(|_| p.err(format!("{key}: `{v}` is not a valid number")))
        }
        Ok(match canonical(key).as_str() {
            "hostnqn" => {
                self.nqn("host NQN", v)?;
                UriParam::HostNqn(v.to_owned())
            }
            "hostid" => UriParam::HostId(
                Uuid::parse_str(v).map_err(|_| self.err(format!("hostid `{v}` is not a UUID")))?,
            ),
            "nsid" => {
                let nsid: u32 = number(self, key, v)?;
                // NVMe Base 2.0, section 3.2.1.2: 0h and FFFFFFFFh are not valid NSIDs of
                // one namespace.
                if nsid == 0 || nsid == u32::MAX {
                    return Err(self.err(format!("nsid {nsid} is not a namespace")));
                }
                UriParam::Nsid(nsid)
            }
            "name" => UriParam::Name(v.to_owned()),
            "hdr_digest" => UriParam::HeaderDigest(boolean()?),
            "data_digest" => UriParam::DataDigest(boolean()?),
            "keep_alive_tmo" => UriParam::KeepAlive(duration()?),
            "reconnect_delay" => UriParam::ReconnectDelay(duration()?),
            "ctrl_loss_tmo" => UriParam::CtrlLossTmo(duration()?),
            "io_timeout" => UriParam::IoTimeout(duration()?),
            "queue_size" => UriParam::QueueSize(number(self, key, v)?),
            "nr_io_queues" => UriParam::IoQueues(number(self, key, v)?),
            _ => return Err(self.err(format!("unknown parameter `{key}`"))),
        })
    }
}

/// The key a parameter stands for: `-` and `_` are the same, and the short names of
/// `nvme connect` are the long ones.
fn canonical(key: &str) -> String {
    match key.replace('-', "_").as_str() {
        "hdgst" => "hdr_digest".to_owned(),
        "ddgst" => "data_digest".to_owned(),
        "kato" => "keep_alive_tmo".to_owned(),
        k => k.to_owned(),
    }
}

/// Writes `s` %-encoded where it has to be: everything but letters, digits and
/// `-._~:@+,!$*'()/` (none of which separate the parts of an `nvmf://` URI's path or query).
fn encode(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@+,!$*'()/".contains(&b) {
            write!(f, "{}", char::from(b))?;
        } else {
            write!(f, "%{b:02X}")?;
        }
    }
    Ok(())
}

impl NvmfUri {
    /// Parses an `nvmf://` (or `nvmf+tcp://`) URI.
    pub fn parse(uri: &str) -> Result<NvmfUri, UriError> {
        let p = Parser { uri };
        if uri.len() > MAX_URI_BYTES {
            return Err(p.err(format!("longer than {MAX_URI_BYTES} bytes")));
        }
        let rest = uri
            .strip_prefix("nvmf://")
            .or_else(|| uri.strip_prefix("nvmf+tcp://"))
            .ok_or_else(|| p.err("expected nvmf://HOST[:PORT]/NQN[?key=value&...]"))?;
        let (authority, path_query) = rest
            .split_once('/')
            .ok_or_else(|| p.err("no /NQN after HOST[:PORT]"))?;
        let (host, port) = p.authority(authority)?;
        let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
        if path.contains('#') || query.contains('#') {
            return Err(p.err("a `#` fragment has no meaning here (%-encode it as %23)"));
        }
        let subnqn = p.decode("subsystem NQN", path)?;
        p.nqn("subsystem NQN", &subnqn)?;
        let mut params: Vec<Param> = Vec::new();
        for pair in query.split('&').filter(|s| !s.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, "true"));
            let key_ok = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !key_ok {
                let key: String = key.chars().take(40).collect();
                return Err(p.err(format!("bad parameter name `{key}`")));
            }
            if params.iter().any(|q| canonical(&q.key) == canonical(key)) {
                return Err(p.err(format!("parameter `{key}` given twice")));
            }
            let value = p.decode(&format!("value of `{key}`"), raw)?;
            if value.is_empty() || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(p.err(format!(
                    "parameter `{key}` has an empty value or one with blanks"
                )));
            }
            let typed = p.param(key, &value)?;
            params.push(Param {
                key: key.to_owned(),
                value,
                typed,
            });
        }
        let u = NvmfUri {
            host,
            port,
            subnqn,
            params,
        };
        u.connect_options()
            .validate()
            .map_err(|e| p.err(e.to_string()))?;
        Ok(u)
    }

    /// Host name or address of the target (an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// TCP port of the target.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// NQN of the subsystem (%-decoded).
    pub fn subnqn(&self) -> &str {
        &self.subnqn
    }

    /// The parameters, typed, in the order given.
    pub fn params(&self) -> impl Iterator<Item = &UriParam> {
        self.params.iter().map(|p| &p.typed)
    }

    /// The namespace (`nsid`, 1 when not given).
    pub fn nsid(&self) -> u32 {
        self.params()
            .find_map(|p| match p {
                UriParam::Nsid(n) => Some(*n),
                _ => None,
            })
            .unwrap_or(1)
    }

    /// The bdev name the URI gives (`name`).
    pub fn name(&self) -> Option<&str> {
        self.params().find_map(|p| match p {
            UriParam::Name(n) => Some(n.as_str()),
            _ => None,
        })
    }

    /// The host NQN the URI asks to connect as (`hostnqn`).
    pub fn hostnqn(&self) -> Option<&str> {
        self.params().find_map(|p| match p {
            UriParam::HostNqn(n) => Some(n.as_str()),
            _ => None,
        })
    }

    /// A name for the bdev when the URI gives none: `HOST:PORT/SUBNQN/nNSID`.
    pub fn default_name(&self) -> String {
        format!(
            "{}:{}/{}/n{}",
            self.host,
            self.port,
            self.subnqn,
            self.nsid()
        )
    }

    /// The options to connect with: [`ConnectOptions::new`]'s defaults with the URI's
    /// parameters applied. A host NQN given without a host ID keeps the random ID, unless it
    /// is of the uuid form, whose UUID becomes the host ID (as `nvme connect` does).
    pub fn connect_options(&self) -> ConnectOptions {
        let mut opts = ConnectOptions::new(&self.host, self.port, &self.subnqn);
        let mut hostid_given = false;
        for p in self.params() {
            match p {
                UriParam::HostNqn(n) => opts.hostnqn.clone_from(n),
                UriParam::HostId(id) => {
                    opts.hostid = *id.as_bytes();
                    hostid_given = true;
                }
                UriParam::Nsid(_) | UriParam::Name(_) => {}
                UriParam::HeaderDigest(b) => opts.header_digest = *b,
                UriParam::DataDigest(b) => opts.data_digest = *b,
                UriParam::KeepAlive(d) => opts.kato = *d,
                UriParam::ReconnectDelay(d) => opts.reconnect_delay = *d,
                UriParam::CtrlLossTmo(d) => opts.ctrl_loss_tmo = *d,
                UriParam::IoTimeout(d) => opts.io_timeout = *d,
                UriParam::QueueSize(n) => opts.io_queue_depth = *n,
                UriParam::IoQueues(n) => opts.io_queues = *n,
            }
        }
        if !hostid_given && let Some(n) = self.hostnqn() {
            let tail = n.rsplit_once(":uuid:").map(|(_, u)| u);
            if let Some(id) = tail.and_then(|u| Uuid::parse_str(u).ok()) {
                opts.hostid = *id.as_bytes();
            }
        }
        opts
    }
}

impl fmt::Display for NvmfUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "nvmf://[{}]:{}/", self.host, self.port)?;
        } else {
            write!(f, "nvmf://{}:{}/", self.host, self.port)?;
        }
        encode(f, &self.subnqn)?;
        for (i, p) in self.params.iter().enumerate() {
            write!(f, "{}{}=", if i == 0 { '?' } else { '&' }, p.key)?;
            encode(f, &p.value)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for NvmfUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<NvmfUri, UriError> {
        NvmfUri::parse(s)
    }
}

#[cfg(test)]
mod tests;
