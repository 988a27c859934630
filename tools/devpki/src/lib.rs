//! Short-lived development and test PKI: one CA that issues ECDSA P-256 server and
//! client certificates. Nothing here is meant for production, where cert-manager issues
//! Setpoint's certificates (see RFD 0001).

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

pub use rcgen::Error;

/// Validity of everything [`Authority::generate`] issues unless said otherwise.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// A PEM certificate and its PEM (PKCS#8) private key.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What a certificate is for and whom it names.
pub struct Subject {
    pub common_name: String,
    /// `O=` entries; Kubernetes reads them as group names.
    pub organizations: Vec<String>,
    /// DNS names and IP addresses (as text), for server certificates.
    pub hosts: Vec<String>,
    /// URI SANs, e.g. `spiffe://setpoint.dev/operator`: Setpoint's client identities.
    pub uris: Vec<String>,
    pub usage: ExtendedKeyUsagePurpose,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Subject {
    /// A server certificate for `hosts`, valid from now for `validity`.
    pub fn server(common_name: &str, hosts: &[&str], validity: Duration) -> Self {
        Self {
            hosts: hosts.iter().map(|host| host.to_string()).collect(),
            ..Self::new(common_name, ExtendedKeyUsagePurpose::ServerAuth, validity)
        }
    }

    /// A client certificate for `common_name`, valid from now for `validity`.
    pub fn client(common_name: &str, validity: Duration) -> Self {
        Self::new(common_name, ExtendedKeyUsagePurpose::ClientAuth, validity)
    }

    /// Adds a URI SAN.
    pub fn with_uri(mut self, uri: &str) -> Self {
        self.uris.push(uri.into());
        self
    }

    /// Adds an `O=` entry.
    pub fn with_organization(mut self, organization: &str) -> Self {
        self.organizations.push(organization.into());
        self
    }

    fn new(common_name: &str, usage: ExtendedKeyUsagePurpose, validity: Duration) -> Self {
        // Back-date a little so clocks that are slightly behind accept new certificates.
        let now = OffsetDateTime::now_utc();
        Self {
            common_name: common_name.into(),
            organizations: Vec::new(),
            hosts: Vec::new(),
            uris: Vec::new(),
            usage,
            not_before: now - Duration::from_secs(300),
            not_after: now + validity,
        }
    }
}

/// A certificate authority whose key only lives in memory.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl Authority {
    pub fn generate(common_name: &str, validity: Duration) -> Result<Self, Error> {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::from_secs(300);
        params.not_after = now + validity;
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn issue(&self, subject: &Subject) -> Result<Issued, Error> {
        let mut params = CertificateParams::new(subject.hosts.clone())?;
        params
            .distinguished_name
            .push(DnType::CommonName, subject.common_name.as_str());
        for organization in &subject.organizations {
            params
                .distinguished_name
                .push(DnType::OrganizationName, organization.as_str());
        }
        for uri in &subject.uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into()?));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![subject.usage.clone()];
        params.not_before = subject.not_before;
        params.not_after = subject.not_after;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}
