//! The reconciler: kube-runtime's applier over ReplicaSetpoints, triggered by every
//! change the index's watches report for a setpoint, its Deployment or an HPA
//! ([`Index::subscribe`]). Each reconcile reads the Deployment and HPAs from the index
//! (no request), decides ([`crate::decide`]), writes replicas only through
//! the scale subresource with the cached resourceVersion, and records the outcome in
//! status and Events. A 409 means the cache was behind: the retry reads it again.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::broadcast::error::RecvError;

use setpoint_core::DeploymentKey;
use setpoint_k8s_api::RECONCILER_FIELD_MANAGER;
use setpoint_k8s_api::{ReplicaSetpoint, key_of};
use setpoint_k8s_index::Index;

use setpoint_k8s_api::resource::Reason;

use crate::decide::{Decision, Target, decide, next_status};
use crate::metrics::{ReconcilerMetrics, ResultLabels};
/// Retry delays after errors: doubling from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// After a 409 the cache was merely stale: retry almost at once, doubling up to the
/// last while conflicts repeat (a watch that stays behind).
const CONFLICT_RETRY: Duration = Duration::from_millis(50);
const CONFLICT_RETRY_MAX: Duration = Duration::from_secs(5);
/// Bound on one reconcile (a few requests): the kube client has no read timeout, since
/// watches must stay open.
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Deployment or the setpoint changed between read and write (409); retrying")]
    Conflict,
    #[error("the reconcile took longer than {RECONCILE_TIMEOUT:?}")]
    Timeout,
    #[error("ReplicaSetpoint {0} has no namespace")]
    NoNamespace(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

pub struct Context {
    client: Client,
    index: Index,
    recorder: Recorder,
    metrics: ReconcilerMetrics,
    /// Consecutive failures per setpoint, for exponential backoff.
    failures: Mutex<HashMap<ObjectRef<ReplicaSetpoint>, u32>>,
    /// Consecutive conflicts per setpoint, which back off separately.
    conflicts: Mutex<HashMap<ObjectRef<ReplicaSetpoint>, u32>>,
}

/// Runs the reconciler until the task is dropped (the lease loop aborts it when this
/// replica stops leading): once the index is synced, every setpoint, then each one whose
/// setpoint, Deployment or HPA changes. `instance` names this replica in Events.
pub async fn run(client: Client, index: Index, metrics: ReconcilerMetrics, instance: String) {
    let reporter = Reporter {
        controller: "setpoint".into(),
        instance: Some(instance),
    };
    index.wait_synced().await;
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        index: index.clone(),
        metrics,
        failures: Mutex::default(),
        conflicts: Mutex::default(),
    });
    controller::applier(
        |setpoint, context| Box::pin(reconcile(setpoint, context)),
        error_policy,
        context,
        index.setpoints().clone(),
        triggers(index),
        controller::Config::default(),
    )
    .for_each(|result| {
        if let Err(error) = result {
            tracing::debug!(%error, "reconcile failed");
        }
        std::future::ready(())
    })
    .await;
}

/// Every setpoint, then the setpoint of each changed Deployment; every setpoint again
/// if the changes came faster than this replica took them.
fn triggers(index: Index) -> impl Stream<Item = Result<ObjectRef<ReplicaSetpoint>, Infallible>> {
    // Subscribed before the first round, so that no change falls between the two.
    let changes = index.subscribe();
    let every = |index: &Index| {
        let setpoints = index.setpoints().state();
        stream::iter(
            setpoints
                .iter()
                .map(|setpoint| ObjectRef::from_obj(&**setpoint))
                .collect::<Vec<_>>(),
        )
    };
    let first = every(&index);
    let next = stream::unfold((changes, index), move |(mut changes, index)| async move {
        let triggered = match changes.recv().await {
            Ok(key) => stream::iter(vec![setpoint_of(key)]),
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "fell behind the watch events; reconciling every setpoint"
                );
                every(&index)
            }
            Err(RecvError::Closed) => return None,
        };
        Some((triggered, (changes, index)))
    });
    first.chain(next.flatten()).map(Ok)
}

