//! The reconciler on its own against the real control plane: setpoints written as the
//! API writes them converge, conflicts are reverted, and what Setpoint leaves alone.

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use setpoint_k8s_api::{ReplicaSetpoint, ReplicaSetpointSpec};
use support::{
    Reconciler, admin, autoscaler_for, events, namespace_with, scale_externally, set_setpoint,
    spec_replicas, wait_for_replicas,
};

/// Waits until the setpoint's status describes its current generation with `reason`.
async fn wait_for_reason(setpoints: &Api<ReplicaSetpoint>, name: &str, reason: &str) -> String {
    testenv::wait_for(&format!("setpoint {name} to report {reason}"), || async {
        let setpoint = setpoints.get(name).await.ok()?;
        let observed = setpoint.status.as_ref()?.observed_generation;
        let condition = setpoint.reconciled_condition()?;
        (observed == setpoint.metadata.generation && condition.reason == reason)
            .then(|| condition.message.clone())
    })
    .await
}

#[tokio::test]
async fn set_converges_and_external_scale_is_reverted() {
    let namespace = namespace_with("converge", &[("web", 1)]).await;
    let reconciler = Reconciler::start(&namespace).await;
    let deployments = Api::<Deployment>::namespaced(admin().await, &namespace);
    let setpoints = Api::<ReplicaSetpoint>::namespaced(admin().await, &namespace);

    set_setpoint(&namespace, "web", 4).await;
    wait_for_replicas(&deployments, "web", 4).await;
    wait_for_reason(&setpoints, "web", "Reconciled").await;
    let status = setpoints
        .get("web")
        .await
        .expect("setpoint")
        .status
        .expect("status");
    assert_eq!(status.applied_replicas, Some(4));
    assert!(!events(&namespace, "Scaled").await.is_empty());

    // `kubectl scale` by someone else: Setpoint restores the setpoint and says so.
    scale_externally(&deployments, "web", 9).await;
    wait_for_replicas(&deployments, "web", 4).await;
    testenv::wait_for("a Reverted event", || async {
        let reverted = events(&namespace, "Reverted").await;
        let note = reverted.first()?.note.clone()?;
        note.contains("from 9 to 4").then_some(())
    })
    .await;
    reconciler.stop().await.expect("stop");
}

#[tokio::test]
async fn a_deployment_scaled_by_an_hpa_is_left_alone() {
    let namespace = namespace_with("hpa", &[("web", 2)]).await;
    let reconciler = Reconciler::start(&namespace).await;
    let admin = admin().await;
    let deployments = Api::<Deployment>::namespaced(admin.clone(), &namespace);
    let uid = deployments
        .get("web")
        .await
        .expect("web")
        .metadata
        .uid
        .expect("uid");
    Api::<HorizontalPodAutoscaler>::namespaced(admin.clone(), &namespace)
        .create(&PostParams::default(), &autoscaler_for("web"))
        .await
        .expect("HPA");
    // The API refuses (see its tests), so write the setpoint as the break-glass group
    // may (k8s/base/admission.yaml).
    let break_glass = testenv::shared()
        .await
        .client_as("oncall", &["system:masters", "setpoint:break-glass"])
        .await
        .expect("break-glass client");
    let setpoints = Api::<ReplicaSetpoint>::namespaced(break_glass, &namespace);
    let setpoint = ReplicaSetpoint::new(
        "web",
        ReplicaSetpointSpec {
            replicas: 5,
            deployment_uid: uid,
        },
    );
    setpoints
        .create(&PostParams::default(), &setpoint)
        .await
        .expect("setpoint");

    let message = wait_for_reason(&setpoints, "web", "ManagedByHPA").await;
    assert!(message.contains("web-hpa"), "{message}");
    // The status is written after the decision, so by now a write would have happened.
    assert_eq!(spec_replicas(&deployments, "web").await, Some(2));
    assert!(!events(&namespace, "ManagedByHPA").await.is_empty());
    reconciler.stop().await.expect("stop");
}

#[tokio::test]
async fn deleted_deployments_are_not_recreated_nor_replacements_adopted() {
    let namespace = namespace_with("deleted", &[("web", 1)]).await;
    let reconciler = Reconciler::start(&namespace).await;
    let deployments = Api::<Deployment>::namespaced(admin().await, &namespace);
    let setpoints = Api::<ReplicaSetpoint>::namespaced(admin().await, &namespace);
    set_setpoint(&namespace, "web", 3).await;
    wait_for_replicas(&deployments, "web", 3).await;

    deployments
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for_reason(&setpoints, "web", "DeploymentNotFound").await;
    assert!(
        deployments.get_opt("web").await.expect("get").is_none(),
        "Setpoint never creates a Deployment"
    );

    // Recreated under the same name: a new UID, possibly another workload.
    deployments
        .create(&PostParams::default(), &testenv::deployment("web", 1))
        .await
        .expect("recreate");
    let message = wait_for_reason(&setpoints, "web", "TargetReplaced").await;
    assert!(message.contains("recreated"), "{message}");
    assert_eq!(spec_replicas(&deployments, "web").await, Some(1));

    // A new setpoint targets the new Deployment.
    set_setpoint(&namespace, "web", 2).await;
    wait_for_replicas(&deployments, "web", 2).await;
    reconciler.stop().await.expect("stop");
}

#[tokio::test]
async fn a_deleted_setpoint_stops_management() {
    let namespace = namespace_with("released", &[("web", 1), ("marker", 1)]).await;
    let reconciler = Reconciler::start(&namespace).await;
    let deployments = Api::<Deployment>::namespaced(admin().await, &namespace);
    let setpoints = Api::<ReplicaSetpoint>::namespaced(admin().await, &namespace);
    set_setpoint(&namespace, "web", 3).await;
    wait_for_replicas(&deployments, "web", 3).await;

    setpoints
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete setpoint");
    testenv::wait_for("the setpoint to be gone", || async {
        setpoints.get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;
    scale_externally(&deployments, "web", 6).await;
    // A later setpoint on another Deployment converging shows the reconciler has
    // processed the events before it; web keeps the value someone else set.
    set_setpoint(&namespace, "marker", 2).await;
    wait_for_replicas(&deployments, "marker", 2).await;
    assert_eq!(spec_replicas(&deployments, "web").await, Some(6));
    assert!(events(&namespace, "Reverted").await.is_empty());
    reconciler.stop().await.expect("stop");
}
