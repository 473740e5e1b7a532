//! `-r`: SPDK's transport ID strings, e.g.
//! `trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2016-06.io.spdk:cnode1 ns:1`.
//!
//! Pairs are `key:value` (or `key=value`), separated by spaces; keys are case-insensitive, as
//! `spdk_nvme_transport_id_parse` has them. `spdk_nvme_perf` adds `ns` (one namespace; all
//! when absent) and `hostnqn`. Without `subnqn` the discovery controller at the address lists
//! the subsystems to use.

/// One `-r` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportId {
    /// `traddr`.
    pub traddr: String,
    /// `trsvcid` (default 4420).
    pub trsvcid: u16,
    /// `subnqn` (`None`: ask the discovery controller).
    pub subnqn: Option<String>,
    /// `ns`: one namespace (`None`: every active one).
    pub nsid: Option<u32>,
    /// `hostnqn`.
    pub hostnqn: Option<String>,
}

impl std::fmt::Display for TransportId {
    /// `spdk_nvme_perf`'s device name: `TCP (addr:A subnqn:N)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TCP (addr:{}:{} subnqn:{})",
            self.traddr,
            self.trsvcid,
            self.subnqn.as_deref().unwrap_or("discovery")
        )
    }
}

impl std::str::FromStr for TransportId {
    type Err = String;

    fn from_str(s: &str) -> Result<TransportId, String> {
        let mut trtype = None;
        let mut adrfam = None;
        let mut id = TransportId {
            traddr: String::new(),
            trsvcid: 4420,
            subnqn: None,
            nsid: None,
            hostnqn: None,
        };
        for pair in s.split_whitespace() {
            let (k, v) = pair
                .split_once([':', '='])
                .ok_or_else(|| format!("-r `{s}`: `{pair}` is not key:value"))?;
            if v.is_empty() {
                return Err(format!("-r `{s}`: `{k}` has no value"));
            }
            match k.to_ascii_lowercase().as_str() {
                "trtype" => trtype = Some(v.to_ascii_uppercase()),
                "adrfam" => adrfam = Some(v.to_ascii_lowercase()),
                "traddr" => id.traddr = v.to_string(),
                "trsvcid" => {
                    id.trsvcid = v
                        .parse()
                        .map_err(|_| format!("-r `{s}`: trsvcid `{v}` is not a TCP port"))?;
                }
                "subnqn" => id.subnqn = Some(v.to_string()),
                "hostnqn" => id.hostnqn = Some(v.to_string()),
                "ns" => {
                    id.nsid = Some(
                        v.parse::<u32>()
                            .ok()
                            .filter(|&n| n != 0 && n != u32::MAX)
                            .ok_or_else(|| format!("-r `{s}`: ns `{v}` is not a namespace ID"))?,
                    );
                }
                // Accepted and ignored, as SPDK's parser does for what does not apply.
                "priority" | "alt_traddr" | "hostaddr" | "hostsvcid" => {}
                other => return Err(format!("-r `{s}`: unknown key `{other}`")),
            }
        }
        match trtype.as_deref() {
            Some("TCP") => {}
            Some(t) => {
                return Err(format!("-r `{s}`: trtype {t} is not supported (only TCP)"));
            }
            None => return Err(format!("-r `{s}`: trtype is missing (trtype:TCP)")),
        }
        if let Some(a) = adrfam
            && a != "ipv4"
            && a != "ipv6"
        {
            return Err(format!("-r `{s}`: adrfam `{a}` (IPv4 or IPv6)"));
        }
        if id.traddr.is_empty() {
            return Err(format!("-r `{s}`: traddr is missing"));
        }
        if id.subnqn.is_none() && id.nsid.is_some() {
            return Err(format!("-r `{s}`: ns needs subnqn"));
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spdk_strings_parse() {
        let t: TransportId =
            "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4421 subnqn:nqn.2016-06.io.spdk:cnode1 ns:2"
                .parse()
                .unwrap();
        assert_eq!(t.traddr, "127.0.0.1");
        assert_eq!(t.trsvcid, 4421);
        assert_eq!(t.subnqn.as_deref(), Some("nqn.2016-06.io.spdk:cnode1"));
        assert_eq!(t.nsid, Some(2));
        let t: TransportId = "TRTYPE=tcp TRADDR=10.0.0.1 hostnqn:nqn.x:h"
            .parse()
            .unwrap();
        assert_eq!((t.trsvcid, t.subnqn, t.nsid), (4420, None, None));
        assert_eq!(t.hostnqn.as_deref(), Some("nqn.x:h"));
    }

    #[test]
    fn bad_strings_are_refused_with_a_reason() {
        for (bad, why) in [
            ("trtype:RDMA traddr:1.2.3.4", "only TCP"),
            ("traddr:1.2.3.4", "trtype is missing"),
            ("trtype:TCP", "traddr is missing"),
            ("trtype:TCP traddr:a trsvcid:99999", "not a TCP port"),
            ("trtype:TCP traddr:a subnqn:n ns:0", "not a namespace ID"),
            ("trtype:TCP traddr:a ns:1", "ns needs subnqn"),
            ("trtype:TCP traddr:a colour:blue", "unknown key"),
            ("trtype:TCP traddr", "not key:value"),
            ("trtype:TCP traddr:a adrfam:IB", "adrfam"),
        ] {
            let e = bad.parse::<TransportId>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains('\n'));
        }
    }
}
