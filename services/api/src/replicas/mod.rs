//! The API's operations in domain terms: list, get and set replica counts, and release a
//! Deployment, for an authorized [`Caller`]. Reads come from the index; a set validates,
//! refuses Deployments an HPA scales, spends from the caller's write budget, stores the
//! setpoint with a compare-and-swap ([`writes`]) and leaves an audit event (a dry run
//! spends from its own, larger budget and stores nothing); a release deletes the setpoint
//! the same way. No gRPC types: [`crate::edge::grpc`] turns messages into these calls.

pub mod query;
pub mod selector;
pub mod view;
mod writes;

use kube::{Api, Client};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use setpoint_core::key::{page_size, validate_replicas};
use setpoint_core::limits::WriteLimiter;
use setpoint_core::{AUDIT, Caller, DeploymentKey};
use setpoint_k8s_api::{ReplicaSetpoint, ReplicaSetpointSpec, setpoint_version};
use setpoint_k8s_index::{DeploymentRow, Index};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::Error;
use query::{Query, decode_page_token, encode_page_token};
use view::{DeploymentView, ListQuery};
use writes::{check_version, delete_setpoint, store_setpoint};

/// What ListDeployments asks for, as the caller sent it.
#[derive(Debug, Default)]
pub struct ListRequest {
    /// Empty for all namespaces.
    pub namespace: String,
    pub label_selector: String,
    /// 0 for the default.
    pub page_size: i32,
    /// Empty for the first page.
    pub page_token: String,
}

pub struct Page {
    pub deployments: Vec<DeploymentView>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// What SetReplicas asks for.
#[derive(Debug)]
pub struct SetRequest {
    pub key: DeploymentKey,
    pub replicas: i32,
    /// Only write if the setpoint is at this version ("" = no setpoint yet).
    pub expected_version: Option<String>,
    /// Check everything, write nothing.
    pub dry_run: bool,
}

/// What a write is, for its audit events.
struct Intent {
    /// The audit events' message, e.g. "SetReplicas dry run".
    method: &'static str,
    dry_run: bool,
    requested: Option<i32>,
    expected_version: Option<String>,
}

pub struct Replicas {
    pub index: Index,
    pub client: Client,
    pub max_replicas: i32,
    /// Writes here need a binding that names the namespace.
    pub protected_namespaces: BTreeSet<String>,
    /// Spent only by writes that passed every check, just before they are made.
    pub write_limiter: WriteLimiter,
    /// Dry runs write nothing but are audited: their own budget, ten times the writes'.
    pub dry_run_limiter: WriteLimiter,
    /// Bound on one set (its reads and writes), which outlives a caller that gives up:
    /// the RPC's own time limit, so a patient caller sees the timeout itself.
    pub write_timeout: Duration,
    /// The writes in progress, which the server waits for on shutdown so that none is
    /// cut off from its audit event.
    pub writes: TaskTracker,
}

impl Replicas {
    pub fn list(&self, caller: &Caller, request: ListRequest) -> Result<Page, Error> {
        let query = Query::parse(caller, request.namespace, &request.label_selector)?;
        let query = ListQuery {
            page_size: page_size(request.page_size)?,
            after: decode_page_token(&request.page_token, &query.fingerprint)?,
            query,
        };
        let (page, next) = view::list_page(self.index.deployments()?, &query);
        Ok(Page {
            deployments: page
                .into_iter()
                .map(|deployment| {
                    let setpoint = self.index.setpoint(&deployment.key);
                    DeploymentView::of(&deployment, setpoint.as_deref())
                })
                .collect(),
            next_page_token: next
                .map(|key| encode_page_token(&query.query.fingerprint, &key))
                .unwrap_or_default(),
        })
    }

    pub fn get(&self, caller: &Caller, key: &DeploymentKey) -> Result<DeploymentView, Error> {
        caller.check(&key.namespace)?;
        let deployment = self
            .index
            .deployments()?
            .get(key)
            .ok_or_else(|| setpoint_core::Error::DeploymentNotFound(key.clone()))?;
        Ok(DeploymentView::of(
            &deployment,
            self.index.setpoint(key).as_deref(),
        ))
    }

