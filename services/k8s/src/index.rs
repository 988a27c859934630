//! The watch cache's contents, shaped for the API and shared with the reconciler:
//! Deployments in (namespace, name) order, trimmed to the fields answers and reconciles
//! use ([`DeploymentRow`]); HPAs by the Deployment they scale; setpoints in a kube
//! reflector store. Watch events keep them current. A relist marks what it sees and
//! sweeps the rest when it ends, so an index never holds two copies and answers keep
//! coming during it. Every change names the Deployment it concerns on
//! [`Stores::subscribe`], which is what triggers the reconciler.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::{Arc, PoisonError, RwLock};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher::Event;
use kube::{Resource, ResourceExt};
use setpoint_core::DeploymentKey;
use tokio::sync::{broadcast, watch};

use crate::{ReplicaSetpoint, autoscaler_target, key_of, spec_replicas};

/// Changes a subscriber may fall behind by before it is told that it lagged.
const CHANGES_BUFFER: usize = 4096;

/// What Setpoint keeps of a Deployment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeploymentRow {
    pub uid: String,
    /// Guards the reconciler's scale write.
    pub resource_version: String,
    /// For label selectors; shared with WatchDeployments' changes.
    pub labels: Arc<BTreeMap<String, String>>,
    pub spec_replicas: i32,
    pub ready_replicas: i32,
    pub available_replicas: i32,
    pub updated_replicas: i32,
}

impl From<&Deployment> for DeploymentRow {
    fn from(deployment: &Deployment) -> Self {
        let status = deployment.status.clone().unwrap_or_default();
        Self {
            uid: deployment.uid().unwrap_or_default(),
            resource_version: deployment.resource_version().unwrap_or_default(),
            labels: Arc::new(deployment.labels().clone()),
            spec_replicas: spec_replicas(deployment),
            ready_replicas: status.ready_replicas.unwrap_or(0),
            available_replicas: status.available_replicas.unwrap_or(0),
            updated_replicas: status.updated_replicas.unwrap_or(0),
        }
    }
}

/// A change to a table: the key, and its value before and after (`None`: absent).
type Change<V> = (DeploymentKey, Option<V>, Option<V>);

/// A value with the epoch of the listing that last saw it.
type Marked<V> = (u64, V);

/// One namespace's values by name.
type Names<V> = BTreeMap<String, Marked<V>>;

/// Values by namespace, then name (each namespace's name stored once, and lookups
/// compare names only), with the relist's mark-and-sweep.
struct Table<V> {
    namespaces: BTreeMap<String, Names<V>>,
    len: usize,
    /// Incremented by each relist.
    epoch: u64,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Self {
            namespaces: BTreeMap::new(),
            len: 0,
            epoch: 0,
        }
    }
}

impl<V: Clone + PartialEq> Table<V> {
    fn get(&self, key: &DeploymentKey) -> Option<&V> {
        let (_, value) = self.namespaces.get(&key.namespace)?.get(&key.name)?;
        Some(value)
    }

