//! Leader election on a coordination.k8s.io Lease: every reconciler replica keeps its
//! index warm, only the holder reconciles. On shutdown the holder releases the lease so
//! a peer takes over without waiting for expiry.
//!
//! Timing. A renewal writes `renewTime` = the wall-clock time just before the write is
//! sent; a peer may take over once its clock passes `renewTime + duration`. So the
//! holder counts its term from when the renewing write was *sent* (not from when the
//! answer arrived), on its monotonic clock, and stops leading at `sent + renew_deadline`
//! (two thirds of the duration) unless a later renewal succeeded: strictly before any
//! peer may take over, with a third of the duration as margin for clock skew between
//! replicas. Each attempt is bounded by the time left in the term, and a timer ends the
//! term at its deadline even while an attempt is in flight or between attempts. A write
//! that arrives late carries the resourceVersion it read, so it cannot overwrite a
//! peer's takeover (409).

use std::future::Future;
use std::time::Duration;

use clap::Args;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use prometheus_client::metrics::gauge::Gauge;
use setpoint_core::duration::parse_duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Bound on each Lease request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

/// The leader-election Lease, in `--lease-namespace`.
pub const LEASE_NAME: &str = "setpoint-leader";

#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Leader election")]
pub struct LeaseConfig {
    /// Namespace of the leader-election Lease `setpoint-leader`.
    #[arg(
        long = "lease-namespace",
        env = "POD_NAMESPACE",
        default_value = "setpoint"
    )]
    pub namespace: String,

    #[arg(skip = LEASE_NAME.to_owned())]
    pub name: String,

    /// This replica's name in the leader-election Lease and in Events [default:
    /// <hostname>-<pid>].
    #[arg(long, env = "POD_NAME", default_value_t = default_identity(), hide_default_value = true)]
    pub identity: String,

    /// How long the Lease is valid without renewal (whole seconds); a crashed leader is
    /// replaced within this time plus one renew interval.
    #[arg(long = "lease-duration", env = "SETPOINT_LEASE_DURATION", default_value = "15s",
          value_parser = parse_duration)]
    pub duration: Duration,

    /// How often the leader renews the Lease (and others check it).
    #[arg(long = "lease-renew-interval", env = "SETPOINT_LEASE_RENEW_INTERVAL",
          default_value = "5s", value_name = "DURATION", value_parser = parse_duration)]
    pub renew_every: Duration,
}

/// `<hostname>-<pid>`: unique per process on a node, readable in Events.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "setpoint".into());
    format!("{host}-{}", std::process::id())
}

impl LeaseConfig {
    /// Refuses timings that parse but cannot work: the Lease is written in whole
    /// seconds, and the holder must renew before its term (two thirds of the duration)
    /// ends; a renew interval of zero would spin (or panic, for tokio's interval).
    pub fn validate(&self) -> Result<(), String> {
        if self.duration < Duration::from_secs(1) || self.duration.subsec_nanos() != 0 {
            return Err(format!(
                "--lease-duration must be whole seconds, at least 1s (got {:?})",
                self.duration
            ));
        }
        if self.renew_every.is_zero() || self.renew_every >= self.renew_deadline() {
            return Err(format!(
                "--lease-renew-interval ({:?}) must be above zero and below two thirds of \
                 --lease-duration ({:?})",
                self.renew_every, self.duration
            ));
        }
        Ok(())
    }

    /// How long after sending a successful renewal the holder may lead: two thirds of
    /// the duration, so it has stopped before anyone else may take over.
    fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
}

/// While leading: the reconciler's task and the end of the current term. A JoinSet, so
/// that dropping the loop (a crash, or an aborted task) also stops the reconciler.
struct Term {
    task: JoinSet<()>,
    until: Instant,
}

/// Runs `lead()` as a task while this replica holds the lease; returns after
/// `shutdown` completes, having stopped the task and released the lease.
pub async fn run<F, Fut>(
    client: Client,
    config: LeaseConfig,
    leader: Gauge,
    mut lead: F,
    shutdown: impl Future<Output = ()>,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let leases = Api::<Lease>::namespaced(client, &config.namespace);
    let stop =
        |term: Term, why: &'static str| stop_leading(term.task, &leader, &config.identity, why);
    let mut leading: Option<Term> = None;
    let mut ticks = tokio::time::interval(config.renew_every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let until = leading.as_ref().map(|term| term.until);
        let why = tokio::select! {
            _ = ticks.tick() => None,
            () = &mut shutdown => break,
            () = term_end(until) => Some("could not renew the lease in time"),
            () = reconciler_end(&mut leading) => {
                tracing::error!("the reconciler stopped on its own; stepping down");
                Some("the reconciler stopped")
            }
        };
        if let Some(why) = why {
            // The next tick takes the lease again if it is still ours to take, and
            // starts a new reconciler.
            if let Some(term) = leading.take() {
                stop(term, why).await;
            }
            continue;
        }
        let budget = until.map_or(REQUEST_TIMEOUT, |until| {
            until
                .saturating_duration_since(Instant::now())
                .min(REQUEST_TIMEOUT)
        });
        let held = match tokio::time::timeout(budget, acquire_or_renew(&leases, &config)).await {
            Ok(Ok(held)) => Some(held),
            Ok(Err(error)) => {
                tracing::warn!(%error, "lease renewal failed");
                None
            }
            Err(_) => {
                tracing::warn!(after = ?budget, "lease renewal timed out");
                None
            }
        };
        let term_from = |sent: Instant| sent + config.renew_deadline();
        leading = match (leading.take(), held) {
            (None, Some(Some(sent))) if term_from(sent) > Instant::now() => {
                tracing::info!(identity = %config.identity, lease = %config.name, "became leader");
                leader.set(1);
                let mut task = JoinSet::new();
                task.spawn(lead());
                Some(Term {
                    task,
                    until: term_from(sent),
                })
            }
            (Some(term), Some(Some(sent))) => Some(Term {
                until: term_from(sent),
                ..term
            }),
            (Some(term), Some(None)) => {
                stop(term, "another replica holds the lease").await;
                None
            }
            (Some(term), None) if Instant::now() >= term.until => {
                stop(term, "could not renew the lease in time").await;
                None
            }
            (still, _) => still,
        };
    }
    if let Some(term) = leading {
        stop(term, "shutting down").await;
        match tokio::time::timeout(REQUEST_TIMEOUT, release(&leases, &config)).await {
            Ok(Ok(())) => tracing::info!("released the lease"),
            Ok(Err(error)) => tracing::warn!(%error, "releasing the lease failed"),
            Err(_) => tracing::warn!("releasing the lease timed out"),
        }
    }
}

