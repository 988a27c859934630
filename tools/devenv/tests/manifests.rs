//! The shipped manifests (`k8s/base`), checked as far as a cluster without kubelet
//! allows: they apply cleanly, the ServiceAccount can do exactly what Setpoint needs,
//! both Deployments (setpoint-api, setpoint-reconciler) pass the restricted Pod Security
//! admission, and the security fields and NetworkPolicy say what RFD 0001 says.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::{Api, Client};
use serde::de::DeserializeOwned;

fn manifest(name: &str) -> String {
    std::fs::read_to_string(devenv::repository_root().join("k8s/base").join(name))
        .unwrap_or_else(|error| panic!("reading k8s/base/{name}: {error}"))
}

fn parse<T: DeserializeOwned>(name: &str) -> T {
    serde_saphyr::from_str(&manifest(name)).unwrap_or_else(|error| panic!("{name}: {error}"))
}

/// The files `kubectl apply -k k8s/base` applies, in order.
fn kustomization_resources() -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Kustomization {
        resources: Vec<String>,
    }
    parse::<Kustomization>("kustomization.yaml").resources
}

/// Applies everything once per test binary.
async fn applied() -> &'static testenv::ControlPlane {
    static APPLIED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let control_plane = testenv::shared().await;
    APPLIED
        .get_or_init(|| async {
            devenv::install(control_plane).await.expect("install");
            for file in kustomization_resources() {
                control_plane
                    .apply_manifest(&manifest(&file))
                    .await
                    .unwrap_or_else(|error| panic!("applying {file}: {error}"));
            }
        })
        .await;
    control_plane
}

async fn allowed(client: &Client, attributes: ResourceAttributes) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(attributes),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("access review")
        .status
        .map(|status| status.allowed)
        .unwrap_or(false)
}

/// `verb group/resource[/subresource] [namespace] [name]`
fn attributes(text: &str) -> ResourceAttributes {
    let words: Vec<&str> = text.split_whitespace().collect();
    let (group, resource) = words[1].split_once('/').unwrap_or(("", words[1]));
    let (resource, subresource) = resource
        .split_once('/')
        .map_or((resource, None), |(r, s)| (r, Some(s.to_owned())));
    let optional = |index: usize| {
        words
            .get(index)
            .filter(|word| **word != "*")
            .map(|word| word.to_string())
    };
    ResourceAttributes {
        verb: Some(words[0].into()),
        group: Some(group.into()),
        resource: Some(resource.into()),
        subresource,
        namespace: optional(2),
        name: optional(3),
        ..ResourceAttributes::default()
    }
}

async fn service_account(account: &str) -> Client {
    applied()
        .await
        .service_account_client(devenv::NAMESPACE, account)
        .await
        .expect("ServiceAccount client")
}

/// Checks `allowed` and `denied` access reviews as `account`.
async fn may_exactly(account: &str, allowed_checks: &[&str], denied_checks: &[&str]) {
    let client = service_account(account).await;
    for check in allowed_checks {
        assert!(
            allowed(&client, attributes(check)).await,
            "{account} must be allowed: {check}"
        );
    }
    for check in denied_checks {
        assert!(
            !allowed(&client, attributes(check)).await,
            "{account} must be denied: {check}"
        );
    }
}

/// What neither process may do.
const NEITHER: &[&str] = &[
    "get secrets setpoint setpoint-tls",
    "list secrets setpoint",
    "get secrets kube-system",
    "get configmaps setpoint setpoint-policy",
    "get apps/deployments team-a web",
    "get autoscaling/horizontalpodautoscalers team-a web",
    "create apps/deployments team-a",
    "delete apps/deployments team-a web",
    "patch apps/deployments team-a web",
    "update apps/deployments team-a web",
    "create pods team-a",
    "list pods team-a",
    "deletecollection setpoint.dev/replicasetpoints team-a",
    "update setpoint.dev/replicasetpoints/status team-a web",
    "create rbac.authorization.k8s.io/rolebindings setpoint",
    "update coordination.k8s.io/leases kube-system kube-controller-manager",
];

