//! `set`, with `--wait` following the Deployment until it is reconciled, and `release`.

use std::time::Duration;

use anyhow::bail;
use setpoint_proto::v1::replica_service_client::ReplicaServiceClient;
use setpoint_proto::v1::{
    DeploymentRef, DeploymentReplicas, ReconcileState, ReleaseDeploymentRequest,
    SetReplicasRequest, WatchDeploymentsRequest, WatchEventType,
};
use tonic::transport::Channel;

use super::parse_ref;
use super::watch::follow;
use crate::errors::status_error;
use crate::output::state_name;

/// Sets `deployment`'s desired replicas (or, `dry_run`, only checks the write); with
/// `wait`, then waits at most that long for it to be reconciled.
pub async fn set(
    client: &mut ReplicaServiceClient<Channel>,
    deployment: &str,
    replicas: i32,
    expected_version: Option<String>,
    dry_run: bool,
    wait: Option<Duration>,
) -> anyhow::Result<Vec<DeploymentReplicas>> {
    let target = parse_ref(deployment)?;
    let response = client
        .set_replicas(SetReplicasRequest {
            deployment: Some(target.clone()),
            replicas,
            expected_version,
            dry_run,
        })
        .await
        .map_err(status_error)?;
    if dry_run {
        eprintln!("dry run: nothing was stored");
    }
    let rows: Vec<DeploymentReplicas> = response.into_inner().replicas.into_iter().collect();
    if let (Some(timeout), Some(stored)) = (wait, rows.first()) {
        wait_reconciled(client, &target, &stored.version, timeout).await?;
    }
    Ok(rows)
}

pub async fn release(
    client: &mut ReplicaServiceClient<Channel>,
    deployment: &str,
    expected_version: Option<String>,
) -> anyhow::Result<Vec<DeploymentReplicas>> {
    let response = client
        .release_deployment(ReleaseDeploymentRequest {
            deployment: Some(parse_ref(deployment)?),
            expected_version,
        })
        .await
        .map_err(status_error)?;
    eprintln!("released {deployment}: Setpoint no longer manages it");
    Ok(response.into_inner().replicas.into_iter().collect())
}

/// Waits until `target`'s setpoint at `version` (the one just stored) is reconciled,
/// printing each state it passes; another version taking its place ends the wait.
async fn wait_reconciled(
    client: &mut ReplicaServiceClient<Channel>,
    target: &DeploymentRef,
    version: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let key = format!("{}/{}", target.namespace, target.name);
    let request = WatchDeploymentsRequest {
        namespace: target.namespace.clone(),
        ..WatchDeploymentsRequest::default()
    };
    let mut outcome = Err(anyhow::anyhow!("the watch ended"));
    let mut last = String::from("unknown");
    let mut seen_ours = false;
    let watched = follow(client, request, |message| {
        let kind = message.r#type();
        let Some(row) = message
            .replicas
            .filter(|row| row.deployment.as_ref() == Some(target))
        else {
            return true;
        };
        if kind == WatchEventType::Deleted {
            outcome = Err(anyhow::anyhow!("{key} was deleted"));
            return false;
        }
        if row.version != version {
            // The cache from before the write, or a write that came after it.
            if seen_ours {
                outcome = Err(anyhow::anyhow!(
                    "{key}: another write replaced this setpoint (now version {:?})",
                    row.version
                ));
                return false;
            }
            return true;
        }
        seen_ours = true;
        last = state_name(&row).to_owned();
        eprintln!(
            "{key}: {last}, {} of {} replicas ready, desired {}",
            row.ready_replicas,
            row.spec_replicas,
            row.desired_replicas
                .map_or("-".into(), |desired| desired.to_string())
        );
        let failed = |why: &str| Err(anyhow::anyhow!("{key} {why}: {}", row.reconcile_message));
        outcome = match ReconcileState::try_from(row.reconcile_state) {
            Ok(ReconcileState::Reconciled) => Ok(()),
            Ok(ReconcileState::Failed) => failed("failed to reconcile"),
            Ok(ReconcileState::ManagedByHpa) => failed("is scaled by an HPA"),
            Ok(ReconcileState::TargetReplaced) => failed("was replaced"),
            Ok(ReconcileState::Unmanaged) => failed("is no longer managed"),
            _ => return true,
        };
        false
    });
    match tokio::time::timeout(timeout, watched).await {
        Ok(watched) => watched.and(outcome),
        Err(_) => {
            bail!("timed out after {timeout:?} waiting for {key} to be reconciled (last: {last})")
        }
    }
}
