//! The fields of a Deployment the index keeps, and only those: the watch decodes each
//! listed object into [`DeploymentFields`] and skips the rest of it (pod template,
//! managed fields, annotations) without allocating it, which at 100,000 Deployments is
//! most of the start-up's work and of a relist's garbage.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Resource;
use kube::api::ObjectMeta;
use serde::Deserialize;

/// A Deployment as the index reads it: the Resource of `apps/v1` `deployments`.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "Decoded")]
pub struct DeploymentFields {
    /// Namespace, name, UID, resourceVersion and labels only.
    pub metadata: ObjectMeta,
    /// `spec.replicas`, 1 when unset (the API server's default).
    pub spec_replicas: i32,
    pub ready_replicas: i32,
    pub available_replicas: i32,
    pub updated_replicas: i32,
}

/// What is decoded; serde skips every other field.
#[derive(Deserialize)]
struct Decoded {
    metadata: Metadata,
    #[serde(default)]
    spec: Spec,
    #[serde(default)]
    status: Status,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Default, Deserialize)]
struct Spec {
    replicas: Option<i32>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    ready_replicas: Option<i32>,
    available_replicas: Option<i32>,
    updated_replicas: Option<i32>,
}

impl From<Decoded> for DeploymentFields {
    fn from(
        Decoded {
            metadata,
            spec,
            status,
        }: Decoded,
    ) -> Self {
        Self {
            metadata: ObjectMeta {
                name: metadata.name,
                namespace: metadata.namespace,
                uid: metadata.uid,
                resource_version: metadata.resource_version,
                labels: metadata.labels,
                ..ObjectMeta::default()
            },
            spec_replicas: spec.replicas.unwrap_or(1),
            ready_replicas: status.ready_replicas.unwrap_or(0),
            available_replicas: status.available_replicas.unwrap_or(0),
            updated_replicas: status.updated_replicas.unwrap_or(0),
        }
    }
}

impl From<&Deployment> for DeploymentFields {
    fn from(deployment: &Deployment) -> Self {
        let status = deployment.status.as_ref();
        let count = |field: fn(&_) -> Option<i32>| status.and_then(field).unwrap_or(0);
        Self {
            metadata: ObjectMeta {
                name: deployment.metadata.name.clone(),
                namespace: deployment.metadata.namespace.clone(),
                uid: deployment.metadata.uid.clone(),
                resource_version: deployment.metadata.resource_version.clone(),
                labels: deployment.metadata.labels.clone(),
                ..ObjectMeta::default()
            },
            spec_replicas: setpoint_k8s_api::spec_replicas(deployment),
            ready_replicas: count(|status| status.ready_replicas),
            available_replicas: count(|status| status.available_replicas),
            updated_replicas: count(|status| status.updated_replicas),
        }
    }
}

impl Resource for DeploymentFields {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Deployment::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        Deployment::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        Deployment::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        Deployment::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_kept_fields_are_decoded_and_defaults_are_the_api_servers() {
        let mut deployment = full_deployment();
        let json = serde_json::to_string(&deployment).expect("encodes");
        let decoded: DeploymentFields = serde_json::from_str(&json).expect("decodes");
        assert_eq!(decoded.metadata.name.as_deref(), Some("web"));
        assert_eq!(decoded.metadata.labels, deployment.metadata.labels);
        assert_eq!(decoded.metadata.annotations, None, "skipped");
        assert_eq!((decoded.spec_replicas, decoded.ready_replicas), (3, 2));
        deployment.spec = None;
        deployment.status = None;
        let json = serde_json::to_string(&deployment).expect("encodes");
        let bare: DeploymentFields = serde_json::from_str(&json).expect("decodes");
        assert_eq!((bare.spec_replicas, bare.ready_replicas), (1, 0));
        assert_eq!(DeploymentFields::plural(&()), "deployments");
        assert_eq!(DeploymentFields::api_version(&()), "apps/v1");
    }

    fn full_deployment() -> Deployment {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "a",
                "uid": "u",
                "resourceVersion": "7",
                "labels": {"app": "web"},
                "annotations": {"big": "x"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
            },
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "app", "env": [{"name": "E", "value": "v"}]}]}}
            },
            "status": {"readyReplicas": 2}
        }))
        .expect("a Deployment")
    }
}
