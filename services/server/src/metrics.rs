//! Prometheus metrics, served on the HTTP port, and the tower layer that records one
//! sample per RPC.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

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
pub struct ComponentLabels {
    pub component: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// All of Setpoint's metrics. Cheap to clone: every field is a shared handle.
#[derive(Clone)]
pub struct Metrics {
    pub rpc_requests: Family<RpcLabels, Counter>,
    pub rpc_duration: Family<MethodLabels, Histogram>,
    pub cache_objects: Family<KindLabels, Gauge>,
    pub watch_restarts: Family<KindLabels, Counter>,
    pub kube_requests: Family<ComponentLabels, Counter>,
    pub tls_handshake_failures: Counter,
    pub tls_handshakes_shed: Family<ReasonLabels, Counter>,
    pub tls_handshakes_in_flight: Gauge,
    pub reload_failures: Counter,
    /// 1 while this replica holds the Lease and runs the reconciler.
    pub leader: Gauge,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            rpc_requests: Family::default(),
            rpc_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 16))
            }),
            cache_objects: Family::default(),
            watch_restarts: Family::default(),
            kube_requests: Family::default(),
            tls_handshake_failures: Counter::default(),
            tls_handshakes_shed: Family::default(),
            tls_handshakes_in_flight: Gauge::default(),
            reload_failures: Counter::default(),
            leader: Gauge::default(),
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
            "cache_objects",
            "Objects held in the watch cache by kind",
            metrics.cache_objects.clone(),
        );
        registry.register(
            "watch_restarts",
            "Watch errors after which the watch restarted, by kind",
            metrics.watch_restarts.clone(),
        );
        registry.register(
            "kube_requests",
            "HTTP requests sent to the Kubernetes API server (watches included), by component: api (cache, writes, health) or reconciler (Lease, controller)",
            metrics.kube_requests.clone(),
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
        registry.register(
            "leader",
            "1 while this replica holds the lease and reconciles",
            metrics.leader.clone(),
        );
        metrics
    }
}

/// Records request count, status code and latency for every gRPC call.
#[derive(Clone)]
pub struct RpcMetricsLayer(pub Metrics);

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = crate::methods::label(request.uri().path());
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            // Errors of unary calls come back "trailers-only": grpc-status in the
            // headers. Without it the call succeeded.
            let code = match &response {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|code| code.to_str().ok())
                    .map(|code| tonic::Code::from_bytes(code.as_bytes()))
                    .unwrap_or(tonic::Code::Ok),
                Err(_) => tonic::Code::Unknown,
            };
            metrics
                .rpc_requests
                .get_or_create(&RpcLabels {
                    method,
                    code: format!("{code:?}"),
                })
                .inc();
            metrics
                .rpc_duration
                .get_or_create(&MethodLabels { method })
                .observe(started.elapsed().as_secs_f64());
            response
        })
    }
}
