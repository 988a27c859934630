//! `list` (every page) and `get`.

use setpoint_proto::v1::replica_service_client::ReplicaServiceClient;
use setpoint_proto::v1::{DeploymentReplicas, GetReplicasRequest, ListDeploymentsRequest};
use tonic::transport::Channel;

use super::parse_ref;
use crate::errors::status_error;

/// Every page of the Deployments matching `namespace` and `selector`.
pub async fn list(
    client: &mut ReplicaServiceClient<Channel>,
    namespace: Option<String>,
    selector: Option<String>,
    page_size: i32,
) -> anyhow::Result<Vec<DeploymentReplicas>> {
    let mut rows = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_deployments(ListDeploymentsRequest {
                namespace: namespace.clone().unwrap_or_default(),
                label_selector: selector.clone().unwrap_or_default(),
                page_size,
                page_token,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        rows.extend(page.deployments);
        if page.next_page_token.is_empty() {
            break Ok(rows);
        }
        page_token = page.next_page_token;
    }
}

pub async fn get(
    client: &mut ReplicaServiceClient<Channel>,
    deployment: &str,
) -> anyhow::Result<Vec<DeploymentReplicas>> {
    let response = client
        .get_replicas(GetReplicasRequest {
            deployment: Some(parse_ref(deployment)?),
        })
        .await
        .map_err(status_error)?;
    Ok(response.into_inner().replicas.into_iter().collect())
}
