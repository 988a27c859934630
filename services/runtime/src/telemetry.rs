//! Logging: structured `tracing` events, as text or one JSON object per line.

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Logging")]
pub struct LogFlags {
    /// Log format. `RUST_LOG` sets the level (default `info`).
    #[arg(long, env = "SETPOINT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFlags {
    /// Installs the process's log subscriber, and ring as its one rustls provider (the
    /// kube client's; the API's own TLS configuration names its provider explicitly).
    pub fn init(&self) -> Result<(), String> {
        let logs = tracing_subscriber::fmt().with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        );
        match self.log_format {
            LogFormat::Text => logs.init(),
            LogFormat::Json => logs.json().flatten_event(true).init(),
        }
        rustls::crypto::ring::default_provider()
            .install_default()
            .map_err(|_| "a rustls crypto provider was already installed".to_owned())
    }
}
