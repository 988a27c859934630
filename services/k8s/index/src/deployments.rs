//! Deployments in (namespace, name) order, trimmed to the fields answers and reconciles
//! use ([`DeploymentRow`]), with the rows of each label pair for selectors.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::apps::v1::Deployment;
use kube::Resource;
use kube::runtime::watcher::Event;
use setpoint_core::DeploymentKey;
use setpoint_k8s_api::key_of;

use crate::fields::DeploymentFields;
use crate::labels::Labels;
use crate::postings::LabelIndex;
use crate::table::{Names, Table, read, write};

/// What Setpoint keeps of a Deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentRow {
    pub key: DeploymentKey,
    pub uid: Box<str>,
    /// Guards the reconciler's scale write.
    pub resource_version: Box<str>,
    /// For label selectors; shared with WatchDeployments' changes.
    pub labels: Labels,
    pub spec_replicas: i32,
    pub ready_replicas: i32,
    pub available_replicas: i32,
    pub updated_replicas: i32,
}

impl From<&DeploymentFields> for DeploymentRow {
    fn from(deployment: &DeploymentFields) -> Self {
        let metadata = &deployment.metadata;
        Self {
            key: key_of(deployment),
            uid: metadata.uid.as_deref().unwrap_or_default().into(),
            resource_version: metadata
                .resource_version
                .as_deref()
                .unwrap_or_default()
                .into(),
            labels: metadata
                .labels
                .as_ref()
                .map(Labels::from)
                .unwrap_or_default(),
            spec_replicas: deployment.spec_replicas,
            ready_replicas: deployment.ready_replicas,
            available_replicas: deployment.available_replicas,
            updated_replicas: deployment.updated_replicas,
        }
    }
}

impl From<&Deployment> for DeploymentRow {
    fn from(deployment: &Deployment) -> Self {
        Self::from(&DeploymentFields::from(deployment))
    }
}

#[derive(Default)]
struct DeploymentTable {
    rows: Table<Arc<DeploymentRow>>,
    by_label: LabelIndex,
}

/// Deployments in (namespace, name) order.
#[derive(Clone, Default)]
pub struct Deployments(Arc<RwLock<DeploymentTable>>);

impl Deployments {
    pub fn get(&self, key: &DeploymentKey) -> Option<Arc<DeploymentRow>> {
        read(&self.0).rows.get(key).cloned()
    }

    pub fn len(&self) -> usize {
        read(&self.0).rows.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `limit` rows in key order after `after`, in `namespaces` (every namespace
    /// when `None`), carrying every label of `required` (`(key, value)` pairs), that
    /// `keep` accepts. Visits only rows of those namespaces from the cursor on, or, with
    /// required labels, only the rows of the rarest, until the page is full.
    pub fn scan(
        &self,
        namespaces: Option<&BTreeSet<String>>,
        after: Option<&DeploymentKey>,
        limit: usize,
        required: &[(&str, &str)],
        keep: impl Fn(&DeploymentRow) -> bool,
    ) -> Vec<Arc<DeploymentRow>> {
        let table = read(&self.0);
        let in_namespaces =
            |row: &DeploymentRow| namespaces.is_none_or(|set| set.contains(&row.key.namespace));
        let keep = |row: &&Arc<DeploymentRow>| in_namespaces(row) && keep(row);
        if !required.is_empty() {
            let Some(rows) = table.by_label.rarest(required) else {
                return Vec::new();
            };
            let first = after.map_or(0, |after| rows.partition_point(|row| row.key <= *after));
            return rows[first..]
                .iter()
                .filter(keep)
                .take(limit)
                .cloned()
                .collect();
        }
        rows_from(&table.rows, namespaces, after)
            .filter(keep)
            .take(limit)
            .cloned()
            .collect()
    }

    /// Applies a watch event (of the watch's [`DeploymentFields`], or of whole
    /// Deployments in tests); returns the Deployments whose rows changed.
    pub fn apply<K: Resource>(&self, event: Event<K>) -> Vec<DeploymentKey>
    where
        for<'a> DeploymentRow: From<&'a K>,
    {
        let mut table = write(&self.0);
        let changes = table.rows.apply(event, |deployment| {
            Arc::new(DeploymentRow::from(deployment))
        });
        changes
            .into_iter()
            .map(|(key, old, new)| {
                table.by_label.update(old.as_deref(), new.as_ref());
                key
            })
            .collect()
    }
}

/// The rows of `namespaces` (every namespace when `None`) in key order after `after`.
fn rows_from<'a>(
    rows: &'a Table<Arc<DeploymentRow>>,
    namespaces: Option<&'a BTreeSet<String>>,
    after: Option<&'a DeploymentKey>,
) -> impl Iterator<Item = &'a Arc<DeploymentRow>> {
    let first = after.map_or(Bound::Unbounded, |after| {
        Bound::Included(after.namespace.as_str())
    });
    let visited: Box<dyn Iterator<Item = (&String, &Names<Arc<DeploymentRow>>)>> = match namespaces
    {
        None => Box::new(rows.namespaces.range::<str, _>((first, Bound::Unbounded))),
        Some(namespaces) => Box::new(
            namespaces
                .range::<str, _>((first, Bound::Unbounded))
                .filter_map(|namespace| rows.namespaces.get_key_value(namespace)),
        ),
    };
    visited.flat_map(move |(namespace, names)| {
        // After the cursor in its namespace; from the first name in the next.
        let start = match after {
            Some(after) if after.namespace == *namespace => Bound::Excluded(after.name.as_str()),
            _ => Bound::Unbounded,
        };
        names
            .range::<str, _>((start, Bound::Unbounded))
            .map(|(_, (_, row))| row)
    })
}
