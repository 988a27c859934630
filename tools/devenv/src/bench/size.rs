//! Everything measured at one Deployment count: the API server's own paged list of every
//! Deployment, then the server's start-up to ready (the API alone, the reconciler started
//! after), the read scenarios and the API-server read baseline, resident memory after
//! sync, after the reads and at its peak during a relist forced by restarting the API
//! server, and SetReplicas → `spec.replicas`.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::load::{self, Amount, Ghz, Load, Protosets};
use crate::sample::{memory, reset_peak};
use crate::server::{Run, Server};
use crate::{Args, paged_list, say, writes};

/// Everything measured at one Deployment count.
pub(crate) struct Size {
    pub(crate) deployments: usize,
    /// The API server's own list of every Deployment in pages of 500.
    pub(crate) apiserver_list: Duration,
    /// The server's start to its `/readyz` answering 200.
    pub(crate) ready: Duration,
    pub(crate) rss_synced: u64,
    pub(crate) rss_loaded: u64,
    pub(crate) rss_relist_peak: u64,
    pub(crate) loads: Vec<Load>,
    /// Requests the server sent to the API server while answering the gRPC reads.
    pub(crate) kube_requests_during_reads: f64,
    pub(crate) write_p50: Duration,
    pub(crate) write_p99: Duration,
}

impl Size {
    pub(crate) fn load(&self, name: &str) -> &Load {
        self.loads
            .iter()
            .find(|load| load.name == name)
            .expect("every scenario runs at every size")
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn measure(
    args: &Args,
    control_plane: &testenv::ControlPlane,
    admin: &Client,
    dir: &Path,
    protosets: &Protosets,
    namespaces: &[String],
    count: usize,
    round: i32,
) -> anyhow::Result<Size> {
    say(&format!(
        "{count} Deployments: the API server's own paged list ..."
    ));
    let apiserver_list = paged_list::time(admin).await?;
    say(&format!("{count} Deployments: starting the server ..."));
    let server = Server::start(args, dir, Run::Size { deployments: count }).await?;
    let (pid, grpc, http) = (server.pid, server.grpc, server.http);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_synced = memory(pid, "VmRSS")?;

    let pki = dir.join("pki");
    let ghz = Ghz {
        bin: &args.ghz,
        pki: &pki,
        address: grpc,
        connections: args.connections,
        concurrency: args.concurrency,
    };
    let gets = load::get_requests(namespaces, count);
    let list = |filter: Value| {
        let mut request = json!({ "page_size": 100 });
        request
            .as_object_mut()
            .expect("an object")
            .extend(filter.as_object().cloned().unwrap_or_default());
        request
    };
    let scenarios = [
        (
            "grpc.health.v1/Check",
            &protosets.health,
            "grpc.health.v1.Health.Check",
            json!({}),
        ),
        (
            "GetReplicas",
            &protosets.api,
            "setpoint.v1.ReplicaService.GetReplicas",
            gets,
        ),
        (
            "ListDeployments, all namespaces",
            &protosets.api,
            "setpoint.v1.ReplicaService.ListDeployments",
            list(json!({})),
        ),
        (
            "ListDeployments, one namespace",
            &protosets.api,
            "setpoint.v1.ReplicaService.ListDeployments",
            list(json!({ "namespace": namespaces[0] })),
        ),
        (
            "ListDeployments, selector",
            &protosets.api,
            "setpoint.v1.ReplicaService.ListDeployments",
            list(json!({ "label_selector": "tier=t3" })),
        ),
    ];
    say(&format!("{count} Deployments: reads with ghz ..."));
    // Warm up connections and code paths first.
    let (_, protoset, call, data) = &scenarios[1];
    ghz.run(protoset, call, data, Amount::Calls(1_000), pid)
        .await?;
    let kube_requests = || devenv::metric(http, "setpoint_kube_requests_total{component=\"api\"}");
    let requests_before = kube_requests().await?;
    let mut loads = Vec::new();
    for (name, protoset, call, data) in &scenarios {
        let mut load = ghz
            .run(protoset, call, data, Amount::Calls(args.calls), pid)
            .await?;
        load.name = name;
        loads.push(load);
    }
    let kube_requests_during_reads = kube_requests().await? - requests_before;
    say(&format!(
        "{count} Deployments: the same read from the API server ..."
    ));
    loads.push(load::apiserver_gets(args, control_plane, admin, namespaces, count).await?);
    let rss_loaded = memory(pid, "VmRSS")?;

    say(&format!(
        "{count} Deployments: {} SetReplicas ...",
        args.writes
    ));
    let (write_p50, write_p99) =
        writes::p50_p99(args, admin, dir, grpc, namespaces, count, round + 2).await?;

    say(&format!(
        "{count} Deployments: restarting the API server to force a relist ..."
    ));
    // A write the Deployment watch does not see puts etcd's revision past the watch's,
    // so that the restarted API server, whose watch cache starts at that revision,
    // answers the resumed watch with 410 Gone and the server lists every Deployment.
    let log = &server.log;
    let expired = || -> anyhow::Result<usize> {
        Ok(std::fs::read_to_string(log)?
            .lines()
            // `kind="deployments"`, with colour codes around `kind=` in the log.
            .filter(|line| {
                line.contains("\"deployments\"") && line.contains("too old resource version")
            })
            .count())
    };
    let expired_before = expired()?;
    Api::<ConfigMap>::namespaced(admin.clone(), &namespaces[0])
        .create(&PostParams::default(), &relist_marker(count))
        .await?;
    reset_peak(pid)?;
    control_plane.stop_apiserver();
    tokio::time::sleep(Duration::from_secs(2)).await;
    control_plane.start_apiserver().await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while expired()? == expired_before {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the restart forced no relist (see {})",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    devenv::wait_until_ready(http).await?;
    // The relist itself takes about a second at 10,000; give it three times the API
    // server's own paged list, and 5 s at least.
    tokio::time::sleep(Duration::from_secs(5).max(apiserver_list * 3)).await;
    let rss_relist_peak = memory(pid, "VmHWM")?;
    let ready = server.ready;
    server.stop().await?;
    Ok(Size {
        deployments: count,
        apiserver_list,
        ready,
        rss_synced,
        rss_loaded,
        rss_relist_peak,
        loads,
        kube_requests_during_reads,
        write_p50,
        write_p99,
    })
}

/// A ConfigMap whose creation only moves etcd's revision on.
fn relist_marker(count: usize) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("relist-{count}")),
            ..Default::default()
        },
        ..Default::default()
    }
}
