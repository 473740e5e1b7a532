//! Child URIs and the seam through which the daemon opens children.
//!
//! * `bdev:///NAME`: a bdev of the nexus's own daemon (a local replica). NAME may be a logical
//!   volume's alias `LVS/LVOL` (`bdev:///lvs/replica1`): `/` separates non-empty parts;
//! * `nvmf://HOST[:PORT]/NQN[?hostnqn=HOSTNQN&key=value...]` (or `nvmf+tcp://`): a namespace
//!   exported by another daemon over NVMe/TCP (a remote replica), parsed by the NVMe/TCP
//!   host's own parser ([`NvmfUri`], which says what it accepts), so a URI the nexus takes is
//!   one the host can connect with.
//!
//! URIs come from RPC requests: parsing checks every part and never panics. The nexus itself
//! does not open children; the daemon supplies a [`ChildOpener`].

use std::fmt;
use std::sync::Arc;

use shoal_bdev::Bdev;
pub use shoal_nvmf::host::NvmfUri;
use shoal_nvmf::host::{MAX_URI_BYTES, UriError};

use crate::NexusError;

/// Where a child lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChildUri {
    /// A bdev of this daemon, by name.
    Local {
        /// The bdev's name.
        name: String,
    },
    /// A namespace of a remote NVMe/TCP subsystem.
    Remote(NvmfUri),
}

fn invalid(uri: &str, reason: impl Into<String>) -> NexusError {
    NexusError::InvalidUri {
        uri: uri.chars().take(200).collect(),
        reason: reason.into(),
    }
}

impl From<UriError> for NexusError {
    fn from(e: UriError) -> NexusError {
        NexusError::InvalidUri {
            uri: e.uri,
            reason: e.reason,
        }
    }
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
        if text.starts_with("nvmf://") || text.starts_with("nvmf+tcp://") {
            return Ok(ChildUri::Remote(NvmfUri::parse(text)?));
        }
        Err(invalid(
            text,
            "expected bdev:///NAME or nvmf://HOST:PORT/NQN[?hostnqn=...]",
        ))
    }

    /// The host NQN a remote URI asks to connect as.
    pub fn hostnqn(&self) -> Option<&str> {
        match self {
            ChildUri::Remote(u) => u.hostnqn(),
            ChildUri::Local { .. } => None,
        }
    }

    /// Whether the child is a bdev of this daemon (reads prefer local children).
    pub fn is_local(&self) -> bool {
        matches!(self, ChildUri::Local { .. })
    }
}

impl fmt::Display for ChildUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildUri::Local { name } => write!(f, "bdev:///{name}"),
            ChildUri::Remote(u) => u.fmt(f),
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
            ChildUri::Remote(r) => {
                assert_eq!((r.host(), r.port()), ("fe80::1", 4420));
                assert_eq!(r.subnqn(), "nqn.x:y");
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
        let long = format!("nvmf://h:1/{}", "n".repeat(224));
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
            assert!(
                matches!(ChildUri::parse(bad), Err(NexusError::InvalidUri { .. })),
                "{bad}"
            );
        }
        assert!(ChildUri::parse(&"x".repeat(MAX_URI_BYTES + 1)).is_err());
        // A %-encoded NQN means what the host connects to: one child, however it is written.
        assert_eq!(
            ChildUri::parse("nvmf://h/nqn.a%3Ab").unwrap(),
            ChildUri::parse("nvmf://h:4420/nqn.a:b").unwrap()
        );
    }
}
