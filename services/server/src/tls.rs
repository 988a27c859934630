//! The one place the API's TLS is configured: rustls with the ring provider, TLS 1.3
//! only, a client certificate required and verified against the client CA bundle; and
//! the accept loop that runs handshakes concurrently, each with a deadline.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::TcpListenerStream;

use crate::Error;
use crate::metrics::Metrics;
use crate::reload::Shared;

/// Handshakes in progress at once; further connections wait in the listen backlog.
const MAX_CONCURRENT_HANDSHAKES: usize = 256;

/// The files the TLS configuration is built from.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

impl TlsFiles {
    pub fn paths(&self) -> Vec<PathBuf> {
        vec![self.cert.clone(), self.key.clone(), self.client_ca.clone()]
    }
}

/// TLS 1.3 suites (all AEAD with forward secrecy) and key-exchange groups, as RFD 0001
/// specifies.
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
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| tls_error(&files.cert, &error))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&files.cert)?, key)
        .map_err(|error| tls_error(&files.cert, &error))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// TLS connections accepted on `listener`: each handshake uses the configuration current
/// when the connection arrived, runs concurrently with the others and is dropped after
/// `timeout`. Failed handshakes are counted and logged, never returned to the server.
pub fn incoming(
    listener: TcpListener,
    config: Shared<ServerConfig>,
    timeout: Duration,
    metrics: Metrics,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> {
    TcpListenerStream::new(listener)
        .filter_map(|accepted| async move {
            accepted
                .inspect_err(|error| tracing::warn!(%error, "accepting a connection failed"))
                .ok()
        })
        .map(move |tcp| {
            // Small gRPC responses must not wait for delayed ACKs (Nagle).
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "setting TCP_NODELAY failed");
            }
            let acceptor = TlsAcceptor::from(config.current());
            let metrics = metrics.clone();
            async move {
                let peer = tcp.peer_addr().ok();
                let failure = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => return Some(Ok(tls)),
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => format!("no handshake within {timeout:?}"),
                };
                metrics.tls_handshake_failures.inc();
                tracing::info!(?peer, %failure, "TLS handshake failed");
                None
            }
        })
        .buffer_unordered(MAX_CONCURRENT_HANDSHAKES)
        .filter_map(std::future::ready)
}
