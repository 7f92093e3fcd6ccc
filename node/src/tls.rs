//! rustls and tonic TLS configuration for the node's gRPC ports, and the peer port's identity
//! check.
//!
//! What it does:
//! - [`install_crypto_provider`]: makes rustls' aws-lc-rs provider the process default. Several
//!   crates in the tree enable different rustls providers, so without this rustls cannot choose
//!   one and panics at the first handshake (see DEPENDENCIES.md). Every binary and test that
//!   does TLS calls it first.
//! - [`server_tls`] / [`server_tls_from_files`]: the client-port TLS configuration: the node's
//!   certificate, and client certificates *mandatory*, verified against one CA.
//! - [`PeerTls`]: the peer port's mutual TLS: the node's own node certificate on both sides,
//!   the cluster CA as the only trust anchor both ways.
//! - [`node_id_of_cert`] and [`require_node_cert`]: the peer port serves nodes only. The TLS
//!   handshake already refused certificates of other CAs; the interceptor then refuses a
//!   certificate of the right CA that names no node (a client certificate) and records the
//!   caller's node id ([`PeerNodeId`]) in the request.
//!
//! What it does not do: make certificates (that is [`crate::certs`]), or map a client
//! certificate to a tenant or role (that is the API layer, from `Request::peer_certs()`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Status};
use x509_parser::extensions::GeneralName;

use crate::certs::NODE_URI_PREFIX;

/// How long a peer TLS handshake may take before the connection is dropped.
const PEER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a TLS configuration could not be loaded. Each variant names the offending file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but holds no usable PEM object of the expected kind.
    #[error("{path}: {what}")]
    Pem { path: PathBuf, what: String },
    /// A peer-port certificate that names no node.
    #[error(
        "{path} is not a node certificate (no {NODE_URI_PREFIX}<id> name): make one with \
         `starling certs node`"
    )]
    NotNodeCert { path: PathBuf },
}

/// Installs rustls' aws-lc-rs crypto provider as the process default.
///
/// Idempotent: if a provider is already installed (by an earlier call or by another crate),
/// that one stays and this call does nothing.
pub fn install_crypto_provider() {
    // `Err` only means "a provider is already installed", which is the state we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The client-port server TLS configuration: present `cert_pem`/`key_pem`, and require every
/// client to present a certificate signed by `ca_pem`.
///
/// PEM contents are parsed by tonic when the server starts; use [`server_tls_from_files`] to
/// have them checked up front with errors that name the file.
pub fn server_tls(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(Identity::from_pem(cert_pem, key_pem))
        .client_ca_root(Certificate::from_pem(ca_pem))
}

/// [`server_tls`] from files, after checking each holds the PEM object it should: `ca` and
/// `cert` at least one certificate, `key` a private key.
pub fn server_tls_from_files(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<ServerTlsConfig, TlsError> {
    let ca_pem = read_certs(ca)?;
    let cert_pem = read_certs(cert)?;
    let key_pem = read_key(key)?;
    Ok(server_tls(&ca_pem, &cert_pem, &key_pem))
}

/// The peer port's mutual TLS material: the cluster CA and this node's node certificate and
/// key, PEM. Its `Debug` shows only the node id (it holds a private key).
#[derive(Clone)]
pub struct PeerTls {
    /// The cluster CA: the only trust anchor, for peers' server and client certificates.
    ca_pem: Vec<u8>,
    /// This node's certificate (`urn:starling:node:<id>`, serverAuth + clientAuth).
    cert_pem: Vec<u8>,
    /// Its private key.
    key_pem: Vec<u8>,
}

impl PeerTls {
    /// From PEM contents, unchecked (tonic parses them when a server or channel is built).
    pub fn new(
        ca_pem: impl Into<Vec<u8>>,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> PeerTls {
        PeerTls {
            ca_pem: ca_pem.into(),
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        }
    }

    /// From files, checking each holds what it should and that `cert` is a node certificate.
    /// Errors name the file.
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<PeerTls, TlsError> {
        let tls = PeerTls::new(read_certs(ca)?, read_certs(cert)?, read_key(key)?);
        if tls.node_id().is_none() {
            return Err(TlsError::NotNodeCert {
                path: cert.to_owned(),
            });
        }
        Ok(tls)
    }

    /// The node id this node's certificate names, if it is a node certificate.
    pub fn node_id(&self) -> Option<u64> {
        let leaf = CertificateDer::pem_slice_iter(&self.cert_pem)
            .next()?
            .ok()?;
        node_id_of_cert(&leaf)
    }

    /// Server side of the peer port: present the node certificate; client certificates are
    /// mandatory and must chain to the cluster CA. Pair it with [`require_node_cert`].
    pub fn server_config(&self) -> ServerTlsConfig {
        server_tls(&self.ca_pem, &self.cert_pem, &self.key_pem).timeout(PEER_HANDSHAKE_TIMEOUT)
    }

    /// Client side of the peer port: present the node certificate, trust only the cluster CA
    /// (the peer's name is checked against the host of the address dialled).
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .timeout(PEER_HANDSHAKE_TIMEOUT)
    }
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("node_id", &self.node_id())
            .finish_non_exhaustive()
    }
}

/// The node id a certificate (DER) names in a SAN URI `urn:starling:node:<id>`; `None` for an
/// unparsable certificate, one without such a name, or one naming two different nodes.
pub fn node_id_of_cert(der: &[u8]) -> Option<u64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut ids = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => uri.strip_prefix(NODE_URI_PREFIX),
            _ => None,
        });
    let id = parse_node_id(ids.next()?)?;
    ids.all(|other| parse_node_id(other) == Some(id))
        .then_some(id)
}

