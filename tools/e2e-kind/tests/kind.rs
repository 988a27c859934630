//! End to end on the two-node KIND cluster `KIND_OFFLINE=1 make deploy` creates, with
//! kube-router enforcing NetworkPolicy. `make e2e-kind` runs these one at a time; `make
//! test` lists them as ignored.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use e2e_kind::{
    API_PODS, CLIENT_LABEL, Cluster, METRICS_LABEL, RECONCILER_PODS, SETPOINT, http_get, is_ready,
    run, setpointctl, wait_for,
};
use k8s_openapi::api::authorization::v1::{SelfSubjectRulesReview, SelfSubjectRulesReviewSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;

/// The server's default --lease-renew-interval plus a margin: a takeover after the
/// leader released the Lease comes within one check of a peer; one after expiry (the
/// default --lease-duration, 15 s, from the last renewal) cannot come this early.
const HANDOVER: Duration = Duration::from_secs(8);

fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.node_name.clone())
        .unwrap_or_default()
}

fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn ip_of(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|status| status.pod_ip.clone())
        .unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs the KIND cluster of `KIND_OFFLINE=1 make deploy`: run `make e2e-kind`"]
async fn both_replicas_run_hardened_on_different_nodes() -> anyhow::Result<()> {
    let cluster = Cluster::connect().await?;
    let mut pods = Vec::new();
    for selector in [API_PODS, RECONCILER_PODS] {
        let replicas = cluster.setpoint_pods(selector, 2).await?;
        let nodes: BTreeSet<String> = replicas.iter().map(node_of).collect();
        ensure!(
            nodes.len() == 2,
            "both replicas of {selector} run on {nodes:?}"
        );
        pods.extend(replicas);
    }
    for pod in &pods {
        let status = pod.status.as_ref().context("pod status")?;
        let containers = status.container_statuses.as_deref().unwrap_or_default();
        ensure!(
            !containers.is_empty(),
            "{} reports no containers",
            name_of(pod)
        );
        for container in containers {
            ensure!(
                container.restart_count == 0,
                "{} restarted {} times",
                name_of(pod),
                container.restart_count
            );
            // What the runtime really runs, not what the manifest asks for.
            let id = container.container_id.as_deref().unwrap_or_default();
            let id = id.rsplit("://").next().unwrap_or_default();
            let inspect: serde_json::Value =
                serde_json::from_str(&cluster.on_node(&node_of(pod), &["crictl", "inspect", id])?)?;
            let spec = &inspect["info"]["runtimeSpec"];
            ensure!(
                spec["process"]["user"]["uid"] == 65532,
                "{} runs as uid {}",
                name_of(pod),
                spec["process"]["user"]["uid"]
            );
            ensure!(
                spec["process"]["user"]["gid"] == 65532,
                "{} runs as gid {}",
                name_of(pod),
                spec["process"]["user"]["gid"]
            );
            ensure!(
                spec["root"]["readonly"] == true,
                "{}: root filesystem is writable",
                name_of(pod)
            );
            // The runtime leaves an empty set out (null).
            let capabilities = &spec["process"]["capabilities"];
            for set in ["bounding", "effective", "permitted"] {
                ensure!(
                    capabilities[set].is_null()
                        || capabilities[set].as_array().is_some_and(Vec::is_empty),
                    "{} has {set} capabilities {}",
                    name_of(pod),
                    capabilities[set]
                );
            }
            ensure!(
                spec["process"]["noNewPrivileges"] == true,
                "{} may gain privileges",
                name_of(pod)
            );
        }
    }
    Ok(())
}

