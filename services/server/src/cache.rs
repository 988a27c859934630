//! The watch cache every read is answered from: kube-runtime reflectors over
//! Deployments, ReplicaSetpoints and HorizontalPodAutoscalers in all namespaces,
//! trimmed to what answers need. Nothing here sends a request per read. It also knows
//! which watches keep failing, so readiness can say when answers may be stale.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use setpoint_core::{DeploymentKey, Error};
use setpoint_k8s::{ReplicaSetpoint, autoscaler_target};
use tokio::task::JoinSet;

use crate::metrics::{KindLabels, Metrics};

#[derive(Clone)]
pub struct Cache {
    deployments: Store<Deployment>,
    setpoints: Store<ReplicaSetpoint>,
    autoscalers: Store<HorizontalPodAutoscaler>,
    synced: Arc<AtomicBool>,
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
    /// Starts one watch per kind on `tasks`; the cache reports synced once every
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
        let failing = FailingWatches::default();
        let deployments = watch(
            Api::<Deployment>::all(client.clone()),
            "deployments",
            config.clone(),
            |deployment| {
                deployment.managed_fields_mut().clear();
                deployment.annotations_mut().clear();
                if let Some(spec) = deployment.spec.as_mut() {
                    // The pod template is most of a Deployment's size and no answer uses it.
                    spec.template = Default::default();
                }
            },
            &failing,
            metrics,
            tasks,
        );
        let setpoints = watch(
            Api::<ReplicaSetpoint>::all(client.clone()),
            "replicasetpoints",
            config.clone(),
            |setpoint| setpoint.managed_fields_mut().clear(),
            &failing,
            metrics,
            tasks,
        );
        let autoscalers = watch(
            Api::<HorizontalPodAutoscaler>::all(client.clone()),
            "horizontalpodautoscalers",
            config,
            |autoscaler| {
                autoscaler.managed_fields_mut().clear();
                autoscaler.annotations_mut().clear();
                autoscaler.status = None;
            },
            &failing,
            metrics,
            tasks,
        );

        let synced = Arc::new(AtomicBool::new(false));
        let stores = (deployments.clone(), setpoints.clone(), autoscalers.clone());
        let flag = synced.clone();
        tasks.spawn(async move {
            // `wait_until_ready` only fails when the writer is dropped, i.e. at shutdown.
            let ready = stores.0.wait_until_ready().await.is_ok()
                && stores.1.wait_until_ready().await.is_ok()
                && stores.2.wait_until_ready().await.is_ok();
            if ready {
                flag.store(true, Ordering::Release);
                tracing::info!("watch cache synced");
            }
        });
        Self {
            deployments,
            setpoints,
            autoscalers,
            synced,
            failing,
        }
    }

    /// Why answers may be stale: each watch that has kept failing for `longer_than`.
    pub fn failing_watches(&self, longer_than: Duration) -> Vec<String> {
        self.failing.longer_than(longer_than)
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    fn ensure_synced(&self) -> Result<(), Error> {
        if self.is_synced() {
            Ok(())
        } else {
            Err(Error::NotSynced)
        }
    }

    /// Every cached Deployment (a snapshot of shared pointers).
    pub fn deployments(&self) -> Result<Vec<Arc<Deployment>>, Error> {
        self.ensure_synced()?;
        Ok(self.deployments.state())
    }

    pub fn deployment(&self, key: &DeploymentKey) -> Result<Option<Arc<Deployment>>, Error> {
        self.ensure_synced()?;
        Ok(self
            .deployments
            .get(&ObjectRef::new(&key.name).within(&key.namespace)))
    }

    /// The setpoint of the Deployment `key`, if any.
    pub fn setpoint(&self, key: &DeploymentKey) -> Option<Arc<ReplicaSetpoint>> {
        self.setpoints
            .get(&ObjectRef::new(&key.name).within(&key.namespace))
    }

    /// The name of an HPA that scales the Deployment `key`, if any.
    pub fn autoscaler_of(&self, key: &DeploymentKey) -> Option<String> {
        self.autoscalers.state().iter().find_map(|autoscaler| {
            (autoscaler_target(autoscaler).as_ref() == Some(key)).then(|| autoscaler.name_any())
        })
    }
}

/// Starts a reflector for `api` on `tasks`, applying `trim` to every object before it
/// is stored, and returns its store.
fn watch<K>(
    api: Api<K>,
    kind: &'static str,
    config: watcher::Config,
    trim: impl FnMut(&mut K) + Send + 'static,
    failing: &FailingWatches,
    metrics: &Metrics,
    tasks: &mut JoinSet<()>,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let labels = KindLabels { kind };
    let (restarts, size) = (
        metrics.watch_restarts.get_or_create(&labels).clone(),
        metrics.cache_objects.get_or_create(&labels).clone(),
    );
    let (store, failing) = (reader.clone(), failing.clone());
    let stream = watcher(api, config)
        .backoff(RetryBackoff(RETRY_FIRST))
        .modify(trim)
        .reflect(writer);
    tasks.spawn(stream.for_each(move |event| {
        match event {
            Ok(_) => {
                size.set(store.len() as i64);
                failing.recovered(kind);
            }
            Err(error) => {
                restarts.inc();
                tracing::warn!(kind, %error, "watch failed; retrying with backoff");
                failing.failed(kind, summary(&error));
            }
        }
        std::future::ready(())
    }));
    reader
}
