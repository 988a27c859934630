//! Who is calling: the identity in the verified client certificate of the connection a
//! request arrived on: its first URI SAN, else its CN, each in its own namespace
//! ([`ClientIdentity`]). rustls has verified the chain; this only reads the leaf.

use std::sync::Arc;

use setpoint_core::{ClientIdentity, Error};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The identity of the client certificate the request's connection presented.
pub fn of_request<B>(request: &http::Request<B>) -> Result<ClientIdentity, Error> {
    let leaf = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .and_then(|certs: Arc<Vec<_>>| certs.first().cloned())
        .ok_or_else(|| Error::NoIdentity("no verified client certificate".into()))?;
    from_certificate(&leaf)
}

pub fn from_certificate(der: &[u8]) -> Result<ClientIdentity, Error> {
    let unusable = |reason: String| Error::NoIdentity(format!("client certificate: {reason}"));
    let (_, cert) = X509Certificate::from_der(der).map_err(|error| unusable(error.to_string()))?;
    let uri = cert
        .subject_alternative_name()
        .map_err(|error| unusable(error.to_string()))?
        .and_then(|san| {
            san.value.general_names.iter().find_map(|name| match name {
                GeneralName::URI(uri) => Some(uri.to_string()),
                _ => None,
            })
        });
    let common_name = || {
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
    };
    match (uri, common_name().filter(|name| !name.is_empty())) {
        (Some(uri), _) => ClientIdentity::uri(&uri).map_err(unusable),
        (None, Some(name)) => Ok(ClientIdentity::CommonName(name)),
        (None, None) => Err(unusable("has neither a URI SAN nor a common name".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_the_uri_san_else_the_common_name() {
        let ca = devpki::Authority::generate("test-ca", devpki::DEFAULT_VALIDITY).expect("ca");
        let pem_to_der = |pem: &str| {
            x509_parser::pem::parse_x509_pem(pem.as_bytes())
                .expect("pem")
                .1
                .contents
        };
        let with_uri = ca
            .issue(
                &devpki::Subject::client("alice", devpki::DEFAULT_VALIDITY)
                    .with_uri("spiffe://setpoint.dev/alice"),
            )
            .expect("cert");
        assert_eq!(
            from_certificate(&pem_to_der(&with_uri.cert_pem)).ok(),
            Some(ClientIdentity::Uri("spiffe://setpoint.dev/alice".into()))
        );
        let cn_only = ca
            .issue(&devpki::Subject::client("bob", devpki::DEFAULT_VALIDITY))
            .expect("cert");
        assert_eq!(
            from_certificate(&pem_to_der(&cn_only.cert_pem)).ok(),
            Some(ClientIdentity::CommonName("bob".into()))
        );
        let cn_scheme = ca
            .issue(&devpki::Subject::client("carol", devpki::DEFAULT_VALIDITY).with_uri("cn:admin"))
            .expect("cert");
        assert!(matches!(
            from_certificate(&pem_to_der(&cn_scheme.cert_pem)),
            Err(Error::NoIdentity(reason)) if reason.contains("common name")
        ));
        assert!(matches!(
            from_certificate(b"not a certificate"),
            Err(Error::NoIdentity(_))
        ));
    }

    #[test]
    fn a_common_name_spelling_a_uri_identity_is_not_that_identity() {
        let ca = devpki::Authority::generate("test-ca", devpki::DEFAULT_VALIDITY).expect("ca");
        let operator = "spiffe://setpoint.dev/operator";
        let impostor = ca
            .issue(&devpki::Subject::client(operator, devpki::DEFAULT_VALIDITY))
            .expect("cert");
        let der = x509_parser::pem::parse_x509_pem(impostor.cert_pem.as_bytes())
            .expect("pem")
            .1
            .contents;
        let identity = from_certificate(&der).expect("a CN identity");
        let policy = setpoint_core::Policy::parse(&format!(
            "bindings: [{{role: operator, identities: [\"{operator}\"]}}]"
        ))
        .expect("policy");
        assert!(
            policy
                .authorize(&identity, "SetReplicas", setpoint_core::Permission::Write)
                .is_err(),
            "a CN that spells {operator} was granted its role"
        );
    }
}
