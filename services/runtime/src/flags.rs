//! The flag groups both processes share (clap `flatten`): the HTTP port with its health
//! probe, and the index's watches. Every flag has an environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use setpoint_core::duration::parse_duration;

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Health and metrics")]
pub struct HealthFlags {
    /// Address of the plaintext HTTP port: /livez, /readyz and /metrics, no API data.
    #[arg(long, env = "SETPOINT_HTTP_LISTEN", default_value = "0.0.0.0:8081")]
    pub http_listen: SocketAddr,

    /// How often Kubernetes connectivity is probed (GET /version) for health.
    #[arg(long, env = "SETPOINT_PROBE_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub probe_interval: Duration,
}

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Watch cache")]
pub struct IndexFlags {
    /// How long each watch request of the cache lasts before it is renewed; a renewal
    /// is also when revoked permissions are noticed.
    #[arg(long, env = "SETPOINT_WATCH_TIMEOUT", default_value = "290s", value_parser = parse_duration)]
    pub watch_timeout: Duration,
}

impl HealthFlags {
    pub fn validate(&self) -> Result<(), String> {
        if self.probe_interval.is_zero() {
            return Err("--probe-interval must be above zero".into());
        }
        Ok(())
    }
}

impl IndexFlags {
    pub fn validate(&self) -> Result<(), String> {
        if self.watch_timeout < Duration::from_secs(1) {
            return Err(format!(
                "--watch-timeout must be at least 1s (got {:?})",
                self.watch_timeout
            ));
        }
        Ok(())
    }
}