/// Creates `namespace/web`, sets it to 3 with setpointctl through `server`, waits for 3
/// Ready pods, scales it to 1 with kubectl and waits for Setpoint to revert that.
async fn set_converges_and_external_scaling_is_reverted(
    cluster: &Cluster,
    server: &str,
    namespace: &str,
) -> anyhow::Result<()> {
    cluster.workload(namespace, "web", 1)?;
    let deployment = format!("{namespace}/web");
    let list = run(setpointctl("operator", server, &["list", "-n", namespace])?)?;
    ensure!(
        list.contains("web"),
        "setpointctl list does not show web:\n{list}"
    );
    run(setpointctl("operator", server, &["set", &deployment, "3"])?)?;
    wait_for(
        "web at 3 Ready replicas",
        Duration::from_secs(90),
        || async { Ok((cluster.spec_replicas(namespace, "web")? == "3/3").then_some(())) },
    )
    .await?;
    cluster.kubectl(&[
        "-n",
        namespace,
        "scale",
        "deployment",
        "web",
        "--replicas",
        "1",
    ])?;
    wait_for(
        "Setpoint to revert kubectl scale",
        Duration::from_secs(30),
        || async {
            Ok(cluster
                .spec_replicas(namespace, "web")?
                .starts_with("3/")
                .then_some(()))
        },
    )
    .await?;
    let get: serde_json::Value = serde_json::from_str(&run(setpointctl(
        "operator",
        server,
        &["--output", "json", "get", &deployment],
    )?)?)?;
    let row = &get[0];
    ensure!(
        row["desiredReplicas"] == 3 && row["specReplicas"] == 3,
        "setpointctl get shows {row}"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs the KIND cluster of `KIND_OFFLINE=1 make deploy`: run `make e2e-kind`"]
async fn setpointctl_through_the_service_sets_and_reverts() -> anyhow::Result<()> {
    let cluster = Cluster::connect().await?;
    cluster.setpoint_pods(API_PODS, 2).await?;
    let namespace = cluster.namespace("e2e-cli", &[])?;
    let forward = cluster.port_forward(SETPOINT, "service/setpoint", 8443)?;
    let server = format!("https://localhost:{}", forward.port);
    set_converges_and_external_scaling_is_reverted(&cluster, &server, &namespace.name).await
}

/// The `(timestamp, message)` of the JSON log lines whose message is in `messages`.
fn leadership_events(lines: &[String], messages: &[&str]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|event| {
            let message = event["message"].as_str()?;
            messages.contains(&message).then(|| {
                (
                    event["timestamp"].as_str().unwrap_or_default().to_string(),
                    message.to_string(),
                )
            })
        })
        .collect()
}

fn leader_gauge(metrics: &str) -> Option<u8> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("setpoint_leader "))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test]
#[ignore = "needs the KIND cluster of `KIND_OFFLINE=1 make deploy`: run `make e2e-kind`"]
async fn another_replica_takes_over_when_the_leader_pod_is_deleted() -> anyhow::Result<()> {
    let cluster = Cluster::connect().await?;
    let pods = cluster.setpoint_pods(RECONCILER_PODS, 2).await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), SETPOINT);
    let holder = || async {
        let lease = leases.get("setpoint-leader").await?;
        Ok::<_, anyhow::Error>(
            lease
                .spec
                .and_then(|spec| spec.holder_identity)
                .unwrap_or_default(),
        )
    };
    let leader = wait_for("a leader", Duration::from_secs(30), || async {
        let holder = holder().await?;
        Ok(pods
            .iter()
            .any(|pod| name_of(pod) == holder)
            .then_some(holder))
    })
    .await?;
    let mut leader_logs = cluster.follow_logs(SETPOINT, &leader)?;

    // The leader releases the Lease as its shutdown starts; the other replica, or the
    // Deployment's replacement for the deleted pod, takes it.
    let deleted = Instant::now();
    cluster.kubectl(&["-n", SETPOINT, "delete", "pod", &leader, "--wait=false"])?;
    let mut holders = vec![leader.clone()];
    let successor = loop {
        ensure!(
            deleted.elapsed() < HANDOVER,
            "no other replica took the Lease within {HANDOVER:?}; holders seen: {holders:?}"
        );
        let now = holder().await?;
        if holders.last() != Some(&now) {
            holders.push(now.clone());
        }
        if !now.is_empty() && now != leader {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = deleted.elapsed();

    // No overlap: the old leader stopped leading before its successor started.
    let old = leadership_events(
        &leader_logs.finish(Duration::from_secs(60))?,
        &["stopped leading", "became leader"],
    );
    let new_logs = cluster.kubectl(&["-n", SETPOINT, "logs", &successor])?;
    let new = leadership_events(
        &new_logs.lines().map(str::to_string).collect::<Vec<_>>(),
        &["became leader", "stopped leading"],
    );
    let stopped = old
        .iter()
        .rev()
        .find(|(_, m)| m == "stopped leading")
        .context("old leader never logged `stopped leading`")?;
    let became = new
        .iter()
        .rev()
        .find(|(_, m)| m == "became leader")
        .context("successor never logged `became leader`")?;
    ensure!(
        stopped.0 <= became.0,
        "overlap: old leader stopped at {}, successor became leader at {}",
        stopped.0,
        became.0
    );
    ensure!(
        new.last().is_some_and(|(_, m)| m == "became leader"),
        "successor's leadership events: {new:?}"
    );

    // Exactly one leader among the running replicas, by their own metric.
    let pods = cluster.setpoint_pods(RECONCILER_PODS, 2).await?;
    let mut leading = Vec::new();
    for pod in &pods {
        let forward = cluster.port_forward(SETPOINT, &format!("pod/{}", name_of(pod)), 8081)?;
        let metrics = http_get(forward.port, "/metrics")?;
        if leader_gauge(&metrics).context("no setpoint_leader metric")? == 1 {
            leading.push(name_of(pod));
        }
    }
    ensure!(
        leading == [successor.clone()],
        "leaders by metric: {leading:?}, expected only {successor}"
    );
    println!("Lease holder {leader} → {successor} in {took:?} (holders seen: {holders:?})");

    // And the new leader reconciles.
    let namespace = cluster.namespace("e2e-handover", &[])?;
    let forward = cluster.port_forward(SETPOINT, "service/setpoint", 8443)?;
    set_converges_and_external_scaling_is_reverted(
        &cluster,
        &format!("https://localhost:{}", forward.port),
        &namespace.name,
    )
    .await
}

#[tokio::test]
#[ignore = "needs the KIND cluster of `KIND_OFFLINE=1 make deploy`: run `make e2e-kind`"]
async fn network_policy_limits_setpoint_egress_to_the_api_server() -> anyhow::Result<()> {
    let cluster = Cluster::connect().await?;
    // A listener on this machine's side of the kind Docker network: outside the cluster.
    let gateway = run({
        let mut docker = std::process::Command::new("docker");
        docker.args([
            "network",
            "inspect",
            "kind",
            "-f",
            "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
        ]);
        docker
    })?;
    let gateway = gateway
        .split_whitespace()
        .find(|a| a.contains('.'))
        .context("kind network gateway")?
        .to_string();
    let listener = TcpListener::bind((gateway.as_str(), 0))?;
    let outside = listener.local_addr()?.port();
    let dns = cluster.kubectl(&[
        "-n",
        "kube-system",
        "get",
        "service",
        "kube-dns",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])?;
    let api = cluster.kubectl(&[
        "-n",
        "default",
        "get",
        "service",
        "kubernetes",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])?;

    // A control pod no policy selects, and a pod with Setpoint's labels.
    let control = cluster.namespace("e2e-control", &[])?;
    cluster.probe_pod(&control.name, "probe", &[]).await?;
    let _probe = cluster.on_drop(&["-n", SETPOINT, "delete", "pod", "e2e-probe", "--wait=false"]);
    cluster
        .probe_pod(
            SETPOINT,
            "e2e-probe",
            &[("app.kubernetes.io/name", SETPOINT)],
        )
        .await?;
    {
        for (what, host, port) in [
            ("the API server", api.as_str(), 443),
            ("CoreDNS", dns.as_str(), 53),
            ("this machine", gateway.as_str(), outside),
        ] {
            ensure!(
                cluster.connects(&control.name, "probe", host, port)?,
                "control pod cannot reach {what} at {host}:{port}"
            );
        }
        ensure!(
            cluster.connects(SETPOINT, "e2e-probe", &api, 443)?,
            "a Setpoint pod cannot reach the API server"
        );
        for (what, host, port) in [
            ("CoreDNS (another in-cluster Service)", dns.as_str(), 53),
            ("an address outside the cluster", gateway.as_str(), outside),
        ] {
            ensure!(
                !cluster.connects(SETPOINT, "e2e-probe", host, port)?,
                "NetworkPolicy not enforced: a pod with Setpoint's labels reached {what} at {host}:{port}, which the control pod also reaches"
            );
        }
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs the KIND cluster of `KIND_OFFLINE=1 make deploy`: run `make e2e-kind`"]
async fn network_policy_admits_only_labelled_namespaces() -> anyhow::Result<()> {
    let cluster = Cluster::connect().await?;
    let pods = cluster.setpoint_pods(API_PODS, 2).await?;
    let client = cluster.namespace("e2e-client", &[CLIENT_LABEL])?;
    let monitoring = cluster.namespace("e2e-monitoring", &[METRICS_LABEL])?;
    let other = cluster.namespace("e2e-other", &[])?;
    for namespace in [&client, &monitoring, &other] {
        cluster.probe_pod(&namespace.name, "probe", &[]).await?;
    }
    // Both pods: one on the probes' node, one across nodes.
    for pod in &pods {
        let ip = ip_of(pod);
        for (namespace, port, allowed) in [
            (&client, 8443, true),
            (&client, 8081, false),
            (&monitoring, 8081, true),
            (&monitoring, 8443, false),
            (&other, 8443, false),
            (&other, 8081, false),
        ] {
            let opened = cluster.connects(&namespace.name, "probe", &ip, port)?;
            ensure!(
                opened == allowed,
                "{}: namespace {} {} port {port} of {} on {}",
                if allowed {
                    "Setpoint not serving"
                } else {
                    "NetworkPolicy not enforced"
                },
                namespace.name,
                if opened { "opened" } else { "could not open" },
                name_of(pod),
                node_of(pod)
            );
        }
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs the KIND cluster of `KIND_OFFLINE=1 make deploy`: run `make e2e-kind`"]
async fn a_rolling_restart_fails_no_call() -> anyhow::Result<()> {
    let cluster = Cluster::connect().await?;
    cluster.setpoint_pods(API_PODS, 2).await?;
    let namespace = cluster.namespace("e2e-rollout", &[])?;
    cluster.workload(&namespace.name, "web", 1)?;
    // From this machine through a NodePort: kube-proxy spreads new connections over the
    // Service's ready endpoints, as it does for in-cluster clients. The extra policy
    // admits that port from the nodes for this test only.
    let _nodeport = cluster.on_drop(&[
        "-n",
        SETPOINT,
        "delete",
        "service/e2e-nodeport",
        "networkpolicy/e2e-nodeport",
        "--ignore-not-found",
    ]);
    cluster.apply(&format!(
        "apiVersion: v1
kind: Service
metadata: {{name: e2e-nodeport, namespace: {SETPOINT}}}
spec:
  type: NodePort
  selector: {{app.kubernetes.io/name: setpoint}}
  ports: [{{port: 8443, targetPort: grpc}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: e2e-nodeport, namespace: {SETPOINT}}}
spec:
  podSelector: {{matchLabels: {{app.kubernetes.io/name: setpoint}}}}
  policyTypes: [Ingress]
  ingress: [{{ports: [{{port: 8443}}]}}]
"
    ))?;
    {
        let port = cluster.kubectl(&[
            "-n",
            SETPOINT,
            "get",
            "service",
            "e2e-nodeport",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])?;
        let node = cluster.kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
        ])?;
        let server = format!("https://{node}:{port}");
        let deployment = format!("{}/web", namespace.name);
        let get = move || {
            let mut command = setpointctl("viewer", &server, &["get", &deployment])?;
            command.env("SETPOINT_TLS_SERVER_NAME", "setpoint.setpoint.svc");
            run(command)
        };
        wait_for("the NodePort to answer", Duration::from_secs(30), || {
            let get = get.clone();
            async move { Ok(get().ok()) }
        })
        .await?;

        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let caller = {
            let (stop, calls) = (stop.clone(), calls.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    calls.fetch_add(1, Ordering::Relaxed);
                    if let Err(error) = get() {
                        failures.push(format!("{error:#}"));
                    }
                }
                failures
            })
        };
        cluster.kubectl(&[
            "-n",
            SETPOINT,
            "rollout",
            "restart",
            "deployment/setpoint-api",
        ])?;
        cluster.kubectl(&[
            "-n",
            SETPOINT,
            "rollout",
            "status",
            "deployment/setpoint-api",
            "--timeout=300s",
        ])?;
        // Until the replaced pods have exited, not only until the new ones are Ready.
        let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), SETPOINT);
        wait_for("the old pods to exit", Duration::from_secs(60), || async {
            let all = pods
                .list(&kube::api::ListParams::default().labels(API_PODS))
                .await?
                .items;
            Ok((all.len() == 2 && all.iter().all(is_ready)).then_some(()))
        })
        .await?;
        stop.store(true, Ordering::Relaxed);
        let failures = caller.join().expect("caller thread");
        let calls = calls.load(Ordering::Relaxed);
        println!(
            "{calls} GetReplicas calls during the rolling restart, {} failed",
            failures.len()
        );
        ensure!(calls >= 50, "only {calls} calls made during the restart");
        ensure!(
            failures.is_empty(),
            "{} of {calls} calls failed; first: {}",
            failures.len(),
            failures[0]
        );
    }
    Ok(())
}

