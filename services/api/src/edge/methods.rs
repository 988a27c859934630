//! The RPC → permission table: every method the server answers and what it needs. The
//! service names come from the generated servers; a path not listed here is denied.

use std::sync::LazyLock;

use setpoint_core::Permission;
use setpoint_proto::v1::replica_service_server;
use tonic_health::pb::health_server;

static METHODS: LazyLock<Vec<(String, Permission)>> = LazyLock::new(|| {
    let (replicas, health) = (
        replica_service_server::SERVICE_NAME,
        health_server::SERVICE_NAME,
    );
    [
        (replicas, "ListDeployments", Permission::Read),
        (replicas, "WatchDeployments", Permission::Read),
        (replicas, "GetReplicas", Permission::Read),
        (replicas, "SetReplicas", Permission::Write),
        (replicas, "ReleaseDeployment", Permission::Write),
        (health, "Check", Permission::Read),
        (health, "Watch", Permission::Read),
    ]
    .into_iter()
    .map(|(service, method, permission)| (format!("/{service}/{method}"), permission))
    .collect()
});

/// The permission the RPC at `path` needs, with its path as a `'static` string; `None`
/// for a path the server does not answer.
pub fn lookup(path: &str) -> Option<(&'static str, Permission)> {
    let methods: &'static [(String, Permission)] = &METHODS;
    methods
        .iter()
        .find(|(method, _)| method == path)
        .map(|(method, permission)| (method.as_str(), *permission))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_told_apart_from_reads() {
        let permission = |path| lookup(path).map(|(_, permission)| permission);
        assert_eq!(
            permission("/setpoint.v1.ReplicaService/SetReplicas"),
            Some(Permission::Write)
        );
        assert_eq!(
            permission("/setpoint.v1.ReplicaService/ReleaseDeployment"),
            Some(Permission::Write)
        );
        assert_eq!(
            permission("/setpoint.v1.ReplicaService/GetReplicas"),
            Some(Permission::Read)
        );
        assert_eq!(
            permission("/grpc.health.v1.Health/Check"),
            Some(Permission::Read)
        );
    }

    #[test]
    fn unknown_methods_have_no_permission() {
        let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        assert_eq!(lookup(reflection), None);
        assert_eq!(lookup("/setpoint.v1.ReplicaService/SetReplicas/"), None);
    }
}
