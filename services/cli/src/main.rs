//! `setpointctl`: list, watch, get and set Deployment replicas, and release Deployments,
//! through the Setpoint API.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use setpoint_core::duration::parse_duration;
use setpoint_proto::v1::replica_service_client::ReplicaServiceClient;
use setpoint_proto::v1::{
    DeploymentRef, DeploymentReplicas, GetReplicasRequest, ListDeploymentsRequest, ReconcileState,
    ReleaseDeploymentRequest, SetReplicasRequest, WatchDeploymentsRequest,
    WatchDeploymentsResponse, WatchEventType,
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
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Time limit for connecting and for each request (a watch: its start), in seconds.
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
    let mut client = connect(&cli).await?;
    let rows = match cli.command {
        Command::Completion { .. } => unreachable!("handled above"),
        Command::Watch {
            namespace,
            selector,
        } => {
            let request = WatchDeploymentsRequest {
                namespace: namespace.unwrap_or_default(),
                label_selector: selector.unwrap_or_default(),
                resume_token: String::new(),
            };
            return follow(&mut client, request, |message| {
                print_event(cli.output, &message);
                true
            })
            .await;
        }
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
            wait,
        } => {
            let target = parse_ref(&deployment)?;
            let response = client
                .set_replicas(SetReplicasRequest {
                    deployment: Some(target.clone()),
                    replicas,
                    expected_version,
                    dry_run,
                })
                .await
                .map_err(status_error)?;
            if dry_run {
                eprintln!("dry run: nothing was stored");
            }
            let rows: Vec<DeploymentReplicas> =
                response.into_inner().replicas.into_iter().collect();
            if let (Some(timeout), Some(stored)) = (wait, rows.first()) {
                wait_reconciled(&mut client, &target, &stored.version, timeout).await?;
            }
            rows
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

/// Runs a watch, handing each message to `handle` until it returns false. When the
/// server drops the stream (it stops, or this client read too slowly) the watch resumes
/// after the last message; when the server no longer knows that point, it starts over.
async fn follow(
    client: &mut ReplicaServiceClient<Channel>,
    mut request: WatchDeploymentsRequest,
    mut handle: impl FnMut(WatchDeploymentsResponse) -> bool,
) -> anyhow::Result<()> {
    use tonic::Code;
    loop {
        let ended = match client.watch_deployments(request.clone()).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(message)) => {
                            // INITIAL messages have none: the state is whole only at SYNCED.
                            if !message.resume_token.is_empty() {
                                request.resume_token = message.resume_token.clone();
                            }
                            if !handle(message) {
                                return Ok(());
                            }
                        }
                        Ok(None) => break tonic::Status::unavailable("the server ended the watch"),
                        Err(status) => break status,
                    }
                }
            }
            Err(status) => status,
        };
        // Resumable: the server stopped or dropped the stream, the connection broke, or
        // this client read too slowly (not: too many watches).
        let resumable = match ended.code() {
            Code::Unavailable | Code::Unknown | Code::Internal => true,
            Code::ResourceExhausted => ended.message().contains("too slowly"),
            Code::OutOfRange => {
                request.resume_token.clear();
                true
            }
            _ => false,
        };
        if !resumable {
            return Err(status_error(ended));
        }
        eprintln!("watch interrupted ({}); resuming", status_error(ended));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits until `target`'s setpoint at `version` (the one just stored) is reconciled,
/// printing each state it passes; another version taking its place ends the wait.
async fn wait_reconciled(
    client: &mut ReplicaServiceClient<Channel>,
    target: &DeploymentRef,
    version: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let key = format!("{}/{}", target.namespace, target.name);
    let request = WatchDeploymentsRequest {
        namespace: target.namespace.clone(),
        ..WatchDeploymentsRequest::default()
    };
    let mut outcome = Err(anyhow::anyhow!("the watch ended"));
    let mut last = String::from("unknown");
    let mut seen_ours = false;
    let watched = follow(client, request, |message| {
        let kind = message.r#type();
        let Some(row) = message
            .replicas
            .filter(|row| row.deployment.as_ref() == Some(target))
        else {
            return true;
        };
        if kind == WatchEventType::Deleted {
            outcome = Err(anyhow::anyhow!("{key} was deleted"));
            return false;
        }
        if row.version != version {
            // The cache from before the write, or a write that came after it.
            if seen_ours {
                outcome = Err(anyhow::anyhow!(
                    "{key}: another write replaced this setpoint (now version {:?})",
                    row.version
                ));
                return false;
            }
            return true;
        }
        seen_ours = true;
        last = state_name(&row).to_owned();
        eprintln!(
            "{key}: {last}, {} of {} replicas ready, desired {}",
            row.ready_replicas,
            row.spec_replicas,
            row.desired_replicas
                .map_or("-".into(), |desired| desired.to_string())
        );
        let failed = |why: &str| Err(anyhow::anyhow!("{key} {why}: {}", row.reconcile_message));
        outcome = match ReconcileState::try_from(row.reconcile_state) {
            Ok(ReconcileState::Reconciled) => Ok(()),
            Ok(ReconcileState::Failed) => failed("failed to reconcile"),
            Ok(ReconcileState::ManagedByHpa) => failed("is scaled by an HPA"),
            Ok(ReconcileState::TargetReplaced) => failed("was replaced"),
            Ok(ReconcileState::Unmanaged) => failed("is no longer managed"),
            _ => return true,
        };
        false
    });
    match tokio::time::timeout(timeout, watched).await {
        Ok(watched) => watched.and(outcome),
        Err(_) => {
            bail!("timed out after {timeout:?} waiting for {key} to be reconciled (last: {last})")
        }
    }
}

fn print_event(output: Output, message: &WatchDeploymentsResponse) {
    let kind = match message.r#type() {
        WatchEventType::Initial => "INITIAL",
        WatchEventType::Synced => "SYNCED",
        WatchEventType::Changed => "CHANGED",
        WatchEventType::Deleted => "DELETED",
        WatchEventType::Unspecified => "UNKNOWN",
    };
    let Some(row) = &message.replicas else {
        // SYNCED: the current state is complete.
        eprintln!("-- {kind}: changes follow --");
        return;
    };
    match output {
        Output::Json => {
            let mut json = to_json(std::slice::from_ref(row));
            json[0]["type"] = kind.into();
            println!("{}", json[0]);
        }
        Output::Table => {
            let deployment = row.deployment.clone().unwrap_or_default();
            println!(
                "{kind:<8} {}/{} replicas={} ready={} desired={} {}",
                deployment.namespace,
                deployment.name,
                row.spec_replicas,
                row.ready_replicas,
                row.desired_replicas
                    .map_or("-".into(), |desired| desired.to_string()),
                state_name(row)
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
