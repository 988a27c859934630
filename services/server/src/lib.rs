//! Setpoint's server, and the one place everything is wired and started.
//! [`Server::bind`] loads TLS material and the policy and binds both ports (failing fast
//! on bad configuration); [`Server::run`] starts the watch cache, health probing, file
//! reloading, leader election (the leader runs the reconciler) and both servers, and
//! shuts everything down when the given signal fires.
//!
//! Requests flow: [`tls`] → [`access`] (span, metrics, access log) → [`authz`]
//! (identity, permission) → [`grpc`] (protobuf ↔ domain) → [`replicas`] (reads from
//! [`cache`]; writes, within the caller's write budget, to the setpoint).

pub mod access;
pub mod authz;
pub mod cache;
pub mod changes;
pub mod config;
pub mod error;
pub mod grpc;
pub mod health;
pub mod http;
pub mod identity;
pub mod lease;
pub mod methods;
pub mod metrics;
pub mod reload;
pub mod replicas;
pub mod selector;
pub mod tls;
pub mod view;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use rustls::ServerConfig;
use setpoint_core::Policy;
use setpoint_core::limits::WriteLimiter;
use setpoint_proto::v1::replica_service_server::ReplicaServiceServer;
use setpoint_reconciler::metrics::ReconcilerMetrics;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;
use tower::util::MapRequestLayer;

pub use crate::config::Config;
pub use crate::error::Error;

use crate::access::AccessLayer;
use crate::authz::AuthorizationLayer;
use crate::cache::Cache;
use crate::changes::{Changes, WatchLimits, Watches};
use crate::grpc::ReplicaApi;
use crate::health::Readiness;
use crate::lease::LeaseConfig;
use crate::metrics::{ComponentLabels, Metrics};
use crate::reload::Reloader;
use crate::replicas::Replicas;
use crate::tls::{HandshakeLimits, TlsFiles};

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
/// The leader-election Lease, in `--lease-namespace`.
const LEASE_NAME: &str = "setpoint-leader";
/// Prefix of every metric name.
const METRICS_PREFIX: &str = "setpoint";
/// Time to stop the reconciler and release the Lease on shutdown (both start with the
/// drain).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Server {
    config: Config,
    client: kube::Client,
    reconciler_client: kube::Client,
    metrics: Metrics,
    reconciler_metrics: ReconcilerMetrics,
    registry: Registry,
    tls: Reloader<ServerConfig>,
    policy: Reloader<Policy>,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
}

impl Server {
    pub async fn bind(config: Config, kube_config: kube::Config) -> Result<Self, Error> {
        config.validate().map_err(Error::Config)?;
        let mut registry = Registry::default();
        let prefixed = registry.sub_registry_with_prefix(METRICS_PREFIX);
        let metrics = Metrics::register(prefixed);
        let reconciler_metrics = ReconcilerMetrics::register(prefixed);
        let files = TlsFiles {
            cert: config.tls_cert.clone(),
            key: config.tls_key.clone(),
            client_ca: config.client_ca.clone(),
        };
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

        // One client for the API side (cache, writes, health) and one for leadership
        // (Lease, reconciler), each counting its requests: that is how tests prove reads
        // never make one while the reconciler works.
        let client = counted_client(kube_config.clone(), &metrics, "api")?;
        let reconciler_client = counted_client(kube_config, &metrics, "reconciler")?;

        let bind = |address: SocketAddr| async move {
            TcpListener::bind(address)
                .await
                .map_err(Error::io(format!("binding {address}")))
        };
        Ok(Self {
            grpc_listener: bind(config.listen).await?,
            http_listener: bind(config.http_listen).await?,
            config,
            client,
            reconciler_client,
            metrics,
            reconciler_metrics,
            registry,
            tls,
            policy,
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
        self.http_listener
            .local_addr()
            .map_err(Error::io("reading the HTTP address"))
    }

    /// Serves until `shutdown` completes; then reports not ready and releases the Lease
    /// but serves on for `--shutdown-delay`, stops accepting, lets in-flight requests
    /// finish for at most `--drain-timeout`, and stops every background task.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Self {
            config,
            client,
            reconciler_client,
            metrics,
            reconciler_metrics,
            registry,
            tls,
            policy,
            grpc_listener,
            http_listener,
        } = self;
        // Dropping the set aborts every task in it.
        let mut tasks = JoinSet::new();
        let cache = Cache::start(&client, config.watch_timeout, &metrics, &mut tasks);
        let readiness = Arc::new(Readiness::new(cache.clone(), config.probe_interval));
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        tasks.spawn(health::run(
            readiness.clone(),
            client.clone(),
            health_reporter,
            config.probe_interval,
        ));
        let (tls_config, current_policy) = (tls.shared(), policy.shared());
        tasks.spawn(tls.run(config.reload_interval));
        tasks.spawn(policy.run(config.reload_interval));

        // Leading stops as soon as shutdown starts; serving after --shutdown-delay.
        let (stop_leading, leading_stopped) = tokio::sync::watch::channel(false);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let stop_signal = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            // An error means the sender is gone, which also means stop.
            let _ = stopped.wait_for(|stop| *stop).await;
        };