    /// Stores the setpoint and answers with the Deployment as the stored setpoint sees
    /// it (with `dry_run`, as it would see it).
    pub async fn set(
        self: &Arc<Self>,
        caller: Caller,
        request: SetRequest,
    ) -> Result<DeploymentView, Error> {
        let key = request.key.clone();
        let intent = Intent {
            method: if request.dry_run {
                "SetReplicas dry run"
            } else {
                "SetReplicas"
            },
            dry_run: request.dry_run,
            requested: Some(request.replicas),
            expected_version: request.expected_version.clone(),
        };
        let (replicas, writer) = (Arc::clone(self), caller.clone());
        let write = async move { replicas.store(&writer, &request).await };
        self.audited(intent, &caller, &key, write).await
    }

    /// Deletes the setpoint, so the reconciler leaves the Deployment alone; answers with
    /// the Deployment, if it exists, as unmanaged.
    pub async fn release(
        self: &Arc<Self>,
        caller: Caller,
        key: DeploymentKey,
        expected_version: Option<String>,
    ) -> Result<Option<DeploymentView>, Error> {
        let intent = Intent {
            method: "ReleaseDeployment",
            dry_run: false,
            requested: None,
            expected_version: expected_version.clone(),
        };
        let (replicas, writer, target) = (Arc::clone(self), caller.clone(), key.clone());
        let write = async move {
            replicas
                .unmanage(&writer, &target, expected_version.as_deref())
                .await
        };
        self.audited(intent, &caller, &key, write).await
    }

    /// Runs a write in a task of its own, so a caller that cancels or runs out of time
    /// cannot cut it off from its audit event; `write_timeout` bounds it. The audit log
    /// gets the intent before anything is written and the outcome (with the previous and
    /// the new desired replicas) after.
    async fn audited<T: Send + 'static>(
        &self,
        intent: Intent,
        caller: &Caller,
        key: &DeploymentKey,
        write: impl Future<Output = Result<(Option<i32>, Option<i32>, T), Error>> + Send + 'static,
    ) -> Result<T, Error> {
        let (identity, deployment) = (caller.identity.clone(), key.clone());
        let Intent {
            method,
            dry_run,
            requested,
            expected_version,
        } = intent;
        tracing::info!(
            target: AUDIT,
            %identity,
            %deployment,
            requested,
            expected_version,
            dry_run,
            "{method} requested"
        );
        let after = self.write_timeout;
        let write = async move {
            let result = tokio::time::timeout(after, write)
                .await
                .unwrap_or(Err(Error::Timeout {
                    what: "the write",
                    after,
                }));
            match &result {
                Ok((previous, desired, _)) => tracing::info!(
                    target: AUDIT,
                    %identity,
                    %deployment,
                    previous = ?previous,
                    desired = *desired,
                    dry_run,
                    result = "ok",
                    "{method}"
                ),
                Err(error) => tracing::info!(
                    target: AUDIT,
                    %identity,
                    %deployment,
                    dry_run,
                    result = %error,
                    "{method}"
                ),
            }
            result.map(|(_, _, answer)| answer)
        };
        self.writes.spawn(write.in_current_span()).await?
    }

    /// Validates and stores (not with `dry_run`); returns the previous and the new desired
    /// value with the answer.
    async fn store(
        &self,
        caller: &Caller,
        request: &SetRequest,
    ) -> Result<(Option<i32>, Option<i32>, DeploymentView), Error> {
        let key = &request.key;
        caller.check_write(&key.namespace, &self.protected_namespaces)?;
        validate_replicas(request.replicas, self.max_replicas)?;
        let deployment = self
            .index
            .deployments()?
            .get(key)
            .ok_or_else(|| setpoint_core::Error::DeploymentNotFound(key.clone()))?;
        if let Some(autoscaler) = self.index.autoscaler_of(key) {
            return Err(setpoint_core::Error::ManagedByAutoscaler {
                key: key.clone(),
                autoscaler,
            }
            .into());
        }
        let spec = ReplicaSetpointSpec {
            replicas: request.replicas,
            deployment_uid: deployment.uid.to_string(),
        };
        if request.dry_run {
            self.dry_run_limiter
                .acquire(&caller.identity, Instant::now())?;
            return self.dry_run(key, &deployment, spec, request.expected_version.as_deref());
        }
        self.write_limiter
            .acquire(&caller.identity, Instant::now())?;
        let (previous, stored) =
            store_setpoint(&self.client, key, spec, request.expected_version.as_deref()).await?;
        Ok((
            previous,
            Some(stored.spec.replicas),
            DeploymentView::of(&deployment, Some(&stored)),
        ))
    }

