//! The gRPC edge: `setpoint.v1.ReplicaService` turns protobuf requests into calls on
//! [`Replicas`] and domain answers back into messages ([`convert`]); [`status`] is the
//! one place errors become status codes. Authorization has already happened in
//! [`crate::authz`], which hands over the [`Caller`].

pub mod convert;
pub mod status;

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};

use setpoint_core::{Caller, DeploymentKey};
use setpoint_proto::v1::replica_service_server::ReplicaService;
use setpoint_proto::v1::{
    GetReplicasRequest, GetReplicasResponse, ListDeploymentsRequest, ListDeploymentsResponse,
    ReleaseDeploymentRequest, ReleaseDeploymentResponse, SetReplicasRequest, SetReplicasResponse,
    WatchDeploymentsRequest, WatchDeploymentsResponse,
};
use tonic::{Request, Response, Status};

use crate::replicas::{ListRequest, Replicas, SetRequest};
use crate::watch::stream::{WatchRequest, Watchers};

pub struct ReplicaApi {
    pub replicas: Arc<Replicas>,
    pub watchers: Watchers,
}

#[tonic::async_trait]
impl ReplicaService for ReplicaApi {
    type WatchDeploymentsStream =
        Pin<Box<dyn Stream<Item = Result<WatchDeploymentsResponse, Status>> + Send>>;

    async fn watch_deployments(
        &self,
        request: Request<WatchDeploymentsRequest>,
    ) -> Result<Response<Self::WatchDeploymentsStream>, Status> {
        let caller = caller(&request)?;
        let connection = request.remote_addr();
        let request = request.into_inner();
        tracing::Span::current().record("resource", request.namespace.as_str());
        let events = self.watchers.watch(
            caller,
            WatchRequest {
                namespace: request.namespace,
                label_selector: request.label_selector,
                resume_token: request.resume_token,
            },
            connection,
        )?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(events)
            .map(|event| event.map(convert::watch_event).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_deployments(
        &self,
        request: Request<ListDeploymentsRequest>,
    ) -> Result<Response<ListDeploymentsResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        tracing::Span::current().record("resource", request.namespace.as_str());
        let page = self.replicas.list(
            &caller,
            ListRequest {
                namespace: request.namespace,
                label_selector: request.label_selector,
                page_size: request.page_size,
                page_token: request.page_token,
            },
        )?;
        Ok(Response::new(ListDeploymentsResponse {
            deployments: page
                .deployments
                .into_iter()
                .map(convert::replicas)
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_replicas(
        &self,
        request: Request<GetReplicasRequest>,
    ) -> Result<Response<GetReplicasResponse>, Status> {
        let caller = caller(&request)?;
        let key = target(request.get_ref().deployment.as_ref())?;
        let replicas = self.replicas.get(&caller, &key)?;
        Ok(Response::new(GetReplicasResponse {
            replicas: Some(convert::replicas(replicas)),
        }))
    }

    async fn set_replicas(
        &self,
        request: Request<SetReplicasRequest>,
    ) -> Result<Response<SetReplicasResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let key = target(request.deployment.as_ref())?;
        let stored = self
            .replicas
            .set(
                caller,
                SetRequest {
                    key,
                    replicas: request.replicas,
                    expected_version: request.expected_version,
                    dry_run: request.dry_run,
                },
            )
            .await?;
        Ok(Response::new(SetReplicasResponse {
            replicas: Some(convert::replicas(stored)),
        }))
    }

    async fn release_deployment(
        &self,
        request: Request<ReleaseDeploymentRequest>,
    ) -> Result<Response<ReleaseDeploymentResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let key = target(request.deployment.as_ref())?;
        let released = self
            .replicas
            .release(caller, key, request.expected_version)
            .await?;
        Ok(Response::new(ReleaseDeploymentResponse {
            replicas: released.map(convert::replicas),
        }))
    }
}

/// The caller [`crate::authz`] authorized.
fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| {
            crate::Error::from(setpoint_core::Error::NoIdentity(
                "no authorized caller".into(),
            ))
            .into()
        })
}

/// The Deployment a request names, validated, and recorded in the RPC's span.
fn target(deployment: Option<&setpoint_proto::v1::DeploymentRef>) -> Result<DeploymentKey, Status> {
    let key = convert::key(deployment).map_err(crate::Error::from)?;
    tracing::Span::current().record("resource", key.to_string());
    Ok(key)
}
