//! `nvmf://` URIs: how the nexus names a remote replica.
//!
//! ```text
//! nvmf://HOST[:PORT]/SUBNQN[?key=value&...]
//! nvmf://[fd00::1]:4420/nqn.2016-06.io.shoal:vol1?hostnqn=nqn.2014-08...&nsid=1
//! ```
//!
//! `nvmf+tcp://` is accepted too. The port defaults to 4420. Keys (`-` and `_` are the same,
//! names follow Linux `nvme connect`; durations are seconds, fractions allowed, or end in
//! `ms`): `hostnqn`, `hostid` (a UUID), `nsid` (default 1), `name` (the bdev name),
//! `hdr-digest`, `data-digest` (`true`/`false`/`1`/`0`), `keep-alive-tmo`, `reconnect-delay`,
//! `ctrl-loss-tmo`, `io-timeout`, `queue-size`, `nr-io-queues`. Values may be %-encoded.

use std::time::Duration;

use uuid::Uuid;

use super::error::HostError;
use super::options::{ConnectOptions, DEFAULT_PORT};

/// A parsed `nvmf://` URI.
#[derive(Debug, Clone)]
pub struct NvmfUri {
    /// How to connect.
    pub opts: ConnectOptions,
    /// The namespace.
    pub nsid: u32,
    /// The bdev name, if the URI gave one.
    pub name: Option<String>,
}

impl NvmfUri {
    /// A name for the bdev when the URI gives none: `HOST:PORT/SUBNQN/nNSID`.
    pub fn default_name(&self) -> String {
        format!(
            "{}:{}/{}/n{}",
            self.opts.host, self.opts.port, self.opts.subnqn, self.nsid
        )
    }
}

fn invalid(m: impl Into<String>) -> HostError {
    HostError::Invalid(m.into())
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn percent_decode(s: &str) -> Result<String, HostError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(invalid(format!("bad %-escape in `{s}`")));
            };
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid(format!("`{s}` is not UTF-8")))
}

fn duration(key: &str, v: &str) -> Result<Duration, HostError> {
    let bad = || invalid(format!("{key}: `{v}` is not a duration"));
    let (num, scale) = match v.strip_suffix("ms") {
        Some(n) => (n, 1e-3),
        None => (v.strip_suffix('s').unwrap_or(v), 1.0),
    };
    let x: f64 = num.trim().parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(x * scale).map_err(|_| bad())
}

fn boolean(key: &str, v: &str) -> Result<bool, HostError> {
    match v {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(format!("{key}: `{v}` is not a boolean"))),
    }
}

fn number<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, HostError> {
    v.parse()
        .map_err(|_| invalid(format!("{key}: `{v}` is not a valid number")))
}

