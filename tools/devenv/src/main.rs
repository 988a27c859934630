//! `setpoint-dev` (what `make run` runs): a local control plane with Setpoint installed,
//! demo Deployments, a fresh dev PKI, and setpoint-api and setpoint-reconciler running as
//! Setpoint's ServiceAccount. Writes connection details to `<dir>/env` and stops
//! everything on Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::process::Child;
use tokio::signal::unix::{SignalKind, signal};

/// How long a process may take to drain before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Run Setpoint locally: control plane, demo Deployments, dev PKI, the API and the
/// reconciler.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Folder for the PKI, policy, kubeconfigs and env file (git-ignored).
    #[arg(long, default_value = ".dev")]
    dir: PathBuf,
    /// The setpoint-api binary.
    #[arg(long, default_value = "target/debug/setpoint-api")]
    api_bin: PathBuf,
    /// The setpoint-reconciler binary.
    #[arg(long, default_value = "target/debug/setpoint-reconciler")]
    reconciler_bin: PathBuf,
    /// gRPC address of the API.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// HTTP (probes, metrics) address of the API.
    #[arg(long, default_value = "127.0.0.1:8081")]
    http_listen: SocketAddr,
    /// HTTP (probes, metrics) address of the reconciler.
    #[arg(long, default_value = "127.0.0.1:8082")]
    reconciler_http_listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::path::absolute(&args.dir)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _ = std::fs::remove_file(dir.join("env"));
    let mut stop = Stop::new()?;

    eprintln!(
        "setpoint-dev: starting etcd and kube-apiserver (first run builds them: ~10 min) ..."
    );
    let control_plane = testenv::ControlPlane::start().await?;
    control_plane.start_controller_manager()?;
    devenv::install(&control_plane).await?;
    devenv::create_demo(&control_plane).await?;
    devenv::write_server_files(&control_plane, &dir).await?;
    let pki = dir.join("pki");

    eprintln!(
        "setpoint-dev: starting {} and {}",
        args.api_bin.display(),
        args.reconciler_bin.display()
    );
    let mut processes = Processes {
        api: devenv::spawn_api(
            &args.api_bin,
            &dir,
            args.listen,
            args.http_listen,
            None,
            &[],
        )?,
        reconciler: devenv::spawn_reconciler(
            &args.reconciler_bin,
            &dir,
            args.reconciler_http_listen,
            None,
            &[],
        )?,
    };
    let ready = async {
        devenv::wait_until_ready(args.http_listen).await?;
        devenv::wait_until_ready(args.reconciler_http_listen).await
    };
    tokio::select! {
        ready = ready => ready?,
        exited = processes.exited() => anyhow::bail!("{exited} during start-up"),
        () = stop.signalled() => return processes.shut_down(&dir).await,
    }
    write_env_file(&args, &dir, &pki)?;
    print_instructions(&dir);

    tokio::select! {
        exited = processes.exited() => {
            let _ = std::fs::remove_file(dir.join("env"));
            anyhow::bail!("{exited}")
        }
        () = stop.signalled() => processes.shut_down(&dir).await,
    }
    // The control plane stops when dropped here.
}

fn write_env_file(args: &Args, dir: &Path, pki: &Path) -> anyhow::Result<()> {
    let path = |p: PathBuf| p.display().to_string();
    let env = format!(
        "# Written by setpoint-dev (make run); removed when it stops.\n\
         export SETPOINT_SERVER=https://localhost:{grpc_port}\n\
         export SETPOINT_CA={ca}\n\
         export SETPOINT_CERT={operator_cert}\n\
         export SETPOINT_KEY={operator_key}\n\
         export SETPOINT_OPERATOR_CERT={operator_cert}\n\
         export SETPOINT_OPERATOR_KEY={operator_key}\n\
         export SETPOINT_VIEWER_CERT={viewer_cert}\n\
         export SETPOINT_VIEWER_KEY={viewer_key}\n\
         export SETPOINT_HTTP=http://{http}\n\
         export SETPOINT_RECONCILER_HTTP=http://{reconciler_http}\n\
         export SETPOINT_KUBECONFIG={kubeconfig}\n",
        grpc_port = args.listen.port(),
        ca = path(pki.join("ca.crt")),
        operator_cert = path(pki.join("operator.crt")),
        operator_key = path(pki.join("operator.key")),
        viewer_cert = path(pki.join("viewer.crt")),
        viewer_key = path(pki.join("viewer.key")),
        http = args.http_listen,
        reconciler_http = args.reconciler_http_listen,
        kubeconfig = path(dir.join("admin.kubeconfig")),
    );
    std::fs::write(dir.join("env"), env)?;
    Ok(())
}

fn print_instructions(dir: &Path) {
    println!(
        "\nSetpoint is running. In another terminal:\n\n  \
         source {env}\n  \
         target/debug/setpointctl list\n  \
         target/debug/setpointctl get demo/web\n  \
         target/debug/setpointctl set demo/web 5\n  \
         SETPOINT_CERT=$SETPOINT_VIEWER_CERT SETPOINT_KEY=$SETPOINT_VIEWER_KEY \
         target/debug/setpointctl set demo/web 1   # denied: viewer\n  \
         kubectl --kubeconfig $SETPOINT_KUBECONFIG get replicasetpoints -A\n  \
         curl $SETPOINT_HTTP/metrics\n\n\
         Press Ctrl-C to stop everything.",
        env = dir.join("env").display()
    );
}

/// The two Setpoint processes.
struct Processes {
    api: Child,
    reconciler: Child,
}

impl Processes {
    /// Completes when either process exits, saying which and how.
    async fn exited(&mut self) -> String {
        let (name, status) = tokio::select! {
            status = self.api.wait() => ("setpoint-api", status),
            status = self.reconciler.wait() => ("setpoint-reconciler", status),
        };
        match status {
            Ok(status) => format!("{name} exited: {status}"),
            Err(error) => format!("{name}: {error}"),
        }
    }

    /// SIGTERM to both, wait for them to drain, and remove the env file; the control
    /// plane stops when `main` returns.
    async fn shut_down(self, dir: &Path) -> anyhow::Result<()> {
        eprintln!("setpoint-dev: stopping");
        let _ = std::fs::remove_file(dir.join("env"));
        let (api, reconciler) = tokio::join!(stop(self.api), stop(self.reconciler));
        api.and(reconciler)
    }
}

async fn stop(mut process: Child) -> anyhow::Result<()> {
    if let Some(pid) = process.id() {
        devenv::send_signal(pid, libc::SIGTERM);
    }
    if tokio::time::timeout(STOP_TIMEOUT, process.wait())
        .await
        .is_err()
    {
        eprintln!("setpoint-dev: a process did not stop in {STOP_TIMEOUT:?}; killing it");
        process.kill().await?;
    }
    Ok(())
}

/// Ctrl-C or SIGTERM.
struct Stop {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Stop {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn signalled(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