/// Completes at the end of the term; never without one.
async fn term_end(until: Option<Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}

/// Completes when the reconciler's task ends by itself (it should run until aborted);
/// never while not leading.
async fn reconciler_end(leading: &mut Option<Term>) {
    match leading {
        Some(term) => {
            term.task.join_next().await;
        }
        None => std::future::pending().await,
    }
}

async fn stop_leading(mut task: JoinSet<()>, leader: &Gauge, identity: &str, why: &str) {
    // Abort, not a graceful stop: a replica that may have lost the lease must not
    // start another write.
    task.shutdown().await;
    leader.set(0);
    tracing::warn!(identity, why, "stopped leading");
}

/// Takes the lease if it is free or expired, renews it if held. `Some(sent)`, the
/// moment the winning write was sent, when this replica holds it; `None` when another
/// replica holds it (or won a race for it).
async fn acquire_or_renew(
    leases: &Api<Lease>,
    config: &LeaseConfig,
) -> Result<Option<Instant>, kube::Error> {
    let duration_seconds = i32::try_from(config.duration.as_secs()).unwrap_or(i32::MAX);
    let current = leases.get_opt(&config.name).await?;
    // Both clocks read together, after the read and just before the write: `renewTime`
    // is what peers count from, `sent` is what this replica counts from.
    let (sent, now) = (Instant::now(), Timestamp::now());
    let Some(lease) = current else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_duration_seconds: Some(duration_seconds),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return won(leases.create(&PostParams::default(), &lease).await, sent);
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let mine = spec.holder_identity.as_deref() == Some(config.identity.as_str());
    if !mine && !is_free(&spec, now) {
        return Ok(None);
    }
    let mut taken = lease;
    taken.spec = Some(LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        renew_time: Some(MicroTime(now)),
        lease_duration_seconds: Some(duration_seconds),
        acquire_time: if mine {
            spec.acquire_time
        } else {
            Some(MicroTime(now))
        },
        lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(!mine)),
        ..spec
    });
    // The resourceVersion read above makes this a compare-and-swap.
    won(
        leases
            .replace(&config.name, &PostParams::default(), &taken)
            .await,
        sent,
    )
}

/// Nobody holds it, or the holder let it expire.
fn is_free(spec: &LeaseSpec, now: Timestamp) -> bool {
    let held = spec
        .holder_identity
        .as_deref()
        .is_some_and(|h| !h.is_empty());
    let expires = spec.renew_time.as_ref().map(|renewed| {
        renewed.0 + SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(0).into())
    });
    !held || expires.is_none_or(|expires| expires <= now)
}

fn won(result: Result<Lease, kube::Error>, sent: Instant) -> Result<Option<Instant>, kube::Error> {
    match result {
        Ok(_) => Ok(Some(sent)),
        Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => {
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Clears the holder, if it is still us, so a peer can take over at its next check.
async fn release(leases: &Api<Lease>, config: &LeaseConfig) -> Result<(), kube::Error> {
    let Some(mut lease) = leases.get_opt(&config.name).await? else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    leases
        .replace(&config.name, &PostParams::default(), &lease)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed_seconds_ago: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: Some(MicroTime(
                Timestamp::now() - SignedDuration::from_secs(renewed_seconds_ago),
            )),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_is_free_when_unheld_or_expired() {
        let now = Timestamp::now();
        assert!(is_free(&spec(None, 0, 15), now));
        assert!(is_free(&spec(Some(""), 0, 15), now));
        assert!(is_free(&spec(Some("a"), 20, 15), now));
        assert!(!is_free(&spec(Some("a"), 5, 15), now));
    }

    #[test]
    fn the_holder_stops_before_others_may_take_over() {
        let config = LeaseConfig {
            namespace: "setpoint".into(),
            name: "setpoint-leader".into(),
            identity: "a".into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        };
        assert_eq!(config.renew_deadline(), Duration::from_secs(10));
        assert!(config.renew_deadline() < config.duration);
    }
}
