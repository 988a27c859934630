//! Readiness: "ready" means what the process knows is fresh: the index has synced, no
//! watch has kept failing for longer than the probe window, and the Kubernetes API
//! answered a bounded probe within it. The same answer drives `/readyz` on the HTTP port
//! and, in the API, `grpc.health.v1` ([`Readiness::changes`]); when it is "no", the
//! reasons say why, and a log line gives them whenever readiness changes. Reads keep
//! being answered from the index meanwhile: readiness takes an API replica out of the
//! Service, it does not refuse callers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube::Client;
use setpoint_k8s_index::Index;
use tokio::sync::watch;

/// Bound on one connectivity probe: the kube client has no read timeout of its own.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// A probe older than this many intervals no longer counts as "reachable", and a watch
/// failing for as long makes answers stale.
const PROBES_BEFORE_UNREADY: u32 = 3;
/// How often readiness is re-evaluated (the cache may sync between probes).
const EVALUATE_EVERY: Duration = Duration::from_secs(1);

pub struct Readiness {
    index: Index,
    probes: Mutex<Probes>,
    max_age: Duration,
    shutting_down: AtomicBool,
    /// The last readiness [`run`] reported.
    reported: watch::Sender<bool>,
}

#[derive(Default)]
struct Probes {
    last_contact: Option<Instant>,
    last_error: Option<String>,
}

impl Readiness {
    pub fn new(index: Index, probe_interval: Duration) -> Self {
        Self {
            index,
            probes: Mutex::default(),
            max_age: probe_interval * PROBES_BEFORE_UNREADY,
            shutting_down: AtomicBool::new(false),
            reported: watch::channel(false).0,
        }
    }

    /// Readiness as [`run`] reports it: starts not ready, then changes when it flips.
    pub fn changes(&self) -> watch::Receiver<bool> {
        self.reported.subscribe()
    }

    /// From now on, not ready: the process is shutting down. Said at once, not at the
    /// next evaluation, so that the Service drops the replica within `--shutdown-delay`.
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
        self.reported.send_replace(false);
    }

    /// Why this replica is not ready; empty when it is.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.shutting_down.load(Ordering::Relaxed) {
            problems.push("shutting down".to_owned());
        }
        if !self.index.is_synced() {
            problems.push("the watch cache has not synced yet".to_owned());
        }
        problems.extend(self.index.failing_watches(self.max_age));
        let probes = self.probes.lock().unwrap_or_else(PoisonError::into_inner);
        if probes
            .last_contact
            .is_none_or(|at| at.elapsed() >= self.max_age)
        {
            let error = probes.last_error.as_deref().unwrap_or("no answer yet");
            problems.push(format!(
                "the Kubernetes API server did not answer a probe in the last {}s ({error}); \
                 if Setpoint was just installed, check that its NetworkPolicy allows egress \
                 to the API server",
                self.max_age.as_secs()
            ));
        }
        problems
    }

    pub fn is_ready(&self) -> bool {
        self.problems().is_empty()
    }

    fn record_probe(&self, result: Result<(), String>) {
        let mut probes = self.probes.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(()) => probes.last_contact = Some(Instant::now()),
            Err(error) => probes.last_error = Some(error),
        }
    }
}

/// Probes `GET /version` every `interval` and keeps [`Readiness::changes`] in step with
/// [`Readiness::is_ready`]. Runs until dropped.
pub async fn run(readiness: Arc<Readiness>, client: Client, interval: Duration) {
    let mut last_probe: Option<Instant> = None;
    let mut reported = None;
    loop {
        if last_probe.is_none_or(|at| at.elapsed() >= interval) {
            last_probe = Some(Instant::now());
            let probe = match tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!("timed out after {PROBE_TIMEOUT:?}")),
            };
            if let Err(error) = &probe {
                tracing::warn!(%error, "Kubernetes API probe failed");
            }
            readiness.record_probe(probe);
        }
        // Logged when readiness flips, with the reasons of that moment (they carry
        // durations, so comparing them would log every second).
        let problems = readiness.problems();
        if reported != Some(problems.is_empty()) {
            if problems.is_empty() {
                tracing::info!("ready");
            } else {
                tracing::warn!(reasons = %problems.join("; "), "not ready");
            }
            reported = Some(problems.is_empty());
            readiness.reported.send_replace(problems.is_empty());
        }
        tokio::time::sleep(EVALUATE_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutting_down_reports_not_ready_at_once() {
        let (index, _) = Index::new();
        let readiness = Readiness::new(index, Duration::from_secs(10));
        let changes = readiness.changes();
        // As `run` reports a ready replica.
        readiness.reported.send_replace(true);
        readiness.shut_down();
        assert!(!*changes.borrow(), "still reported ready after shut_down");
        assert!(readiness.problems().contains(&"shutting down".to_owned()));
    }
}
