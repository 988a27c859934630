//! A real, local Kubernetes control plane for integration tests: etcd and kube-apiserver
//! (and, on request, kube-controller-manager) built from their Go modules by
//! `tools/controlplane/build.sh` and started on loopback ports.
//!
//! One control plane is shared by all tests of a test binary ([`shared()`]); tests isolate
//! themselves by namespace ([`ControlPlane::namespace`]). Tests that stop the API server
//! belong in a test binary of their own, since they disrupt every test sharing it.
//!
//! There is no kubelet, scheduler or network: Pods are stored but stay `Pending`.
//!
//! Where a real control plane is overkill, [`fake`] scripts the API server's answers.

mod binaries;
mod control_plane;
pub mod fake;
mod objects;
mod pki;
mod process;
pub mod proxy;
mod shared;
mod wait;

use std::path::PathBuf;

pub use control_plane::ControlPlane;
pub use objects::deployment;
pub use shared::shared;
pub use wait::{WAIT_TIMEOUT, wait_for};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building the control plane with {script}: {reason}")]
    Build { script: PathBuf, reason: String },
    #[error("starting {component}: {source}")]
    Spawn {
        component: &'static str,
        source: std::io::Error,
    },
    #[error("{component} did not become ready: {reason}\n{log_tail}")]
    NotReady {
        component: &'static str,
        reason: String,
        log_tail: String,
    },
    #[error("TokenRequest for ServiceAccount {namespace}/{name} returned no token")]
    NoToken { namespace: String, name: String },
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("generating the control plane's PKI: {0}")]
    Pki(#[from] devpki::Error),
    #[error("generating the ServiceAccount key: {0}")]
    Key(#[from] rcgen::Error),
    #[error("reading the control plane's kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
