//! Client profiles: which server to call and with which certificates, from a TOML file.
//!
//! ```toml
//! endpoint = "https://127.0.0.1:7600"   # several: "https://a:7600,https://b:7600"
//! ca = "certs/ca.pem"                   # relative paths: against this file's directory
//! cert = "certs/admin.pem"
//! key = "certs/admin.key"
//! server_name = "localhost"             # optional: the name the server certificate holds
//! ```
//!
//! Only loads and resolves; reading the PEM files is [`crate::Client::connect`]'s job.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// Where a Starling server is and how to authenticate to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The server URL, `https://host:port`; several separated by commas for failover.
    pub endpoint: String,
    /// PEM file of the CA that signed the server certificate.
    pub ca: PathBuf,
    /// PEM file of the client certificate.
    pub cert: PathBuf,
    /// PEM file of the client certificate's private key.
    pub key: PathBuf,
    /// The name to verify the server certificate against, when it differs from the
    /// endpoint's host (e.g. the endpoint is an IP address and the certificate names
    /// `localhost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl Profile {
    /// The environment variable naming a profile file.
    pub const ENV: &'static str = "STARLING_PROFILE";
    /// The profile `starling dev` writes with its default data dir.
    pub const DEFAULT_PATH: &'static str = "./starling-data/client.toml";

    /// Reads a profile file. Relative certificate paths are resolved against the directory
    /// holding the file.
    pub fn load(path: &Path) -> Result<Profile, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read profile {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or_else(|| Path::new(""));
        Profile::from_toml(&text, base)
            .map_err(|e| Error::Config(format!("profile {}: {e}", path.display())))
    }

    /// The profile named by `$STARLING_PROFILE` when it is set and non-empty, else the one at
    /// `path`, else the one at [`Profile::DEFAULT_PATH`].
    pub fn from_env_or(path: Option<&Path>) -> Result<Profile, Error> {
        match std::env::var_os(Self::ENV) {
            Some(env) if !env.is_empty() => Profile::load(Path::new(&env)),
            _ => Profile::load(path.unwrap_or_else(|| Path::new(Self::DEFAULT_PATH))),
        }
    }

    /// Parses a profile; relative paths are joined to `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Profile, String> {
        let mut profile: Profile = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        if profile.endpoints().is_empty() {
            return Err("endpoint: no URL given".to_owned());
        }
        for path in [&mut profile.ca, &mut profile.cert, &mut profile.key] {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        Ok(profile)
    }

    /// The endpoint URLs, in failover order.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoint
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_against_the_profile_dir() {
        let text = r#"
            endpoint = "https://127.0.0.1:7600"
            ca = "certs/ca.pem"
            cert = "/abs/admin.pem"
            key = "admin.key"
        "#;
        let p = Profile::from_toml(text, Path::new("/data")).expect("parse");
        assert_eq!(p.ca, Path::new("/data/certs/ca.pem"));
        assert_eq!(p.cert, Path::new("/abs/admin.pem"));
        assert_eq!(p.key, Path::new("/data/admin.key"));
        assert_eq!(p.server_name, None);
    }

    #[test]
    fn endpoints_split_on_commas() {
        for (endpoint, want) in [
            ("https://a:1", vec!["https://a:1"]),
            (
                "https://a:1, https://b:2",
                vec!["https://a:1", "https://b:2"],
            ),
            ("https://a:1,,", vec!["https://a:1"]),
        ] {
            let p = Profile {
                endpoint: endpoint.to_owned(),
                ca: PathBuf::new(),
                cert: PathBuf::new(),
                key: PathBuf::new(),
                server_name: None,
            };
            assert_eq!(p.endpoints(), want, "{endpoint}");
        }
    }

    #[test]
    fn bad_profiles_are_refused() {
        for text in [
            "",
            "endpoint = \"\"\nca = \"a\"\ncert = \"b\"\nkey = \"c\"",
            "endpoint = \"https://a:1\"\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\nextra = 1",
        ] {
            assert!(
                Profile::from_toml(text, Path::new("/")).is_err(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn round_trips_through_toml() {
        let p = Profile {
            endpoint: "https://127.0.0.1:7600".to_owned(),
            ca: PathBuf::from("/d/ca.pem"),
            cert: PathBuf::from("/d/admin.pem"),
            key: PathBuf::from("/d/admin.key"),
            server_name: Some("localhost".to_owned()),
        };
        let text = toml::to_string(&p).expect("encode");
        assert_eq!(
            Profile::from_toml(&text, Path::new("/x")).expect("decode"),
            p
        );
    }
}
