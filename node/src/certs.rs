//! Certificates made with rcgen: the dev PKI of `starling dev`, and the building blocks of
//! `starling certs` (a cluster CA, node certificates, client certificates).
//!
//! Identities live in a subject alternative name URI:
//! - a **node** certificate carries `urn:starling:node:<id>` (plus the DNS names and IP
//!   addresses peers and clients dial), extended key usages serverAuth *and* clientAuth: a node
//!   serves its ports and dials its peers with the same certificate;
//! - a **client** certificate carries `urn:starling:client:<name>`, clientAuth only, so it can
//!   never serve, and the peer port refuses it ([`crate::tls::require_node_cert`]).
//!
//! What it does:
//! - [`ensure_dev_pki`]: on first start creates `DIR/certs/{ca,server,admin}.{pem,key}` (keys
//!   mode 0600) and always (re)writes `DIR/client.toml`. Later starts reuse the existing
//!   certificates, so clients configured earlier keep working; only the profile's endpoint
//!   follows the current port. The dev server certificate is the node certificate of node
//!   [`DEV_NODE_ID`].
//! - [`make_ca`], [`make_node_cert`], [`make_client_cert`], [`make_signed_cert`]: the building
//!   blocks, public so `starling certs` and tests (including *foreign* CAs) use them.
//! - [`Ca::load`]: an existing CA from its PEM files, checking the key belongs to the
//!   certificate.
//!
//! What it does not do: revocation or rotation (validity is 1975–4096, rcgen's default), or TLS
//! configuration (that is [`crate::tls`]). The dev CA key sits next to its certificate: anyone
//! who can read the data dir can mint clients. That is the point of a dev CA and the reason it
//! is never used by `serve`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use starling_sdk::Profile;

/// Common name of the dev CA.
pub const DEV_CA_CN: &str = "Starling dev CA";
/// Common name of the CA `starling certs init` makes.
pub const CLUSTER_CA_CN: &str = "Starling cluster CA";
/// Common name of the dev client certificate.
pub const ADMIN_CN: &str = "admin";
/// The name clients verify the dev server certificate against (a SAN of it).
pub const DEV_SERVER_NAME: &str = "localhost";
/// Subject alternative names of the dev server certificate.
pub const DEV_SERVER_SANS: &[&str] = &["localhost", "127.0.0.1", "::1"];
/// The node id the dev server certificate names (`starling dev` defaults to node 1).
pub const DEV_NODE_ID: u64 = 1;
/// Prefix of the SAN URI naming a node: `urn:starling:node:<id>`.
pub const NODE_URI_PREFIX: &str = "urn:starling:node:";
/// Prefix of the SAN URI naming a client: `urn:starling:client:<name>`.
pub const CLIENT_URI_PREFIX: &str = "urn:starling:client:";

/// Why certificates could not be made, loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file was read but does not hold what it should.
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    /// A client name that cannot be part of a file name and an identity URI.
    #[error("invalid client name {name:?}: {reason}")]
    Name { name: String, reason: &'static str },
    /// rcgen refused to make or parse a key or certificate.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The client profile could not be encoded.
    #[error("cannot encode the client profile: {0}")]
    Profile(#[from] toml::ser::Error),
}

/// A certificate authority that can sign certificates.
pub struct Ca {
    /// Subject, key identifier and signing key of the CA: what signing needs.
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM; what verifiers trust.
    cert_pem: String,
}

impl Ca {
    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// An existing CA from its certificate and key files. Errors name the file: missing or
    /// unreadable (`CertError::Io`, kind `NotFound` when absent), not a CA certificate, not a
    /// key, or a key that does not belong to the certificate.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Ca, CertError> {
        let cert_pem = read_string(cert_path)?;
        let key = KeyPair::from_pem(&read_string(key_path)?).map_err(|e| CertError::Invalid {
            path: key_path.to_owned(),
            what: format!("not a private key: {e}"),
        })?;
        let invalid = |what: String| CertError::Invalid {
            path: cert_path.to_owned(),
            what,
        };
        let der = pem_to_der(&cert_pem).ok_or_else(|| invalid("no certificate PEM".into()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| invalid(format!("not an X.509 certificate: {e}")))?;
        if !cert.is_ca() {
            return Err(invalid("not a CA certificate".into()));
        }
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(CertError::Invalid {
                path: key_path.to_owned(),
                what: format!("this key does not belong to {}", cert_path.display()),
            });
        }
        let issuer = Issuer::from_ca_cert_der(&der.into(), key)
            .map_err(|e| invalid(format!("unusable CA certificate: {e}")))?;
        Ok(Ca { issuer, cert_pem })
    }
}

