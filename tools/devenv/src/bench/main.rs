//! `setpoint-bench` (what `make bench` runs): a release build of the server against the
//! local control plane, at each Deployment count asked for (1,000 and 10,000 by
//! default; `--deployments 1000,10000,100000` adds the size the goals are set at), side
//! by side. The Deployments are spread round robin over `--namespaces` (100), each with
//! a 200-byte environment variable in its pod template and a `tier` label of which
//! `tier=t3` selects one in TIERS (1,000).
//!
//! At each count: the API server's own time to list every Deployment in pages of 500
//! (the start-up baseline), then the server (setpoint-api) started alone and timed to
//! ready, and only then setpoint-reconciler beside it. Reads are driven by ghz (pinned in
//! `tools/bench`) with fixed connections and concurrency; the server's CPU time per 1,000
//! calls comes from `/proc`, since on a small machine throughput is bounded by the load
//! generator. The same read answered by the API server (a GET per request) at the same
//! concurrency is the read baseline. Also: resident memory after sync, after the reads
//! and at the peak of a relist forced by restarting the API server, and SetReplicas →
//! `spec.replicas`. At one count (`--watch-at`, 10,000, or the largest measured below it,
//! else the smallest), WatchDeployments: `--watchers` (10,000) streams of one namespace
//! each, spread evenly over the namespaces, `--watches-per-connection` (64) on each
//! connection; the time until all are synced, the server's memory per watcher, and how
//! long a change takes to reach every watcher of its namespace. Prints a Markdown
//! report with each goal met or missed; figures only, no assertions.
//!
//! One module a job: `server` starts and stops the API and the reconciler with its flags,
//! `paged_list` times the API server's own paged list, `load` drives reads (ghz and the
//! API-server baseline), `sample` reads `/proc`, `size` measures one Deployment count,
//! `writes` times SetReplicas → `spec.replicas`, `watchers` the watch fan-out, `soak` the
//! soak test, and `report` and `goals` write the Markdown.

mod goals;
mod load;
mod paged_list;
mod report;
mod sample;
mod server;
mod size;
mod soak;
mod watchers;
mod writes;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use clap::builder::RangedU64ValueParser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::EnvVar;
use kube::api::PostParams;
use kube::{Api, Client};

/// Benchmark setpoint-api against a local control plane.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The setpoint-api binary (a release build measures what ships).
    #[arg(long, default_value = "target/release/setpoint-api")]
    api_bin: PathBuf,
    /// The setpoint-reconciler binary, which applies the written setpoints.
    #[arg(long, default_value = "target/release/setpoint-reconciler")]
    reconciler_bin: PathBuf,
    /// ghz, the gRPC load generator (`tools/bench/build.sh` builds the pinned one).
    #[arg(long)]
    ghz: PathBuf,
    /// Deployment counts to measure, side by side (the goals are set at 100,000).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    deployments: Vec<usize>,
    /// Namespaces the Deployments are spread over (round robin).
    #[arg(long, default_value_t = 100, value_parser = positive())]
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
    /// WatchDeployments streams, each of one namespace, spread evenly over the
    /// namespaces (0: no watcher benchmark).
    #[arg(long, default_value_t = 10_000)]
    watchers: usize,
    /// The Deployment count the watcher benchmark runs at: this one if measured, else
    /// the largest measured below it, else the smallest.
    #[arg(long, default_value_t = 10_000)]
    watch_at: usize,
    /// Watches per gRPC connection in the watcher benchmark (the server is started with
    /// this `--max-watches-per-connection`, at most 64, the streams an HTTP/2 connection
    /// may carry); connections are opened as needed.
    #[arg(long, default_value_t = 64, value_parser = positive())]
    watches_per_connection: usize,
    /// Changes whose fan-out to every watcher of their namespace is timed.
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

/// A count of at least one.
fn positive() -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(1..)
}