/// `(group, resource, verb, name)` for every rule, `*` where a rule names none.
fn rules(review: SelfSubjectRulesReview) -> BTreeSet<(String, String, String, String)> {
    let status = review.status.unwrap_or_default();
    let mut set = BTreeSet::new();
    for rule in status.resource_rules {
        for group in rule.api_groups.unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                for verb in &rule.verbs {
                    let names = rule
                        .resource_names
                        .clone()
                        .unwrap_or_else(|| vec!["*".into()]);
                    for name in names {
                        set.insert((group.clone(), resource.clone(), verb.clone(), name));
                    }
                }
            }
        }
    }
    // What every authenticated user may do: review itself.
    set.retain(|(group, resource, verb, _)| {
        !(matches!(
            group.as_str(),
            "authorization.k8s.io" | "authentication.k8s.io"
        ) && resource.starts_with("selfsubject")
            && verb == "create")
    });
    set
}

fn expected(rules: &[(&str, &str, &[&str], &str)]) -> BTreeSet<(String, String, String, String)> {
    let mut set = BTreeSet::new();
    for (group, resource, verbs, name) in rules {
        for verb in *verbs {
            set.insert((
                group.to_string(),
                resource.to_string(),
                verb.to_string(),
                name.to_string(),
            ));
        }
    }
    set
}