        // Every replica serves reads; only the Lease holder reconciles. A JoinSet, so that
        // dropping `run` (a crash, in tests) also stops leading.
        let mut leadership = JoinSet::new();
        let lease_config = LeaseConfig {
            namespace: config.lease_namespace.clone(),
            name: LEASE_NAME.into(),
            identity: config.identity.clone(),
            duration: config.lease_duration,
            renew_every: config.lease_renew_interval,
        };
        let (identity, stores) = (config.identity.clone(), cache.stores.clone());
        leadership.spawn(lease::run(
            reconciler_client.clone(),
            lease_config,
            metrics.leader.clone(),
            move || {
                setpoint_reconciler::controller::run(
                    reconciler_client.clone(),
                    stores.clone(),
                    reconciler_metrics.clone(),
                    identity.clone(),
                )
            },
            stop_signal(leading_stopped),
        ));

        let http = axum::serve(
            http_listener,
            http::router(readiness.clone(), Arc::new(registry)),
        )
        .with_graceful_shutdown(stop_signal(stopped.clone()));
        tasks.spawn(async move {
            if let Err(error) = http.await {
                tracing::error!(%error, "HTTP server failed");
            }
        });

        let replicas = Arc::new(Replicas {
            cache,
            client,
            max_replicas: config.max_replicas,
            protected_namespaces: config.protected_namespaces(),
            write_limiter: WriteLimiter::new(config.writes_per_minute, config.write_burst),
            dry_run_limiter: WriteLimiter::new(
                config.writes_per_minute.saturating_mul(DRY_RUNS_PER_WRITE),
                config.write_burst.saturating_mul(DRY_RUNS_PER_WRITE),
            ),
            write_timeout: config.request_timeout,
            writes: TaskTracker::new(),
        });
        let writes = replicas.writes.clone();
        let changes = Changes::default();
        tasks.spawn(changes.clone().run(replicas.cache.clone()));
        let watches = Watches {
            changes,
            limits: Arc::new(WatchLimits::new(
                config.max_watches_per_identity,
                config.max_watches_per_connection,
            )),
            policy: current_policy.clone(),
            stop: stopped.clone(),
            max_age: config.max_connection_age,
        };
        let api = ReplicaServiceServer::new(ReplicaApi { replicas, watches })
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES);
        let incoming = tls::incoming(
            grpc_listener,
            tls_config,
            HandshakeLimits {
                per_source: config.max_handshakes_per_source,
                total: config.max_handshakes,
                timeout: config.handshake_timeout,
            },
            metrics.clone(),
            &mut tasks,
        );
        let grpc = tonic::transport::Server::builder()
            .timeout(config.request_timeout)
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .max_connection_age(config.max_connection_age)
            .layer(AccessLayer::new(metrics, config.access_log_sample))
            .layer(AuthorizationLayer {
                policy: current_policy,
            })
            .add_service(health_service)
            .add_service(api)
            .serve_with_incoming_shutdown(incoming, stop_signal(stopped));
        tokio::pin!(grpc);
        tracing::info!(grpc = %config.listen, http = %config.http_listen, "serving");

        let served = tokio::select! {
            result = &mut grpc => Some(result),
            () = shutdown => {
                // Not ready at once, so that Service endpoints drop this replica, while
                // calls are still served; the Lease is released meanwhile.
                readiness.shut_down();
                let _ = stop_leading.send(true);
                tracing::info!(shutdown_delay = ?config.shutdown_delay, "shutting down: not ready, still serving");
                tokio::time::timeout(config.shutdown_delay, &mut grpc).await.ok()
            }
        };
        let served = match served {
            Some(result) => result.map_err(|error| Error::Io {
                context: "gRPC server".into(),
                source: std::io::Error::other(error),
            }),
            None => {
                tracing::info!(drain_timeout = ?config.drain_timeout, "shutting down: draining connections");
                // A closed receiver only means everything already stopped.
                let _ = stop.send(true);
                if tokio::time::timeout(config.drain_timeout, &mut grpc)
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
        if tokio::time::timeout(config.request_timeout, writes.wait())
            .await
            .is_err()
        {
            tracing::warn!("writes still running at exit; their outcome is not audited");
        }
        // Also on a gRPC error: stop the reconciler and release the Lease.
        let _ = stop_leading.send(true);
        let _ = stop.send(true);
        if tokio::time::timeout(RELEASE_TIMEOUT, leadership.join_next())
            .await
            .is_err()
        {
            tracing::warn!("leader election did not stop in {RELEASE_TIMEOUT:?}");
        }
        tasks.shutdown().await;
        served
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

/// A kube client whose requests count in `setpoint_kube_requests_total{component}`.
fn counted_client(
    config: kube::Config,
    metrics: &Metrics,
    component: &'static str,
) -> Result<kube::Client, Error> {
    let requests = metrics
        .kube_requests
        .get_or_create(&ComponentLabels { component })
        .clone();
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&MapRequestLayer::new(move |request| {
            requests.inc();
            request
        }))
        .build())
}