    /// What a write of `spec` would answer, from the cache: an unchanged spec leaves the
    /// setpoint as it is; a new one is pending. The version is the current one ("" for
    /// none), which is what `expected_version` is checked against.
    fn dry_run(
        &self,
        key: &DeploymentKey,
        deployment: &DeploymentRow,
        spec: ReplicaSetpointSpec,
        expected_version: Option<&str>,
    ) -> Result<(Option<i32>, Option<i32>, DeploymentView), Error> {
        let current = self.index.setpoint(key);
        check_version(key, current.as_deref(), expected_version)?;
        let desired = match current.as_deref() {
            Some(current) if current.spec == spec => current.clone(),
            _ => ReplicaSetpoint::new(&key.name, spec),
        };
        let mut answer = DeploymentView::of(deployment, Some(&desired));
        answer.version = current.as_deref().map(setpoint_version).unwrap_or_default();
        Ok((
            current.map(|current| current.spec.replicas),
            Some(desired.spec.replicas),
            answer,
        ))
    }

    /// Checks, then deletes the setpoint; returns its desired value with the answer.
    async fn unmanage(
        &self,
        caller: &Caller,
        key: &DeploymentKey,
        expected_version: Option<&str>,
    ) -> Result<(Option<i32>, Option<i32>, Option<DeploymentView>), Error> {
        caller.check_write(&key.namespace, &self.protected_namespaces)?;
        let deployments = self.index.deployments()?;
        // Spent before any request, so that no caller reaches the cluster unmetered.
        self.write_limiter
            .acquire(&caller.identity, Instant::now())?;
        // The index may not show a setpoint created a moment ago: ask before refusing.
        if self.index.setpoint(key).is_none()
            && Api::<ReplicaSetpoint>::namespaced(self.client.clone(), &key.namespace)
                .get_opt(&key.name)
                .await?
                .is_none()
        {
            return Err(setpoint_core::Error::NotManaged(key.clone()).into());
        }
        let previous = delete_setpoint(&self.client, key, expected_version).await?;
        let answer = deployments
            .get(key)
            .map(|deployment| DeploymentView::of(&deployment, None));
        Ok((Some(previous), None, answer))
    }
}

#[cfg(test)]
mod tests {
    use setpoint_core::{ClientIdentity, Scope};
    use testenv::fake;

    use super::*;

    #[tokio::test]
    async fn a_release_beyond_the_write_budget_sends_no_request() {
        let (client, log) = fake::client(|_| (404, fake::status(404, "NotFound")));
        let (index, _) = Index::new();
        index.mark_synced();
        let replicas = Arc::new(Replicas {
            index,
            client,
            max_replicas: 10,
            protected_namespaces: BTreeSet::new(),
            write_limiter: WriteLimiter::new(1, 1),
            dry_run_limiter: WriteLimiter::new(1, 1),
            write_timeout: Duration::from_secs(5),
            writes: TaskTracker::new(),
        });
        let caller = Caller {
            identity: ClientIdentity::Uri("spiffe://x".into()),
            scope: Scope::All,
        };
        replicas
            .write_limiter
            .acquire(&caller.identity, Instant::now())
            .expect("the one write of the budget");
        let key = DeploymentKey::new("team-a", "web").expect("key");
        let refused = replicas.release(caller, key, None).await;
        assert!(
            matches!(
                refused,
                Err(Error::Domain(setpoint_core::Error::RateLimited { .. }))
            ),
            "{:?}",
            refused.map(|_| ())
        );
        assert_eq!(
            log.calls(),
            Vec::<String>::new(),
            "no request to the cluster"
        );
    }
}
