//! What both Setpoint processes (`setpoint-api` and `setpoint-reconciler`) need to run
//! in a cluster, in one place: the flag groups they share ([`flags`]), logging
//! ([`telemetry`]), the Kubernetes client whose requests are counted ([`client`]),
//! readiness with its Kubernetes connectivity probe ([`health`]), the plaintext HTTP
//! port ([`http`]), the shutdown signal ([`signal`]), and [`base`], which sets them up
//! the same way for both.

pub mod base;
pub mod client;
pub mod flags;
pub mod health;
pub mod http;
pub mod signal;
pub mod telemetry;

/// Prefix of every metric name.
pub const METRICS_PREFIX: &str = "setpoint";
