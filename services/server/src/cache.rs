//! The watch cache every read is answered from: kube-runtime reflectors over
//! Deployments, ReplicaSetpoints and HorizontalPodAutoscalers in all namespaces,
//! trimmed to what answers need. Nothing here sends a request per read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use setpoint_core::{DeploymentKey, Error};
use setpoint_k8s::{ReplicaSetpoint, autoscaler_target};
use tokio::task::JoinSet;

use crate::metrics::{KindLabels, Metrics};

#[derive(Clone)]
pub struct Cache {
    deployments: Store<Deployment>,
    setpoints: Store<ReplicaSetpoint>,
    autoscalers: Store<HorizontalPodAutoscaler>,
    synced: Arc<AtomicBool>,
}

impl Cache {
    /// Starts one watch per kind on `tasks`; the cache reports synced once every
    /// watch has completed its first list.
    pub fn start(client: &Client, metrics: &Metrics, tasks: &mut JoinSet<()>) -> Self {
        let deployments = watch(
            Api::<Deployment>::all(client.clone()),
            "deployments",
            |deployment| {
                deployment.managed_fields_mut().clear();
                deployment.annotations_mut().clear();
                if let Some(spec) = deployment.spec.as_mut() {
                    // The pod template is most of a Deployment's size and no answer uses it.
                    spec.template = Default::default();
                }
            },
            metrics,
            tasks,
        );
        let setpoints = watch(
            Api::<ReplicaSetpoint>::all(client.clone()),
            "replicasetpoints",
            |setpoint| setpoint.managed_fields_mut().clear(),
            metrics,
            tasks,
        );
        let autoscalers = watch(
            Api::<HorizontalPodAutoscaler>::all(client.clone()),
            "horizontalpodautoscalers",
            |autoscaler| {
                autoscaler.managed_fields_mut().clear();
                autoscaler.annotations_mut().clear();
                autoscaler.status = None;
            },
            metrics,
            tasks,
        );

        let synced = Arc::new(AtomicBool::new(false));
        let stores = (deployments.clone(), setpoints.clone(), autoscalers.clone());
        let flag = synced.clone();
        tasks.spawn(async move {
            // `wait_until_ready` only fails when the writer is dropped, i.e. at shutdown.
            let ready = stores.0.wait_until_ready().await.is_ok()
                && stores.1.wait_until_ready().await.is_ok()
                && stores.2.wait_until_ready().await.is_ok();
            if ready {
                flag.store(true, Ordering::Release);
                tracing::info!("watch cache synced");
            }
        });
        Self {
            deployments,
            setpoints,
            autoscalers,
            synced,
        }
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    fn ensure_synced(&self) -> Result<(), Error> {
        if self.is_synced() {
            Ok(())
        } else {
            Err(Error::NotSynced)
        }
    }

    /// Every cached Deployment (a snapshot of shared pointers).
    pub fn deployments(&self) -> Result<Vec<Arc<Deployment>>, Error> {
        self.ensure_synced()?;
        Ok(self.deployments.state())
    }

    pub fn deployment(&self, key: &DeploymentKey) -> Result<Option<Arc<Deployment>>, Error> {
        self.ensure_synced()?;
        Ok(self
            .deployments
            .get(&ObjectRef::new(&key.name).within(&key.namespace)))
    }

    /// The setpoint of the Deployment `key`, if any.
    pub fn setpoint(&self, key: &DeploymentKey) -> Option<Arc<ReplicaSetpoint>> {
        self.setpoints
            .get(&ObjectRef::new(&key.name).within(&key.namespace))
    }

    /// The name of an HPA that scales the Deployment `key`, if any.
    pub fn autoscaler_of(&self, key: &DeploymentKey) -> Option<String> {
        self.autoscalers.state().iter().find_map(|autoscaler| {
            (autoscaler_target(autoscaler).as_ref() == Some(key)).then(|| autoscaler.name_any())
        })
    }
}

/// Starts a reflector for `api` on `tasks`, applying `trim` to every object before it
/// is stored, and returns its store.
fn watch<K>(
    api: Api<K>,
    kind: &'static str,
    trim: impl FnMut(&mut K) + Send + 'static,
    metrics: &Metrics,
    tasks: &mut JoinSet<()>,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let labels = KindLabels { kind };
    let (restarts, size) = (
        metrics.watch_restarts.get_or_create(&labels).clone(),
        metrics.cache_objects.get_or_create(&labels).clone(),
    );
    let store = reader.clone();
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(trim)
        .reflect(writer);
    tasks.spawn(stream.for_each(move |event| {
        match event {
            Ok(_) => {
                size.set(store.len() as i64);
            }
            Err(error) => {
                restarts.inc();
                tracing::warn!(kind, %error, "watch failed; retrying with backoff");
            }
        }
        std::future::ready(())
    }));
    reader
}
