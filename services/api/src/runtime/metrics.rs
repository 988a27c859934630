//! The API's Prometheus metrics, served on the HTTP port. [`crate::edge::access`]
//! records the RPCs'.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub method: &'static str,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// The API's own metrics (the index's and the Kubernetes client's are registered
/// beside them). Cheap to clone: every field is a shared handle.
#[derive(Clone)]
pub struct Metrics {
    pub rpc_requests: Family<RpcLabels, Counter>,
    pub rpc_duration: Family<MethodLabels, Histogram>,
    pub tls_handshake_failures: Counter,
    pub tls_handshakes_shed: Family<ReasonLabels, Counter>,
    pub tls_handshakes_in_flight: Gauge,
    pub reload_failures: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            rpc_requests: Family::default(),
            rpc_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 16))
            }),
            tls_handshake_failures: Counter::default(),
            tls_handshakes_shed: Family::default(),
            tls_handshakes_in_flight: Gauge::default(),
            reload_failures: Counter::default(),
        };
        registry.register(
            "grpc_requests",
            "gRPC requests by method and status code",
            metrics.rpc_requests.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "gRPC request latency by method",
            metrics.rpc_duration.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "Failed or timed-out TLS handshakes on the API port",
            metrics.tls_handshake_failures.clone(),
        );
        registry.register(
            "tls_handshakes_shed",
            "Connections closed before their TLS handshake: per_source_limit (a new one from a source at its cap) or total_limit (the oldest, to admit a new one)",
            metrics.tls_handshakes_shed.clone(),
        );
        registry.register(
            "tls_handshakes_in_flight",
            "TLS handshakes in progress on the API port",
            metrics.tls_handshakes_in_flight.clone(),
        );
        registry.register(
            "reload_failures",
            "Changed TLS or policy files that failed to load (the previous version stays)",
            metrics.reload_failures.clone(),
        );
        metrics
    }
}
