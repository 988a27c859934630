//! The read model: how a cached Deployment and its setpoint look to a caller
//! ([`DeploymentView`], with the reconcile state worked out from the setpoint's status),
//! and how listing orders and pages the index. Plain functions over cached objects,
//! unit-tested without a cluster; the gRPC edge turns views into messages.

use std::sync::Arc;

use setpoint_core::DeploymentKey;
use setpoint_k8s_api::resource::Reason;
use setpoint_k8s_api::{ReplicaSetpoint, setpoint_version};
use setpoint_k8s_index::{DeploymentRow, Deployments};

use crate::replicas::query::Query;

/// Where reconciling a Deployment to its setpoint stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconcileState {
    /// No setpoint: Setpoint leaves the Deployment alone.
    Unmanaged,
    /// The reconciler has not processed the setpoint's current generation yet.
    Pending,
    Reconciled,
    ManagedByHpa,
    /// The setpoint was made for an earlier Deployment with this name.
    TargetReplaced,
    Failed,
}

/// A Deployment's replica counts and its setpoint, as of the cache.
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentView {
    pub key: DeploymentKey,
    pub uid: String,
    pub spec_replicas: i32,
    pub ready_replicas: i32,
    pub available_replicas: i32,
    pub updated_replicas: i32,
    /// The setpoint's desired replicas; `None` when unmanaged.
    pub desired_replicas: Option<i32>,
    pub state: ReconcileState,
    pub message: String,
    /// The setpoint's version ([`setpoint_version`]); empty when unmanaged.
    pub version: String,
}

impl DeploymentView {
    /// How a Deployment, with its row and setpoint, looks to a caller.
    pub fn of(deployment: &DeploymentRow, setpoint: Option<&ReplicaSetpoint>) -> Self {
        let (state, message) = reconcile_state(deployment, setpoint);
        Self {
            key: deployment.key.clone(),
            uid: deployment.uid.to_string(),
            spec_replicas: deployment.spec_replicas,
            ready_replicas: deployment.ready_replicas,
            available_replicas: deployment.available_replicas,
            updated_replicas: deployment.updated_replicas,
            desired_replicas: setpoint.map(|setpoint| setpoint.spec.replicas),
            state,
            message,
            version: setpoint.map(setpoint_version).unwrap_or_default(),
        }
    }
}

fn reconcile_state(
    deployment: &DeploymentRow,
    setpoint: Option<&ReplicaSetpoint>,
) -> (ReconcileState, String) {
    let Some(setpoint) = setpoint else {
        return (ReconcileState::Unmanaged, String::new());
    };
    if *deployment.uid != setpoint.spec.deployment_uid {
        return (
            ReconcileState::TargetReplaced,
            "the setpoint was made for an earlier Deployment with this name; set replicas \
             again to manage this one"
                .into(),
        );
    }
    let observed = setpoint
        .status
        .as_ref()
        .and_then(|status| status.observed_generation);
    let condition = setpoint.reconciled_condition();
    match condition {
        Some(condition) if observed == setpoint.metadata.generation => {
            let state = match Reason::parse(&condition.reason) {
                Some(Reason::Reconciled) if condition.status == "True" => {
                    ReconcileState::Reconciled
                }
                Some(Reason::ManagedByHpa) => ReconcileState::ManagedByHpa,
                Some(Reason::TargetReplaced) => ReconcileState::TargetReplaced,
                _ => ReconcileState::Failed,
            };
            (state, condition.message.clone())
        }
        _ => (
            ReconcileState::Pending,
            "the reconciler has not processed this setpoint yet".into(),
        ),
    }
}

/// What ListDeployments selects.
pub struct ListQuery {
    pub query: Query,
    pub page_size: usize,
    /// Only keys after this one (from the page token).
    pub after: Option<DeploymentKey>,
}

