//! Everything measured at one Deployment count: start-up, the read scenarios and the
//! API-server baseline, memory after sync, after the reads and during a forced relist,
//! and SetReplicas → `spec.replicas`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::{Value, json};
use setpoint_proto::v1::{DeploymentRef, SetReplicasRequest};

use crate::load::{self, Amount, Ghz, Load, Protosets, quantile};
use crate::sample::{memory, reset_peak};
use crate::server::{Run, Server};
use crate::{Args, deployment_key, say};

/// Everything measured at one Deployment count.
pub(crate) struct Size {
    pub(crate) deployments: usize,
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
        writes(args, admin, dir, grpc, namespaces, count, round + 2).await?;

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
    // The relist itself takes about a second at 10,000.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_relist_peak = memory(pid, "VmHWM")?;
    let ready = server.ready;
    server.stop().await?;
    Ok(Size {
        deployments: count,
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

/// SetReplicas to `replicas` on `args.writes` Deployments, one after the other; each
/// sample is from SetReplicas returning to the watch reporting the new spec.replicas.
#[allow(clippy::too_many_arguments)]
async fn writes(
    args: &Args,
    admin: &Client,
    dir: &Path,
    grpc: SocketAddr,
    namespaces: &[String],
    count: usize,
    replicas: i32,
) -> anyhow::Result<(Duration, Duration)> {
    let mut client = devenv::operator_client(dir, grpc).await?;
    // Convergence is observed through one watch, as the API server reports it, so the
    // measurement adds no polling delay.
    // Samples start once the watch has listed every Deployment.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let (listed_tx, listed) = tokio::sync::oneshot::channel();
    let mut listed_tx = Some(listed_tx);
    let watch = tokio::spawn(
        watcher(
            Api::<Deployment>::all(admin.clone()),
            watcher::Config::default().labels("tier"),
        )
        .try_for_each(move |event| {
            match event {
                watcher::Event::Apply(deployment) => {
                    let replicas = deployment.spec.and_then(|spec| spec.replicas);
                    let key = (deployment.metadata.namespace, deployment.metadata.name);
                    let _ = seen_tx.send((key, replicas, Instant::now()));
                }
                watcher::Event::InitDone => {
                    if let Some(listed) = listed_tx.take() {
                        let _ = listed.send(());
                    }
                }
                _ => {}
            }
            std::future::ready(Ok(()))
        }),
    );
    listed
        .await
        .context("the Deployment watch ended before its first list")?;
    let mut samples = Vec::with_capacity(args.writes);
    for index in 0..args.writes.min(count) {
        let (namespace, name) = deployment_key(namespaces, index);
        client
            .set_replicas(SetReplicasRequest {
                deployment: Some(DeploymentRef {
                    namespace: namespace.clone(),
                    name: name.clone(),
                }),
                replicas,
                ..SetReplicasRequest::default()
            })
            .await?;
        let returned = Instant::now();
        let target = (Some(namespace), Some(name));
        let converged = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match seen.recv().await {
                    Some((key, Some(seen), at)) if key == target && seen == replicas => {
                        break Ok(at);
                    }
                    Some(_) => {}
                    None => break Err(anyhow::anyhow!("the watch ended")),
                }
            }
        })
        .await
        .context("a Deployment did not reach its setpoint within 30 s")??;
        samples.push(converged.saturating_duration_since(returned));
    }
    watch.abort();
    samples.sort_unstable();
    Ok((quantile(&samples, 0.5), quantile(&samples, 0.99)))
}
