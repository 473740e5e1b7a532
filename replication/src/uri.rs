//! Child URIs and the seam through which the daemon opens children.
//!
//! * `bdev:///NAME`: a bdev of the nexus's own daemon (a local replica). NAME may be a logical
//!   volume's alias `LVS/LVOL` (`bdev:///lvs/replica1`): `/` separates non-empty parts;
//! * `nvmf://HOST[:PORT]/NQN[?hostnqn=HOSTNQN&key=value...]`: a namespace exported by another
//!   daemon over NVMe/TCP (a remote replica). `HOST` is a name, an IPv4 address or a bracketed
//!   IPv6 address; the port defaults to 4420 (the NVMe/TCP port). `nvmf+tcp://` is the same.
//!   The other parameters (`nsid`, `ctrl-loss-tmo`, ...) belong to the NVMe/TCP host that
//!   opens the child (`shoal_nvmf::host::parse_uri`); they are kept, in order, and passed on.
//!
//! URIs come from RPC requests: parsing checks every part and never panics. The nexus itself
//! does not open children; the daemon supplies a [`ChildOpener`].

use std::fmt;
use std::sync::Arc;

use shoal_bdev::Bdev;

use crate::NexusError;

/// Longest NQN, in bytes (NVMe Base 2.0, section 4.5: "NQNs ... shall be no more than 223
/// bytes").
pub const MAX_NQN_BYTES: usize = 223;
/// Longest URI accepted, in bytes.
pub const MAX_URI_BYTES: usize = 1024;
/// The NVMe/TCP port (IANA), used when a URI gives none.
pub const DEFAULT_NVMF_PORT: u16 = 4420;

/// Where a child lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChildUri {
    /// A bdev of this daemon, by name.
    Local {
        /// The bdev's name.
        name: String,
    },
    /// A namespace of a remote NVMe/TCP subsystem.
    Remote {
        /// Host name or address (IPv6 without brackets).
        host: String,
        /// TCP port.
        port: u16,
        /// Subsystem NQN.
        nqn: String,
        /// Query parameters, in order (`hostnqn` among them when given).
        params: Vec<(String, String)>,
    },
}

fn invalid(uri: &str, reason: impl Into<String>) -> NexusError {
    NexusError::InvalidUri {
        uri: uri.chars().take(200).collect(),
        reason: reason.into(),
    }
}

fn check_nqn(uri: &str, what: &str, nqn: &str) -> Result<(), NexusError> {
    if nqn.is_empty() {
        return Err(invalid(uri, format!("the {what} is empty")));
    }
    if nqn.len() > MAX_NQN_BYTES {
        return Err(invalid(
            uri,
            format!("the {what} is longer than {MAX_NQN_BYTES} bytes"),
        ));
    }
    if nqn.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(
            uri,
            format!("the {what} contains blanks or controls"),
        ));
    }
    Ok(())
}

