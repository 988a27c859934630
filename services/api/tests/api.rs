//! The API end to end: a real server (running as its ServiceAccount) against the real
//! control plane, called over mTLS.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use setpoint_k8s_api::ReplicaSetpoint;
use setpoint_proto::v1::replica_service_client::ReplicaServiceClient;
use setpoint_proto::v1::{
    DeploymentRef, GetReplicasRequest, ListDeploymentsRequest, ReconcileState,
    ReleaseDeploymentRequest, SetReplicasRequest,
};
use support::{
    OPERATOR, PIPELINE, STRANGER, Setpoint, VIEWER, admin, autoscaler_for, namespace_with,
    set_request,
};
use testenv::proxy::{Link, Proxy};
use tonic::Code;
use tonic::transport::Channel;

fn reference(namespace: &str, name: &str) -> Option<DeploymentRef> {
    Some(DeploymentRef {
        namespace: namespace.into(),
        name: name.into(),
    })
}

async fn get(
    client: &mut ReplicaServiceClient<Channel>,
    namespace: &str,
    name: &str,
) -> Result<setpoint_proto::v1::DeploymentReplicas, tonic::Status> {
    let response = client
        .get_replicas(GetReplicasRequest {
            deployment: reference(namespace, name),
        })
        .await?;
    Ok(response.into_inner().replicas.expect("replicas"))
}

fn list_in(namespace: &str) -> ListDeploymentsRequest {
    ListDeploymentsRequest {
        namespace: namespace.into(),
        ..ListDeploymentsRequest::default()
    }
}

