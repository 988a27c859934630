//! Leader election on a coordination.k8s.io Lease: every replica serves reads, only the
//! holder runs the reconciler. The holder renews every `renew_every`; it stops leading
//! at once when it sees another holder, and when it could not renew for
//! `renew_deadline` (before the lease can expire for others). On shutdown it releases
//! the lease so a peer takes over without waiting for expiry.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use prometheus_client::metrics::gauge::Gauge;
use tokio::task::JoinSet;

/// Bound on each Lease request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (the pod name in Kubernetes).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub duration: Duration,
    /// How often the holder renews (and others check).
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// A holder that could not renew for this long stops leading: two thirds of the
    /// duration, so it has stopped before anyone else may take over.
    fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
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
    // A JoinSet, so that dropping this future (a crash, or an aborted task) also stops
    // the reconciler it started.
    let mut leading: Option<(JoinSet<()>, Instant)> = None;
    let mut ticks = tokio::time::interval(config.renew_every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = &mut shutdown => break,
        }
        let attempt = tokio::time::timeout(REQUEST_TIMEOUT, acquire_or_renew(&leases, &config));
        let holding = match attempt.await {
            Ok(Ok(holding)) => Some(holding),
            Ok(Err(error)) => {
                tracing::warn!(%error, "lease renewal failed");
                None
            }
            Err(_) => {
                tracing::warn!("lease renewal timed out");
                None
            }
        };
        leading = match (leading.take(), holding) {
            (None, Some(true)) => {
                tracing::info!(identity = %config.identity, lease = %config.name, "became leader");
                leader.set(1);
                let mut task = JoinSet::new();
                task.spawn(lead());
                Some((task, Instant::now()))
            }
            (Some((task, _)), Some(true)) => Some((task, Instant::now())),
            (Some((task, _)), Some(false)) => {
                stop_leading(task, &leader, "another replica holds the lease").await;
                None
            }
            (Some((task, renewed)), None) if renewed.elapsed() >= config.renew_deadline() => {
                stop_leading(task, &leader, "could not renew the lease in time").await;
                None
            }
            (still, _) => still,
        };
    }
    if let Some((task, _)) = leading {
        stop_leading(task, &leader, "shutting down").await;
        match tokio::time::timeout(REQUEST_TIMEOUT, release(&leases, &config)).await {
            Ok(Ok(())) => tracing::info!("released the lease"),
            Ok(Err(error)) => tracing::warn!(%error, "releasing the lease failed"),
            Err(_) => tracing::warn!("releasing the lease timed out"),
        }
    }
}

async fn stop_leading(mut task: JoinSet<()>, leader: &Gauge, why: &str) {
    // Abort, not a graceful stop: a replica that may have lost the lease must not
    // start another write.
    task.shutdown().await;
    leader.set(0);
    tracing::warn!(why, "stopped leading");
}

/// Takes the lease if it is free or expired, renews it if held; `Ok(false)` when another
/// replica holds it (or won a race for it).
async fn acquire_or_renew(leases: &Api<Lease>, config: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let duration_seconds = i32::try_from(config.duration.as_secs()).unwrap_or(i32::MAX);
    let Some(lease) = leases.get_opt(&config.name).await? else {
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
        return won(leases.create(&PostParams::default(), &lease).await);
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let mine = spec.holder_identity.as_deref() == Some(config.identity.as_str());
    if !mine && !is_free(&spec, now) {
        return Ok(false);
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
    won(leases
        .replace(&config.name, &PostParams::default(), &taken)
        .await)
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

fn won(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => {
            Ok(false)
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
