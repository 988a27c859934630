//! The read model: how a cached Deployment and its setpoint look to a caller
//! ([`DeploymentView`], with the reconcile state worked out from the setpoint's status),
//! and how listing filters, orders and pages the cache. Plain functions over cached
//! objects, unit-tested without a cluster; the gRPC edge turns views into messages.

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kube::core::{Selector, SelectorExt};
use setpoint_core::key::{validate_name, validate_namespace};
use setpoint_core::{DeploymentKey, Error, Scope};
use setpoint_k8s::index::{DeploymentRow, Deployments};
use setpoint_k8s::{ReplicaSetpoint, setpoint_version};
use sha2::{Digest, Sha256};

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

pub fn view(
    key: DeploymentKey,
    deployment: &DeploymentRow,
    setpoint: Option<&ReplicaSetpoint>,
) -> DeploymentView {
    let (state, message) = reconcile_state(deployment, setpoint);
    DeploymentView {
        key,
        uid: deployment.uid.clone(),
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

fn reconcile_state(
    deployment: &DeploymentRow,
    setpoint: Option<&ReplicaSetpoint>,
) -> (ReconcileState, String) {
    let Some(setpoint) = setpoint else {
        return (ReconcileState::Unmanaged, String::new());
    };
    if deployment.uid != setpoint.spec.deployment_uid {
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
            let state = match condition.reason.as_str() {
                "Reconciled" if condition.status == "True" => ReconcileState::Reconciled,
                "ManagedByHPA" => ReconcileState::ManagedByHpa,
                "TargetReplaced" => ReconcileState::TargetReplaced,
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
    /// Empty for all namespaces (that `scope` allows).
    pub namespace: String,
    pub scope: Scope,
    pub selector: Selector,
    pub page_size: usize,
    /// Only keys after this one (from the page token).
    pub after: Option<DeploymentKey>,
}

/// One page of `deployments` in (namespace, name) order, and the key to continue after
/// when more match. Visits only the namespaces the query and scope allow, from the
/// cursor on.
pub fn list_page(
    deployments: &Deployments,
    query: &ListQuery,
) -> (
    Vec<(DeploymentKey, Arc<DeploymentRow>)>,
    Option<DeploymentKey>,
) {
    let one;
    let namespaces = match &query.scope {
        _ if !query.namespace.is_empty() => {
            one = BTreeSet::from_iter(
                query
                    .scope
                    .allows(&query.namespace)
                    .then(|| query.namespace.clone()),
            );
            Some(&one)
        }
        Scope::All => None,
        Scope::Only(namespaces) => Some(&**namespaces),
    };
    let mut page = deployments.scan(
        namespaces,
        query.after.as_ref(),
        query.page_size + 1,
        |deployment| query.selector.matches(&deployment.labels),
    );
    let more = page.len() > query.page_size;
    page.truncate(query.page_size);
    let next = more
        .then(|| page.last().map(|(key, _)| key.clone()))
        .flatten();
    (page, next)
}

/// What a page token is bound to: the namespace and selector of its query and the
/// caller's scope, so that a token continues only the listing it came from. A digest,
/// not a secret: a forged token only moves the cursor of the caller's own query.
pub fn query_fingerprint(namespace: &str, label_selector: &str, scope: &Scope) -> String {
    let scope = match scope {
        Scope::All => "*".to_owned(),
        Scope::Only(namespaces) => namespaces.iter().cloned().collect::<Vec<_>>().join(","),
    };
    let digest = Sha256::digest(format!("{namespace}\n{label_selector}\n{scope}"));
    digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The opaque token of the page after `after`, for the query `fingerprint`.
pub fn encode_page_token(fingerprint: &str, after: &DeploymentKey) -> String {
    URL_SAFE_NO_PAD.encode(format!("{fingerprint}:{after}"))
}

/// Where the page of `token` starts, if it was issued for the query `fingerprint`.
pub fn decode_page_token(token: &str, fingerprint: &str) -> Result<Option<DeploymentKey>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || Error::InvalidPageToken;
    let text = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(invalid)?;
    let (bound, key) = text.split_once(':').ok_or_else(invalid)?;
    if bound != fingerprint {
        return Err(Error::PageTokenOfAnotherQuery);
    }
    let (namespace, name) = key.split_once('/').ok_or_else(invalid)?;
    validate_namespace(namespace).map_err(|_| invalid())?;
    validate_name("name", name).map_err(|_| invalid())?;
    Ok(Some(DeploymentKey {
        namespace: namespace.into(),
        name: name.into(),
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use kube::api::ObjectMeta;
    use kube::runtime::watcher::Event;
    use setpoint_k8s::{ReplicaSetpointSpec, ReplicaSetpointStatus, key_of};

    use super::*;

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

    fn row(deployment: &Deployment) -> (DeploymentKey, DeploymentRow) {
        (key_of(deployment), DeploymentRow::from(deployment))
    }

    fn query(namespace: &str, selector: &str, page_size: usize) -> ListQuery {
        ListQuery {
            namespace: namespace.into(),
            scope: Scope::All,
            selector: crate::selector::parse(selector).expect("selector"),
            page_size,
            after: None,
        }
    }

    fn names(page: &[(DeploymentKey, Arc<DeploymentRow>)]) -> Vec<String> {
        page.iter().map(|(key, _)| key.to_string()).collect()
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
        scoped.scope = Scope::Only(Arc::new(["a".into(), "c".into()].into()));
        let (page, next) = list_page(&all, &scoped);
        assert_eq!(names(&page), ["a/web"]);
        scoped.after = next;
        let (page, next) = list_page(&all, &scoped);
        assert_eq!((names(&page), next), (vec!["c/web".to_string()], None));
    }

    #[test]
    fn garbage_page_tokens_are_invalid_arguments() {
        for token in ["%%%", "bm8tc2xhc2g", &URL_SAFE_NO_PAD.encode("Bad/NAME")] {
            assert!(
                matches!(decode_page_token(token, "q"), Err(Error::InvalidPageToken)),
                "{token}"
            );
        }
        assert_eq!(decode_page_token("", "q").ok(), Some(None));
    }

    #[test]
    fn a_page_token_continues_only_its_own_query() {
        let after = DeploymentKey::new("a", "web").expect("key");
        let scoped = Scope::Only(Arc::new(["a".into()].into()));
        let queries = [
            query_fingerprint("a", "", &Scope::All),
            query_fingerprint("", "", &Scope::All),
            query_fingerprint("a", "app=web", &Scope::All),
            query_fingerprint("a", "", &scoped),
        ];
        for (index, query) in queries.iter().enumerate() {
            let token = encode_page_token(query, &after);
            for (other_index, other) in queries.iter().enumerate() {
                let decoded = decode_page_token(&token, other);
                if index == other_index {
                    assert_eq!(decoded, Ok(Some(after.clone())));
                } else {
                    assert_eq!(decoded, Err(Error::PageTokenOfAnotherQuery));
                }
            }
        }
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
        let (key, web) = row(&deployment("a", "web", "web"));
        let state = |setpoint: Option<&ReplicaSetpoint>| view(key.clone(), &web, setpoint).state;
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
        let (key, web) = row(&deployment("a", "web", "web"));
        let answer = view(key.clone(), &web, Some(&setpoint("uid-web", 3, None)));
        assert_eq!(answer.spec_replicas, 2);
        assert_eq!(answer.desired_replicas, Some(5));
        assert_eq!(answer.version, "setpoint-uid/3");
        assert_eq!(answer.uid, "uid-web");
        let unmanaged = view(key, &web, None);
        assert_eq!(
            (unmanaged.desired_replicas, unmanaged.version),
            (None, String::new())
        );
    }
}

/// Any token: decoding never panics, and an accepted token names a valid key and is the
/// one token encoding it (no two tokens continue the same page).
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn accepted_page_tokens_are_canonical_and_name_valid_keys(
            token in "[A-Za-z0-9_-]{0,40}|\\PC{0,20}",
            text in "q:[a-z0-9./-]{0,12}|q:\\PC{0,12}|\\PC{0,16}",
        ) {
            for token in [token, URL_SAFE_NO_PAD.encode(&text)] {
                if let Ok(Some(key)) = decode_page_token(&token, "q") {
                    prop_assert!(DeploymentKey::new(&key.namespace, &key.name).is_ok(), "{} accepted", key);
                    prop_assert_eq!(encode_page_token("q", &key), token);
                }
            }
        }
    }
}
