//! Starts a real setpoint-api in-process against the shared test control plane, with
//! Setpoint's own manifests (namespace, CRD, RBAC) applied and the server running as its
//! ServiceAccount, and hands out mTLS clients for any identity. What the reconciler's
//! tests share too is in `devenv::fixtures`.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use devpki::{Authority, Subject};
use setpoint_api::{Config, Server};
use setpoint_proto::v1::replica_service_client::ReplicaServiceClient;
use setpoint_proto::v1::{DeploymentRef, SetReplicasRequest};
use testenv::proxy::Proxy;
use tokio::sync::oneshot;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

pub use devenv::fixtures::*;

pub const OPERATOR: &str = "spiffe://setpoint.dev/operator";
pub const VIEWER: &str = "spiffe://setpoint.dev/viewer";
pub const STRANGER: &str = "spiffe://setpoint.dev/stranger";
/// A second operator, e.g. a deploy pipeline.
pub const PIPELINE: &str = "spiffe://setpoint.dev/pipeline";
/// Short, so reload tests do not wait long.
pub const RELOAD_INTERVAL: &str = "200ms";
const VALIDITY: Duration = Duration::from_secs(3600);

pub const POLICY: &str = "
bindings:
  - role: operator
    identities: [spiffe://setpoint.dev/operator, spiffe://setpoint.dev/pipeline]
  - role: viewer
    identities: [spiffe://setpoint.dev/viewer]
";

/// A CA with the files a server needs, in a temporary directory.
pub struct TestPki {
    pub ca: Authority,
    pub dir: tempfile::TempDir,
}

impl TestPki {
    pub fn new() -> Self {
        let ca = Authority::generate("test-client-ca", VALIDITY).expect("CA");
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = Self { ca, dir };
        pki.write("ca.crt", pki.ca.cert_pem());
        pki.rotate_server_certificate();
        pki.write("policy.yaml", POLICY);
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, contents: &str) {
        // Write then rename, as Kubernetes' atomic volume updates do: a reload never
        // sees half a file.
        let temporary = self.path(&format!(".{name}.tmp"));
        std::fs::write(&temporary, contents).expect("write");
        std::fs::rename(&temporary, self.path(name)).expect("rename");
    }

    /// Issues a new server certificate and key and writes them; returns the DER.
    pub fn rotate_server_certificate(&self) -> Vec<u8> {
        let server = self
            .ca
            .issue(&Subject::server(
                "setpoint",
                &["localhost", "127.0.0.1"],
                VALIDITY,
            ))
            .expect("server certificate");
        // Key first: a reload between the two writes fails to load and is retried.
        self.write("server.key", &server.key_pem);
        self.write("server.crt", &server.cert_pem);
        der(&server.cert_pem)
    }

    /// A client certificate and key (PEM) for `identity` (a URI SAN).
    pub fn client(&self, identity: &str) -> (String, String) {
        let issued = self
            .ca
            .issue(&Subject::client("test-client", VALIDITY).with_uri(identity))
            .expect("client certificate");
        (issued.cert_pem, issued.key_pem)
    }
}

pub fn der(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .expect("PEM certificate")
        .1
        .contents
}

/// A running server. Dropping it stops the server.
pub struct Setpoint {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub pki: TestPki,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), setpoint_api::Error>>>,
}

impl Setpoint {
    /// Starts a server that runs as the ServiceAccount `setpoint/<account>`:
    /// `setpoint-api` has its RBAC from `k8s/base/rbac.yaml`, most other names none.
    pub async fn start(account: &str) -> Self {
        Self::start_with(account, &[]).await
    }

    pub async fn start_with(account: &str, extra_args: &[&str]) -> Self {
        Self::start_via(None, account, extra_args).await
    }

    /// Starts a server that reaches the API server through `proxy`, when given.
    pub async fn start_via(proxy: Option<&Proxy>, account: &str, extra_args: &[&str]) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let control_plane = install_setpoint().await;
        let mut kube_config = control_plane
            .service_account_config(devenv::NAMESPACE, account)
            .await
            .expect("ServiceAccount config");
        if let Some(proxy) = proxy {
            kube_config.cluster_url = format!("https://{}", proxy.addr())
                .parse()
                .expect("proxy URL");
        }
        let pki = TestPki::new();
        let path = |name: &str| pki.path(name).display().to_string();
        let defaults = [
            "--listen=127.0.0.1:0".to_string(),
            "--http-listen=127.0.0.1:0".into(),
            format!("--tls-cert={}", path("server.crt")),
            format!("--tls-key={}", path("server.key")),
            format!("--client-ca={}", path("ca.crt")),
            format!("--policy={}", path("policy.yaml")),
            format!("--reload-interval={RELOAD_INTERVAL}"),
            "--drain-timeout=5s".into(),
            "--shutdown-delay=0s".into(),
        ];
        let flag = |arg: &str| arg.split('=').next().unwrap_or(arg).to_owned();
        let mut args = vec!["setpoint-api".to_string()];
        args.extend(
            defaults
                .into_iter()
                .filter(|default| !extra_args.iter().any(|arg| flag(arg) == flag(default))),
        );
        args.extend(extra_args.iter().map(|arg| arg.to_string()));
        let config = <Config as clap::Parser>::try_parse_from(args).expect("server flags");
        let server = Server::bind(config, kube_config).await.expect("bind");
        let (grpc, http) = (
            server.grpc_addr().expect("addr"),
            server.http_addr().expect("addr"),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Self {
            grpc,
            http,
            pki,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// An mTLS client with a certificate for `identity` from the server's client CA.
    pub async fn client(&self, identity: &str) -> ReplicaServiceClient<Channel> {
        let (cert, key) = self.pki.client(identity);
        self.client_with(Some((cert, key)), self.pki.ca.cert_pem())
            .await
            .expect("connect")
    }

    /// An mTLS client for `identity` whose connections come from the loopback address
    /// `source` (any of 127.0.0.0/8), so tests can act as several hosts.
    pub async fn client_from(
        &self,
        identity: &str,
        source: IpAddr,
    ) -> ReplicaServiceClient<Channel> {
        let (cert, key) = self.pki.client(identity);
        self.connect(Some((cert, key)), self.pki.ca.cert_pem(), Some(source))
            .await
            .expect("connect")
    }

    /// A client with any (or no) certificate and trusted CA, for TLS failure tests.
    pub async fn client_with(
        &self,
        identity: Option<(String, String)>,
        server_ca_pem: &str,
    ) -> Result<ReplicaServiceClient<Channel>, tonic::transport::Error> {
        self.connect(identity, server_ca_pem, None).await
    }

    async fn connect(
        &self,
        identity: Option<(String, String)>,
        server_ca_pem: &str,
        source: Option<IpAddr>,
    ) -> Result<ReplicaServiceClient<Channel>, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(server_ca_pem))
            .domain_name("localhost");
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        let channel = Channel::from_shared(format!("https://{}", self.grpc))
            .expect("url")
            .local_address(source)
            .tls_config(tls)?
            .connect_lazy();
        Ok(ReplicaServiceClient::new(channel))
    }

    /// Waits until the watch cache has synced (reads stop returning UNAVAILABLE).
    pub async fn wait_until_ready(&self) {
        testenv::wait_for("the server to become ready", || async {
            (self.http_get("/readyz").await.0 == 200).then_some(())
        })
        .await;
    }

    /// GET on the HTTP port: (status code, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        devenv::http_get(self.http, path).await.expect("HTTP GET")
    }

    /// The value of a counter or gauge from `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        devenv::metric(self.http, name).await.expect("metrics")
    }

    /// Sends the shutdown signal (like SIGTERM) without waiting.
    pub fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Sends the shutdown signal and waits for the server to finish draining.
    pub async fn stop(mut self) -> Result<(), setpoint_api::Error> {
        self.signal_stop();
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the server stops within its drain timeout")
            .expect("the server task does not panic")
    }
}