#[tokio::test]
async fn the_api_service_account_reads_what_it_serves_and_writes_setpoints_only() {
    let only_reconciler = [
        "update apps/deployments/scale team-a web",
        "patch setpoint.dev/replicasetpoints/status team-a web",
        "create events.k8s.io/events team-a",
        "create coordination.k8s.io/leases setpoint",
        "get coordination.k8s.io/leases setpoint setpoint-leader",
    ];
    may_exactly(
        devenv::API_SERVICE_ACCOUNT,
        &[
            "list apps/deployments",
            "watch apps/deployments",
            "list autoscaling/horizontalpodautoscalers",
            "watch autoscaling/horizontalpodautoscalers",
            "list setpoint.dev/replicasetpoints",
            "watch setpoint.dev/replicasetpoints",
            "get setpoint.dev/replicasetpoints team-a web",
            "create setpoint.dev/replicasetpoints team-a",
            "patch setpoint.dev/replicasetpoints team-a web",
            "delete setpoint.dev/replicasetpoints team-a web",
        ],
        &[NEITHER, &only_reconciler].concat(),
    )
    .await;
}

#[tokio::test]
async fn the_reconciler_service_account_scales_reports_and_leads_only() {
    let only_api = [
        "get setpoint.dev/replicasetpoints team-a web",
        "create setpoint.dev/replicasetpoints team-a",
        "patch setpoint.dev/replicasetpoints team-a web",
        "delete setpoint.dev/replicasetpoints team-a web",
        "patch coordination.k8s.io/leases setpoint setpoint-leader",
        "update coordination.k8s.io/leases setpoint someone-elses-lease",
    ];
    may_exactly(
        devenv::RECONCILER_SERVICE_ACCOUNT,
        &[
            "list apps/deployments",
            "watch apps/deployments",
            "update apps/deployments/scale team-a web",
            "list autoscaling/horizontalpodautoscalers",
            "watch autoscaling/horizontalpodautoscalers",
            "list setpoint.dev/replicasetpoints",
            "watch setpoint.dev/replicasetpoints",
            "patch setpoint.dev/replicasetpoints/status team-a web",
            "create events.k8s.io/events team-a",
            "patch events.k8s.io/events team-a web.1",
            "create coordination.k8s.io/leases setpoint",
            "get coordination.k8s.io/leases setpoint setpoint-leader",
            "update coordination.k8s.io/leases setpoint setpoint-leader",
        ],
        &[NEITHER, &only_api].concat(),
    )
    .await;
}

#[tokio::test]
async fn neither_service_account_writes_in_a_protected_namespace() {
    let control_plane = applied().await;
    let admin = control_plane.admin_client().await.expect("admin");
    let name = "setpoint-protected-probe";
    let deployments = Api::<Deployment>::namespaced(admin, "kube-system");
    match deployments
        .create(&PostParams::default(), &testenv::deployment(name, 1))
        .await
    {
        Err(kube::Error::Api(status)) if status.is_already_exists() => {}
        other => {
            other.expect("a Deployment in kube-system");
        }
    }
    let refused = |result: Result<(), kube::Error>, what: &str| match result {
        Err(kube::Error::Api(status)) => assert!(
            status.code == 403 && status.message.contains("protected"),
            "{what}: {}",
            status.message
        ),
        Ok(()) => panic!("{what} succeeded in kube-system"),
        Err(error) => panic!("{what}: {error}"),
    };

    // RBAC allows both cluster-wide; the admission policy refuses them here.
    let reconciler = service_account(devenv::RECONCILER_SERVICE_ACCOUNT).await;
    let scale: k8s_openapi::api::autoscaling::v1::Scale =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": name, "namespace": "kube-system"},
            "spec": {"replicas": 3},
        }))
        .expect("a Scale");
    let scaled = testenv::wait_for("the admission policy to refuse a scale", || async {
        let result = Api::<Deployment>::namespaced(reconciler.clone(), "kube-system")
            .replace_scale(name, &PostParams::default(), &scale)
            .await
            .map(|_| ());
        // Until the policy is loaded, the scale goes through: wait for the refusal.
        result.is_err().then_some(result)
    })
    .await;
    refused(scaled, "the reconciler's scale");

    let api = service_account(devenv::API_SERVICE_ACCOUNT).await;
    let setpoint = setpoint_json("web", 3);
    let object: DynamicObject = serde_json::from_value(setpoint).expect("object");
    let created = setpoints(api, "kube-system")
        .create(&PostParams::default(), &object)
        .await
        .map(|_| ());
    refused(created, "the API's setpoint");
}

fn setpoint_json(name: &str, replicas: i32) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "setpoint.dev/v1alpha1", "kind": "ReplicaSetpoint",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "deploymentUid": "uid-web"},
    })
}

fn setpoints(client: Client, namespace: &str) -> Api<DynamicObject> {
    Api::<DynamicObject>::namespaced_with(
        client,
        namespace,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("setpoint.dev", "v1alpha1", "ReplicaSetpoint"),
            "replicasetpoints",
        ),
    )
}