#[tokio::test]
#[ignore = "needs the KIND cluster of `KIND_OFFLINE=1 make deploy`: run `make e2e-kind`"]
async fn each_service_account_may_do_what_its_process_needs_and_nothing_more() -> anyhow::Result<()>
{
    let cluster = Cluster::connect().await?;
    let watch_cache: &[Rule] = &[
        ("apps", "deployments", &["list", "watch"], "*"),
        (
            "autoscaling",
            "horizontalpodautoscalers",
            &["list", "watch"],
            "*",
        ),
    ];
    let api: &[Rule] = &[(
        "setpoint.dev",
        "replicasetpoints",
        &["get", "list", "watch", "create", "patch", "delete"],
        "*",
    )];
    let reconciler: &[Rule] = &[
        ("setpoint.dev", "replicasetpoints", &["list", "watch"], "*"),
        ("apps", "deployments/scale", &["update"], "*"),
        ("setpoint.dev", "replicasetpoints/status", &["patch"], "*"),
        ("events.k8s.io", "events", &["create", "patch"], "*"),
    ];
    let leader_election: &[Rule] = &[
        ("coordination.k8s.io", "leases", &["create"], "*"),
        (
            "coordination.k8s.io",
            "leases",
            &["get", "update"],
            "setpoint-leader",
        ),
    ];
    for (pods, account, cluster_wide, in_setpoint) in [
        (
            API_PODS,
            "setpoint-api",
            [watch_cache, api].concat(),
            Vec::new(),
        ),
        (
            RECONCILER_PODS,
            "setpoint-reconciler",
            [watch_cache, reconciler].concat(),
            leader_election.to_vec(),
        ),
    ] {
        // The pods really run as this ServiceAccount.
        for pod in cluster.setpoint_pods(pods, 2).await? {
            let running = pod
                .spec
                .as_ref()
                .and_then(|spec| spec.service_account_name.clone());
            ensure!(
                running.as_deref() == Some(account),
                "{} runs as {running:?}",
                name_of(&pod)
            );
        }
        exact_rights(&cluster, account, &cluster_wide, &in_setpoint).await?;
    }
    Ok(())
}

