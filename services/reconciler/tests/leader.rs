//! Several reconciler replicas against one control plane: all keep their index warm,
//! exactly one reconciles, and leadership moves on a crash (after the lease expires) and
//! on a clean shutdown (at once). A test binary of its own: the Lease is cluster-wide.

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use support::{
    Reconciler, admin, events, namespace_with, scale_externally, set_setpoint, wait_for_replicas,
};

async fn start(identity: &str) -> Reconciler {
    Reconciler::start(identity).await
}

async fn is_leader(reconciler: &Reconciler) -> bool {
    reconciler.is_leader().await
}

async fn lease_holder() -> Option<String> {
    let admin = testenv::shared().await.admin_client().await.ok()?;
    Api::<Lease>::namespaced(admin, "setpoint")
        .get("setpoint-leader")
        .await
        .ok()?
        .spec?
        .holder_identity
}

/// Reporting instances of the `reason` Events in `namespace`.
async fn reporters(namespace: &str, reason: &str) -> Vec<String> {
    events(namespace, reason)
        .await
        .into_iter()
        .filter_map(|event| event.reporting_instance)
        .collect()
}

#[tokio::test]
async fn one_replica_reconciles_and_leadership_moves_on() {
    let namespace = namespace_with("leader", &[("web", 1)]).await;
    let deployments = Api::<Deployment>::namespaced(admin().await, &namespace);
    let (a, b) = (start("replica-a").await, start("replica-b").await);

    let first = testenv::wait_for("one replica to lead", || async {
        match (is_leader(&a).await, is_leader(&b).await) {
            (true, false) => Some("replica-a"),
            (false, true) => Some("replica-b"),
            (true, true) => panic!("two leaders at once"),
            (false, false) => None,
        }
    })
    .await;
    assert_eq!(lease_holder().await.as_deref(), Some(first));
    let (leader, follower, follower_name) = if first == "replica-a" {
        (a, b, "replica-b")
    } else {
        (b, a, "replica-a")
    };

    // Only the leader writes.
    set_setpoint(&namespace, "web", 3).await;
    wait_for_replicas(&deployments, "web", 3).await;
    // Events are recorded just after the write.
    let scaled = testenv::wait_for("a Scaled event", || async {
        Some(reporters(&namespace, "Scaled").await).filter(|r| !r.is_empty())
    })
    .await;
    assert_eq!(scaled, [first], "only the leader writes");

    // A crash: no release, so the follower takes over once the lease expires.
    drop(leader);
    testenv::wait_for(
        "the follower to take over after the lease expires",
        || async { is_leader(&follower).await.then_some(()) },
    )
    .await;
    assert_eq!(lease_holder().await.as_deref(), Some(follower_name));
    scale_externally(&deployments, "web", 8).await;
    wait_for_replicas(&deployments, "web", 3).await;
    let reverted = testenv::wait_for("a Reverted event", || async {
        Some(reporters(&namespace, "Reverted").await).filter(|r| !r.is_empty())
    })
    .await;
    assert_eq!(
        reverted,
        [follower_name],
        "only the new leader writes after the hand-over"
    );

    // A clean shutdown releases the lease: a new replica takes over without waiting
    // for it to expire.
    let c = start("replica-c").await;
    assert!(!is_leader(&c).await);
    follower.stop().await.expect("stop");
    // Released on shutdown (replica-c may already have taken it).
    assert_ne!(lease_holder().await.as_deref(), Some(follower_name));
    testenv::wait_for("replica-c to take over", || async {
        is_leader(&c).await.then_some(())
    })
    .await;
    scale_externally(&deployments, "web", 7).await;
    wait_for_replicas(&deployments, "web", 3).await;
    c.stop().await.expect("stop");
}
