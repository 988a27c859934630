//! The watch cache every read and reconcile is answered from, shaped for the questions
//! asked: Deployments in (namespace, name) order, decoded to the fields answers and
//! reconciles use ([`DeploymentFields`], [`DeploymentRow`]), with the rows of each label
//! pair for selectors; HPAs by the Deployment they scale; setpoints in a
//! kube reflector store. [`Index::start`] starts the watches that keep it current (in
//! [`watches`]); a relist marks what it sees and sweeps the rest when it ends, so the
//! index never holds two copies and answers keep coming during it. Every change names
//! the Deployment it concerns on [`Index::subscribe`]. Nothing here sends a request per
//! read.

mod autoscalers;
mod deployments;
mod fields;
mod labels;
pub mod metrics;
mod postings;
mod setpoints;
mod table;
mod watches;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use setpoint_core::{DeploymentKey, Error};
use setpoint_k8s_api::ReplicaSetpoint;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

pub use autoscalers::Autoscalers;
pub use deployments::{DeploymentRow, Deployments};
pub use fields::DeploymentFields;
pub use labels::Labels;
pub use metrics::IndexMetrics;
pub use setpoints::SetpointWriter;

use watches::{FailingWatches, IndexWatches};

/// Changes a subscriber may fall behind by before it is told that it lagged.
const CHANGES_BUFFER: usize = 4096;

/// Everything the watches keep. Cheap to clone: every field is a shared handle.
#[derive(Clone)]
pub struct Index {
    deployments: Deployments,
    autoscalers: Autoscalers,
    setpoints: Store<ReplicaSetpoint>,
    changes: broadcast::Sender<DeploymentKey>,
    synced: Arc<watch::Sender<bool>>,
    failing: FailingWatches,
}

impl Index {
    /// Starts one watch per kind on `tasks`, each renewed every `watch_timeout`; the
    /// index reports synced once every watch has completed its first list.
    pub fn start(
        client: &Client,
        watch_timeout: Duration,
        metrics: &IndexMetrics,
        tasks: &mut JoinSet<()>,
    ) -> Self {
        let (index, mut setpoints) = Self::new();
        let watches = IndexWatches {
            index: index.clone(),
            unsynced: Arc::new(AtomicUsize::new(3)),
            metrics,
            config: watcher::Config::default()
                .any_semantic()
                .timeout(u32::try_from(watch_timeout.as_secs()).unwrap_or(u32::MAX)),
        };
        let deployments = index.deployments.clone();
        watches.start(
            Api::<DeploymentFields>::all(client.clone()),
            "deployments",
            move |event| (deployments.apply(event), deployments.len()),
            tasks,
        );
        let autoscalers = index.autoscalers.clone();
        watches.start(
            Api::<HorizontalPodAutoscaler>::all(client.clone()),
            "horizontalpodautoscalers",
            move |event| (autoscalers.apply(event), autoscalers.len()),
            tasks,
        );
        let store = index.setpoints.clone();
        watches.start(
            Api::<ReplicaSetpoint>::all(client.clone()),
            "replicasetpoints",
            move |event| (setpoints.apply(event), store.len()),
            tasks,
        );
        index
    }

    /// An empty index without watches, and the writer of its setpoint store: for tests,
    /// which fill it themselves.
    pub fn new() -> (Self, SetpointWriter) {
        let (setpoints, writer) = reflector::store();
        let index = Self {
            deployments: Deployments::default(),
            autoscalers: Autoscalers::default(),
            setpoints,
            changes: broadcast::channel(CHANGES_BUFFER).0,
            synced: Arc::new(watch::channel(false).0),
            failing: FailingWatches::default(),
        };
        (index, SetpointWriter::new(writer))
    }

    /// The Deployments, once every watch has completed its first list.
    pub fn deployments(&self) -> Result<&Deployments, Error> {
        if self.is_synced() {
            Ok(&self.deployments)
        } else {
            Err(Error::NotSynced)
        }
    }

    /// The row of the Deployment `key`, synced or not (the reconciler waits for the
    /// sync before it starts).
    pub fn deployment(&self, key: &DeploymentKey) -> Option<Arc<DeploymentRow>> {
        self.deployments.get(key)
    }

    /// The setpoint of the Deployment `key` (they share namespace and name).
    pub fn setpoint(&self, key: &DeploymentKey) -> Option<Arc<ReplicaSetpoint>> {
        self.setpoints
            .get(&reflector::ObjectRef::new(&key.name).within(&key.namespace))
    }

    /// The setpoint store, which kube-runtime's applier reads.
    pub fn setpoints(&self) -> &Store<ReplicaSetpoint> {
        &self.setpoints
    }

    /// The name of an HPA that scales the Deployment `key` (the first by name if several
    /// do).
    pub fn autoscaler_of(&self, key: &DeploymentKey) -> Option<String> {
        self.autoscalers.of(key)
    }

