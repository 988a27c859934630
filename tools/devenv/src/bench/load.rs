//! The read load: ghz driving gRPC calls at the server, and the same read answered by
//! the API server as the baseline; each run's calls, latencies and CPU time per call.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::sample::cpu_time;
use crate::{Args, deployment_key};

/// The scenario of the API server answering the same read.
pub(crate) const BASELINE: &str = "API server GET (baseline)";

/// One load scenario's figures.
pub(crate) struct Load {
    pub(crate) name: &'static str,
    pub(crate) calls: u64,
    pub(crate) errors: u64,
    /// ghz's count per error message (JSON).
    pub(crate) error_kinds: String,
    pub(crate) per_second: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    /// CPU time of the process(es) answering, per 1,000 calls.
    pub(crate) cpu_per_1000: Duration,
}

/// GetReplicas requests for 100 Deployments spread over all `count`, as ghz data.
pub(crate) fn get_requests(namespaces: &[String], count: usize) -> Value {
    let get = |index: usize| {
        let (namespace, name) = deployment_key(namespaces, index * count / 100);
        json!({ "deployment": { "namespace": namespace, "name": name } })
    };
    Value::Array((0..100).map(get).collect())
}

/// The descriptor sets ghz needs: Setpoint's API and gRPC health.
pub(crate) struct Protosets {
    pub(crate) api: PathBuf,
    pub(crate) health: PathBuf,
}

pub(crate) fn write_protosets(dir: &Path) -> anyhow::Result<Protosets> {
    let protosets = Protosets {
        api: dir.join("setpoint.protoset"),
        health: dir.join("health.protoset"),
    };
    std::fs::write(&protosets.api, setpoint_proto::v1::FILE_DESCRIPTOR_SET)?;
    std::fs::write(&protosets.health, tonic_health::pb::FILE_DESCRIPTOR_SET)?;
    Ok(protosets)
}

/// How long ghz runs: a number of calls, or a duration.
#[derive(Clone, Copy)]
pub(crate) enum Amount {
    Calls(usize),
    For(Duration),
}

/// How ghz is run: against which server, with which client certificate, and how hard.
pub(crate) struct Ghz<'a> {
    pub(crate) bin: &'a Path,
    pub(crate) pki: &'a Path,
    pub(crate) address: SocketAddr,
    pub(crate) connections: usize,
    pub(crate) concurrency: usize,
}

impl Ghz<'_> {
    /// `amount` of calls of `call` with `data` (an array: one element per call, in
    /// turn), and the CPU time process `pid` spent meanwhile.
    pub(crate) async fn run(
        &self,
        protoset: &Path,
        call: &str,
        data: &Value,
        amount: Amount,
        pid: u32,
    ) -> anyhow::Result<Load> {
        let pki = |file: &str| self.pki.join(file);
        let cpu_before = cpu_time(pid)?;
        let output = tokio::process::Command::new(self.bin)
            .arg("--protoset")
            .arg(protoset)
            .args(["--call", call, "--data", &data.to_string()])
            .arg("--cacert")
            .arg(pki("ca.crt"))
            .arg("--cert")
            .arg(pki("operator.crt"))
            .arg("--key")
            .arg(pki("operator.key"))
            .args([
                "--cname",
                "localhost",
                "--format",
                "json",
                "--timeout",
                "20s",
            ])
            .arg(format!("--connections={}", self.connections))
            .arg(format!("--concurrency={}", self.concurrency))
            .args(match amount {
                Amount::Calls(calls) => vec![format!("--total={calls}")],
                // Calls in flight at the end finish rather than count as failed.
                Amount::For(duration) => vec![
                    format!("--duration={}s", duration.as_secs()),
                    "--duration-stop=wait".into(),
                ],
            })
            .arg(self.address.to_string())
            .output()
            .await
            .with_context(|| format!("running {}", self.bin.display()))?;
        let cpu = cpu_time(pid)? - cpu_before;
        anyhow::ensure!(
            output.status.success(),
            "ghz {call} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("ghz {call} printed no JSON report"))?;
        let count = report["count"].as_u64().unwrap_or(0);
        let ok = report["statusCodeDistribution"]["OK"].as_u64().unwrap_or(0);
        let percentile = |percentage: u64| {
            report["latencyDistribution"]
                .as_array()
                .and_then(|distribution| {
                    distribution
                        .iter()
                        .find(|entry| entry["percentage"].as_u64() == Some(percentage))
                })
                .and_then(|entry| entry["latency"].as_u64())
                .map(Duration::from_nanos)
                .unwrap_or_default()
        };
        Ok(Load {
            name: "",
            calls: count,
            errors: count - ok,
            error_kinds: report["errorDistribution"].to_string(),
            per_second: report["rps"].as_f64().unwrap_or(0.0),
            p50: percentile(50),
            p99: percentile(99),
            cpu_per_1000: per_1000(cpu, count),
        })
    }
}

/// GET of a Deployment from the API server, `concurrency` at a time; the CPU time is
/// the API server's and etcd's.
pub(crate) async fn apiserver_gets(
    args: &Args,
    control_plane: &testenv::ControlPlane,
    admin: &Client,
    namespaces: &[String],
    count: usize,
) -> anyhow::Result<Load> {
    let pids = control_plane.pids();
    let cpu = || -> anyhow::Result<Duration> {
        pids.iter()
            .filter(|(name, _)| matches!(*name, "kube-apiserver" | "etcd"))
            .map(|(_, pid)| cpu_time(*pid))
            .sum()
    };
    let cpu_before = cpu()?;
    let started = Instant::now();
    let results: Vec<Result<Duration, kube::Error>> = stream::iter(0..args.apiserver_calls)
        .map(|call| async move {
            let (namespace, name) = deployment_key(namespaces, call * 7919 % count);
            let started = Instant::now();
            Api::<Deployment>::namespaced(admin.clone(), &namespace)
                .get(&name)
                .await
                .map(|_| started.elapsed())
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let wall = started.elapsed();
    let cpu = cpu()? - cpu_before;
    let mut latencies: Vec<Duration> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    latencies.sort_unstable();
    let calls = results.len() as u64;
    Ok(Load {
        name: BASELINE,
        calls,
        errors: calls - latencies.len() as u64,
        error_kinds: results
            .iter()
            .filter_map(|result| result.as_ref().err().map(ToString::to_string))
            .collect::<Vec<_>>()
            .join("; "),
        per_second: calls as f64 / wall.as_secs_f64(),
        p50: quantile(&latencies, 0.5),
        p99: quantile(&latencies, 0.99),
        cpu_per_1000: per_1000(cpu, calls),
    })
}

/// The `q` quantile of `sorted` (zero when empty).
pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn per_1000(cpu: Duration, calls: u64) -> Duration {
    if calls == 0 {
        return Duration::ZERO;
    }
    cpu * 1000 / u32::try_from(calls).unwrap_or(u32::MAX)
}