impl ChildUri {
    /// Parses a child URI.
    pub fn parse(text: &str) -> Result<ChildUri, NexusError> {
        if text.len() > MAX_URI_BYTES {
            return Err(invalid(text, format!("longer than {MAX_URI_BYTES} bytes")));
        }
        if let Some(name) = text.strip_prefix("bdev:///") {
            if name.is_empty() {
                return Err(invalid(text, "no bdev name after bdev:///"));
            }
            if name.contains(['?', '#']) || name.chars().any(char::is_control) {
                return Err(invalid(
                    text,
                    "a bdev name cannot contain `?`, `#` or control characters",
                ));
            }
            // A logical volume's alias has one `/` (`lvs/lvol`); an empty part is a typo.
            if name.split('/').any(str::is_empty) {
                return Err(invalid(
                    text,
                    "an empty part in the bdev name (expected NAME or LVS/LVOL)",
                ));
            }
            return Ok(ChildUri::Local {
                name: name.to_owned(),
            });
        }
        let Some(rest) = text
            .strip_prefix("nvmf://")
            .or_else(|| text.strip_prefix("nvmf+tcp://"))
        else {
            return Err(invalid(
                text,
                "expected bdev:///NAME or nvmf://HOST:PORT/NQN[?hostnqn=...]",
            ));
        };
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| invalid(text, "no /NQN after HOST:PORT"))?;
        let (host, port) = split_host_port(text, authority)?;
        let (nqn, query) = match path.split_once('?') {
            Some((n, q)) => (n, Some(q)),
            None => (path, None),
        };
        check_nqn(text, "subsystem NQN", nqn)?;
        let mut params: Vec<(String, String)> = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
            let key_ok = !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !key_ok {
                let key: String = k.chars().take(40).collect();
                return Err(invalid(text, format!("bad parameter name `{key}`")));
            }
            if params.iter().any(|(p, _)| p == k) {
                return Err(invalid(text, format!("parameter `{k}` given twice")));
            }
            if k == "hostnqn" {
                check_nqn(text, "host NQN", v)?;
            } else if v.is_empty() || v.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(invalid(text, format!("parameter `{k}` has a bad value")));
            }
            params.push((k.to_owned(), v.to_owned()));
        }
        Ok(ChildUri::Remote {
            host,
            port,
            nqn: nqn.to_owned(),
            params,
        })
    }

    /// The host NQN a remote URI asks to connect as.
    pub fn hostnqn(&self) -> Option<&str> {
        match self {
            ChildUri::Remote { params, .. } => params
                .iter()
                .find(|(k, _)| k == "hostnqn")
                .map(|(_, v)| v.as_str()),
            ChildUri::Local { .. } => None,
        }
    }

    /// Whether the child is a bdev of this daemon (reads prefer local children).
    pub fn is_local(&self) -> bool {
        matches!(self, ChildUri::Local { .. })
    }
}

fn split_host_port(uri: &str, authority: &str) -> Result<(String, u16), NexusError> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6
            .split_once(']')
            .ok_or_else(|| invalid(uri, "unclosed `[` in the host"))?;
        let p = match p.strip_prefix(':') {
            Some(p) => Some(p),
            None if p.is_empty() => None,
            None => return Err(invalid(uri, "expected :PORT after the IPv6 address")),
        };
        h.parse::<std::net::Ipv6Addr>()
            .map_err(|_| invalid(uri, "not an IPv6 address between `[` and `]`"))?;
        (h, p)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    if !host_ok {
        return Err(invalid(uri, "the host is empty or has invalid characters"));
    }
    let port: u16 = match port {
        None => DEFAULT_NVMF_PORT,
        Some(p) => p
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| invalid(uri, "the port is not a number from 1 to 65535"))?,
    };
    Ok((host.to_owned(), port))
}

impl fmt::Display for ChildUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildUri::Local { name } => write!(f, "bdev:///{name}"),
            ChildUri::Remote {
                host,
                port,
                nqn,
                params,
            } => {
                if host.contains(':') {
                    write!(f, "nvmf://[{host}]:{port}/{nqn}")?;
                } else {
                    write!(f, "nvmf://{host}:{port}/{nqn}")?;
                }
                for (i, (k, v)) in params.iter().enumerate() {
                    write!(f, "{}{k}={v}", if i == 0 { '?' } else { '&' })?;
                }
                Ok(())
            }
        }
    }
}

impl std::str::FromStr for ChildUri {
    type Err = NexusError;

    fn from_str(s: &str) -> Result<ChildUri, NexusError> {
        ChildUri::parse(s)
    }
}

/// Opens the bdev a child URI names. The daemon supplies it: `bdev:///` children come from its
/// bdev registry, `nvmf://` children from the NVMe/TCP host (a remote bdev).
pub trait ChildOpener: Send + Sync {
    /// Opens `uri`. May block (a remote connect); never called on a reactor thread by the
    /// nexus.
    fn open(&self, uri: &ChildUri) -> Result<Arc<dyn Bdev>, NexusError>;
}

