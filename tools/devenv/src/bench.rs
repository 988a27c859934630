//! `setpoint-bench` (what `make bench` runs): a release build of the server against the
//! local control plane, at each Deployment count asked for (1,000 and 10,000 by
//! default), side by side. Reads are driven by ghz (pinned in `tools/bench`) with fixed
//! connections and concurrency; the server's CPU time per 1,000 calls comes from
//! `/proc`, since on a small machine throughput is bounded by the load generator. The
//! same read answered by the API server (a GET per request) at the same concurrency is
//! the baseline. Also: resident memory after sync, after load and at the peak of a
//! relist forced by restarting the API server; start-up to ready; and SetReplicas →
//! `spec.replicas`. At the smallest count, WatchDeployments: many watchers' memory and
//! how long a change takes to reach all of them. Prints a Markdown report with each
//! goal met or missed; figures only, no assertions.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::{Value, json};
use setpoint_proto::v1::{
    DeploymentRef, SetReplicasRequest, WatchDeploymentsRequest, WatchEventType,
};

/// Benchmark setpoint-server against a local control plane.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The setpoint-server binary (a release build measures what ships).
    #[arg(long, default_value = "target/release/setpoint-server")]
    server_bin: PathBuf,
    /// ghz, the gRPC load generator (`tools/bench/build.sh` builds the pinned one).
    #[arg(long)]
    ghz: PathBuf,
    /// Deployment counts to measure, side by side.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    deployments: Vec<usize>,
    /// Namespaces the Deployments are spread over.
    #[arg(long, default_value_t = 10)]
    namespaces: usize,
    /// Calls per gRPC read scenario.
    #[arg(long, default_value_t = 20_000)]
    calls: usize,
    /// Calls in flight at once, for ghz and for the API-server baseline alike.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// gRPC connections ghz spreads its calls over.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// GET requests of the API-server baseline.
    #[arg(long, default_value_t = 5_000)]
    apiserver_calls: usize,
    /// SetReplicas → spec.replicas samples.
    #[arg(long, default_value_t = 1_000)]
    writes: usize,
    /// WatchDeployments streams (all namespaces) at the smallest Deployment count.
    #[arg(long, default_value_t = 1_000)]
    watchers: usize,
    /// Changes whose fan-out to every watcher is timed.
    #[arg(long, default_value_t = 100)]
    watch_changes: usize,
    /// Also write the report here.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Instead of the benchmark, a soak test: SOAK_CLIENTS clients, each on its own
    /// connection, read for this many seconds at the largest Deployment count; fails on
    /// any failed call or on memory growth.
    #[arg(long)]
    soak_seconds: Option<u64>,
}

/// Clients of the soak test.
const SOAK_CLIENTS: usize = 200;
/// Resident memory may grow this much from the end of the soak's first minute.
const SOAK_GROWTH: u64 = 4 << 20;

/// The scenario of the API server answering the same read.
const BASELINE: &str = "API server GET (baseline)";
/// Deployments per label value of `tier`, which the selector scenario selects.
const TIERS: usize = 10;

/// One load scenario's figures.
struct Load {
    name: &'static str,
    calls: u64,
    errors: u64,
    /// ghz's count per error message (JSON).
    error_kinds: String,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    /// CPU time of the process(es) answering, per 1,000 calls.
    cpu_per_1000: Duration,
}

/// Watches per connection in the watcher benchmark (the server's default limit).
const WATCHES_PER_CONNECTION: usize = 16;

/// The watcher benchmark's figures.
struct Watchers {
    watchers: usize,
    connections: usize,
    deployments: usize,
    /// From the first call to every watcher's SYNCED.
    synced: Duration,
    rss_before: u64,
    /// The peak while every watcher received its initial state.
    rss_peak: u64,
    rss_after: u64,
    /// Write acknowledged by the API server → the last watcher has the change.
    all_p50: Duration,
    all_p99: Duration,
    /// Write acknowledged → one watcher has it, over every delivery.
    each_p50: Duration,
    each_p99: Duration,
}

/// Everything measured at one Deployment count.
struct Size {
    deployments: usize,
    ready: Duration,
    rss_synced: u64,
    rss_loaded: u64,
    rss_relist_peak: u64,
    loads: Vec<Load>,
    /// Requests the server sent to the API server while answering the gRPC reads.
    kube_requests_during_reads: f64,
    write_p50: Duration,
    write_p99: Duration,
}

