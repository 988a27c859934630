//! The WatchDeployments benchmark, at the smallest Deployment count: many watchers'
//! memory, and how long a change takes to reach all of them.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client};
use serde_json::json;
use setpoint_proto::v1::{WatchDeploymentsRequest, WatchEventType};

use crate::load::quantile;
use crate::sample::{memory, reset_peak};
use crate::server::{Run, Server};
use crate::{Args, deployment_key, say};

/// Watches per connection in the watcher benchmark (the server's default limit).
const WATCHES_PER_CONNECTION: usize = 16;

/// The watcher benchmark's figures.
pub(crate) struct Watchers {
    pub(crate) watchers: usize,
    pub(crate) connections: usize,
    pub(crate) deployments: usize,
    /// From the first call to every watcher's SYNCED.
    pub(crate) synced: Duration,
    pub(crate) rss_before: u64,
    /// The peak while every watcher received its initial state.
    pub(crate) rss_peak: u64,
    pub(crate) rss_after: u64,
    /// Write acknowledged by the API server → the last watcher has the change.
    pub(crate) all_p50: Duration,
    pub(crate) all_p99: Duration,
    /// Write acknowledged → one watcher has it, over every delivery.
    pub(crate) each_p50: Duration,
    pub(crate) each_p99: Duration,
}

/// `args.watchers` watches of every namespace over connections of WATCHES_PER_CONNECTION;
/// then `args.watch_changes` Deployments' ready count changed one after another through
/// the API server, each timed until every watcher has its CHANGED message.
pub(crate) async fn measure(
    args: &Args,
    admin: &Client,
    dir: &Path,
    namespaces: &[String],
    count: usize,
) -> anyhow::Result<Watchers> {
    say(&format!(
        "{} watchers on {count} Deployments ...",
        args.watchers
    ));
    let server = Server::start(
        args,
        dir,
        Run::Watchers {
            watches: args.watchers,
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = memory(server.pid, "VmRSS")?;
    reset_peak(server.pid)?;
    let connections = args.watchers.div_ceil(WATCHES_PER_CONNECTION);
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(devenv::operator_client(dir, server.grpc).await?);
    }
    // Each watcher reports SYNCED, then (deployment, replicas, when) per change.
    let (synced_tx, mut synced_rx) = tokio::sync::mpsc::unbounded_channel();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..args.watchers {
        let mut client = clients[index % connections].clone();
        let (synced_tx, seen_tx) = (synced_tx.clone(), seen_tx.clone());
        tasks.spawn(async move {
            let mut stream = client
                .watch_deployments(WatchDeploymentsRequest::default())
                .await?
                .into_inner();
            while let Some(message) = stream.message().await? {
                match message.r#type() {
                    WatchEventType::Synced => {
                        let _ = synced_tx.send(());
                    }
                    WatchEventType::Changed => {
                        let replicas = message.replicas.unwrap_or_default();
                        let name = replicas.deployment.unwrap_or_default().name;
                        let _ = seen_tx.send((name, replicas.ready_replicas, Instant::now()));
                    }
                    _ => {}
                }
            }
            anyhow::Ok(())
        });
    }
    // Only the watchers hold senders now: a failed one shows as a closed channel.
    drop((synced_tx, seen_tx));
    for _ in 0..args.watchers {
        let synced = tokio::time::timeout(Duration::from_secs(300), synced_rx.recv())
            .await
            .context("watchers did not all sync within 300 s")?;
        if let Some(ended) = tasks.try_join_next() {
            anyhow::bail!(
                "a watcher ended: {:?}",
                ended.map_err(|error| error.to_string())
            );
        }
        synced.context("the watchers ended")?;
    }
    let synced = started.elapsed();
    let rss_peak = memory(server.pid, "VmHWM")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = memory(server.pid, "VmRSS")?;

    let (mut all, mut each) = (Vec::new(), Vec::new());
    for change in 0..args.watch_changes {
        let (namespace, name) = deployment_key(namespaces, change % count);
        // A status change: the reconciler, scaling Deployments with setpoints, does not
        // touch it.
        let replicas = 1 + i32::try_from(change)?;
        Api::<Deployment>::namespaced(admin.clone(), &namespace)
            .patch_status(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(
                    json!({"status": {"replicas": replicas, "readyReplicas": replicas}}),
                ),
            )
            .await?;
        let acknowledged = Instant::now();
        let mut reached = 0;
        while reached < args.watchers {
            let (seen_name, seen_replicas, at) =
                tokio::time::timeout(Duration::from_secs(60), seen.recv())
                    .await
                    .context("a change did not reach every watcher within 60 s")?
                    .context("the watchers ended")?;
            if seen_name == name && seen_replicas == replicas {
                reached += 1;
                let latency = at.saturating_duration_since(acknowledged);
                each.push(latency);
                if reached == args.watchers {
                    all.push(latency);
                }
            }
        }
    }
    tasks.abort_all();
    server.stop().await?;
    all.sort_unstable();
    each.sort_unstable();
    Ok(Watchers {
        watchers: args.watchers,
        connections,
        deployments: count,
        synced,
        rss_before,
        rss_peak,
        rss_after,
        all_p50: quantile(&all, 0.5),
        all_p99: quantile(&all, 0.99),
        each_p50: quantile(&each, 0.5),
        each_p99: quantile(&each, 0.99),
    })
}
