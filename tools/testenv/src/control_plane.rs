//! [`ControlPlane`]: starts etcd and kube-apiserver (and, on request,
//! kube-controller-manager), waits until they serve, restarts or stops them for tests of
//! outages, and removes everything on shutdown. The identities tests act as (clients,
//! kubeconfigs) are in the `access` submodule.

mod access;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};

use crate::Error;
use crate::binaries::locate_binaries;
use crate::pki::Pki;
use crate::process::Component;
use crate::wait::POLL_INTERVAL;

/// How long the API server may take to become ready (about 5-20 s warm on 2 cores).
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on each readiness probe: the kube client has no read timeout of its own.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

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
        std::fs::write(
            &kubeconfig,
            access::admin_kubeconfig(&server, &pki).to_string(),
        )?;
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

    /// The API server's address (for a [`proxy::Proxy`](crate::proxy::Proxy) in front of it).
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

/// Writes a progress line straight to stderr: libtest captures `eprintln!`, and a
/// control plane starting silently for seconds looks like a hang.
fn announce(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