impl Drop for Setpoint {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

pub fn set_request(namespace: &str, name: &str, replicas: i32) -> SetReplicasRequest {
    SetReplicasRequest {
        deployment: Some(DeploymentRef {
            namespace: namespace.into(),
            name: name.into(),
        }),
        replicas,
        ..SetReplicasRequest::default()
    }
}

/// The setpoint-api binary in a process of its own, started with the files of
/// `devenv::write_server_files` in `dir` and `args`, logging to `dir/<log>`.
pub struct ServerProcess {
    pub process: tokio::process::Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl ServerProcess {
    pub async fn start(dir: &std::path::Path, log: &str, args: &[String]) -> Self {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free port")
        };
        let (grpc, http) = (free(), free());
        let process = devenv::spawn_api(
            env!("CARGO_BIN_EXE_setpoint-api").as_ref(),
            dir,
            grpc,
            http,
            Some(&dir.join(log)),
            args,
        )
        .expect("starting setpoint-api");
        devenv::wait_until_ready(http).await.expect("ready");
        Self {
            process,
            grpc,
            http,
        }
    }

    pub async fn metric(&self, name: &str) -> f64 {
        devenv::metric(self.http, name).await.unwrap_or(0.0)
    }

    pub async fn is_ready(&self) -> bool {
        matches!(devenv::http_get(self.http, "/readyz").await, Ok((200, _)))
    }
}