/// Parses an `nvmf://` URI into connect options, a namespace ID and a bdev name.
pub fn parse_uri(uri: &str) -> Result<NvmfUri, HostError> {
    let rest = uri
        .strip_prefix("nvmf://")
        .or_else(|| uri.strip_prefix("nvmf+tcp://"))
        .ok_or_else(|| invalid(format!("`{uri}` is not an nvmf:// URI")))?;
    let (authority, path_query) = rest
        .split_once('/')
        .ok_or_else(|| invalid("the URI names no subsystem NQN"))?;
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    let subnqn = percent_decode(path)?;
    if subnqn.is_empty() {
        return Err(invalid("the URI names no subsystem NQN"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| invalid("unterminated [IPv6] address"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => number("port", p)?,
            None if after.is_empty() => DEFAULT_PORT,
            None => return Err(invalid(format!("junk after the address: `{after}`"))),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), number("port", p)?),
            None => (authority.to_string(), DEFAULT_PORT),
        }
    };
    if host.is_empty() {
        return Err(invalid("the URI names no host"));
    }
    let mut opts = ConnectOptions::new(&host, port, &subnqn);
    let mut nsid = 1;
    let mut name = None;
    let mut hostid_given = false;
    let mut hostnqn_given = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
        let key = k.replace('-', "_");
        let v = percent_decode(v)?;
        match key.as_str() {
            "hostnqn" => {
                opts.hostnqn = v;
                hostnqn_given = true;
            }
            "hostid" => {
                let id = Uuid::parse_str(&v).map_err(|_| invalid(format!("hostid `{v}`")))?;
                opts.hostid = *id.as_bytes();
                hostid_given = true;
            }
            "nsid" => nsid = number("nsid", &v)?,
            "name" => name = Some(v),
            "hdr_digest" | "hdgst" => opts.header_digest = boolean(&key, &v)?,
            "data_digest" | "ddgst" => opts.data_digest = boolean(&key, &v)?,
            "keep_alive_tmo" | "kato" => opts.kato = duration(&key, &v)?,
            "reconnect_delay" => opts.reconnect_delay = duration(&key, &v)?,
            "ctrl_loss_tmo" => opts.ctrl_loss_tmo = duration(&key, &v)?,
            "io_timeout" => opts.io_timeout = duration(&key, &v)?,
            "queue_size" => opts.io_queue_depth = number(&key, &v)?,
            "nr_io_queues" => opts.io_queues = number(&key, &v)?,
            other => return Err(invalid(format!("unknown URI parameter `{other}`"))),
        }
    }
    // A host NQN given without a host ID keeps the random one; one of the uuid form gives its
    // UUID as the host ID, as `nvme connect` does.
    if hostnqn_given && !hostid_given {
        let tail = opts.hostnqn.rsplit_once(":uuid:").map(|(_, u)| u);
        if let Some(id) = tail.and_then(|u| Uuid::parse_str(u).ok()) {
            opts.hostid = *id.as_bytes();
        }
    }
    if nsid == 0 || nsid == u32::MAX {
        return Err(invalid(format!("nsid {nsid} is not a namespace")));
    }
    opts.validate()?;
    Ok(NvmfUri { opts, nsid, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse() {
        let u = parse_uri(
            "nvmf://10.0.0.2:4421/nqn.2016-06.io.shoal:vol1?hostnqn=nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555&nsid=2&name=r1&hdr-digest=1&ctrl-loss-tmo=2.5&reconnect_delay=250ms",
        )
        .unwrap();
        assert_eq!((u.opts.host.as_str(), u.opts.port), ("10.0.0.2", 4421));
        assert_eq!(u.opts.subnqn, "nqn.2016-06.io.shoal:vol1");
        assert_eq!(u.nsid, 2);
        assert_eq!(u.name.as_deref(), Some("r1"));
        assert!(u.opts.header_digest && !u.opts.data_digest);
        assert_eq!(u.opts.ctrl_loss_tmo, Duration::from_millis(2500));
        assert_eq!(u.opts.reconnect_delay, Duration::from_millis(250));
        assert_eq!(
            u.opts.hostid[0], 0x11,
            "host ID taken from the uuid host NQN"
        );

        let v6 = parse_uri("nvmf+tcp://[::1]/nqn.a%3Ab").unwrap();
        assert_eq!((v6.opts.host.as_str(), v6.opts.port), ("::1", 4420));
        assert_eq!(v6.opts.subnqn, "nqn.a:b");
        assert_eq!(v6.nsid, 1);
        assert_eq!(v6.default_name(), "::1:4420/nqn.a:b/n1");

        for bad in [
            "http://x/nqn",
            "nvmf://host:99999/nqn",
            "nvmf://host",
            "nvmf://host:4420/",
            "nvmf://[::1/nqn",
            "nvmf://h/nqn?nsid=0",
            "nvmf://h/nqn?bogus=1",
            "nvmf://h/nqn?ctrl-loss-tmo=-1",
            "nvmf://h/n%zzq",
        ] {
            assert!(parse_uri(bad).is_err(), "{bad}");
        }
    }
}
