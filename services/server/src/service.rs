//! The `setpoint.v1.ReplicaService` handlers: thin adapters between protobuf and the
//! cache (reads) or the ReplicaSetpoint resource (writes). Authorization has already
//! happened in [`crate::authz`]; the handlers only apply the caller's namespace scope to
//! the namespace a request names. Errors become statuses in [`crate::error`].

use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use setpoint_api::v1::replica_service_server::ReplicaService;
use setpoint_api::v1::{
    GetReplicasRequest, GetReplicasResponse, ListDeploymentsRequest, ListDeploymentsResponse,
    SetReplicasRequest, SetReplicasResponse,
};
use setpoint_reconciler::controller::FIELD_MANAGER;
use setpoint_reconciler::{ReplicaSetpoint, ReplicaSetpointSpec};
use tonic::{Request, Response, Status};

use crate::Error;
use crate::authz::Caller;
use crate::cache::Cache;
use crate::validate::{self, DeploymentKey};
use crate::view::{self, ListQuery};

/// Attempts of the read-compare-write loop before SetReplicas gives up with ABORTED.
const WRITE_ATTEMPTS: usize = 5;

pub struct ReplicaApi {
    pub cache: Cache,
    pub client: Client,
    pub max_replicas: i32,
}

#[tonic::async_trait]
impl ReplicaService for ReplicaApi {
    async fn list_deployments(
        &self,
        request: Request<ListDeploymentsRequest>,
    ) -> Result<Response<ListDeploymentsResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        Ok(Response::new(self.list(&caller, request.into_inner())?))
    }

    async fn get_replicas(
        &self,
        request: Request<GetReplicasRequest>,
    ) -> Result<Response<GetReplicasResponse>, Status> {
        let key = DeploymentKey::from_request(request.get_ref().deployment.as_ref())?;
        Caller::of(&request)?.check(&key.namespace)?;
        let deployment = self
            .cache
            .deployment(&key)?
            .ok_or_else(|| not_found(&key))?;
        let setpoint = self.cache.setpoint(&key);
        Ok(Response::new(GetReplicasResponse {
            replicas: Some(view::replicas(&deployment, setpoint.as_deref())),
        }))
    }

    async fn set_replicas(
        &self,
        request: Request<SetReplicasRequest>,
    ) -> Result<Response<SetReplicasResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let identity = &caller.identity;
        let request = request.into_inner();
        let target = request
            .deployment
            .as_ref()
            .map(|d| format!("{}/{}", d.namespace, d.name))
            .unwrap_or_default();
        let result = self.set(&caller, request).await;
        // The audit trail: one event per mutating call, whatever its outcome.
        match &result {
            Ok((previous, response)) => tracing::info!(
                target: "setpoint::audit",
                %identity,
                deployment = %target,
                previous = ?previous,
                desired = response.replicas.as_ref().and_then(|r| r.desired_replicas),
                result = "ok",
                "SetReplicas"
            ),
            Err(error) => tracing::info!(
                target: "setpoint::audit",
                %identity,
                deployment = %target,
                result = %error,
                "SetReplicas"
            ),
        }
        Ok(Response::new(result?.1))
    }
}

impl ReplicaApi {
    fn list(
        &self,
        caller: &Caller,
        request: ListDeploymentsRequest,
    ) -> Result<ListDeploymentsResponse, Error> {
        if !request.namespace.is_empty() {
            validate::namespace(&request.namespace)?;
            caller.check(&request.namespace)?;
        }
        let query = ListQuery {
            scope: caller.scope.clone(),
            selector: crate::selector::parse(&request.label_selector)?,
            page_size: validate::page_size(request.page_size)?,
            after: view::decode_page_token(&request.page_token)?,
            namespace: request.namespace,
        };
        let (page, next) = view::list_page(self.cache.deployments()?, &query);
        Ok(ListDeploymentsResponse {
            deployments: page
                .iter()
                .map(|deployment| {
                    let setpoint = self.cache.setpoint(&view::key_of(deployment));
                    view::replicas(deployment, setpoint.as_deref())
                })
                .collect(),
            next_page_token: next
                .map(|key| view::encode_page_token(&key))
                .unwrap_or_default(),
        })
    }

    /// Validates, stores the setpoint, and returns the previous desired value with the
    /// answer.
    async fn set(
        &self,
        caller: &Caller,
        request: SetReplicasRequest,
    ) -> Result<(Option<i32>, SetReplicasResponse), Error> {
        let key = DeploymentKey::from_request(request.deployment.as_ref())?;
        caller.check(&key.namespace)?;
        validate::replicas(request.replicas, self.max_replicas)?;
        let deployment = self
            .cache
            .deployment(&key)?
            .ok_or_else(|| not_found(&key))?;
        if let Some(autoscaler) = self.cache.autoscaler_of(&key) {
            return Err(Error::FailedPrecondition(format!(
                "deployment {key} is scaled by HorizontalPodAutoscaler {autoscaler}; change \
                 its minReplicas/maxReplicas instead"
            )));
        }
        let spec = ReplicaSetpointSpec {
            replicas: request.replicas,
            deployment_uid: deployment.metadata.uid.clone().unwrap_or_default(),
        };
        let (previous, stored) = self
            .store_setpoint(&key, spec, request.expected_version.as_deref())
            .await?;
        Ok((
            previous,
            SetReplicasResponse {
                replicas: Some(view::replicas(&deployment, Some(&stored))),
            },
        ))
    }

    /// Read-compare-write of the setpoint with the API server's optimistic concurrency:
    /// the write carries the resourceVersion it was based on, so of two racing writers
    /// one gets 409 and re-checks `expected_version` against the winner's setpoint.
    async fn store_setpoint(
        &self,
        key: &DeploymentKey,
        spec: ReplicaSetpointSpec,
        expected_version: Option<&str>,
    ) -> Result<(Option<i32>, ReplicaSetpoint), Error> {
        let api = Api::<ReplicaSetpoint>::namespaced(self.client.clone(), &key.namespace);
        for _ in 0..WRITE_ATTEMPTS {
            let current = api.get_opt(&key.name).await?;
            if let Some(expected) = expected_version {
                let actual = current.as_ref().map(view::version).unwrap_or_default();
                if actual != expected {
                    return Err(Error::Aborted(format!(
                        "the setpoint of {key} is at version {actual:?}, not the expected \
                         {expected:?}; read it again and retry"
                    )));
                }
            }
            let mut desired = ReplicaSetpoint::new(&key.name, spec.clone());
            let written = match &current {
                None => {
                    let params = PostParams {
                        field_manager: Some(FIELD_MANAGER.into()),
                        ..PostParams::default()
                    };
                    api.create(&params, &desired).await
                }
                Some(current) => {
                    desired.metadata.resource_version = current.metadata.resource_version.clone();
                    let params = PatchParams::apply(FIELD_MANAGER).force();
                    api.patch(&key.name, &params, &Patch::Apply(&desired)).await
                }
            };
            match written {
                Ok(stored) => return Ok((current.map(|c| c.spec.replicas), stored)),
                Err(kube::Error::Api(status))
                    if status.is_conflict() || status.is_already_exists() =>
                {
                    continue;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(Error::Aborted(format!(
            "the setpoint of {key} kept changing during {WRITE_ATTEMPTS} attempts; retry"
        )))
    }
}

fn not_found(key: &DeploymentKey) -> Error {
    Error::NotFound(format!("deployment {key} not found"))
}
