//! The RFD embeds the API contract; this keeps the copy identical to `protos/`.

#[test]
fn rfd_proto_matches_protos() {
    let proto = include_str!("../../../protos/setpoint/v1/setpoint.proto");
    let rfd = include_str!("../../../docs/rfd/0001-setpoint.md");
    let embedded = rfd
        .split_once("```proto\n")
        .and_then(|(_, rest)| rest.split_once("```\n"))
        .map(|(block, _)| block)
        .expect("docs/rfd/0001-setpoint.md has a ```proto block");
    assert!(
        embedded == proto,
        "the proto in docs/rfd/0001-setpoint.md differs from protos/setpoint/v1/setpoint.proto; \
         copy the file into the RFD"
    );
}
