//! The outermost layer of every RPC: it opens the RPC's span (`rpc{method, identity,
//! resource}`; authorization adds the identity, the handler the resource), counts the
//! call and its latency in the metrics, and writes the access log (target
//! `setpoint::access`): every failed, denied or cancelled call and every write, and
//! successful reads one in `--access-log-sample`, so a busy server can afford it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use setpoint_core::Permission;
use tracing::Instrument;
use tracing::field::Empty;

use crate::edge::methods;
use crate::runtime::metrics::{MethodLabels, Metrics, RpcLabels};

#[derive(Clone)]
pub struct AccessLayer {
    pub metrics: Metrics,
    /// Log one successful read in this many.
    pub sample: u64,
    reads: Arc<AtomicU64>,
}

impl AccessLayer {
    pub fn new(metrics: Metrics, sample: u64) -> Self {
        Self {
            metrics,
            sample: sample.max(1),
            reads: Arc::default(),
        }
    }
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = Access<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Access {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Access<S> {
    inner: S,
    layer: AccessLayer,
}

impl<S, B, R> tower::Service<http::Request<B>> for Access<S>
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
        let path = request.uri().path();
        let (method, write) = methods::lookup(path)
            .map_or(("unknown", false), |(method, permission)| {
                (method, permission == Permission::Write)
            });
        let span = tracing::info_span!("rpc", method, identity = Empty, resource = Empty);
        let mut call = Call {
            layer: self.layer.clone(),
            method,
            write,
            started: Instant::now(),
            recorded: false,
        };
        // The inner layers run their synchronous part (authorization) in the span too.
        let response = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
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
                call.record(code);
                response
            }
            .instrument(span),
        )
    }
}

/// One call on its way through; recorded when it answers, or as `Cancelled` when it is
/// dropped first (tonic's deadline, or the client's reset, drops the future).
struct Call {
    layer: AccessLayer,
    method: &'static str,
    write: bool,
    started: Instant,
    recorded: bool,
}

impl Call {
    fn record(&mut self, code: tonic::Code) {
        self.recorded = true;
        self.layer
            .record(self.method, self.write, code, self.started.elapsed());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.recorded {
            self.record(tonic::Code::Cancelled);
        }
    }
}

impl AccessLayer {
    fn record(
        &self,
        method: &'static str,
        write: bool,
        code: tonic::Code,
        latency: std::time::Duration,
    ) {
        let code_name = format!("{code:?}");
        self.metrics
            .rpc_requests
            .get_or_create(&RpcLabels {
                method,
                code: code_name.clone(),
            })
            .inc();
        self.metrics
            .rpc_duration
            .get_or_create(&MethodLabels { method })
            .observe(latency.as_secs_f64());
        let sampled = code != tonic::Code::Ok
            || write
            || self
                .reads
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(self.sample);
        if sampled {
            tracing::info!(
                target: "setpoint::access",
                code = code_name,
                latency_ms = latency.as_secs_f64() * 1000.0,
                "rpc"
            );
        }
    }
}
