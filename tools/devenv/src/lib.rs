//! Installs Setpoint's cluster-wide pieces (`k8s/base`: namespace, CRD, RBAC) into a
//! local control plane and starts Setpoint's processes, for integration tests and
//! `make run`; [`fixtures`] has what the integration tests share.

pub mod fixtures;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use setpoint_proto::v1::replica_service_client::ReplicaServiceClient;
use testenv::ControlPlane;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// The manifests applied, in order.
pub const BASE_MANIFESTS: &[&str] = &["namespace.yaml", "crd.yaml", "admission.yaml", "rbac.yaml"];
/// Setpoint's namespace and the ServiceAccounts of its two processes in those
/// manifests.
pub const NAMESPACE: &str = "setpoint";
pub const API_SERVICE_ACCOUNT: &str = "setpoint-api";
pub const RECONCILER_SERVICE_ACCOUNT: &str = "setpoint-reconciler";

/// The checkout, for `k8s/`: under `bazel run` the workspace, under `bazel test` the
/// runfiles (which hold `k8s/` as data), else the folder Cargo built from.
pub fn repository_root() -> PathBuf {
    let var = std::env::var_os;
    if let Some(workspace) = var("BUILD_WORKSPACE_DIRECTORY") {
        return workspace.into();
    }
    if let (Some(runfiles), Some(workspace)) = (var("TEST_SRCDIR"), var("TEST_WORKSPACE")) {
        return Path::new(&runfiles).join(workspace);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Applies `k8s/base` and waits until the ReplicaSetpoint CRD is established.
pub async fn install(control_plane: &ControlPlane) -> anyhow::Result<()> {
    let base = repository_root().join("k8s/base");
    for manifest in BASE_MANIFESTS {
        let path = base.join(manifest);
        let yaml = std::fs::read_to_string(&path)?;
        control_plane
            .apply_manifest(&yaml)
            .await
            .map_err(|error| anyhow::anyhow!("applying {}: {error}", path.display()))?;
    }
    let crds = Api::<CustomResourceDefinition>::all(control_plane.admin_client().await?);
    testenv::wait_for("the ReplicaSetpoint CRD to be established", || async {
        let crd = crds.get("replicasetpoints.setpoint.dev").await.ok()?;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
    Ok(())
}

/// Validity of the dev PKI.
const PKI_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// The policy shipped in `k8s/base/policy.yaml`: it binds the dev PKI's operator and
/// viewer identities, so local runs use exactly what a deployment uses.
pub fn shipped_policy() -> anyhow::Result<String> {
    let path = repository_root().join("k8s/base/policy.yaml");
    let config_map: ConfigMap = serde_saphyr::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("parsing {}", path.display()))?;
    config_map
        .data
        .and_then(|mut data| data.remove("policy.yaml"))
        .with_context(|| format!("{} has no data.policy.yaml", path.display()))
}

/// Writes what a local Setpoint needs into `dir`: `pki/` (dev PKI), `policy.yaml`,
/// `api.kubeconfig` and `reconciler.kubeconfig` (each process's ServiceAccount: exactly
/// its RBAC) and `admin.kubeconfig`.
pub async fn write_server_files(control_plane: &ControlPlane, dir: &Path) -> anyhow::Result<()> {
    std::fs::copy(control_plane.kubeconfig(), dir.join("admin.kubeconfig"))?;
    for (account, file) in [
        (API_SERVICE_ACCOUNT, "api.kubeconfig"),
        (RECONCILER_SERVICE_ACCOUNT, "reconciler.kubeconfig"),
    ] {
        control_plane
            .write_service_account_kubeconfig(NAMESPACE, account, &dir.join(file))
            .await?;
    }
    devpki::write_dev_pki(&dir.join("pki"), PKI_VALIDITY)?;
    std::fs::write(dir.join("policy.yaml"), shipped_policy()?)?;
    Ok(())
}

/// Starts `setpoint-api` (`binary`) with the files of [`write_server_files`] and
/// `extra_args`; it logs to `log` (or this process's stdout and stderr) and is killed if
/// the handle is dropped.
pub fn spawn_api(
    binary: &Path,
    dir: &Path,
    listen: SocketAddr,
    http_listen: SocketAddr,
    log: Option<&Path>,
    extra_args: &[String],
) -> anyhow::Result<Child> {
    let pki = dir.join("pki");
    let file = |flag: &str, path: PathBuf| format!("--{flag}={}", path.display());
    let args = [
        format!("--listen={listen}"),
        format!("--http-listen={http_listen}"),
        file("tls-cert", pki.join("server.crt")),
        file("tls-key", pki.join("server.key")),
        file("client-ca", pki.join("client-ca.crt")),
        file("policy", dir.join("policy.yaml")),
        // No load balancer to drain from locally: Ctrl-C stops at once.
        "--shutdown-delay=0s".into(),
    ];
    let kubeconfig = dir.join("api.kubeconfig");
    spawn(binary, &kubeconfig, log, args.iter().chain(extra_args))
}

/// Starts `setpoint-reconciler` (`binary`) with its ServiceAccount's kubeconfig from
/// [`write_server_files`] and `extra_args`, like [`spawn_api`].
pub fn spawn_reconciler(
    binary: &Path,
    dir: &Path,
    http_listen: SocketAddr,
    log: Option<&Path>,
    extra_args: &[String],
) -> anyhow::Result<Child> {
    let args = [format!("--http-listen={http_listen}")];
    let kubeconfig = dir.join("reconciler.kubeconfig");
    spawn(binary, &kubeconfig, log, args.iter().chain(extra_args))
}

fn spawn<'a>(
    binary: &Path,
    kubeconfig: &Path,
    log: Option<&Path>,
    args: impl Iterator<Item = &'a String>,
) -> anyhow::Result<Child> {
    let mut command = Command::new(binary);
    if let Some(log) = log {
        let file = std::fs::File::create(log)?;
        command.stdout(file.try_clone()?).stderr(file);
    }
    command
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (build it with `cargo build --bins`)",
                binary.display()
            )
        })
}

