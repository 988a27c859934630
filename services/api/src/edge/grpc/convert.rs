//! Between protobuf messages and domain values.

use setpoint_core::{DeploymentKey, Error};
use setpoint_proto::v1::{self as proto, DeploymentRef};

use crate::replicas::view::{DeploymentView, ReconcileState};
use crate::watch::stream::{EventKind, WatchEvent};

pub fn key(deployment: Option<&DeploymentRef>) -> Result<DeploymentKey, Error> {
    let deployment = deployment.ok_or(Error::MissingDeployment)?;
    DeploymentKey::new(&deployment.namespace, &deployment.name)
}

pub fn replicas(view: DeploymentView) -> proto::DeploymentReplicas {
    proto::DeploymentReplicas {
        deployment: Some(DeploymentRef {
            namespace: view.key.namespace,
            name: view.key.name,
        }),
        uid: view.uid,
        spec_replicas: view.spec_replicas,
        ready_replicas: view.ready_replicas,
        available_replicas: view.available_replicas,
        updated_replicas: view.updated_replicas,
        desired_replicas: view.desired_replicas,
        reconcile_state: reconcile_state(view.state).into(),
        reconcile_message: view.message,
        version: view.version,
    }
}

pub fn watch_event(event: WatchEvent) -> proto::WatchDeploymentsResponse {
    let kind = match event.kind {
        EventKind::Initial => proto::WatchEventType::Initial,
        EventKind::Synced => proto::WatchEventType::Synced,
        EventKind::Changed => proto::WatchEventType::Changed,
        EventKind::Deleted => proto::WatchEventType::Deleted,
    };
    proto::WatchDeploymentsResponse {
        r#type: kind.into(),
        replicas: event.view().map(replicas),
        resume_token: event.resume_token,
    }
}

fn reconcile_state(state: ReconcileState) -> proto::ReconcileState {
    match state {
        ReconcileState::Unmanaged => proto::ReconcileState::Unmanaged,
        ReconcileState::Pending => proto::ReconcileState::Pending,
        ReconcileState::Reconciled => proto::ReconcileState::Reconciled,
        ReconcileState::ManagedByHpa => proto::ReconcileState::ManagedByHpa,
        ReconcileState::TargetReplaced => proto::ReconcileState::TargetReplaced,
        ReconcileState::Failed => proto::ReconcileState::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_must_name_a_valid_deployment() {
        assert_eq!(key(None), Err(Error::MissingDeployment));
        let named = |namespace: &str, name: &str| {
            key(Some(&DeploymentRef {
                namespace: namespace.into(),
                name: name.into(),
            }))
        };
        assert!(matches!(
            named("Team", "web"),
            Err(Error::InvalidName { .. })
        ));
        assert_eq!(
            named("team-a", "web").map(|key| key.to_string()),
            Ok("team-a/web".into())
        );
    }
}
