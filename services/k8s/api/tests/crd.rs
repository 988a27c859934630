//! The committed CRD must be exactly what the Rust types generate.

#[test]
fn committed_crd_matches_the_rust_types() {
    let committed = include_str!("../../../../k8s/base/crd.yaml");
    let generated = setpoint_k8s_api::resource::crd_yaml().expect("the CRD serializes");
    assert!(
        committed == generated,
        "k8s/base/crd.yaml is stale: run `make crds` and commit the result"
    );
}
