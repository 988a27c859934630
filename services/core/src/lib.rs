//! Setpoint's domain, in plain Rust: what a Deployment key is and which names, replica
//! counts and page sizes are valid ([`key`]); who a caller is, what roles and namespace
//! scopes mean and how the policy file binds them ([`access`], [`policy`]); the
//! per-identity write budget ([`limits`]); the duration syntax of every flag
//! ([`duration`]); and the errors that say what went wrong
//! ([`Error`]). Transports decide how to report them; nothing here knows Kubernetes or
//! gRPC.

pub mod access;
pub mod duration;
pub mod error;
pub mod key;
pub mod limits;
pub mod policy;

/// The `tracing` target of audit events: every write's intent and outcome, and every
/// denial.
pub const AUDIT: &str = "setpoint::audit";

pub use access::{Caller, ClientIdentity, Permission, Role, Scope};
pub use error::Error;
pub use key::DeploymentKey;
pub use policy::{Policy, PolicyError};
