//! Setpoint's Kubernetes vocabulary, shared by the server and the reconciler: the
//! [`ReplicaSetpoint`] resource (one per managed Deployment, same namespace and name),
//! the field managers Setpoint writes under, and the rules both sides must read the
//! same way ([`spec_replicas`], [`autoscaler_target`], [`setpoint_version`]).

pub mod resource;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::ResourceExt;
use setpoint_core::DeploymentKey;

pub use resource::{ReplicaSetpoint, ReplicaSetpointSpec, ReplicaSetpointStatus};

/// Field manager of the API's writes (the ReplicaSetpoint spec).
pub const API_FIELD_MANAGER: &str = "setpoint-api";
/// Field manager of the reconciler's writes (Deployment scale, setpoint status).
pub const RECONCILER_FIELD_MANAGER: &str = "setpoint-reconciler";

/// The Deployment's `spec.replicas`; Kubernetes defaults an unset value to 1.
pub fn spec_replicas(deployment: &Deployment) -> i32 {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1)
}

/// The Deployment an HPA scales, if it scales a Deployment.
pub fn autoscaler_target(autoscaler: &HorizontalPodAutoscaler) -> Option<DeploymentKey> {
    let target = &autoscaler.spec.scale_target_ref;
    (target.kind == "Deployment").then(|| DeploymentKey {
        namespace: autoscaler.namespace().unwrap_or_default(),
        name: target.name.clone(),
    })
}

/// The key of a namespaced object (a Deployment, or the setpoint sharing its name).
pub fn key_of(object: &impl kube::Resource) -> DeploymentKey {
    DeploymentKey {
        namespace: object.meta().namespace.clone().unwrap_or_default(),
        name: object.meta().name.clone().unwrap_or_default(),
    }
}

/// The opaque version of a setpoint: changes whenever its spec does (generation), and
/// never repeats across delete and recreate (UID).
pub fn setpoint_version(setpoint: &ReplicaSetpoint) -> String {
    format!(
        "{}/{}",
        setpoint.uid().unwrap_or_default(),
        setpoint.metadata.generation.unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::autoscaling::v2::{
        CrossVersionObjectReference, HorizontalPodAutoscalerSpec,
    };
    use kube::api::ObjectMeta;

    use super::*;

    #[test]
    fn an_unset_spec_replicas_means_one() {
        let mut deployment = Deployment::default();
        assert_eq!(spec_replicas(&deployment), 1);
        deployment.spec = Some(DeploymentSpec {
            replicas: Some(0),
            ..DeploymentSpec::default()
        });
        assert_eq!(spec_replicas(&deployment), 0);
    }

    #[test]
    fn an_autoscaler_targets_a_deployment_in_its_namespace() {
        let autoscaler = |kind: &str| HorizontalPodAutoscaler {
            metadata: ObjectMeta {
                namespace: Some("team-a".into()),
                name: Some("web-hpa".into()),
                ..ObjectMeta::default()
            },
            spec: HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    kind: kind.into(),
                    name: "web".into(),
                    api_version: Some("apps/v1".into()),
                },
                max_replicas: 3,
                ..HorizontalPodAutoscalerSpec::default()
            },
            status: None,
        };
        assert_eq!(
            autoscaler_target(&autoscaler("Deployment")),
            Some(DeploymentKey {
                namespace: "team-a".into(),
                name: "web".into()
            })
        );
        assert_eq!(autoscaler_target(&autoscaler("StatefulSet")), None);
    }
}
