//! The soak test (`make soak`): many clients reading for a long time; fails on any
//! failed call or on resident memory growing after the first minute.

use std::path::Path;
use std::time::Duration;

use crate::load::{self, Amount, Ghz, Protosets};
use crate::report::{mib, ms};
use crate::sample::memory;
use crate::server::{Run, Server};
use crate::{Args, say};

/// Clients of the soak test.
const SOAK_CLIENTS: usize = 200;
/// Resident memory may grow this much from the end of the soak's first minute.
const SOAK_GROWTH: u64 = 4 << 20;

/// SOAK_CLIENTS clients calling GetReplicas for `duration`, with the server's resident
/// memory sampled every 10 s.
pub(crate) async fn run(
    args: &Args,
    dir: &Path,
    protosets: &Protosets,
    namespaces: &[String],
    count: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    let server = Server::start(
        args,
        dir,
        Run::Soak {
            clients: SOAK_CLIENTS,
        },
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
    let gets = load::get_requests(namespaces, count);
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
    server.stop().await?;
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
