//! Readiness: "serving" means the watch cache has synced **and** the Kubernetes API
//! answered a bounded probe recently. The same answer drives `grpc.health.v1` on the API
//! port and `/readyz` on the HTTP port.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube::Client;
use setpoint_api::v1::replica_service_server::SERVICE_NAME;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::cache::Cache;

/// Bound on one connectivity probe: the kube client has no read timeout of its own.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// A probe older than this many intervals no longer counts as "reachable".
const PROBES_BEFORE_UNREADY: u32 = 3;
/// How often readiness is re-evaluated (the cache may sync between probes).
const EVALUATE_EVERY: Duration = Duration::from_secs(1);

pub struct Readiness {
    cache: Cache,
    last_contact: Mutex<Option<Instant>>,
    max_age: Duration,
}

impl Readiness {
    pub fn new(cache: Cache, probe_interval: Duration) -> Self {
        Self {
            cache,
            last_contact: Mutex::new(None),
            max_age: probe_interval * PROBES_BEFORE_UNREADY,
        }
    }

    pub fn is_ready(&self) -> bool {
        let last_contact = *self
            .last_contact
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.cache.is_synced() && last_contact.is_some_and(|at| at.elapsed() < self.max_age)
    }

    fn record_contact(&self) {
        *self
            .last_contact
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }
}

/// Probes `GET /version` every `interval` and keeps the gRPC health status in step
/// with [`Readiness::is_ready`]. Runs until dropped.
pub async fn run(
    readiness: Arc<Readiness>,
    client: Client,
    reporter: HealthReporter,
    interval: Duration,
) {
    let mut last_probe: Option<Instant> = None;
    let mut reported = None;
    loop {
        if last_probe.is_none_or(|at| at.elapsed() >= interval) {
            last_probe = Some(Instant::now());
            match tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await {
                Ok(Ok(_)) => readiness.record_contact(),
                Ok(Err(error)) => tracing::warn!(%error, "Kubernetes API probe failed"),
                Err(_) => tracing::warn!("Kubernetes API probe timed out after {PROBE_TIMEOUT:?}"),
            }
        }
        let ready = readiness.is_ready();
        if reported != Some(ready) {
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            reporter.set_service_status(SERVICE_NAME, status).await;
            tracing::info!(ready, "readiness changed");
            reported = Some(ready);
        }
        tokio::time::sleep(EVALUATE_EVERY).await;
    }
}