    /// Tells subscribers that something about the Deployment `key` changed.
    fn changed(&self, key: DeploymentKey) {
        // Without subscribers there is no one to tell.
        let _ = self.changes.send(key);
    }

    /// The Deployments whose row, setpoint or HPA changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<DeploymentKey> {
        self.changes.subscribe()
    }

    /// Every watch has completed its first list.
    pub fn mark_synced(&self) {
        self.synced.send_replace(true);
    }

    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until every watch has completed its first list.
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.subscribe();
        // The sender lives as long as `self`: this cannot fail.
        let _ = synced.wait_for(|synced| *synced).await;
    }

    /// Why answers may be stale: each watch that has kept failing for `longer_than`.
    pub fn failing_watches(&self, longer_than: Duration) -> Vec<String> {
        self.failing.longer_than(longer_than)
    }

    /// Applies a Deployment watch event directly: for tests.
    pub fn apply_deployment<K: kube::Resource>(&self, event: watcher::Event<K>)
    where
        for<'a> DeploymentRow: From<&'a K>,
    {
        for key in self.deployments.apply(event) {
            self.changed(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::autoscaling::v2::{
        CrossVersionObjectReference, HorizontalPodAutoscalerSpec,
    };
    use kube::api::ObjectMeta;

    use std::collections::BTreeSet;

    use kube::runtime::watcher::Event;

    use super::*;

    fn deployment(key: &str, replicas: i32) -> Deployment {
        let (namespace, name) = key.split_once('/').expect("namespace/name");
        Deployment {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                labels: Some([("app".to_string(), name.to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(k8s_openapi::api::apps::v1::DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            ..Deployment::default()
        }
    }

    fn autoscaler(name: &str, target: &str) -> HorizontalPodAutoscaler {
        HorizontalPodAutoscaler {
            metadata: ObjectMeta {
                namespace: Some("a".into()),
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    kind: "Deployment".into(),
                    name: target.into(),
                    api_version: Some("apps/v1".into()),
                },
                max_replicas: 3,
                ..HorizontalPodAutoscalerSpec::default()
            },
            status: None,
        }
    }

    fn key(key: &str) -> DeploymentKey {
        let (namespace, name) = key.split_once('/').expect("namespace/name");
        DeploymentKey::new(namespace, name).expect("valid key")
    }

    fn keys(rows: &[Arc<DeploymentRow>]) -> Vec<String> {
        rows.iter().map(|row| row.key.to_string()).collect()
    }

    fn index(keys: &[&str]) -> Deployments {
        let index = Deployments::default();
        for key in keys {
            index.apply(Event::Apply(deployment(key, 1)));
        }
        index
    }

    #[test]
    fn a_scan_starts_after_the_cursor_and_stays_in_its_namespaces() {
        let index = index(&["b/x", "a/z", "a/y", "c/w", "a/x", "d/v"]);
        let all = |after: Option<&str>, limit| {
            keys(&index.scan(None, after.map(key).as_ref(), limit, &[], |_| true))
        };
        assert_eq!(all(None, 10), ["a/x", "a/y", "a/z", "b/x", "c/w", "d/v"]);
        assert_eq!(all(Some("a/y"), 2), ["a/z", "b/x"]);
        let namespaces: BTreeSet<String> = ["a".into(), "c".into()].into();
        let some = |after: Option<&str>, limit| {
            keys(&index.scan(
                Some(&namespaces),
                after.map(key).as_ref(),
                limit,
                &[],
                |_| true,
            ))
        };
        assert_eq!(some(None, 10), ["a/x", "a/y", "a/z", "c/w"]);
        assert_eq!(some(Some("a/z"), 10), ["c/w"]);
        assert_eq!(
            some(Some("b/x"), 10),
            ["c/w"],
            "a cursor between namespaces"
        );
        assert_eq!(some(Some("c/w"), 10), Vec::<String>::new());
        let odd = index.scan(None, None, 10, &[], |row| {
            row.labels.get("app") != Some("x")
        });
        assert_eq!(keys(&odd), ["a/y", "a/z", "c/w", "d/v"]);
    }

    #[test]
    fn a_page_with_required_labels_visits_only_the_rows_carrying_them() {
        let index = Deployments::default();
        for n in 0..1000 {
            let mut deployment = deployment(&format!("n{}/d{n:04}", n % 3), 1);
            let labels = deployment.metadata.labels.get_or_insert_default();
            labels.insert("tier".into(), format!("t{}", n % 100));
            labels.insert("rare".into(), (n % 500 == 7).to_string());
            index.apply(Event::Apply(deployment));
        }
        let visited = std::cell::Cell::new(0);
        let page = |after: Option<&str>, required: &[(&str, &str)]| {
            let rows = index.scan(None, after.map(key).as_ref(), 10, required, |_| {
                visited.set(visited.get() + 1);
                true
            });
            keys(&rows)
        };
        assert_eq!(
            page(None, &[("tier", "t7"), ("rare", "true")]),
            ["n0/d0507", "n1/d0007"]
        );
        assert_eq!(visited.replace(0), 2, "only the rarest label's rows");
        assert_eq!(page(Some("n0/d0507"), &[("rare", "true")]), ["n1/d0007"]);
        assert_eq!(page(None, &[("rare", "maybe")]), Vec::<String>::new());
        assert_eq!(visited.replace(0), 1);

        // The entries follow the rows: a relabelled, a deleted and a swept row leave.
        let mut relabelled = deployment("n1/d0007", 1);
        relabelled
            .metadata
            .labels
            .get_or_insert_default()
            .insert("rare".into(), "no".into());
        index.apply(Event::Apply(relabelled));
        assert_eq!(page(None, &[("rare", "true")]), ["n0/d0507"]);
        assert_eq!(page(None, &[("rare", "no")]), ["n1/d0007"]);
        index.apply(Event::Delete(deployment("n0/d0507", 1)));
        assert_eq!(page(None, &[("rare", "true")]), Vec::<String>::new());
        index.apply(Event::<Deployment>::Init);
        index.apply(Event::InitApply(deployment("n0/d0000", 2)));
        index.apply(Event::<Deployment>::InitDone);
        assert_eq!(page(None, &[("app", "d0000")]), ["n0/d0000"]);
        assert_eq!(page(None, &[("rare", "no")]), Vec::<String>::new());
        assert_eq!(page(None, &[("tier", "t0")]), Vec::<String>::new());
    }

    #[test]
    fn a_relist_keeps_answering_and_sweeps_what_it_did_not_see() {
        let index = index(&["a/x", "a/y", "a/z"]);
        assert_eq!(
            index.apply(Event::<Deployment>::Init),
            Vec::<DeploymentKey>::new()
        );
        assert_eq!(
            index.apply(Event::InitApply(deployment("a/x", 1))),
            Vec::<DeploymentKey>::new(),
            "an unchanged row is no change"
        );
        assert_eq!(
            index.apply(Event::InitApply(deployment("a/y", 4))),
            [key("a/y")]
        );
        assert_eq!(index.len(), 3, "the old rows answer until the relist ends");
        assert_eq!(index.apply(Event::<Deployment>::InitDone), [key("a/z")]);
        assert_eq!(
            keys(&index.scan(None, None, 10, &[], |_| true)),
            ["a/x", "a/y"]
        );
        assert_eq!(index.get(&key("a/y")).map(|row| row.spec_replicas), Some(4));
        assert_eq!(
            index.apply(Event::Delete(deployment("a/x", 1))),
            [key("a/x")]
        );
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn autoscalers_are_found_by_the_deployment_they_scale() {
        let index = Autoscalers::default();
        assert_eq!(
            index.apply(Event::Apply(autoscaler("h2", "web"))),
            [key("a/web")]
        );
        index.apply(Event::Apply(autoscaler("h1", "web")));
        assert_eq!(index.of(&key("a/web")).as_deref(), Some("h1"));
        assert_eq!(
            index.apply(Event::Apply(autoscaler("h1", "api"))),
            [key("a/web"), key("a/api")],
            "a retargeted HPA changes both Deployments"
        );
        assert_eq!(index.of(&key("a/web")).as_deref(), Some("h2"));
        assert_eq!(index.of(&key("a/api")).as_deref(), Some("h1"));
        index.apply(Event::Init);
        index.apply(Event::InitApply(autoscaler("h1", "api")));
        assert_eq!(index.apply(Event::InitDone), [key("a/web")]);
        assert_eq!(index.of(&key("a/web")), None);
        index.apply(Event::Delete(autoscaler("h1", "api")));
        assert_eq!((index.of(&key("a/api")), index.len()), (None, 0));
    }

    #[test]
    fn setpoints_are_announced_once_the_store_shows_them_and_so_are_relist_deletions() {
        let (index, mut writer) = Index::new();
        let setpoint = |name: &str| {
            let spec = setpoint_k8s_api::ReplicaSetpointSpec {
                replicas: 2,
                deployment_uid: format!("uid-{name}"),
            };
            let mut setpoint = ReplicaSetpoint::new(name, spec);
            setpoint.metadata.namespace = Some("a".into());
            setpoint
        };
        let mut announced = Vec::new();
        for event in [
            Event::Init,
            Event::InitApply(setpoint("web")),
            Event::InitDone,
            Event::Apply(setpoint("api")),
            Event::Init,
            Event::InitApply(setpoint("api")),
            Event::InitApply(setpoint("db")),
            Event::InitDone,
        ] {
            for key in writer.apply(event) {
                announced.push((key.to_string(), index.setpoint(&key).is_some()));
            }
        }
        let stored = |key: &str, stored| (key.to_string(), stored);
        assert_eq!(
            announced,
            [
                stored("a/web", true),
                stored("a/api", true),
                stored("a/api", true),
                stored("a/db", true),
                // Deleted while the watch was down: announced once the store has dropped it.
                stored("a/web", false),
            ]
        );
    }
}
