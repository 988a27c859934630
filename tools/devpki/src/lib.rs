//! Short-lived development and test PKI: CAs that issue ECDSA P-256 server and client
//! certificates. Nothing here is meant for production, where cert-manager issues
//! Setpoint's certificates (see RFD 0001).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("issuing a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Names the development server certificate covers: local runs and the in-cluster
/// Service.
pub const DEV_SERVER_HOSTS: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "setpoint",
    "setpoint.setpoint",
    "setpoint.setpoint.svc",
    "setpoint.setpoint.svc.cluster.local",
];

/// The client identities of the development PKI, as `(file stem, URI SAN)`.
pub const DEV_IDENTITIES: &[(&str, &str)] = &[
    ("operator", "spiffe://setpoint.dev/operator"),
    ("viewer", "spiffe://setpoint.dev/viewer"),
];

/// Writes the development PKI into `dir`: `ca.crt` (the server CA, which clients trust)
/// and `server.{crt,key}`; `client-ca.crt` (a separate CA, which the server trusts) and
/// `<identity>.{crt,key}` for each of [`DEV_IDENTITIES`]. Two CAs, so that whoever can
/// obtain a server certificate cannot mint client identities. Keys are mode 0600; the
/// CA keys are never written, so nothing else can be issued from them later.
pub fn write_dev_pki(dir: &Path, validity: Duration) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.into(),
        source,
    })?;
    let server_ca = Authority::generate("setpoint-dev-server-ca", validity)?;
    write(dir, "ca.crt", server_ca.cert_pem(), 0o644)?;
    let server = server_ca.issue(&Subject::server("setpoint", DEV_SERVER_HOSTS, validity))?;
    write(dir, "server.crt", &server.cert_pem, 0o644)?;
    write(dir, "server.key", &server.key_pem, 0o600)?;
    let client_ca = Authority::generate("setpoint-dev-client-ca", validity)?;
    write(dir, "client-ca.crt", client_ca.cert_pem(), 0o644)?;
    for (name, uri) in DEV_IDENTITIES {
        let client = client_ca.issue(&Subject::client(name, validity).with_uri(uri))?;
        write(dir, &format!("{name}.crt"), &client.cert_pem, 0o644)?;
        write(dir, &format!("{name}.key"), &client.key_pem, 0o600)?;
    }
    Ok(())
}

fn write(dir: &Path, name: &str, contents: &str, mode: u32) -> Result<(), Error> {
    let path = dir.join(name);
    // Replace rather than truncate, so a key file never briefly has looser permissions.
    let _ = fs::remove_file(&path);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .and_then(|mut file| file.write_all(contents.as_bytes()))
        .map_err(|source| Error::Write { path, source })
}

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

#[cfg(test)]
mod tests {
    use x509_parser::prelude::{FromDer, X509Certificate};

    use super::*;

    /// The issuer's and the subject's common names of a PEM certificate file.
    fn names(dir: &Path, file: &str) -> (String, String) {
        let pem = fs::read_to_string(dir.join(file)).expect("read");
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
        let (_, cert) = X509Certificate::from_der(&pem.contents).expect("DER");
        let common_name = |name: &x509_parser::x509::X509Name| {
            name.iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned)
                .expect("CN")
        };
        (common_name(cert.issuer()), common_name(cert.subject()))
    }

    #[test]
    fn clients_and_the_server_are_issued_by_different_cas() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_dev_pki(dir.path(), DEFAULT_VALIDITY).expect("PKI");
        let (_, server_ca) = names(dir.path(), "ca.crt");
        let (_, client_ca) = names(dir.path(), "client-ca.crt");
        assert_ne!(server_ca, client_ca);
        assert_eq!(names(dir.path(), "server.crt").0, server_ca);
        for (identity, _) in DEV_IDENTITIES {
            assert_eq!(
                names(dir.path(), &format!("{identity}.crt")).0,
                client_ca,
                "a server certificate's issuer must not be able to mint clients"
            );
        }
    }
}
