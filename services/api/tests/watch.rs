//! WatchDeployments end to end against the real control plane: the current state, then
//! each change from the watch cache (no request to the cluster per watcher), selectors,
//! resume tokens, limits, cancellation and policy reloads. (A slow consumer is dropped:
//! the unit tests of `watch/stream.rs`, where thousands of changes cost nothing.)

mod support;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use setpoint_proto::v1::replica_service_client::ReplicaServiceClient;
use setpoint_proto::v1::{
    DeploymentReplicas, WatchDeploymentsRequest, WatchDeploymentsResponse, WatchEventType,
};
use support::{OPERATOR, PIPELINE, Setpoint, VIEWER, admin, namespace_with};
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

/// Longest wait for one message.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(20);

fn request(namespace: &str, selector: &str, resume_token: &str) -> WatchDeploymentsRequest {
    WatchDeploymentsRequest {
        namespace: namespace.into(),
        label_selector: selector.into(),
        resume_token: resume_token.into(),
    }
}

async fn watch(
    client: &mut ReplicaServiceClient<Channel>,
    request: WatchDeploymentsRequest,
) -> Result<Streaming<WatchDeploymentsResponse>, Status> {
    Ok(client.watch_deployments(request).await?.into_inner())
}

async fn next(
    stream: &mut Streaming<WatchDeploymentsResponse>,
) -> Result<WatchDeploymentsResponse, Status> {
    tokio::time::timeout(MESSAGE_TIMEOUT, stream.next())
        .await
        .expect("a message in time")
        .expect("the stream goes on")
}

fn name(message: &WatchDeploymentsResponse) -> &str {
    message
        .replicas
        .as_ref()
        .and_then(|replicas| replicas.deployment.as_ref())
        .map_or("", |deployment| deployment.name.as_str())
}

fn replicas(message: &WatchDeploymentsResponse) -> &DeploymentReplicas {
    message.replicas.as_ref().expect("a Deployment")
}

/// The messages up to SYNCED: (type, name) of each, and SYNCED's resume token.
async fn until_synced(
    stream: &mut Streaming<WatchDeploymentsResponse>,
) -> (Vec<(WatchEventType, String)>, String) {
    let mut seen = Vec::new();
    loop {
        let message = next(stream).await.expect("a message");
        if message.r#type() == WatchEventType::Synced {
            return (seen, message.resume_token);
        }
        seen.push((message.r#type(), name(&message).to_owned()));
    }
}

async fn scale(namespace: &str, name: &str, replicas: i32) {
    Api::<Deployment>::namespaced(admin().await, namespace)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
        )
        .await
        .expect("scale");
}

async fn label(namespace: &str, name: &str, app: &str) {
    Api::<Deployment>::namespaced(admin().await, namespace)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"app": app}}})),
        )
        .await
        .expect("label");
}

