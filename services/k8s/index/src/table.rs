//! One table of the index: values by namespace, then name, with the relist's
//! mark-and-sweep, so that a relist never holds two copies and answers keep coming
//! during it.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock};

use kube::Resource;
use kube::runtime::watcher::Event;
use setpoint_core::DeploymentKey;
use setpoint_k8s_api::key_of;

/// A change to a table: the key, and its value before and after (`None`: absent).
pub(crate) type RowChange<V> = (DeploymentKey, Option<V>, Option<V>);

/// A value with the epoch of the listing that last saw it.
pub(crate) type Marked<V> = (u64, V);

/// One namespace's values by name.
pub(crate) type Names<V> = BTreeMap<String, Marked<V>>;

/// Values by namespace, then name (each namespace's name stored once, and lookups
/// compare names only), with the relist's mark-and-sweep.
pub(crate) struct Table<V> {
    pub(crate) namespaces: BTreeMap<String, Names<V>>,
    pub(crate) len: usize,
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
    pub(crate) fn get(&self, key: &DeploymentKey) -> Option<&V> {
        let (_, value) = self.namespaces.get(&key.namespace)?.get(&key.name)?;
        Some(value)
    }

    /// Applies a watch event, storing `value` of each object; returns what changed.
    pub(crate) fn apply<K: Resource>(
        &mut self,
        event: Event<K>,
        value: impl Fn(&K) -> V,
    ) -> Vec<RowChange<V>> {
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

pub(crate) fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
