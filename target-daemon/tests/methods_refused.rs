//! Parameters that ask for security Shoal does not implement (TLS, DH-HMAC-CHAP, per-host
//! namespace visibility) are refused with an error naming them, over RPC and from a
//! configuration file, and nothing is created: an operator who asked for TLS never gets
//! plaintext. The same requests without those parameters (or with them at their "off"
//! value, as SPDK's `rpc.py` sends them) still work.

mod methods_common;

use methods_common::{TestDaemon, free_port, listener};
use serde_json::{Value, json};
use shoal_target::config::{ConfigDocument, ConfigError};
use shoal_target::rpc::error::ENOTSUP;

const NQN: &str = "nqn.2016-06.io.shoal:refused";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:0f8e5b3c-0000-4000-8000-00000000000b";

fn with_subsystem() -> TestDaemon {
    let t = TestDaemon::start();
    t.ok("nvmf_create_transport", json!({"trtype": "TCP"}));
    t.ok("nvmf_create_subsystem", json!({"nqn": NQN}));
    t.ok(
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 64, "block_size": 512}),
    );
    t
}

/// Calls `method` with `params`, which must be refused naming every one of `names`.
#[track_caller]
fn refused(t: &TestDaemon, method: &str, params: Value, names: &[&str]) {
    let m = t.err(method, params, -ENOTSUP);
    assert!(m.contains("not supported"), "{m}");
    for n in names {
        assert!(
            m.contains(&format!("`{n}`")),
            "{method}: {m} should name {n}"
        );
    }
}

fn subsystem(t: &TestDaemon) -> Value {
    let all = t.ok("nvmf_get_subsystems", json!({}));
    all.as_array()
        .and_then(|a| a.iter().find(|s| s["nqn"] == NQN).cloned())
        .expect("the subsystem")
}

#[test]
fn host_authentication_and_tls_keys_are_refused() {
    let t = with_subsystem();
    for (key, val) in [
        ("psk", json!("key0")),
        ("dhchap_key", json!("key1")),
        ("dhchap_ctrlr_key", json!("key2")),
    ] {
        let mut p = json!({"nqn": NQN, "host": HOST});
        p[key] = val;
        refused(&t, "nvmf_subsystem_add_host", p, &[key]);
    }
    refused(
        &t,
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": HOST, "psk": "k", "dhchap_key": "d"}),
        &["psk", "dhchap_key"],
    );
    assert_eq!(subsystem(&t)["hosts"], json!([]), "no host was added");
    // Without them the host is added.
    t.ok("nvmf_subsystem_add_host", json!({"nqn": NQN, "host": HOST}));
    assert_eq!(subsystem(&t)["hosts"][0]["nqn"], json!(HOST));
}

#[test]
fn tls_listeners_are_refused() {
    let t = with_subsystem();
    let port = free_port();
    let mut p = listener(NQN, port);
    p["secure_channel"] = json!(true);
    refused(&t, "nvmf_subsystem_add_listener", p, &["secure_channel"]);
    let mut p = listener(NQN, port);
    p["sock_impl"] = json!("ssl");
    refused(&t, "nvmf_subsystem_add_listener", p, &["sock_impl"]);
    assert_eq!(subsystem(&t)["listen_addresses"], json!([]));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens in plaintext"
    );
    // `rpc.py` sends `secure_channel: false`; another socket implementation is only a knob.
    let mut p = listener(NQN, port);
    p["secure_channel"] = json!(false);
    p["sock_impl"] = json!("posix");
    t.ok("nvmf_subsystem_add_listener", p);
    t.ok("sock_set_default_impl", json!({"impl_name": "posix"}));
    refused(
        &t,
        "sock_set_default_impl",
        json!({"impl_name": "ssl"}),
        &["impl_name"],
    );
}

#[test]
fn a_namespace_hidden_from_other_hosts_is_refused() {
    let t = with_subsystem();
    refused(
        &t,
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "M0", "no_auto_visible": true}}),
        &["namespace.no_auto_visible"],
    );
    assert_eq!(subsystem(&t)["namespaces"], json!([]));
    t.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "M0", "no_auto_visible": false}}),
    );
}

/// A configuration file that asks for any of them fails to load, with the same message.
#[test]
fn a_config_file_asking_for_them_fails_to_load() {
    let port = free_port();
    let cases = [
        (
            "nvmf_subsystem_add_host",
            json!({"nqn": NQN, "host": HOST, "psk": "/etc/psk"}),
            "psk",
        ),
        (
            "nvmf_subsystem_add_listener",
            {
                let mut p = listener(NQN, port);
                p["secure_channel"] = json!(true);
                p
            },
            "secure_channel",
        ),
        (
            "sock_set_default_impl",
            json!({"impl_name": "ssl"}),
            "impl_name",
        ),
    ];
    for (method, params, name) in cases {
        let doc = json!({"subsystems": [
            {"subsystem": "sock", "config": if method == "sock_set_default_impl" {
                json!([{"method": method, "params": params}])
            } else {
                json!([])
            }},
            {"subsystem": "nvmf", "config": [
                {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
                {"method": "nvmf_create_subsystem", "params": {"nqn": NQN}},
                if method == "sock_set_default_impl" {
                    json!({"method": "nvmf_get_subsystems"})
                } else {
                    json!({"method": method, "params": params})
                }
            ]}
        ]});
        let t = TestDaemon::start();
        let parsed = ConfigDocument::parse(&doc.to_string()).expect("parse");
        match parsed.apply(&t.registry, &t.daemon) {
            Err(ConfigError::Apply {
                method: m, error, ..
            }) => {
                assert_eq!(m, method);
                assert_eq!(error.code, -ENOTSUP, "{}", error.message);
                assert!(
                    error.message.contains(&format!("`{name}`")),
                    "{}",
                    error.message
                );
            }
            other => panic!("{method}: the config loaded: {other:?}"),
        }
    }
}
