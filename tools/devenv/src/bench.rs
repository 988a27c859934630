//! `setpoint-bench` (what `make bench` runs): measures a release build of the server
//! against the local control plane: read latency from the watch cache (and that reads
//! send no request to the API server), the time from SetReplicas returning to the
//! Deployment's spec.replicas changing, and the server's memory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use setpoint_api::v1::replica_service_client::ReplicaServiceClient;
use setpoint_api::v1::{
    DeploymentRef, GetReplicasRequest, ListDeploymentsRequest, SetReplicasRequest,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Benchmark setpoint-server against a local control plane.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The setpoint-server binary (a release build measures what ships).
    #[arg(long, default_value = "target/release/setpoint-server")]
    server_bin: PathBuf,
    /// Deployments in the cache.
    #[arg(long, default_value_t = 500)]
    deployments: usize,
    /// GetReplicas calls to time.
    #[arg(long, default_value_t = 2000)]
    reads: usize,
    /// SetReplicas → spec.replicas samples.
    #[arg(long, default_value_t = 20)]
    converge_samples: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    eprintln!("setpoint-bench: starting the control plane ...");
    let control_plane = testenv::ControlPlane::start().await?;
    devenv::install(&control_plane).await?;
    let namespace = control_plane.namespace("bench").await?;
    let deployments =
        Api::<Deployment>::namespaced(control_plane.admin_client().await?, &namespace);
    eprintln!(
        "setpoint-bench: creating {} Deployments ...",
        args.deployments
    );
    for index in 0..args.deployments {
        deployments
            .create(
                &PostParams::default(),
                &testenv::deployment(&format!("app-{index:04}"), 1),
            )
            .await?;
    }
    devenv::write_server_files(&control_plane, dir.path()).await?;
    let (grpc, http) = (free_address()?, free_address()?);
    let mut server = devenv::spawn_server(
        &args.server_bin,
        dir.path(),
        grpc,
        http,
        Some(&dir.path().join("server.log")),
        // Every sample is a write by the same identity: keep the rate limit out of the way.
        &[
            format!("--writes-per-minute={}", args.converge_samples.max(60)),
            format!("--write-burst={}", args.converge_samples.max(60)),
        ],
    )?;
    devenv::wait_until_ready(http).await?;
    let mut client = operator_client(dir.path(), grpc).await?;
    let reference = |index: usize| {
        Some(DeploymentRef {
            namespace: namespace.clone(),
            name: format!("app-{index:04}"),
        })
    };

    // Warm up connections and caches, then time reads.
    for index in 0..100 {
        client
            .get_replicas(GetReplicasRequest {
                deployment: reference(index % args.deployments),
            })
            .await?;
    }
    let requests_before = metric(http, "setpoint_kube_requests_total{component=\"api\"}").await?;
    let mut gets = Vec::with_capacity(args.reads);
    let started = Instant::now();
    for index in 0..args.reads {
        let call = Instant::now();
        client
            .get_replicas(GetReplicasRequest {
                deployment: reference(index % args.deployments),
            })
            .await?;
        gets.push(call.elapsed());
    }
    let get_wall = started.elapsed();
    let mut lists = Vec::new();
    for _ in 0..50 {
        let mut page_token = String::new();
        loop {
            let call = Instant::now();
            let page = client
                .list_deployments(ListDeploymentsRequest {
                    namespace: namespace.clone(),
                    page_size: 100,
                    page_token,
                    ..ListDeploymentsRequest::default()
                })
                .await?
                .into_inner();
            lists.push(call.elapsed());
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
    }
    let requests_after = metric(http, "setpoint_kube_requests_total{component=\"api\"}").await?;

    // Convergence is observed through a watch, as the API server reports it, so the
    // measurement adds no polling delay.
    let mut converge = Vec::new();
    let mut sets = Vec::new();
    for index in 0..args.converge_samples {
        let name = format!("app-{index:04}");
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut replicas = watcher(deployments.clone(), config)
            .applied_objects()
            .map_ok(|deployment| deployment.spec.and_then(|spec| spec.replicas))
            .boxed();
        anyhow::ensure!(
            replicas.try_next().await? == Some(Some(1)),
            "{name} starts at 1"
        );
        let call = Instant::now();
        client
            .set_replicas(SetReplicasRequest {
                deployment: reference(index),
                replicas: 2,
                expected_version: None,
            })
            .await?;
        let returned = Instant::now();
        sets.push(call.elapsed());
        tokio::time::timeout(Duration::from_secs(30), async {
            while replicas.try_next().await? != Some(Some(2)) {}
            anyhow::Ok(())
        })
        .await??;
        converge.push(returned.elapsed());
    }

    let rss = std::fs::read_to_string(format!("/proc/{}/status", server.id().unwrap_or(0)))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:").map(|kb| kb.trim().to_owned()))
        })
        .unwrap_or_else(|| "unknown".into());
    server.kill().await?;

    println!(
        "setpoint-server {} with {} Deployments cached",
        args.server_bin.display(),
        args.deployments
    );
    println!(
        "GetReplicas      {} calls: {}; {:.0} calls/s on one connection",
        args.reads,
        summary(&mut gets),
        args.reads as f64 / get_wall.as_secs_f64()
    );
    println!(
        "ListDeployments  {} pages of 100: {}",
        lists.len(),
        summary(&mut lists)
    );
    println!(
        "API-server requests during those reads: {}",
        requests_after - requests_before
    );
    println!(
        "SetReplicas      {} calls: {}",
        sets.len(),
        summary(&mut sets)
    );
    println!(
        "SetReplicas returned → spec.replicas updated, {} samples: {}",
        converge.len(),
        summary(&mut converge)
    );
    println!(
        "  samples (ms): {}",
        converge
            .iter()
            .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("server resident memory: {rss}");
    Ok(())
}

fn summary(samples: &mut [Duration]) -> String {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    )
}

fn free_address() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

async fn metric(http: SocketAddr, name: &str) -> anyhow::Result<f64> {
    let (_, body) = devenv::http_get(http, "/metrics").await?;
    Ok(body
        .lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

async fn operator_client(
    dir: &std::path::Path,
    grpc: SocketAddr,
) -> anyhow::Result<ReplicaServiceClient<Channel>> {
    let pki = dir.join("pki");
    let read = |name: &str| std::fs::read(pki.join(name));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")?))
        .identity(Identity::from_pem(
            read("operator.crt")?,
            read("operator.key")?,
        ))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{grpc}"))?
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(ReplicaServiceClient::new(channel))
}
