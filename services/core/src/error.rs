//! What can go wrong in Setpoint's domain. Each variant names a fact (the name is
//! invalid, the caller is out of scope, an autoscaler owns the Deployment); the
//! transports decide how to report it (the gRPC edge maps each to a status code).

use std::time::Duration;

use crate::access::{ClientIdentity, Role};
use crate::key::DeploymentKey;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A namespace or object name breaks the Kubernetes naming rules.
    #[error("{field} {value:?} is not a valid {rule}")]
    InvalidName {
        field: &'static str,
        value: String,
        rule: NameRule,
    },
    #[error("deployment is required")]
    MissingDeployment,
    #[error("replicas must be between 0 and {max}, got {value}")]
    ReplicasOutOfRange { value: i32, max: i32 },
    #[error("the page size must be between 0 and {max}, got {value}")]
    PageSizeOutOfRange { value: i32, max: usize },
    #[error("the page token is not one a previous page of a listing returned")]
    InvalidPageToken,
    #[error(
        "the page token continues another query: use it with the namespace and label \
         selector it came with (or start again without it)"
    )]
    PageTokenOfAnotherQuery,
    #[error("label selector {selector:?}: {reason}")]
    InvalidSelector { selector: String, reason: String },

    /// The caller presented no usable identity.
    #[error("{0}")]
    NoIdentity(String),
    /// The RPC is not in the authorization table.
    #[error("method {0} is not allowed")]
    UnknownMethod(String),
    /// The caller's role (if it has one) does not include the RPC.
    #[error("identity {identity} ({}) may not call {method}", role_text(*.role))]
    NotPermitted {
        identity: ClientIdentity,
        role: Option<Role>,
        method: String,
    },
    /// The caller's binding does not cover this namespace.
    #[error("identity {identity} may not access namespace {namespace}")]
    OutOfScope {
        identity: ClientIdentity,
        namespace: String,
    },
    /// The namespace is protected and the caller's binding does not name it.
    #[error(
        "namespace {namespace} is protected: identity {identity} may write there only \
         through a policy binding that names it"
    )]
    ProtectedNamespace {
        identity: ClientIdentity,
        namespace: String,
    },
    /// The caller spent its write budget.
    #[error(
        "identity {identity} exceeded {per_minute} writes per minute; retry in {:.1}s",
        retry_after.as_secs_f64()
    )]
    RateLimited {
        identity: ClientIdentity,
        per_minute: u32,
        retry_after: Duration,
    },

    /// The watch cache has not completed its first list, so it cannot answer yet.
    #[error("the watch cache has not synced with the Kubernetes API yet; retry shortly")]
    NotSynced,
    #[error("deployment {0} not found")]
    DeploymentNotFound(DeploymentKey),
    /// ReleaseDeployment of a Deployment that has no setpoint.
    #[error("deployment {0} has no setpoint: Setpoint does not manage it")]
    NotManaged(DeploymentKey),
    /// A HorizontalPodAutoscaler scales the Deployment; Setpoint does not fight it.
    #[error(
        "deployment {key} is scaled by HorizontalPodAutoscaler {autoscaler}; change its \
         minReplicas/maxReplicas instead"
    )]
    ManagedByAutoscaler {
        key: DeploymentKey,
        autoscaler: String,
    },
    /// The caller's `expected_version` is not the setpoint's current version.
    #[error(
        "the setpoint of {key} is at version {actual:?}, not the expected {expected:?}; read \
         it again and retry"
    )]
    VersionMismatch {
        key: DeploymentKey,
        actual: String,
        expected: String,
    },
    /// Other writers changed the setpoint under every attempt of a write.
    #[error("the setpoint of {key} kept changing during {attempts} attempts; retry")]
    WriteContention { key: DeploymentKey, attempts: usize },

    /// A caller holds as many watches as it may (`holder`: "identity X" or "this
    /// connection").
    #[error("{holder} already has {limit} watches open, the most allowed; close one first")]
    TooManyWatches { holder: String, limit: usize },
    /// A watcher read more slowly than changes came and fell behind.
    #[error(
        "the watch fell {behind} changes behind (the client reads too slowly); watch again \
         with the last resume token"
    )]
    WatchLagged { behind: u64 },
    /// A resume token older than the server's history of changes, or from another
    /// server process.
    #[error(
        "the resume token is older than this server's history of changes, or from another \
         server; watch again without it"
    )]
    ResumeTokenExpired,
    #[error(
        "invalid resume token: not one this server sent for this namespace, selector and scope"
    )]
    InvalidResumeToken,
    /// A policy reload changed what the caller of a watch may see.
    #[error("the authorization policy changed the namespaces this caller may see; watch again")]
    ScopeChanged,
    /// A watch reached its maximum age.
    #[error("the watch reached its maximum age; resume with the last resume token")]
    WatchExpired,
    /// The server stops; another replica serves.
    #[error("the server is shutting down; watch again")]
    ShuttingDown,
}

fn role_text(role: Option<Role>) -> String {
    role.map_or_else(|| "no role".into(), |role| format!("role {role:?}"))
}

/// The Kubernetes naming rule a value breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    Dns1123Label,
    Dns1123Subdomain,
}

impl std::fmt::Display for NameRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Dns1123Label => {
                "DNS-1123 label (lowercase letters, digits and '-', at most 63 characters, \
                 starting and ending with a letter or digit)"
            }
            Self::Dns1123Subdomain => {
                "DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253 \
                 characters)"
            }
        })
    }
}
