//! The reconciler's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone)]
pub struct ReconcilerMetrics {
    /// Reconciles by result: scaled, in_sync, held, conflict, error.
    pub reconciles: Family<ResultLabels, Counter>,
    pub duration: Histogram,
    /// Setpoints waiting for a retry after an error (kube-runtime does not expose the
    /// depth of its own queue).
    pub backoff_objects: Gauge,
    /// 1 while this replica holds the Lease and reconciles.
    pub leader: Gauge,
}

impl ReconcilerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Family::default(),
            duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            backoff_objects: Gauge::default(),
            leader: Gauge::default(),
        };
        registry.register(
            "reconciles",
            "Reconciles by result",
            metrics.reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time to reconcile one setpoint",
            metrics.duration.clone(),
        );
        registry.register(
            "reconcile_backoff_objects",
            "Setpoints waiting to be retried after an error",
            metrics.backoff_objects.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the lease and reconciles",
            metrics.leader.clone(),
        );
        metrics
    }
}
