//! A scripted stand-in for the API server's HTTP, for unit tests of I/O paths where a
//! real control plane is overkill (a 409 on every write, a failing status update). The
//! test answers each request from a closure and reads back what was sent.

use std::sync::{Arc, Mutex, PoisonError};

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

/// One request as the fake API server received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// Path and query, e.g. `/apis/apps/v1/namespaces/a/deployments/web`.
    pub uri: String,
    pub body: Value,
}

/// Every request the client sent, in order.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Received>>>);

impl Log {
    pub fn requests(&self) -> Vec<Received> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `"METHOD path"` of every request, without queries: for asserting the sequence.
    pub fn calls(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r.method,
                    r.uri.split('?').next().unwrap_or_default()
                )
            })
            .collect()
    }
}

/// A client whose requests `answer` replies to with an HTTP status and a JSON body.
pub fn client(answer: impl Fn(&Received) -> (u16, Value) + Send + Sync + 'static) -> (Client, Log) {
    let log = Log::default();
    let answer = Arc::new(answer);
    let seen = log.clone();
    let service = tower::service_fn(move |request: Request<Body>| {
        let (answer, seen) = (answer.clone(), seen.clone());
        async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await?;
            let received = Received {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let (status, reply) = answer(&received);
            seen.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(received);
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(reply.to_string())
                .map_err(kube::Error::HttpError)
        }
    });
    (Client::new(service, "default"), log)
}

/// The body of an API error (`metav1.Status`) with `code` and `reason`.
pub fn status(code: u16, reason: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": format!("fake API server: {reason}"),
        "reason": reason,
        "code": code,
    })
}
