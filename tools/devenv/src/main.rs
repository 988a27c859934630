//! `setpoint-dev` (what `make run` runs): a local control plane with Setpoint installed,
//! demo Deployments, a fresh dev PKI, and setpoint-server running as its ServiceAccount.
//! Writes connection details to `<dir>/env` and stops everything on Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::process::Child;
use tokio::signal::unix::{SignalKind, signal};

/// How long the server may take to drain before it is killed.
const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Run Setpoint locally: control plane, demo Deployments, dev PKI and the server.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Folder for the PKI, policy, kubeconfigs and env file (git-ignored).
    #[arg(long, default_value = ".dev")]
    dir: PathBuf,
    /// The setpoint-server binary.
    #[arg(long, default_value = "target/debug/setpoint-server")]
    server_bin: PathBuf,
    /// gRPC address of the server.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// HTTP (probes, metrics) address of the server.
    #[arg(long, default_value = "127.0.0.1:8081")]
    http_listen: SocketAddr,
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

    eprintln!("setpoint-dev: starting {}", args.server_bin.display());
    let mut server = devenv::spawn_server(
        &args.server_bin,
        &dir,
        args.listen,
        args.http_listen,
        None,
        &[],
    )?;
    tokio::select! {
        ready = devenv::wait_until_ready(args.http_listen) => ready?,
        exited = server.wait() => anyhow::bail!("setpoint-server exited during start-up: {}", exited?),
        () = stop.signalled() => return shut_down(server, &dir).await,
    }
    write_env_file(&args, &dir, &pki)?;
    print_instructions(&dir);

    tokio::select! {
        exited = server.wait() => {
            let _ = std::fs::remove_file(dir.join("env"));
            anyhow::bail!("setpoint-server exited: {}", exited?)
        }
        () = stop.signalled() => shut_down(server, &dir).await,
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
         export SETPOINT_KUBECONFIG={kubeconfig}\n",
        grpc_port = args.listen.port(),
        ca = path(pki.join("ca.crt")),
        operator_cert = path(pki.join("operator.crt")),
        operator_key = path(pki.join("operator.key")),
        viewer_cert = path(pki.join("viewer.crt")),
        viewer_key = path(pki.join("viewer.key")),
        http = args.http_listen,
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

/// SIGTERM to the server, wait for it to drain, and remove the env file; the control
/// plane stops when `main` returns.
async fn shut_down(mut server: Child, dir: &Path) -> anyhow::Result<()> {
    eprintln!("setpoint-dev: stopping");
    let _ = std::fs::remove_file(dir.join("env"));
    if let Some(pid) = server.id() {
        devenv::send_signal(pid, libc::SIGTERM);
    }
    if tokio::time::timeout(SERVER_STOP_TIMEOUT, server.wait())
        .await
        .is_err()
    {
        eprintln!("setpoint-dev: the server did not stop in {SERVER_STOP_TIMEOUT:?}; killing it");
        server.kill().await?;
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
