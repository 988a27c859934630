//! ReplicaSetpoints, in the kube reflector store kube-runtime's applier reads.

use std::collections::BTreeSet;

use kube::ResourceExt;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;
use setpoint_core::DeploymentKey;
use setpoint_k8s_api::{ReplicaSetpoint, key_of};

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
    pub(crate) fn new(writer: Writer<ReplicaSetpoint>) -> Self {
        Self {
            writer,
            relisted: Vec::new(),
            before: BTreeSet::new(),
        }
    }

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
