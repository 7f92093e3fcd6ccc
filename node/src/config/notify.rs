//! `[notify]`: how alarm transitions reach a rule's targets (webhook, email, SMS, MQTT).
//!
//! The same table is read by `starling serve` (a section of its TOML file, `STARLING_NOTIFY__…`
//! env overrides) and by `starling dev --notify-config FILE` (a file holding a `[notify]`
//! table). Keys are flat so every one has an env override (`STARLING_NOTIFY__SMTP_PASSWORD`).
//!
//! What it does not do: connect to anything. [`NotifyConfig::validate`] checks values only;
//! an unreachable SMTP server or webhook shows up as failed deliveries in the metrics.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text (a local relay or a test server only).
    None,
    /// Plain connection upgraded with STARTTLS, required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
}

/// `[notify]`. Every field has a default; email and SMS targets need their server settings,
/// and a delivery to them fails (counted as `failed`, logged) while those are missing.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Attempts per delivery (first try included), 1..=20. Default 5.
    pub retry_attempts: u32,
    /// Delay before the first retry; doubles per retry, plus up to 100 % random jitter.
    /// Default 500ms.
    #[serde(with = "duration")]
    pub retry_min_delay: Duration,
    /// Longest delay between retries (before jitter). Default 30s.
    #[serde(with = "duration")]
    pub retry_max_delay: Duration,
    /// Time limit of one attempt (HTTP request, SMTP transaction, MQTT PUBACK). Default 10s.
    #[serde(with = "duration")]
    pub attempt_timeout: Duration,
    /// Sustained deliveries per minute to one target (one URL, address or number; MQTT: one
    /// device topic); beyond it deliveries are dropped and counted. Default 60.
    pub rate_per_minute: u32,
    /// Deliveries one target may receive at once above the sustained rate. Default 10.
    pub rate_burst: u32,
    /// SMTP server host; email targets fail until it is set. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_host: Option<String>,
    /// SMTP port. Default 587.
    pub smtp_port: u16,
    /// `none`, `starttls` or `tls`. Default `starttls`.
    pub smtp_tls: SmtpTls,
    /// Sender mailbox, `Name <addr@host>` or `addr@host`. Required with `smtp_host`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_from: Option<String>,
    /// SMTP user name. Default: none (no authentication).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_username: Option<String>,
    /// SMTP password (prefer `STARLING_NOTIFY__SMTP_PASSWORD`). Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_password: Option<String>,
    /// Extra CA certificate (PEM) trusted for the SMTP server, besides the bundled Mozilla
    /// roots. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_ca: Option<PathBuf>,
    /// The SMS provider's webhook: `POST {"to", "text"}` as JSON. SMS targets fail until it
    /// is set. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sms_url: Option<String>,
    /// Sent as `Authorization: Bearer …` to the SMS webhook. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sms_token: Option<String>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            retry_attempts: 5,
            retry_min_delay: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(10),
            rate_per_minute: 60,
            rate_burst: 10,
            smtp_host: None,
            smtp_port: 587,
            smtp_tls: SmtpTls::default(),
            smtp_from: None,
            smtp_username: None,
            smtp_password: None,
            smtp_ca: None,
            sms_url: None,
            sms_token: None,
        }
    }
}

/// Shown by `Debug` instead of secrets.
const REDACTED: &str = "<redacted>";

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("retry_attempts", &self.retry_attempts)
            .field("retry_min_delay", &self.retry_min_delay)
            .field("retry_max_delay", &self.retry_max_delay)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("rate_per_minute", &self.rate_per_minute)
            .field("rate_burst", &self.rate_burst)
            .field("smtp_host", &self.smtp_host)
            .field("smtp_port", &self.smtp_port)
            .field("smtp_tls", &self.smtp_tls)
            .field("smtp_from", &self.smtp_from)
            .field("smtp_username", &self.smtp_username)
            .field(
                "smtp_password",
                &self.smtp_password.as_ref().map(|_| REDACTED),
            )
            .field("smtp_ca", &self.smtp_ca)
            .field("sms_url", &self.sms_url)
            .field("sms_token", &self.sms_token.as_ref().map(|_| REDACTED))
            .finish()
    }
}

/// A `[notify]` value that cannot work: `field` is the key path (`notify.smtp_from`).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct NotifyConfigError {
    pub field: &'static str,
    pub problem: String,
}

/// Most attempts per delivery (`notify.retry_attempts`).
pub const MAX_ATTEMPTS: u32 = 20;

impl NotifyConfig {
    /// Checks ranges and rules spanning fields; the error names the field.
    pub fn validate(&self) -> Result<(), NotifyConfigError> {
        let bad = |field, problem: String| Err(NotifyConfigError { field, problem });
        if !(1..=MAX_ATTEMPTS).contains(&self.retry_attempts) {
            return bad(
                "notify.retry_attempts",
                format!(
                    "{} is out of range: give 1..={MAX_ATTEMPTS} (1 means no retry)",
                    self.retry_attempts
                ),
            );
        }
        if self.retry_min_delay.is_zero() {
            return bad(
                "notify.retry_min_delay",
                "must be greater than zero (e.g. \"500ms\")".into(),
            );
        }
        if self.retry_max_delay < self.retry_min_delay {
            return bad(
                "notify.retry_max_delay",
                format!(
                    "{} is below notify.retry_min_delay ({})",
                    duration::format(self.retry_max_delay),
                    duration::format(self.retry_min_delay)
                ),
            );
        }
        if self.attempt_timeout.is_zero() {
            return bad("notify.attempt_timeout", "must be greater than zero".into());
        }
        if self.rate_per_minute == 0 {
            return bad(
                "notify.rate_per_minute",
                "must be at least 1 delivery a minute per target".into(),
            );
        }
        if self.rate_burst == 0 {
            return bad("notify.rate_burst", "must be at least 1".into());
        }
        self.check_smtp()?;
        if let Some(url) = &self.sms_url {
            check_url("notify.sms_url", url)?;
        }
        Ok(())
    }

