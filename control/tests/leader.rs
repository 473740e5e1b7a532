//! Leader election with real processes: two `shoal-control` on one etcd, one leads; `kill -9`
//! of the leader hands the lead to the other within the lease TTL plus a margin.

mod common;

use std::time::{Duration, Instant};

use common::*;

const TTL: u32 = 2;

fn leader_of(api: &str) -> Option<String> {
    ctl_json(api, &["leader"])["leader"]["id"]
        .as_str()
        .map(str::to_owned)
}

fn instance_leads(api: &str) -> bool {
    api_get(api, "/v1/instance")["leader"] == true
}

/// A GET through the library's API client.
fn api_get(api: &str, path: &str) -> serde_json::Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(shoal_control::cli::get(api, path)).unwrap()
}

#[test]
fn the_other_instance_leads_after_the_leader_is_killed() {
    let dir = TempDir::new("leader");
    let slice = Slice::new();
    let (_etcd, etcd) = start_etcd(slice, &dir.0);
    let (mut c1, api1) = start_control(slice, 21, &etcd, &dir.0, TTL);
    wait_for("control-21 to lead", Duration::from_secs(10), || {
        leader_of(&api1).as_deref() == Some("control-21")
    });
    let (mut c2, api2) = start_control(slice, 22, &etcd, &dir.0, TTL);
    // Both agree; only one acts.
    assert_eq!(leader_of(&api2).as_deref(), Some("control-21"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(instance_leads(&api1));
    assert!(!instance_leads(&api2), "the second instance must wait");

    c1.kill9();
    let t0 = Instant::now();
    wait_for("control-22 to lead", Duration::from_secs(15), || {
        instance_leads(&api2)
    });
    let failover = t0.elapsed();
    eprintln!("failover after kill -9 of the leader: {failover:?} (lease TTL {TTL} s)");
    assert!(
        failover < Duration::from_secs(u64::from(TTL) + 3),
        "failover took {failover:?}"
    );
    assert_eq!(leader_of(&api2).as_deref(), Some("control-22"));
    c2.assert_running();

    // A clean stop resigns: a third instance takes over at once, not after the TTL.
    let (_c3, api3) = start_control(slice, 23, &etcd, &dir.0, TTL);
    let pid = i32::try_from(c2.child.id()).unwrap();
    // SAFETY: kill(2) on a child we spawned and have not reaped; touches no memory.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let t0 = Instant::now();
    wait_for("control-23 to lead", Duration::from_secs(10), || {
        instance_leads(&api3)
    });
    let handover = t0.elapsed();
    eprintln!("handover after SIGTERM of the leader: {handover:?}");
    assert!(
        handover < Duration::from_secs(u64::from(TTL)),
        "{handover:?}"
    );
}
