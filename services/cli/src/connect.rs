//! The mutual-TLS channel to the server, from the connection flags.

use std::path::{Path, PathBuf};

use anyhow::Context;
use setpoint_proto::v1::replica_service_client::ReplicaServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::Cli;
use crate::errors::causes;

pub async fn connect(cli: &Cli) -> anyhow::Result<ReplicaServiceClient<Channel>> {
    let read = |what: &str, flag: &str, path: &Option<PathBuf>| {
        let path: &Path = path.as_deref().with_context(|| {
            format!("{what}: give --{flag} or SETPOINT_{}", flag.to_uppercase())
        })?;
        std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
    };
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("CA bundle", "ca", &cli.ca)?))
        .identity(Identity::from_pem(
            read("client certificate", "cert", &cli.cert)?,
            read("client key", "key", &cli.key)?,
        ));
    if let Some(name) = &cli.tls_server_name {
        tls = tls.domain_name(name);
    }
    let timeout = cli.timeout;
    let channel = Channel::from_shared(cli.server.clone())
        .with_context(|| format!("invalid server URL {:?}", cli.server))?
        .tls_config(tls)
        .context("TLS configuration")?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|error| anyhow::anyhow!("cannot connect to {}: {}", cli.server, causes(&error)))?;
    Ok(ReplicaServiceClient::new(channel))
}
