//! `setpoint-reconciler`: see `--help` and RFD 0001.

use clap::Parser;
use setpoint_reconciler::config::Config;
use setpoint_reconciler::runtime::Reconciler;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    config.logs.init().map_err(anyhow::Error::msg)?;
    let kube_config = kube::Config::infer().await?;
    let reconciler = Reconciler::bind(config, kube_config).await?;
    reconciler
        .run(setpoint_runtime::signal::shutdown()?)
        .await?;
    tracing::info!("stopped");
    Ok(())
}