/// One page of `deployments` in (namespace, name) order, and the key to continue after
/// when more match. Visits only the namespaces the query and scope allow, from the
/// cursor on, and with a selector that requires labels, only the rows carrying them.
pub fn list_page(
    deployments: &Deployments,
    query: &ListQuery,
) -> (Vec<Arc<DeploymentRow>>, Option<DeploymentKey>) {
    let namespaces = query.query.namespaces();
    let selector = &query.query.selector;
    let mut page = deployments.scan(
        namespaces.as_ref(),
        query.after.as_ref(),
        query.page_size + 1,
        &selector.required_labels(),
        |deployment| selector.matches(&deployment.labels),
    );
    let more = page.len() > query.page_size;
    page.truncate(query.page_size);
    let next = more
        .then(|| page.last().map(|row| row.key.clone()))
        .flatten();
    (page, next)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use kube::api::ObjectMeta;
    use kube::runtime::watcher::Event;
    use setpoint_k8s_api::{ReplicaSetpointSpec, ReplicaSetpointStatus};

    use setpoint_core::Scope;

    use super::*;
    use crate::replicas::query::{decode_page_token, encode_page_token};

    fn deployment(namespace: &str, name: &str, app: &str) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                labels: Some(BTreeMap::from([("app".into(), app.into())])),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(2),
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        }
    }

    fn index(deployments: impl IntoIterator<Item = Deployment>) -> Deployments {
        let index = Deployments::default();
        for deployment in deployments {
            index.apply(Event::Apply(deployment));
        }
        index
    }

    fn row(deployment: &Deployment) -> DeploymentRow {
        DeploymentRow::from(deployment)
    }

    fn query(namespace: &str, selector: &str, page_size: usize) -> ListQuery {
        ListQuery {
            query: Query {
                namespace: namespace.into(),
                scope: Scope::All,
                selector: crate::replicas::selector::parse(selector).expect("selector"),
                fingerprint: "q".into(),
            },
            page_size,
            after: None,
        }
    }

    fn names(page: &[Arc<DeploymentRow>]) -> Vec<String> {
        page.iter().map(|row| row.key.to_string()).collect()
    }

    #[test]
    fn pages_walk_every_match_once_in_order() {
        let all = index(["b/x", "a/z", "a/y", "c/w", "a/x"].iter().map(|key| {
            let (namespace, name) = key.split_once('/').expect("key");
            deployment(namespace, name, "web")
        }));
        let mut query = query("", "", 2);
        let mut seen = Vec::new();
        loop {
            let (page, next) = list_page(&all, &query);
            assert!(page.len() <= 2);
            seen.extend(names(&page));
            let Some(next) = next else { break };
            let token = encode_page_token("q", &next);
            query.after = decode_page_token(&token, "q").expect("round trip");
        }
        assert_eq!(seen, ["a/x", "a/y", "a/z", "b/x", "c/w"]);
    }

    #[test]
    fn namespace_and_selector_filter() {
        let all = index([
            deployment("a", "web", "web"),
            deployment("a", "db", "db"),
            deployment("b", "web", "web"),
        ]);
        assert_eq!(
            names(&list_page(&all, &query("a", "", 10)).0),
            ["a/db", "a/web"]
        );
        assert_eq!(
            names(&list_page(&all, &query("", "app=web", 10)).0),
            ["a/web", "b/web"]
        );
        let (page, next) = list_page(&all, &query("b", "app=web", 1));
        assert_eq!((names(&page), next), (vec!["b/web".to_string()], None));
    }

    #[test]
    fn a_scoped_caller_lists_only_its_namespaces() {
        let all = index([
            deployment("a", "web", "web"),
            deployment("b", "web", "web"),
            deployment("c", "web", "web"),
        ]);
        let mut scoped = query("", "", 1);
        scoped.query.scope = Scope::Only(Arc::new(["a".into(), "c".into()].into()));
        let (page, next) = list_page(&all, &scoped);
        assert_eq!(names(&page), ["a/web"]);
        scoped.after = next;
        let (page, next) = list_page(&all, &scoped);
        assert_eq!((names(&page), next), (vec!["c/web".to_string()], None));
    }

    fn setpoint(uid: &str, generation: i64, status: Option<(i64, &str, &str)>) -> ReplicaSetpoint {
        let mut setpoint = ReplicaSetpoint::new(
            "web",
            ReplicaSetpointSpec {
                replicas: 5,
                deployment_uid: uid.into(),
            },
        );
        setpoint.metadata.uid = Some("setpoint-uid".into());
        setpoint.metadata.generation = Some(generation);
        setpoint.status = status.map(|(observed, status, reason)| ReplicaSetpointStatus {
            observed_generation: Some(observed),
            applied_replicas: Some(5),
            conditions: vec![Condition {
                type_: "Reconciled".into(),
                status: status.into(),
                reason: reason.into(),
                message: format!("{reason} message"),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                observed_generation: Some(observed),
            }],
        });
        setpoint
    }

    #[test]
    fn reconcile_state_follows_the_setpoint_status() {
        let web = row(&deployment("a", "web", "web"));
        let state = |setpoint: Option<&ReplicaSetpoint>| DeploymentView::of(&web, setpoint).state;
        assert_eq!(state(None), ReconcileState::Unmanaged);
        assert_eq!(
            state(Some(&setpoint("uid-web", 1, None))),
            ReconcileState::Pending
        );
        assert_eq!(
            state(Some(&setpoint(
                "uid-web",
                2,
                Some((1, "True", "Reconciled"))
            ))),
            ReconcileState::Pending,
            "a status for an older generation is not current"
        );
        assert_eq!(
            state(Some(&setpoint(
                "uid-web",
                2,
                Some((2, "True", "Reconciled"))
            ))),
            ReconcileState::Reconciled
        );
        assert_eq!(
            state(Some(&setpoint(
                "uid-web",
                2,
                Some((2, "False", "ManagedByHPA"))
            ))),
            ReconcileState::ManagedByHpa
        );
        assert_eq!(
            state(Some(&setpoint(
                "uid-web",
                2,
                Some((2, "False", "ScaleFailed"))
            ))),
            ReconcileState::Failed
        );
        assert_eq!(
            state(Some(&setpoint(
                "uid-old",
                2,
                Some((2, "True", "Reconciled"))
            ))),
            ReconcileState::TargetReplaced
        );
    }

    #[test]
    fn replicas_report_spec_desired_and_version() {
        let web = row(&deployment("a", "web", "web"));
        let answer = DeploymentView::of(&web, Some(&setpoint("uid-web", 3, None)));
        assert_eq!(answer.spec_replicas, 2);
        assert_eq!(answer.desired_replicas, Some(5));
        assert_eq!(answer.version, "setpoint-uid/3");
        assert_eq!(answer.uid, "uid-web");
        let unmanaged = DeploymentView::of(&web, None);
        assert_eq!(
            (unmanaged.desired_replicas, unmanaged.version),
            (None, String::new())
        );
    }
}
