//! The control plane's throwaway PKI: a CA, the API server's serving certificate, an
//! admin client certificate (group `system:masters`) and the ServiceAccount signing key.
//! Everything lives only in the control plane's temporary directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use devpki::{Authority, Subject};
use rcgen::KeyPair;

use crate::Error;

/// Longer than any test run.
const VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// Paths of the files the API server and its clients need.
pub(crate) struct Pki {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_public_key: PathBuf,
}

impl Pki {
    pub(crate) fn generate(dir: &Path) -> Result<Self, Error> {
        fs::create_dir_all(dir)?;
        let write = |name: &str, pem: &str| -> Result<PathBuf, Error> {
            let path = dir.join(name);
            fs::write(&path, pem)?;
            Ok(path)
        };
        let ca = Authority::generate("testenv-ca", VALIDITY)?;
        let serving = ca.issue(&Subject::server(
            "kube-apiserver",
            &["localhost", "127.0.0.1"],
            VALIDITY,
        ))?;
        let admin = ca.issue(
            &Subject::client("testenv-admin", VALIDITY).with_organization("system:masters"),
        )?;
        let service_account_key = KeyPair::generate()?;
        Ok(Self {
            ca_cert: write("ca.crt", ca.cert_pem())?,
            serving_cert: write("apiserver.crt", &serving.cert_pem)?,
            serving_key: write("apiserver.key", &serving.key_pem)?,
            admin_cert: write("admin.crt", &admin.cert_pem)?,
            admin_key: write("admin.key", &admin.key_pem)?,
            service_account_key: write(
                "service-account.key",
                &service_account_key.serialize_pem(),
            )?,
            // The API server reads verification keys only from public-key or
            // non-PKCS#8 PEM blocks.
            service_account_public_key: write(
                "service-account.pub",
                &service_account_key.public_key_pem(),
            )?,
        })
    }
}
