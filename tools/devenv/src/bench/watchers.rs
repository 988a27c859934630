//! The WatchDeployments benchmark, at one Deployment count (`--watch-at`): `--watchers`
//! streams, each of ONE namespace, spread evenly over the namespaces (watcher `i` watches
//! namespace `i mod n`), `--watches-per-connection` on each gRPC connection (as many
//! connections as that takes; the server is started with that per-connection limit and
//! an identity limit of all the watchers). Figures: from the first call to every
//! watcher's SYNCED; the server's resident memory before, at its peak while they synced
//! and after, and so per watcher; then `--watch-changes` Deployments' status changed one
//! after another through the API server, each timed until every watcher of its
//! namespace has the CHANGED message, and per delivery. The bench keeps no message: the
//! watchers count their INITIAL messages and report only SYNCED and the timed changes.

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

/// The watcher benchmark's figures.
pub(crate) struct Watchers {
    pub(crate) watchers: usize,
    pub(crate) connections: usize,
    pub(crate) deployments: usize,
    /// INITIAL messages received in all, and how many the watched namespaces hold.
    pub(crate) initial: (u64, u64),
    /// From the first call to every watcher's SYNCED.
    pub(crate) synced: Duration,
    pub(crate) rss_before: u64,
    /// The peak while every watcher received its initial state.
    pub(crate) rss_peak: u64,
    pub(crate) rss_after: u64,
    /// Changes timed.
    pub(crate) changes: usize,
    /// Write acknowledged by the API server → the last watcher of the namespace has the
    /// change.
    pub(crate) all_p50: Duration,
    pub(crate) all_p99: Duration,
    /// Write acknowledged → one watcher has it, over every delivery.
    pub(crate) each_p50: Duration,
    pub(crate) each_p99: Duration,
}

impl Watchers {
    /// The server's resident memory with the watchers over that without, per watcher.
    pub(crate) fn per_watcher(&self) -> u64 {
        self.rss_after.saturating_sub(self.rss_before) / self.watchers.max(1) as u64
    }
}

/// Watchers of namespace `k` of `namespaces` when `watchers` are spread round robin.
fn watchers_of(k: usize, watchers: usize, namespaces: usize) -> usize {
    watchers / namespaces + usize::from(k < watchers % namespaces)
}

pub(crate) async fn measure(
    args: &Args,
    admin: &Client,
    dir: &Path,
    namespaces: &[String],
    count: usize,
) -> anyhow::Result<Watchers> {
    let (watchers, spread) = (args.watchers, namespaces.len());
    let per_connection = args.watches_per_connection;
    say(&format!(
        "{watchers} watchers of one namespace each on {count} Deployments ..."
    ));
    let run = Run::Watchers {
        watches: watchers,
        per_connection,
    };
    let server = Server::start(args, dir, run).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = memory(server.pid, "VmRSS")?;
    let connections = watchers.div_ceil(per_connection);
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(devenv::operator_client(dir, server.grpc).await?);
    }
    reset_peak(server.pid)?;
    // Each watcher reports its INITIAL count at SYNCED, then (name, ready, when) per
    // CHANGED message.
    let (synced_tx, mut synced_rx) = tokio::sync::mpsc::unbounded_channel();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..watchers {
        let mut client = clients[index / per_connection].clone();
        let namespace = namespaces[index % spread].clone();
        let (synced_tx, seen_tx) = (synced_tx.clone(), seen_tx.clone());
        tasks.spawn(async move {
            let request = WatchDeploymentsRequest {
                namespace,
                ..WatchDeploymentsRequest::default()
            };
            let mut stream = client.watch_deployments(request).await?.into_inner();
            let mut initial = 0_u64;
            while let Some(message) = stream.message().await? {
                match message.r#type() {
                    WatchEventType::Initial => initial += 1,
                    WatchEventType::Synced => {
                        let _ = synced_tx.send(initial);
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
    let mut initial = 0;
    for _ in 0..watchers {
        let synced = tokio::time::timeout(Duration::from_secs(300), synced_rx.recv())
            .await
            .context("watchers did not all sync within 300 s")?;
        if let Some(ended) = tasks.try_join_next() {
            anyhow::bail!(
                "a watcher ended: {:?}",
                ended.map_err(|error| error.to_string())
            );
        }
        initial += synced.context("the watchers ended")?;
    }
    let synced = started.elapsed();
    let rss_peak = memory(server.pid, "VmHWM")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = memory(server.pid, "VmRSS")?;
    // What the watched namespaces hold: namespace k has the Deployments i ≡ k (mod n).
    let expected: usize = (0..spread.min(count))
        .map(|k| watchers_of(k, watchers, spread) * (count - k).div_ceil(spread))
        .sum();

    // Deployments of namespaces with watchers, the first `watch_changes`, in turn.
    let changed: Vec<usize> = (0..count)
        .filter(|index| watchers_of(index % spread, watchers, spread) > 0)
        .take(args.watch_changes)
        .collect();
    let (mut all, mut each) = (Vec::new(), Vec::new());
    for (change, &index) in changed.iter().cycle().take(args.watch_changes).enumerate() {
        let (namespace, name) = deployment_key(namespaces, index);
        let receivers = watchers_of(index % spread, watchers, spread);
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
        while reached < receivers {
            let (seen_name, seen_replicas, at) =
                tokio::time::timeout(Duration::from_secs(60), seen.recv())
                    .await
                    .context("a change did not reach every watcher of its namespace in 60 s")?
                    .context("the watchers ended")?;
            if seen_name == name && seen_replicas == replicas {
                reached += 1;
                let latency = at.saturating_duration_since(acknowledged);
                each.push(latency);
                if reached == receivers {
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
        watchers,
        connections,
        deployments: count,
        initial: (initial, expected as u64),
        synced,
        rss_before,
        rss_peak,
        rss_after,
        changes: all.len(),
        all_p50: quantile(&all, 0.5),
        all_p99: quantile(&all, 0.99),
        each_p50: quantile(&each, 0.5),
        each_p99: quantile(&each, 0.99),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_are_spread_evenly_over_the_namespaces() {
        assert_eq!(watchers_of(0, 10_000, 100), 100);
        assert_eq!(watchers_of(99, 10_000, 100), 100);
        let spread: Vec<usize> = (0..4).map(|k| watchers_of(k, 10, 4)).collect();
        assert_eq!(spread, [3, 3, 2, 2]);
        assert_eq!(watchers_of(7, 5, 10), 0);
    }
}
