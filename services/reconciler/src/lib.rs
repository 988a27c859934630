//! Setpoint's desired state and the reconciler that applies it.
//!
//! [`ReplicaSetpoint`] holds the desired replica count of the Deployment with the same
//! namespace and name.

pub mod resource;

pub use resource::{ReplicaSetpoint, ReplicaSetpointSpec, ReplicaSetpointStatus};
