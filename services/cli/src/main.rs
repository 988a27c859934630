//! `setpointctl`: list, get and set Deployment replicas, and release Deployments, through
//! the Setpoint API.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use setpoint_api::v1::replica_service_client::ReplicaServiceClient;
use setpoint_api::v1::{
    DeploymentRef, DeploymentReplicas, GetReplicasRequest, ListDeploymentsRequest, ReconcileState,
    ReleaseDeploymentRequest, SetReplicasRequest,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

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
    /// PEM CA bundle that issued the server certificate.
    #[arg(long, env = "SETPOINT_CA")]
    ca: PathBuf,
    /// PEM client certificate.
    #[arg(long, env = "SETPOINT_CERT")]
    cert: PathBuf,
    /// PEM private key of the client certificate.
    #[arg(long, env = "SETPOINT_KEY")]
    key: PathBuf,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Time limit for connecting and for each request, in seconds.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
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
        #[arg(long)]
        dry_run: bool,
    },
    /// Stop Setpoint managing a Deployment (delete its setpoint); its replicas stay.
    Release {
        /// NAMESPACE/NAME of the Deployment.
        deployment: String,
        /// Only release if the setpoint is still at this version (from `get`).
        #[arg(long)]
        expected_version: Option<String>,
    },
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
    let mut client = connect(&cli).await?;
    let rows = match cli.command {
        Command::List {
            namespace,
            selector,
            page_size,
        } => {
            let mut rows = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_deployments(ListDeploymentsRequest {
                        namespace: namespace.clone().unwrap_or_default(),
                        label_selector: selector.clone().unwrap_or_default(),
                        page_size,
                        page_token,
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                rows.extend(page.deployments);
                if page.next_page_token.is_empty() {
                    break rows;
                }
                page_token = page.next_page_token;
            }
        }
        Command::Get { deployment } => {
            let response = client
                .get_replicas(GetReplicasRequest {
                    deployment: Some(parse_ref(&deployment)?),
                })
                .await
                .map_err(status_error)?;
            response.into_inner().replicas.into_iter().collect()
        }
        Command::Set {
            deployment,
            replicas,
            expected_version,
            dry_run,
        } => {
            let response = client
                .set_replicas(SetReplicasRequest {
                    deployment: Some(parse_ref(&deployment)?),
                    replicas,
                    expected_version,
                    dry_run,
                })
                .await
                .map_err(status_error)?;
            if dry_run {
                eprintln!("dry run: nothing was stored");
            }
            response.into_inner().replicas.into_iter().collect()
        }
        Command::Release {
            deployment,
            expected_version,
        } => {
            let response = client
                .release_deployment(ReleaseDeploymentRequest {
                    deployment: Some(parse_ref(&deployment)?),
                    expected_version,
                })
                .await
                .map_err(status_error)?;
            eprintln!("released {deployment}: Setpoint no longer manages it");
            response.into_inner().replicas.into_iter().collect()
        }
    };
    match cli.output {
        Output::Table => print_table(&rows),
        Output::Json => println!("{}", serde_json::to_string_pretty(&to_json(&rows))?),
    }
    Ok(())
}

async fn connect(cli: &Cli) -> anyhow::Result<ReplicaServiceClient<Channel>> {
    let read = |what: &str, path: &Path| {
        std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
    };
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("CA bundle", &cli.ca)?))
        .identity(Identity::from_pem(
            read("client certificate", &cli.cert)?,
            read("client key", &cli.key)?,
        ));
    if let Some(name) = &cli.tls_server_name {
        tls = tls.domain_name(name);
    }
    let timeout = Duration::from_secs(cli.timeout);
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

/// The whole source chain: tonic's own message is only "transport error".
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        // Layers often repeat their source's message; print each once.
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    let code = status.code();
    let detail = match std::error::Error::source(&status) {
        Some(source) if status.message().is_empty() => causes(source),
        _ => status.message().to_owned(),
    };
    anyhow::anyhow!("{}: {detail}", code_name(code))
}

/// Short names for gRPC codes, as users see them in kubectl-style messages.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::InvalidArgument => "invalid argument",
        Code::NotFound => "not found",
        Code::PermissionDenied => "permission denied",
        Code::Unauthenticated => "unauthenticated",
        Code::Aborted => "aborted (version conflict)",
        Code::FailedPrecondition => "failed precondition",
        Code::Unavailable => "unavailable",
        Code::ResourceExhausted => "resource exhausted",
        Code::DeadlineExceeded => "deadline exceeded",
        _ => "error",
    }
}

fn parse_ref(text: &str) -> anyhow::Result<DeploymentRef> {
    let Some((namespace, name)) = text.split_once('/') else {
        bail!("expected NAMESPACE/NAME, got {text:?}");
    };
    Ok(DeploymentRef {
        namespace: namespace.into(),
        name: name.into(),
    })
}

fn state_name(row: &DeploymentReplicas) -> &'static str {
    match ReconcileState::try_from(row.reconcile_state) {
        Ok(ReconcileState::Unmanaged) => "Unmanaged",
        Ok(ReconcileState::Pending) => "Pending",
        Ok(ReconcileState::Reconciled) => "Reconciled",
        Ok(ReconcileState::ManagedByHpa) => "ManagedByHPA",
        Ok(ReconcileState::TargetReplaced) => "TargetReplaced",
        Ok(ReconcileState::Failed) => "Failed",
        Ok(ReconcileState::Unspecified) | Err(_) => "Unknown",
    }
}

fn print_table(rows: &[DeploymentReplicas]) {
    let mut lines = vec![
        [
            "NAMESPACE",
            "NAME",
            "REPLICAS",
            "READY",
            "AVAILABLE",
            "DESIRED",
            "STATE",
            "VERSION",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for row in rows {
        let deployment = row.deployment.clone().unwrap_or_default();
        lines.push(vec![
            deployment.namespace,
            deployment.name,
            row.spec_replicas.to_string(),
            row.ready_replicas.to_string(),
            row.available_replicas.to_string(),
            row.desired_replicas
                .map_or("-".to_owned(), |replicas| replicas.to_string()),
            state_name(row).to_owned(),
            if row.version.is_empty() {
                "-".to_owned()
            } else {
                row.version.clone()
            },
        ]);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|column| {
            lines
                .iter()
                .map(|line| line[column].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

fn to_json(rows: &[DeploymentReplicas]) -> serde_json::Value {
    rows.iter()
        .map(|row| {
            let deployment = row.deployment.clone().unwrap_or_default();
            serde_json::json!({
                "namespace": deployment.namespace,
                "name": deployment.name,
                "uid": row.uid,
                "specReplicas": row.spec_replicas,
                "readyReplicas": row.ready_replicas,
                "availableReplicas": row.available_replicas,
                "updatedReplicas": row.updated_replicas,
                "desiredReplicas": row.desired_replicas,
                "reconcileState": state_name(row),
                "reconcileMessage": row.reconcile_message,
                "version": row.version,
            })
        })
        .collect()
}
