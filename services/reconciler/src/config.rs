//! Command-line and environment configuration of `setpoint-reconciler`: the one place
//! its settings are parsed.

use clap::Parser;
use setpoint_runtime::flags::{HealthFlags, IndexFlags};
use setpoint_runtime::telemetry::LogFlags;

use crate::lease::LeaseConfig;

/// Setpoint reconciler: drives each Deployment to the replica count of its
/// ReplicaSetpoint. Every replica keeps its watch cache warm; the holder of the Lease
/// `setpoint-leader` reconciles. Kubernetes access comes from the in-cluster
/// ServiceAccount or `$KUBECONFIG`.
#[derive(Parser, Debug, Clone)]
#[command(version)]
pub struct Config {
    #[command(flatten)]
    pub lease: LeaseConfig,

    #[command(flatten)]
    pub health: HealthFlags,

    #[command(flatten)]
    pub index: IndexFlags,

    #[command(flatten)]
    pub logs: LogFlags,
}

impl Config {
    /// Refuses settings that parse but cannot work together.
    pub fn validate(&self) -> Result<(), String> {
        self.lease.validate()?;
        self.health.validate()?;
        self.index.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(flags: &[&str]) -> Config {
        Config::parse_from(["setpoint-reconciler"].iter().chain(flags))
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
            (&["--probe-interval=0ms"], "--probe-interval"),
            (&["--watch-timeout=100ms"], "--watch-timeout"),
        ] {
            let refused = config(flags).validate().expect_err("refused");
            assert!(refused.contains(named), "{flags:?}: {refused}");
        }
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Config::command().debug_assert();
    }
}