    /// Applies a watch event, storing `value` of each object; returns what changed.
    fn apply<K: Resource>(&mut self, event: Event<K>, value: impl Fn(&K) -> V) -> Vec<Change<V>> {
        let epoch = self.epoch;
        match event {
            Event::Init => {
                self.epoch += 1;
                Vec::new()
            }
            Event::InitApply(object) | Event::Apply(object) => {
                let (key, new) = (key_of(&object), value(&object));
                let names = self.namespaces.entry(key.namespace.clone()).or_default();
                let old = match names.get_mut(&key.name) {
                    Some((seen, old)) if *old == new => {
                        *seen = epoch;
                        return Vec::new();
                    }
                    Some(entry) => Some(std::mem::replace(entry, (epoch, new.clone())).1),
                    None => {
                        names.insert(key.name.clone(), (epoch, new.clone()));
                        self.len += 1;
                        None
                    }
                };
                vec![(key, old, Some(new))]
            }
            Event::Delete(object) => {
                let key = key_of(&object);
                let Some(names) = self.namespaces.get_mut(&key.namespace) else {
                    return Vec::new();
                };
                let old = names.remove(&key.name);
                if names.is_empty() {
                    self.namespaces.remove(&key.namespace);
                }
                self.len -= usize::from(old.is_some());
                old.map(|(_, old)| (key, Some(old), None))
                    .into_iter()
                    .collect()
            }
            Event::InitDone => {
                let mut gone = Vec::new();
                for (namespace, names) in &mut self.namespaces {
                    let stale = names.extract_if(.., |_, (seen, _)| *seen != epoch);
                    gone.extend(stale.map(|(name, (_, old))| {
                        let key = DeploymentKey {
                            namespace: namespace.clone(),
                            name,
                        };
                        (key, Some(old), None)
                    }));
                }
                self.namespaces.retain(|_, names| !names.is_empty());
                self.len -= gone.len();
                gone
            }
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Deployments in (namespace, name) order.
#[derive(Clone, Default)]
pub struct Deployments(Arc<RwLock<Table<Arc<DeploymentRow>>>>);

impl Deployments {
    pub fn get(&self, key: &DeploymentKey) -> Option<Arc<DeploymentRow>> {
        read(&self.0).get(key).cloned()
    }

    pub fn len(&self) -> usize {
        read(&self.0).len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `limit` rows in key order after `after`, in `namespaces` (every namespace
    /// when `None`), that `keep` accepts. Visits only rows of those namespaces from the
    /// cursor on, until the page is full.
    pub fn scan(
        &self,
        namespaces: Option<&BTreeSet<String>>,
        after: Option<&DeploymentKey>,
        limit: usize,
        keep: impl Fn(&DeploymentRow) -> bool,
    ) -> Vec<(DeploymentKey, Arc<DeploymentRow>)> {
        let table = read(&self.0);
        let first = after.map_or(Bound::Unbounded, |after| {
            Bound::Included(after.namespace.as_str())
        });
        let visited: Box<dyn Iterator<Item = (&String, &Names<Arc<DeploymentRow>>)>> =
            match namespaces {
                None => Box::new(table.namespaces.range::<str, _>((first, Bound::Unbounded))),
                Some(namespaces) => Box::new(
                    namespaces
                        .range::<str, _>((first, Bound::Unbounded))
                        .filter_map(|namespace| table.namespaces.get_key_value(namespace)),
                ),
            };
        visited
            .flat_map(|(namespace, names)| {
                // After the cursor in its namespace; from the first name in the next.
                let start = match after {
                    Some(after) if after.namespace == *namespace => {
                        Bound::Excluded(after.name.as_str())
                    }
                    _ => Bound::Unbounded,
                };
                names
                    .range::<str, _>((start, Bound::Unbounded))
                    .map(move |(name, (_, row))| (namespace, name, row))
            })
            .filter(|(_, _, row)| keep(row))
            .take(limit)
            .map(|(namespace, name, row)| {
                let key = DeploymentKey {
                    namespace: namespace.clone(),
                    name: name.clone(),
                };
                (key, row.clone())
            })
            .collect()
    }

    /// Applies a watch event; returns the Deployments whose rows changed.
    pub fn apply(&self, event: Event<Deployment>) -> Vec<DeploymentKey> {
        write(&self.0)
            .apply(event, |deployment| {
                Arc::new(DeploymentRow::from(deployment))
            })
            .into_iter()
            .map(|(key, _, _)| key)
            .collect()
    }
}

/// HPAs by name, and the names of those scaling each Deployment.
#[derive(Default)]
struct AutoscalerTable {
    targets: Table<Option<DeploymentKey>>,
    by_target: BTreeMap<DeploymentKey, BTreeSet<String>>,
}

#[derive(Clone, Default)]
pub struct Autoscalers(Arc<RwLock<AutoscalerTable>>);

impl Autoscalers {
    /// The name of an HPA that scales the Deployment `key` (the first by name if several
    /// do): the one rule the API and the reconciler both ask.
    pub fn of(&self, key: &DeploymentKey) -> Option<String> {
        read(&self.0)
            .by_target
            .get(key)
            .and_then(|names| names.first().cloned())
    }

    pub fn len(&self) -> usize {
        read(&self.0).targets.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies a watch event; returns the Deployments an HPA started or stopped scaling.
    pub fn apply(&self, event: Event<HorizontalPodAutoscaler>) -> Vec<DeploymentKey> {
        let mut table = write(&self.0);
        let changes = table.targets.apply(event, autoscaler_target);
        let mut affected = Vec::new();
        for (autoscaler, old, new) in changes {
            if let Some(old) = old.flatten() {
                if let Some(names) = table.by_target.get_mut(&old) {
                    names.remove(&autoscaler.name);
                    if names.is_empty() {
                        table.by_target.remove(&old);
                    }
                }
                affected.push(old);
            }
            if let Some(new) = new.flatten() {
                table
                    .by_target
                    .entry(new.clone())
                    .or_default()
                    .insert(autoscaler.name);
                affected.push(new);
            }
        }
        affected
    }
}

/// Writes setpoint watch events into the kube store the reconciler's applier reads, and
/// names the Deployments whose setpoint the store now shows changed. The store swaps a
/// relist's setpoints in only when it ends, so they are announced then, with those the
/// relist no longer has (deleted while the watch was down).
pub struct SetpointWriter {
    writer: Writer<ReplicaSetpoint>,
    /// Keys of the relist in progress.
    relisted: Vec<DeploymentKey>,
    /// Keys the store held when the relist began.
    before: BTreeSet<DeploymentKey>,
}

impl SetpointWriter {
    pub fn apply(&mut self, event: Event<ReplicaSetpoint>) -> Vec<DeploymentKey> {
        let event = event.modify(|setpoint| setpoint.managed_fields_mut().clear());
        self.writer.apply_watcher_event(&event);
        match event {
            Event::Apply(setpoint) | Event::Delete(setpoint) => vec![key_of(&setpoint)],
            Event::Init => {
                self.relisted.clear();
                self.before = self
                    .writer
                    .as_reader()
                    .state()
                    .iter()
                    .map(|setpoint| key_of(setpoint.as_ref()))
                    .collect();
                Vec::new()
            }
            Event::InitApply(setpoint) => {
                self.before.remove(&key_of(&setpoint));
                self.relisted.push(key_of(&setpoint));
                Vec::new()
            }
            Event::InitDone => {
                let mut keys = std::mem::take(&mut self.relisted);
                keys.extend(std::mem::take(&mut self.before));
                keys
            }
        }
    }
}

/// Everything the watches keep, shared by the API and the reconciler.
#[derive(Clone)]
pub struct Stores {
    pub deployments: Deployments,
    pub autoscalers: Autoscalers,
    pub setpoints: Store<ReplicaSetpoint>,
    changes: broadcast::Sender<DeploymentKey>,
    synced: Arc<watch::Sender<bool>>,
}

impl Stores {
    /// Empty stores, and the writer of the setpoint store.
    pub fn new() -> (Self, SetpointWriter) {
        let (setpoints, writer) = reflector::store();
        let stores = Self {
            deployments: Deployments::default(),
            autoscalers: Autoscalers::default(),
            setpoints,
            changes: broadcast::channel(CHANGES_BUFFER).0,
            synced: Arc::new(watch::channel(false).0),
        };
        let writer = SetpointWriter {
            writer,
            relisted: Vec::new(),
            before: BTreeSet::new(),
        };
        (stores, writer)
    }

    /// The setpoint of the Deployment `key` (they share namespace and name).
    pub fn setpoint(&self, key: &DeploymentKey) -> Option<Arc<ReplicaSetpoint>> {
        self.setpoints
            .get(&reflector::ObjectRef::new(&key.name).within(&key.namespace))
    }

    /// Tells subscribers that something about the Deployment `key` changed.
    pub fn changed(&self, key: DeploymentKey) {
        // Without subscribers (no reconciler running here) there is no one to tell.
        let _ = self.changes.send(key);
    }

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
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::autoscaling::v2::{
        CrossVersionObjectReference, HorizontalPodAutoscalerSpec,
    };
    use kube::api::ObjectMeta;

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

    fn keys(rows: &[(DeploymentKey, Arc<DeploymentRow>)]) -> Vec<String> {
        rows.iter().map(|(key, _)| key.to_string()).collect()
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
            keys(&index.scan(None, after.map(key).as_ref(), limit, |_| true))
        };
        assert_eq!(all(None, 10), ["a/x", "a/y", "a/z", "b/x", "c/w", "d/v"]);
        assert_eq!(all(Some("a/y"), 2), ["a/z", "b/x"]);
        let namespaces: BTreeSet<String> = ["a".into(), "c".into()].into();
        let some = |after: Option<&str>, limit| {
            keys(&index.scan(Some(&namespaces), after.map(key).as_ref(), limit, |_| true))
        };
        assert_eq!(some(None, 10), ["a/x", "a/y", "a/z", "c/w"]);
        assert_eq!(some(Some("a/z"), 10), ["c/w"]);
        assert_eq!(
            some(Some("b/x"), 10),
            ["c/w"],
            "a cursor between namespaces"
        );
        assert_eq!(some(Some("c/w"), 10), Vec::<String>::new());
        let odd = index.scan(None, None, 10, |row| row.labels["app"] != "x");
        assert_eq!(keys(&odd), ["a/y", "a/z", "c/w", "d/v"]);
    }

    #[test]
    fn a_relist_keeps_answering_and_sweeps_what_it_did_not_see() {
        let index = index(&["a/x", "a/y", "a/z"]);
        assert_eq!(index.apply(Event::Init), Vec::<DeploymentKey>::new());
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
        assert_eq!(index.apply(Event::InitDone), [key("a/z")]);
        assert_eq!(keys(&index.scan(None, None, 10, |_| true)), ["a/x", "a/y"]);
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
        let (stores, mut writer) = Stores::new();
        let setpoint = |name: &str| {
            let spec = crate::ReplicaSetpointSpec {
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
                announced.push((key.to_string(), stores.setpoint(&key).is_some()));
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
