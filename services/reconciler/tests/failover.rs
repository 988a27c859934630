//! Two separate setpoint-reconciler processes sharing the Lease: the leader is killed
//! (SIGKILL, no release) during a stream of setpoint writes; the other takes over within
//! the lease duration and every written setpoint converges. A test binary of its own:
//! the Lease is cluster-wide.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use support::{
    LEASE, ReconcilerProcess, admin, install_setpoint, namespace_with, set_setpoint,
    wait_for_replicas,
};

/// `--lease-duration` of `support::LEASE`.
const LEASE_DURATION: Duration = Duration::from_secs(3);

async fn start(dir: &std::path::Path, identity: &str) -> ReconcilerProcess {
    let mut args = vec![format!("--identity={identity}")];
    args.extend(LEASE.map(String::from));
    ReconcilerProcess::start(dir, &format!("{identity}.log"), &args).await
}

async fn leads(replica: &ReconcilerProcess) -> bool {
    replica.is_leader().await
}

#[tokio::test]
async fn a_killed_leader_is_replaced_within_the_lease_and_acknowledged_writes_converge() {
    let control_plane = install_setpoint().await;
    let names: Vec<String> = (0..12).map(|index| format!("web-{index}")).collect();
    let namespace = namespace_with(
        "failover",
        &names
            .iter()
            .map(|name| (name.as_str(), 1))
            .collect::<Vec<_>>(),
    )
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    devenv::write_server_files(control_plane, dir.path())
        .await
        .expect("server files");
    let mut replicas = vec![
        start(dir.path(), "process-a").await,
        start(dir.path(), "process-b").await,
    ];
    let leader = testenv::wait_for("a leader", || async {
        for (index, replica) in replicas.iter().enumerate() {
            if leads(replica).await {
                return Some(index);
            }
        }
        None
    })
    .await;
    let mut killed = replicas.remove(leader);
    let survivor = replicas.pop().expect("two replicas");

    let mut written = Vec::new();
    let mut killed_at = None;
    for (index, name) in names.iter().enumerate() {
        if index == names.len() / 3 {
            killed.process.start_kill().expect("SIGKILL");
            killed.process.wait().await.expect("reaped");
            killed_at = Some(Instant::now());
        }
        let replicas = i32::try_from(index % 4 + 2).expect("small");
        set_setpoint(&namespace, name, replicas).await;
        written.push((name, replicas));
    }
    let killed_at = killed_at.expect("the leader was killed");
    testenv::wait_for("the survivor to lead", || async {
        leads(&survivor).await.then_some(())
    })
    .await;
    let took_over = killed_at.elapsed();
    // The Lease expires one duration after the last renewal; the survivor tries every
    // renew interval (0.5 s), and this poll and a loaded machine add their share.
    assert!(
        took_over <= LEASE_DURATION + Duration::from_secs(3),
        "the survivor led {took_over:?} after the leader died"
    );

    let deployments = Api::<Deployment>::namespaced(admin().await, &namespace);
    for (name, replicas) in written {
        wait_for_replicas(&deployments, name, replicas).await;
    }
}
