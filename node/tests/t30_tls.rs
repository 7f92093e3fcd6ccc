//! The real node's client port: only certificates from the node's CA get in.

mod common;

use common::*;
use starling_node::certs::{self, Usage};
use starling_sdk::ClientBuilder;

#[tokio::test(flavor = "multi_thread")]
async fn real_node_refuses_missing_and_foreign_client_certificates() {
    let node = start_node(None, &[]).await.unwrap();
    let endpoint = format!("https://127.0.0.1:{}", node.node.grpc_port());
    let ca_pem = std::fs::read(node.dir.path().join("certs/ca.pem")).unwrap();

    // The admin profile written by the node works.
    let admin = client(&node.node).unwrap();
    let status = admin.cluster_status().await.unwrap();
    assert_eq!(status.node_id, 1);
    assert_eq!(status.leader_id, 1);

    // No client certificate: the handshake is refused.
    let anonymous = ClientBuilder::new(vec![endpoint.clone()], ca_pem.clone())
        .server_name(certs::DEV_SERVER_NAME)
        .rounds(1)
        .build()
        .unwrap();
    let err = anonymous.cluster_status().await.unwrap_err();
    assert!(
        !matches!(err, starling_sdk::Error::Other(ref s) if s.code() == tonic::Code::Ok),
        "{err}"
    );

    // A client certificate from another CA, even with the same name: refused.
    let foreign_ca = certs::make_ca("Starling dev CA").unwrap();
    let foreign = certs::make_signed_cert(&foreign_ca, "admin", &[], Usage::Client).unwrap();
    let impostor = ClientBuilder::new(vec![endpoint], ca_pem)
        .server_name(certs::DEV_SERVER_NAME)
        .identity(foreign.cert_pem.into_bytes(), foreign.key_pem.into_bytes())
        .rounds(1)
        .build()
        .unwrap();
    let err = impostor.cluster_status().await.unwrap_err();
    assert!(refused(&err), "{err:?}");
    // The node is unharmed and still serves the real admin.
    admin.cluster_status().await.unwrap();
}

/// Whether the server refused the handshake. With TLS 1.3 the server checks the client
/// certificate after the client considers the handshake done; the client then sees either the
/// server's alert (mapped by the SDK to `Unauthenticated`) or, when the server's close wins
/// the race, the connection dying under its first request: `Cancelled` ("connection closed")
/// or `Unknown` "transport error" (broken pipe). All are refusals at the transport; an answer
/// from the service (any status it sends, or success) is not.
fn refused(err: &starling_sdk::Error) -> bool {
    match err {
        starling_sdk::Error::Unauthenticated(_) => true,
        starling_sdk::Error::Other(s) => {
            let transport = std::error::Error::source(s)
                .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some());
            transport && matches!(s.code(), tonic::Code::Cancelled | tonic::Code::Unknown)
        }
        _ => false,
    }
}