/// Deployments per label value of `tier`: the selector scenario's `tier=t3` matches one
/// Deployment in TIERS.
const TIERS: usize = 1_000;
/// Bytes of the environment variable in each Deployment's pod template.
const ENV_BYTES: usize = 200;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    args.deployments.sort_unstable();
    args.deployments.dedup();
    anyhow::ensure!(!args.deployments.is_empty(), "--deployments is empty");
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
    let protosets = load::write_protosets(dir.path())?;
    if let Some(seconds) = args.soak_seconds {
        let count = args.deployments.last().copied().unwrap_or(10_000);
        say(&format!("creating {count} Deployments ..."));
        create_deployments(&admin, &namespaces, 0..count).await?;
        return soak::run(
            &args,
            dir.path(),
            &protosets,
            &namespaces,
            count,
            Duration::from_secs(seconds),
        )
        .await;
    }

    let watch_at = watch_size(&args.deployments, args.watch_at);
    let mut sizes = Vec::new();
    let mut watched = None;
    let mut created = 0;
    for (round, &count) in args.deployments.iter().enumerate() {
        say(&format!("creating Deployments {created}..{count} ..."));
        create_deployments(&admin, &namespaces, created..count).await?;
        created = count;
        let round = i32::try_from(round)?;
        sizes.push(
            size::measure(
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
        if count == watch_at && args.watchers > 0 {
            watched = Some(watchers::measure(&args, &admin, dir.path(), &namespaces, count).await?);
        }
    }
    let report = report::markdown(&args, &sizes, watched.as_ref());
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

/// The Deployment count of `sizes` (ascending, not empty) the watcher benchmark runs
/// at: `wanted`, else the largest below it, else the smallest.
fn watch_size(sizes: &[usize], wanted: usize) -> usize {
    sizes
        .iter()
        .copied()
        .rfind(|&size| size <= wanted)
        .unwrap_or(sizes[0])
}

/// The name of Deployment `index` and its namespace (round robin).
fn deployment_key(namespaces: &[String], index: usize) -> (String, String) {
    (
        namespaces[index % namespaces.len()].clone(),
        format!("app-{index:05}"),
    )
}

/// Deployment `index` as the benchmark creates it: testenv's minimal Deployment with the
/// `tier` label and an ENV_BYTES environment variable, different in every Deployment.
fn bench_deployment(name: &str, index: usize) -> Deployment {
    let mut deployment = testenv::deployment(name, 1);
    deployment
        .metadata
        .labels
        .get_or_insert_default()
        .insert("tier".into(), format!("t{}", index % TIERS));
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let value = (0..ENV_BYTES)
        .map(|byte| char::from(ALPHABET[(index * 31 + byte * 7) % ALPHABET.len()]))
        .collect();
    let container = deployment
        .spec
        .as_mut()
        .and_then(|spec| spec.template.spec.as_mut())
        .and_then(|pod| pod.containers.first_mut())
        .expect("testenv's Deployment has a container");
    container.env.get_or_insert_default().push(EnvVar {
        name: "APP_CONFIG".into(),
        value: Some(value),
        ..EnvVar::default()
    });
    deployment
}

async fn create_deployments(
    admin: &Client,
    namespaces: &[String],
    indexes: std::ops::Range<usize>,
) -> anyhow::Result<()> {
    stream::iter(indexes)
        .map(|index| async move {
            let (namespace, name) = deployment_key(namespaces, index);
            Api::<Deployment>::namespaced(admin.clone(), &namespace)
                .create(&PostParams::default(), &bench_deployment(&name, index))
                .await
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_are_consistent() {
        use clap::CommandFactory as _;
        Args::command().debug_assert();
        let args = Args::parse_from(["setpoint-bench", "--ghz", "ghz"]);
        assert_eq!((args.namespaces, args.watchers), (100, 10_000));
        assert_eq!((args.watch_at, args.watches_per_connection), (10_000, 64));
    }

    #[test]
    fn the_watcher_benchmark_runs_at_the_count_asked_for_or_the_nearest_below() {
        let sizes = [1_000, 10_000, 100_000];
        assert_eq!(watch_size(&sizes, 10_000), 10_000);
        assert_eq!(watch_size(&sizes, 50_000), 10_000);
        assert_eq!(watch_size(&sizes, 500), 1_000);
    }

    #[test]
    fn each_deployment_carries_its_tier_and_a_200_byte_variable() {
        let deployment = bench_deployment("app-01003", 1_003);
        let labels = deployment.metadata.labels.unwrap_or_default();
        assert_eq!(labels.get("tier").map(String::as_str), Some("t3"));
        let pod = deployment.spec.unwrap().template.spec.unwrap();
        let env = pod.containers[0].env.clone().unwrap_or_default();
        assert_eq!(env[0].value.as_ref().map(String::len), Some(ENV_BYTES));
    }
}
