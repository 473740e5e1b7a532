//! Parsing of the human-friendly arguments of `shoalctl`: sizes and listen addresses.

use std::net::IpAddr;

/// Parses a size in bytes: a number with an optional binary unit (`K`, `M`, `G`, `T`, also
/// written `KiB`, `MB`, `k`, ...; all powers of 1024, as SPDK's `rpc.py` counts MiB).
pub fn size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. 64MiB, 1G, 4096)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("`{text}`: unknown size unit `{unit}` (K, M, G, T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Bytes as a short binary size (`64 MiB`, `1.5 GiB`, `512 B`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0usize;
    let mut whole = bytes;
    let mut rem = 0u64;
    while whole >= 1024 && unit + 1 < UNITS.len() {
        rem = whole % 1024;
        whole /= 1024;
        unit += 1;
    }
    let name = UNITS.get(unit).copied().unwrap_or("B");
    // One decimal, rounded down: `rem` is below 1024, so `rem * 10 / 1024` is a digit.
    let tenth = rem * 10 / 1024;
    if tenth == 0 {
        format!("{whole} {name}")
    } else {
        format!("{whole}.{tenth} {name}")
    }
}

/// A listen address split into SPDK's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// `IPv4` or `IPv6`.
    pub adrfam: &'static str,
    /// The IP address, without brackets.
    pub traddr: String,
    /// The port.
    pub trsvcid: String,
}

/// Parses `ADDR:PORT` (`127.0.0.1:4420`, `[::1]:4420`).
pub fn address(text: &str) -> Result<Address, String> {
    let bad = || format!("`{text}` is not ADDR:PORT (e.g. 127.0.0.1:4420 or [::1]:4420)");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']').ok_or_else(bad)?,
        None if host.contains(':') => return Err(bad()),
        None => host,
    };
    let ip: IpAddr = host.parse().map_err(|_| bad())?;
    let port: u16 = port.parse().ok().filter(|&p| p != 0).ok_or_else(bad)?;
    Ok(Address {
        adrfam: if ip.is_ipv6() { "IPv6" } else { "IPv4" },
        traddr: ip.to_string(),
        trsvcid: port.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("64MiB"), Ok(64 << 20));
        assert_eq!(size("64M"), Ok(64 << 20));
        assert_eq!(size("1g"), Ok(1 << 30));
        assert_eq!(size("2 KiB"), Ok(2048));
        assert!(size("").is_err());
        assert!(size("MiB").is_err());
        assert!(size("12XB").is_err());
        assert!(size("99999999999T").is_err());
        assert!(size("-1").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(64 << 20), "64 MiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
        assert_eq!(human_size(u64::MAX), "16777215.9 TiB");
    }

    #[test]
    fn addresses() {
        let a = address("127.0.0.1:4420").expect("v4");
        assert_eq!(
            (a.adrfam, a.traddr.as_str(), a.trsvcid.as_str()),
            ("IPv4", "127.0.0.1", "4420")
        );
        let a = address("[::1]:8009").expect("v6");
        assert_eq!((a.adrfam, a.traddr.as_str()), ("IPv6", "::1"));
        for bad in [
            "127.0.0.1",
            "::1:4420",
            "[::1:4420",
            "host:4420",
            "1.2.3.4:0",
            "1.2.3.4:x",
        ] {
            assert!(address(bad).is_err(), "{bad}");
        }
    }
}