impl<F> ChildOpener for F
where
    F: Fn(&ChildUri) -> Result<Arc<dyn Bdev>, NexusError> + Send + Sync,
{
    fn open(&self, uri: &ChildUri) -> Result<Arc<dyn Bdev>, NexusError> {
        self(uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_uris() {
        let u = ChildUri::parse("bdev:///Malloc0").unwrap();
        assert_eq!(
            u,
            ChildUri::Local {
                name: "Malloc0".into()
            }
        );
        assert!(u.is_local());
        assert_eq!(u.to_string(), "bdev:///Malloc0");
        // A logical volume by its alias.
        let u = ChildUri::parse("bdev:///lvs/replica1").unwrap();
        assert_eq!(
            u,
            ChildUri::Local {
                name: "lvs/replica1".into()
            }
        );
        assert_eq!(u.to_string(), "bdev:///lvs/replica1");
        assert_eq!(ChildUri::parse(&u.to_string()).unwrap(), u);
        for bad in [
            "bdev:///",
            "bdev://Malloc0",
            "bdev:////a",
            "bdev:///a/",
            "bdev:///a//b",
            "bdev:///a?b",
            "bdev:///a#b",
            "bdev:///a\nb",
            "malloc:///x",
            "",
        ] {
            assert!(ChildUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn remote_uris() {
        let u = ChildUri::parse("nvmf://10.0.0.2:4420/nqn.2019-05.io.shoal:r1").unwrap();
        assert!(!u.is_local());
        assert_eq!(
            u.to_string(),
            "nvmf://10.0.0.2:4420/nqn.2019-05.io.shoal:r1"
        );
        let u = ChildUri::parse("nvmf://[fe80::1]:4420/nqn.x:y?hostnqn=nqn.h:1").unwrap();
        match &u {
            ChildUri::Remote {
                host, port, nqn, ..
            } => {
                assert_eq!((host.as_str(), *port), ("fe80::1", 4420));
                assert_eq!(nqn, "nqn.x:y");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(u.hostnqn(), Some("nqn.h:1"));
        assert_eq!(
            u.to_string(),
            "nvmf://[fe80::1]:4420/nqn.x:y?hostnqn=nqn.h:1"
        );
        assert_eq!(ChildUri::parse(&u.to_string()).unwrap(), u);
        // The host's own parameters are kept, in order; the port defaults to 4420.
        let u = ChildUri::parse("nvmf+tcp://h/nqn.a:b?nsid=2&ctrl-loss-tmo=5").unwrap();
        assert_eq!(
            u.to_string(),
            "nvmf://h:4420/nqn.a:b?nsid=2&ctrl-loss-tmo=5"
        );
        assert_eq!(u.hostnqn(), None);
        let long = format!("nvmf://h:1/{}", "n".repeat(MAX_NQN_BYTES + 1));
        for bad in [
            "nvmf://host:0/nqn",
            "nvmf://host:70000/nqn",
            "nvmf://host:4420/",
            "nvmf://host:4420",
            "nvmf://:4420/nqn",
            "nvmf://[::1:4420/nqn",
            "nvmf://[zz]:4420/nqn",
            "nvmf://[::1]x/nqn",
            "nvmf://h st:4420/nqn",
            "nvmf://h:4420/nqn?f o=1",
            "nvmf://h:4420/nqn?nsid=1&nsid=2",
            "nvmf://h:4420/nqn?nsid=",
            "nvmf://h:4420/nqn?hostnqn=",
            "nvmf://h:4420/nqn?hostnqn=a&hostnqn=b",
            long.as_str(),
        ] {
            assert!(ChildUri::parse(bad).is_err(), "{bad}");
        }
        assert!(ChildUri::parse(&"x".repeat(MAX_URI_BYTES + 1)).is_err());
    }
}
