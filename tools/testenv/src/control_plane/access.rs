//! The identities tests act as: the admin (client certificate, group `system:masters`),
//! ServiceAccounts (TokenRequest tokens, so exactly their RBAC permissions) and users
//! the admin impersonates; as clients, or as kubeconfig files for other processes.

use std::io::Write;
use std::path::Path;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

use super::ControlPlane;
use crate::Error;
use crate::pki::Pki;

impl ControlPlane {
    /// Client configuration with the admin identity (group `system:masters`).
    pub async fn admin_config(&self) -> Result<Config, Error> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
    }

    /// A client with the admin identity. Each call builds a new client, so a client never
    /// outlives the test (and Tokio runtime) that made it.
    pub async fn admin_client(&self) -> Result<Client, Error> {
        Ok(Client::try_from(self.admin_config().await?)?)
    }

    /// Client configuration that authenticates as the ServiceAccount `namespace/name`
    /// (created if missing) with a token from the TokenRequest API, so it has exactly
    /// the RBAC permissions bound to that account.
    pub async fn service_account_config(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Config, Error> {
        let token = self.service_account_token(namespace, name).await?;
        let mut config = self.admin_config().await?;
        config.auth_info = AuthInfo {
            token: Some(token.into()),
            ..AuthInfo::default()
        };
        Ok(config)
    }

    /// A client that acts as `user` in `groups` (the admin impersonating them): for
    /// checking what RBAC and admission let a given user or group do.
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> Result<Client, Error> {
        let mut config = self.admin_config().await?;
        config.auth_info.impersonate = Some(user.into());
        config.auth_info.impersonate_groups =
            Some(groups.iter().map(|group| (*group).to_owned()).collect());
        Ok(Client::try_from(config)?)
    }

    /// Writes a kubeconfig file (mode 0600: it holds a token) for the ServiceAccount
    /// `namespace/name`, for processes started outside the test.
    pub async fn write_service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        path: &Path,
    ) -> Result<(), Error> {
        use std::os::unix::fs::OpenOptionsExt;
        let token = self.service_account_token(namespace, name).await?;
        let kubeconfig = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "testenv", "cluster": {
                "server": self.server,
                "certificate-authority": self.ca_cert,
            }}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": "testenv", "context": {"cluster": "testenv", "user": name}}],
            "current-context": "testenv",
        });
        let _ = std::fs::remove_file(path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(kubeconfig.to_string().as_bytes())?;
        Ok(())
    }

    async fn service_account_token(&self, namespace: &str, name: &str) -> Result<String, Error> {
        let accounts = Api::<ServiceAccount>::namespaced(self.admin_client().await?, namespace);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        // Create if missing; an existing account (e.g. from a manifest) stays as it is.
        match accounts.create(&PostParams::default(), &account).await {
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            other => {
                other?;
            }
        }
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                // Long enough for a `make run` session.
                expiration_seconds: Some(24 * 3600),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await?
            .status
            .and_then(|status| status.token)
            .ok_or_else(|| Error::NoToken {
                namespace: namespace.into(),
                name: name.into(),
            })
    }

    /// A client for the ServiceAccount `namespace/name`; see [`Self::service_account_config`].
    pub async fn service_account_client(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Client, Error> {
        Ok(Client::try_from(
            self.service_account_config(namespace, name).await?,
        )?)
    }
}

/// The kubeconfig [`ControlPlane::start`] writes for the admin identity.
pub(super) fn admin_kubeconfig(server: &str, pki: &Pki) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testenv", "cluster": {
            "server": server,
            "certificate-authority": pki.ca_cert,
        }}],
        "users": [{"name": "admin", "user": {
            "client-certificate": pki.admin_cert,
            "client-key": pki.admin_key,
        }}],
        "contexts": [{"name": "testenv", "context": {"cluster": "testenv", "user": "admin"}}],
        "current-context": "testenv",
    })
}
