//! `setpoint-reconciler`: drives each Deployment to the replica count of its
//! [`ReplicaSetpoint`](setpoint_k8s_api::ReplicaSetpoint). [`decide`] is the plain-Rust
//! decision, [`controller`] the kube-runtime loop that reads the index, writes and
//! reports, [`lease`] the leader election that decides which replica runs it, and
//! [`runtime`] the process that wires them ([`config`] parses its flags).

pub mod config;
pub mod controller;
pub mod decide;
pub mod lease;
pub mod metrics;
pub mod runtime;