    fn check_smtp(&self) -> Result<(), NotifyConfigError> {
        let bad = |field, problem: String| Err(NotifyConfigError { field, problem });
        if let Some(host) = &self.smtp_host {
            if host.trim().is_empty() {
                return bad(
                    "notify.smtp_host",
                    "is empty: remove it or name the server".into(),
                );
            }
            match &self.smtp_from {
                None => {
                    return bad(
                        "notify.smtp_from",
                        "is required with notify.smtp_host: the sender mailbox, \
                         e.g. \"Starling <alerts@example.com>\""
                            .into(),
                    );
                }
                Some(from) => {
                    if let Err(e) = from.parse::<lettre::message::Mailbox>() {
                        return bad(
                            "notify.smtp_from",
                            format!("{from:?} is not a mailbox ({e}); e.g. \"alerts@example.com\""),
                        );
                    }
                }
            }
        }
        if self.smtp_port == 0 {
            return bad("notify.smtp_port", "must be 1..=65535".into());
        }
        if self.smtp_password.is_some() && self.smtp_username.is_none() {
            return bad(
                "notify.smtp_username",
                "is required when notify.smtp_password is set".into(),
            );
        }
        Ok(())
    }
}

/// An absolute `http://` or `https://` URL with a host.
pub fn check_url(field: &'static str, url: &str) -> Result<(), NotifyConfigError> {
    let problem = match url.parse::<hyper::Uri>() {
        Err(e) => Some(format!("{url:?} is not a URL: {e}")),
        Ok(u) if !matches!(u.scheme_str(), Some("http" | "https")) => {
            Some(format!("{url:?} must start with http:// or https://"))
        }
        Ok(u) if u.host().is_none_or(str::is_empty) => Some(format!("{url:?} has no host")),
        Ok(_) => None,
    };
    match problem {
        Some(problem) => Err(NotifyConfigError { field, problem }),
        None => Ok(()),
    }
}

/// Reads the `[notify]` table of a TOML file (`starling dev --notify-config FILE`); other
/// tables are ignored, unknown keys in `[notify]` are errors. The error names the file.
pub fn load_file(path: &std::path::Path) -> Result<NotifyConfig, String> {
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        notify: NotifyConfig,
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: File = toml::from_str(&text)
        .map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))?;
    file.notify
        .validate()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(file.notify)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_rules_name_the_field() {
        NotifyConfig::default().validate().unwrap();
        type Mutation = fn(&mut NotifyConfig);
        let cases: Vec<(Mutation, &str)> = vec![
            (|c| c.retry_attempts = 0, "notify.retry_attempts"),
            (|c| c.retry_attempts = 21, "notify.retry_attempts"),
            (
                |c| c.retry_min_delay = Duration::ZERO,
                "notify.retry_min_delay",
            ),
            (
                |c| c.retry_max_delay = Duration::from_millis(100),
                "notify.retry_max_delay",
            ),
            (
                |c| c.attempt_timeout = Duration::ZERO,
                "notify.attempt_timeout",
            ),
            (|c| c.rate_per_minute = 0, "notify.rate_per_minute"),
            (|c| c.rate_burst = 0, "notify.rate_burst"),
            (|c| c.smtp_host = Some("mail".into()), "notify.smtp_from"),
            (
                |c| {
                    c.smtp_host = Some("mail".into());
                    c.smtp_from = Some("not a mailbox".into());
                },
                "notify.smtp_from",
            ),
            (|c| c.smtp_host = Some(" ".into()), "notify.smtp_host"),
            (|c| c.smtp_port = 0, "notify.smtp_port"),
            (
                |c| c.smtp_password = Some("pw".into()),
                "notify.smtp_username",
            ),
            (
                |c| c.sms_url = Some("ftp://x/send".into()),
                "notify.sms_url",
            ),
            (|c| c.sms_url = Some("/send".into()), "notify.sms_url"),
            (|c| c.sms_url = Some("http://".into()), "notify.sms_url"),
        ];
        for (mutate, field) in cases {
            let mut c = NotifyConfig::default();
            mutate(&mut c);
            let err = c.validate().unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
        let mut ok = NotifyConfig {
            smtp_host: Some("127.0.0.1".into()),
            smtp_from: Some("Starling <alerts@example.com>".into()),
            sms_url: Some("https://sms.example.com/v1/send".into()),
            ..NotifyConfig::default()
        };
        ok.validate().unwrap();
        ok.smtp_password = Some("secret".into());
        ok.smtp_username = Some("u".into());
        ok.validate().unwrap();
        assert!(!format!("{ok:?}").contains("secret"));
    }

    #[test]
    fn parses_from_toml_with_durations_and_tls_mode() {
        let c: NotifyConfig = toml::from_str(
            "retry_attempts = 3\nretry_min_delay = \"50ms\"\nsmtp_tls = \"none\"\n\
             smtp_host = \"127.0.0.1\"\nsmtp_from = \"a@b.c\"\n",
        )
        .unwrap();
        assert_eq!(c.retry_attempts, 3);
        assert_eq!(c.retry_min_delay, Duration::from_millis(50));
        assert_eq!(c.smtp_tls, SmtpTls::None);
        let err = toml::from_str::<NotifyConfig>("smtp_hots = \"x\"").unwrap_err();
        assert!(err.to_string().contains("smtp_hots"), "{err}");
    }
}
