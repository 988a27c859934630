//! HPAs by the Deployment they scale: the one rule ("this HPA targets that Deployment")
//! the API and the reconciler both ask.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::runtime::watcher::Event;
use setpoint_core::DeploymentKey;
use setpoint_k8s_api::autoscaler_target;

use crate::table::{Table, read, write};

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
