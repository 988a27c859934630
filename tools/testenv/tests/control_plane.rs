//! Proves the test control plane is a real Kubernetes API server: objects persist,
//! watches stream changes, RBAC is enforced, and the controller manager runs.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

async fn admin_deployments(namespace: &str) -> anyhow::Result<Api<Deployment>> {
    let client = testenv::shared().await.admin_client().await?;
    Ok(Api::namespaced(client, namespace))
}

#[tokio::test]
async fn apiserver_is_the_pinned_kubernetes_version() -> anyhow::Result<()> {
    let go_mod = include_str!("../../controlplane/kubernetes/go.mod");
    let pinned = go_mod
        .lines()
        .find_map(|line| line.trim().strip_prefix("k8s.io/kubernetes v"))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|version| format!("v{version}"))
        .expect("tools/controlplane/kubernetes/go.mod requires k8s.io/kubernetes");
    let control_plane = testenv::shared().await;
    let reported = control_plane
        .admin_client()
        .await?
        .apiserver_version()
        .await?;
    assert_eq!(reported.git_version, pinned);
    assert_eq!(control_plane.version(), pinned);
    Ok(())
}

#[tokio::test]
async fn created_deployment_reads_back() -> anyhow::Result<()> {
    let namespace = testenv::shared().await.namespace("readback").await?;
    let deployments = admin_deployments(&namespace).await?;
    let created = deployments
        .create(&PostParams::default(), &testenv::deployment("web", 3))
        .await?;

    let read = deployments.get("web").await?;
    assert_eq!(read.metadata.uid, created.metadata.uid);
    assert!(read.metadata.uid.is_some(), "the server assigns a UID");
    assert_eq!(read.spec.and_then(|spec| spec.replicas), Some(3));
    Ok(())
}

#[tokio::test]
async fn watch_sees_a_replica_change() -> anyhow::Result<()> {
    let namespace = testenv::shared().await.namespace("watch").await?;
    let deployments = admin_deployments(&namespace).await?;
    deployments
        .create(&PostParams::default(), &testenv::deployment("web", 1))
        .await?;
    let mut replicas_seen = watcher(deployments.clone(), watcher::Config::default())
        .applied_objects()
        .map_ok(|deployment| deployment.spec.and_then(|spec| spec.replicas))
        .boxed();
    assert_eq!(replicas_seen.try_next().await?, Some(Some(1)));

    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 4}})),
        )
        .await?;
    // Other events (e.g. status written by the controller manager) may come first.
    let seen = tokio::time::timeout(testenv::WAIT_TIMEOUT, async {
        while let Some(replicas) = replicas_seen.try_next().await? {
            if replicas == Some(4) {
                return anyhow::Ok(true);
            }
        }
        anyhow::Ok(false)
    })
    .await??;
    assert!(seen, "the watch delivered the patched replica count");
    Ok(())
}

#[tokio::test]
async fn service_account_is_forbidden_until_bound() -> anyhow::Result<()> {
    let control_plane = testenv::shared().await;
    let namespace = control_plane.namespace("rbac").await?;
    let reader = control_plane
        .service_account_client(&namespace, "reader")
        .await?;
    let reader_deployments = Api::<Deployment>::namespaced(reader, &namespace);

    let denied = reader_deployments
        .list(&ListParams::default())
        .await
        .expect_err("an unbound ServiceAccount must not list Deployments");
    assert!(
        matches!(&denied, kube::Error::Api(status) if status.is_forbidden()),
        "expected 403 Forbidden, got {denied:?}"
    );

    grant_deployment_read(control_plane.admin_client().await?, &namespace, "reader").await?;
    testenv::wait_for("the RoleBinding to take effect", || async {
        reader_deployments.list(&ListParams::default()).await.ok()
    })
    .await;

    // The grant is namespaced: other namespaces stay forbidden.
    let elsewhere = Api::<Deployment>::namespaced(
        control_plane
            .service_account_client(&namespace, "reader")
            .await?,
        "default",
    );
    let denied = elsewhere
        .list(&ListParams::default())
        .await
        .expect_err("the Role grants nothing outside its namespace");
    assert!(matches!(&denied, kube::Error::Api(status) if status.is_forbidden()));
    Ok(())
}

async fn grant_deployment_read(
    admin: Client,
    namespace: &str,
    account: &str,
) -> anyhow::Result<()> {
    let role = Role {
        metadata: ObjectMeta {
            name: Some("deployment-reader".into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["apps".into()]),
            resources: Some(vec!["deployments".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..PolicyRule::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("deployment-reader".into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "deployment-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: account.into(),
            namespace: Some(namespace.into()),
            ..Subject::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &role)
        .await?;
    Api::<RoleBinding>::namespaced(admin, namespace)
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}

#[tokio::test]
async fn controller_manager_rolls_out_deployments() -> anyhow::Result<()> {
    let control_plane = testenv::shared().await;
    control_plane.start_controller_manager()?;
    let namespace = control_plane.namespace("rollout").await?;
    let deployments = admin_deployments(&namespace).await?;
    deployments
        .create(&PostParams::default(), &testenv::deployment("web", 2))
        .await?;

    let replica_sets =
        Api::<ReplicaSet>::namespaced(control_plane.admin_client().await?, &namespace);
    let replica_set = testenv::wait_for(
        "the deployment controller to create a ReplicaSet",
        || async {
            replica_sets
                .list(&ListParams::default())
                .await
                .ok()
                .and_then(|list| list.items.into_iter().next())
        },
    )
    .await;
    assert_eq!(replica_set.spec.and_then(|spec| spec.replicas), Some(2));

    let status = testenv::wait_for("the Deployment status to be observed", || async {
        let status = deployments.get("web").await.ok()?.status?;
        (status.observed_generation == Some(1) && status.replicas == Some(2)).then_some(status)
    })
    .await;
    // No kubelet: Pods exist but never become ready.
    assert_eq!(status.ready_replicas.unwrap_or(0), 0);
    Ok(())
}
