//! Setpoint's desired state and the reconciler that applies it.
//!
//! [`ReplicaSetpoint`] holds the desired replica count of the Deployment with the same
//! namespace and name; [`controller`] drives Deployments to it; [`lease`] makes sure
//! only one replica of Setpoint does so.

pub mod controller;
pub mod decide;
pub mod lease;
pub mod metrics;
pub mod resource;

pub use resource::{ReplicaSetpoint, ReplicaSetpointSpec, ReplicaSetpointStatus};
