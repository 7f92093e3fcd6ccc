//! Email over SMTP with lettre (tokio, rustls with aws-lc; no native-tls/openssl).
//!
//! One pooled transport per node from `[notify]`: `smtp_tls = none | starttls | tls`, optional
//! credentials, optional extra CA (`smtp_ca`) besides the bundled Mozilla roots. Each message
//! is plain text with a Message-ID derived from the idempotency key (`payload.rs`), so a
//! retried mail carries the same id. Permanent SMTP replies (5xx) are not retried; transient
//! ones, connection errors and timeouts are.

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{SendError, payload};
use crate::config::notify::{NotifyConfig, SmtpTls};
use crate::model::AlarmEvent;

/// The SMTP side of delivery.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// `Ok(None)` when `notify.smtp_host` is not set (email targets then fail as not
    /// configured); an error names the field that cannot be used.
    pub fn from_config(config: &NotifyConfig) -> Result<Option<Mailer>, SendError> {
        let Some(host) = &config.smtp_host else {
            return Ok(None);
        };
        let from: Mailbox = config
            .smtp_from
            .as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(|e| SendError::permanent(format!("notify.smtp_from: {e}")))?;
        let mut tls = TlsParameters::builder(host.clone());
        if let Some(ca) = &config.smtp_ca {
            let pem = std::fs::read(ca).map_err(|e| {
                SendError::permanent(format!("notify.smtp_ca {}: {e}", ca.display()))
            })?;
            let cert = Certificate::from_pem(&pem).map_err(|e| {
                SendError::permanent(format!("notify.smtp_ca {}: {e}", ca.display()))
            })?;
            tls = tls.add_root_certificate(cert);
        }
        let tls = || {
            tls.clone()
                .build_rustls()
                .map_err(|e| SendError::permanent(format!("notify.smtp_tls: {e}")))
        };
        let mode = match config.smtp_tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls => Tls::Required(tls()?),
            SmtpTls::Tls => Tls::Wrapper(tls()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(config.smtp_port)
            .tls(mode)
            .timeout(Some(config.attempt_timeout));
        if let Some(user) = &config.smtp_username {
            let password = config.smtp_password.clone().unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Some(Mailer {
            transport: builder.build(),
            from,
        }))
    }

    /// Sends the alarm event to `to`.
    pub async fn send(&self, to: &str, ev: &AlarmEvent) -> Result<(), SendError> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| SendError::permanent(format!("email target {to:?}: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to.clone())
            .subject(payload::email_subject(ev))
            .message_id(Some(payload::email_message_id(ev)))
            .header(ContentType::TEXT_PLAIN)
            .body(payload::email_body(ev))
            .map_err(|e| SendError::permanent(format!("email to {to}: {e}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendError::permanent(format!("email to {to}: {e}"))),
            Err(e) => Err(SendError::retryable(format!("email to {to}: {e}"))),
        }
    }
}