/// `(group, resource, verbs, resource name)`.
type Rule = (
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static str,
);

/// `account`'s rights, by a rules review, are `cluster_wide` everywhere, plus
/// `in_setpoint` in Setpoint's namespace, exactly.
async fn exact_rights(
    cluster: &Cluster,
    account: &str,
    cluster_wide: &[Rule],
    in_setpoint: &[Rule],
) -> anyhow::Result<()> {
    let client = cluster
        .client_as(
            &format!("system:serviceaccount:setpoint:{account}"),
            &[
                "system:serviceaccounts",
                "system:serviceaccounts:setpoint",
                "system:authenticated",
            ],
        )
        .await?;
    let reviews: Api<SelfSubjectRulesReview> = Api::all(client);
    for (namespace, want) in [
        (
            SETPOINT,
            expected(cluster_wide)
                .union(&expected(in_setpoint))
                .cloned()
                .collect(),
        ),
        ("default", expected(cluster_wide)),
    ] {
        let review = SelfSubjectRulesReview {
            spec: SelfSubjectRulesReviewSpec {
                namespace: Some(namespace.into()),
            },
            ..SelfSubjectRulesReview::default()
        };
        let review = reviews.create(&PostParams::default(), &review).await?;
        let status = review.status.as_ref().context("review status")?;
        ensure!(
            !status.incomplete,
            "the rules review of {namespace} is incomplete: {:?}",
            status.evaluation_error
        );
        let got = rules(review);
        let extra: Vec<_> = got.difference(&want).collect();
        let missing: Vec<_> = want.difference(&got).collect();
        ensure!(
            extra.is_empty() && missing.is_empty(),
            "{account} in {namespace}: extra rights {extra:?}, missing {missing:?}"
        );
    }
    Ok(())
}