#[tokio::test]
async fn operator_can_list_get_and_set() {
    let namespace = namespace_with("operator", &[("web", 2), ("db", 1)]).await;
    let server = Setpoint::start("setpoint-api").await;
    server.wait_until_ready().await;
    let mut client = server.client(OPERATOR).await;

    let listed = client
        .list_deployments(list_in(&namespace))
        .await
        .expect("list")
        .into_inner();
    let names: Vec<_> = listed
        .deployments
        .iter()
        .map(|d| d.deployment.clone().unwrap_or_default().name)
        .collect();
    assert_eq!(names, ["db", "web"], "ordered by name");
    assert!(listed.next_page_token.is_empty());

    let before = get(&mut client, &namespace, "web").await.expect("get");
    assert_eq!(before.spec_replicas, 2);
    assert_eq!(before.desired_replicas, None);
    assert_eq!(before.reconcile_state(), ReconcileState::Unmanaged);

    let stored = client
        .set_replicas(set_request(&namespace, "web", 5))
        .await
        .expect("set")
        .into_inner()
        .replicas
        .expect("replicas");
    assert_eq!(stored.desired_replicas, Some(5));
    assert_eq!(stored.reconcile_state(), ReconcileState::Pending);
    assert!(!stored.version.is_empty());

    // Durably stored: the ReplicaSetpoint exists in the API server, targets this
    // Deployment's UID, and is owned by Setpoint's field manager.
    let admin = admin().await;
    let setpoint = Api::<ReplicaSetpoint>::namespaced(admin, &namespace)
        .get("web")
        .await
        .expect("the setpoint was stored");
    assert_eq!(setpoint.spec.replicas, 5);
    assert_eq!(setpoint.spec.deployment_uid, before.uid);
    let managers: Vec<_> = setpoint
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|entry| entry.manager)
        .collect();
    assert!(
        managers.contains(&"setpoint-api".to_string()),
        "{managers:?}"
    );

    // Reads catch up through the watch cache.
    testenv::wait_for("the setpoint to reach the cache", || async {
        let read = get(&mut client.clone(), &namespace, "web").await.ok()?;
        (read.desired_replicas == Some(5)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn viewer_can_read_but_not_set() {
    let namespace = namespace_with("viewer", &[("web", 1)]).await;
    let server = Setpoint::start("setpoint-api").await;
    server.wait_until_ready().await;
    let mut viewer = server.client(VIEWER).await;

    assert!(viewer.list_deployments(list_in(&namespace)).await.is_ok());
    assert_eq!(
        get(&mut viewer, &namespace, "web")
            .await
            .expect("get")
            .spec_replicas,
        1
    );
    let denied = viewer
        .set_replicas(set_request(&namespace, "web", 3))
        .await
        .expect_err("viewer may not set");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains(VIEWER), "{}", denied.message());
}

#[tokio::test]
async fn writes_beyond_the_per_identity_limit_are_refused() {
    let namespace = namespace_with("limited", &[("web", 1)]).await;
    let server = Setpoint::start_with(
        "setpoint-api",
        &["--writes-per-minute=2", "--write-burst=2"],
    )
    .await;
    server.wait_until_ready().await;
    let mut operator = server.client(OPERATOR).await;
    for replicas in [2, 3] {
        operator
            .set_replicas(set_request(&namespace, "web", replicas))
            .await
            .expect("within the limit");
    }
    let refused = operator
        .set_replicas(set_request(&namespace, "web", 4))
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains(OPERATOR) && refused.message().contains("2 writes per minute"),
        "{}",
        refused.message()
    );

    // The refused write stored nothing; reads and other identities are not limited.
    let setpoints = Api::<ReplicaSetpoint>::namespaced(admin().await, &namespace);
    let stored = setpoints.get("web").await.expect("setpoint");
    assert_eq!(stored.spec.replicas, 3);
    assert!(get(&mut operator, &namespace, "web").await.is_ok());
    server
        .client(PIPELINE)
        .await
        .set_replicas(set_request(&namespace, "web", 5))
        .await
        .expect("another identity has its own budget");
}

#[tokio::test]
async fn refused_writes_do_not_spend_the_write_budget() {
    let namespace = namespace_with("budget", &[("web", 1)]).await;
    let server = Setpoint::start_with(
        "setpoint-api",
        &["--writes-per-minute=1", "--write-burst=1"],
    )
    .await;
    server.wait_until_ready().await;
    let mut operator = server.client(OPERATOR).await;
    for (request, code) in [
        (set_request(&namespace, "web", -1), Code::InvalidArgument),
        (
            set_request(&namespace, "Bad_Name", 2),
            Code::InvalidArgument,
        ),
        (set_request(&namespace, "missing", 2), Code::NotFound),
    ] {
        let status = operator.set_replicas(request).await.expect_err("refused");
        assert_eq!(status.code(), code, "{}", status.message());
    }
    operator
        .set_replicas(set_request(&namespace, "web", 2))
        .await
        .expect("the budget is intact after refused calls");
    let refused = operator
        .set_replicas(set_request(&namespace, "web", 3))
        .await
        .expect_err("the burst of one is spent");
    assert_eq!(refused.code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn protected_namespaces_need_a_binding_that_names_them() {
    let protected = namespace_with("protected", &[("web", 1)]).await;
    let server = Setpoint::start_with(
        "setpoint-api",
        &[&format!("--protected-namespaces=kube-system,{protected}")],
    )
    .await;
    server.wait_until_ready().await;
    let mut operator = server.client(OPERATOR).await;
    let denied = operator
        .set_replicas(set_request(&protected, "web", 0))
        .await
        .expect_err("an unscoped operator may not write here");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains("protected"),
        "{}",
        denied.message()
    );
    for refused in [
        operator
            .set_replicas(dry_run(&protected, "web", 0))
            .await
            .err(),
        operator
            .release_deployment(release(&protected, "web", None))
            .await
            .err(),
    ] {
        assert_eq!(
            refused.map(|status| status.code()),
            Some(Code::PermissionDenied)
        );
    }
    assert!(
        get(&mut operator, &protected, "web").await.is_ok(),
        "reads stay"
    );
    let setpoints = Api::<ReplicaSetpoint>::namespaced(admin().await, &protected);
    assert!(setpoints.get_opt("web").await.expect("read").is_none());

    // A binding that names the namespace may write there.
    server.pki.write(
        "policy.yaml",
        &format!(
            "bindings: [{{role: operator, identities: [{PIPELINE}], namespaces: [{protected}]}}]"
        ),
    );
    let pipeline = server.client(PIPELINE).await;
    testenv::wait_for("the naming binding to apply", || async {
        pipeline
            .clone()
            .set_replicas(set_request(&protected, "web", 0))
            .await
            .ok()
    })
    .await;
    assert_eq!(setpoints.get("web").await.expect("stored").spec.replicas, 0);
}

#[tokio::test]
async fn a_scoped_identity_reaches_only_its_namespaces() {
    let own = namespace_with("team-a", &[("web", 1)]).await;
    let other = namespace_with("team-b", &[("web", 1)]).await;
    let server = Setpoint::start("setpoint-api").await;
    server.wait_until_ready().await;
    server.pki.write(
        "policy.yaml",
        &format!("bindings: [{{role: operator, identities: [{PIPELINE}], namespaces: [{own}]}}]"),
    );
    let mut pipeline = server.client(PIPELINE).await;
    let denied = testenv::wait_for("the scoped policy to apply", || async {
        let status = get(&mut pipeline.clone(), &other, "web").await.err()?;
        (status.code() == Code::PermissionDenied).then_some(status)
    })
    .await;
    assert!(denied.message().contains(&other), "{}", denied.message());

    // Listing every namespace shows only its own; naming another is denied.
    let listed = pipeline
        .list_deployments(ListDeploymentsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .deployments;
    let listed: Vec<_> = listed
        .iter()
        .filter_map(|d| d.deployment.as_ref())
        .map(|d| format!("{}/{}", d.namespace, d.name))
        .collect();
    assert_eq!(listed, [format!("{own}/web")]);
    let denied = pipeline
        .list_deployments(list_in(&other))
        .await
        .expect_err("another namespace");
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Writes: its own namespace only, and a denied write stores nothing.
    pipeline
        .set_replicas(set_request(&own, "web", 2))
        .await
        .expect("own namespace");
    let denied = pipeline
        .set_replicas(set_request(&other, "web", 2))
        .await
        .expect_err("another namespace");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let setpoints = Api::<ReplicaSetpoint>::namespaced(admin().await, &other);
    assert!(setpoints.get_opt("web").await.expect("get").is_none());
}

#[tokio::test]
async fn unknown_identity_is_denied_everything() {
    let namespace = namespace_with("stranger", &[("web", 1)]).await;
    let server = Setpoint::start("setpoint-api").await;
    server.wait_until_ready().await;
    let mut stranger = server.client(STRANGER).await;

    let denied = stranger
        .list_deployments(list_in(&namespace))
        .await
        .expect_err("no role");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = get(&mut stranger, &namespace, "web")
        .await
        .expect_err("no role");
    assert_eq!(denied.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn bad_requests_get_documented_statuses_and_the_server_keeps_serving() {
    let namespace = namespace_with("invalid", &[("web", 1)]).await;
    let server = Setpoint::start("setpoint-api").await;
    server.wait_until_ready().await;
    let mut client = server.client(OPERATOR).await;

    let cases = [
        (
            set_request("Bad_Namespace", "web", 1),
            Code::InvalidArgument,
            "namespace",
        ),
        (
            set_request(&namespace, "Web!", 1),
            Code::InvalidArgument,
            "deployment name",
        ),
        (
            set_request(&namespace, "web", -1),
            Code::InvalidArgument,
            "between 0 and 1000",
        ),
        (
            set_request(&namespace, "web", 1001),
            Code::InvalidArgument,
            "between 0 and 1000",
        ),
        (
            set_request(&namespace, "missing", 1),
            Code::NotFound,
            "not found",
        ),
        (
            SetReplicasRequest {
                deployment: None,
                replicas: 1,
                ..SetReplicasRequest::default()
            },
            Code::InvalidArgument,
            "deployment is required",
        ),
    ];
    for (request, code, message) in cases {
        let status = client.set_replicas(request).await.expect_err("rejected");
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(status.message().contains(message), "{}", status.message());
    }
    for request in [
        ListDeploymentsRequest {
            label_selector: "app in web".into(),
            ..ListDeploymentsRequest::default()
        },
        ListDeploymentsRequest {
            page_size: 501,
            ..ListDeploymentsRequest::default()
        },
        ListDeploymentsRequest {
            page_token: "not-a-token".into(),
            ..ListDeploymentsRequest::default()
        },
    ] {
        let status = client
            .list_deployments(request)
            .await
            .expect_err("rejected");
        assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    }
    let status = get(&mut client, &namespace, "missing")
        .await
        .expect_err("missing");
    assert_eq!(status.code(), Code::NotFound);

    // Nothing was written, and the server still answers.
    assert_eq!(
        get(&mut client, &namespace, "web")
            .await
            .expect("get")
            .desired_replicas,
        None
    );
}

#[tokio::test]
async fn a_page_token_is_valid_only_for_its_query() {
    let namespace = namespace_with("paged", &[("api", 1), ("web", 1), ("worker", 1)]).await;
    let server = Setpoint::start("setpoint-api").await;
    server.wait_until_ready().await;
    let mut operator = server.client(OPERATOR).await;
    let first = operator
        .list_deployments(ListDeploymentsRequest {
            page_size: 1,
            ..list_in(&namespace)
        })
        .await
        .expect("first page")
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    let next = |request: ListDeploymentsRequest| ListDeploymentsRequest {
        page_size: 1,
        page_token: first.next_page_token.clone(),
        ..request
    };
    let second = operator
        .list_deployments(next(list_in(&namespace)))
        .await
        .expect("the same query continues")
        .into_inner();
    assert_eq!(second.deployments.len(), 1);

    for other in [
        ListDeploymentsRequest::default(),
        ListDeploymentsRequest {
            label_selector: "app".into(),
            ..list_in(&namespace)
        },
    ] {
        let status = operator
            .list_deployments(next(other))
            .await
            .expect_err("another query");
        assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
        assert!(
            status.message().contains("page_token"),
            "{}",
            status.message()
        );
    }
    // The same query from a caller with another scope.
    server.pki.write(
        "policy.yaml",
        &format!(
            "bindings: [{{role: operator, identities: [{OPERATOR}], namespaces: [{namespace}]}}]"
        ),
    );
    let status = testenv::wait_for("the scoped policy to apply", || async {
        let status = operator
            .clone()
            .list_deployments(next(list_in(&namespace)))
            .await
            .err()?;
        (status.code() == Code::InvalidArgument).then_some(status)
    })
    .await;
    assert!(
        status.message().contains("page_token"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn every_stored_change_has_its_audit_event_even_when_the_caller_gives_up() {
    let logs = support::logs();
    let namespace = namespace_with("audited", &[("web", 1)]).await;
    // A slow link to the API server, so that a caller's deadline falls while a write is
    // on its way.
    let proxy = Proxy::start(testenv::shared().await.apiserver_addr())
        .await
        .expect("proxy");
    let server = Setpoint::start_via(
        Some(&proxy),
        "setpoint-api",
        &["--writes-per-minute=1000", "--write-burst=1000"],
    )
    .await;
    server.wait_until_ready().await;
    let operator = server.client(OPERATOR).await;
    let latency = Duration::from_millis(40);
    proxy.set(Link::Delay(latency));

    // Callers that give up after the GET (two delays) and while the write is on its way
    // (a third): a deadline, or a stream reset by dropping the call.
    let patience = latency * 3 + latency / 2;
    for replicas in [2, 3, 4, 5] {
        let mut request = tonic::Request::new(set_request(&namespace, "web", replicas));
        if replicas % 2 == 0 {
            request.set_timeout(patience);
            let status = operator
                .clone()
                .set_replicas(request)
                .await
                .expect_err("gave up");
            assert!(
                matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
                "{status}"
            );
        } else {
            let mut caller = operator.clone();
            assert!(
                tokio::time::timeout(patience, caller.set_replicas(request))
                    .await
                    .is_err()
            );
        }
        // Every abandoned write is stored (the API server got it), and audited.
        let setpoints = Api::<ReplicaSetpoint>::namespaced(admin().await, &namespace);
        testenv::wait_for("the abandoned write to be stored and audited", || async {
            let stored = setpoints.get_opt("web").await.ok()??;
            let audited = logs.events("setpoint::audit").iter().any(|event| {
                event["deployment"] == format!("{namespace}/web")
                    && event["result"] == "ok"
                    && event["desired"] == replicas
            });
            (stored.spec.replicas == replicas && audited).then_some(())
        })
        .await;
        let events = logs.events("setpoint::audit");
        let position = |matches: &dyn Fn(&serde_json::Value) -> bool| {
            events.iter().position(|event| {
                event["deployment"] == format!("{namespace}/web") && matches(event)
            })
        };
        let intent = position(&|event| event["requested"] == replicas).expect("an intent");
        let outcome = position(&|event| event["result"] == "ok" && event["desired"] == replicas)
            .expect("an outcome");
        assert!(
            intent < outcome,
            "the intent was recorded before the outcome"
        );
    }
}

#[tokio::test]
async fn every_call_is_in_the_access_log_with_identity_method_target_code_and_latency() {
    let logs = support::logs();
    let namespace = namespace_with("accessed", &[("web", 1)]).await;
    let server = Setpoint::start_with("setpoint-api", &["--access-log-sample=1"]).await;
    server.wait_until_ready().await;
    get(&mut server.client(OPERATOR).await, &namespace, "web")
        .await
        .expect("read");
    server
        .client(VIEWER)
        .await
        .set_replicas(set_request(&namespace, "web", 2))
        .await
        .expect_err("a viewer may not write");
    let target = format!("{namespace}/web");
    let entries = testenv::wait_for("both calls in the access log", || async {
        let entries: Vec<_> = logs
            .events("setpoint::access")
            .into_iter()
            .filter(|entry| {
                entry["span"]["resource"] == target.as_str() || {
                    entry["span"]["identity"] == VIEWER
                        && entry["span"]["method"] == "/setpoint.v1.ReplicaService/SetReplicas"
                }
            })
            .collect();
        (entries.len() >= 2).then_some(entries)
    })
    .await;
    let read = entries
        .iter()
        .find(|entry| entry["span"]["method"] == "/setpoint.v1.ReplicaService/GetReplicas")
        .expect("the read");
    assert_eq!(read["span"]["identity"], OPERATOR, "{read}");
    assert_eq!(read["code"], "Ok", "{read}");
    assert!(read["latency_ms"].is_number(), "{read}");
    let denied = entries
        .iter()
        .find(|entry| entry["span"]["identity"] == VIEWER)
        .expect("the denied write");
    assert_eq!(denied["code"], "PermissionDenied", "{denied}");
}

#[tokio::test]
async fn stale_expected_version_is_aborted() {
    let namespace = namespace_with("version", &[("web", 1)]).await;
    let server = Setpoint::start("setpoint-api").await;
    server.wait_until_ready().await;
    let mut client = server.client(OPERATOR).await;

    let with_version = |replicas, version: &str| SetReplicasRequest {
        expected_version: Some(version.into()),
        ..set_request(&namespace, "web", replicas)
    };
    // "" means "only if there is no setpoint yet".
    let first = client
        .set_replicas(with_version(2, ""))
        .await
        .expect("create")
        .into_inner()
        .replicas
        .expect("replicas");
    let again = client
        .set_replicas(with_version(3, ""))
        .await
        .expect_err("a setpoint exists now");
    assert_eq!(again.code(), Code::Aborted);

    let second = client
        .set_replicas(with_version(4, &first.version))
        .await
        .expect("the version matches")
        .into_inner()
        .replicas
        .expect("replicas");
    assert_ne!(second.version, first.version);
    let stale = client
        .set_replicas(with_version(5, &first.version))
        .await
        .expect_err("the version moved on");
    assert_eq!(stale.code(), Code::Aborted);
    assert!(
        stale.message().contains("not the expected"),
        "{}",
        stale.message()
    );
}

#[tokio::test]
async fn racing_writers_with_the_same_expected_version_have_one_winner() {
    let namespace = namespace_with("race", &[("web", 1)]).await;
    // Eight writes at once: a burst that large must be allowed.
    let server = Setpoint::start_with("setpoint-api", &["--write-burst=8"]).await;
    server.wait_until_ready().await;
    let client = server.client(OPERATOR).await;

    let attempts = (1..=8).map(|replicas| {
        let mut client = client.clone();
        let request = SetReplicasRequest {
            expected_version: Some(String::new()),
            ..set_request(&namespace, "web", replicas)
        };
        async move { (replicas, client.set_replicas(request).await) }
    });
    let results = futures::future::join_all(attempts).await;
    let winners: Vec<i32> = results
        .iter()
        .filter(|(_, result)| result.is_ok())
        .map(|(replicas, _)| *replicas)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one writer wins: {results:?}");
    for (_, result) in &results {
        if let Err(status) = result {
            assert_eq!(status.code(), Code::Aborted, "{status:?}");
        }
    }
    let admin = admin().await;
    let stored = Api::<ReplicaSetpoint>::namespaced(admin, &namespace)
        .get("web")
        .await
        .expect("stored");
    assert_eq!(
        stored.spec.replicas, winners[0],
        "the stored value is the winner's"
    );
}

fn dry_run(namespace: &str, name: &str, replicas: i32) -> SetReplicasRequest {
    SetReplicasRequest {
        dry_run: true,
        ..set_request(namespace, name, replicas)
    }
}

fn release(
    namespace: &str,
    name: &str,
    expected_version: Option<&str>,
) -> ReleaseDeploymentRequest {
    ReleaseDeploymentRequest {
        deployment: reference(namespace, name),
        expected_version: expected_version.map(str::to_owned),
    }
}

#[tokio::test]
async fn a_dry_run_checks_everything_stores_nothing_and_is_audited_as_one() {
    let logs = support::logs();
    let namespace = namespace_with("dry-run", &[("web", 1)]).await;
    // A budget of one write: dry runs must not spend it.
    let server = Setpoint::start_with(
        "setpoint-api",
        &["--writes-per-minute=1", "--write-burst=1"],
    )
    .await;
    server.wait_until_ready().await;
    let mut operator = server.client(OPERATOR).await;

    for _ in 0..3 {
        let answer = operator
            .set_replicas(dry_run(&namespace, "web", 3))
            .await
            .expect("the write would succeed")
            .into_inner()
            .replicas
            .expect("replicas");
        assert_eq!(answer.desired_replicas, Some(3));
        assert_eq!(answer.spec_replicas, 1);
        assert_eq!(answer.reconcile_state(), ReconcileState::Pending);
        assert_eq!(
            answer.version, "",
            "no setpoint yet: the version a write expects"
        );
    }
    let setpoints = Api::<ReplicaSetpoint>::namespaced(admin().await, &namespace);
    assert!(
        setpoints.get_opt("web").await.expect("read").is_none(),
        "nothing stored"
    );

    let refusals = [
        (dry_run(&namespace, "web", -1), Code::InvalidArgument),
        (dry_run(&namespace, "absent", 1), Code::NotFound),
        (
            SetReplicasRequest {
                expected_version: Some("some-uid/1".into()),
                ..dry_run(&namespace, "web", 2)
            },
            Code::Aborted,
        ),
    ];
    for (request, code) in refusals {
        let status = operator.set_replicas(request).await.expect_err("refused");
        assert_eq!(status.code(), code, "{status}");
    }
    let mut viewer = server.client(VIEWER).await;
    let denied = viewer
        .set_replicas(dry_run(&namespace, "web", 2))
        .await
        .expect_err("a viewer may not write, not even in a dry run");
    assert_eq!(denied.code(), Code::PermissionDenied);

    // The budget is whole: the one real write goes through.
    operator
        .set_replicas(set_request(&namespace, "web", 4))
        .await
        .expect("the budget was not spent by dry runs");
    let dry_runs = logs
        .events("setpoint::audit")
        .into_iter()
        .filter(|event| {
            event["deployment"] == format!("{namespace}/web")
                && event["dry_run"] == true
                && event["result"] == "ok"
        })
        .count();
    assert_eq!(dry_runs, 3, "each dry run audited as one");
    // Dry runs have a budget of their own, ten times the writes' (burst 1 → 10): three
    // passed above and the stale-version one spent one (like a write, it is refused only
    // at the version check), so six more pass and the next does not.
    for _ in 0..6 {
        operator
            .set_replicas(dry_run(&namespace, "web", 3))
            .await
            .expect("within the dry-run budget");
    }
    let flood = operator
        .set_replicas(dry_run(&namespace, "web", 3))
        .await
        .expect_err("over the dry-run budget");
    assert_eq!(flood.code(), Code::ResourceExhausted, "{flood}");
}

#[tokio::test]
async fn release_stops_management_with_a_version_precondition() {
    let logs = support::logs();
    let namespace = namespace_with("release", &[("web", 1), ("api", 1)]).await;
    // Seven writes, each spending from the budget (a release of nothing too: it asks the
    // API server).
    let server = Setpoint::start_with("setpoint-api", &["--write-burst=7"]).await;
    server.wait_until_ready().await;
    let mut operator = server.client(OPERATOR).await;

    // Released at once after being set: the server asks the API server rather than
    // trusting a cache that may not show the new setpoint yet.
    operator
        .set_replicas(set_request(&namespace, "api", 2))
        .await
        .expect("set");
    operator
        .release_deployment(release(&namespace, "api", None))
        .await
        .expect("released right after it was set");
    let unmanaged = operator
        .release_deployment(release(&namespace, "api", None))
        .await
        .expect_err("api has no setpoint");
    assert_eq!(unmanaged.code(), Code::NotFound);
    assert!(
        unmanaged.message().contains("no setpoint"),
        "{}",
        unmanaged.message()
    );

    let stored = operator
        .set_replicas(set_request(&namespace, "web", 2))
        .await
        .expect("set")
        .into_inner()
        .replicas
        .expect("replicas");
    testenv::wait_for("the setpoint to reach the cache", || async {
        let seen = get(&mut operator.clone(), &namespace, "web").await.ok()?;
        (seen.desired_replicas == Some(2)).then_some(())
    })
    .await;

    let mut viewer = server.client(VIEWER).await;
    let denied = viewer
        .release_deployment(release(&namespace, "web", None))
        .await
        .expect_err("viewers may not release");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let stale = operator
        .release_deployment(release(&namespace, "web", Some("other-uid/9")))
        .await
        .expect_err("stale version");
    assert_eq!(stale.code(), Code::Aborted);
    let setpoints = Api::<ReplicaSetpoint>::namespaced(admin().await, &namespace);
    assert!(
        setpoints.get_opt("web").await.expect("read").is_some(),
        "kept"
    );

    let released = operator
        .release_deployment(release(&namespace, "web", Some(&stored.version)))
        .await
        .expect("released")
        .into_inner()
        .replicas
        .expect("the Deployment exists");
    assert_eq!(released.reconcile_state(), ReconcileState::Unmanaged);
    assert_eq!(released.desired_replicas, None);
    assert!(
        setpoints.get_opt("web").await.expect("read").is_none(),
        "deleted"
    );
    testenv::wait_for("the cache to see the release", || async {
        let seen = get(&mut operator.clone(), &namespace, "web").await.ok()?;
        (seen.reconcile_state() == ReconcileState::Unmanaged).then_some(())
    })
    .await;
    let again = operator
        .release_deployment(release(&namespace, "web", None))
        .await
        .expect_err("already released");
    assert_eq!(again.code(), Code::NotFound);
    assert!(logs.events("setpoint::audit").iter().any(|event| {
        event["deployment"] == format!("{namespace}/web")
            && event["message"] == "ReleaseDeployment"
            && event["result"] == "ok"
            && event["previous"] == "Some(2)"
    }));
}

#[tokio::test]
async fn deployments_scaled_by_an_hpa_are_refused() {
    let namespace = namespace_with("hpa", &[("web", 1)]).await;
    let server = Setpoint::start("setpoint-api").await;
    server.wait_until_ready().await;
    let admin = admin().await;
    Api::<HorizontalPodAutoscaler>::namespaced(admin, &namespace)
        .create(&PostParams::default(), &autoscaler_for("web"))
        .await
        .expect("create HPA");

    let client = server.client(OPERATOR).await;
    let refused = testenv::wait_for("the HPA to reach the cache", || async {
        let result = client
            .clone()
            .set_replicas(set_request(&namespace, "web", 3))
            .await;
        result
            .err()
            .filter(|status| status.code() == Code::FailedPrecondition)
    })
    .await;
    assert!(
        refused.message().contains("web-hpa"),
        "{}",
        refused.message()
    );
    let dry = client
        .clone()
        .set_replicas(dry_run(&namespace, "web", 3))
        .await
        .expect_err("a dry run is refused too");
    assert_eq!(dry.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn reads_make_no_apiserver_requests_and_follow_changes() {
    let namespace = namespace_with("cached", &[("web", 1), ("db", 1)]).await;
    let server = Setpoint::start_with("setpoint-api", &["--probe-interval=1h"]).await;
    server.wait_until_ready().await;
    let mut client = server.client(OPERATOR).await;
    // Let the watches settle after their initial lists.
    get(&mut client, &namespace, "web").await.expect("warm-up");

    let before = server
        .metric("setpoint_kube_requests_total{component=\"api\"}")
        .await;
    assert!(before > 0.0, "the counter sees the watches' requests");
    for _ in 0..100 {
        get(&mut client, &namespace, "web").await.expect("get");
        client
            .list_deployments(list_in(&namespace))
            .await
            .expect("list");
    }
    let after = server
        .metric("setpoint_kube_requests_total{component=\"api\"}")
        .await;
    assert_eq!(after, before, "200 reads sent no request to the API server");

    // A change made directly in the API server reaches reads through the watch.
    let admin = admin().await;
    Api::<Deployment>::namespaced(admin, &namespace)
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 7}})),
        )
        .await
        .expect("scale db");
    testenv::wait_for("the change to reach reads", || async {
        let db = get(&mut client.clone(), &namespace, "db").await.ok()?;
        (db.spec_replicas == 7).then_some(())
    })
    .await;
}

#[tokio::test]
async fn without_rbac_the_cache_never_syncs_and_reads_are_unavailable() {
    let namespace = namespace_with("unsynced", &[("web", 1)]).await;
    // A ServiceAccount with no bindings: the watches are forbidden.
    let server = Setpoint::start("no-permissions").await;
    let mut client = server.client(OPERATOR).await;

    let status = get(&mut client, &namespace, "web")
        .await
        .expect_err("not synced");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("not synced"),
        "{}",
        status.message()
    );
    let status = client
        .list_deployments(list_in(&namespace))
        .await
        .expect_err("not synced");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(server.http_get("/readyz").await.0, 503);
    assert_eq!(server.http_get("/livez").await.0, 200);
    testenv::wait_for(
        "the forbidden watches to be counted as restarts",
        || async { (server.metric("setpoint_watch_restarts_total").await > 0.0).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn readiness_fails_while_a_watch_keeps_failing_and_recovers_with_it() {
    let namespace = namespace_with("revoked", &[("web", 1)]).await;
    // Setpoint's ClusterRole, bound to a ServiceAccount of this test only.
    let bindings = Api::<ClusterRoleBinding>::all(admin().await);
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "setpoint-revocable"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "setpoint-api"},
        "subjects": [{"kind": "ServiceAccount", "name": "revocable", "namespace": "setpoint"}],
    }))
    .expect("binding");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("bind");
    let server =
        Setpoint::start_with("revocable", &["--watch-timeout=1s", "--probe-interval=1s"]).await;
    server.wait_until_ready().await;
    let mut client = server.client(OPERATOR).await;

    // Revoked: the watches fail at their next renewal and readiness says why.
    bindings
        .delete("setpoint-revocable", &Default::default())
        .await
        .expect("revoke");
    let body = testenv::wait_for("readiness to fail", || async {
        let (code, body) = server.http_get("/readyz").await;
        (code == 503).then_some(body)
    })
    .await;
    assert!(body.contains("watch of"), "{body}");
    assert!(body.contains("403 Forbidden"), "{body}");
    assert!(
        !body.contains("serviceaccount"),
        "the unauthenticated port does not name the ServiceAccount: {body}"
    );
    // Reads are still answered from the last state the cache saw.
    assert!(get(&mut client, &namespace, "web").await.is_ok());

    // Restored: the watches recover and so does readiness.
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("bind again");
    server.wait_until_ready().await;
    bindings
        .delete("setpoint-revocable", &Default::default())
        .await
        .expect("clean up");
}

#[tokio::test]
async fn an_unreachable_api_server_is_reported_with_its_likely_cause() {
    let logs = support::logs();
    // A link that lets nothing through, as a NetworkPolicy without egress does.
    let proxy = Proxy::start(testenv::shared().await.apiserver_addr())
        .await
        .expect("proxy");
    proxy.set(Link::BlackHole);
    let server = Setpoint::start_via(Some(&proxy), "setpoint-api", &[]).await;
    let body = testenv::wait_for("/readyz to name the cause", || async {
        let (code, body) = server.http_get("/readyz").await;
        (code == 503 && body.contains("did not answer")).then_some(body)
    })
    .await;
    assert!(body.contains("egress"), "{body}");
    testenv::wait_for("a log line with the reasons", || async {
        logs.events("setpoint_runtime::health")
            .iter()
            .any(|event| {
                event["message"] == "not ready"
                    && event["reasons"]
                        .as_str()
                        .is_some_and(|reasons| reasons.contains("egress"))
            })
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn health_reports_serving_once_synced_and_shutdown_is_graceful() {
    let server = Setpoint::start("setpoint-api").await;
    server.wait_until_ready().await;
    let (cert, key) = server.pki.client(VIEWER);
    let channel = tonic::transport::Channel::from_shared(format!("https://{}", server.grpc))
        .expect("url")
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(
                    server.pki.ca.cert_pem(),
                ))
                .identity(tonic::transport::Identity::from_pem(cert, key))
                .domain_name("localhost"),
        )
        .expect("tls")
        .connect()
        .await
        .expect("connect");
    let health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = testenv::wait_for("SERVING", || async {
        let response = health
            .clone()
            .check(tonic_health::pb::HealthCheckRequest {
                service: "setpoint.v1.ReplicaService".into(),
            })
            .await
            .ok()?;
        let status = response.into_inner().status();
        (status == tonic_health::pb::health_check_response::ServingStatus::Serving)
            .then_some(status)
    })
    .await;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let (code, body) = server.http_get("/metrics").await;
    assert_eq!(code, 200);
    assert!(body.contains("setpoint_grpc_requests_total"), "{body}");
    assert!(body.contains("setpoint_cache_objects"), "{body}");

    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_stopping_server_is_not_ready_but_serves_new_connections_for_the_shutdown_delay() {
    let namespace = namespace_with("shutdown", &[("web", 2)]).await;
    let mut server = Setpoint::start_with("setpoint-api", &["--shutdown-delay=3s"]).await;
    server.wait_until_ready().await;

    server.signal_stop();
    // Endpoints learn of the shutdown from readiness; meanwhile a client that still
    // picks this replica, on a new connection, is served.
    testenv::wait_for("/readyz to report the shutdown", || async {
        let (code, body) = server.http_get("/readyz").await;
        (code == 503 && body.contains("shutting down")).then_some(())
    })
    .await;
    let replicas = get(&mut server.client(VIEWER).await, &namespace, "web")
        .await
        .expect("served during the shutdown delay");
    assert_eq!(replicas.spec_replicas, 2);
    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn policy_changes_apply_without_restart() {
    let namespace = namespace_with("policy", &[("web", 1)]).await;
    let server = Setpoint::start("setpoint-api").await;
    server.wait_until_ready().await;
    let mut viewer = server.client(VIEWER).await;
    let denied = viewer
        .set_replicas(set_request(&namespace, "web", 2))
        .await
        .expect_err("viewer");
    assert_eq!(denied.code(), Code::PermissionDenied);

    server.pki.write(
        "policy.yaml",
        "bindings: [{role: operator, identities: [spiffe://setpoint.dev/viewer]}]",
    );
    testenv::wait_for("the new policy to apply", || async {
        viewer
            .clone()
            .set_replicas(set_request(&namespace, "web", 2))
            .await
            .ok()
    })
    .await;

    // A broken policy is rejected and the last good one stays in force.
    server.pki.write("policy.yaml", "bindings: [{role: admin}]");
    testenv::wait_for("the broken policy to be rejected", || async {
        (server.metric("setpoint_reload_failures_total").await > 0.0).then_some(())
    })
    .await;
    assert!(
        viewer
            .set_replicas(set_request(&namespace, "web", 3))
            .await
            .is_ok()
    );
}
