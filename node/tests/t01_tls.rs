//! The client port's TLS: dev PKI + `tls::server_tls_from_files` on a real tonic server, called
//! through the SDK.
//!
//! The service is a test stub of `Cluster` (the unit under test is TLS, not the API): it
//! answers `Status` with node id 7, and refuses a request that carries no peer certificate,
//! which would mean client certificates were not enforced by the handshake.

use std::net::SocketAddr;
use std::path::Path;

use starling_node::certs::{self, DevPki, Usage};
use starling_node::tls;
use starling_sdk::proto::cluster_server::{Cluster, ClusterServer};
use starling_sdk::proto::{ClusterStatus, ClusterStatusRequest};
use starling_sdk::{Client, ClientBuilder, Error, Profile};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

struct StubCluster;

#[tonic::async_trait]
impl Cluster for StubCluster {
    async fn status(
        &self,
        request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        if request.peer_certs().is_none_or(|certs| certs.is_empty()) {
            return Err(Status::unauthenticated("no client certificate"));
        }
        Ok(Response::new(ClusterStatus {
            node_id: 7,
            version: "t01".into(),
            ..Default::default()
        }))
    }

    async fn members(
        &self,
        _request: Request<starling_sdk::proto::ClusterMembersRequest>,
    ) -> Result<Response<starling_sdk::proto::ClusterMembersResponse>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn shards(
        &self,
        _request: Request<starling_sdk::proto::ClusterShardsRequest>,
    ) -> Result<Response<starling_sdk::proto::ClusterShardsResponse>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn remove_member(
        &self,
        _request: Request<starling_sdk::proto::RemoveMemberRequest>,
    ) -> Result<Response<starling_sdk::proto::RemoveMemberResponse>, Status> {
        Err(Status::unimplemented("stub"))
    }
}

/// Makes (or reuses) the dev PKI in `dir` and serves the stub with it on 127.0.0.1:0.
async fn start(dir: &Path) -> (SocketAddr, DevPki) {
    tls::install_crypto_provider();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let pki = certs::ensure_dev_pki(dir, &addr.to_string()).expect("dev pki");
    let tls = tls::server_tls_from_files(&pki.ca_cert, &pki.server_cert, &pki.server_key)
        .expect("server tls");
    let server = tonic::transport::Server::builder()
        .tls_config(tls)
        .expect("tls config")
        .add_service(ClusterServer::new(StubCluster));
    tokio::spawn(server.serve_with_incoming(TcpListenerStream::new(listener)));
    (addr, pki)
}

/// A client of `addr` trusting `ca_pem`, presenting `identity` if any, with no retries.
fn client(addr: SocketAddr, ca_pem: Vec<u8>, identity: Option<(String, String)>) -> Client {
    let mut builder = ClientBuilder::new(vec![format!("https://{addr}")], ca_pem)
        .server_name(certs::DEV_SERVER_NAME)
        .rounds(1);
    if let Some((cert, key)) = identity {
        builder = builder.identity(cert.into_bytes(), key.into_bytes());
    }
    builder.build().expect("client")
}

#[tokio::test]
async fn admin_profile_calls_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, pki) = start(dir.path()).await;
    let profile = Profile::load(&pki.profile).expect("profile");
    assert_eq!(profile.endpoint, format!("https://{addr}"));

    let status = Client::connect(&profile)
        .expect("client")
        .cluster_status()
        .await
        .expect("status");
    assert_eq!((status.node_id, status.version.as_str()), (7, "t01"));
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, pki) = start(dir.path()).await;
    let ca = std::fs::read(&pki.ca_cert).expect("ca");

    let result = client(addr, ca, None).cluster_status().await;
    assert!(
        matches!(&result, Err(Error::Unauthenticated(m)) if m.contains("CertificateRequired")),
        "expected the server to require a certificate, got {result:?}"
    );
}

#[tokio::test]
async fn client_certificate_from_a_foreign_ca_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, pki) = start(dir.path()).await;
    let ca = std::fs::read(&pki.ca_cert).expect("ca");
    let foreign = certs::make_ca("Foreign CA").expect("foreign ca");
    // Same subject as the real admin certificate: only the issuer differs.
    let cert = certs::make_signed_cert(&foreign, certs::ADMIN_CN, &[], Usage::Client)
        .expect("foreign cert");

    let result = client(addr, ca, Some((cert.cert_pem, cert.key_pem)))
        .cluster_status()
        .await;
    assert!(
        matches!(&result, Err(Error::Unauthenticated(m)) if m.contains("UnknownCA")),
        "expected the server to refuse the certificate, got {result:?}"
    );
}

#[tokio::test]
async fn foreign_ca_with_the_same_name_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, pki) = start(dir.path()).await;
    let ca = std::fs::read(&pki.ca_cert).expect("ca");
    // An impostor CA with the dev CA's exact subject: issuer names match, signatures do not.
    let impostor = certs::make_ca(certs::DEV_CA_CN).expect("impostor ca");
    let cert = certs::make_signed_cert(&impostor, certs::ADMIN_CN, &[], Usage::Client)
        .expect("impostor cert");

    let result = client(addr, ca, Some((cert.cert_pem, cert.key_pem)))
        .cluster_status()
        .await;
    assert!(
        matches!(&result, Err(Error::Unauthenticated(_))),
        "expected the server to refuse the certificate, got {result:?}"
    );
}

#[tokio::test]
async fn client_refuses_a_server_it_does_not_trust() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, pki) = start(dir.path()).await;
    let foreign = certs::make_ca("Foreign CA").expect("foreign ca");
    let admin = (
        std::fs::read_to_string(&pki.admin_cert).expect("cert"),
        std::fs::read_to_string(&pki.admin_key).expect("key"),
    );

    let result = client(addr, foreign.cert_pem().as_bytes().to_vec(), Some(admin))
        .cluster_status()
        .await;
    assert!(
        matches!(result, Err(Error::Unavailable(_))),
        "expected the handshake to fail, got {result:?}"
    );
}

#[tokio::test]
async fn restart_on_the_same_dir_keeps_the_ca_and_old_profiles_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = certs::ensure_dev_pki(dir.path(), "127.0.0.1:7600").expect("first");
    let ca = std::fs::read(&first.ca_cert).expect("ca");
    let admin_key = std::fs::read(&first.admin_key).expect("key");

    // The "restarted" node gets another port; the same certificates must serve it.
    let (addr, second) = start(dir.path()).await;
    assert!(first.created_ca && !second.created_ca);
    assert_eq!(std::fs::read(&second.ca_cert).expect("ca"), ca);
    assert_eq!(std::fs::read(&second.admin_key).expect("key"), admin_key);

    let profile = Profile::load(&second.profile).expect("profile");
    assert_eq!(profile.endpoint, format!("https://{addr}"));
    let status = Client::connect(&profile)
        .expect("client")
        .cluster_status()
        .await
        .expect("status");
    assert_eq!(status.node_id, 7);
}

#[tokio::test]
async fn unreachable_endpoint_is_unavailable_and_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = certs::ensure_dev_pki(dir.path(), "127.0.0.1:1").expect("pki");
    // Port 1 on loopback: nothing listens there.
    let profile = Profile::load(&pki.profile).expect("profile");
    let result = Client::connect(&profile)
        .expect("client")
        .cluster_status()
        .await;
    let Err(Error::Unavailable(message)) = result else {
        panic!("expected unavailable, got {result:?}");
    };
    assert!(message.contains("https://127.0.0.1:1"), "{message}");
    println!("unreachable: {message}");
}
