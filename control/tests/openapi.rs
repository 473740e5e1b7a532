//! `control/openapi.json` against a running `shoal-control`: every documented path answers,
//! every answer has the documented status and the required fields of its schema, and the
//! server serves no `/v1` path the document lacks.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn doc() -> Value {
    serde_json::from_str(include_str!("../openapi.json")).unwrap()
}

fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let mut cur = doc;
            for part in r.trim_start_matches("#/").split('/') {
                cur = &cur[part];
            }
            resolve(doc, cur)
        }
        None => v,
    }
}

/// Checks `value` against the subset of JSON Schema the document uses.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) {
    let schema = resolve(doc, schema);
    if value.is_null() && schema["nullable"] == true {
        return;
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            check(doc, s, value, at);
        }
        return;
    }
    match schema["type"].as_str() {
        Some("object") => {
            let obj = value
                .as_object()
                .unwrap_or_else(|| panic!("{at}: not an object: {value}"));
            for r in schema["required"].as_array().into_iter().flatten() {
                assert!(
                    obj.contains_key(r.as_str().unwrap()),
                    "{at}: missing {r}: {value}"
                );
            }
            let props = schema["properties"].as_object();
            for (k, v) in obj {
                match props.and_then(|p| p.get(k)) {
                    Some(s) => check(doc, s, v, &format!("{at}.{k}")),
                    None => match schema.get("additionalProperties") {
                        Some(s) => check(doc, s, v, &format!("{at}.{k}")),
                        None => panic!("{at}: field {k} is not documented"),
                    },
                }
            }
        }
        Some("array") => {
            for (i, item) in value.as_array().unwrap().iter().enumerate() {
                check(doc, &schema["items"], item, &format!("{at}[{i}]"));
            }
        }
        Some("string") => {
            let s = value
                .as_str()
                .unwrap_or_else(|| panic!("{at}: not a string"));
            if let Some(e) = schema["enum"].as_array() {
                assert!(e.iter().any(|x| x == s), "{at}: {s} not in {e:?}");
            }
        }
        Some("integer") => assert!(value.is_u64() || value.is_i64(), "{at}: not an integer"),
        Some("boolean") => assert!(value.is_boolean(), "{at}: not a boolean"),
        other => panic!("{at}: schema type {other:?} not handled"),
    }
}

async fn fetch(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn check_answer(doc: &Value, path: &str, status: u16, body: &Value) {
    let op = &doc["paths"][path]["get"];
    let resp = resolve(doc, &op["responses"][status.to_string()]);
    assert!(
        resp.is_object(),
        "{path}: status {status} is not documented"
    );
    let schema = &resp["content"]["application/json"]["schema"];
    check(doc, schema, body, &format!("{path} {status}"));
}

#[test]
fn the_server_answers_as_the_document_says() {
    let dir = TempDir::new("openapi");
    let slice = Slice::new();
    let (_etcd, etcd) = start_etcd(slice, &dir.0);
    let (_control, api) = start_control(slice, 21, &etcd, &dir.0, 2);
    let _node = start_node(slice, 11, "a", &etcd, &dir.0, 2);
    wait_for("node-11 online", Duration::from_secs(20), || {
        ctl_json(&api, &["node", "list"])["nodes"][0]["status"] == "online"
    });
    wait_for("a leader", Duration::from_secs(10), || {
        !ctl_json(&api, &["leader"])["leader"].is_null()
    });
    let doc = doc();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cases = [
            ("/v1/nodes", "/v1/nodes", 200),
            ("/v1/nodes/{id}", "/v1/nodes/node-11", 200),
            ("/v1/nodes/{id}", "/v1/nodes/nobody", 404),
            ("/v1/nodes/{id}", "/v1/nodes/a%2Fb", 400),
            ("/v1/leader", "/v1/leader", 200),
            ("/v1/instance", "/v1/instance", 200),
        ];
        for (path, url, want) in cases {
            let (status, body) = fetch(&format!("{api}{url}")).await;
            assert_eq!(status, want, "{url}: {body}");
            check_answer(&doc, path, status, &body);
        }
        // Every documented path was exercised.
        for p in doc["paths"].as_object().unwrap().keys() {
            assert!(cases.iter().any(|(c, _, _)| c == p), "{p} untested");
        }
        // And nothing undocumented is served.
        let (status, body) = fetch(&format!("{api}/v1/volumes")).await;
        assert_eq!(status, 404, "{body}");
    });
}
