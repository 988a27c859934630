//! SetReplicas → `spec.replicas`: each sample from SetReplicas returning to the API
//! server's watch reporting the Deployment's new `spec.replicas`, which
//! setpoint-reconciler applied.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::watcher;
use kube::{Api, Client};
use setpoint_proto::v1::{DeploymentRef, SetReplicasRequest};

use crate::load::quantile;
use crate::{Args, deployment_key};

/// SetReplicas to `replicas` on `args.writes` Deployments, one after the other; each
/// sample is from SetReplicas returning to the watch reporting the new spec.replicas.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn p50_p99(
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
