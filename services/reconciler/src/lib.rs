//! The reconciler: drives each Deployment to the replica count of its
//! [`ReplicaSetpoint`](setpoint_k8s::ReplicaSetpoint). [`decide`] is the plain-Rust
//! decision, [`controller`] the kube-runtime loop that reads, writes and reports.
//! Whoever runs it (the server, while it holds the leader Lease) chooses where its
//! [`metrics`] are registered.

pub mod controller;
pub mod decide;
pub mod metrics;
