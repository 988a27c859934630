//! The one place errors become gRPC statuses: each domain fact, and each kind of
//! Kubernetes API failure, gets the code a client can act on. The match is exhaustive,
//! so a new error variant cannot be added without choosing its code.

use setpoint_core::Error as Domain;
use tonic::{Code, Status};

use crate::Error;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        Status::new(code(&error), error.to_string())
    }
}

fn code(error: &Error) -> Code {
    match error {
        Error::Domain(error) => domain_code(error),
        Error::Kube(kube::Error::Api(status)) if status.is_conflict() => Code::Aborted,
        Error::Kube(kube::Error::Api(status)) if status.code == 429 => Code::ResourceExhausted,
        Error::Kube(kube::Error::Api(status)) if status.code >= 500 => Code::Unavailable,
        Error::Kube(kube::Error::Api(_)) => Code::Internal,
        // Transport failures: the API server is unreachable or timed out.
        Error::Kube(_) => Code::Unavailable,
        Error::Tls { .. } | Error::Policy { .. } | Error::Io { .. } => Code::Internal,
    }
}

fn domain_code(error: &Domain) -> Code {
    match error {
        Domain::InvalidName { .. }
        | Domain::MissingDeployment
        | Domain::ReplicasOutOfRange { .. }
        | Domain::PageSizeOutOfRange { .. }
        | Domain::InvalidPageToken
        | Domain::PageTokenOfAnotherQuery
        | Domain::InvalidSelector { .. } => Code::InvalidArgument,
        Domain::NoIdentity(_) => Code::Unauthenticated,
        Domain::UnknownMethod(_)
        | Domain::NotPermitted { .. }
        | Domain::OutOfScope { .. }
        | Domain::ProtectedNamespace { .. } => Code::PermissionDenied,
        Domain::RateLimited { .. } => Code::ResourceExhausted,
        Domain::NotSynced => Code::Unavailable,
        Domain::DeploymentNotFound(_) => Code::NotFound,
        Domain::ManagedByAutoscaler { .. } => Code::FailedPrecondition,
        Domain::VersionMismatch { .. } | Domain::WriteContention { .. } => Code::Aborted,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use setpoint_core::{ClientIdentity, DeploymentKey};

    use super::*;

    #[test]
    fn domain_facts_get_the_codes_the_api_documents() {
        let key = DeploymentKey::new("a", "web").expect("key");
        let identity = ClientIdentity("alice".into());
        for (error, expected) in [
            (Domain::MissingDeployment, Code::InvalidArgument),
            (Domain::InvalidPageToken, Code::InvalidArgument),
            (Domain::NoIdentity("none".into()), Code::Unauthenticated),
            (
                Domain::OutOfScope {
                    identity: identity.clone(),
                    namespace: "b".into(),
                },
                Code::PermissionDenied,
            ),
            (
                Domain::RateLimited {
                    identity,
                    per_minute: 1,
                    retry_after: Duration::from_secs(1),
                },
                Code::ResourceExhausted,
            ),
            (Domain::NotSynced, Code::Unavailable),
            (Domain::DeploymentNotFound(key.clone()), Code::NotFound),
            (
                Domain::ManagedByAutoscaler {
                    key: key.clone(),
                    autoscaler: "hpa".into(),
                },
                Code::FailedPrecondition,
            ),
            (Domain::WriteContention { key, attempts: 5 }, Code::Aborted),
        ] {
            let message = error.to_string();
            let status = Status::from(Error::from(error));
            assert_eq!(
                (status.code(), status.message()),
                (expected, message.as_str())
            );
        }
    }
}