#[tokio::test]
async fn watchers_get_the_current_state_then_each_change_without_asking_the_cluster() {
    let namespace = namespace_with("watched", &[("web", 1), ("db", 1)]).await;
    let server = Setpoint::start_with("setpoint-api", &["--probe-interval=1h"]).await;
    server.wait_until_ready().await;
    let mut viewer = server.client(VIEWER).await;
    let mut streams = Vec::new();
    for _ in 0..10 {
        let mut stream = watch(&mut viewer, request(&namespace, "", ""))
            .await
            .expect("watch");
        let (initial, _) = until_synced(&mut stream).await;
        assert_eq!(
            initial,
            [
                (WatchEventType::Initial, "db".to_owned()),
                (WatchEventType::Initial, "web".to_owned())
            ]
        );
        streams.push(stream);
    }
    let requests = "setpoint_kube_requests_total{component=\"api\"}";
    let before = server.metric(requests).await;

    scale(&namespace, "db", 7).await;
    Api::<Deployment>::namespaced(admin().await, &namespace)
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete web");
    for stream in &mut streams {
        let changed = next(stream).await.expect("db changed");
        assert_eq!(
            (
                changed.r#type(),
                name(&changed),
                replicas(&changed).spec_replicas
            ),
            (WatchEventType::Changed, "db", 7)
        );
        let deleted = next(stream).await.expect("web deleted");
        assert_eq!(
            (deleted.r#type(), name(&deleted)),
            (WatchEventType::Deleted, "web")
        );
        assert_ne!(changed.resume_token, deleted.resume_token);
    }
    assert_eq!(
        server.metric(requests).await,
        before,
        "ten watchers made no request to the API server"
    );
}

#[tokio::test]
async fn a_selector_watch_sees_deployments_enter_and_leave_it() {
    let namespace = namespace_with("selected", &[("web", 1), ("api", 1)]).await;
    let server = Setpoint::start("setpoint-api").await;
    server.wait_until_ready().await;
    let mut viewer = server.client(VIEWER).await;
    let mut stream = watch(&mut viewer, request(&namespace, "app=web", ""))
        .await
        .expect("watch");
    let (initial, _) = until_synced(&mut stream).await;
    assert_eq!(initial, [(WatchEventType::Initial, "web".to_owned())]);

    label(&namespace, "api", "web").await;
    let entered = next(&mut stream).await.expect("api entered");
    assert_eq!(
        (entered.r#type(), name(&entered)),
        (WatchEventType::Changed, "api")
    );
    label(&namespace, "api", "other").await;
    let left = next(&mut stream).await.expect("api left");
    assert_eq!(
        (left.r#type(), name(&left)),
        (WatchEventType::Deleted, "api")
    );
}

#[tokio::test]
async fn a_watch_resumes_after_its_token_and_bad_tokens_get_their_codes() {
    let namespace = namespace_with("resumed", &[("web", 1)]).await;
    let server = Setpoint::start("setpoint-api").await;
    server.wait_until_ready().await;
    let mut viewer = server.client(VIEWER).await;
    let mut stream = watch(&mut viewer, request(&namespace, "", ""))
        .await
        .expect("watch");
    let (_, token) = until_synced(&mut stream).await;
    drop(stream);

    // A change while no one watched: resuming sends it (before SYNCED if the cache had
    // it already, else live after), and not the current state.
    scale(&namespace, "web", 3).await;
    let mut resumed = watch(&mut viewer, request(&namespace, "", &token))
        .await
        .expect("resume");
    let mut message = next(&mut resumed).await.expect("a message");
    if message.r#type() == WatchEventType::Synced {
        message = next(&mut resumed).await.expect("the change");
    }
    assert_eq!(
        (
            message.r#type(),
            name(&message),
            replicas(&message).spec_replicas
        ),
        (WatchEventType::Changed, "web", 3)
    );

    for (selector, token, code) in [
        ("", "not-a-token", Code::InvalidArgument),
        // Another server process's (or an earlier run's) token.
        ("", "0123456789abcdef.1.00", Code::OutOfRange),
        // This server's token, for another filter.
        ("app=web", token.as_str(), Code::InvalidArgument),
    ] {
        let status = match watch(&mut viewer, request(&namespace, selector, token)).await {
            Ok(mut stream) => next(&mut stream).await.expect_err("refused"),
            Err(status) => status,
        };
        assert_eq!(status.code(), code, "{token}: {status}");
    }
}

#[tokio::test]
async fn watches_are_limited_per_connection_and_identity_and_cancelling_frees_a_slot() {
    let namespace = namespace_with("limited", &[("web", 1)]).await;
    let server = Setpoint::start_with(
        "setpoint-api",
        &[
            "--max-watches-per-identity=3",
            "--max-watches-per-connection=2",
        ],
    )
    .await;
    server.wait_until_ready().await;
    let (mut first, mut second) = (server.client(VIEWER).await, server.client(VIEWER).await);
    let mut open = Vec::new();
    for client in [&first, &first, &second] {
        let mut stream = watch(&mut client.clone(), request(&namespace, "", ""))
            .await
            .expect("watch");
        until_synced(&mut stream).await;
        open.push(stream);
    }
    for (client, holder) in [(&mut first, "this connection"), (&mut second, "identity")] {
        let status = watch(client, request(&namespace, "", ""))
            .await
            .expect_err("over the limit");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
        assert!(status.message().contains(holder), "{}", status.message());
    }
    // The operator is another identity.
    let mut operator = server.client(OPERATOR).await;
    watch(&mut operator, request(&namespace, "", ""))
        .await
        .expect("another identity");

    // A watch the client cancels gives its slot back.
    drop(open.pop());
    testenv::wait_for("the cancelled watch's slot", || async {
        watch(&mut second.clone(), request(&namespace, "", ""))
            .await
            .ok()
    })
    .await;
}

#[tokio::test]
async fn a_policy_reload_ends_watches_whose_access_changed() {
    let namespace = namespace_with("rescoped", &[("web", 1)]).await;
    let server = Setpoint::start("setpoint-api").await;
    server.wait_until_ready().await;
    let (mut viewer, mut pipeline) = (server.client(VIEWER).await, server.client(PIPELINE).await);
    let mut revoked = watch(&mut viewer, request("", "", ""))
        .await
        .expect("watch");
    let mut narrowed = watch(&mut pipeline, request("", "", ""))
        .await
        .expect("watch");
    until_synced(&mut revoked).await;
    until_synced(&mut narrowed).await;

    // The viewer loses its binding; the pipeline keeps only this namespace.
    server.pki.write(
        "policy.yaml",
        &format!(
            "bindings: [{{role: operator, identities: [{OPERATOR}]}}, \
             {{role: viewer, identities: [{PIPELINE}], namespaces: [{namespace}]}}]"
        ),
    );
    let end = |mut stream: Streaming<WatchDeploymentsResponse>| async move {
        loop {
            if let Err(status) = next(&mut stream).await {
                return status;
            }
        }
    };
    let (revoked, narrowed) = (end(revoked).await, end(narrowed).await);
    assert_eq!(revoked.code(), Code::PermissionDenied, "{revoked}");
    assert_eq!(narrowed.code(), Code::Aborted, "{narrowed}");
    assert!(
        narrowed.message().contains("watch again"),
        "{}",
        narrowed.message()
    );
    // Watching again within the new scope works.
    let mut again = watch(&mut pipeline, request(&namespace, "", ""))
        .await
        .expect("watch");
    until_synced(&mut again).await;
}

#[tokio::test]
async fn a_watch_outlives_the_rpc_time_limit() {
    let namespace = namespace_with("long", &[("web", 1)]).await;
    let server = Setpoint::start_with("setpoint-api", &["--request-timeout=1s"]).await;
    server.wait_until_ready().await;
    let mut viewer = server.client(VIEWER).await;
    let mut stream = watch(&mut viewer, request(&namespace, "", ""))
        .await
        .expect("watch");
    until_synced(&mut stream).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    scale(&namespace, "web", 4).await;
    let changed = next(&mut stream).await.expect("still open after 3 s");
    assert_eq!(
        (changed.r#type(), replicas(&changed).spec_replicas),
        (WatchEventType::Changed, 4)
    );
}
