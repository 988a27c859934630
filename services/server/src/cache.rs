//! The watch cache every read is answered from: kube-runtime watches of Deployments,
//! ReplicaSetpoints and HorizontalPodAutoscalers in all namespaces, kept in the
//! [`Stores`] the reconciler shares. Nothing here sends a request per read. It also
//! knows which watches keep failing, so readiness can say when answers may be stale.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::runtime::WatchStreamExt;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use setpoint_core::{DeploymentKey, Error};
use setpoint_k8s::ReplicaSetpoint;
use setpoint_k8s::index::{Deployments, Stores};
use tokio::task::JoinSet;

use crate::metrics::{KindLabels, Metrics};

#[derive(Clone)]
pub struct Cache {
    pub stores: Stores,
    failing: FailingWatches,
}

/// What went wrong with a watch, without the API server's own words: `/readyz` is
/// unauthenticated, and those name Setpoint's ServiceAccount. The log has the details.
fn summary(error: &watcher::Error) -> String {
    let status = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status,
        watcher::Error::WatchError(status) => status,
        watcher::Error::NoResourceVersion => return "the list had no resourceVersion".into(),
        _ => return "the API server could not be reached".into(),
    };
    match status.code {
        403 => "403 Forbidden: Setpoint's RBAC does not allow it".into(),
        code => format!("the API server answered {code} {}", status.reason),
    }
}

/// First retry delay of a failed watch, doubling up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(500);
/// Longest retry delay: a watch that still fails reports an error at least this often.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// A failed watch counts as recovered after a successful event, or after this long
/// without another error: a re-established watch emits nothing until something
/// changes, but one that still failed would have retried, and failed, by then.
const QUIET_AFTER_FAILURE: Duration = Duration::from_secs(12);

/// The watches that failed and have not recovered: since when, when last, and why.
#[derive(Clone, Default)]
struct FailingWatches(Arc<Mutex<BTreeMap<&'static str, Failure>>>);

struct Failure {
    since: Instant,
    last: Instant,
    error: String,
}

impl FailingWatches {
    fn failed(&self, kind: &'static str, error: String) {
        let now = Instant::now();
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kind)
            .and_modify(|failure| {
                failure.last = now;
                failure.error.clone_from(&error);
            })
            .or_insert(Failure {
                since: now,
                last: now,
                error,
            });
    }

    fn recovered(&self, kind: &'static str) {
        let failed = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(kind);
        if let Some(failure) = failed {
            tracing::info!(kind, failed_for = ?failure.since.elapsed(), "watch recovered");
        }
    }

    /// Each watch failing for `longer_than`, with its latest error.
    fn longer_than(&self, longer_than: Duration) -> Vec<String> {
        let mut failing = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        failing.retain(|kind, failure| {
            let quiet = failure.last.elapsed() >= QUIET_AFTER_FAILURE;
            if quiet {
                tracing::info!(kind, "watch recovered (no error since its last retry)");
            }
            !quiet
        });
        failing
            .iter()
            .filter(|(_, failure)| failure.since.elapsed() >= longer_than)
            .map(|(kind, failure)| {
                format!(
                    "watch of {kind} failing for {}s: {}",
                    failure.since.elapsed().as_secs(),
                    failure.error
                )
            })
            .collect()
    }
}

/// Retry delays of a failed watch: doubling from [`RETRY_FIRST`] to [`RETRY_MAX`], back
/// to the first after a success.
struct RetryBackoff(Duration);

impl Iterator for RetryBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.0;
        self.0 = (delay * 2).min(RETRY_MAX);
        Some(delay)
    }
}

impl Backoff for RetryBackoff {
    fn reset(&mut self) {
        self.0 = RETRY_FIRST;
    }
}

