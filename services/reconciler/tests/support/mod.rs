//! Starts a real setpoint-reconciler against the shared test control plane, with
//! Setpoint's own manifests (namespace, CRD, RBAC) applied and the reconciler running as
//! its own ServiceAccount: in-process ([`Reconciler`]) or as a process of its own
//! ([`ReconcilerProcess`]). No API: tests write setpoints as the API would
//! (`set_setpoint`).

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use setpoint_reconciler::config::Config;
use setpoint_reconciler::runtime::{Reconciler as Runtime, StartError};
use testenv::proxy::Proxy;
use tokio::sync::oneshot;

pub use devenv::fixtures::*;

/// Short, so a reconciler that ends without releasing the Lease does not hold up the
/// next test's for long.
pub const LEASE: [&str; 2] = ["--lease-duration=3s", "--lease-renew-interval=500ms"];

/// A running reconciler. Dropping it stops it at once (like a crash: the Lease is not
/// released).
pub struct Reconciler {
    pub http: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), StartError>>>,
}

impl Reconciler {
    /// Starts a reconciler named `identity` (in the Lease and in Events) that runs as
    /// Setpoint's ServiceAccount, and waits until it is ready.
    pub async fn start(identity: &str) -> Self {
        Self::start_via(None, identity).await
    }

    /// Like [`Reconciler::start`], reaching the API server through `proxy` when given.
    pub async fn start_via(proxy: Option<&Proxy>, identity: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let control_plane = install_setpoint().await;
        let mut kube_config = control_plane
            .service_account_config(devenv::NAMESPACE, devenv::RECONCILER_SERVICE_ACCOUNT)
            .await
            .expect("ServiceAccount config");
        if let Some(proxy) = proxy {
            kube_config.cluster_url = format!("https://{}", proxy.addr())
                .parse()
                .expect("proxy URL");
        }
        let identity = format!("--identity={identity}");
        let args = [
            "setpoint-reconciler",
            "--http-listen=127.0.0.1:0",
            &identity,
        ]
        .into_iter()
        .chain(LEASE);
        let config = <Config as clap::Parser>::try_parse_from(args).expect("reconciler flags");
        let runtime = Runtime::bind(config, kube_config).await.expect("bind");
        let http = runtime.http_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(runtime.run(async {
            let _ = stopped.await;
        }));
        let reconciler = Self {
            http,
            stop: Some(stop),
            task: Some(task),
        };
        devenv::wait_until_ready(http).await.expect("ready");
        reconciler
    }

    /// The value of a counter or gauge from `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        devenv::metric(self.http, name).await.unwrap_or(0.0)
    }

    pub async fn is_leader(&self) -> bool {
        self.metric("setpoint_leader").await == 1.0
    }

    /// Sends the shutdown signal (like SIGTERM) and waits until the reconciler has
    /// stopped and released the Lease.
    pub async fn stop(mut self) -> Result<(), StartError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the reconciler stops within 10s")
            .expect("the reconciler task does not panic")
    }
}

impl Drop for Reconciler {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The setpoint-reconciler binary in a process of its own, with the ServiceAccount
/// kubeconfig of `devenv::write_server_files` in `dir` and `args`, logging to
/// `dir/<log>`.
pub struct ReconcilerProcess {
    pub process: tokio::process::Child,
    pub http: SocketAddr,
}

impl ReconcilerProcess {
    pub async fn start(dir: &Path, log: &str, args: &[String]) -> Self {
        let http = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        let process = devenv::spawn_reconciler(
            env!("CARGO_BIN_EXE_setpoint-reconciler").as_ref(),
            dir,
            http,
            Some(&dir.join(log)),
            args,
        )
        .expect("starting setpoint-reconciler");
        devenv::wait_until_ready(http).await.expect("ready");
        Self { process, http }
    }

    pub async fn is_leader(&self) -> bool {
        devenv::metric(self.http, "setpoint_leader")
            .await
            .is_ok_and(|leader| leader == 1.0)
    }
}
