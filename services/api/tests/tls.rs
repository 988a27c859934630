//! Mutual TLS on the API port: who gets in, who does not, and certificate rotation.

mod support;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use devpki::{Authority, Subject};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use setpoint_proto::v1::ListDeploymentsRequest;
use setpoint_proto::v1::replica_service_client::ReplicaServiceClient;
use support::{OPERATOR, Setpoint};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

async fn list(client: &mut ReplicaServiceClient<Channel>) -> Result<(), tonic::Status> {
    client
        .list_deployments(ListDeploymentsRequest::default())
        .await
        .map(|_| ())
}

/// Fails the test unless the server still answers a legitimate operator.
async fn assert_still_serving(server: &Setpoint) {
    let mut client = server.client(OPERATOR).await;
    list(&mut client)
        .await
        .expect("the server keeps serving legitimate clients");
}

fn rustls_client(
    versions: &[&'static SupportedProtocolVersion],
    server_ca_pem: &str,
    identity: Option<(String, String)>,
) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server_ca_pem.as_bytes()).expect("CA"))
        .expect("add CA");
    let builder =
        ClientConfig::builder_with_protocol_versions(versions).with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

async fn handshake(
    server: &Setpoint,
    config: ClientConfig,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(server.grpc).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
}

#[tokio::test]
async fn clients_without_a_valid_certificate_are_rejected() {
    let server = Setpoint::start("setpoint-api").await;
    server.wait_until_ready().await;
    let ca_pem = server.pki.ca.cert_pem().to_owned();

    let other_ca = Authority::generate("other-ca", Duration::from_secs(3600)).expect("CA");
    let foreign = other_ca
        .issue(&Subject::client("x", Duration::from_secs(3600)).with_uri(OPERATOR))
        .expect("cert");
    let mut expired_subject = Subject::client("x", Duration::from_secs(3600)).with_uri(OPERATOR);
    expired_subject.not_before -= Duration::from_secs(7200);
    expired_subject.not_after -= Duration::from_secs(7200);
    let expired = server.pki.ca.issue(&expired_subject).expect("cert");

    for (case, identity, alert) in [
        ("no client certificate", None, "CertificateRequired"),
        (
            "a certificate from another CA",
            Some((foreign.cert_pem, foreign.key_pem)),
            "UnknownCA",
        ),
        (
            "an expired certificate",
            Some((expired.cert_pem, expired.key_pem)),
            "CertificateExpired",
        ),
    ] {
        let mut client = server.client_with(identity, &ca_pem).await.expect("client");
        let status = list(&mut client).await.expect_err(case);
        // The server's TLS alert reaches the client as a transport error.
        assert!(format!("{status:?}").contains(alert), "{case}: {status:?}");
        assert_still_serving(&server).await;
    }
}

#[tokio::test]
async fn tls12_and_plaintext_clients_are_rejected() {
    let server = Setpoint::start("setpoint-api").await;
    server.wait_until_ready().await;

    let tls12 = rustls_client(
        &[&rustls::version::TLS12],
        server.pki.ca.cert_pem(),
        Some(server.pki.client(OPERATOR)),
    );
    let error = handshake(&server, tls12)
        .await
        .expect_err("TLS 1.2 is refused");
    assert!(
        error.to_string().to_lowercase().contains("protocol"),
        "expected a protocol version alert, got {error}"
    );

    let plaintext = Channel::from_shared(format!("http://{}", server.grpc))
        .expect("url")
        .connect_lazy();
    let status = list(&mut ReplicaServiceClient::new(plaintext))
        .await
        .expect_err("plaintext HTTP/2 is refused");
    assert!(
        matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
        ),
        "{status:?}"
    );
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn stalled_handshakes_time_out_without_blocking_others() {
    let server = Setpoint::start_with("setpoint-api", &["--handshake-timeout=1s"]).await;
    server.wait_until_ready().await;
    // A client that connects and never speaks.
    let mut stalled = TcpStream::connect(server.grpc).await.expect("connect");
    assert_still_serving(&server).await;
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(testenv::WAIT_TIMEOUT, stalled.read(&mut buffer))
        .await
        .expect("the server closes a stalled handshake");
    assert!(matches!(read, Ok(0) | Err(_)), "closed, got {read:?}");
    assert!(server.metric("setpoint_tls_handshake_failures_total").await >= 1.0);
}

