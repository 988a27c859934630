//! Command-line and environment configuration of `setpoint-api`: the one place its
//! settings are parsed, in groups by subsystem. Every flag has an environment variable.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use clap::{Args, Parser};
use setpoint_core::duration::parse_duration;
use setpoint_k8s_api::resource::SCHEMA_MAX_REPLICAS;
use setpoint_runtime::flags::{HealthFlags, IndexFlags};
use setpoint_runtime::telemetry::LogFlags;

use crate::edge::tls::{HandshakeLimits, TlsFiles};

/// Setpoint API server: a gRPC API over Deployment replica counts, served over mutual
/// TLS from a watch cache; writes go to ReplicaSetpoints, which setpoint-reconciler
/// applies. Kubernetes access comes from the in-cluster ServiceAccount or `$KUBECONFIG`.
#[derive(Parser, Debug, Clone)]
#[command(version)]
pub struct Config {
    /// Address of the gRPC API (mutual TLS only).
    #[arg(long, env = "SETPOINT_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// Authorization policy (YAML) binding client identities to roles.
    #[arg(long, env = "SETPOINT_POLICY")]
    pub policy: PathBuf,

    /// How often certificate, key, client CA and policy files are checked for changes.
    #[arg(long, env = "SETPOINT_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub reload_interval: Duration,

    /// Setpoint's own namespace, always protected (see `--protected-namespaces`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "setpoint")]
    pub namespace: String,

    /// Access log (target `setpoint::access`): every failed or denied call and every
    /// write is logged; successful reads one in N.
    #[arg(long, env = "SETPOINT_ACCESS_LOG_SAMPLE", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub access_log_sample: u64,

    #[command(flatten)]
    pub tls: TlsFiles,

    #[command(flatten)]
    pub handshakes: HandshakeLimits,

    #[command(flatten)]
    pub writes: WriteFlags,

    #[command(flatten)]
    pub connections: ConnectionFlags,

    #[command(flatten)]
    pub shutdown: ShutdownFlags,

    #[command(flatten)]
    pub health: HealthFlags,

    #[command(flatten)]
    pub index: IndexFlags,

    #[command(flatten)]
    pub logs: LogFlags,
}

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Writes")]
pub struct WriteFlags {
    /// Largest replica count SetReplicas accepts; at most the CRD schema's bound (1000).
    #[arg(long, env = "SETPOINT_MAX_REPLICAS", default_value_t = SCHEMA_MAX_REPLICAS,
          value_parser = clap::value_parser!(i32).range(1..=i64::from(SCHEMA_MAX_REPLICAS)))]
    pub max_replicas: i32,

    /// SetReplicas and ReleaseDeployment calls each client identity may make per minute
    /// on this replica (one every 60/N seconds after a burst of `--write-burst`); more get
    /// RESOURCE_EXHAUSTED. Only writes that pass validation and authorization count. Dry
    /// runs have a budget ten times this (and ten times the burst).
    #[arg(long, env = "SETPOINT_WRITES_PER_MINUTE", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub writes_per_minute: u32,

    /// Writes an identity may make at once before `--writes-per-minute`
    /// paces it (the token bucket's size).
    #[arg(long, env = "SETPOINT_WRITE_BURST", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub write_burst: u32,

    /// Namespaces where SetReplicas and ReleaseDeployment are denied unless the caller's
    /// policy binding names the namespace explicitly (comma-separated). Setpoint's own
    /// namespace (`--namespace`) is always protected. For the defaults the cluster refuses
    /// too: k8s/base/admission.yaml closes them to Setpoint's ServiceAccounts.
    #[arg(
        long,
        env = "SETPOINT_PROTECTED_NAMESPACES",
        value_delimiter = ',',
        default_value = "kube-system,kube-public,kube-node-lease"
    )]
    pub protected_namespaces: Vec<String>,
}

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Connections and watches")]
pub struct ConnectionFlags {
    /// Time limit for one RPC (a watch: until it is accepted; its stream is not limited).
    #[arg(long, env = "SETPOINT_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Connections are closed (gracefully) after this age, so clients rebalance and
    /// pick up rotated certificates.
    #[arg(long, env = "SETPOINT_MAX_CONNECTION_AGE", default_value = "30m", value_parser = parse_duration)]
    pub max_connection_age: Duration,

    /// WatchDeployments streams one identity may hold open (across connections).
    #[arg(long, env = "SETPOINT_MAX_WATCHES_PER_IDENTITY", default_value_t = 100,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub max_watches_per_identity: usize,

    /// WatchDeployments streams one connection may hold open (each is an HTTP/2 stream
    /// of at most 64 per connection; the rest stay for other calls).
    #[arg(long, env = "SETPOINT_MAX_WATCHES_PER_CONNECTION", default_value_t = 16,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub max_watches_per_connection: usize,
}

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Shutdown")]
pub struct ShutdownFlags {
    /// On SIGTERM, how long to keep serving while reporting not ready, so that Service
    /// endpoints drop this replica before it stops accepting connections.
    #[arg(long, env = "SETPOINT_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,

    /// After --shutdown-delay, how long in-flight requests may take before the server
    /// exits.
    #[arg(long, env = "SETPOINT_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

impl Config {
    /// Refuses settings that parse but cannot work: intervals of zero would spin (or
    /// panic, for tokio's interval).
    pub fn validate(&self) -> Result<(), String> {
        if self.reload_interval.is_zero() {
            return Err("--reload-interval must be above zero".into());
        }
        self.health.validate()?;
        self.index.validate()
    }

    /// `--protected-namespaces` and Setpoint's own namespace.
    pub fn protected_namespaces(&self) -> BTreeSet<String> {
        self.writes
            .protected_namespaces
            .iter()
            .chain([&self.namespace])
            .filter(|namespace| !namespace.is_empty())
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &[&str]) -> Config {
        let required = [
            "--tls-cert=c",
            "--tls-key=k",
            "--client-ca=ca",
            "--policy=p",
        ];
        Config::parse_from(
            ["setpoint-api"]
                .iter()
                .chain(required.iter())
                .chain(extra.iter()),
        )
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(config(&[]).validate(), Ok(()));
    }

    #[test]
    fn settings_that_cannot_work_together_are_refused() {
        for (flags, named) in [
            (&["--reload-interval=0s"][..], "--reload-interval"),
            (&["--probe-interval=0ms"], "--probe-interval"),
            (&["--watch-timeout=100ms"], "--watch-timeout"),
        ] {
            let refused = config(flags).validate().expect_err("refused");
            assert!(refused.contains(named), "{flags:?}: {refused}");
        }
    }

    #[test]
    fn system_namespaces_and_setpoints_own_are_protected_by_default() {
        let config = config(&["--namespace=platform"]);
        assert_eq!(
            config.protected_namespaces(),
            ["kube-node-lease", "kube-public", "kube-system", "platform"]
                .map(String::from)
                .into()
        );
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Config::command().debug_assert();
    }
}
