//! `setpoint-api`'s process, the one place it is wired and started: [`Server::bind`]
//! loads TLS material and the policy and binds both ports (failing fast on bad
//! configuration); [`Server::run`] starts the index, health probing, file reloading, the
//! watch hub and both servers, and shuts everything down when the given signal fires.

pub mod config;
pub mod metrics;
pub mod reload;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use setpoint_core::Policy;
use setpoint_core::limits::WriteLimiter;
use setpoint_proto::v1::replica_service_server::{ReplicaServiceServer, SERVICE_NAME};
use setpoint_runtime::base::{Base, Running};
use setpoint_runtime::health::Readiness;
use setpoint_runtime::signal;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::Error;
use crate::edge::access::AccessLayer;
use crate::edge::authz::AuthorizationLayer;
use crate::edge::grpc::ReplicaApi;
use crate::edge::tls;
use crate::replicas::Replicas;
use crate::watch::hub::Hub;
use crate::watch::limits::WatchLimits;
use crate::watch::stream::Watchers;
use config::Config;
use metrics::Metrics;
use reload::Reloader;

/// Largest request message: requests are a few names and numbers.
const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Largest response message: a full page of 500 Deployments fits easily.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Dry runs allowed per write of the write budget (they write nothing, but are audited).
const DRY_RUNS_PER_WRITE: u32 = 10;
/// HTTP/2 streams (concurrent RPCs) per connection.
const MAX_CONCURRENT_STREAMS: u32 = 64;
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Server {
    config: Config,
    base: Base,
    metrics: Metrics,
    tls: Reloader<ServerConfig>,
    policy: Reloader<Policy>,
    grpc_listener: TcpListener,
}

impl Server {
    pub async fn bind(config: Config, kube_config: kube::Config) -> Result<Self, Error> {
        config.validate().map_err(Error::Config)?;
        let (base, metrics) = Base::bind(
            kube_config,
            "api",
            config.index.clone(),
            config.health.clone(),
            Metrics::register,
        )
        .await?;
        let files = config.tls.clone();
        let tls = Reloader::new(
            "TLS configuration",
            files.paths(),
            move || tls::server_config(&files),
            metrics.reload_failures.clone(),
        )?;
        let policy_path = config.policy.clone();
        let policy = Reloader::new(
            "authorization policy",
            vec![policy_path.clone()],
            move || load_policy(&policy_path),
            metrics.reload_failures.clone(),
        )?;
        let address = config.listen;
        let grpc_listener = TcpListener::bind(address)
            .await
            .map_err(Error::io(format!("binding {address}")))?;
        Ok(Self {
            config,
            base,
            metrics,
            tls,
            policy,
            grpc_listener,
        })
    }

    /// The bound gRPC address (useful with port 0).
    pub fn grpc_addr(&self) -> Result<SocketAddr, Error> {
        self.grpc_listener
            .local_addr()
            .map_err(Error::io("reading the gRPC address"))
    }