#[tokio::test]
async fn only_setpoint_and_break_glass_may_write_setpoints_directly() {
    let control_plane = applied().await;
    let namespace = control_plane
        .namespace("side-door")
        .await
        .expect("namespace");
    // A user whose RBAC allows writing setpoints (e.g. a broad "edit" role), and the
    // same RBAC for the break-glass group (the policy adds no rights, it only refuses).
    let admin = control_plane.admin_client().await.expect("admin");
    let writer: ClusterRole = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "setpoint-test-writer"},
        "rules": [{"apiGroups": ["setpoint.dev"], "resources": ["replicasetpoints"],
                   "verbs": ["create", "update", "patch", "get"]}],
    }))
    .expect("role");
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "setpoint-test-writer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "setpoint-test-writer"},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"},
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "setpoint:break-glass"},
        ],
    }))
    .expect("binding");
    for result in [
        Api::<ClusterRole>::all(admin.clone())
            .create(&PostParams::default(), &writer)
            .await
            .map(|_| ()),
        Api::<ClusterRoleBinding>::all(admin)
            .create(&PostParams::default(), &binding)
            .await
            .map(|_| ()),
    ] {
        match result {
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            other => other.expect("RBAC for the test user"),
        }
    }
    let create = |client: Client, name: &'static str, replicas: i32| {
        let api = setpoints(client, &namespace);
        let object = setpoint_json(name, replicas);
        async move {
            let object: DynamicObject = serde_json::from_value(object).expect("object");
            api.create(&PostParams::default(), &object).await
        }
    };

    let mallory = control_plane
        .client_as("mallory", &["system:authenticated"])
        .await
        .expect("client");
    let refused = testenv::wait_for("the admission policy to refuse mallory", || async {
        match create(mallory.clone(), "web", 3).await {
            Err(kube::Error::Api(status)) if status.code == 403 => Some(status),
            Ok(_) => panic!("mallory wrote a setpoint past the API"),
            Err(_) => None,
        }
    })
    .await;
    assert!(
        refused.message.contains("through Setpoint's API"),
        "{}",
        refused.message
    );

    let setpoint_account = service_account(devenv::API_SERVICE_ACCOUNT).await;
    create(setpoint_account.clone(), "api", 3)
        .await
        .expect("setpoint-api's ServiceAccount writes setpoints");
    // Mallory may touch metadata (as the garbage collector removes finalizers), not spec.
    let as_mallory = setpoints(mallory, &namespace);
    let patch = |body: serde_json::Value| {
        let api = as_mallory.clone();
        async move {
            api.patch("api", &PatchParams::default(), &Patch::Merge(body))
                .await
        }
    };
    patch(serde_json::json!({"metadata": {"labels": {"team": "a"}}}))
        .await
        .expect("a metadata-only update passes");
    match patch(serde_json::json!({"spec": {"replicas": 9}})).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{}", status.message),
        other => panic!("mallory changed a setpoint's spec: {other:?}"),
    }
    let break_glass = control_plane
        .client_as("oncall", &["system:authenticated", "setpoint:break-glass"])
        .await
        .expect("client");
    create(break_glass, "worker", 3)
        .await
        .expect("the break-glass group writes setpoints");

    // The schema's bound is the server's default --max-replicas.
    match create(setpoint_account, "huge", 1001).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 422, "{}", status.message),
        Ok(_) => panic!("1001 replicas passed the schema"),
        Err(error) => panic!("{error}"),
    }
}

#[tokio::test]
async fn the_deployments_pass_restricted_pod_security_admission() {
    let control_plane = applied().await;
    control_plane
        .start_controller_manager()
        .expect("controller manager");
    let pods = Api::<Pod>::namespaced(
        control_plane.admin_client().await.expect("admin"),
        "setpoint",
    );
    // The namespace enforces `restricted`: a violating pod template would leave the
    // ReplicaSet unable to create any Pod.
    let created = testenv::wait_for("the ReplicaSets to create Setpoint's Pods", || async {
        let list = pods
            .list(&ListParams::default().labels("app.kubernetes.io/name=setpoint"))
            .await
            .ok()?;
        (list.items.len() == 4).then_some(list.items)
    })
    .await;
    for pod in created {
        let spec = pod.spec.expect("pod spec");
        assert_eq!(spec.automount_service_account_token, Some(false));
    }
}

