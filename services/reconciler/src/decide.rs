//! What the reconciler does with one setpoint, decided in plain Rust from what it read:
//! the Deployment (if any) and the HPA that targets it (if any). No I/O here.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use setpoint_k8s_api::resource::{CONDITION_RECONCILED, Reason};
use setpoint_k8s_api::{ReplicaSetpoint, ReplicaSetpointStatus};

/// What the reconciler read about the target Deployment.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub uid: String,
    pub replicas: i32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Write `to` through the scale subresource. `reverting` when Setpoint had already
    /// applied this value and someone else changed it since.
    Scale { from: i32, to: i32, reverting: bool },
    /// The Deployment already has the desired replicas.
    InSync,
    /// Do not write; report why.
    Hold { reason: Reason, message: String },
}

pub fn decide(
    setpoint: &ReplicaSetpoint,
    target: Option<&Target>,
    autoscaler: Option<&str>,
) -> Decision {
    let desired = setpoint.spec.replicas;
    let Some(target) = target else {
        return Decision::Hold {
            reason: Reason::DeploymentNotFound,
            message: "the Deployment does not exist; Setpoint does not create it".into(),
        };
    };
    if target.uid != setpoint.spec.deployment_uid {
        return Decision::Hold {
            reason: Reason::TargetReplaced,
            message: format!(
                "the Deployment was recreated (UID {}, setpoint made for {}); set replicas \
                 again to manage the new one",
                target.uid, setpoint.spec.deployment_uid
            ),
        };
    }
    if let Some(autoscaler) = autoscaler {
        return Decision::Hold {
            reason: Reason::ManagedByHpa,
            message: format!(
                "HorizontalPodAutoscaler {autoscaler} scales this Deployment; Setpoint does \
                 not fight it"
            ),
        };
    }
    if target.replicas == desired {
        return Decision::InSync;
    }
    let status = setpoint.status.as_ref();
    let reverting = status.and_then(|status| status.applied_replicas) == Some(desired)
        && status.and_then(|status| status.observed_generation) == setpoint.metadata.generation;
    Decision::Scale {
        from: target.replicas,
        to: desired,
        reverting,
    }
}

/// The status after a reconcile: `observedGeneration` is current, the condition says
/// `reason`, and its `lastTransitionTime` only moves when status or reason change.
pub fn next_status(
    setpoint: &ReplicaSetpoint,
    reason: Reason,
    message: String,
    applied_replicas: Option<i32>,
    now: Timestamp,
) -> ReplicaSetpointStatus {
    let status = if reason == Reason::Reconciled {
        "True"
    } else {
        "False"
    };
    let previous = setpoint.reconciled_condition();
    let last_transition_time = previous
        .filter(|c| c.status == status && c.reason == reason.as_str())
        .map_or(Time(now), |c| c.last_transition_time.clone());
    ReplicaSetpointStatus {
        observed_generation: setpoint.metadata.generation,
        applied_replicas: applied_replicas.or_else(|| {
            setpoint
                .status
                .as_ref()
                .and_then(|status| status.applied_replicas)
        }),
        conditions: vec![Condition {
            type_: CONDITION_RECONCILED.into(),
            status: status.into(),
            reason: reason.as_str().into(),
            message,
            last_transition_time,
            observed_generation: setpoint.metadata.generation,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use setpoint_k8s_api::ReplicaSetpointSpec;

    fn setpoint(desired: i32, applied: Option<i32>) -> ReplicaSetpoint {
        let mut setpoint = ReplicaSetpoint::new(
            "web",
            ReplicaSetpointSpec {
                replicas: desired,
                deployment_uid: "uid-1".into(),
            },
        );
        setpoint.metadata.generation = Some(2);
        setpoint.status = applied.map(|applied| ReplicaSetpointStatus {
            observed_generation: Some(2),
            applied_replicas: Some(applied),
            conditions: Vec::new(),
        });
        setpoint
    }

    fn target(replicas: i32) -> Target {
        Target {
            uid: "uid-1".into(),
            replicas,
        }
    }

    #[test]
    fn a_differing_deployment_is_scaled() {
        assert_eq!(
            decide(&setpoint(5, None), Some(&target(2)), None),
            Decision::Scale {
                from: 2,
                to: 5,
                reverting: false
            }
        );
        assert_eq!(
            decide(&setpoint(5, None), Some(&target(5)), None),
            Decision::InSync
        );
    }

    #[test]
    fn external_scale_is_reverted() {
        assert_eq!(
            decide(&setpoint(5, Some(5)), Some(&target(9)), None),
            Decision::Scale {
                from: 9,
                to: 5,
                reverting: true
            }
        );
    }

    #[test]
    fn missing_replaced_or_autoscaled_deployments_are_not_written() {
        let reason = |decision| match decision {
            Decision::Hold { reason, .. } => Some(reason),
            _ => None,
        };
        assert_eq!(
            reason(decide(&setpoint(5, None), None, None)),
            Some(Reason::DeploymentNotFound)
        );
        let recreated = Target {
            uid: "uid-2".into(),
            replicas: 1,
        };
        assert_eq!(
            reason(decide(&setpoint(5, None), Some(&recreated), None)),
            Some(Reason::TargetReplaced)
        );
        assert_eq!(
            reason(decide(
                &setpoint(5, None),
                Some(&target(1)),
                Some("web-hpa")
            )),
            Some(Reason::ManagedByHpa)
        );
    }

    #[test]
    fn transition_time_moves_only_on_change() {
        let t0 = Timestamp::from_second(1_000).expect("time");
        let t1 = Timestamp::from_second(2_000).expect("time");
        let mut current = setpoint(5, None);
        current.status = Some(next_status(
            &current,
            Reason::Reconciled,
            "ok".into(),
            Some(5),
            t0,
        ));
        let same = next_status(&current, Reason::Reconciled, "ok".into(), None, t1);
        assert_eq!(same.conditions[0].last_transition_time, Time(t0));
        assert_eq!(
            same.applied_replicas,
            Some(5),
            "kept from the previous status"
        );
        let changed = next_status(&current, Reason::ManagedByHpa, "hpa".into(), None, t1);
        assert_eq!(changed.conditions[0].last_transition_time, Time(t1));
        assert_eq!(changed.conditions[0].status, "False");
        assert_eq!(changed.observed_generation, Some(2));
    }
}