/// A certificate and its private key, PEM.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PKCS#8 PEM.
    pub key_pem: String,
}

/// What a certificate made by [`make_signed_cert`] is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server (extended key usage serverAuth).
    Server,
    /// A TLS client (extended key usage clientAuth).
    Client,
}

/// Makes a self-signed CA whose subject is `CN=cn`.
pub fn make_ca(cn: &str) -> Result<Ca, CertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let cert_pem = params.self_signed(&key)?.pem();
    Ok(Ca {
        issuer: Issuer::new(params, key),
        cert_pem,
    })
}

/// Makes the certificate of node `node_id`: SAN URI `urn:starling:node:<node_id>` plus `hosts`
/// (DNS names or IP addresses), serverAuth and clientAuth, signed by `ca`.
pub fn make_node_cert(ca: &Ca, node_id: u64, hosts: &[&str]) -> Result<IssuedCert, CertError> {
    issue(
        ca,
        &format!("starling node {node_id}"),
        hosts,
        Some(node_uri(node_id)),
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )
}

/// Makes the certificate of client `name`: SAN URI `urn:starling:client:<name>`, clientAuth
/// only, signed by `ca`. `name` must pass [`check_client_name`].
pub fn make_client_cert(ca: &Ca, name: &str) -> Result<IssuedCert, CertError> {
    check_client_name(name).map_err(|reason| CertError::Name {
        name: name.to_owned(),
        reason,
    })?;
    issue(
        ca,
        name,
        &[],
        Some(format!("{CLIENT_URI_PREFIX}{name}")),
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    )
}

/// Makes a key and a certificate for `CN=cn` with subject alternative names `sans` (DNS
/// names or IP addresses) and no identity URI, signed by `ca`.
pub fn make_signed_cert(
    ca: &Ca,
    cn: &str,
    sans: &[&str],
    usage: Usage,
) -> Result<IssuedCert, CertError> {
    let eku = match usage {
        Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
    };
    issue(ca, cn, sans, None, vec![eku])
}

/// `urn:starling:node:<id>`.
pub fn node_uri(node_id: u64) -> String {
    format!("{NODE_URI_PREFIX}{node_id}")
}

