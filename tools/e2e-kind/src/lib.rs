//! The end-to-end suite's view of the KIND cluster that `KIND_OFFLINE=1 make deploy`
//! creates: a client for context `kind-setpoint`, the pinned kubectl, setpointctl with
//! the dev PKI, the cluster's nodes (Docker containers), and throw-away probe pods with
//! a shell. The tests are ignored by `make test`; `make e2e-kind` runs them.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::config::KubeConfigOptions;
use kube::{Api, Client, Config};

/// Setpoint's namespace, Service and pod label value.
pub const SETPOINT: &str = "setpoint";
/// setpoint-api's pods (Deployment `setpoint-api`).
pub const API_PODS: &str = "app.kubernetes.io/name=setpoint,app.kubernetes.io/component=api";
/// setpoint-reconciler's pods (Deployment `setpoint-reconciler`).
pub const RECONCILER_PODS: &str =
    "app.kubernetes.io/name=setpoint,app.kubernetes.io/component=reconciler";
/// Namespace labels the shipped NetworkPolicy admits.
pub const CLIENT_LABEL: (&str, &str) = ("setpoint.dev/client", "true");
pub const METRICS_LABEL: (&str, &str) = ("setpoint.dev/metrics", "true");
/// The image with a shell and the network tools, from `make kind-node`.
pub const PROBE_IMAGE: &str = "setpoint.local/debian-net:bookworm";
/// A small image every KIND node holds (kubeadm's pause).
pub const WORKLOAD_IMAGE: &str = "registry.k8s.io/pause:3.10.2";

const CONTEXT: &str = "kind-setpoint";

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The kubeconfig context `make deploy` writes for the cluster.
async fn kind_config() -> anyhow::Result<Config> {
    let options = KubeConfigOptions {
        context: Some(CONTEXT.into()),
        ..KubeConfigOptions::default()
    };
    Config::from_kubeconfig(&options)
        .await
        .context("no kubeconfig context kind-setpoint: run `KIND_OFFLINE=1 make deploy`")
}

pub struct Cluster {
    pub client: Client,
    kubectl: PathBuf,
}

impl Cluster {
    pub async fn connect() -> anyhow::Result<Self> {
        let config = kind_config().await?;
        let tools = run(Command::new(root().join("tools/deploy/build.sh")))?;
        Ok(Self {
            client: Client::try_from(config)?,
            kubectl: PathBuf::from(tools.trim()).join("kubectl"),
        })
    }

    /// A client that authenticates as `user` with `groups` (impersonation).
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> anyhow::Result<Client> {
        let mut config = kind_config().await?;
        config.auth_info.impersonate = Some(user.into());
        config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
        Ok(Client::try_from(config)?)
    }

    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.kubectl);
        command.args(["--context", CONTEXT]).args(args);
        command
    }

    /// Runs kubectl; its stdout, or an error with its stderr.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        run(self.kubectl_command(args))
    }

    /// `kubectl apply` of a YAML document.
    pub fn apply(&self, yaml: &str) -> anyhow::Result<()> {
        let mut child = self
            .kubectl_command(&["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(yaml.as_bytes())?;
        check(child.wait_with_output()?, "kubectl apply").map(drop)
    }

    /// A namespace with `labels`, deleted (without waiting) when the guard is dropped.
    pub fn namespace(
        &self,
        prefix: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<Namespace<'_>> {
        let name = format!("{prefix}-{}", std::process::id() % 100_000);
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}: \"{v}\""))
            .collect();
        self.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {{{}}}\n",
            labels.join(", ")
        ))?;
        Ok(Namespace {
            cluster: self,
            name,
        })
    }

    /// Runs `kubectl <args>` when the returned guard is dropped, also when a test fails
    /// early: for what a test adds to Setpoint's own namespace.
    pub fn on_drop(&self, args: &[&str]) -> OnDrop<'_> {
        OnDrop {
            cluster: self,
            args: args.iter().map(|arg| arg.to_string()).collect(),
        }
    }

    /// A Deployment of the pause image with `replicas`.
    pub fn workload(&self, namespace: &str, name: &str, replicas: i32) -> anyhow::Result<()> {
        self.kubectl(&[
            "-n",
            namespace,
            "create",
            "deployment",
            name,
            "--image",
            WORKLOAD_IMAGE,
            "--replicas",
            &replicas.to_string(),
        ])
        .map(drop)
    }

    pub fn spec_replicas(&self, namespace: &str, deployment: &str) -> anyhow::Result<String> {
        self.kubectl(&[
            "-n",
            namespace,
            "get",
            "deployment",
            deployment,
            "-o",
            "jsonpath={.spec.replicas}/{.status.readyReplicas}",
        ])
    }

    /// A pod of [`PROBE_IMAGE`] that sleeps, never Ready (so it never joins a Service
    /// whose selector its labels match), Running on return. It meets the `restricted`
    /// Pod Security Standard, which Setpoint's namespace enforces.
    pub async fn probe_pod(
        &self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}: \"{v}\""))
            .collect();
        self.apply(&format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {namespace}
  labels: {{{labels}}}
spec:
  terminationGracePeriodSeconds: 0
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    seccompProfile: {{type: RuntimeDefault}}
  containers:
    - name: probe
      image: {PROBE_IMAGE}
      imagePullPolicy: Never
      command: [sleep, infinity]
      securityContext:
        allowPrivilegeEscalation: false
        capabilities: {{drop: [ALL]}}
      readinessProbe:
        exec: {{command: [\"false\"]}}
        periodSeconds: 3600
",
            labels = labels.join(", ")
        ))?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        wait_for(
            &format!("probe pod {namespace}/{name} running"),
            Duration::from_secs(60),
            || async {
                let pod = pods.get(name).await?;
                Ok(pod
                    .status
                    .and_then(|status| status.phase)
                    .filter(|phase| phase == "Running")
                    .map(drop))
            },
        )
        .await
    }

    /// Whether a TCP connection from the probe pod to `host:port` opens within 3 s.
    pub fn connects(
        &self,
        namespace: &str,
        pod: &str,
        host: &str,
        port: u16,
    ) -> anyhow::Result<bool> {
        let script = r#"if timeout 3 bash -c "</dev/tcp/$0/$1" 2>/dev/null; then echo open; else echo closed; fi"#;
        let output = self.kubectl(&[
            "-n",
            namespace,
            "exec",
            pod,
            "--",
            "bash",
            "-c",
            script,
            host,
            &port.to_string(),
        ])?;
        match output.trim() {
            "open" => Ok(true),
            "closed" => Ok(false),
            other => bail!("unexpected probe output {other:?}"),
        }
    }

    /// Setpoint's pods of `selector` that are Ready and not terminating, once there are
    /// `count`.
    pub async fn setpoint_pods(&self, selector: &str, count: usize) -> anyhow::Result<Vec<Pod>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), SETPOINT);
        wait_for(
            &format!("{count} Ready pods {selector}"),
            Duration::from_secs(180),
            || async {
                let ready: Vec<Pod> = pods
                    .list(&ListParams::default().labels(selector))
                    .await?
                    .items
                    .into_iter()
                    .filter(|pod| pod.metadata.deletion_timestamp.is_none() && is_ready(pod))
                    .collect();
                Ok((ready.len() == count).then_some(ready))
            },
        )
        .await
    }

    /// `kubectl port-forward` to `target` (e.g. `service/setpoint`), on a free local port.
    pub fn port_forward(
        &self,
        namespace: &str,
        target: &str,
        port: u16,
    ) -> anyhow::Result<PortForward> {
        let local = free_port()?;
        let child = self
            .kubectl_command(&[
                "-n",
                namespace,
                "port-forward",
                target,
                &format!("{local}:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let forward = PortForward { child, port: local };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", local)).is_err() {
            ensure!(
                Instant::now() < deadline,
                "port-forward to {target}:{port} did not open"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(forward)
    }

    /// `kubectl logs -f` of a pod, collected line by line until the pod's container ends.
    pub fn follow_logs(&self, namespace: &str, pod: &str) -> anyhow::Result<Logs> {
        let mut child = self
            .kubectl_command(&["-n", namespace, "logs", "-f", pod])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("kubectl logs stdout")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().expect("log lines").push(line);
            }
        });
        Ok(Logs { child, lines })
    }

    /// Runs a command on a KIND node (a Docker container named after the node).
    pub fn on_node(&self, node: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new("docker");
        command.args(["exec", node]).args(args);
        run(command)
    }
}

