//! The Markdown report (`docs/benchmarks.md` under `make bench`): the machine, every
//! figure side by side per Deployment count, and each goal met or missed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::load::BASELINE;
use crate::size::Size;
use crate::watchers::Watchers;
use crate::{Args, TIERS};

pub(crate) fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

fn us(duration: Duration) -> String {
    format!("{:.0} µs", duration.as_secs_f64() * 1e6)
}

pub(crate) fn mib(bytes: u64) -> String {
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

/// The report of `sizes` (ascending) and, when measured, of the watcher benchmark.
pub(crate) fn markdown(args: &Args, sizes: &[Size], watchers: Option<&Watchers>) -> String {
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
        "# Benchmarks\n\nWritten by `make bench` (`tools/devenv/src/bench/`); do not edit by hand.\n"
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
