//! A real, local Kubernetes control plane for integration tests: etcd and kube-apiserver
//! (and, on request, kube-controller-manager) built from their Go modules by
//! `tools/controlplane/build.sh` and started on loopback ports.
//!
//! One control plane is shared by all tests of a test binary ([`shared`]); tests isolate
//! themselves by namespace ([`ControlPlane::namespace`]). Tests that stop the API server
//! belong in a test binary of their own, since they disrupt every test sharing it.
//!
//! There is no kubelet, scheduler or network: Pods are stored but stay `Pending`.
//!
//! Where a real control plane is overkill, [`fake`] scripts the API server's answers.

pub mod fake;
mod pki;
mod process;
pub mod proxy;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Container, Namespace, PodSpec, PodTemplateSpec, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::json;

use crate::pki::Pki;
use crate::process::Component;

/// How long the API server may take to become ready (about 5-20 s warm on 2 cores).
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long [`wait_for`] polls a condition before failing the test.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Bound on each readiness probe: the kube client has no read timeout of its own.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Field manager for the objects testenv applies.
const FIELD_MANAGER: &str = "testenv";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building the control plane with {script}: {reason}")]
    Build { script: PathBuf, reason: String },
    #[error("starting {component}: {source}")]
    Spawn {
        component: &'static str,
        source: std::io::Error,
    },
    #[error("{component} did not become ready: {reason}\n{log_tail}")]
    NotReady {
        component: &'static str,
        reason: String,
        log_tail: String,
    },
    #[error("TokenRequest for ServiceAccount {namespace}/{name} returned no token")]
    NoToken { namespace: String, name: String },
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("generating the control plane's PKI: {0}")]
    Pki(#[from] devpki::Error),
    #[error("generating the ServiceAccount key: {0}")]
    Key(#[from] rcgen::Error),
    #[error("reading the control plane's kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The control plane shared by every test in this test binary, started on first use.
///
/// # Panics
/// When the control plane cannot start; the message names the failing component and
/// ends with its log. Every test of the binary then fails with the same message.
pub async fn shared() -> &'static ControlPlane {
    let started = SHARED
        .get_or_init(|| async {
            let result = ControlPlane::start()
                .await
                .map_err(|error| error.to_string());
            if result.is_ok() {
                stop_shared_at_exit();
            }
            result
        })
        .await;
    match started {
        Ok(control_plane) => control_plane,
        Err(error) => panic!("the test control plane failed to start: {error}"),
    }
}

static SHARED: tokio::sync::OnceCell<Result<ControlPlane, String>> =
    tokio::sync::OnceCell::const_new();

/// Statics are never dropped, so the shared control plane is stopped by an exit hook.
#[allow(unsafe_code)]
fn stop_shared_at_exit() {
    extern "C" fn stop_shared() {
        if let Some(Ok(control_plane)) = SHARED.get() {
            control_plane.shutdown();
        }
    }
    // SAFETY: registers a plain function with no captured state; atexit(3) only fails when
    // its table is full, and then the children still die with the process (PDEATHSIG).
    unsafe {
        libc::atexit(stop_shared);
    }
}

/// A running etcd + kube-apiserver pair with an admin identity.
pub struct ControlPlane {
    dir: PathBuf,
    server: String,
    apiserver_addr: SocketAddr,
    ca_cert: PathBuf,
    binaries: PathBuf,
    kubeconfig: PathBuf,
    etcd_args: Vec<String>,
    apiserver_args: Vec<String>,
    controller_manager_args: Vec<String>,
    version: String,
    processes: Mutex<Processes>,
}

struct Processes {
    etcd: Component,
    apiserver: Option<Component>,
    controller_manager: Option<Component>,
}

impl Processes {
    /// The started components in start order: etcd, kube-apiserver, kube-controller-manager.
    fn running(&mut self) -> impl DoubleEndedIterator<Item = &mut Component> {
        [
            Some(&mut self.etcd),
            self.apiserver.as_mut(),
            self.controller_manager.as_mut(),
        ]
        .into_iter()
        .flatten()
    }
}

impl ControlPlane {
    /// Builds the binaries if needed, then starts etcd and kube-apiserver and waits until
    /// the API server is ready and the `default` namespace exists.
    pub async fn start() -> Result<Self, Error> {
        let started = Instant::now();
        let binaries = locate_binaries().await?;
        let dir = tempfile::Builder::new()
            .prefix("setpoint-testenv-")
            .tempdir()?
            .keep();
        let pki = Pki::generate(&dir.join("pki"))?;
        let [etcd_port, etcd_peer_port, api_port] = free_ports()?;

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd_peer_url = format!("http://127.0.0.1:{etcd_peer_port}");
        let etcd_args = vec![
            "--name=testenv".into(),
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={etcd_peer_url}"),
            format!("--initial-advertise-peer-urls={etcd_peer_url}"),
            format!("--initial-cluster=testenv={etcd_peer_url}"),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ];
        let etcd = Component::spawn(
            "etcd",
            &binaries.join("etcd"),
            &etcd_args,
            dir.join("etcd.log"),
        )?;

        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, admin_kubeconfig(&server, &pki).to_string())?;
        let path = |p: &Path| p.display().to_string();
        let apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--cert-dir={}", dir.join("apiserver").display()),
            format!("--tls-cert-file={}", path(&pki.serving_cert)),
            format!("--tls-private-key-file={}", path(&pki.serving_key)),
            format!("--client-ca-file={}", path(&pki.ca_cert)),
            format!("--secure-port={api_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-issuer={server}"),
            format!(
                "--service-account-key-file={}",
                path(&pki.service_account_public_key)
            ),
            format!(
                "--service-account-signing-key-file={}",
                path(&pki.service_account_key)
            ),
            "--disable-admission-plugins=ServiceAccount".into(),
        ];
        let controller_manager_args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            "--controllers=namespace,garbagecollector,deployment,replicaset".into(),
            "--leader-elect=false".into(),
            "--secure-port=0".into(),
        ];

        let mut control_plane = Self {
            dir,
            server: server.clone(),
            ca_cert: pki.ca_cert.clone(),
            binaries,
            kubeconfig,
            etcd_args,
            apiserver_args,
            controller_manager_args,
            apiserver_addr: SocketAddr::from(([127, 0, 0, 1], api_port)),
            version: String::new(),
            processes: Mutex::new(Processes {
                etcd,
                apiserver: None,
                controller_manager: None,
            }),
        };
        // From here on, an error drops `control_plane`, which stops what has started.
        control_plane.start_apiserver().await?;
        control_plane.version = control_plane
            .admin_client()
            .await?
            .apiserver_version()
            .await?
            .git_version;
        announce(&format!(
            "testenv: kube-apiserver {} with etcd ready at {server} in {:.1}s",
            control_plane.version,
            started.elapsed().as_secs_f64()
        ));
        Ok(control_plane)
    }

    /// The API server's address (for a [`proxy::Proxy`] in front of it).
    pub fn apiserver_addr(&self) -> SocketAddr {
        self.apiserver_addr
    }

    /// The API server's `gitVersion`, e.g. `v1.36.3`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// A kubeconfig file with the admin identity, for processes started by tests.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Client configuration with the admin identity (group `system:masters`).
    pub async fn admin_config(&self) -> Result<Config, Error> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
    }

    /// A client with the admin identity. Each call builds a new client, so a client never
    /// outlives the test (and Tokio runtime) that made it.
    pub async fn admin_client(&self) -> Result<Client, Error> {
        Ok(Client::try_from(self.admin_config().await?)?)
    }

    /// Client configuration that authenticates as the ServiceAccount `namespace/name`
    /// (created if missing) with a token from the TokenRequest API, so it has exactly
    /// the RBAC permissions bound to that account.
    pub async fn service_account_config(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Config, Error> {
        let token = self.service_account_token(namespace, name).await?;
        let mut config = self.admin_config().await?;
        config.auth_info = AuthInfo {
            token: Some(token.into()),
            ..AuthInfo::default()
        };
        Ok(config)
    }

    /// A client that acts as `user` in `groups` (the admin impersonating them): for
    /// checking what RBAC and admission let a given user or group do.
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> Result<Client, Error> {
        let mut config = self.admin_config().await?;
        config.auth_info.impersonate = Some(user.into());
        config.auth_info.impersonate_groups =
            Some(groups.iter().map(|group| (*group).to_owned()).collect());
        Ok(Client::try_from(config)?)
    }

    /// Writes a kubeconfig file (mode 0600: it holds a token) for the ServiceAccount
    /// `namespace/name`, for processes started outside the test.
    pub async fn write_service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        path: &Path,
    ) -> Result<(), Error> {
        use std::os::unix::fs::OpenOptionsExt;
        let token = self.service_account_token(namespace, name).await?;
        let kubeconfig = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "testenv", "cluster": {
                "server": self.server,
                "certificate-authority": self.ca_cert,
            }}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": "testenv", "context": {"cluster": "testenv", "user": name}}],
            "current-context": "testenv",
        });
        let _ = std::fs::remove_file(path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(kubeconfig.to_string().as_bytes())?;
        Ok(())
    }

    async fn service_account_token(&self, namespace: &str, name: &str) -> Result<String, Error> {
        let accounts = Api::<ServiceAccount>::namespaced(self.admin_client().await?, namespace);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        // Create if missing; an existing account (e.g. from a manifest) stays as it is.
        match accounts.create(&PostParams::default(), &account).await {
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            other => {
                other?;
            }
        }
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                // Long enough for a `make run` session.
                expiration_seconds: Some(24 * 3600),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await?
            .status
            .and_then(|status| status.token)
            .ok_or_else(|| Error::NoToken {
                namespace: namespace.into(),
                name: name.into(),
            })
    }

    /// A client for the ServiceAccount `namespace/name`; see [`Self::service_account_config`].
    pub async fn service_account_client(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Client, Error> {
        Ok(Client::try_from(
            self.service_account_config(namespace, name).await?,
        )?)
    }

    /// Creates a fresh namespace named `<prefix>-<random suffix>` and returns its name.
    pub async fn namespace(&self, prefix: &str) -> Result<String, Error> {
        let namespace = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let created = Api::<Namespace>::all(self.admin_client().await?)
            .create(&PostParams::default(), &namespace)
            .await?;
        Ok(created.metadata.name.unwrap_or_default())
    }

    /// Server-side applies every object of a multi-document YAML manifest as admin
    /// (field manager `testenv`, forced) and returns how many were applied.
    pub async fn apply_manifest(&self, yaml: &str) -> Result<usize, Error> {
        let client = self.admin_client().await?;
        let objects: Vec<DynamicObject> = serde_saphyr::from_multiple(yaml)
            .map_err(|error| Error::Manifest(error.to_string()))?;
        for object in &objects {
            let types = object.types.as_ref().ok_or_else(|| {
                Error::Manifest(format!("{:?} has no apiVersion/kind", object.metadata.name))
            })?;
            let gvk = GroupVersionKind::try_from(types)
                .map_err(|error| Error::Manifest(error.to_string()))?;
            let (resource, capabilities) = discovery::pinned_kind(&client, &gvk).await?;
            let api: Api<DynamicObject> = match (&capabilities.scope, object.namespace()) {
                (Scope::Namespaced, Some(namespace)) => {
                    Api::namespaced_with(client.clone(), &namespace, &resource)
                }
                _ => Api::all_with(client.clone(), &resource),
            };
            api.patch(
                &object.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(object),
            )
            .await?;
        }
        Ok(objects.len())
    }

    /// Each running component's name and process id (benchmarks read CPU time from
    /// `/proc`).
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        let processes = self.processes();
        [
            Some(&processes.etcd),
            processes.apiserver.as_ref(),
            processes.controller_manager.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|component| (component.name(), component.pid()))
        .collect()
    }

    /// Kills the API server (SIGKILL, like a crash); etcd and its data stay.
    pub fn stop_apiserver(&self) {
        if let Some(mut apiserver) = self.processes().apiserver.take() {
            apiserver.kill();
        }
    }

    /// Kills etcd (SIGKILL; its data stays), starts it again after `down_for`, and waits
    /// until the API server is ready again.
    pub async fn restart_etcd(&self, down_for: Duration) -> Result<(), Error> {
        self.processes().etcd.kill();
        tokio::time::sleep(down_for).await;
        let etcd = Component::spawn(
            "etcd",
            &self.binaries.join("etcd"),
            &self.etcd_args,
            self.dir.join("etcd.log"),
        )?;
        self.processes().etcd = etcd;
        self.wait_until_ready().await
    }

    /// Starts the API server on its original port, if stopped, and waits until it is ready.
    pub async fn start_apiserver(&self) -> Result<(), Error> {
        {
            let mut processes = self.processes();
            if processes.apiserver.is_none() {
                processes.apiserver = Some(Component::spawn(
                    "kube-apiserver",
                    &self.binaries.join("kube-apiserver"),
                    &self.apiserver_args,
                    self.dir.join("kube-apiserver.log"),
                )?);
            }
        }
        self.wait_until_ready().await
    }

    /// Starts kube-controller-manager (namespace, garbage-collector, deployment and
    /// replicaset controllers) if it is not running, so Deployments get ReplicaSets and
    /// status. Without a kubelet their Pods never become ready.
    pub fn start_controller_manager(&self) -> Result<(), Error> {
        let mut processes = self.processes();
        if processes.controller_manager.is_none() {
            processes.controller_manager = Some(Component::spawn(
                "kube-controller-manager",
                &self.binaries.join("kube-controller-manager"),
                &self.controller_manager_args,
                self.dir.join("kube-controller-manager.log"),
            )?);
        }
        Ok(())
    }

    /// Stops every process and removes the control plane's files.
    pub fn shutdown(&self) {
        // Stop clients of the API server first, etcd last.
        for component in self.processes().running().rev() {
            component.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn processes(&self) -> MutexGuard<'_, Processes> {
        // A panicking test must not take the control plane down with it.
        self.processes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Polls `/readyz` and the `default` namespace until both answer, a component exits,
    /// or [`READY_TIMEOUT`] passes.
    async fn wait_until_ready(&self) -> Result<(), Error> {
        let client = self.admin_client().await?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(error) = self.exited_component() {
                return Err(error);
            }
            let last_error = match tokio::time::timeout(PROBE_TIMEOUT, probe_ready(&client)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("probe timed out after {PROBE_TIMEOUT:?}"),
            };
            if Instant::now() > deadline {
                let processes = self.processes();
                return Err(Error::NotReady {
                    component: "kube-apiserver",
                    reason: format!("not ready after {READY_TIMEOUT:?}; last probe: {last_error}"),
                    log_tail: processes
                        .apiserver
                        .as_ref()
                        .map(Component::log_tail)
                        .unwrap_or_default(),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn exited_component(&self) -> Option<Error> {
        self.processes().running().find_map(|component| {
            component.exited().map(|status| Error::NotReady {
                component: component.name(),
                reason: format!("exited with {status}"),
                log_tail: component.log_tail(),
            })
        })
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn probe_ready(client: &Client) -> Result<(), kube::Error> {
    let readyz = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(kube::Error::HttpError)?;
    client.request_text(readyz).await?;
    Api::<Namespace>::all(client.clone()).get("default").await?;
    Ok(())
}

/// A minimal valid Deployment `name` with `replicas` (label `app: <name>`, one pause
/// container), for tests to create.
pub fn deployment(name: &str, replicas: i32) -> Deployment {
    let labels = BTreeMap::from([("app".to_string(), name.to_string())]);
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "app".into(),
                        image: Some("registry.k8s.io/pause:3.10".into()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// Polls `check` until it returns `Some`, for at most [`WAIT_TIMEOUT`].
///
/// # Panics
/// When the deadline passes; the message says what was awaited.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT_TIMEOUT:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The directory holding etcd, kube-apiserver and kube-controller-manager:
/// `$SETPOINT_CONTROLPLANE_DIR` if set (under Bazel, the `@controlplane` repository's),
/// else what `tools/controlplane/build.sh` builds (a no-op when the pinned versions are
/// in the cache).
async fn locate_binaries() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("SETPOINT_CONTROLPLANE_DIR") {
        return Ok(dir.into());
    }
    if std::env::var_os("TEST_SRCDIR").is_some() {
        // Under `bazel test` the checkout (and the build script) is out of reach.
        return Err(Error::Build {
            script: "tools/controlplane/build.sh".into(),
            reason: "under Bazel, the test target needs CONTROLPLANE_DATA and \
                     CONTROLPLANE_ENV (tools/bazel/controlplane.bzl)"
                .into(),
        });
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../controlplane/build.sh");
    let build_error = |reason: String| Error::Build {
        script: script.clone(),
        reason,
    };
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .await
        .map_err(|error| build_error(error.to_string()))?;
    if !output.status.success() {
        return Err(build_error(format!("exited with {}", output.status)));
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim(),
    ))
}

/// Distinct free loopback ports. All listeners are held until every port is chosen, so
/// the same port is never handed out twice.
fn free_ports<const N: usize>() -> Result<[u16; N], Error> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

fn admin_kubeconfig(server: &str, pki: &Pki) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testenv", "cluster": {
            "server": server,
            "certificate-authority": pki.ca_cert,
        }}],
        "users": [{"name": "admin", "user": {
            "client-certificate": pki.admin_cert,
            "client-key": pki.admin_key,
        }}],
        "contexts": [{"name": "testenv", "context": {"cluster": "testenv", "user": "admin"}}],
        "current-context": "testenv",
    })
}

/// Writes a progress line straight to stderr: libtest captures `eprintln!`, and a
/// control plane starting silently for seconds looks like a hang.
fn announce(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
