//! The one place errors become gRPC statuses. A domain error says what the caller did
//! or may do, so its text goes back as is. Every other error (the Kubernetes API's,
//! internal ones) gets a deliberate code, a generic message and a correlation id; the
//! details, which name Setpoint's ServiceAccount and cluster internals, go only to the
//! server's log under that id. The matches are exhaustive, so a new variant cannot be
//! added without choosing its code.

use setpoint_core::Error as Domain;
use tonic::{Code, Status};

use crate::Error;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let (code, summary) = match &error {
            Error::Domain(domain) => return Status::new(domain_code(domain), message(domain)),
            Error::Kube(kube) => kube_code(kube),
            Error::Timeout { .. } => (
                Code::Unavailable,
                "the Kubernetes API server did not answer in time; retry later",
            ),
            Error::Config(_)
            | Error::Start(_)
            | Error::Tls { .. }
            | Error::Policy { .. }
            | Error::Io { .. }
            | Error::Task(_) => (Code::Internal, "internal error"),
        };
        let id = correlation_id();
        tracing::warn!(correlation_id = %id, %error, "request failed");
        Status::new(code, format!("{summary} (correlation id {id})"))
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
        Domain::RateLimited { .. } | Domain::TooManyWatches { .. } | Domain::WatchLagged { .. } => {
            Code::ResourceExhausted
        }
        Domain::NotSynced | Domain::ShuttingDown | Domain::WatchExpired => Code::Unavailable,
        Domain::ResumeTokenExpired => Code::OutOfRange,
        Domain::InvalidResumeToken => Code::InvalidArgument,
        Domain::ScopeChanged => Code::Aborted,
        Domain::DeploymentNotFound(_) | Domain::NotManaged(_) => Code::NotFound,
        Domain::ManagedByAutoscaler { .. } => Code::FailedPrecondition,
        Domain::VersionMismatch { .. } | Domain::WriteContention { .. } => Code::Aborted,
    }
}

/// The domain's own text, in the words of the request: the fields it names are the
/// protobuf's, and a watch's maximum age is the server's `--max-connection-age`.
fn message(error: &Domain) -> String {
    match error {
        Domain::PageSizeOutOfRange { value, max } => {
            format!("page_size must be between 0 and {max}, got {value}")
        }
        Domain::InvalidPageToken => {
            "page_token is not a next_page_token from a previous ListDeployments response".into()
        }
        Domain::PageTokenOfAnotherQuery => "page_token continues another query: use it with \
            the namespace and label_selector it came with (or start again without it)"
            .into(),
        Domain::InvalidSelector { selector, reason } => {
            format!("label_selector {selector:?}: {reason}")
        }
        Domain::WatchExpired => "the watch reached its maximum age (the server's \
            --max-connection-age); resume with the last resume_token"
            .into(),
        Domain::WatchLagged { behind } => format!(
            "the watch fell {behind} changes behind (the client reads too slowly); watch \
             again with the last resume_token"
        ),
        other => other.to_string(),
    }
}

/// The code and a message safe to show any caller.
fn kube_code(error: &kube::Error) -> (Code, &'static str) {
    let status = match error {
        kube::Error::Api(status) => status,
        // Transport failures: the API server is unreachable or timed out.
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            return (
                Code::Unavailable,
                "the Kubernetes API server is unreachable; retry later",
            );
        }
        _ => {
            return (
                Code::Internal,
                "internal error talking to the Kubernetes API",
            );
        }
    };
    match status.code {
        409 => (
            Code::Aborted,
            "the setpoint changed during the write; retry",
        ),
        429 => (
            Code::ResourceExhausted,
            "the Kubernetes API server is throttling Setpoint; retry later",
        ),
        500.. => (
            Code::Unavailable,
            "the Kubernetes API server failed the request; retry later",
        ),
        403 => (
            Code::FailedPrecondition,
            "the cluster refused Setpoint's write (its RBAC or an admission policy); the \
             operators' logs have the details",
        ),
        400 | 422 => (
            Code::FailedPrecondition,
            "the cluster rejected the setpoint as invalid; the operators' logs have the \
             details",
        ),
        404 => (
            Code::FailedPrecondition,
            "the cluster does not serve the setpoint here (is the CRD installed?); the \
             operators' logs have the details",
        ),
        _ => (
            Code::Internal,
            "unexpected answer from the Kubernetes API server",
        ),
    }
}

