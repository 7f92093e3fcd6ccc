//! The peer port: mutual TLS with node certificates, the Raft peer transport over it, and the
//! `starling certs` commands that make the certificates.
//!
//! A real single-node control plane serves its Raft peer service on 127.0.0.1:0 with the peer
//! TLS and the node-certificate interceptor; `PeerClient`s (openraft's network) call it over
//! real sockets with different certificates. The `certs` tests run the real binary.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use openraft::error::RPCError;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use openraft::{BasicNode, SnapshotMeta, Vote};
use starling_node::certs::{self, Ca, IssuedCert};
use starling_node::raft::ControlPlane;
use starling_node::raft::network::server::raft_routes;
use starling_node::raft::network::{NetworkFactory, PeerClient};
use starling_node::tls::{self, PeerTls};
use starling_sdk::Profile;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// The `hard_ttl` of the calls: generous for a loopback answer, short for a test.
const TTL: Duration = Duration::from_secs(3);

/// Node 1: a single-node control plane serving its Raft peer service with mutual TLS.
struct Peer {
    addr: SocketAddr,
    ca: Ca,
    cp: ControlPlane,
    _dir: TempDir,
}

async fn start_peer() -> Peer {
    tls::install_crypto_provider();
    let ca = certs::make_ca(certs::CLUSTER_CA_CN).expect("ca");
    let node1 = certs::make_node_cert(&ca, 1, &["127.0.0.1", "localhost"]).expect("node 1");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = ControlPlane::open_single(dir.path(), 1, &addr.to_string(), 16)
        .await
        .expect("control plane");
    let server_tls = PeerTls::new(ca.cert_pem(), node1.cert_pem, node1.key_pem);
    let server = tonic::transport::Server::builder()
        .tls_config(server_tls.server_config())
        .expect("peer tls")
        .add_service(raft_routes(cp.raft().clone(), cp.contact().clone()));
    tokio::spawn(server.serve_with_incoming(TcpListenerStream::new(listener)));
    Peer {
        addr,
        ca,
        cp,
        _dir: dir,
    }
}

/// openraft's client for node 1 at `addr`, presenting `identity` and trusting `trusted_ca`.
async fn client(addr: SocketAddr, trusted_ca: &Ca, identity: &IssuedCert) -> PeerClient {
    let tls = PeerTls::new(
        trusted_ca.cert_pem(),
        identity.cert_pem.as_str(),
        identity.key_pem.as_str(),
    );
    NetworkFactory::new(tls.client_config())
        .new_client(1, &BasicNode::new(addr.to_string()))
        .await
}

/// A vote no leader grants: term 0 is below any elected term.
fn stale_vote() -> VoteRequest<u64> {
    VoteRequest::new(Vote::new(0, 2), None)
}

