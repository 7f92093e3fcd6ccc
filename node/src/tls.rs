//! rustls and tonic TLS configuration for the node's gRPC ports.
//!
//! What it does:
//! - [`install_crypto_provider`]: makes rustls' aws-lc-rs provider the process default. Several
//!   crates in the tree enable different rustls providers, so without this rustls cannot choose
//!   one and panics at the first handshake (see DEPENDENCIES.md). Every binary and test that
//!   does TLS calls it first.
//! - [`server_tls`] / [`server_tls_from_files`]: the client-port TLS configuration: the node's
//!   certificate, and client certificates *mandatory*, verified against one CA.
//!
//! What it does not do: make certificates (that is [`crate::certs`]), or map a client
//! certificate to a tenant or role (that is the API layer, from `Request::peer_certs()`).

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

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

    #[test]
    fn install_is_idempotent() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
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