/// Polls `/readyz` on `http` for up to a minute.
pub async fn wait_until_ready(http: SocketAddr) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !matches!(http_get(http, "/readyz").await, Ok((200, _))) {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "Setpoint did not become ready on {http} within 60s (see its log above)"
        );
        // Often enough to time a start-up (`make bench`) to the poll.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Creates (or updates) the demo Deployments `demo/{web,api,worker}`.
pub async fn create_demo(control_plane: &ControlPlane) -> anyhow::Result<()> {
    let namespace = "demo";
    control_plane
        .apply_manifest(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n"
        ))
        .await?;
    let deployments = Api::<Deployment>::namespaced(control_plane.admin_client().await?, namespace);
    for (name, replicas) in [("web", 3), ("api", 2), ("worker", 1)] {
        deployments
            .patch(
                name,
                &PatchParams::apply("setpoint-dev").force(),
                &Patch::Apply(testenv::deployment(name, replicas)),
            )
            .await?;
    }
    Ok(())
}

/// A plain HTTP/1.1 GET (the server's probe and metrics port): `(status, body)`.
pub async fn http_get(address: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: setpoint\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The sum of the samples of metric `name` (a name with labels, e.g.
/// `setpoint_leader`) on the `/metrics` of the process at `http`.
pub async fn metric(http: SocketAddr, name: &str) -> anyhow::Result<f64> {
    let (_, body) = http_get(http, "/metrics").await?;
    Ok(body
        .lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// A gRPC client of the server at `grpc` as the dev PKI's operator (files of
/// [`write_server_files`] in `dir`).
pub async fn operator_client(
    dir: &Path,
    grpc: SocketAddr,
) -> anyhow::Result<ReplicaServiceClient<Channel>> {
    let pki = dir.join("pki");
    let read = |name: &str| std::fs::read(pki.join(name));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")?))
        .identity(Identity::from_pem(
            read("operator.crt")?,
            read("operator.key")?,
        ))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{grpc}"))?
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(ReplicaServiceClient::new(channel))
}

/// Sends `signal` (e.g. `libc::SIGTERM`) to the process `pid`; a process that is already
/// gone is not an error.
#[allow(unsafe_code)]
pub fn send_signal(pid: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) on a pid with a valid signal number has no memory effects.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}
