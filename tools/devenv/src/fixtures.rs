//! What the integration tests of both processes share: Setpoint installed once per test
//! binary, fresh namespaces with Deployments, changes made "by someone else" (an
//! external scale, a setpoint written as the API writes it), waits on their effects, and
//! the test binary's log events captured as JSON.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use setpoint_k8s_api::{API_FIELD_MANAGER, ReplicaSetpoint, ReplicaSetpointSpec};
use tokio::sync::OnceCell;

/// Installs `k8s/base` (namespace, CRD, RBAC) once per test binary.
pub async fn install_setpoint() -> &'static testenv::ControlPlane {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    let control_plane = testenv::shared().await;
    INSTALLED
        .get_or_init(|| async {
            crate::install(control_plane)
                .await
                .expect("installing k8s/base");
        })
        .await;
    control_plane
}

/// The log events of this test binary (its servers run in-process), captured as JSON
/// from the first call on.
pub fn logs() -> &'static Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let buffer = logs.0.clone();
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogWriter(buffer.clone()))
            .try_init()
            .expect("the only log subscriber of this test binary");
        logs
    })
}

#[derive(Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Every event logged under `target` so far.
    pub fn events(&self, target: &str) -> Vec<serde_json::Value> {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|event| event["target"] == target)
            .collect()
    }
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub async fn admin() -> kube::Client {
    testenv::shared()
        .await
        .admin_client()
        .await
        .expect("admin client")
}

/// Writes the setpoint of `namespace/name` as setpoint-api does (as its ServiceAccount,
/// for the Deployment's current UID), without the API.
pub async fn set_setpoint(namespace: &str, name: &str, replicas: i32) {
    let control_plane = install_setpoint().await;
    let config = control_plane
        .service_account_config(crate::NAMESPACE, crate::API_SERVICE_ACCOUNT)
        .await
        .expect("ServiceAccount config");
    let client = kube::Client::try_from(config).expect("client");
    let uid = Api::<Deployment>::namespaced(admin().await, namespace)
        .get(name)
        .await
        .expect("the Deployment")
        .metadata
        .uid
        .expect("uid");
    let setpoint = ReplicaSetpoint::new(
        name,
        ReplicaSetpointSpec {
            replicas,
            deployment_uid: uid,
        },
    );
    Api::<ReplicaSetpoint>::namespaced(client, namespace)
        .patch(
            name,
            &PatchParams::apply(API_FIELD_MANAGER).force(),
            &Patch::Apply(&setpoint),
        )
        .await
        .expect("setpoint written");
}

/// An HPA `<deployment>-hpa` that scales `deployment`.
pub fn autoscaler_for(deployment: &str) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        metadata: ObjectMeta {
            name: Some(format!("{deployment}-hpa")),
            ..ObjectMeta::default()
        },
        spec: HorizontalPodAutoscalerSpec {
            max_replicas: 10,
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: deployment.into(),
            },
            ..HorizontalPodAutoscalerSpec::default()
        },
        ..HorizontalPodAutoscaler::default()
    }
}

/// Sets spec.replicas directly, as `kubectl scale` by someone else would.
pub async fn scale_externally(deployments: &Api<Deployment>, name: &str, replicas: i32) {
    deployments
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
        )
        .await
        .expect("external scale");
}

pub async fn spec_replicas(deployments: &Api<Deployment>, name: &str) -> Option<i32> {
    deployments.get(name).await.ok()?.spec?.replicas
}

pub async fn wait_for_replicas(deployments: &Api<Deployment>, name: &str, replicas: i32) {
    testenv::wait_for(&format!("{name} to have {replicas} replicas"), || async {
        (spec_replicas(deployments, name).await == Some(replicas)).then_some(())
    })
    .await;
}

/// The Events in `namespace` with `reason`.
pub async fn events(namespace: &str, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(admin().await, namespace)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some(reason))
        .collect()
}

/// Creates a fresh namespace with Deployments `name → replicas`; returns the namespace.
pub async fn namespace_with(prefix: &str, deployments: &[(&str, i32)]) -> String {
    let control_plane = testenv::shared().await;
    let namespace = control_plane.namespace(prefix).await.expect("namespace");
    let api = Api::<Deployment>::namespaced(
        control_plane.admin_client().await.expect("admin"),
        &namespace,
    );
    for (name, replicas) in deployments {
        api.create(
            &PostParams::default(),
            &testenv::deployment(name, *replicas),
        )
        .await
        .expect("create deployment");
    }
    namespace
}