/// The setpoint of the Deployment `key` (they share namespace and name).
fn setpoint_of(key: DeploymentKey) -> ObjectRef<ReplicaSetpoint> {
    ObjectRef::new(&key.name).within(&key.namespace)
}

#[tracing::instrument(
    name = "reconcile",
    skip_all,
    fields(setpoint = %ObjectRef::from_obj(&*setpoint), generation = setpoint.metadata.generation)
)]
async fn reconcile(setpoint: Arc<ReplicaSetpoint>, context: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = tokio::time::timeout(RECONCILE_TIMEOUT, reconcile_once(&setpoint, &context))
        .await
        .unwrap_or(Err(Error::Timeout));
    context
        .metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        let key = ObjectRef::from_obj(&*setpoint);
        context.failures().remove(&key);
        lock(&context.conflicts).remove(&key);
        context.update_backoff_gauge();
    }
    result
}

async fn reconcile_once(setpoint: &ReplicaSetpoint, context: &Context) -> Result<Action, Error> {
    // Being deleted (a finalizer holds it): management has ended, as it does once the
    // setpoint is gone.
    if setpoint.metadata.deletion_timestamp.is_some() {
        tracing::debug!("the setpoint is being deleted; leaving the Deployment alone");
        return Ok(Action::await_change());
    }
    let name = setpoint.name_any();
    let namespace = setpoint
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    let key = key_of(setpoint);
    let deployment = context.index.deployment(&key);
    let autoscaler = context.index.autoscaler_of(&key);
    let target = deployment.as_ref().map(|deployment| Target {
        uid: deployment.uid.to_string(),
        replicas: deployment.spec_replicas,
    });

    let decision = decide(setpoint, target.as_ref(), autoscaler.as_deref());
    let (reason, message, applied, result) = match decision {
        Decision::Scale {
            from,
            to,
            reverting,
        } => {
            let deployments = Api::<Deployment>::namespaced(context.client.clone(), &namespace);
            let resource_version = deployment.map(|d| d.resource_version.to_string());
            match scale(&deployments, &name, to, resource_version).await {
                Ok(()) => {
                    let (event, note) = if reverting {
                        (
                            "Reverted",
                            format!("reverted an external scale from {from} to {to}"),
                        )
                    } else {
                        ("Scaled", format!("scaled from {from} to {to}"))
                    };
                    tracing::info!(%namespace, deployment = %name, from, to, reverting, "scaled");
                    context
                        .publish(setpoint, EventType::Normal, event, note)
                        .await;
                    let message = format!("spec.replicas is {to}");
                    (Reason::Reconciled, message, Some(to), "scaled")
                }
                Err(Error::Conflict) => {
                    context.count("conflict");
                    return Err(Error::Conflict);
                }
                Err(error) => {
                    let message = format!("scaling to {to} failed: {error}");
                    // The scale error is what the retry is about; a failed status write
                    // only loses the report of it.
                    if let Err(status_error) = context
                        .write_status(setpoint, &namespace, Reason::ScaleFailed, message, None)
                        .await
                    {
                        tracing::warn!(%status_error, "reporting the failed scale failed");
                    }
                    context.count("error");
                    return Err(error);
                }
            }
        }
        Decision::InSync => {
            let message = format!("spec.replicas is {}", setpoint.spec.replicas);
            (
                Reason::Reconciled,
                message,
                Some(setpoint.spec.replicas),
                "in_sync",
            )
        }
        Decision::Hold { reason, message } => {
            let changed = setpoint
                .reconciled_condition()
                .is_none_or(|condition| condition.reason != reason.as_str());
            if changed {
                context
                    .publish(
                        setpoint,
                        EventType::Warning,
                        reason.as_str(),
                        message.clone(),
                    )
                    .await;
            }
            (reason, message, None, "held")
        }
    };
    context
        .write_status(setpoint, &namespace, reason, message, applied)
        .await?;
    context.count(result);
    // Deployment and HPA changes trigger a new reconcile; nothing to poll.
    Ok(Action::await_change())
}

