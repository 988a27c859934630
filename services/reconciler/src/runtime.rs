//! `setpoint-reconciler`'s process, the one place it is wired and started:
//! [`Reconciler::bind`] checks the configuration and binds the HTTP port (failing fast);
//! [`Reconciler::run`] starts the index, health probing, the HTTP port and leader
//! election (the holder runs [`crate::controller`]), and on shutdown stops reconciling,
//! releases the Lease and stops every task.

use std::future::Future;
use std::net::SocketAddr;

use setpoint_runtime::base::{self, Base, Running};
use setpoint_runtime::signal;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::controller;
use crate::lease;
use crate::metrics::ReconcilerMetrics;

/// What can stop the process from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Start(#[from] base::Error),
}

pub struct Reconciler {
    config: Config,
    base: Base,
    metrics: ReconcilerMetrics,
}

impl Reconciler {
    pub async fn bind(config: Config, kube_config: kube::Config) -> Result<Self, StartError> {
        config.validate().map_err(StartError::Config)?;
        let (base, metrics) = Base::bind(
            kube_config,
            "reconciler",
            config.index.clone(),
            config.health.clone(),
            ReconcilerMetrics::register,
        )
        .await?;
        Ok(Self {
            config,
            base,
            metrics,
        })
    }

    /// The bound HTTP address (useful with port 0).
    pub fn http_addr(&self) -> Result<SocketAddr, StartError> {
        Ok(self.base.http_addr()?)
    }

    /// Runs until `shutdown` completes; then reports not ready, stops reconciling and
    /// releases the Lease (so that a peer takes over at once), and stops every task.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
        let Self {
            config,
            base,
            metrics,
        } = self;
        // Dropping the set aborts every task in it.
        let mut tasks = JoinSet::new();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let Running {
            client,
            index,
            readiness,
        } = base.start(signal::stopped(stopped), &mut tasks);
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