impl Cache {
    /// Starts one watch per kind on `tasks`; the stores report synced once every
    /// watch has completed its first list.
    pub fn start(
        client: &Client,
        watch_timeout: Duration,
        metrics: &Metrics,
        tasks: &mut JoinSet<()>,
    ) -> Self {
        let config = watcher::Config::default()
            .any_semantic()
            .timeout(u32::try_from(watch_timeout.as_secs()).unwrap_or(u32::MAX));
        let (stores, mut setpoints) = Stores::new();
        let watches = Watches {
            stores: stores.clone(),
            failing: FailingWatches::default(),
            unsynced: Arc::new(AtomicUsize::new(3)),
            metrics,
            config,
        };
        let deployments = stores.deployments.clone();
        watches.start(
            Api::<Deployment>::all(client.clone()),
            "deployments",
            move |event| (deployments.apply(event), deployments.len()),
            tasks,
        );
        let autoscalers = stores.autoscalers.clone();
        watches.start(
            Api::<HorizontalPodAutoscaler>::all(client.clone()),
            "horizontalpodautoscalers",
            move |event| (autoscalers.apply(event), autoscalers.len()),
            tasks,
        );
        let store = stores.setpoints.clone();
        watches.start(
            Api::<ReplicaSetpoint>::all(client.clone()),
            "replicasetpoints",
            move |event| (setpoints.apply(event), store.len()),
            tasks,
        );
        Self {
            stores,
            failing: watches.failing,
        }
    }

    /// Why answers may be stale: each watch that has kept failing for `longer_than`.
    pub fn failing_watches(&self, longer_than: Duration) -> Vec<String> {
        self.failing.longer_than(longer_than)
    }

    pub fn is_synced(&self) -> bool {
        self.stores.is_synced()
    }

    fn ensure_synced(&self) -> Result<(), Error> {
        if self.is_synced() {
            Ok(())
        } else {
            Err(Error::NotSynced)
        }
    }

    /// The Deployment index, once every watch has completed its first list.
    pub fn deployments(&self) -> Result<&Deployments, Error> {
        self.ensure_synced()?;
        Ok(&self.stores.deployments)
    }

    /// The setpoint of the Deployment `key`, if any.
    pub fn setpoint(&self, key: &DeploymentKey) -> Option<Arc<ReplicaSetpoint>> {
        self.stores.setpoint(key)
    }

    /// The name of an HPA that scales the Deployment `key`, if any.
    pub fn autoscaler_of(&self, key: &DeploymentKey) -> Option<String> {
        self.stores.autoscalers.of(key)
    }
}

/// What each watch needs: where its events go, its failures, and the count of watches
/// that have not completed their first list.
struct Watches<'a> {
    stores: Stores,
    failing: FailingWatches,
    unsynced: Arc<AtomicUsize>,
    metrics: &'a Metrics,
    config: watcher::Config,
}

impl Watches<'_> {
    /// Starts a watch of `api` on `tasks`. `apply` stores each event and returns the
    /// Deployments it changed (which subscribers hear of) and the kind's object count.
    fn start<K>(
        &self,
        api: Api<K>,
        kind: &'static str,
        mut apply: impl FnMut(Event<K>) -> (Vec<DeploymentKey>, usize) + Send + 'static,
        tasks: &mut JoinSet<()>,
    ) where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    {
        let labels = KindLabels { kind };
        let (restarts, size) = (
            self.metrics.watch_restarts.get_or_create(&labels).clone(),
            self.metrics.cache_objects.get_or_create(&labels).clone(),
        );
        let (stores, failing, unsynced) = (
            self.stores.clone(),
            self.failing.clone(),
            self.unsynced.clone(),
        );
        let mut synced = false;
        let stream = watcher::watcher(api, self.config.clone()).backoff(RetryBackoff(RETRY_FIRST));
        tasks.spawn(stream.for_each(move |event| {
            match event {
                Ok(event) => {
                    let first_list_done = !synced && matches!(event, Event::InitDone);
                    let (changed, objects) = apply(event);
                    size.set(i64::try_from(objects).unwrap_or(i64::MAX));
                    changed.into_iter().for_each(|key| stores.changed(key));
                    failing.recovered(kind);
                    if first_list_done {
                        synced = true;
                        if unsynced.fetch_sub(1, Ordering::AcqRel) == 1 {
                            stores.mark_synced();
                            tracing::info!("watch cache synced");
                        }
                    }
                }
                Err(error) => {
                    restarts.inc();
                    tracing::warn!(kind, %error, "watch failed; retrying with backoff");
                    failing.failed(kind, summary(&error));
                }
            }
            std::future::ready(())
        }));
    }
}
