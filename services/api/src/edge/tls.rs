//! The one place the API's TLS is configured: rustls with the ring provider, TLS 1.3
//! only, a client certificate required and verified against the client CA bundle; and
//! the accept loop that runs handshakes concurrently, each with a deadline, within
//! per-source and total caps, so that no peer can stop others from connecting.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use clap::builder::RangedU64ValueParser;
use futures::{Stream, StreamExt};
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use setpoint_core::duration::parse_duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::Sender;
use tokio::task::{AbortHandle, Id, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::Error;
use crate::runtime::metrics::{Metrics, ReasonLabels};
use crate::runtime::reload::Shared;

/// After a failed accept (e.g. no file descriptors left), before the next.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The files the TLS configuration is built from.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "TLS")]
pub struct TlsFiles {
    /// PEM server certificate chain.
    #[arg(long = "tls-cert", env = "SETPOINT_TLS_CERT")]
    pub cert: PathBuf,

    /// PEM private key of the server certificate.
    #[arg(long = "tls-key", env = "SETPOINT_TLS_KEY")]
    pub key: PathBuf,

    /// PEM bundle of CAs that issue client certificates.
    #[arg(long = "client-ca", env = "SETPOINT_CLIENT_CA")]
    pub client_ca: PathBuf,
}

impl TlsFiles {
    pub fn paths(&self) -> Vec<PathBuf> {
        vec![self.cert.clone(), self.key.clone(), self.client_ca.clone()]
    }
}

/// The protocol versions the API offers. RFD 0001 names them, with the suites and groups
/// of [`crypto_provider`]; `tests/rfd_tls.rs` keeps the two the same.
pub const PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// TLS 1.3 suites (all AEAD with forward secrecy) and key-exchange groups, in order of
/// preference.
pub fn crypto_provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
            ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
            ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![ring::kx_group::X25519, ring::kx_group::SECP256R1],
        ..ring::default_provider()
    }
}

pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, Error> {
    let tls_error = |path: &Path, error: &dyn std::fmt::Display| Error::Tls {
        path: path.to_owned(),
        reason: error.to_string(),
    };
    let certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, Error> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|error| tls_error(path, &error))?;
        if certs.is_empty() {
            return Err(tls_error(path, &"no PEM certificate found"));
        }
        Ok(certs)
    };

    let mut roots = RootCertStore::empty();
    for ca in certs(&files.client_ca)? {
        roots
            .add(ca)
            .map_err(|error| tls_error(&files.client_ca, &error))?;
    }
    let provider = Arc::new(crypto_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|error| tls_error(&files.client_ca, &error))?;
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|error| tls_error(&files.key, &error))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|error| tls_error(&files.cert, &error))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&files.cert)?, key)
        .map_err(|error| tls_error(&files.cert, &error))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Bounds on connections that have not completed their TLS handshake, the only state
/// an unauthenticated peer can make the server hold.
#[derive(Args, Clone, Copy, Debug)]
#[command(next_help_heading = "TLS")]
pub struct HandshakeLimits {
    /// TLS handshakes in progress from one source address; more from that address are
    /// closed at once. Behind a load balancer that hides client addresses, raise it.
    #[arg(long = "max-handshakes-per-source", env = "SETPOINT_MAX_HANDSHAKES_PER_SOURCE",
          default_value_t = 8,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub per_source: usize,

    /// TLS handshakes in progress in all; at the cap the oldest is closed to admit a
    /// new one.
    #[arg(long = "max-handshakes", env = "SETPOINT_MAX_HANDSHAKES", default_value_t = 256,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub total: usize,

    /// Time limit for a TLS handshake.
    #[arg(long = "handshake-timeout", env = "SETPOINT_HANDSHAKE_TIMEOUT", default_value = "5s",
          value_parser = parse_duration)]
    pub timeout: Duration,
}

/// TLS connections accepted on `listener`. The accept loop never stops accepting: each
/// handshake runs in its own task with the configuration current when the connection
/// arrived and a deadline, within [`HandshakeLimits`] (what they shed is counted).
/// Failed handshakes are counted and logged, never returned to the server. The loop
/// runs on `tasks` and ends when the returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    config: Shared<ServerConfig>,
    limits: HandshakeLimits,
    metrics: Metrics,
    tasks: &mut JoinSet<()>,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + use<> {
    // Established connections wait here for the server to take them.
    let (connections, established) = tokio::sync::mpsc::channel(64);
    tasks.spawn(accept(listener, config, limits, metrics, connections));
    ReceiverStream::new(established).map(Ok)
}