/// 16 random hex digits that tie a caller's status to the server's log line.
fn correlation_id() -> String {
    let mut bytes = [0u8; 8];
    // Without the OS's randomness the id is all zeros: still a valid (if less useful)
    // message, and no reason to fail the answer.
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use setpoint_core::{ClientIdentity, DeploymentKey};

    use super::*;

    #[test]
    fn domain_facts_get_the_codes_the_api_documents() {
        let key = DeploymentKey::new("a", "web").expect("key");
        let identity = ClientIdentity::CommonName("alice".into());
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
            (Domain::NotManaged(key.clone()), Code::NotFound),
            (
                Domain::TooManyWatches {
                    holder: "this connection".into(),
                    limit: 16,
                },
                Code::ResourceExhausted,
            ),
            (Domain::WatchLagged { behind: 3 }, Code::ResourceExhausted),
            (Domain::ResumeTokenExpired, Code::OutOfRange),
            (Domain::InvalidResumeToken, Code::InvalidArgument),
            (Domain::ScopeChanged, Code::Aborted),
            (Domain::ShuttingDown, Code::Unavailable),
            (Domain::WatchExpired, Code::Unavailable),
            (
                Domain::ManagedByAutoscaler {
                    key: key.clone(),
                    autoscaler: "hpa".into(),
                },
                Code::FailedPrecondition,
            ),
            (Domain::WriteContention { key, attempts: 5 }, Code::Aborted),
        ] {
            let message = message(&error);
            let status = Status::from(Error::from(error));
            assert_eq!(
                (status.code(), status.message()),
                (expected, message.as_str())
            );
        }
    }

    #[test]
    fn domain_errors_name_the_request_fields_only_on_the_wire() {
        for (error, field) in [
            (
                Domain::PageSizeOutOfRange {
                    value: 501,
                    max: 500,
                },
                "page_size",
            ),
            (Domain::InvalidPageToken, "page_token"),
            (Domain::PageTokenOfAnotherQuery, "label_selector"),
            (
                Domain::InvalidSelector {
                    selector: "a=".into(),
                    reason: "empty value".into(),
                },
                "label_selector",
            ),
            (Domain::WatchExpired, "--max-connection-age"),
            (Domain::WatchLagged { behind: 9 }, "resume_token"),
        ] {
            assert!(!error.to_string().contains(field), "{error}");
            let status = Status::from(Error::from(error));
            assert!(status.message().contains(field), "{}", status.message());
        }
    }

    fn api_error(code: u16, reason: &str) -> Error {
        Error::Kube(kube::Error::Api(Box::new(kube::core::Status {
            code,
            reason: reason.into(),
            message: "replicasetpoints.setpoint.dev \"web\" is forbidden: User \
                      \"system:serviceaccount:setpoint:setpoint\" cannot patch"
                .into(),
            ..kube::core::Status::default()
        })))
    }

    #[test]
    fn kubernetes_errors_are_mapped_deliberately_and_leak_nothing() {
        for (error, expected) in [
            (api_error(403, "Forbidden"), Code::FailedPrecondition),
            (api_error(422, "Invalid"), Code::FailedPrecondition),
            (api_error(404, "NotFound"), Code::FailedPrecondition),
            (api_error(409, "Conflict"), Code::Aborted),
            (api_error(429, "TooManyRequests"), Code::ResourceExhausted),
            (api_error(503, "ServiceUnavailable"), Code::Unavailable),
            (api_error(418, "Teapot"), Code::Internal),
        ] {
            let status = Status::from(error);
            assert_eq!(status.code(), expected, "{}", status.message());
            for internal in ["serviceaccount", "forbidden", "replicasetpoints"] {
                assert!(
                    !status.message().contains(internal),
                    "{expected:?}: {}",
                    status.message()
                );
            }
            assert!(
                status.message().contains("correlation id"),
                "{}",
                status.message()
            );
        }
    }

    #[test]
    fn correlation_ids_differ() {
        let message = || {
            Status::from(api_error(403, "Forbidden"))
                .message()
                .to_owned()
        };
        assert_ne!(message(), message());
    }
}
