//! Errors of the API server: the domain's own ([`setpoint_core::Error`]), the Kubernetes
//! API's, and what can fail at start-up. They say what went wrong; the gRPC edge
//! ([`crate::edge::grpc::status`]) alone decides which status code reports it.

use std::path::PathBuf;

use setpoint_core::PolicyError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Domain(#[from] setpoint_core::Error),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The parts both processes start the same way (client, HTTP port).
    #[error(transparent)]
    Start(#[from] setpoint_runtime::base::Error),
    #[error("{what} did not finish within {after:?}")]
    Timeout {
        what: &'static str,
        after: std::time::Duration,
    },
    /// A task the request was handed to panicked or was cancelled.
    #[error("request task: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("TLS configuration {}: {reason}", path.display())]
    Tls { path: PathBuf, reason: String },
    #[error("authorization policy {}: {source}", path.display())]
    Policy {
        path: PathBuf,
        #[source]
        source: PolicyError,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}
