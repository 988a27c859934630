//! `watch`, and the resuming watch loop that `set --wait` follows too.

use std::time::Duration;

use setpoint_proto::v1::replica_service_client::ReplicaServiceClient;
use setpoint_proto::v1::{WatchDeploymentsRequest, WatchDeploymentsResponse};
use tonic::transport::Channel;

use crate::errors::status_error;
use crate::output::{Output, print_event};

/// Prints the Deployments matching `namespace` and `selector`, then each change, until
/// the watch fails for good.
pub async fn watch(
    client: &mut ReplicaServiceClient<Channel>,
    namespace: Option<String>,
    selector: Option<String>,
    output: Output,
) -> anyhow::Result<()> {
    let request = WatchDeploymentsRequest {
        namespace: namespace.unwrap_or_default(),
        label_selector: selector.unwrap_or_default(),
        resume_token: String::new(),
    };
    follow(client, request, |message| {
        print_event(output, &message);
        true
    })
    .await
}

/// Runs a watch, handing each message to `handle` until it returns false. When the
/// server drops the stream (it stops, or this client read too slowly) the watch resumes
/// after the last message; when the server no longer knows that point, it starts over.
pub async fn follow(
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
