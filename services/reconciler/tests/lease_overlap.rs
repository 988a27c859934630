//! Leadership never overlaps, even when the leader's link to the API server turns slow
//! and then silent: one replica reaches the API server through a proxy that first
//! delays, then black-holes its traffic; the other takes over. Both replicas' own
//! timelines ("became leader" / "stopped leading", from their logs) must not overlap.
//! A test binary of its own: the Lease is cluster-wide.

mod support;

use std::time::Duration;

use leadership::Timeline;
use support::Reconciler;
use testenv::proxy::{Link, Proxy};

/// When each replica led, from its log events.
mod leadership {
    use serde_json::Value;

    /// (identity, became, stopped) intervals, in log order; `stopped` is `None` while
    /// leading. Timestamps are RFC 3339 UTC with the same precision, so they compare as
    /// strings.
    pub type Timeline = Vec<(String, String, Option<String>)>;

    pub fn timeline(events: &[Value]) -> Timeline {
        let mut intervals: Timeline = Vec::new();
        for event in events {
            let (Some(identity), Some(at)) =
                (event["identity"].as_str(), event["timestamp"].as_str())
            else {
                continue;
            };
            match event["message"].as_str() {
                Some("became leader") => intervals.push((identity.into(), at.into(), None)),
                Some("stopped leading") => {
                    if let Some(open) = intervals
                        .iter_mut()
                        .rev()
                        .find(|(who, _, stopped)| who == identity && stopped.is_none())
                    {
                        open.2 = Some(at.into());
                    }
                }
                _ => {}
            }
        }
        intervals
    }
}

async fn start(proxy: Option<&Proxy>, identity: &str) -> Reconciler {
    Reconciler::start_via(proxy, identity).await
}

fn leaders(timeline: &Timeline) -> Vec<&str> {
    timeline
        .iter()
        .filter(|(_, _, stopped)| stopped.is_none())
        .map(|(who, _, _)| who.as_str())
        .collect()
}

#[tokio::test]
async fn a_leader_cut_off_from_the_api_server_stops_before_another_takes_over() {
    let logs = support::logs();
    let timeline = || leadership::timeline(&logs.events("setpoint_reconciler::lease"));
    let proxy = Proxy::start(testenv::shared().await.apiserver_addr())
        .await
        .expect("proxy");
    let cut_off = start(Some(&proxy), "replica-cut-off").await;
    testenv::wait_for("the proxied replica to lead", || async {
        (leaders(&timeline()) == ["replica-cut-off"]).then_some(())
    })
    .await;
    let other = start(None, "replica-direct").await;

    // First slow (each renewal takes seconds), then silent.
    proxy.set(Link::Delay(Duration::from_millis(1200)));
    tokio::time::sleep(Duration::from_secs(6)).await;
    proxy.set(Link::BlackHole);
    testenv::wait_for("the direct replica to take over", || async {
        (leaders(&timeline()) == ["replica-direct"]).then_some(())
    })
    .await;

    let intervals = timeline();
    for (index, (who, became, stopped)) in intervals.iter().enumerate() {
        for (other_who, other_became, other_stopped) in &intervals[index + 1..] {
            if who == other_who {
                continue;
            }
            // Two intervals overlap unless one ends before the other begins.
            let disjoint = stopped.as_ref().is_some_and(|end| end < other_became)
                || other_stopped.as_ref().is_some_and(|end| end < became);
            assert!(disjoint, "two leaders at once: {intervals:#?}");
        }
    }
    assert!(
        intervals.iter().any(|(who, _, _)| who == "replica-direct"),
        "{intervals:#?}"
    );
    drop((cut_off, other));
}
