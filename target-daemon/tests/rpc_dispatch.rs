//! The registry without sockets: built-in methods, RPC states, aliases, ignored methods.

mod rpc_common;

use rpc_common::{TestCtx, test_registry};
use serde_json::{Value, json};
use shoal_target::rpc::{RpcState, StateMask};

fn names(v: &Value) -> Vec<&str> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|n| n.as_str().expect("string"))
        .collect()
}

#[test]
fn rpc_get_methods_filters_by_state_and_aliases() {
    let r = test_registry();
    let ctx = TestCtx::default();
    let all = r.call(&ctx, "rpc_get_methods", None).expect("all");
    let all = names(&all);
    assert!(all.contains(&"startup_only"));
    assert!(all.contains(&"spdk_get_version") && all.contains(&"rpc_get_methods"));
    assert!(
        all.contains(&"nvmf_set_config"),
        "housekeeping methods are listed"
    );
    assert!(!all.contains(&"construct_malloc_bdev"));
    let mut sorted = all.clone();
    sorted.sort_unstable();
    assert_eq!(all, sorted);

    let current = r
        .call(
            &ctx,
            "rpc_get_methods",
            Some(json!({"current": true, "include_aliases": true})),
        )
        .expect("current");
    let current = names(&current);
    assert!(!current.contains(&"startup_only"));
    assert!(current.contains(&"construct_malloc_bdev"));
    assert!(
        r.call(&ctx, "rpc_get_methods", Some(json!({"current": "yes"})))
            .expect_err("bad type")
            .message
            .starts_with("rpc_get_methods: invalid `current`")
    );
}

#[test]
fn rpc_states_gate_methods_like_spdk() {
    let r = test_registry();
    let ctx = TestCtx::default();
    let state = r.state().clone();
    assert_eq!(state.get(), RpcState::Runtime);
    assert_eq!(
        r.call(&ctx, "startup_only", None)
            .expect_err("runtime")
            .code,
        -1
    );
    state.set(RpcState::Startup);
    assert_eq!(r.call(&ctx, "startup_only", None), Ok(Value::Bool(true)));
    let e = r.call(&ctx, "echo", None).expect_err("startup");
    assert_eq!(e.code, -1);
    assert!(e.message.contains("framework_start_init"), "{}", e.message);
    // Built-ins and housekeeping methods work in both states.
    assert!(r.call(&ctx, "spdk_get_version", None).is_ok());
    assert!(r.call(&ctx, "rpc_get_methods", None).is_ok());
    assert_eq!(
        r.call(
            &ctx,
            "sock_impl_set_options",
            Some(json!({"impl_name": "posix"}))
        ),
        Ok(Value::Bool(true))
    );
    assert!(StateMask::ANY.allows(RpcState::Startup) && StateMask::ANY.allows(RpcState::Runtime));
    assert!(!StateMask::STARTUP.allows(RpcState::Runtime));
}

#[test]
fn handle_message_semantics() {
    let r = test_registry();
    let ctx = TestCtx::default();
    // null params and absent params are the same; a null id is a request, not a notification.
    let resp = r
        .handle_message(
            &ctx,
            json!({"jsonrpc": "2.0", "method": "echo", "params": null, "id": null}),
        )
        .expect("answered");
    assert_eq!(resp, json!({"jsonrpc": "2.0", "id": null, "result": {}}));
    // `jsonrpc` may be omitted (SPDK accepts it), but must be "2.0" when present.
    assert!(
        r.handle_message(&ctx, json!({"method": "echo", "id": 1}))
            .expect("answered")
            .get("result")
            .is_some()
    );
    assert_eq!(
        r.handle_message(&ctx, json!({"jsonrpc": 2.0, "method": "echo", "id": 1}))
            .expect("answered")["error"]["code"],
        -32600
    );
    // Notifications, even failing ones, are silent.
    assert_eq!(
        r.handle_message(&ctx, json!({"jsonrpc": "2.0", "method": "panic"})),
        None
    );
    assert_eq!(
        r.handle_message(&ctx, json!([{"jsonrpc": "2.0", "method": "nope"}])),
        None
    );
    assert_eq!(
        r.handle_message(&ctx, json!([])).expect("answered")["error"]["code"],
        -32600
    );
    let batch = r
        .handle_message(
            &ctx,
            json!([1, {"jsonrpc": "2.0", "method": "echo", "id": "a"}]),
        )
        .expect("answered");
    assert_eq!(batch[0]["error"]["code"], -32600);
    assert_eq!(batch[1], json!({"jsonrpc": "2.0", "id": "a", "result": {}}));
}

#[test]
#[should_panic(expected = "registered twice")]
fn duplicate_registration_is_a_programming_error() {
    let mut r = test_registry();
    r.register("echo", |_ctx: &TestCtx, p: Value| Ok(p));
}