#[tokio::test]
async fn a_node_certificate_gets_real_raft_answers() {
    let peer = start_peer().await;
    let node2 = certs::make_node_cert(&peer.ca, 2, &["127.0.0.1"]).expect("node 2");
    let mut net = client(peer.addr, &peer.ca, &node2).await;
    let server_vote = peer.cp.raft().metrics().borrow().vote;
    assert!(server_vote.is_committed() && server_vote.leader_id().voted_for() == Some(1));

    let vote = net
        .vote(stale_vote(), RPCOption::new(TTL))
        .await
        .expect("vote answered");
    assert!(!vote.vote_granted, "{vote:?}");
    assert_eq!(vote.vote, server_vote);
    assert!(vote.last_log_id.is_some(), "node 1 has a log: {vote:?}");

    let heartbeat = AppendEntriesRequest {
        vote: Vote::new_committed(0, 2),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    let append = net
        .append_entries(heartbeat, RPCOption::new(TTL))
        .await
        .expect("append answered");
    assert_eq!(append, AppendEntriesResponse::HigherVote(server_vote));

    let chunk = InstallSnapshotRequest {
        vote: Vote::new_committed(0, 2),
        meta: SnapshotMeta {
            snapshot_id: "t25".into(),
            ..Default::default()
        },
        offset: 0,
        data: b"{}".to_vec(),
        done: true,
    };
    let install = net
        .install_snapshot(chunk, RPCOption::new(TTL))
        .await
        .expect("install answered");
    assert_eq!(install.vote, server_vote, "a stale leader is told the vote");
    assert_eq!(peer.cp.status().leader, Some(1), "node 1 still leads");
    peer.cp.shutdown().await;
}

#[tokio::test]
async fn a_client_certificate_of_the_cluster_ca_is_refused() {
    let peer = start_peer().await;
    let ops = certs::make_client_cert(&peer.ca, "ops").expect("client cert");
    let mut net = client(peer.addr, &peer.ca, &ops).await;
    let err = net
        .vote(stale_vote(), RPCOption::new(TTL))
        .await
        .expect_err("refused");
    let text = err.to_string();
    assert!(
        matches!(err, RPCError::Network(_))
            && text.contains("PermissionDenied")
            && text.contains("peer port accepts node certificates only"),
        "{err:?}"
    );
    peer.cp.shutdown().await;
}

#[tokio::test]
async fn a_node_certificate_of_a_foreign_ca_fails_the_handshake() {
    let peer = start_peer().await;
    let foreign = certs::make_ca(certs::CLUSTER_CA_CN).expect("foreign ca");
    let impostor = certs::make_node_cert(&foreign, 2, &["127.0.0.1"]).expect("impostor");
    // The impostor trusts the real CA, so only the server's check of its certificate fails.
    let mut net = client(peer.addr, &peer.ca, &impostor).await;
    let err = net
        .vote(stale_vote(), RPCOption::new(TTL))
        .await
        .expect_err("refused");
    // TLS 1.3: the server checks the client certificate after the client's side of the
    // handshake, so the refusal arrives as an alert on the first read.
    let text = err.to_string();
    assert!(
        matches!(err, RPCError::Unreachable(_))
            && text.contains("alert")
            && !text.contains("PermissionDenied"),
        "{err:?}"
    );

    // And a node that trusts only a foreign CA refuses node 1's certificate.
    let mut net = client(peer.addr, &foreign, &impostor).await;
    let err = net
        .vote(stale_vote(), RPCOption::new(TTL))
        .await
        .expect_err("refused");
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    peer.cp.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_is_not_listening_is_unreachable_within_the_timeout() {
    tls::install_crypto_provider();
    let ca = certs::make_ca(certs::CLUSTER_CA_CN).expect("ca");
    let node2 = certs::make_node_cert(&ca, 2, &["127.0.0.1"]).expect("node 2");

    // Nobody listens: connection refused.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let mut net = client(addr, &ca, &node2).await;
    let started = Instant::now();
    let err = net
        .vote(stale_vote(), RPCOption::new(TTL))
        .await
        .expect_err("refused");
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    assert!(started.elapsed() < TTL, "{:?}", started.elapsed());

    // A socket that accepts (kernel backlog) but never speaks TLS: the TTL ends the call.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut net = client(silent.local_addr().expect("addr"), &ca, &node2).await;
    let ttl = Duration::from_millis(300);
    let started = Instant::now();
    let err = net
        .vote(stale_vote(), RPCOption::new(ttl))
        .await
        .expect_err("no answer");
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    assert!(started.elapsed() < ttl * 3, "{:?}", started.elapsed());
    drop(silent);
}

// ---------------------------------------------------------------- starling certs

fn certs_cmd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_starling"))
        .arg("certs")
        .args(args)
        .output()
        .expect("run starling")
}

fn ok(output: &Output) {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn failed_with(output: &Output, parts: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "succeeded: {stderr}");
    for part in parts {
        assert!(stderr.contains(part), "{part:?} not in: {stderr}");
    }
}

#[cfg(unix)]
fn assert_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", path.display());
}