/// Decimal digits only (`u64::from_str` would also take a leading `+`).
fn parse_node_id(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The node id of the peer that made a request, inserted by [`require_node_cert`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerNodeId(pub u64);

/// Interceptor of every peer-port service: lets a request through only if the caller's TLS
/// certificate (the leaf of `peer_certs()`) is a node certificate, and records its id as a
/// [`PeerNodeId`] extension. Anything else is `PERMISSION_DENIED`.
pub fn require_node_cert(mut request: Request<()>) -> Result<Request<()>, Status> {
    let certs = request.peer_certs();
    let Some(leaf) = certs.as_deref().and_then(|certs| certs.first()) else {
        return Err(Status::permission_denied(
            "peer port accepts node certificates only: no client certificate was presented",
        ));
    };
    match cached_node_id(leaf) {
        Some(id) => {
            request.extensions_mut().insert(PeerNodeId(id));
            Ok(request)
        }
        None => Err(Status::permission_denied(format!(
            "peer port accepts node certificates only: the presented certificate has no \
             {NODE_URI_PREFIX} identity"
        ))),
    }
}

/// Certificates seen on the peer port and their node ids, at most [`NODE_IDS_MAX`] (emptied
/// when full). Every peer request carries its connection's certificate, and parsing it for
/// each cost ~1.5% of a node's CPU under control-plane writes; the answer for given DER bytes
/// never changes.
static NODE_IDS: std::sync::LazyLock<std::sync::Mutex<HashMap<Vec<u8>, Option<u64>>>> =
    std::sync::LazyLock::new(Default::default);
const NODE_IDS_MAX: usize = 256;

/// [`node_id_of_cert`], remembered per certificate.
fn cached_node_id(der: &[u8]) -> Option<u64> {
    let mut known = NODE_IDS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(id) = known.get(der) {
        return *id;
    }
    let id = node_id_of_cert(der);
    if known.len() >= NODE_IDS_MAX {
        known.clear();
    }
    known.insert(der.to_vec(), id);
    id
}

/// Reads a PEM file and checks it holds at least one certificate.
pub fn read_certs(path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(path)?;
    let mut count = 0usize;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| pem_error(path, format!("invalid certificate PEM: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(pem_error(path, "no certificate found".to_owned()));
    }
    Ok(pem)
}

/// Reads a PEM file and checks it holds a private key (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| pem_error(path, format!("no usable private key: {e}")))?;
    Ok(pem)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, what: String) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs;

    #[test]
    fn install_is_idempotent() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }

    #[test]
    fn node_ids_are_decimal_digits_only() {
        for (text, want) in [
            ("7", Some(7)),
            ("0", Some(0)),
            ("18446744073709551615", Some(u64::MAX)),
            ("", None),
            ("+7", None),
            ("-1", None),
            ("7a", None),
            ("18446744073709551616", None),
        ] {
            assert_eq!(parse_node_id(text), want, "{text:?}");
        }
    }

    #[test]
    fn peer_tls_from_files_wants_a_node_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = certs::make_ca(certs::CLUSTER_CA_CN).expect("ca");
        let node = certs::make_node_cert(&ca, 9, &["localhost"]).expect("node");
        let client = certs::make_client_cert(&ca, "ops").expect("client");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let ca_path = write("ca.pem", ca.cert_pem());
        let (node_cert, node_key) = (
            write("n.pem", &node.cert_pem),
            write("n.key", &node.key_pem),
        );
        let tls = PeerTls::from_files(&ca_path, &node_cert, &node_key).expect("node");
        assert_eq!(tls.node_id(), Some(9));
        assert!(!format!("{tls:?}").contains("PRIVATE"), "{tls:?}");

        let (cert, key) = (
            write("c.pem", &client.cert_pem),
            write("c.key", &client.key_pem),
        );
        let err = PeerTls::from_files(&ca_path, &cert, &key).expect_err("client cert");
        assert!(
            matches!(&err, TlsError::NotNodeCert { path } if path == &cert),
            "{err}"
        );
        assert!(err.to_string().contains("starling certs node"), "{err}");
    }

    #[test]
    fn a_request_without_a_node_certificate_is_denied() {
        // No TLS at all (no peer certificates): denied, never let through.
        let err = require_node_cert(Request::new(())).expect_err("denied");
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(err.message().contains("node certificates only"), "{err:?}");
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let err = read_certs(&missing).expect_err("missing file");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem").expect("write");
        let err = read_certs(&empty).expect_err("no cert");
        assert!(err.to_string().contains("empty.pem"), "{err}");
        let err = read_key(&empty).expect_err("no key");
        assert!(err.to_string().contains("empty.pem"), "{err}");
    }
}
