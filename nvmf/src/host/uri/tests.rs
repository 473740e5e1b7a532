//! Tests of the `nvmf://` parser: the forms it accepts, the ones it refuses, and a proptest
//! round trip through `Display`.

use proptest::prelude::*;

use super::*;

fn parse(s: &str) -> NvmfUri {
    NvmfUri::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn full_uri_parses() {
    let u = parse(
        "nvmf://10.0.0.2:4421/nqn.2016-06.io.shoal:vol1?hostnqn=nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555&nsid=2&name=r1&hdr-digest=1&ctrl-loss-tmo=2.5&reconnect_delay=250ms",
    );
    assert_eq!((u.host(), u.port()), ("10.0.0.2", 4421));
    assert_eq!(u.subnqn(), "nqn.2016-06.io.shoal:vol1");
    assert_eq!(u.nsid(), 2);
    assert_eq!(u.name(), Some("r1"));
    let o = u.connect_options();
    assert!(o.header_digest && !o.data_digest);
    assert_eq!(o.ctrl_loss_tmo, Duration::from_millis(2500));
    assert_eq!(o.reconnect_delay, Duration::from_millis(250));
    assert_eq!(o.hostid[0], 0x11, "host ID taken from the uuid host NQN");
    assert_eq!(
        u.hostnqn(),
        Some("nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555")
    );
    // Shown back as written.
    assert_eq!(
        u.to_string(),
        "nvmf://10.0.0.2:4421/nqn.2016-06.io.shoal:vol1?hostnqn=nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555&nsid=2&name=r1&hdr-digest=1&ctrl-loss-tmo=2.5&reconnect_delay=250ms"
    );
}

#[test]
fn defaults_ipv6_and_percent_decoding() {
    let v6 = parse("nvmf+tcp://[::1]/nqn.a%3Ab");
    assert_eq!((v6.host(), v6.port()), ("::1", 4420));
    assert_eq!(v6.subnqn(), "nqn.a:b");
    assert_eq!(v6.nsid(), 1);
    assert_eq!(v6.default_name(), "::1:4420/nqn.a:b/n1");
    assert_eq!(v6.to_string(), "nvmf://[::1]:4420/nqn.a:b");
    let u = parse("nvmf://[fe80::1]:4420/nqn.x:y?hostnqn=nqn.h:1");
    assert_eq!(
        (u.host(), u.port(), u.subnqn()),
        ("fe80::1", 4420, "nqn.x:y")
    );
    assert_eq!(u.hostnqn(), Some("nqn.h:1"));
    assert_eq!(
        u.to_string(),
        "nvmf://[fe80::1]:4420/nqn.x:y?hostnqn=nqn.h:1"
    );
    // A %-encoded value, and a value that needs encoding when shown.
    let u = parse("nvmf://h/n?name=a%26b");
    assert_eq!(u.name(), Some("a&b"));
    assert_eq!(u.to_string(), "nvmf://h:4420/n?name=a%26b");
    assert_eq!(parse(&u.to_string()), u);
    // A `/` in the NQN is kept as it is.
    assert_eq!(parse("nvmf://h/a/b").subnqn(), "a/b");
    assert_eq!(parse("nvmf://h/a/b").to_string(), "nvmf://h:4420/a/b");
}

/// The forms the scripts in hack/ and the control plane build (see `grep -r nvmf:// hack
/// control`) parse and are shown back unchanged.
#[test]
fn forms_in_use_parse_unchanged() {
    for s in [
        // hack/tests/lib-nexus.sh, test-crash-nexus.sh
        "nvmf://127.0.0.2:4420/nqn.2016-06.io.shoal:replica2?hostnqn=nqn.2014-08.org.nvmexpress:uuid:5ba1e0b1-0000-4000-8000-0000000000a1&ctrl-loss-tmo=3",
        // hack/interop-spdk.sh
        "nvmf://127.0.0.1:4430/nqn.2016-06.io.spdk:interop-nxd?hostnqn=nqn.2016-06.io.shoal:h&ctrl-loss-tmo=5&hdgst=true&ddgst=true",
        // control: format!("nvmf://{}/{}?hostnqn={host}", SocketAddr, replica NQN)
        "nvmf://127.0.0.2:4420/nqn.2016-06.io.shoal:replica:6a1f3e56-0000-4000-8000-00000000c0de:node-2?hostnqn=nqn.2016-06.io.shoal:node:n1",
        "nvmf://[fd00::2]:4420/nqn.2016-06.io.shoal:replica:v:n2?hostnqn=nqn.2016-06.io.shoal:node:n1",
        // nvmf/tests, the benches
        "nvmf://127.0.0.1:4420/nqn.2016-06.io.shoal:vol0?hostnqn=nqn.2016-06.io.shoal:h&nsid=1&name=Remote0",
        "nvmf://127.0.0.2:4523/nqn.2016-06.io.shoal:bench",
    ] {
        assert_eq!(parse(s).to_string(), s);
    }
    let o =
        parse("nvmf://h/n?hdgst=true&ddgst=true&kato=2s&queue-size=64&nr-io-queues=2&io-timeout=1")
            .connect_options();
    assert!(o.header_digest && o.data_digest);
    assert_eq!(o.kato, Duration::from_secs(2));
    assert_eq!((o.io_queue_depth, o.io_queues), (64, 2));
    assert_eq!(o.io_timeout, Duration::from_secs(1));
}

#[test]
fn bad_uris_are_refused_with_a_reason() {
    let long_nqn = format!("nvmf://h:1/{}", "n".repeat(NQN_MAX_LEN + 1));
    let long_uri = format!("nvmf://h/{}", "x".repeat(MAX_URI_BYTES));
    for (bad, why) in [
        ("http://x/nqn", "expected nvmf://"),
        ("", "expected nvmf://"),
        ("nvmf://host:0/nqn", "port"),
        ("nvmf://host:70000/nqn", "port"),
        ("nvmf://host:99999/nqn", "port"),
        ("nvmf://host:x/nqn", "port"),
        ("nvmf://host", "no /NQN"),
        ("nvmf://host:4420", "no /NQN"),
        ("nvmf://host:4420/", "subsystem NQN is empty"),
        ("nvmf://:4420/nqn", "host is empty"),
        ("nvmf:///nqn", "host is empty"),
        ("nvmf://[::1/nqn", "unclosed"),
        ("nvmf://[::1:4420/nqn", "unclosed"),
        ("nvmf://[zz]:4420/nqn", "not an IPv6"),
        ("nvmf://[::1]x/nqn", "expected :PORT"),
        ("nvmf://fe80::1/nqn", "in brackets"),
        ("nvmf://h st:4420/nqn", "invalid characters"),
        ("nvmf://h:4420/n q", "blanks"),
        ("nvmf://h:4420/n%20q", "blanks"),
        ("nvmf://h:4420/n%0Aq", "blanks"),
        ("nvmf://h/n%zzq", "%-escape"),
        ("nvmf://h/n%4", "%-escape"),
        ("nvmf://h/n%FF", "not UTF-8"),
        ("nvmf://h/n#frag", "fragment"),
        ("nvmf://h:4420/nqn?f o=1", "bad parameter name"),
        ("nvmf://h:4420/nqn?=1", "bad parameter name"),
        ("nvmf://h:4420/nqn?nsid=1&nsid=2", "given twice"),
        (
            "nvmf://h:4420/nqn?ctrl-loss-tmo=1&ctrl_loss_tmo=2",
            "given twice",
        ),
        ("nvmf://h:4420/nqn?hdgst=1&hdr-digest=0", "given twice"),
        ("nvmf://h:4420/nqn?nsid=", "empty value"),
        ("nvmf://h:4420/nqn?name=a%20b", "blanks"),
        ("nvmf://h:4420/nqn?hostnqn=", "empty value"),
        ("nvmf://h:4420/nqn?hostnqn=a&hostnqn=b", "given twice"),
        ("nvmf://h/nqn?nsid=0", "not a namespace"),
        ("nvmf://h/nqn?nsid=4294967295", "not a namespace"),
        ("nvmf://h/nqn?nsid=4294967296", "not a valid number"),
        ("nvmf://h/nqn?nsid", "not a valid number"),
        ("nvmf://h/nqn?bogus=1", "unknown parameter"),
        ("nvmf://h/nqn?ctrl-loss-tmo=-1", "not a duration"),
        ("nvmf://h/nqn?ctrl-loss-tmo=1e300", "not a duration"),
        ("nvmf://h/nqn?io-timeout=0", "timeouts must not be zero"),
        ("nvmf://h/nqn?queue-size=1", "queue depths"),
        ("nvmf://h/nqn?queue-size=65536", "not a valid number"),
        ("nvmf://h/nqn?hdgst=maybe", "not a boolean"),
        ("nvmf://h/nqn?hostid=xyz", "not a UUID"),
        ("nvmf://h/nqn?kato=5000000", "KATO"),
        (long_nqn.as_str(), "longer than 223"),
        (long_uri.as_str(), "longer than 1024"),
    ] {
        match NvmfUri::parse(bad) {
            Ok(u) => panic!("{bad} parsed as {u:?}"),
            Err(e) => assert!(e.reason.contains(why), "{bad}: `{e}` does not say `{why}`"),
        }
    }
}

fn nqn_chars() -> impl Strategy<Value = String> {
    // Any characters an NQN may hold, separators of URIs among them; at most 223 bytes.
    "[a-zA-Z0-9.:/?#&=%+~@é-]{1,60}".prop_filter("NQN length", |s| s.len() <= NQN_MAX_LEN)
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9][a-z0-9.-]{0,20}",
        any::<std::net::Ipv4Addr>().prop_map(|a| a.to_string()),
        any::<std::net::Ipv6Addr>().prop_map(|a| a.to_string()),
    ]
}

