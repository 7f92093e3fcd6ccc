//! Certificates for `starling dev`: a local certificate authority, the node's server
//! certificate and an `admin` client certificate, made with rcgen, plus the client profile
//! that points the CLI at them.
//!
//! What it does:
//! - [`ensure_dev_pki`]: on first start creates `DIR/certs/{ca,server,admin}.{pem,key}` (keys
//!   mode 0600) and always (re)writes `DIR/client.toml`. Later starts reuse the existing
//!   certificates, so clients configured earlier keep working; only the profile's endpoint
//!   follows the current port.
//! - [`make_ca`] / [`make_signed_cert`]: the building blocks, public so tests can make a
//!   *foreign* CA and certificates it signs.
//!
//! What it does not do: production PKI (no revocation, no rotation, validity 1975–4096 as
//! rcgen defaults), node-to-node certificates, or TLS configuration (that is [`crate::tls`]).
//! The dev CA key sits next to its certificate: anyone who can read the data dir can mint
//! clients. That is the point of a dev CA and the reason it is never used by `serve`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use starling_sdk::Profile;

/// Common name of the dev CA. [`Ca::load`] rebuilds the issuer from it, so it never changes.
pub const DEV_CA_CN: &str = "Starling dev CA";
/// Common name of the dev client certificate.
pub const ADMIN_CN: &str = "admin";
/// The name clients verify the dev server certificate against (a SAN of it).
pub const DEV_SERVER_NAME: &str = "localhost";
/// Subject alternative names of the dev server certificate.
pub const DEV_SERVER_SANS: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// Why the dev PKI could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// rcgen refused to make or parse a key or certificate.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The client profile could not be encoded.
    #[error("cannot encode the client profile: {0}")]
    Profile(#[from] toml::ser::Error),
}

/// A certificate authority that can sign certificates.
pub struct Ca {
    /// The CA's own parameters; signing needs its subject, key usages and key-id method.
    params: CertificateParams,
    /// The CA's signing key.
    key: KeyPair,
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
        self.key.serialize_pem()
    }

    /// An existing CA made by [`make_ca`] with the same `cn`, from its certificate and key.
    ///
    /// Without an X.509 parser the issuer is rebuilt from `cn`: certificates this CA signs
    /// chain to `cert_pem` only if `cn` is the one it was made with.
    pub fn load(cn: &str, cert_pem: String, key_pem: &str) -> Result<Ca, CertError> {
        Ok(Ca {
            params: ca_params(cn),
            key: KeyPair::from_pem(key_pem)?,
            cert_pem,
        })
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

/// What a signed certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server (extended key usage serverAuth).
    Server,
    /// A TLS client (extended key usage clientAuth).
    Client,
}

/// Makes a self-signed CA whose subject is `CN=cn`.
pub fn make_ca(cn: &str) -> Result<Ca, CertError> {
    let params = ca_params(cn);
    let key = KeyPair::generate()?;
    let cert_pem = params.self_signed(&key)?.pem();
    Ok(Ca {
        params,
        key,
        cert_pem,
    })
}

/// Makes a key and a certificate for `CN=cn` with subject alternative names `sans` (DNS
/// names or IP addresses), signed by `ca`.
pub fn make_signed_cert(
    ca: &Ca,
    cn: &str,
    sans: &[&str],
    usage: Usage,
) -> Result<IssuedCert, CertError> {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())?;
    params.distinguished_name = common_name(cn);
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match usage {
        Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    let key = KeyPair::generate()?;
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer)?;
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
    /// The node's client-port certificate (SANs localhost, 127.0.0.1, ::1).
    pub server_cert: PathBuf,
    /// The node's client-port key.
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
        let data_dir = std::path::absolute(data_dir).map_err(|source| CertError::Io {
            path: data_dir.to_owned(),
            source,
        })?;
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
        Ca::load(
            DEV_CA_CN,
            read_string(&pki.ca_cert)?,
            &read_string(&pki.ca_key)?,
        )?
    } else {
        let ca = make_ca(DEV_CA_CN)?;
        write_file(&pki.ca_key, &ca.key_pem(), true)?;
        write_file(&pki.ca_cert, ca.cert_pem(), false)?;
        pki.created_ca = true;
        ca
    };

    let leaves = [
        (
            &pki.server_cert,
            &pki.server_key,
            "starling dev server",
            DEV_SERVER_SANS,
            Usage::Server,
        ),
        (
            &pki.admin_cert,
            &pki.admin_key,
            ADMIN_CN,
            &[][..],
            Usage::Client,
        ),
    ];
    for (cert_path, key_path, cn, sans, usage) in leaves {
        if pki.created_ca || !cert_path.exists() || !key_path.exists() {
            let issued = make_signed_cert(&ca, cn, sans, usage)?;
            write_file(key_path, &issued.key_pem, true)?;
            write_file(cert_path, &issued.cert_pem, false)?;
        }
    }

    let profile = toml::to_string(&pki.client_profile(grpc_endpoint))?;
    write_file(&pki.profile, &profile, false)?;
    Ok(pki)
}

/// `host:port` → `https://host:port`; anything with a scheme is kept as is.
fn endpoint_url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("https://{endpoint}")
    }
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn read_string(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes `contents` to `path` through a temporary file and a rename, so a crash never leaves
/// a half-written file. `secret` files are created mode 0600 (on Unix).
fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), CertError> {
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
