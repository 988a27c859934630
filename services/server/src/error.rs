//! Errors of the server, and the one place they become gRPC statuses.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("authorization policy {path}: {reason}")]
    Policy { path: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = match &error {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::Aborted(_) => Code::Aborted,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Kube(kube::Error::Api(status)) if status.is_conflict() => Code::Aborted,
            Error::Kube(kube::Error::Api(status)) if status.code == 429 => Code::ResourceExhausted,
            Error::Kube(kube::Error::Api(status)) if status.code >= 500 => Code::Unavailable,
            Error::Kube(kube::Error::Api(_)) => Code::Internal,
            // Transport failures: the API server is unreachable or timed out.
            Error::Kube(_) => Code::Unavailable,
            Error::Tls(_) | Error::Policy { .. } | Error::Io { .. } => Code::Internal,
        };
        Status::new(code, error.to_string())
    }
}
