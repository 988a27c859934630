//! The report's goals per Deployment count (those of issue 25, "100,000 Deployments and
//! 10,000 watchers on one replica", and the earlier ones it leaves standing), each met
//! or missed. A goal set at some counts shows its figure at every count and is judged
//! only at those ("—" elsewhere); the watcher goals are in the watcher section.

use std::fmt::Write as _;
use std::time::Duration;

use crate::load::BASELINE;
use crate::report::{Table, met, mib, ms, thousands, us};
use crate::size::Size;

/// The Deployment count the memory goals are set at.
const GOAL_SIZE: usize = 100_000;

const GET: &str = "GetReplicas";
const HEALTH: &str = "grpc.health.v1/Check";
const LIST_ALL: &str = "ListDeployments, all namespaces";
const LIST_SELECTOR: &str = "ListDeployments, selector";

/// "met" or "missed" where `size` is one of `judged_at`, "—" elsewhere.
fn verdict(size: &Size, judged_at: &[usize], ok: bool) -> &'static str {
    if judged_at.contains(&size.deployments) {
        met(ok)
    } else {
        "—"
    }
}

fn cpu(size: &Size, name: &str) -> f64 {
    size.load(name).cpu_per_1000.as_secs_f64()
}

pub(crate) fn table(out: &mut String, table: &Table<'_>) {
    let _ = writeln!(out, "\n## Goals\n");
    table.header(out, "Goal");
    let goal_size = thousands(GOAL_SIZE);
    table.row(
        out,
        "GetReplicas CPU per call ≤ 1.2× the health check's",
        |size| {
            let ratio = cpu(size, GET) / cpu(size, HEALTH);
            format!(
                "{ratio:.2}× ({} vs {}): {}",
                us(size.load(GET).cpu_per_1000 / 1000),
                us(size.load(HEALTH).cpu_per_1000 / 1000),
                met(ratio <= 1.2)
            )
        },
    );
    table.row(
        out,
        "GetReplicas throughput ≥ 85 % of the health check's",
        |size| {
            let ratio = size.load(GET).per_second / size.load(HEALTH).per_second;
            format!("{:.0} %: {}", ratio * 100.0, met(ratio >= 0.85))
        },
    );
    table.row(
        out,
        &format!(
            "List page of 100 (all namespaces) ≤ 3× the CPU of a GetReplicas (goal at 10,000 and at {goal_size})"
        ),
        |size| {
            let ratio = cpu(size, LIST_ALL) / cpu(size, GET);
            let judged = verdict(size, &[10_000, GOAL_SIZE], ratio <= 3.0);
            format!("{ratio:.2}×: {judged}")
        },
    );
    table.row(
        out,
        &format!(
            "List with a selector matching 1 in {} costs the same order as one without: its page's CPU ≤ 3× the all-namespaces page's",
            thousands(crate::TIERS)
        ),
        |size| {
            let ratio = cpu(size, LIST_SELECTOR) / cpu(size, LIST_ALL);
            format!("{ratio:.2}×: {}", met(ratio <= 3.0))
        },
    );
    table.row(
        out,
        "GetReplicas ≥ 10× the API server's throughput for the same read",
        |size| {
            let ratio = size.load(GET).per_second / size.load(BASELINE).per_second;
            format!("{ratio:.1}×: {}", met(ratio >= 10.0))
        },
    );
    table.row(
        out,
        "(not a goal) the API server's CPU per GET ÷ Setpoint's per GetReplicas",
        |size| format!("{:.1}×", cpu(size, BASELINE) / cpu(size, GET)),
    );
    table.row(out, "0 API-server requests per read", |size| {
        met(size.kube_requests_during_reads == 0.0).into()
    });
    table.row(
        out,
        &format!("resident memory after sync and after the reads ≤ 128 MiB (goal at {goal_size})"),
        |size| {
            let most = size.rss_synced.max(size.rss_loaded);
            format!(
                "{} · {}: {}",
                mib(size.rss_synced),
                mib(size.rss_loaded),
                verdict(size, &[GOAL_SIZE], most <= 128 << 20)
            )
        },
    );
    table.row(
        out,
        &format!("peak resident memory during a forced relist ≤ 160 MiB (goal at {goal_size})"),
        |size| {
            format!(
                "{}: {}",
                mib(size.rss_relist_peak),
                verdict(size, &[GOAL_SIZE], size.rss_relist_peak <= 160 << 20)
            )
        },
    );
    table.row(
        out,
        &format!("ready ≤ 8 s after start (goal at {goal_size})"),
        |size| {
            format!(
                "{}: {}",
                ms(size.ready),
                verdict(size, &[GOAL_SIZE], size.ready <= Duration::from_secs(8))
            )
        },
    );
    table.row(
        out,
        &format!(
            "ready ≤ 1.5× the API server's own paged list of every Deployment (goal at {goal_size})"
        ),
        |size| {
            let ratio = size.ready.as_secs_f64() / size.apiserver_list.as_secs_f64();
            format!(
                "{ratio:.2}× ({} vs {}): {}",
                ms(size.ready),
                ms(size.apiserver_list),
                verdict(size, &[GOAL_SIZE], ratio <= 1.5)
            )
        },
    );
    table.row(
        out,
        "SetReplicas → Deployment p50 ≤ 20 ms, p99 ≤ 100 ms",
        |size| {
            met(size.write_p50 <= Duration::from_millis(20)
                && size.write_p99 <= Duration::from_millis(100))
            .into()
        },
    );
    if !table.0.iter().any(|size| size.deployments == GOAL_SIZE) {
        let _ = writeln!(
            out,
            "\nThe goals at {goal_size} Deployments are not judged in this run: \
             `make bench BENCH_ARGS=\"--deployments 1000,10000,100000\"` measures that count too."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Load;

    fn size(deployments: usize) -> Size {
        let load = |name: &'static str, cpu_ms: u64| Load {
            name,
            calls: 1000,
            errors: 0,
            error_kinds: String::new(),
            per_second: 5000.0,
            p50: Duration::from_millis(1),
            p99: Duration::from_millis(5),
            cpu_per_1000: Duration::from_millis(cpu_ms),
        };
        Size {
            deployments,
            apiserver_list: Duration::from_millis(deployments as u64 / 20),
            ready: Duration::from_millis(200 + deployments as u64 / 25),
            rss_synced: 40 << 20,
            rss_loaded: 41 << 20,
            rss_relist_peak: 170 << 20,
            loads: vec![
                load(HEALTH, 60),
                load(GET, 70),
                load(LIST_ALL, 200),
                load(LIST_SELECTOR, 300),
                load(BASELINE, 1000),
            ],
            kube_requests_during_reads: 0.0,
            write_p50: Duration::from_millis(4),
            write_p99: Duration::from_millis(15),
        }
    }

    fn row<'a>(out: &'a str, starting: &str) -> &'a str {
        out.lines()
            .find(|line| line.starts_with(&format!("| {starting}")))
            .expect("the row")
    }

    #[test]
    fn goals_set_at_100000_are_judged_only_there() {
        let sizes = [size(1_000), size(10_000), size(100_000)];
        let mut out = String::new();
        table(&mut out, &Table(&sizes));
        let relist = row(&out, "peak resident memory");
        assert!(relist.ends_with("| 170.0 MiB: — | 170.0 MiB: — | 170.0 MiB: **missed** |"));
        let list = row(&out, "List page of 100");
        assert!(
            list.ends_with("| 2.86×: — | 2.86×: met | 2.86×: met |"),
            "{list}"
        );
        let ready = row(&out, "ready ≤ 1.5×");
        assert!(
            ready.ends_with("| 4.80× (240.00 ms vs 50.00 ms): — | 1.20× (600.00 ms vs 500.00 ms): — | 0.84× (4200.00 ms vs 5000.00 ms): met |"),
            "{ready}"
        );
        assert!(!out.contains("not judged in this run"));
        table(&mut out, &Table(&sizes[..2]));
        assert!(out.contains("not judged in this run"));
    }
}
