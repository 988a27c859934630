//! Setpoint against a control plane of its own whose API server or etcd goes away:
//! reads keep coming from the cache, readiness reports the outage, and a change made as
//! the control plane comes back is seen within 5 s, also after the watches expired
//! (410 Gone) and had to list again. Each test starts its own control plane.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::PostParams;
use setpoint_proto::v1::GetReplicasRequest;
use support::{ServerProcess, scale_externally};
use testenv::ControlPlane;
use tokio::task::JoinHandle;

/// The longest retry delay of a failed watch (the server's `RETRY_MAX`, 5 s), plus time
/// for the relist, the poll and a loaded 2-core machine: a change made as the control
/// plane returns is seen within this.
const SEEN_WITHIN: Duration = Duration::from_secs(8);

/// One control plane of these at a time: two at once on 2 cores make the bounds flaky.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Setup {
    control_plane: ControlPlane,
    dir: tempfile::TempDir,
    server: ServerProcess,
    namespace: String,
}

impl Setup {
    /// A control plane with Setpoint installed, `web` at 1 replica, and a server whose
    /// health probe runs every second.
    async fn start() -> Self {
        let control_plane = ControlPlane::start().await.expect("control plane");
        devenv::install(&control_plane).await.expect("k8s/base");
        let namespace = control_plane.namespace("outage").await.expect("namespace");
        self::deployments(&control_plane, &namespace)
            .await
            .create(&PostParams::default(), &testenv::deployment("web", 1))
            .await
            .expect("web");
        let dir = tempfile::tempdir().expect("temp dir");
        devenv::write_server_files(&control_plane, dir.path())
            .await
            .expect("server files");
        let server =
            ServerProcess::start(dir.path(), "server.log", &["--probe-interval=1s".into()]).await;
        Self {
            control_plane,
            dir,
            server,
            namespace,
        }
    }

    /// `web`'s spec.replicas as Setpoint answers it.
    async fn replicas(&self) -> Result<i32, tonic::Status> {
        let mut client = devenv::operator_client(self.dir.path(), self.server.grpc)
            .await
            .expect("client");
        let request = get_request(&self.namespace);
        let answer = client.get_replicas(request).await?.into_inner();
        Ok(answer.replicas.map_or(0, |replicas| replicas.spec_replicas))
    }

    /// Scales `web` to `replicas` with the admin client, then waits until Setpoint
    /// answers it; returns how long that took.
    async fn change_and_wait(&self, replicas: i32) -> Duration {
        scale_externally(
            &deployments(&self.control_plane, &self.namespace).await,
            "web",
            replicas,
        )
        .await;
        let changed = Instant::now();
        testenv::wait_for("Setpoint to answer the change", || async {
            (self.replicas().await.ok() == Some(replicas)).then_some(())
        })
        .await;
        changed.elapsed()
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).expect("server log")
    }
}

async fn deployments(control_plane: &ControlPlane, namespace: &str) -> Api<Deployment> {
    let admin = control_plane.admin_client().await.expect("admin");
    Api::namespaced(admin, namespace)
}

fn get_request(namespace: &str) -> GetReplicasRequest {
    GetReplicasRequest {
        deployment: Some(setpoint_proto::v1::DeploymentRef {
            namespace: namespace.into(),
            name: "web".into(),
        }),
    }
}

/// GetReplicas in a loop on one connection until `stop`; returns calls and failures.
async fn read_load(setup: &Setup, stop: Arc<AtomicBool>) -> JoinHandle<(u64, Vec<String>)> {
    let mut client = devenv::operator_client(setup.dir.path(), setup.server.grpc)
        .await
        .expect("client");
    let request = get_request(&setup.namespace);
    tokio::spawn(async move {
        let (mut calls, mut failures) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            calls += 1;
            if let Err(status) = client.get_replicas(request.clone()).await {
                failures.push(status.to_string());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (calls, failures)
    })
}

async fn stop_load(stop: &AtomicBool, load: JoinHandle<(u64, Vec<String>)>) {
    stop.store(true, Ordering::Relaxed);
    let (calls, failures) = load.await.expect("load task");
    assert!(calls > 100, "only {calls} reads");
    assert_eq!(failures, Vec::<String>::new(), "failed reads of {calls}");
}

#[tokio::test]
async fn an_api_server_outage_is_reported_while_reads_keep_coming_from_the_cache() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let setup = Setup::start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = read_load(&setup, stop.clone()).await;

    let stopped = Instant::now();
    setup.control_plane.stop_apiserver();
    testenv::wait_for("readiness to report the outage", || async {
        (!setup.server.is_ready().await).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(stopped.elapsed())).await;
    assert_eq!(
        setup.replicas().await.ok(),
        Some(1),
        "answered from the cache"
    );
    setup
        .control_plane
        .start_apiserver()
        .await
        .expect("API server back");

    // Made while Setpoint's watches are still waiting to retry.
    let seen_after = setup.change_and_wait(4).await;
    assert!(
        seen_after <= SEEN_WITHIN,
        "seen {seen_after:?} after the change"
    );
    testenv::wait_for("readiness to recover", || async {
        setup.server.is_ready().await.then_some(())
    })
    .await;
    stop_load(&stop, load).await;
}

#[tokio::test]
async fn changes_are_seen_after_an_etcd_restart_and_after_expired_watches() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let setup = Setup::start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = read_load(&setup, stop.clone()).await;

    setup
        .control_plane
        .restart_etcd(Duration::from_secs(5))
        .await
        .expect("etcd back");
    let seen_after = setup.change_and_wait(3).await;
    assert!(seen_after <= SEEN_WITHIN, "after etcd: seen {seen_after:?}");

    // A new API server starts its watch cache at etcd's current revision: watches that
    // resume from an older resourceVersion (here the HPA and setpoint watches, which
    // have seen nothing since the change above) get 410 Gone and must list again.
    let expired = || {
        setup
            .server_log()
            .matches("too old resource version")
            .count()
    };
    let expired_before = expired();
    setup.control_plane.stop_apiserver();
    setup
        .control_plane
        .start_apiserver()
        .await
        .expect("API server back");
    testenv::wait_for("a watch to expire (410 Gone)", || async {
        (expired() > expired_before).then_some(())
    })
    .await;
    let seen_after = setup.change_and_wait(5).await;
    assert!(seen_after <= SEEN_WITHIN, "after 410: seen {seen_after:?}");
    stop_load(&stop, load).await;
}
