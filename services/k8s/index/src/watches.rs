//! The kube-runtime watches that fill the index, one per kind in all namespaces, and
//! which of them keep failing, so that readiness can say when answers may be stale.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use setpoint_core::DeploymentKey;
use tokio::task::JoinSet;

use crate::Index;
use crate::metrics::{IndexMetrics, KindLabels};

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
pub(crate) const RETRY_FIRST: Duration = Duration::from_millis(500);
/// Longest retry delay: a watch that still fails reports an error at least this often.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// A failed watch counts as recovered after a successful event, or after this long
/// without another error: a re-established watch emits nothing until something
/// changes, but one that still failed would have retried, and failed, by then.
const QUIET_AFTER_FAILURE: Duration = Duration::from_secs(12);

/// The watches that failed and have not recovered: since when, when last, and why.
#[derive(Clone, Default)]
pub(crate) struct FailingWatches(Arc<Mutex<BTreeMap<&'static str, Failure>>>);

struct Failure {
    since: Instant,
    last: Instant,
    error: String,
}

impl FailingWatches {
    pub(crate) fn failed(&self, kind: &'static str, error: String) {
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

    pub(crate) fn recovered(&self, kind: &'static str) {
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
    pub(crate) fn longer_than(&self, longer_than: Duration) -> Vec<String> {
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
pub(crate) struct RetryBackoff(Duration);

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

/// What each watch needs: where its events go, its failures, and the count of watches
/// that have not completed their first list.
pub(crate) struct IndexWatches<'a> {
    pub(crate) index: Index,
    pub(crate) unsynced: Arc<AtomicUsize>,
    pub(crate) metrics: &'a IndexMetrics,
    pub(crate) config: watcher::Config,
}

impl IndexWatches<'_> {
    /// Starts a watch of `api` on `tasks`. `apply` stores each event and returns the
    /// Deployments it changed (which subscribers hear of) and the kind's object count.
    pub(crate) fn start<K>(
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
            self.metrics.objects.get_or_create(&labels).clone(),
        );
        let (index, unsynced) = (self.index.clone(), self.unsynced.clone());
        let mut synced = false;
        let stream = watcher::watcher(api, self.config.clone()).backoff(RetryBackoff(RETRY_FIRST));
        tasks.spawn(stream.for_each(move |event| {
            match event {
                Ok(event) => {
                    let first_list_done = !synced && matches!(event, Event::InitDone);
                    let (changed, objects) = apply(event);
                    size.set(i64::try_from(objects).unwrap_or(i64::MAX));
                    changed.into_iter().for_each(|key| index.changed(key));
                    index.failing.recovered(kind);
                    if first_list_done {
                        synced = true;
                        if unsynced.fetch_sub(1, Ordering::AcqRel) == 1 {
                            index.mark_synced();
                            tracing::info!("watch cache synced");
                        }
                    }
                }
                Err(error) => {
                    restarts.inc();
                    tracing::warn!(kind, %error, "watch failed; retrying with backoff");
                    index.failing.failed(kind, summary(&error));
                }
            }
            std::future::ready(())
        }));
    }
}