fn param() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        nqn_chars().prop_map(|v| ("hostnqn".to_owned(), v)),
        (1u32..u32::MAX).prop_map(|n| ("nsid".to_owned(), n.to_string())),
        "[a-zA-Z0-9&=?#/%]{1,20}".prop_map(|v| ("name".to_owned(), v)),
        any::<bool>().prop_map(|b| ("hdgst".to_owned(), b.to_string())),
        any::<bool>().prop_map(|b| ("data-digest".to_owned(), u8::from(b).to_string())),
        (0u32..100_000).prop_map(|ms| ("ctrl-loss-tmo".to_owned(), format!("{ms}ms"))),
        (1u32..1000).prop_map(|s| ("io_timeout".to_owned(), format!("{s}s"))),
        (2u16..=u16::MAX).prop_map(|n| ("queue-size".to_owned(), n.to_string())),
        any::<u128>().prop_map(|u| ("hostid".to_owned(), Uuid::from_u128(u).to_string())),
    ]
}

/// %-encodes every byte of `s` that is not a letter or digit: the parser must decode any
/// escape, not only the ones `Display` writes.
fn encode_all(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

proptest! {
    /// A URI written from parts parses to those parts, is shown back in a form that parses to
    /// the same value, and the shown form is stable.
    #[test]
    fn round_trip(
        host in host(),
        port in proptest::option::of(1u16..),
        nqn in nqn_chars(),
        params in proptest::collection::vec(param(), 0..5),
        v6_scheme in any::<bool>(),
    ) {
        let mut params = params;
        let mut seen = Vec::new();
        params.retain(|(k, _)| {
            let fresh = !seen.contains(&canonical(k));
            seen.push(canonical(k));
            fresh
        });
        let authority = match (host.contains(':'), port) {
            (true, Some(p)) => format!("[{host}]:{p}"),
            (true, None) => format!("[{host}]"),
            (false, Some(p)) => format!("{host}:{p}"),
            (false, None) => host.clone(),
        };
        let scheme = if v6_scheme { "nvmf+tcp" } else { "nvmf" };
        let mut text = format!("{scheme}://{authority}/{}", encode_all(&nqn));
        for (i, (k, v)) in params.iter().enumerate() {
            text.push(if i == 0 { '?' } else { '&' });
            text.push_str(&format!("{k}={}", encode_all(v)));
        }
        let u = NvmfUri::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(u.host(), host.as_str());
        prop_assert_eq!(u.port(), port.unwrap_or(DEFAULT_PORT));
        prop_assert_eq!(u.subnqn(), nqn.as_str());
        prop_assert_eq!(u.params().count(), params.len());
        let shown = u.to_string();
        let again = NvmfUri::parse(&shown).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&again, &u);
        prop_assert_eq!(again.to_string(), shown);
    }

    /// Whatever the text, parsing returns (no panic), and what parses survives the round trip.
    #[test]
    fn any_text(s in "(nvmf://)?[\\[\\]a-z0-9:./?&=%#_-]{0,80}") {
        if let Ok(u) = NvmfUri::parse(&s) {
            prop_assert_eq!(NvmfUri::parse(&u.to_string()).ok(), Some(u));
        }
    }
}