async fn accept(
    listener: TcpListener,
    config: Shared<ServerConfig>,
    limits: HandshakeLimits,
    metrics: Metrics,
    connections: Sender<TlsStream<TcpStream>>,
) {
    // Dropping the set (when this loop ends) aborts the handshakes in progress.
    let mut handshakes = JoinSet::new();
    let mut in_flight = InFlight::default();
    loop {
        tokio::select! {
            () = connections.closed() => return,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // E.g. out of file descriptors: back off instead of spinning.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                if in_flight.from(peer.ip()) >= limits.per_source {
                    shed(&metrics, "per_source_limit", peer);
                    continue;
                }
                if in_flight.len() >= limits.total
                    && let Some(oldest) = in_flight.shed_oldest()
                {
                    shed(&metrics, "total_limit", oldest);
                }
                // Small gRPC responses must not wait for delayed ACKs (Nagle).
                if let Err(error) = tcp.set_nodelay(true) {
                    tracing::debug!(%error, "setting TCP_NODELAY failed");
                }
                let handshake = handshake(
                    TlsAcceptor::from(config.current()),
                    tcp,
                    peer,
                    limits.timeout,
                    metrics.clone(),
                );
                let task = handshakes.spawn(handshake);
                in_flight.add(task.id(), peer, task);
            }
            Some(done) = handshakes.join_next_with_id() => {
                let (id, established) = match done {
                    Ok((id, established)) => (id, established),
                    Err(error) => (error.id(), None),
                };
                in_flight.remove(id);
                if let Some(tls) = established
                    && connections.send(tls).await.is_err()
                {
                    return;
                }
            }
        }
        metrics
            .tls_handshakes_in_flight
            .set(i64::try_from(in_flight.len()).unwrap_or(i64::MAX));
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
    metrics: Metrics,
) -> Option<TlsStream<TcpStream>> {
    let failure = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => return Some(tls),
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("no handshake within {timeout:?}"),
    };
    metrics.tls_handshake_failures.inc();
    tracing::info!(%peer, %failure, "TLS handshake failed");
    None
}

fn shed(metrics: &Metrics, reason: &'static str, peer: SocketAddr) {
    metrics
        .tls_handshakes_shed
        .get_or_create(&ReasonLabels { reason })
        .inc();
    tracing::debug!(%peer, reason, "connection shed before its handshake");
}

/// The handshakes in progress, oldest first, and how many come from each source.
#[derive(Default)]
struct InFlight {
    order: VecDeque<(Id, SocketAddr, AbortHandle)>,
    per_source: HashMap<IpAddr, usize>,
}

impl InFlight {
    fn len(&self) -> usize {
        self.order.len()
    }

    fn from(&self, source: IpAddr) -> usize {
        self.per_source.get(&source).copied().unwrap_or(0)
    }

    fn add(&mut self, id: Id, peer: SocketAddr, task: AbortHandle) {
        self.order.push_back((id, peer, task));
        *self.per_source.entry(peer.ip()).or_insert(0) += 1;
    }

    /// Aborts the oldest handshake and forgets it at once (its task ends later), so
    /// the next connection sees the room it made. Returns its peer.
    fn shed_oldest(&mut self) -> Option<SocketAddr> {
        let (id, peer, task) = self.order.front()?;
        let (id, peer) = (*id, *peer);
        task.abort();
        self.remove(id);
        Some(peer)
    }

    /// Forgets a finished (or shed) handshake; unknown ids are ignored. A linear scan:
    /// at most `total` entries.
    fn remove(&mut self, id: Id) {
        let Some(index) = self.order.iter().position(|(task, _, _)| *task == id) else {
            return;
        };
        if let Some((_, peer, _)) = self.order.remove(index)
            && let Some(count) = self.per_source.get_mut(&peer.ip())
        {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&peer.ip());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_total_cap_the_oldest_handshake_is_shed_and_forgotten() {
        let mut tasks = JoinSet::new();
        let mut in_flight = InFlight::default();
        let peers: Vec<SocketAddr> = ["10.0.0.1:1", "10.0.0.1:2", "10.0.0.2:1"]
            .iter()
            .map(|peer| peer.parse().expect("address"))
            .collect();
        for peer in &peers {
            let task = tasks.spawn(std::future::pending::<()>());
            in_flight.add(task.id(), *peer, task);
        }
        assert_eq!((in_flight.len(), in_flight.from(peers[0].ip())), (3, 2));
        assert_eq!(in_flight.shed_oldest(), Some(peers[0]));
        assert_eq!((in_flight.len(), in_flight.from(peers[0].ip())), (2, 1));
        assert_eq!(
            in_flight.shed_oldest(),
            Some(peers[1]),
            "a new oldest each time"
        );
        let shed = tasks
            .join_next()
            .await
            .expect("a task")
            .expect_err("aborted");
        assert!(shed.is_cancelled());
        in_flight.remove(shed.id());
        assert_eq!(
            in_flight.len(),
            1,
            "removing a shed handshake again changes nothing"
        );
        assert_eq!(in_flight.from(peers[2].ip()), 1);
    }
}