#[tokio::test]
async fn a_flood_of_idle_connections_from_one_source_does_not_lock_out_others() {
    let server = Setpoint::start("setpoint-api").await;
    server.wait_until_ready().await;
    // One host opens a thousand connections (fifty at a time) and never speaks.
    let mut flood = Vec::new();
    for _ in 0..20 {
        let batch = (0..50).map(|_| {
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(server.grpc))
        });
        for connected in futures::future::join_all(batch).await {
            flood.extend(connected.ok().and_then(Result::ok));
        }
    }
    let mut client = server
        .client_from(OPERATOR, IpAddr::from([127, 0, 0, 2]))
        .await;
    tokio::time::timeout(Duration::from_secs(1), list(&mut client))
        .await
        .expect("another host is answered within a second despite the flood")
        .expect("listed");
    // The flood was shed rather than queued: handshakes in flight stay within the
    // per-source cap, so the server's memory for them is bounded.
    let shed = server.metric("setpoint_tls_handshakes_shed_total").await;
    assert!(shed >= 900.0, "shed {shed}");
    let in_flight = server.metric("setpoint_tls_handshakes_in_flight").await;
    assert!(in_flight <= 8.0, "in flight {in_flight}");
    drop(flood);
}

#[tokio::test]
async fn rotated_server_certificate_and_client_ca_are_picked_up() {
    let server = Setpoint::start("setpoint-api").await;
    server.wait_until_ready().await;
    let mut established = server.client(OPERATOR).await;
    list(&mut established).await.expect("before rotation");

    let config = rustls_client(
        &[&rustls::version::TLS13],
        server.pki.ca.cert_pem(),
        Some(server.pki.client(OPERATOR)),
    );
    let presented = |stream: TlsStream<TcpStream>| {
        stream
            .get_ref()
            .1
            .peer_certificates()
            .expect("server certificate")[0]
            .to_vec()
    };
    let original = presented(handshake(&server, config.clone()).await.expect("handshake"));
    let rotated = server.pki.rotate_server_certificate();
    assert_ne!(original, rotated);
    testenv::wait_for(
        "new handshakes to present the rotated certificate",
        || async {
            let stream = handshake(&server, config.clone()).await.ok()?;
            (presented(stream) == rotated).then_some(())
        },
    )
    .await;
    list(&mut established)
        .await
        .expect("an established connection survives the rotation");

    // A new client CA: its clients get in, clients of the old CA no longer do.
    let new_ca = Authority::generate("new-client-ca", Duration::from_secs(3600)).expect("CA");
    let new_client = new_ca
        .issue(&Subject::client("x", Duration::from_secs(3600)).with_uri(OPERATOR))
        .expect("cert");
    server.pki.write("ca.crt", new_ca.cert_pem());
    let server_ca = server.pki.ca.cert_pem().to_owned();
    testenv::wait_for("the new client CA to apply", || async {
        let mut client = server
            .client_with(
                Some((new_client.cert_pem.clone(), new_client.key_pem.clone())),
                &server_ca,
            )
            .await
            .ok()?;
        list(&mut client).await.ok()
    })
    .await;
    let mut old = server
        .client_with(Some(server.pki.client(OPERATOR)), &server_ca)
        .await
        .expect("client");
    assert!(
        list(&mut old).await.is_err(),
        "the old client CA is no longer trusted"
    );
}

#[tokio::test]
async fn rotations_under_load_fail_no_call() {
    let server = Setpoint::start("setpoint-api").await;
    server.wait_until_ready().await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (mut failures, mut calls) = (Vec::new(), 0);
    let (grpc, ca) = (server.grpc, server.pki.ca.cert_pem().to_owned());
    // Four clients that open a new connection for every call, and one that keeps its own.
    let mut load = tokio::task::JoinSet::new();
    let (cert, key) = server.pki.client(OPERATOR);
    let connect = move || {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca))
            .identity(Identity::from_pem(&cert, &key))
            .domain_name("localhost");
        let channel = Channel::from_shared(format!("https://{grpc}"))
            .expect("url")
            .tls_config(tls)
            .expect("TLS config")
            .connect_lazy();
        ReplicaServiceClient::new(channel)
    };
    for fresh in [true, true, true, true, false] {
        let (connect, stop) = (connect.clone(), stop.clone());
        load.spawn(async move {
            let (mut calls, mut failures) = (0, Vec::new());
            let mut client = connect();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if fresh {
                    client = connect();
                }
                calls += 1;
                if let Err(status) = list(&mut client).await {
                    failures.push(status.to_string());
                }
            }
            (calls, failures)
        });
    }
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.pki.rotate_server_certificate();
    }
    // A client-CA rotation adds the new CA next to the old one first.
    let new_ca = Authority::generate("new-client-ca", Duration::from_secs(3600)).expect("CA");
    server.pki.write(
        "ca.crt",
        &format!("{}{}", server.pki.ca.cert_pem(), new_ca.cert_pem()),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    while let Some(result) = load.join_next().await {
        let (done, failed) = result.expect("load task");
        calls += done;
        failures.extend(failed);
    }
    assert!(calls > 50, "only {calls} calls during the rotations");
    assert_eq!(failures, Vec::<String>::new(), "failed calls of {calls}");
}
