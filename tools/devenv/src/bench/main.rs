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
//!
//! One module a job: `server` starts and stops the API and the reconciler with its flags,
//! `load` drives reads (ghz and the API-server baseline), `sample` reads `/proc`,
//! `size` measures one Deployment count, `watchers` the watch fan-out, `soak` the soak
//! test, and `report` writes the Markdown.

mod load;
mod report;
mod sample;
mod server;
mod size;
mod soak;
mod watchers;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
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

/// Deployments per label value of `tier`, which the selector scenario selects.
const TIERS: usize = 10;

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
        if watched.is_none() && args.watchers > 0 {
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
