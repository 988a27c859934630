//! `setpoint-reconciler`'s process, the one place it is wired and started:
//! [`Reconciler::bind`] checks the configuration and binds the HTTP port (failing fast);
//! [`Reconciler::run`] starts the index, health probing, the HTTP port and leader
//! election (the holder runs [`crate::controller`]), and on shutdown stops reconciling,
//! releases the Lease and stops every task.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use setpoint_k8s_index::{Index, IndexMetrics};
use setpoint_runtime::health::{self, Readiness};
use setpoint_runtime::{METRICS_PREFIX, client, http, signal};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::controller;
use crate::lease;
use crate::metrics::ReconcilerMetrics;

/// What can stop the process from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub struct Reconciler {
    config: Config,
    client: kube::Client,
    metrics: ReconcilerMetrics,
    index_metrics: IndexMetrics,
    registry: Registry,
    http_listener: TcpListener,
}

impl Reconciler {
    pub async fn bind(config: Config, kube_config: kube::Config) -> Result<Self, Error> {
        config.validate().map_err(Error::Config)?;
        let mut registry = Registry::default();
        let prefixed = registry.sub_registry_with_prefix(METRICS_PREFIX);
        let metrics = ReconcilerMetrics::register(prefixed);
        let index_metrics = IndexMetrics::register(prefixed);
        let client = client::counted(kube_config, prefixed, "reconciler")?;
        let address = config.health.http_listen;
        let http_listener = TcpListener::bind(address)
            .await
            .map_err(|source| Error::Io {
                context: format!("binding {address}"),
                source,
            })?;
        Ok(Self {
            config,
            client,
            metrics,
            index_metrics,
            registry,
            http_listener,
        })
    }

    /// The bound HTTP address (useful with port 0).
    pub fn http_addr(&self) -> Result<SocketAddr, Error> {
        self.http_listener.local_addr().map_err(|source| Error::Io {
            context: "reading the HTTP address".into(),
            source,
        })
    }

    /// Runs until `shutdown` completes; then reports not ready, stops reconciling and
    /// releases the Lease (so that a peer takes over at once), and stops every task.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Self {
            config,
            client,
            metrics,
            index_metrics,
            registry,
            http_listener,
        } = self;
        // Dropping the set aborts every task in it.
        let mut tasks = JoinSet::new();
        let index = Index::start(
            &client,
            config.index.watch_timeout,
            &index_metrics,
            &mut tasks,
        );
        let readiness = Arc::new(Readiness::new(index.clone(), config.health.probe_interval));
        tasks.spawn(health::run(
            readiness.clone(),
            client.clone(),
            config.health.probe_interval,
        ));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tasks.spawn(http::serve(
            http_listener,
            readiness.clone(),
            Arc::new(registry),
            signal::stopped(stopped),
        ));
        tracing::info!(http = %config.health.http_listen, "reconciler started");

        let identity = config.lease.identity.clone();
        let (leader, lead_client) = (metrics.leader.clone(), client.clone());
        lease::run(
            client,
            config.lease,
            leader,
            move || {
                controller::run(
                    lead_client.clone(),
                    index.clone(),
                    metrics.clone(),
                    identity.clone(),
                )
            },
            async {
                shutdown.await;
                readiness.shut_down();
                tracing::info!("shutting down: stopping reconciling and releasing the Lease");
            },
        )
        .await;
        let _ = stop.send(true);
        tasks.shutdown().await;
        Ok(())
    }
}
