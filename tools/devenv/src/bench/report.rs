//! The Markdown report (`docs/benchmarks.md` under `make bench`): the machine, every
//! figure side by side per Deployment count, each goal met or missed (the table is
//! `goals`'), and the watcher benchmark with its goals.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::paged_list::PAGE;
use crate::size::Size;
use crate::watchers::Watchers;
use crate::{Args, ENV_BYTES, TIERS, goals};

pub(crate) fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub(crate) fn us(duration: Duration) -> String {
    format!("{:.0} µs", duration.as_secs_f64() * 1e6)
}

/// `n` with thousands separators: 100,000.
pub(crate) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (at, digit) in digits.chars().enumerate() {
        if at > 0 && (digits.len() - at).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

pub(crate) fn met(ok: bool) -> &'static str {
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

/// A table with a column per Deployment count.
pub(crate) struct Table<'a>(pub(crate) &'a [Size]);

impl Table<'_> {
    pub(crate) fn header(&self, out: &mut String, first: &str) {
        let columns: Vec<String> = self
            .0
            .iter()
            .map(|size| format!("{} Deployments", thousands(size.deployments)))
            .collect();
        let _ = writeln!(out, "| {first} | {} |", columns.join(" | "));
        let _ = writeln!(out, "|---|{}", "---|".repeat(self.0.len()));
    }

    pub(crate) fn row(&self, out: &mut String, name: &str, cell: impl Fn(&Size) -> String) {
        let cells: Vec<String> = self.0.iter().map(cell).collect();
        let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
    }
}

/// The report of `sizes` (ascending) and, when measured, of the watcher benchmark.
pub(crate) fn markdown(args: &Args, sizes: &[Size], watchers: Option<&Watchers>) -> String {
    let mut out = String::new();
    let table = Table(sizes);
    let _ = writeln!(
        out,
        "# Benchmarks\n\nWritten by `make bench` (`tools/devenv/src/bench/`); do not edit by hand.\n"
    );
    let _ = writeln!(out, "Machine: {}.\n", machine());
    let _ = writeln!(
        out,
        "Load: ghz {} calls per scenario over {} connections, {} in flight; the API-server baseline {} GETs, {} in flight. \
         Deployments are spread over {} namespaces, each with a {}-byte environment variable in its pod template; \
         the selector `tier=t3` matches 1 Deployment in {}. \
         CPU is the answering process's user + system time from `/proc` (the server's; for the baseline kube-apiserver's plus etcd's).\n",
        args.calls,
        args.connections,
        args.concurrency,
        args.apiserver_calls,
        args.concurrency,
        args.namespaces,
        ENV_BYTES,
        thousands(TIERS),
    );
    let _ = writeln!(out, "## Reads\n");
    let names: Vec<&'static str> = sizes
        .first()
        .map(|size| size.loads.iter().map(|load| load.name).collect())
        .unwrap_or_default();
    table.header(
        &mut out,
        "Scenario: calls/s · p50 · p99 · CPU per 1,000 calls · errors",
    );
    for name in names {
        table.row(&mut out, name, |size| {
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
    table.row(
        &mut out,
        "API-server requests sent by the server during the gRPC reads",
        |size| format!("{}", size.kube_requests_during_reads),
    );
    let _ = writeln!(out, "\n## Server\n");
    table.header(&mut out, "Figure");
    table.row(
        &mut out,
        &format!("the API server's own list of every Deployment, pages of {PAGE} (baseline)"),
        |size| ms(size.apiserver_list),
    );
    table.row(&mut out, "start-up to ready (setpoint-api alone)", |size| {
        ms(size.ready)
    });
    table.row(&mut out, "resident memory after sync", |size| {
        mib(size.rss_synced)
    });
    table.row(&mut out, "resident memory after the reads", |size| {
        mib(size.rss_loaded)
    });
    table.row(
        &mut out,
        "peak resident memory during a forced relist",
        |size| mib(size.rss_relist_peak),
    );
    table.row(
        &mut out,
        &format!(
            "SetReplicas → spec.replicas, {} writes, p50 · p99",
            args.writes
        ),
        |size| format!("{} · {}", ms(size.write_p50), ms(size.write_p99)),
    );

    goals::table(&mut out, &table);
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
        watchers_section(&mut out, args, watchers);
    }
    out
}

/// The watcher benchmark's figures, each with its goal.
fn watchers_section(out: &mut String, args: &Args, watchers: &Watchers) {
    let at = if watchers.deployments == args.watch_at {
        String::new()
    } else {
        let which = if watchers.deployments < args.watch_at {
            "run at the largest count measured below it"
        } else {
            "none is below it, run at the smallest count measured"
        };
        format!(
            " (`--watch-at {}` is not among the counts measured: {which})",
            args.watch_at
        )
    };
    let (initial, expected) = watchers.initial;
    let _ = writeln!(
        out,
        "\n## Watchers\n\n\
         {} WatchDeployments streams, each of one namespace, spread evenly over {} namespaces, \
         {} per connection over {} connections, at {} Deployments{at}. \
         Each watcher first receives its namespace's Deployments ({} INITIAL messages in all; {} expected).\n\n\
         | Figure | Value | Goal |\n|---|---|---|\n\
         | from the first call until every watcher is SYNCED | {} | ≤ 20 s: {} |\n\
         | resident memory before → peak while they synced → after | {} → {} → {} | |\n\
         | per watcher: (after − before) ÷ watchers | {:.1} KiB | ≤ 16 KiB: {} |\n\
         | a Deployment's status changed through the API server → every watcher of its namespace has the CHANGED message, p50 / p99 of {} changes | {} / {} | p99 ≤ 250 ms: {} |\n\
         | → each watcher has it, p50 / p99 of every delivery | {} / {} | |",
        thousands(watchers.watchers),
        args.namespaces,
        args.watches_per_connection,
        watchers.connections,
        thousands(watchers.deployments),
        thousands(usize::try_from(initial).unwrap_or(usize::MAX)),
        thousands(usize::try_from(expected).unwrap_or(usize::MAX)),
        ms(watchers.synced),
        met(watchers.synced <= Duration::from_secs(20)),
        mib(watchers.rss_before),
        mib(watchers.rss_peak),
        mib(watchers.rss_after),
        watchers.per_watcher() as f64 / 1024.0,
        met(watchers.per_watcher() <= 16 << 10),
        watchers.changes,
        ms(watchers.all_p50),
        ms(watchers.all_p99),
        met(watchers.all_p99 <= Duration::from_millis(250)),
        ms(watchers.each_p50),
        ms(watchers.each_p99),
    );
}