/// PUT /scale with the cached resourceVersion: a 409 means the Deployment changed after
/// the cache saw it, and the retry decides again on what the watch has seen since.
async fn scale(
    deployments: &Api<Deployment>,
    name: &str,
    replicas: i32,
    resource_version: Option<String>,
) -> Result<(), Error> {
    let scale = Scale {
        metadata: ObjectMeta {
            name: Some(name.into()),
            resource_version,
            ..ObjectMeta::default()
        },
        spec: Some(ScaleSpec {
            replicas: Some(replicas),
        }),
        status: None,
    };
    let params = PostParams {
        field_manager: Some(RECONCILER_FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match deployments.replace_scale(name, &params, &scale).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_conflict() => Err(Error::Conflict),
        Err(error) => Err(error.into()),
    }
}

fn error_policy(setpoint: Arc<ReplicaSetpoint>, error: &Error, context: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(&*setpoint);
    if matches!(error, Error::Conflict) {
        let conflicts = bump(&mut lock(&context.conflicts), key);
        return Action::requeue(doubling(CONFLICT_RETRY, conflicts, CONFLICT_RETRY_MAX));
    }
    let attempts = bump(&mut context.failures(), key);
    context.update_backoff_gauge();
    let delay = doubling(BACKOFF_FIRST, attempts, BACKOFF_MAX);
    tracing::warn!(
        setpoint = %ObjectRef::from_obj(&*setpoint),
        %error,
        attempts,
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// Counts one more attempt for `key`; returns the count.
fn bump(
    counts: &mut HashMap<ObjectRef<ReplicaSetpoint>, u32>,
    key: ObjectRef<ReplicaSetpoint>,
) -> u32 {
    let count = counts.entry(key).or_insert(0);
    *count += 1;
    *count
}

/// `first`, doubled for each attempt after the first, at most `max`.
fn doubling(first: Duration, attempts: u32, max: Duration) -> Duration {
    first
        .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1)))
        .min(max)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Context {
    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<ReplicaSetpoint>, u32>> {
        lock(&self.failures)
    }

    fn update_backoff_gauge(&self) {
        let waiting = self.failures().len();
        self.metrics
            .backoff_objects
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    fn count(&self, result: &'static str) {
        self.metrics
            .reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Writes status only when it changed, so a reconcile that finds everything in order
    /// writes nothing. The write carries the setpoint's resourceVersion: a replica that
    /// lost the Lease, or read a stale setpoint, gets 409 instead of overwriting.
    async fn write_status(
        &self,
        setpoint: &ReplicaSetpoint,
        namespace: &str,
        reason: Reason,
        message: String,
        applied: Option<i32>,
    ) -> Result<(), Error> {
        let status = next_status(setpoint, reason, message, applied, Timestamp::now());
        if setpoint.status.as_ref() == Some(&status) {
            return Ok(());
        }
        Api::<ReplicaSetpoint>::namespaced(self.client.clone(), namespace)
            .patch_status(
                &setpoint.name_any(),
                &PatchParams {
                    field_manager: Some(RECONCILER_FIELD_MANAGER.into()),
                    ..PatchParams::default()
                },
                &Patch::Merge(serde_json::json!({
                    "metadata": { "resourceVersion": setpoint.resource_version() },
                    "status": status,
                })),
            )
            .await
            .map_err(|error| match error {
                kube::Error::Api(status) if status.is_conflict() => Error::Conflict,
                error => Error::Kube(error),
            })?;
        Ok(())
    }

    /// Events are best effort: failing to record one must not fail the reconcile.
    async fn publish(
        &self,
        setpoint: &ReplicaSetpoint,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = self
            .recorder
            .publish(&event, &setpoint.object_ref(&()))
            .await
        {
            tracing::warn!(%error, "recording an Event failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;
    use serde_json::{Value, json};
    use setpoint_k8s_api::ReplicaSetpointSpec;
    use testenv::fake;

    use super::*;

    const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/team-a/deployments/web";

    fn setpoint(replicas: i32) -> ReplicaSetpoint {
        let mut setpoint = ReplicaSetpoint::new(
            "web",
            ReplicaSetpointSpec {
                replicas,
                deployment_uid: "uid-web".into(),
            },
        );
        setpoint.metadata.namespace = Some("team-a".into());
        setpoint.metadata.generation = Some(1);
        setpoint.metadata.resource_version = Some("9".into());
        setpoint
    }

    fn deployment(replicas: i32) -> Deployment {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"namespace": "team-a", "name": "web", "uid": "uid-web", "resourceVersion": "42"},
            "spec": {"replicas": replicas, "selector": {}, "template": {}},
        }))
        .expect("a Deployment")
    }

    /// A reconciler whose watch cache holds the Deployment with `replicas` and no HPA,
    /// and a fake API server where `write` answers every request (scale, status, Events).
    fn cluster(
        replicas: i32,
        write: impl Fn(&fake::Received) -> (u16, Value) + Send + Sync + 'static,
    ) -> (Arc<Context>, fake::Log) {
        let (client, log) = fake::client(write);
        let (index, _) = Index::new();
        index.apply_deployment(kube::runtime::watcher::Event::Apply(deployment(replicas)));
        let context = Arc::new(Context {
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: "setpoint".into(),
                    instance: None,
                },
            ),
            client,
            index,
            metrics: ReconcilerMetrics::register(&mut Registry::default()),
            failures: Mutex::default(),
            conflicts: Mutex::default(),
        });
        (context, log)
    }

    #[tokio::test]
    async fn a_conflicting_scale_is_retried_soon_and_backs_off_while_conflicts_repeat() {
        let (context, log) = cluster(2, |_| (409, fake::status(409, "Conflict")));
        let setpoint = Arc::new(setpoint(5));
        let error = reconcile(setpoint.clone(), context.clone())
            .await
            .expect_err("409");
        assert!(matches!(error, Error::Conflict), "{error}");
        assert_eq!(
            error_policy(setpoint.clone(), &error, context.clone()),
            Action::requeue(CONFLICT_RETRY)
        );
        assert_eq!(
            error_policy(setpoint, &error, context.clone()),
            Action::requeue(CONFLICT_RETRY * 2),
            "a cache that stays behind is not hammered"
        );
        assert_eq!(context.failures().len(), 0, "a conflict is not a failure");
        let requests = log.requests();
        let put = requests.last().expect("the scale write");
        assert_eq!(
            (put.method.as_str(), put.uri.split('?').next()),
            ("PUT", Some(format!("{DEPLOYMENT}/scale").as_str()))
        );
        assert_eq!(
            put.body["metadata"]["resourceVersion"], "42",
            "the write is conditional on what was read"
        );
        assert_eq!(put.body["spec"]["replicas"], 5);
        assert!(
            !log.calls().iter().any(|call| call.contains("/status")),
            "no status is written for a conflict: {:?}",
            log.calls()
        );
    }

    #[tokio::test]
    async fn a_failed_status_write_fails_the_reconcile_and_backs_off() {
        let (context, log) = cluster(5, |_| (500, fake::status(500, "InternalError")));
        let setpoint = Arc::new(setpoint(5));
        let error = reconcile(setpoint.clone(), context.clone())
            .await
            .expect_err("status write failed");
        assert!(matches!(error, Error::Kube(_)), "{error}");
        assert_eq!(
            log.calls().last().map(String::as_str),
            Some("PATCH /apis/setpoint.dev/v1alpha1/namespaces/team-a/replicasetpoints/web/status")
        );
        assert_eq!(
            error_policy(setpoint.clone(), &error, context.clone()),
            Action::requeue(BACKOFF_FIRST)
        );
        assert_eq!(
            error_policy(setpoint, &error, context),
            Action::requeue(BACKOFF_FIRST * 2),
            "backoff doubles"
        );
    }

    #[tokio::test]
    async fn status_writes_are_conditional_on_the_setpoint_read() {
        let (context, log) = cluster(5, |_| (409, fake::status(409, "Conflict")));
        let setpoint = Arc::new(setpoint(5));
        let error = reconcile(setpoint.clone(), context.clone())
            .await
            .expect_err("another writer changed the setpoint");
        assert!(matches!(error, Error::Conflict), "{error}");
        assert_eq!(
            error_policy(setpoint, &error, context),
            Action::requeue(CONFLICT_RETRY)
        );
        let status = log.requests().pop().expect("the status write");
        assert!(status.uri.contains("/status"), "{}", status.uri);
        assert_eq!(status.body["metadata"]["resourceVersion"], "9");
    }

    #[tokio::test]
    async fn a_refused_scale_stays_the_error_when_reporting_it_fails_too() {
        let (context, _) = cluster(2, |request| match request.method.as_str() {
            "PUT" => (403, fake::status(403, "Forbidden")),
            _ => (500, fake::status(500, "InternalError")),
        });
        let error = reconcile(Arc::new(setpoint(5)), context)
            .await
            .expect_err("403");
        assert!(
            matches!(&error, Error::Kube(kube::Error::Api(status)) if status.code == 403),
            "the scale's own error, not the status write's: {error}"
        );
    }

    #[tokio::test]
    async fn a_refused_scale_is_reported_in_status() {
        let (context, log) = cluster(2, |request| match request.method.as_str() {
            "PUT" => (403, fake::status(403, "Forbidden")),
            _ => (
                200,
                serde_json::to_value(setpoint(5)).expect("the setpoint as stored"),
            ),
        });
        let error = reconcile(Arc::new(setpoint(5)), context)
            .await
            .expect_err("403");
        assert!(
            matches!(&error, Error::Kube(kube::Error::Api(status)) if status.code == 403),
            "the scale's own error: {error}"
        );
        let status = log
            .requests()
            .into_iter()
            .find(|request| request.uri.contains("/status"))
            .expect("a status write");
        assert_eq!(
            status.body["status"]["conditions"][0]["reason"],
            "ScaleFailed"
        );
    }

    #[tokio::test]
    async fn a_setpoint_being_deleted_is_not_enforced() {
        let (context, log) = cluster(2, |_| (500, fake::status(500, "unexpected write")));
        let mut deleting = setpoint(5);
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
        );
        reconcile(Arc::new(deleting), context)
            .await
            .expect("nothing to do");
        assert_eq!(log.calls(), Vec::<String>::new(), "no scale, no status");
    }

    #[tokio::test]
    async fn reconciles_read_from_the_watch_cache() {
        let (context, log) = cluster(5, |_| (500, fake::status(500, "unexpected write")));
        let mut in_sync = setpoint(5);
        in_sync.status = Some(next_status(
            &in_sync,
            Reason::Reconciled,
            "spec.replicas is 5".into(),
            Some(5),
            Timestamp::UNIX_EPOCH,
        ));
        reconcile(Arc::new(in_sync), context)
            .await
            .expect("in sync");
        assert_eq!(
            log.calls(),
            Vec::<String>::new(),
            "requests of an in-sync reconcile"
        );

        let (context, log) = cluster(2, |request| match request.method.as_str() {
            "PUT" => (
                200,
                json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": 5}}),
            ),
            _ => (
                200,
                serde_json::to_value(setpoint(5)).expect("the setpoint as stored"),
            ),
        });
        reconcile(Arc::new(setpoint(5)), context)
            .await
            .expect("scaled");
        let mut calls = log.calls();
        calls.sort();
        assert_eq!(
            calls,
            [
                "PATCH /apis/setpoint.dev/v1alpha1/namespaces/team-a/replicasetpoints/web/status"
                    .to_string(),
                "POST /apis/events.k8s.io/v1/namespaces/team-a/events".into(),
                format!("PUT {DEPLOYMENT}/scale"),
            ],
            "requests of a reconcile that scales: the scale, its status and its Event"
        );
    }
}