#[test]
fn client_certificates_are_verified_against_their_own_ca() {
    let deployment: Deployment = parse("api.yaml");
    let pod = deployment
        .spec
        .and_then(|spec| spec.template.spec)
        .expect("pod spec");
    let container = &pod.containers[0];
    let client_ca = container
        .args
        .iter()
        .flatten()
        .find_map(|arg| arg.strip_prefix("--client-ca="))
        .expect("--client-ca");
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|mount| client_ca.starts_with(&format!("{}/", mount.mount_path)))
        .expect("the client CA is on a mounted volume");
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|volume| volume.name == mount.name)
        .expect("volume");
    assert_eq!(
        volume.config_map.as_ref().map(|map| map.name.as_str()),
        Some("setpoint-client-ca"),
        "not the server's Secret: its issuer must not be able to mint client certificates"
    );
}

#[test]
fn the_api_serves_from_two_replicas_and_drains() {
    let spec = parse::<Deployment>("api.yaml").spec.expect("spec");
    assert_eq!(spec.replicas, Some(2), "two replicas serve");
    let pod = spec.template.spec.expect("pod spec");
    assert_eq!(
        pod.containers[0].command,
        Some(vec!["/setpoint-api".into()])
    );
    assert!(
        pod.termination_grace_period_seconds >= Some(35),
        "covers the 5 s delay, the 20 s drain and 10 s of writes"
    );
}

#[test]
fn the_reconciler_runs_two_replicas_without_api_material() {
    let spec = parse::<Deployment>("reconciler.yaml").spec.expect("spec");
    assert_eq!(spec.replicas, Some(2), "one leads, one stays warm");
    let pod = spec.template.spec.expect("pod spec");
    let container = &pod.containers[0];
    assert_eq!(container.command, Some(vec!["/setpoint-reconciler".into()]));
    let mounts: Vec<_> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|mount| mount.name.as_str())
        .collect();
    assert_eq!(
        mounts,
        ["kube-api-access"],
        "no TLS key, client CA or policy"
    );
}

#[test]
fn the_deployments_are_hardened() {
    for file in ["api.yaml", "reconciler.yaml"] {
        hardened(parse(file));
    }
}

fn hardened(deployment: Deployment) {
    let pod = deployment
        .spec
        .and_then(|spec| spec.template.spec)
        .expect("pod spec");
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert!(
        !pod.topology_spread_constraints
            .unwrap_or_default()
            .is_empty()
    );
    let pod_security = pod.security_context.expect("pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert!(pod_security.run_as_user.is_some_and(|uid| uid != 0));
    assert_eq!(
        pod_security.seccomp_profile.map(|profile| profile.type_),
        Some("RuntimeDefault".into())
    );
    let volumes = pod.volumes.unwrap_or_default();
    let token = volumes
        .iter()
        .filter_map(|volume| volume.projected.as_ref())
        .flat_map(|projected| projected.sources.clone().unwrap_or_default())
        .find_map(|source| source.service_account_token)
        .expect("a projected ServiceAccount token");
    assert!(
        token
            .expiration_seconds
            .is_some_and(|seconds| seconds <= 3600)
    );

    let [container] = pod.containers.as_slice() else {
        panic!("one container");
    };
    let security = container
        .security_context
        .clone()
        .expect("container securityContext");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_string()])
    );
    let resources = container.resources.clone().expect("resources");
    assert!(resources.requests.is_some_and(|r| r.contains_key("memory")));
    assert!(resources.limits.is_some_and(|l| l.contains_key("memory")));
    let probe_path = |probe: Option<&k8s_openapi::api::core::v1::Probe>| {
        probe
            .and_then(|p| p.http_get.as_ref())
            .and_then(|g| g.path.clone())
    };
    assert_eq!(
        probe_path(container.readiness_probe.as_ref()).as_deref(),
        Some("/readyz")
    );
    assert_eq!(
        probe_path(container.liveness_probe.as_ref()).as_deref(),
        Some("/livez")
    );
}

#[test]
fn the_network_policy_denies_by_default() {
    let policy: NetworkPolicy = parse("networkpolicy.yaml");
    let spec = policy.spec.expect("spec");
    assert_eq!(
        spec.policy_types,
        Some(vec!["Ingress".to_string(), "Egress".to_string()])
    );
    assert_eq!(
        spec.egress.unwrap_or_default(),
        [],
        "no egress in the base; the API server rule is added per cluster"
    );
    let ingress = spec.ingress.unwrap_or_default();
    assert_eq!(ingress.len(), 2);
    for rule in &ingress {
        let from = rule.from.clone().unwrap_or_default();
        assert!(
            !from.is_empty() && from.iter().all(|peer| peer.namespace_selector.is_some()),
            "every ingress rule names its allowed namespaces"
        );
        assert_eq!(
            rule.ports.as_ref().map(Vec::len),
            Some(1),
            "one port per rule"
        );
    }
}
