//! Command-line and environment configuration: the one place settings are parsed.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use clap::{Parser, ValueEnum};
use setpoint_core::duration::parse_duration;
use setpoint_k8s::resource::SCHEMA_MAX_REPLICAS;

/// Setpoint API server: a gRPC API over Deployment replica counts, served over mutual
/// TLS. Kubernetes access comes from the in-cluster ServiceAccount or `$KUBECONFIG`.
#[derive(Parser, Debug, Clone)]
#[command(version)]
pub struct Config {
    /// Address of the gRPC API (mutual TLS only).
    #[arg(long, env = "SETPOINT_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// Address of the plaintext HTTP port: /livez, /readyz and /metrics, no API data.
    #[arg(long, env = "SETPOINT_HTTP_LISTEN", default_value = "0.0.0.0:8081")]
    pub http_listen: SocketAddr,

    /// PEM server certificate chain.
    #[arg(long, env = "SETPOINT_TLS_CERT")]
    pub tls_cert: PathBuf,

    /// PEM private key of the server certificate.
    #[arg(long, env = "SETPOINT_TLS_KEY")]
    pub tls_key: PathBuf,

    /// PEM bundle of CAs that issue client certificates.
    #[arg(long, env = "SETPOINT_CLIENT_CA")]
    pub client_ca: PathBuf,

    /// Authorization policy (YAML) binding client identities to roles.
    #[arg(long, env = "SETPOINT_POLICY")]
    pub policy: PathBuf,

    /// How often certificate, key, client CA and policy files are checked for changes.
    #[arg(long, env = "SETPOINT_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub reload_interval: Duration,

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

    /// Namespaces where SetReplicas is denied unless the caller's policy binding names
    /// the namespace explicitly (comma-separated). Setpoint's own namespace
    /// (`--lease-namespace`) is always protected.
    #[arg(
        long,
        env = "SETPOINT_PROTECTED_NAMESPACES",
        value_delimiter = ',',
        default_value = "kube-system,kube-public,kube-node-lease"
    )]
    pub protected_namespaces: Vec<String>,

    /// Time limit for a TLS handshake.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// TLS handshakes in progress from one source address; more from that address are
    /// closed at once. Behind a load balancer that hides client addresses, raise it.
    #[arg(long, default_value_t = 8,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub max_handshakes_per_source: usize,

    /// TLS handshakes in progress in all; at the cap the oldest is closed to admit a
    /// new one.
    #[arg(long, default_value_t = 256,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub max_handshakes: usize,

    /// WatchDeployments streams one identity may hold open (across connections).
    #[arg(long, default_value_t = 100,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub max_watches_per_identity: usize,

    /// WatchDeployments streams one connection may hold open (each is an HTTP/2 stream
    /// of at most 64 per connection; the rest stay for other calls).
    #[arg(long, default_value_t = 16,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub max_watches_per_connection: usize,

    /// Time limit for one RPC (a watch: until it is accepted; its stream is not limited).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Connections are closed (gracefully) after this age, so clients rebalance and
    /// pick up rotated certificates.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub max_connection_age: Duration,

    /// On SIGTERM, how long to keep serving while reporting not ready, so that Service
    /// endpoints drop this replica before it stops accepting connections.
    #[arg(long, env = "SETPOINT_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,

    /// After --shutdown-delay, how long in-flight requests may take before the server
    /// exits.
    #[arg(long, env = "SETPOINT_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// How long each watch request of the cache lasts before it is renewed; a renewal
    /// is also when revoked permissions are noticed.
    #[arg(long, default_value = "290s", value_parser = parse_duration)]
    pub watch_timeout: Duration,

    /// How often Kubernetes connectivity is probed (GET /version) for health.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub probe_interval: Duration,

    /// This replica's name in the leader-election Lease and in Events.
    #[arg(long, env = "POD_NAME", default_value_t = default_identity())]
    pub identity: String,

    /// Namespace of the leader-election Lease `setpoint-leader`.
    #[arg(long, env = "POD_NAMESPACE", default_value = "setpoint")]
    pub lease_namespace: String,

    /// How long the Lease is valid without renewal (whole seconds); a crashed leader is
    /// replaced within this time plus one renew interval.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// How often the leader renews the Lease (and others check it).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub lease_renew_interval: Duration,

    /// Access log (target `setpoint::access`): every failed or denied call and every
    /// write is logged; successful reads one in N.
    #[arg(long, env = "SETPOINT_ACCESS_LOG_SAMPLE", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub access_log_sample: u64,

    /// Log format.
    #[arg(long, env = "SETPOINT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Config {
    /// Refuses settings that parse but cannot work together: the Lease is written in
    /// whole seconds, and the holder must renew before its term (two thirds of the
    /// duration) ends; intervals of zero would spin (or panic, for tokio's interval).
    pub fn validate(&self) -> Result<(), String> {
        let second = Duration::from_secs(1);
        if self.lease_duration < second || self.lease_duration.subsec_nanos() != 0 {
            return Err(format!(
                "--lease-duration must be whole seconds, at least 1s (got {:?})",
                self.lease_duration
            ));
        }
        if self.lease_renew_interval.is_zero()
            || self.lease_renew_interval >= self.lease_duration * 2 / 3
        {
            return Err(format!(
                "--lease-renew-interval ({:?}) must be above zero and below two thirds of \
                 --lease-duration ({:?})",
                self.lease_renew_interval, self.lease_duration
            ));
        }
        for (flag, value) in [
            ("--reload-interval", self.reload_interval),
            ("--probe-interval", self.probe_interval),
        ] {
            if value.is_zero() {
                return Err(format!("{flag} must be above zero"));
            }
        }
        if self.watch_timeout < second {
            return Err(format!(
                "--watch-timeout must be at least 1s (got {:?})",
                self.watch_timeout
            ));
        }
        Ok(())
    }

    /// `--protected-namespaces` and Setpoint's own namespace.
    pub fn protected_namespaces(&self) -> BTreeSet<String> {
        self.protected_namespaces
            .iter()
            .chain([&self.lease_namespace])
            .filter(|namespace| !namespace.is_empty())
            .cloned()
            .collect()
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `<hostname>-<pid>`: unique per process on a node, readable in Events.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "setpoint".into());
    format!("{host}-{}", std::process::id())
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
            ["setpoint-server"]
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
            (&["--lease-duration=500ms"][..], "--lease-duration"),
            (&["--lease-duration=1500ms"], "--lease-duration"),
            (&["--lease-renew-interval=0s"], "--lease-renew-interval"),
            (
                &["--lease-duration=6s", "--lease-renew-interval=4s"],
                "--lease-renew-interval",
            ),
            (&["--reload-interval=0s"], "--reload-interval"),
            (&["--probe-interval=0ms"], "--probe-interval"),
            (&["--watch-timeout=100ms"], "--watch-timeout"),
        ] {
            let refused = config(flags).validate().expect_err("refused");
            assert!(refused.contains(named), "{flags:?}: {refused}");
        }
    }

    #[test]
    fn system_namespaces_and_setpoints_own_are_protected_by_default() {
        let config = Config::parse_from([
            "setpoint-server",
            "--tls-cert=c",
            "--tls-key=k",
            "--client-ca=ca",
            "--policy=p",
            "--lease-namespace=platform",
        ]);
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
