//! `control/openapi.json` against a running `shoal-control`: every documented path answers,
//! every answer has the documented status and the required fields of its schema, and the
//! server serves no `/v1` path the document lacks.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

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

fn check_answer(doc: &Value, path: &str, method: &str, status: u16, body: &Value) {
    let op = &doc["paths"][path][method];
    let resp = resolve(doc, &op["responses"][status.to_string()]);
    assert!(
        resp.is_object(),
        "{method} {path}: status {status} is not documented"
    );
    let schema = &resp["content"]["application/json"]["schema"];
    if schema.is_null() {
        assert!(
            body.is_null(),
            "{method} {path} {status}: undocumented body {body}"
        );
        return;
    }
    check(doc, schema, body, &format!("{method} {path} {status}"));
}

#[test]
fn the_server_answers_as_the_document_says() {
    let dir = TempDir::new("openapi");
    let slice = Slice::new();
    let (_etcd, etcd) = start_etcd(slice, &dir.0);
    let (_control, api) = start_control(slice, 21, &etcd, &dir.0, 2);
    let node = start_node(slice, 11, "a", &etcd, &dir.0, 2);
    wait_for("node-11 online", Duration::from_secs(20), || {
        ctl_json(&api, &["node", "list"])["nodes"][0]["status"] == "online"
    });
    wait_for("a leader", Duration::from_secs(10), || {
        !ctl_json(&api, &["leader"])["leader"].is_null()
    });
    // The leader records the node's arrival on its next pass (every 500 ms), which the cases
    // below may outrun; `/v1/events` is checked against that event.
    let arrived = format!("{api}/v1/events?node=node-11&kind=node_online");
    wait_for("the node_online event", Duration::from_secs(10), || {
        let (_, evs) = http("GET", &arrived, None);
        evs["events"].as_array().is_some_and(|a| !a.is_empty())
    });
    let doc = doc();
    let disk = disk_file(&dir.0, "d.img", 64);
    let pool =
        json!({"node": "node-11", "name": "pool", "disk": format!("uring://{}", disk.display())});
    let vol = json!({"name": "v", "size_bytes": 8 << 20, "replicas": 1});
    let unknown = "00000000-0000-4000-8000-000000000000";
    // (documented path, method, URL, body, expected status); the volume's id is filled in.
    let cases: Vec<(&str, &str, String, Option<Value>, u16)> = vec![
        ("/v1/nodes", "get", "/v1/nodes".into(), None, 200),
        (
            "/v1/nodes/{id}",
            "get",
            "/v1/nodes/node-11".into(),
            None,
            200,
        ),
        (
            "/v1/nodes/{id}",
            "get",
            "/v1/nodes/nobody".into(),
            None,
            404,
        ),
        ("/v1/nodes/{id}", "get", "/v1/nodes/a%2Fb".into(), None, 400),
        ("/v1/leader", "get", "/v1/leader".into(), None, 200),
        ("/v1/instance", "get", "/v1/instance".into(), None, 200),
        (
            "/v1/pools",
            "post",
            "/v1/pools".into(),
            Some(pool.clone()),
            201,
        ),
        ("/v1/pools", "post", "/v1/pools".into(), Some(pool), 200),
        (
            "/v1/pools",
            "post",
            "/v1/pools".into(),
            Some(json!({"node": "node-11", "name": "pool", "disk": "malloc:///?size_mib=64"})),
            409,
        ),
        (
            "/v1/pools",
            "post",
            "/v1/pools".into(),
            Some(json!({"node": "nobody", "name": "p", "disk": "malloc:///?size_mib=64"})),
            404,
        ),
        (
            "/v1/pools",
            "post",
            "/v1/pools".into(),
            Some(json!({"node": "node-11"})),
            400,
        ),
        ("/v1/pools", "get", "/v1/pools".into(), None, 200),
        (
            "/v1/pools/{node}/{name}",
            "get",
            "/v1/pools/node-11/pool".into(),
            None,
            200,
        ),
        (
            "/v1/pools/{node}/{name}",
            "get",
            "/v1/pools/node-11/nothing".into(),
            None,
            404,
        ),
        (
            "/v1/volumes",
            "post",
            "/v1/volumes".into(),
            Some(vol.clone()),
            201,
        ),
        ("/v1/volumes", "post", "/v1/volumes".into(), Some(vol), 200),
        (
            "/v1/volumes",
            "post",
            "/v1/volumes".into(),
            Some(json!({"name": "v", "size_bytes": 4096})),
            409,
        ),
        (
            "/v1/volumes",
            "post",
            "/v1/volumes".into(),
            Some(json!({"name": "w", "size_bytes": 0})),
            400,
        ),
        (
            "/v1/volumes",
            "post",
            "/v1/volumes".into(),
            Some(json!({"name": "w", "size_bytes": 4096, "replicas": 2})),
            507,
        ),
        (
            "/v1/volumes",
            "post",
            "/v1/volumes".into(),
            Some(json!({"name": "w", "size_bytes": 4096, "source": {"volume_id": unknown}})),
            412,
        ),
        (
            "/v1/volumes",
            "get",
            "/v1/volumes?limit=1".into(),
            None,
            200,
        ),
        (
            "/v1/volumes",
            "get",
            "/v1/volumes?limit=x".into(),
            None,
            400,
        ),
        (
            "/v1/volumes/{id}",
            "get",
            "/v1/volumes/ID".into(),
            None,
            200,
        ),
        (
            "/v1/volumes/{id}",
            "get",
            format!("/v1/volumes/{unknown}"),
            None,
            404,
        ),
        (
            "/v1/volumes/{id}",
            "get",
            "/v1/volumes/not-a-uuid".into(),
            None,
            400,
        ),
        (
            "/v1/volumes/{id}/publish",
            "post",
            "/v1/volumes/ID/publish".into(),
            Some(json!({})),
            200,
        ),
        (
            "/v1/volumes/{id}/publish",
            "post",
            "/v1/volumes/ID/publish".into(),
            Some(json!({"node": "node-12"})),
            412,
        ),
        (
            "/v1/volumes/{id}/publish",
            "post",
            format!("/v1/volumes/{unknown}/publish"),
            None,
            404,
        ),
        (
            "/v1/volumes/{id}/resize",
            "post",
            "/v1/volumes/ID/resize".into(),
            Some(json!({"size_bytes": 8 << 20})),
            200,
        ),
        (
            "/v1/volumes/{id}/resize",
            "post",
            "/v1/volumes/ID/resize".into(),
            Some(json!({"size_bytes": 16 << 20})),
            200,
        ),
        (
            "/v1/volumes/{id}/resize",
            "post",
            "/v1/volumes/ID/resize".into(),
            Some(json!({"size_bytes": 1u64 << 40})),
            507,
        ),
        (
            "/v1/volumes/{id}/resize",
            "post",
            "/v1/volumes/ID/resize".into(),
            Some(json!({"size_bytes": 4096})),
            416,
        ),
        (
            "/v1/volumes/{id}/resize",
            "post",
            "/v1/volumes/ID/resize".into(),
            Some(json!({})),
            400,
        ),
        (
            "/v1/volumes/{id}/unpublish",
            "post",
            "/v1/volumes/ID/unpublish".into(),
            None,
            204,
        ),
        (
            "/v1/volumes/{id}/unpublish",
            "post",
            format!("/v1/volumes/{unknown}/unpublish"),
            None,
            404,
        ),
        (
            "/v1/pools/{node}/{name}",
            "delete",
            "/v1/pools/node-11/pool".into(),
            None,
            412,
        ),
        (
            "/v1/snapshots",
            "post",
            "/v1/snapshots".into(),
            Some(json!({"name": "s", "volume_id": "ID"})),
            201,
        ),
        (
            "/v1/snapshots",
            "post",
            "/v1/snapshots".into(),
            Some(json!({"name": "s", "volume_id": "ID"})),
            200,
        ),
        (
            "/v1/snapshots",
            "post",
            "/v1/snapshots".into(),
            Some(json!({"name": "s", "volume_id": unknown})),
            409,
        ),
        (
            "/v1/snapshots",
            "post",
            "/v1/snapshots".into(),
            Some(json!({"name": "t", "volume_id": unknown})),
            404,
        ),
        (
            "/v1/snapshots",
            "post",
            "/v1/snapshots".into(),
            Some(json!({"name": "", "volume_id": "ID"})),
            400,
        ),
        (
            "/v1/snapshots",
            "get",
            "/v1/snapshots?volume_id=ID&limit=1".into(),
            None,
            200,
        ),
        (
            "/v1/snapshots",
            "get",
            "/v1/snapshots?limit=0".into(),
            None,
            400,
        ),
        (
            "/v1/snapshots/{id}",
            "get",
            "/v1/snapshots/SID".into(),
            None,
            200,
        ),
        (
            "/v1/snapshots/{id}",
            "get",
            format!("/v1/snapshots/{unknown}"),
            None,
            404,
        ),
        (
            "/v1/snapshots/{id}",
            "delete",
            "/v1/snapshots/SID".into(),
            None,
            204,
        ),
        (
            "/v1/snapshots/{id}",
            "delete",
            format!("/v1/snapshots/{unknown}"),
            None,
            404,
        ),
        (
            "/v1/capacity",
            "get",
            "/v1/capacity?zone=a".into(),
            None,
            200,
        ),
        ("/v1/events", "get", "/v1/events".into(), None, 200),
        (
            "/v1/events",
            "get",
            "/v1/events?node=node-11&kind=node_online&limit=5".into(),
            None,
            200,
        ),
        (
            "/v1/events",
            "get",
            "/v1/events?volume=ID".into(),
            None,
            200,
        ),
        ("/v1/events", "get", "/v1/events?limit=0".into(), None, 400),
        (
            "/v1/events",
            "get",
            "/v1/events?kind=nothing".into(),
            None,
            400,
        ),
        (
            "/v1/volumes/{id}",
            "delete",
            "/v1/volumes/ID".into(),
            None,
            204,
        ),
        (
            "/v1/volumes/{id}",
            "delete",
            "/v1/volumes/ID".into(),
            None,
            404,
        ),
        (
            "/v1/pools/{node}/{name}",
            "delete",
            "/v1/pools/node-11/pool".into(),
            None,
            204,
        ),
    ];
    let (mut id, mut sid) = (String::new(), String::new());
    for (path, method, url, body, want) in &cases {
        let fill = |t: &str| t.replace("SID", &sid).replace("ID", &id);
        let url = fill(url);
        let body = body
            .as_ref()
            .map(|b| serde_json::from_str::<Value>(&fill(&b.to_string())).unwrap());
        let (status, answer) = http(&method.to_uppercase(), &format!("{api}{url}"), body);
        assert_eq!(status, *want, "{method} {url}: {answer}");
        check_answer(&doc, path, method, status, &answer);
        if *path == "/v1/volumes" && status == 201 {
            id = answer["id"].as_str().unwrap().to_owned();
        }
        if *path == "/v1/snapshots" && status == 201 {
            sid = answer["id"].as_str().unwrap().to_owned();
        }
        if *path == "/v1/events" && status == 200 && !url.contains("volume=") {
            // The node came online under this leader: at least that event, so the Event
            // schema is checked on a real one.
            let evs = answer["events"].as_array().unwrap();
            assert!(
                evs.iter()
                    .any(|e| e["kind"] == "node_online" && e["node"] == "node-11"),
                "{answer}"
            );
        }
    }
    // Every documented operation was exercised.
    for (p, ops) in doc["paths"].as_object().unwrap() {
        for m in ops
            .as_object()
            .unwrap()
            .keys()
            .filter(|m| *m != "parameters")
        {
            assert!(
                cases.iter().any(|(c, cm, ..)| c == p && cm == m),
                "{m} {p} untested"
            );
        }
    }
    // And nothing undocumented is served.
    let (status, body) = http("GET", &format!("{api}/v1/replicas"), None);
    assert_eq!(status, 404, "{body}");
    drop(node);
}
