//! `setpointctl`: list, watch, get and set Deployment replicas, and release Deployments,
//! through the Setpoint API.
//!
//! This file is the command line and its dispatch; `connect` opens the TLS channel,
//! `commands` holds what each command does, `output` how it is printed, and `errors`
//! how failures read.

mod commands;
mod connect;
mod errors;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use setpoint_core::duration::parse_duration;

use crate::commands::{read, watch, write};
use crate::output::Output;

/// Command-line client for the Setpoint API. Connects with mutual TLS; the client
/// certificate's identity decides what you may do.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Server URL.
    #[arg(
        long,
        env = "SETPOINT_SERVER",
        default_value = "https://localhost:8443"
    )]
    server: String,
    /// Name to verify the server certificate against, when it differs from the host in
    /// --server (e.g. a node address and NodePort in front of the Service).
    #[arg(long, env = "SETPOINT_TLS_SERVER_NAME")]
    tls_server_name: Option<String>,
    /// PEM CA bundle that issued the server certificate (required to connect).
    #[arg(long, env = "SETPOINT_CA")]
    ca: Option<PathBuf>,
    /// PEM client certificate (required to connect).
    #[arg(long, env = "SETPOINT_CERT")]
    cert: Option<PathBuf>,
    /// PEM private key of the client certificate (required to connect).
    #[arg(long, env = "SETPOINT_KEY")]
    key: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, env = "SETPOINT_OUTPUT", value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Time limit for connecting and for each request (a watch: its start).
    #[arg(long, env = "SETPOINT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List Deployments (all pages), ordered by namespace and name.
    List {
        /// Only this namespace (default: all).
        #[arg(long, short)]
        namespace: Option<String>,
        /// Label selector, e.g. `app=web,tier in (a,b)`.
        #[arg(long, short = 'l')]
        selector: Option<String>,
        /// Deployments per request (1-500).
        #[arg(long, default_value_t = 100)]
        page_size: i32,
    },
    /// Follow Deployments: the current state, then one line per change (Ctrl-C stops).
    /// Picks up where it left off when the server drops the stream.
    Watch {
        /// Only this namespace (default: all).
        #[arg(long, short)]
        namespace: Option<String>,
        /// Label selector, e.g. `app=web,tier in (a,b)`.
        #[arg(long, short = 'l')]
        selector: Option<String>,
    },
    /// Show one Deployment's replicas and setpoint.
    Get {
        /// NAMESPACE/NAME of the Deployment.
        deployment: String,
    },
    /// Set the desired replicas of a Deployment.
    Set {
        /// NAMESPACE/NAME of the Deployment.
        deployment: String,
        /// Desired replica count.
        #[arg(allow_negative_numbers = true)]
        replicas: i32,
        /// Only set if the setpoint is still at this version (from `get`); "" means
        /// only if there is no setpoint yet.
        #[arg(long)]
        expected_version: Option<String>,
        /// Check the write (validation, authorization, HPA, protected namespaces,
        /// --expected-version) and show the result without storing anything.
        #[arg(long, conflicts_with = "wait")]
        dry_run: bool,
        /// Then wait until the Deployment is reconciled, showing progress, for at most
        /// TIMEOUT (e.g. 90s, 5m; default 5m); fails with the reason if it cannot be.
        #[arg(long, value_name = "TIMEOUT", num_args = 0..=1, require_equals = true,
              default_missing_value = "5m", value_parser = parse_duration)]
        wait: Option<Duration>,
    },
    /// Stop Setpoint managing a Deployment (delete its setpoint); its replicas stay.
    Release {
        /// NAMESPACE/NAME of the Deployment.
        deployment: String,
        /// Only release if the setpoint is still at this version (from `get`).
        #[arg(long)]
        expected_version: Option<String>,
    },
    /// Print a completion script: `source <(setpointctl completion bash)`.
    Completion { shell: clap_complete::Shell },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Completion { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "setpointctl",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    let mut client = connect::connect(&cli).await?;
    let rows = match cli.command {
        Command::Completion { .. } => unreachable!("handled above"),
        Command::Watch {
            namespace,
            selector,
        } => return watch::watch(&mut client, namespace, selector, cli.output).await,
        Command::List {
            namespace,
            selector,
            page_size,
        } => read::list(&mut client, namespace, selector, page_size).await?,
        Command::Get { deployment } => read::get(&mut client, &deployment).await?,
        Command::Set {
            deployment,
            replicas,
            expected_version,
            dry_run,
            wait,
        } => {
            write::set(
                &mut client,
                &deployment,
                replicas,
                expected_version,
                dry_run,
                wait,
            )
            .await?
        }
        Command::Release {
            deployment,
            expected_version,
        } => write::release(&mut client, &deployment, expected_version).await?,
    };
    output::print_rows(cli.output, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