/// A client name is 1–64 of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`: it becomes part
/// of file names (`client-NAME.pem`) and of the identity URI.
pub fn check_client_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters");
    }
    if name.starts_with(['.', '-']) {
        return Err("must not start with '.' or '-'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("only letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

fn issue(
    ca: &Ca,
    cn: &str,
    hosts: &[&str],
    uri: Option<String>,
    extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
) -> Result<IssuedCert, CertError> {
    let mut params =
        CertificateParams::new(hosts.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())?;
    if let Some(uri) = uri {
        params.subject_alt_names.push(SanType::URI(uri.try_into()?));
    }
    params.distinguished_name = common_name(cn);
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = extended_key_usages;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok(IssuedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Where the dev PKI lives. All paths are absolute.
#[derive(Clone, Debug)]
pub struct DevPki {
    /// `DIR/certs`.
    pub dir: PathBuf,
    /// The dev CA certificate: what the server trusts for clients and clients for the server.
    pub ca_cert: PathBuf,
    /// The dev CA key (kept to sign more certificates on later starts).
    pub ca_key: PathBuf,
    /// The node's certificate (node [`DEV_NODE_ID`]; SANs localhost, 127.0.0.1, ::1).
    pub server_cert: PathBuf,
    /// The node's key.
    pub server_key: PathBuf,
    /// The `admin` client certificate the CLI uses.
    pub admin_cert: PathBuf,
    /// The `admin` client key.
    pub admin_key: PathBuf,
    /// `DIR/client.toml`, the CLI's profile.
    pub profile: PathBuf,
    /// Whether this call made the CA (first start), as opposed to reusing it.
    pub created_ca: bool,
}

impl DevPki {
    fn paths(data_dir: &Path) -> Result<DevPki, CertError> {
        let data_dir = absolute(data_dir)?;
        let dir = data_dir.join("certs");
        Ok(DevPki {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            admin_cert: dir.join("admin.pem"),
            admin_key: dir.join("admin.key"),
            profile: data_dir.join("client.toml"),
            dir,
            created_ca: false,
        })
    }

    /// The client profile for these certificates and `endpoint`.
    pub fn client_profile(&self, endpoint: &str) -> Profile {
        Profile {
            endpoint: endpoint_url(endpoint),
            ca: self.ca_cert.clone(),
            cert: self.admin_cert.clone(),
            key: self.admin_key.clone(),
            server_name: Some(DEV_SERVER_NAME.to_owned()),
        }
    }
}

/// Makes sure `data_dir/certs/` holds the dev PKI and `data_dir/client.toml` points at it and
/// at `grpc_endpoint` (`host:port`, or a URL; `https://` is added when no scheme is given).
///
/// - No CA yet: makes the CA and both leaf certificates (replacing any stale leaves).
/// - CA present: keeps it, and makes only missing leaf certificates, signed by it.
/// - Everything present: touches nothing but `client.toml`.
pub fn ensure_dev_pki(data_dir: &Path, grpc_endpoint: &str) -> Result<DevPki, CertError> {
    let mut pki = DevPki::paths(data_dir)?;
    fs::create_dir_all(&pki.dir).map_err(|source| CertError::Io {
        path: pki.dir.clone(),
        source,
    })?;

    let ca = if pki.ca_cert.exists() && pki.ca_key.exists() {
        Ca::load(&pki.ca_cert, &pki.ca_key)?
    } else {
        let ca = make_ca(DEV_CA_CN)?;
        write_file(&pki.ca_key, &ca.key_pem(), true)?;
        write_file(&pki.ca_cert, ca.cert_pem(), false)?;
        pki.created_ca = true;
        ca
    };

    let replace = pki.created_ca;
    ensure_leaf(&pki.server_cert, &pki.server_key, replace, || {
        make_node_cert(&ca, DEV_NODE_ID, DEV_SERVER_SANS)
    })?;
    ensure_leaf(&pki.admin_cert, &pki.admin_key, replace, || {
        make_client_cert(&ca, ADMIN_CN)
    })?;

    let profile = toml::to_string(&pki.client_profile(grpc_endpoint))?;
    write_file(&pki.profile, &profile, false)?;
    Ok(pki)
}

/// Makes the leaf certificate at `cert`/`key` when `replace` is set or either file is missing.
fn ensure_leaf(
    cert: &Path,
    key: &Path,
    replace: bool,
    make: impl FnOnce() -> Result<IssuedCert, CertError>,
) -> Result<(), CertError> {
    if replace || !cert.exists() || !key.exists() {
        let issued = make()?;
        write_file(key, &issued.key_pem, true)?;
        write_file(cert, &issued.cert_pem, false)?;
    }
    Ok(())
}

/// `host:port` → `https://host:port`; anything with a scheme is kept as is.
pub(crate) fn endpoint_url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("https://{endpoint}")
    }
}

/// The first certificate of a PEM text, DER.
fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()
        .map(|der| der.to_vec())
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// `path` made absolute (against the current directory), without touching the file system.
pub(crate) fn absolute(path: &Path) -> Result<PathBuf, CertError> {
    std::path::absolute(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

fn read_string(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes `contents` to `path` through a temporary file and a rename, so a crash never leaves
/// a half-written file. `secret` files are created mode 0600 (on Unix).
pub(crate) fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), CertError> {
    let io_err = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp).map_err(io_err)?;
    file.write_all(contents.as_bytes()).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    fs::rename(&tmp, path).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::node_id_of_cert;

    fn der(cert_pem: &str) -> Vec<u8> {
        pem_to_der(cert_pem).expect("certificate PEM")
    }

    #[test]
    fn endpoint_urls() {
        for (input, want) in [
            ("127.0.0.1:7600", "https://127.0.0.1:7600"),
            ("localhost:1", "https://localhost:1"),
            ("https://h:2", "https://h:2"),
            ("http://h:3", "http://h:3"),
        ] {
            assert_eq!(endpoint_url(input), want, "{input}");
        }
    }

    #[test]
    fn node_cert_names_its_node_and_client_cert_does_not() {
        let ca = make_ca(CLUSTER_CA_CN).expect("ca");
        let node = make_node_cert(&ca, 42, &["db-1.example", "10.0.0.7"]).expect("node");
        assert_eq!(node_id_of_cert(&der(&node.cert_pem)), Some(42));
        let client = make_client_cert(&ca, "ops").expect("client");
        assert_eq!(node_id_of_cert(&der(&client.cert_pem)), None);
        let plain = make_signed_cert(&ca, "x", &["localhost"], Usage::Server).expect("plain");
        assert_eq!(node_id_of_cert(&der(&plain.cert_pem)), None);
    }

    #[test]
    fn client_names_are_checked() {
        for ok in ["admin", "ops-1", "a.b_c", "X9"] {
            assert_eq!(check_client_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", ".hidden", "-x", "a/b", "a b", "é", &"n".repeat(65)] {
            assert!(check_client_name(bad).is_err(), "{bad:?}");
        }
        let ca = make_ca(CLUSTER_CA_CN).expect("ca");
        assert!(matches!(
            make_client_cert(&ca, "../x"),
            Err(CertError::Name { .. })
        ));
    }

    #[test]
    fn loaded_ca_signs_certificates_that_chain_to_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        let ca = make_ca(CLUSTER_CA_CN).expect("ca");
        write_file(&cert, ca.cert_pem(), false).expect("cert");
        write_file(&key, &ca.key_pem(), true).expect("key");
        let loaded = Ca::load(&cert, &key).expect("load");
        let node = make_node_cert(&loaded, 3, &["localhost"]).expect("node");
        let leaf_der = der(&node.cert_pem);
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).expect("leaf");
        let ca_der = der(ca.cert_pem());
        let (_, root) = x509_parser::parse_x509_certificate(&ca_der).expect("root");
        assert_eq!(leaf.issuer(), root.subject());
        leaf.verify_signature(Some(root.public_key()))
            .expect("signed by the loaded CA's key");

        // A key from another CA is refused, naming the key file.
        let other = make_ca(CLUSTER_CA_CN).expect("other");
        write_file(&key, &other.key_pem(), true).expect("key");
        let err = Ca::load(&cert, &key).err().expect("mismatch");
        assert!(err.to_string().contains("ca.key"), "{err}");
        // A leaf is not a CA.
        write_file(&cert, &node.cert_pem, false).expect("leaf");
        write_file(&key, &node.key_pem, true).expect("leaf key");
        let err = Ca::load(&cert, &key).err().expect("not a CA");
        assert!(err.to_string().contains("not a CA"), "{err}");
    }

    #[test]
    fn first_start_creates_everything_and_restart_reuses_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ensure_dev_pki(dir.path(), "127.0.0.1:7600").expect("first");
        assert!(first.created_ca);
        for path in [
            &first.ca_cert,
            &first.ca_key,
            &first.server_cert,
            &first.server_key,
            &first.admin_cert,
            &first.admin_key,
            &first.profile,
        ] {
            assert!(path.is_absolute() && path.exists(), "{}", path.display());
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in [&first.ca_key, &first.server_key, &first.admin_key] {
                let mode = fs::metadata(key).expect("meta").permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", key.display());
            }
        }
        let server = fs::read_to_string(&first.server_cert).expect("server");
        assert_eq!(node_id_of_cert(&der(&server)), Some(DEV_NODE_ID));
        let ca = fs::read(&first.ca_cert).expect("ca");
        let admin = fs::read(&first.admin_cert).expect("admin");

        let second = ensure_dev_pki(dir.path(), "127.0.0.1:7700").expect("second");
        assert!(!second.created_ca);
        assert_eq!(fs::read(&second.ca_cert).expect("ca"), ca);
        assert_eq!(fs::read(&second.admin_cert).expect("admin"), admin);
        let profile = Profile::load(&second.profile).expect("profile");
        assert_eq!(profile.endpoint, "https://127.0.0.1:7700");
        assert_eq!(profile.ca, second.ca_cert);
        assert_eq!(profile.server_name.as_deref(), Some("localhost"));
    }

    #[test]
    fn missing_leaf_is_reissued_by_the_existing_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ensure_dev_pki(dir.path(), "127.0.0.1:7600").expect("first");
        let ca = fs::read(&first.ca_cert).expect("ca");
        fs::remove_file(&first.admin_key).expect("rm");
        let second = ensure_dev_pki(dir.path(), "127.0.0.1:7600").expect("second");
        assert_eq!(fs::read(&second.ca_cert).expect("ca"), ca);
        assert!(second.admin_key.exists());
    }
}
