//! The one place that starts and stops the setpoint-api binary under test and
//! chooses its flags: those every run shares, and the ones each kind of run adds. The API
//! is started and timed to ready alone; setpoint-reconciler only once it is ready, so
//! that the start-up figure is the API's, not the two sharing the cores.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::Args;

/// What a server is started for: decides its log file and the flags that run adds.
#[derive(Clone, Copy)]
pub(crate) enum Run {
    /// The measurements at one Deployment count.
    Size { deployments: usize },
    /// The soak test, its clients all connecting from one address.
    Soak { clients: usize },
    /// The watcher benchmark, its watches all by one identity, `per_connection` on each
    /// connection.
    Watchers {
        watches: usize,
        per_connection: usize,
    },
}

impl Run {
    fn log(self) -> String {
        match self {
            Run::Size { deployments } => format!("server-{deployments}.log"),
            Run::Soak { .. } => "server-soak.log".into(),
            Run::Watchers { .. } => "server-watchers.log".into(),
        }
    }

    fn extra_args(self) -> Vec<String> {
        match self {
            Run::Size { .. } => vec![],
            // All clients connect from one address.
            Run::Soak { clients } => vec![format!("--max-handshakes-per-source={clients}")],
            Run::Watchers {
                watches,
                per_connection,
            } => vec![
                format!("--max-watches-per-identity={watches}"),
                format!("--max-watches-per-connection={per_connection}"),
            ],
        }
    }
}

/// A running release server: setpoint-api, which is measured, and setpoint-reconciler,
/// which applies the setpoints of the write samples.
pub(crate) struct Server {
    process: tokio::process::Child,
    reconciler: tokio::process::Child,
    pub(crate) pid: u32,
    pub(crate) grpc: SocketAddr,
    pub(crate) http: SocketAddr,
    /// Its log file.
    pub(crate) log: PathBuf,
    /// From the API's start to its `/readyz` answering 200 (the reconciler not yet
    /// started).
    pub(crate) ready: Duration,
}

impl Server {
    /// Starts `args.api_bin` with the files in `dir` and waits until it is ready, then
    /// `args.reconciler_bin` and waits for it too.
    pub(crate) async fn start(args: &Args, dir: &Path, run: Run) -> anyhow::Result<Self> {
        let (grpc, http) = (free_address()?, free_address()?);
        let log = dir.join(run.log());
        let started = Instant::now();
        let process = devenv::spawn_api(
            &args.api_bin,
            dir,
            grpc,
            http,
            Some(&log),
            &[
                // Every sample is a write by the same identity: keep the rate limit out
                // of the way.
                format!("--writes-per-minute={}", args.writes.max(60)),
                format!("--write-burst={}", args.writes.max(60)),
                // The health probe and watch renewals are the requests a replica sends
                // on its own; spaced out, any request during the reads is one of theirs.
                "--probe-interval=10m".into(),
                "--watch-timeout=30m".into(),
            ]
            .into_iter()
            .chain(run.extra_args())
            .collect::<Vec<_>>(),
        )?;
        devenv::wait_until_ready(http)
            .await
            .with_context(|| format!("see {}", log.display()))?;
        let ready = started.elapsed();
        let reconciler_http = free_address()?;
        let reconciler_log = dir.join(run.log().replace("server", "reconciler"));
        let reconciler = devenv::spawn_reconciler(
            &args.reconciler_bin,
            dir,
            reconciler_http,
            Some(&reconciler_log),
            // The same name in every run: a new reconciler takes over the Lease the last
            // one, killed, left behind, without waiting for it to expire.
            &["--identity=setpoint-bench".into()],
        )?;
        devenv::wait_until_ready(reconciler_http)
            .await
            .with_context(|| format!("see {}", reconciler_log.display()))?;
        Ok(Self {
            pid: process.id().context("the server exited")?,
            process,
            reconciler,
            grpc,
            http,
            log,
            ready,
        })
    }

    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.process.kill().await?;
        self.reconciler.kill().await?;
        Ok(())
    }
}

fn free_address() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}
