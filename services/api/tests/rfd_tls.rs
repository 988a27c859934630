//! RFD 0001 names the TLS the API offers; this keeps it true to `edge/tls.rs`.

use rustls::ProtocolVersion;
use setpoint_api::edge::tls::{PROTOCOL_VERSIONS, crypto_provider};

#[test]
fn the_rfd_names_the_versions_suites_and_groups_the_server_offers() {
    let rfd = include_str!("../../../docs/rfd/0001-setpoint.md");
    let rfd = rfd.split_whitespace().collect::<Vec<_>>().join(" ");
    let versions: Vec<&str> = PROTOCOL_VERSIONS
        .iter()
        .map(|version| match version.version {
            ProtocolVersion::TLSv1_3 => "1.3",
            ProtocolVersion::TLSv1_2 => "1.2",
            other => panic!("the RFD has no name for {other:?}"),
        })
        .collect();
    let versions = match versions.as_slice() {
        [only] => format!("TLS {only} only"),
        several => format!("TLS {}", several.join(" and ")),
    };
    let provider = crypto_provider();
    let listed = |names: Vec<String>| {
        names
            .iter()
            .map(|name| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let suites = listed(
        provider
            .cipher_suites
            .iter()
            .map(|suite| format!("{:?}", suite.suite()))
            .collect(),
    );
    let groups = listed(
        provider
            .kx_groups
            .iter()
            .map(|group| format!("{:?}", group.name()))
            .collect(),
    );
    let expected = format!(
        "{versions}; cipher suites, in order of preference: {suites}; key exchange groups: \
         {groups}."
    );
    assert!(
        rfd.contains(&expected),
        "docs/rfd/0001-setpoint.md must say what edge/tls.rs offers: {expected}"
    );
}
