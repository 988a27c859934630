//! Prints the ReplicaSetpoint CRD as YAML (`make crds` writes it to `k8s/base/crd.yaml`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    print!("{}", setpoint_k8s_api::resource::crd_yaml()?);
    Ok(())
}