    /// The bound HTTP address (useful with port 0).
    pub fn http_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.base.http_addr()?)
    }

    /// Serves until `shutdown` completes; then reports not ready but serves on for
    /// `--shutdown-delay`, stops accepting, lets in-flight requests finish for at most
    /// `--drain-timeout`, and stops every background task.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Self {
            config,
            base,
            metrics,
            tls,
            policy,
            grpc_listener,
        } = self;
        // Dropping the set aborts every task in it.
        let mut tasks = JoinSet::new();
        // Serving stops after --shutdown-delay.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let Running {
            client,
            index,
            readiness,
        } = base.start(signal::stopped(stopped.clone()), &mut tasks);
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        tasks.spawn(report_health(readiness.clone(), health_reporter));
        let (tls_config, current_policy) = (tls.shared(), policy.shared());
        tasks.spawn(tls.run(config.reload_interval));
        tasks.spawn(policy.run(config.reload_interval));

        let replicas = Arc::new(Replicas {
            index: index.clone(),
            client,
            max_replicas: config.writes.max_replicas,
            protected_namespaces: config.protected_namespaces(),
            write_limiter: WriteLimiter::new(
                config.writes.writes_per_minute,
                config.writes.write_burst,
            ),
            dry_run_limiter: WriteLimiter::new(
                config
                    .writes
                    .writes_per_minute
                    .saturating_mul(DRY_RUNS_PER_WRITE),
                config.writes.write_burst.saturating_mul(DRY_RUNS_PER_WRITE),
            ),
            write_timeout: config.connections.request_timeout,
            writes: TaskTracker::new(),
        });
        let writes = replicas.writes.clone();
        let hub = Hub::default();
        tasks.spawn(hub.clone().run(index));
        let watchers = Watchers {
            hub,
            limits: Arc::new(WatchLimits::new(
                config.connections.max_watches_per_identity,
                config.connections.max_watches_per_connection,
            )),
            policy: current_policy.clone(),
            stop: stopped.clone(),
            max_age: config.connections.max_connection_age,
        };
        let api = ReplicaServiceServer::new(ReplicaApi { replicas, watchers })
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES);
        let incoming = tls::incoming(
            grpc_listener,
            tls_config,
            config.handshakes,
            metrics.clone(),
            &mut tasks,
        );
        let grpc = tonic::transport::Server::builder()
            .timeout(config.connections.request_timeout)
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .max_connection_age(config.connections.max_connection_age)
            .layer(AccessLayer::new(metrics, config.access_log_sample))
            .layer(AuthorizationLayer {
                policy: current_policy,
            })
            .add_service(health_service)
            .add_service(api)
            .serve_with_incoming_shutdown(incoming, signal::stopped(stopped));
        tokio::pin!(grpc);
        tracing::info!(grpc = %config.listen, http = %config.health.http_listen, "serving");

        let (shutdown_delay, drain_timeout) = (
            config.shutdown.shutdown_delay,
            config.shutdown.drain_timeout,
        );
        let served = tokio::select! {
            result = &mut grpc => Some(result),
            () = shutdown => {
                // Not ready at once, so that Service endpoints drop this replica, while
                // calls are still served.
                readiness.shut_down();
                tracing::info!(?shutdown_delay, "shutting down: not ready, still serving");
                tokio::time::timeout(shutdown_delay, &mut grpc).await.ok()
            }
        };
        let served = match served {
            Some(result) => result.map_err(|error| Error::Io {
                context: "gRPC server".into(),
                source: std::io::Error::other(error),
            }),
            None => {
                tracing::info!(?drain_timeout, "shutting down: draining connections");
                // A closed receiver only means everything already stopped.
                let _ = stop.send(true);
                if tokio::time::timeout(drain_timeout, &mut grpc)
                    .await
                    .is_err()
                {
                    tracing::warn!("drain timeout reached; closing remaining connections");
                }
                Ok(())
            }
        };
        // Writes whose callers gave up may still run: let them finish and be audited.
        writes.close();
        if tokio::time::timeout(config.connections.request_timeout, writes.wait())
            .await
            .is_err()
        {
            tracing::warn!("writes still running at exit; their outcome is not audited");
        }
        let _ = stop.send(true);
        tasks.shutdown().await;
        served
    }
}

/// Keeps `grpc.health.v1` (the whole server and `setpoint.v1.ReplicaService`) in step
/// with readiness.
async fn report_health(readiness: Arc<Readiness>, reporter: HealthReporter) {
    let mut changes = readiness.changes();
    loop {
        let status = if *changes.borrow_and_update() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status("", status).await;
        reporter.set_service_status(SERVICE_NAME, status).await;
        if changes.changed().await.is_err() {
            return;
        }
    }
}

fn load_policy(path: &Path) -> Result<Policy, Error> {
    let yaml = std::fs::read_to_string(path).map_err(Error::io(format!(
        "reading the authorization policy {}",
        path.display()
    )))?;
    Policy::parse(&yaml).map_err(|source| Error::Policy {
        path: path.to_owned(),
        source,
    })
}