#[cfg(not(unix))]
fn assert_private(_: &Path) {}

fn node_id(cert: &Path) -> Option<u64> {
    let pem = std::fs::read(cert).expect("cert");
    PeerTls::new(Vec::new(), pem, Vec::new()).node_id()
}

/// Whether `cert` is signed by the CA in `ca`.
fn signed_by(cert: &Path, ca: &Path) -> bool {
    let der = |path: &Path| {
        let pem = std::fs::read(path).expect("pem");
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("pem block");
        pem.contents
    };
    let (leaf, root) = (der(cert), der(ca));
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf).expect("leaf");
    let (_, root) = x509_parser::parse_x509_certificate(&root).expect("root");
    leaf.verify_signature(Some(root.public_key())).is_ok()
}

#[test]
fn certs_init_node_and_client_through_the_binary() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pki");
    let d = dir.to_str().expect("utf-8 path");

    // No CA yet: node and client say how to make one.
    failed_with(
        &certs_cmd(&["node", "--dir", d, "--id", "1"]),
        &["ca.pem not found", "starling certs init --dir"],
    );
    failed_with(
        &certs_cmd(&["client", "--dir", d, "--name", "ops"]),
        &["ca.pem not found"],
    );

    ok(&certs_cmd(&["init", "--dir", d]));
    assert_private(&dir.join("ca.key"));
    let ca = std::fs::read(dir.join("ca.pem")).expect("ca");
    failed_with(
        &certs_cmd(&["init", "--dir", d]),
        &["ca.pem already exists", "--force"],
    );
    assert_eq!(std::fs::read(dir.join("ca.pem")).expect("ca"), ca, "kept");

    ok(&certs_cmd(&[
        "node",
        "--dir",
        d,
        "--id",
        "3",
        "--host",
        "10.1.2.3",
        "--host",
        "n3.example",
    ]));
    let node3 = dir.join("node-3.pem");
    assert_private(&dir.join("node-3.key"));
    assert_eq!(node_id(&node3), Some(3));
    assert!(signed_by(&node3, &dir.join("ca.pem")));
    PeerTls::from_files(&dir.join("ca.pem"), &node3, &dir.join("node-3.key")).expect("peer tls");
    failed_with(
        &certs_cmd(&["node", "--dir", d, "--id", "3"]),
        &["node-3.pem already exists", "--force"],
    );
    ok(&certs_cmd(&["node", "--dir", d, "--id", "3", "--force"]));
    failed_with(
        &certs_cmd(&["node", "--dir", d, "--id", "4", "--host", "h:7000"]),
        &["neither an IP address nor a DNS name"],
    );

    ok(&certs_cmd(&[
        "client",
        "--dir",
        d,
        "--name",
        "ops",
        "--endpoint",
        "https://10.1.2.3:7600",
        "--endpoint",
        "https://n3.example:7600",
    ]));
    assert_private(&dir.join("client-ops.key"));
    let client = dir.join("client-ops.pem");
    assert_eq!(node_id(&client), None, "a client certificate names no node");
    assert!(signed_by(&client, &dir.join("ca.pem")));
    let profile = Profile::load(&dir.join("client-ops.toml")).expect("profile");
    assert_eq!(
        profile.endpoint,
        "https://10.1.2.3:7600,https://n3.example:7600"
    );
    assert_eq!(profile.ca, dir.join("ca.pem"));
    assert_eq!(
        (profile.cert, profile.key),
        (client, dir.join("client-ops.key"))
    );
    failed_with(
        &certs_cmd(&["client", "--dir", d, "--name", "ops"]),
        &["client-ops.pem already exists"],
    );
    failed_with(
        &certs_cmd(&["client", "--dir", d, "--name", "../x"]),
        &["invalid client name"],
    );

    // --force makes a new CA.
    ok(&certs_cmd(&["init", "--dir", d, "--force"]));
    assert_ne!(std::fs::read(dir.join("ca.pem")).expect("ca"), ca);
}
