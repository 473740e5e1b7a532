//! Typed params of the SPDK RPC methods Shoal serves, exactly as SPDK's `rpc.py` sends them.
//!
//! Field names, types and optionality follow the decoder tables of the SPDK C handlers
//! (`module/bdev/*/*_rpc.c`, `lib/nvmf/nvmf_rpc.c`, `lib/rpc/rpc.c`) and the requests the
//! `rpc.py` of SPDK v24..v26 builds (`rpc.py --dry-run` output is in
//! `tests/rpc_fixtures.json`). Newer `rpc.py` versions send every `store_true` flag, so many
//! requests carry `"md_interleave": false`, `"zcopy": false` and the like.
//!
//! Policy for unknown input:
//! * every struct is `#[serde(deny_unknown_fields)]`: a key SPDK does not know either is an
//!   error (`-32602 unknown field ...`);
//! * keys SPDK knows that tune machinery Shoal does not have (RDMA SRQ depth, DIF, iobuf
//!   caches, ...) are accepted as `Option<serde_json::Value>` "knobs". [`RpcParams`] reports
//!   the knobs present with a non-default value (anything but `null`, `false`, `0`, `""`, `[]`,
//!   `{}`), and the registry logs a warning naming them;
//! * keys Shoal honours are typed (a wrong type is `-32602` naming the field).
//!
//! [`RpcParams`]: crate::rpc::RpcParams

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

pub mod bdev;
pub mod lvol;
pub mod misc;
pub mod nvmf;

/// Implements [`crate::rpc::RpcParams`] for a params struct, listing its knob fields
/// (each an `Option<serde_json::Value>`).
macro_rules! params_knobs {
    ($ty:ty { $($knob:ident),* $(,)? }) => {
        impl $crate::rpc::RpcParams for $ty {
            fn ignored_knobs(&self) -> Vec<&'static str> {
                #[allow(unused_mut)]
                let mut set = Vec::new();
                $(
                    if $crate::rpc::params::knob_is_set(&self.$knob) {
                        set.push(stringify!($knob));
                    }
                )*
                set
            }
        }
    };
}
pub(crate) use params_knobs;

/// True if a knob was given a value that would change SPDK's behaviour from its default.
#[must_use]
pub fn knob_is_set(knob: &Option<Value>) -> bool {
    match knob {
        None | Some(Value::Null | Value::Bool(false)) => false,
        Some(Value::Number(n)) => n.as_f64().is_none_or(|f| f.abs() >= f64::MIN_POSITIVE),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Bool(true)) => true,
    }
}

/// Params of a method that takes none (`rpc.py` omits `params`; `{}` and `null` are accepted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}
params_knobs!(NoParams {});

/// SPDK methods that only tune SPDK machinery (socket layer, buffer pools, accel, scheduler,
/// bdev-layer pools, NVMe-oF target limits). They appear in configs saved by SPDK's
/// `save_config`; Shoal accepts them with any params and ignores them with a warning, both in
/// config files ([`crate::config`]) and over RPC ([`crate::rpc::Registry::register_ignored`]).
pub const HOUSEKEEPING_METHODS: &[&str] = &[
    "accel_set_options",
    "bdev_iscsi_set_options",
    "bdev_nvme_set_hotplug",
    "bdev_nvme_set_options",
    "bdev_raid_set_options",
    "bdev_set_options",
    "bdev_wait_for_examine",
    "framework_set_scheduler",
    "fsdev_set_opts",
    "iobuf_set_options",
    "nvmf_set_config",
    "nvmf_set_crdt",
    "nvmf_set_max_subsystems",
    "sock_impl_set_options",
    "sock_set_default_impl",
    "vhost_set_options",
];

/// What a housekeeping call asks for that Shoal must refuse rather than ignore (see
/// [`crate::rpc::RpcParams::refused`]): `sock_set_default_impl` to `ssl` would make every
/// listener TLS-only in SPDK, and Shoal has no TLS yet.
#[must_use]
pub fn housekeeping_refused(
    method: &str,
    params: &serde_json::Map<String, Value>,
) -> Vec<(&'static str, &'static str)> {
    let ssl = params.get("impl_name").and_then(Value::as_str) == Some("ssl");
    if method == "sock_set_default_impl" && ssl {
        return vec![("impl_name", "\"ssl\": NVMe/TCP over TLS on every listener")];
    }
    Vec::new()
}

/// True if `method` is one of [`HOUSEKEEPING_METHODS`].
#[must_use]
pub fn is_housekeeping(method: &str) -> bool {
    HOUSEKEEPING_METHODS.contains(&method)
}

/// `N` bytes written as `2 * N` hexadecimal digits, most significant first, as SPDK decodes
/// and prints NGUID (`N = 16`) and EUI-64 (`N = 8`) in `nvmf_subsystem_add_ns`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HexBytes<const N: usize>(pub [u8; N]);

impl<const N: usize> fmt::Debug for HexBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl<const N: usize> fmt::Display for HexBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl<const N: usize> std::str::FromStr for HexBytes<N> {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.as_bytes();
        let bad = || {
            let shown: String = s.chars().take(80).collect();
            format!(
                "expected {} hexadecimal digits, got `{shown}`",
                N.saturating_mul(2)
            )
        };
        if digits.len() != N.saturating_mul(2) {
            return Err(bad());
        }
        let mut out = [0u8; N];
        for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            let (hi, lo) = match pair {
                [hi, lo] => (
                    hex_digit(*hi).ok_or_else(bad)?,
                    hex_digit(*lo).ok_or_else(bad)?,
                ),
                _ => return Err(bad()),
            };
            *byte = (hi << 4) | lo;
        }
        Ok(Self(out))
    }
}

impl<'de, const N: usize> Deserialize<'de> for HexBytes<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl<const N: usize> Serialize for HexBytes<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_bytes_roundtrip_and_errors() {
        let h: HexBytes<8> = "abcdef0123456789".parse().expect("hex");
        assert_eq!(h.0, [0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89]);
        assert_eq!(h.to_string(), "ABCDEF0123456789");
        assert!("abcdef012345678".parse::<HexBytes<8>>().is_err());
        assert!("abcdef01234567zz".parse::<HexBytes<8>>().is_err());
        assert!("ééééééééé".parse::<HexBytes<8>>().is_err());
    }

    #[test]
    fn knob_defaults_are_not_reported() {
        for v in [
            Value::Null,
            Value::Bool(false),
            Value::from(0),
            Value::from(0.0),
        ] {
            assert!(!knob_is_set(&Some(v)));
        }
        assert!(knob_is_set(&Some(Value::Bool(true))));
        assert!(knob_is_set(&Some(Value::from(511))));
        assert!(!knob_is_set(&None));
    }
}
