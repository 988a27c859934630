//! Objects tests put into the control plane: fresh namespaces, applied manifests and a
//! minimal Deployment.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Container, Namespace, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::{Api, ResourceExt};

use crate::{ControlPlane, Error};

/// Field manager for the objects testenv applies.
const FIELD_MANAGER: &str = "testenv";

impl ControlPlane {
    /// Creates a fresh namespace named `<prefix>-<random suffix>` and returns its name.
    pub async fn namespace(&self, prefix: &str) -> Result<String, Error> {
        let namespace = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let created = Api::<Namespace>::all(self.admin_client().await?)
            .create(&PostParams::default(), &namespace)
            .await?;
        Ok(created.metadata.name.unwrap_or_default())
    }

    /// Server-side applies every object of a multi-document YAML manifest as admin
    /// (field manager `testenv`, forced) and returns how many were applied.
    pub async fn apply_manifest(&self, yaml: &str) -> Result<usize, Error> {
        let client = self.admin_client().await?;
        let objects: Vec<DynamicObject> = serde_saphyr::from_multiple(yaml)
            .map_err(|error| Error::Manifest(error.to_string()))?;
        for object in &objects {
            let types = object.types.as_ref().ok_or_else(|| {
                Error::Manifest(format!("{:?} has no apiVersion/kind", object.metadata.name))
            })?;
            let gvk = GroupVersionKind::try_from(types)
                .map_err(|error| Error::Manifest(error.to_string()))?;
            let (resource, capabilities) = discovery::pinned_kind(&client, &gvk).await?;
            let api: Api<DynamicObject> = match (&capabilities.scope, object.namespace()) {
                (Scope::Namespaced, Some(namespace)) => {
                    Api::namespaced_with(client.clone(), &namespace, &resource)
                }
                _ => Api::all_with(client.clone(), &resource),
            };
            api.patch(
                &object.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(object),
            )
            .await?;
        }
        Ok(objects.len())
    }
}

/// A minimal valid Deployment `name` with `replicas` (label `app: <name>`, one pause
/// container), for tests to create.
pub fn deployment(name: &str, replicas: i32) -> Deployment {
    let labels = BTreeMap::from([("app".to_string(), name.to_string())]);
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "app".into(),
                        image: Some("registry.k8s.io/pause:3.10".into()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}
