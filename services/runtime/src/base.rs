//! What both processes set up the same way before their own work: the metrics registry
//! (every name prefixed `setpoint_`), the Kubernetes client that counts its requests, the
//! HTTP port, and, once running, the index with its watches and readiness with its
//! probe.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use setpoint_k8s_index::{Index, IndexMetrics};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::flags::{HealthFlags, IndexFlags};
use crate::health::{self, Readiness};
use crate::{METRICS_PREFIX, client, http};

/// What can stop a process from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// A process's shared parts, bound but not yet running.
pub struct Base {
    registry: Registry,
    index_metrics: IndexMetrics,
    client: kube::Client,
    http_listener: TcpListener,
    index_flags: IndexFlags,
    health_flags: HealthFlags,
}

/// The running shared parts a process builds on.
pub struct Running {
    pub client: kube::Client,
    pub index: Index,
    pub readiness: Arc<Readiness>,
}

impl Base {
    /// Registers the index's metrics and a client whose requests count under
    /// `component`, and binds the HTTP port; `register` adds the process's own metrics.
    pub async fn bind<M>(
        kube_config: kube::Config,
        component: &'static str,
        index: IndexFlags,
        health: HealthFlags,
        register: impl FnOnce(&mut Registry) -> M,
    ) -> Result<(Self, M), Error> {
        let mut registry = Registry::default();
        let prefixed = registry.sub_registry_with_prefix(METRICS_PREFIX);
        let metrics = register(prefixed);
        let index_metrics = IndexMetrics::register(prefixed);
        let client = client::counted(kube_config, prefixed, component)?;
        let address = health.http_listen;
        let http_listener = TcpListener::bind(address)
            .await
            .map_err(|source| Error::Io {
                context: format!("binding {address}"),
                source,
            })?;
        let base = Self {
            registry,
            index_metrics,
            client,
            http_listener,
            index_flags: index,
            health_flags: health,
        };
        Ok((base, metrics))
    }

    /// The bound HTTP address (useful with port 0).
    pub fn http_addr(&self) -> Result<SocketAddr, Error> {
        self.http_listener.local_addr().map_err(|source| Error::Io {
            context: "reading the HTTP address".into(),
            source,
        })
    }

    /// Starts the index's watches, the readiness probe and the HTTP port (until `stop`)
    /// on `tasks`.
    pub fn start(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
        tasks: &mut JoinSet<()>,
    ) -> Running {
        let index = Index::start(
            &self.client,
            self.index_flags.watch_timeout,
            &self.index_metrics,
            tasks,
        );
        let interval = self.health_flags.probe_interval;
        let readiness = Arc::new(Readiness::new(index.clone(), interval));
        tasks.spawn(health::run(
            readiness.clone(),
            self.client.clone(),
            interval,
        ));
        tasks.spawn(http::serve(
            self.http_listener,
            readiness.clone(),
            Arc::new(self.registry),
            stop,
        ));
        Running {
            client: self.client,
            index,
            readiness,
        }
    }
}
