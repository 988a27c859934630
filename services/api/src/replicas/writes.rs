//! The Kubernetes writes of the setpoint: read-compare-write with the API server's
//! optimistic concurrency, so that of two racing writers one gets 409 and re-checks the
//! caller's expected version against the winner's setpoint.

use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};
use setpoint_core::DeploymentKey;
use setpoint_k8s_api::{API_FIELD_MANAGER, ReplicaSetpoint, ReplicaSetpointSpec, setpoint_version};

use crate::Error;

/// Attempts of the read-compare-write loop before a write gives up.
const WRITE_ATTEMPTS: usize = 5;

/// Read-compare-write of the setpoint with the API server's optimistic concurrency:
/// the write carries the resourceVersion it was based on, so of two racing writers one
/// gets 409 and re-checks `expected_version` against the winner's setpoint. Returns the
/// previous desired value and the stored setpoint.
pub(super) async fn store_setpoint(
    client: &Client,
    key: &DeploymentKey,
    spec: ReplicaSetpointSpec,
    expected_version: Option<&str>,
) -> Result<(Option<i32>, ReplicaSetpoint), Error> {
    let api = Api::<ReplicaSetpoint>::namespaced(client.clone(), &key.namespace);
    for _ in 0..WRITE_ATTEMPTS {
        let current = api.get_opt(&key.name).await?;
        check_version(key, current.as_ref(), expected_version)?;
        let mut desired = ReplicaSetpoint::new(&key.name, spec.clone());
        let written = match &current {
            None => {
                let params = PostParams {
                    field_manager: Some(API_FIELD_MANAGER.into()),
                    ..PostParams::default()
                };
                api.create(&params, &desired).await
            }
            Some(current) => {
                desired.metadata.resource_version = current.metadata.resource_version.clone();
                let params = PatchParams::apply(API_FIELD_MANAGER).force();
                api.patch(&key.name, &params, &Patch::Apply(&desired)).await
            }
        };
        match written {
            Ok(stored) => return Ok((current.map(|c| c.spec.replicas), stored)),
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => {
                continue;
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(setpoint_core::Error::WriteContention {
        key: key.clone(),
        attempts: WRITE_ATTEMPTS,
    }
    .into())
}

/// Read-compare-delete of the setpoint: the delete is conditional on the resourceVersion
/// that was compared, so a concurrent write makes it retry. Returns the deleted desired
/// value.
pub(super) async fn delete_setpoint(
    client: &Client,
    key: &DeploymentKey,
    expected_version: Option<&str>,
) -> Result<i32, Error> {
    let api = Api::<ReplicaSetpoint>::namespaced(client.clone(), &key.namespace);
    for _ in 0..WRITE_ATTEMPTS {
        let Some(current) = api.get_opt(&key.name).await? else {
            return Err(setpoint_core::Error::NotManaged(key.clone()).into());
        };
        check_version(key, Some(&current), expected_version)?;
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: current.metadata.resource_version.clone(),
                uid: current.metadata.uid.clone(),
            }),
            ..DeleteParams::default()
        };
        match api.delete(&key.name, &params).await {
            Ok(_) => return Ok(current.spec.replicas),
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_not_found() => {
                continue;
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(setpoint_core::Error::WriteContention {
        key: key.clone(),
        attempts: WRITE_ATTEMPTS,
    }
    .into())
}

/// `expected` (if given) against the setpoint's version ("" when there is none).
pub(super) fn check_version(
    key: &DeploymentKey,
    current: Option<&ReplicaSetpoint>,
    expected: Option<&str>,
) -> Result<(), Error> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let actual = current.map(setpoint_version).unwrap_or_default();
    if actual == expected {
        Ok(())
    } else {
        Err(setpoint_core::Error::VersionMismatch {
            key: key.clone(),
            actual,
            expected: expected.into(),
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use testenv::fake;

    use super::*;

    fn key() -> DeploymentKey {
        DeploymentKey::new("team-a", "web").expect("valid key")
    }

    fn spec() -> ReplicaSetpointSpec {
        ReplicaSetpointSpec {
            replicas: 3,
            deployment_uid: "uid-web".into(),
        }
    }

    fn stored_setpoint() -> serde_json::Value {
        json!({
            "apiVersion": "setpoint.dev/v1alpha1", "kind": "ReplicaSetpoint",
            "metadata": {"namespace": "team-a", "name": "web", "uid": "rsp-uid",
                         "generation": 4, "resourceVersion": "7"},
            "spec": {"replicas": 2, "deploymentUid": "uid-web"},
        })
    }

    #[tokio::test]
    async fn a_write_that_keeps_conflicting_gives_up_after_its_attempts() {
        let (client, log) = fake::client(|request| match request.method.as_str() {
            "GET" => (200, stored_setpoint()),
            _ => (409, fake::status(409, "Conflict")),
        });
        let error = store_setpoint(&client, &key(), spec(), None)
            .await
            .expect_err("every write conflicts");
        assert!(
            matches!(
                error,
                Error::Domain(setpoint_core::Error::WriteContention { attempts: 5, .. })
            ),
            "{error}"
        );
        let path = "/apis/setpoint.dev/v1alpha1/namespaces/team-a/replicasetpoints/web";
        let expected: Vec<_> = (0..WRITE_ATTEMPTS)
            .flat_map(|_| [format!("GET {path}"), format!("PATCH {path}")])
            .collect();
        assert_eq!(log.calls(), expected, "a read before every write");
        let patch = &log.requests()[1];
        assert_eq!(patch.body["metadata"]["resourceVersion"], "7");
        assert!(
            patch.uri.contains("fieldManager=setpoint-api"),
            "{}",
            patch.uri
        );
    }

    #[tokio::test]
    async fn a_stale_expected_version_writes_nothing() {
        let (client, log) = fake::client(|_| (200, stored_setpoint()));
        let error = store_setpoint(&client, &key(), spec(), Some("rsp-uid/3"))
            .await
            .expect_err("stale version");
        assert_eq!(
            error.to_string(),
            "the setpoint of team-a/web is at version \"rsp-uid/4\", not the expected \
             \"rsp-uid/3\"; read it again and retry"
        );
        assert_eq!(log.calls().len(), 1, "only the read: {:?}", log.calls());
    }
}