pub struct Namespace<'a> {
    cluster: &'a Cluster,
    pub name: String,
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

pub struct OnDrop<'a> {
    cluster: &'a Cluster,
    args: Vec<String>,
}

impl Drop for OnDrop<'_> {
    fn drop(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        if let Err(error) = self.cluster.kubectl(&args) {
            eprintln!("cleanup failed: {error:#}");
        }
    }
}

pub struct PortForward {
    child: Child,
    pub port: u16,
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Logs {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Logs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Logs {
    /// Waits for the stream to end (the container stopped), at most `timeout`.
    pub fn finish(&mut self, timeout: Duration) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        while self.child.try_wait()?.is_none() {
            ensure!(
                Instant::now() < deadline,
                "the log stream did not end within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // The reader thread drains the pipe after the process exits.
        std::thread::sleep(Duration::from_millis(500));
        Ok(self.lines.lock().expect("log lines").clone())
    }
}

/// setpointctl (built by `make e2e-kind`) with the `identity` certificate of the dev
/// PKI `make deploy` made, against `server`.
pub fn setpointctl(identity: &str, server: &str, args: &[&str]) -> anyhow::Result<Command> {
    // target/debug/deps/<test>-<hash> → target/debug/setpointctl
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("setpointctl")))
        .filter(|path| path.exists())
        .context("no target/debug/setpointctl: build it first (`make e2e-kind` does)")?;
    let pki = root().join(".dev/kind-pki");
    let mut command = Command::new(binary);
    command
        .env("SETPOINT_SERVER", server)
        .env("SETPOINT_CA", pki.join("ca.crt"))
        .env("SETPOINT_CERT", pki.join(format!("{identity}.crt")))
        .env("SETPOINT_KEY", pki.join(format!("{identity}.key")))
        .args(args);
    Ok(command)
}

/// A command's stdout, or an error naming it with its stderr.
pub fn run(mut command: Command) -> anyhow::Result<String> {
    let what = format!("{command:?}");
    let output = command
        .output()
        .with_context(|| format!("starting {what}"))?;
    check(output, &what)
}

fn check(output: Output, what: &str) -> anyhow::Result<String> {
    ensure!(
        output.status.success(),
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8(output.stdout)?)
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|condition| condition.type_ == "Ready" && condition.status == "True")
        })
}

/// The body of a plain HTTP GET to `127.0.0.1:port` (e.g. through a port-forward).
pub fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no HTTP header end")?;
    ensure!(
        head.starts_with("HTTP/1.1 200"),
        "GET {path}: {}",
        head.lines().next().unwrap_or_default()
    );
    Ok(body.to_string())
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Polls `check` every 500 ms until it returns a value; fails after `timeout`, naming
/// `what` and the last error.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => last.clear(),
            Err(error) => last = format!(" (last error: {error:#})"),
        }
        ensure!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}{last}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
