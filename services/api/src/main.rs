//! `setpoint-api`: see `--help` and RFD 0001.

use clap::Parser;
use setpoint_api::{Config, Server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    config.logs.init().map_err(anyhow::Error::msg)?;
    let kube_config = kube::Config::infer().await?;
    let server = Server::bind(config, kube_config).await?;
    server.run(setpoint_runtime::signal::shutdown()?).await?;
    tracing::info!("stopped");
    Ok(())
}