impl Size {
    fn load(&self, name: &str) -> &Load {
        self.loads
            .iter()
            .find(|load| load.name == name)
            .expect("every scenario runs at every size")
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    args.deployments.sort_unstable();
    let dir = tempfile::tempdir()?;
    say("starting the control plane ...");
    let control_plane = testenv::ControlPlane::start().await?;
    devenv::install(&control_plane).await?;
    devenv::write_server_files(&control_plane, dir.path()).await?;
    let admin = control_plane.admin_client().await?;
    let mut namespaces = Vec::new();
    for _ in 0..args.namespaces {
        namespaces.push(control_plane.namespace("bench").await?);
    }
    let protosets = write_protosets(dir.path())?;
    if let Some(seconds) = args.soak_seconds {
        let count = args.deployments.last().copied().unwrap_or(10_000);
        say(&format!("creating {count} Deployments ..."));
        create_deployments(&admin, &namespaces, 0..count).await?;
        return soak(
            &args,
            dir.path(),
            &protosets,
            &namespaces,
            count,
            Duration::from_secs(seconds),
        )
        .await;
    }

    let mut sizes = Vec::new();
    let mut watched = None;
    let mut created = 0;
    for (round, &count) in args.deployments.iter().enumerate() {
        say(&format!("creating Deployments {created}..{count} ..."));
        create_deployments(&admin, &namespaces, created..count).await?;
        created = count;
        let round = i32::try_from(round)?;
        sizes.push(
            measure(
                &args,
                &control_plane,
                &admin,
                dir.path(),
                &protosets,
                &namespaces,
                count,
                round,
            )
            .await?,
        );
        if watched.is_none() && args.watchers > 0 {
            watched = Some(watchers(&args, &admin, dir.path(), &namespaces, count).await?);
        }
    }
    let report = report(&args, &sizes, watched.as_ref());
    println!("{report}");
    if let Some(output) = &args.output {
        std::fs::write(output, &report)?;
        say(&format!("wrote {}", output.display()));
    }
    Ok(())
}

fn say(message: &str) {
    eprintln!("setpoint-bench: {message}");
}

/// The name of Deployment `index` and its namespace (round robin).
fn deployment_key(namespaces: &[String], index: usize) -> (String, String) {
    (
        namespaces[index % namespaces.len()].clone(),
        format!("app-{index:05}"),
    )
}

async fn create_deployments(
    admin: &Client,
    namespaces: &[String],
    indexes: std::ops::Range<usize>,
) -> anyhow::Result<()> {
    stream::iter(indexes)
        .map(|index| async move {
            let (namespace, name) = deployment_key(namespaces, index);
            let mut deployment = testenv::deployment(&name, 1);
            deployment
                .metadata
                .labels
                .get_or_insert_default()
                .insert("tier".into(), format!("t{}", index % TIERS));
            Api::<Deployment>::namespaced(admin.clone(), &namespace)
                .create(&PostParams::default(), &deployment)
                .await
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// GetReplicas requests for 100 Deployments spread over all `count`, as ghz data.
fn get_requests(namespaces: &[String], count: usize) -> Value {
    let get = |index: usize| {
        let (namespace, name) = deployment_key(namespaces, index * count / 100);
        json!({ "deployment": { "namespace": namespace, "name": name } })
    };
    Value::Array((0..100).map(get).collect())
}

/// The descriptor sets ghz needs: Setpoint's API and gRPC health.
struct Protosets {
    api: PathBuf,
    health: PathBuf,
}

fn write_protosets(dir: &Path) -> anyhow::Result<Protosets> {
    let protosets = Protosets {
        api: dir.join("setpoint.protoset"),
        health: dir.join("health.protoset"),
    };
    std::fs::write(&protosets.api, setpoint_proto::v1::FILE_DESCRIPTOR_SET)?;
    std::fs::write(&protosets.health, tonic_health::pb::FILE_DESCRIPTOR_SET)?;
    Ok(protosets)
}

#[allow(clippy::too_many_arguments)]
async fn measure(
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
    let server = Server::start(args, dir, &format!("server-{count}.log"), &[]).await?;
    let (ready, pid, grpc, http) = (server.ready, server.pid, server.grpc, server.http);
    let mut server = server.process;
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
    let gets = get_requests(namespaces, count);
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
    loads.push(apiserver_gets(args, control_plane, admin, namespaces, count).await?);
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
    let log = dir.join(format!("server-{count}.log"));
    let expired = || -> anyhow::Result<usize> {
        Ok(std::fs::read_to_string(&log)?
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
    // Resets the peak ("VmHWM") to the current resident size.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")?;
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
    server.kill().await?;
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

/// SOAK_CLIENTS clients calling GetReplicas for `duration`, with the server's resident
/// memory sampled every 10 s.
async fn soak(
    args: &Args,
    dir: &Path,
    protosets: &Protosets,
    namespaces: &[String],
    count: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    let mut server = Server::start(
        args,
        dir,
        "server-soak.log",
        // All clients connect from one address.
        &[format!("--max-handshakes-per-source={SOAK_CLIENTS}")],
    )
    .await?;
    let pki = dir.join("pki");
    let ghz = Ghz {
        bin: &args.ghz,
        pki: &pki,
        address: server.grpc,
        connections: SOAK_CLIENTS,
        concurrency: SOAK_CLIENTS,
    };
    say(&format!(
        "{SOAK_CLIENTS} clients for {duration:?} at {count} Deployments ..."
    ));
    let gets = get_requests(namespaces, count);
    let load = ghz.run(
        &protosets.api,
        "setpoint.v1.ReplicaService.GetReplicas",
        &gets,
        Amount::For(duration),
        server.pid,
    );
    tokio::pin!(load);
    let mut samples = Vec::new();
    let mut every = tokio::time::interval(Duration::from_secs(10));
    let load = loop {
        tokio::select! {
            load = &mut load => break load?,
            _ = every.tick() => {
                let rss = memory(server.pid, "VmRSS")?;
                say(&format!("resident memory {}", mib(rss)));
                samples.push(rss);
            }
        }
    };
    server.process.kill().await?;
    let after_a_minute = samples.get(6).or(samples.last()).copied().unwrap_or(0);
    let last = samples.last().copied().unwrap_or(0);
    let max = samples.iter().copied().max().unwrap_or(0);
    println!(
        "soak: {} calls ({:.0}/s, p50 {}, p99 {}), {} failed; resident memory after 1 min {}, at the end {}, at most {}",
        load.calls,
        load.per_second,
        ms(load.p50),
        ms(load.p99),
        load.errors,
        mib(after_a_minute),
        mib(last),
        mib(max)
    );
    anyhow::ensure!(
        load.errors == 0,
        "{} calls failed: {}",
        load.errors,
        load.error_kinds
    );
    anyhow::ensure!(
        last <= after_a_minute + SOAK_GROWTH,
        "resident memory grew from {} to {}",
        mib(after_a_minute),
        mib(last)
    );
    Ok(())
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

/// A running release server.
struct Server {
    process: tokio::process::Child,
    pid: u32,
    grpc: SocketAddr,
    http: SocketAddr,
    /// From start to `/readyz` answering 200.
    ready: Duration,
}

impl Server {
    async fn start(
        args: &Args,
        dir: &Path,
        log: &str,
        extra_args: &[String],
    ) -> anyhow::Result<Self> {
        let (grpc, http) = (free_address()?, free_address()?);
        let started = Instant::now();
        let process = devenv::spawn_server(
            &args.server_bin,
            dir,
            grpc,
            http,
            Some(&dir.join(log)),
            &[
                // Every sample is a write by the same identity: keep the rate limit out
                // of the way.
                format!("--writes-per-minute={}", args.writes.max(60)),
                format!("--write-burst={}", args.writes.max(60)),
                // The health probe and watch renewals are the requests a replica sends
                // on its own; spaced out, any request during the reads is one of theirs.
                "--probe-interval=10m".into(),
                "--watch-timeout=30m".into(),
            ]
            .into_iter()
            .chain(extra_args.iter().cloned())
            .collect::<Vec<_>>(),
        )?;
        devenv::wait_until_ready(http).await?;
        Ok(Self {
            pid: process.id().context("the server exited")?,
            process,
            grpc,
            http,
            ready: started.elapsed(),
        })
    }
}

/// How long ghz runs: a number of calls, or a duration.
#[derive(Clone, Copy)]
enum Amount {
    Calls(usize),
    For(Duration),
}

/// How ghz is run: against which server, with which client certificate, and how hard.
struct Ghz<'a> {
    bin: &'a Path,
    pki: &'a Path,
    address: SocketAddr,
    connections: usize,
    concurrency: usize,
}

impl Ghz<'_> {
    /// `amount` of calls of `call` with `data` (an array: one element per call, in
    /// turn), and the CPU time process `pid` spent meanwhile.
    async fn run(
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
async fn apiserver_gets(
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

/// `args.watchers` watches of every namespace over connections of WATCHES_PER_CONNECTION;
/// then `args.watch_changes` Deployments' ready count changed one after another through
/// the API server, each timed until every watcher has its CHANGED message.
async fn watchers(
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
    let mut server = Server::start(
        args,
        dir,
        "server-watchers.log",
        &[format!("--max-watches-per-identity={}", args.watchers)],
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = memory(server.pid, "VmRSS")?;
    std::fs::write(format!("/proc/{}/clear_refs", server.pid), "5")?;
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
    server.process.kill().await?;
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

fn quantile(sorted: &[Duration], q: f64) -> Duration {
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

/// User plus system CPU time of process `pid` (`/proc/<pid>/stat`, in the kernel's
/// 100 Hz user-visible ticks).
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| -> anyhow::Result<u64> {
        Ok(fields.get(index).context("a short /proc stat")?.parse()?)
    };
    // utime and stime are fields 14 and 15; `fields` starts at field 3.
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// A memory figure of `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`).
fn memory(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?
        .trim()
        .parse()?;
    Ok(kib * 1024)
}

fn free_address() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

fn us(duration: Duration) -> String {
    format!("{:.0} µs", duration.as_secs_f64() * 1e6)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

/// The machine the figures come from.
fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|line| {
            line.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory = read("/proc/meminfo")
        .lines()
        .find_map(|line| {
            line.strip_prefix("MemTotal:")
                .map(|total| total.trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!(
        "{cores} cores ({cpu}), {memory} memory, Linux {}; server, control plane and load generator share the cores",
        read("/proc/sys/kernel/osrelease").trim()
    )
}

fn report(args: &Args, sizes: &[Size], watchers: Option<&Watchers>) -> String {
    let mut out = String::new();
    let header = |out: &mut String, first: &str| {
        let columns: Vec<String> = sizes
            .iter()
            .map(|size| format!("{} Deployments", size.deployments))
            .collect();
        let _ = writeln!(out, "| {first} | {} |", columns.join(" | "));
        let _ = writeln!(out, "|---|{}", "---|".repeat(sizes.len()));
    };
    let row = |out: &mut String, name: &str, cell: &dyn Fn(&Size) -> String| {
        let cells: Vec<String> = sizes.iter().map(cell).collect();
        let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
    };
    let _ = writeln!(
        out,
        "# Benchmarks\n\nWritten by `make bench` (`tools/devenv/src/bench.rs`); do not edit by hand.\n"
    );
    let _ = writeln!(out, "Machine: {}.\n", machine());
    let _ = writeln!(
        out,
        "Load: ghz {} calls per scenario over {} connections, {} in flight; the API-server baseline {} GETs, {} in flight. \
         Deployments are spread over {} namespaces, each with a small pod template; the selector `tier=t3` matches one in {TIERS}. \
         CPU is the answering process's user + system time from `/proc` (the server's; for the baseline kube-apiserver's plus etcd's).\n",
        args.calls,
        args.connections,
        args.concurrency,
        args.apiserver_calls,
        args.concurrency,
        args.namespaces
    );
    let _ = writeln!(out, "## Reads\n");
    let names: Vec<&'static str> = sizes
        .first()
        .map(|size| size.loads.iter().map(|load| load.name).collect())
        .unwrap_or_default();
    header(
        &mut out,
        "Scenario: calls/s · p50 · p99 · CPU per 1,000 calls · errors",
    );
    for name in names {
        row(&mut out, name, &|size| {
            let load = size.load(name);
            format!(
                "{:.0}/s · {} · {} · {} · {}",
                load.per_second,
                ms(load.p50),
                ms(load.p99),
                ms(load.cpu_per_1000),
                load.errors
            )
        });
    }
    row(
        &mut out,
        "API-server requests sent by the server during the gRPC reads",
        &|size| format!("{}", size.kube_requests_during_reads),
    );
    let _ = writeln!(out, "\n## Server\n");
    header(&mut out, "Figure");
    row(&mut out, "start-up to ready", &|size| ms(size.ready));
    row(&mut out, "resident memory after sync", &|size| {
        mib(size.rss_synced)
    });
    row(&mut out, "resident memory after the reads", &|size| {
        mib(size.rss_loaded)
    });
    row(
        &mut out,
        "peak resident memory during a forced relist",
        &|size| mib(size.rss_relist_peak),
    );
    row(
        &mut out,
        &format!(
            "SetReplicas → spec.replicas, {} writes, p50 · p99",
            args.writes
        ),
        &|size| format!("{} · {}", ms(size.write_p50), ms(size.write_p99)),
    );

    let _ = writeln!(out, "\n## Goals\n");
    header(&mut out, "Goal");
    let cpu = |size: &Size, name: &str| size.load(name).cpu_per_1000.as_secs_f64();
    let get = "GetReplicas";
    let health = "grpc.health.v1/Check";
    row(
        &mut out,
        "GetReplicas CPU per call ≤ 1.2× the health check's",
        &|size| {
            let ratio = cpu(size, get) / cpu(size, health);
            format!(
                "{ratio:.2}× ({} vs {}): {}",
                us(size.load(get).cpu_per_1000 / 1000),
                us(size.load(health).cpu_per_1000 / 1000),
                met(ratio <= 1.2)
            )
        },
    );
    row(
        &mut out,
        "GetReplicas throughput ≥ 85 % of the health check's",
        &|size| {
            let ratio = size.load(get).per_second / size.load(health).per_second;
            format!("{:.0} %: {}", ratio * 100.0, met(ratio >= 0.85))
        },
    );
    row(
        &mut out,
        "List page of 100 (all namespaces) ≤ 3× the CPU of a GetReplicas (goal at 10,000)",
        &|size| {
            let ratio = cpu(size, "ListDeployments, all namespaces") / cpu(size, get);
            format!("{ratio:.2}×: {}", met(ratio <= 3.0))
        },
    );
    row(
        &mut out,
        "GetReplicas ≥ 10× the API server's throughput for the same read",
        &|size| {
            let ratio = size.load(get).per_second / size.load(BASELINE).per_second;
            format!("{ratio:.1}×: {}", met(ratio >= 10.0))
        },
    );
    row(
        &mut out,
        "(not a goal) the API server's CPU per GET ÷ Setpoint's per GetReplicas",
        &|size| format!("{:.1}×", cpu(size, BASELINE) / cpu(size, get)),
    );
    row(&mut out, "0 API-server requests per read", &|size| {
        met(size.kube_requests_during_reads == 0.0).into()
    });
    row(
        &mut out,
        "resident memory ≤ 48 MiB (goal at 10,000)",
        &|size| {
            format!(
                "{}: {}",
                mib(size.rss_loaded.max(size.rss_synced)),
                met(size.rss_loaded.max(size.rss_synced) <= 48 << 20)
            )
        },
    );
    row(
        &mut out,
        "ready ≤ 2 s after the API server answers",
        &|size| {
            format!(
                "{}: {}",
                ms(size.ready),
                met(size.ready <= Duration::from_secs(2))
            )
        },
    );
    row(
        &mut out,
        "SetReplicas → Deployment p50 ≤ 20 ms, p99 ≤ 100 ms",
        &|size| {
            met(size.write_p50 <= Duration::from_millis(20)
                && size.write_p99 <= Duration::from_millis(100))
            .into()
        },
    );
    let errors: u64 = sizes
        .iter()
        .flat_map(|size| &size.loads)
        .map(|load| load.errors)
        .sum();
    let calls: BTreeMap<usize, u64> = sizes
        .iter()
        .map(|size| {
            (
                size.deployments,
                size.loads.iter().map(|load| load.calls).sum(),
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "\nCalls per size: {calls:?}; failed calls in all: {errors}."
    );
    if let Some(watchers) = watchers {
        let per_watcher = watchers.rss_after.saturating_sub(watchers.rss_before)
            / watchers.watchers.max(1) as u64;
        let _ = writeln!(
            out,
            "\n## Watchers\n\n\
             {} WatchDeployments streams of every namespace over {} connections, on {} Deployments \
             (each watcher first receives all of them):\n\n\
             | figure | value |\n|---|---|\n\
             | every watcher synced (initial state sent) | {} |\n\
             | resident memory before → peak while they synced → with the watchers | {} → {} → {} ({:.1} KiB per watcher) |\n\
             | a Deployment's status changed through the API server → the last watcher has the change, p50 / p99 of {} changes | {} / {} |\n\
             | → each watcher has it, p50 / p99 of every delivery | {} / {} |",
            watchers.watchers,
            watchers.connections,
            watchers.deployments,
            ms(watchers.synced),
            mib(watchers.rss_before),
            mib(watchers.rss_peak),
            mib(watchers.rss_after),
            per_watcher as f64 / 1024.0,
            args.watch_changes,
            ms(watchers.all_p50),
            ms(watchers.all_p99),
            ms(watchers.each_p50),
            ms(watchers.each_p99),
        );
    }
    out
}
