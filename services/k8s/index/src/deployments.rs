//! Deployments in (namespace, name) order, trimmed to the fields answers and reconciles
//! use ([`DeploymentRow`]).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::runtime::watcher::Event;
use setpoint_core::DeploymentKey;
use setpoint_k8s_api::spec_replicas;

use crate::table::{Names, Table, read, write};

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
