//! How a message leaves: `Transport` is one notifier's connection settings, built once
//! from the pipeline file and its secrets. SMTP goes through lettre (tokio, rustls; a new
//! connection per message, as messages are minutes apart), webhooks through reqwest.
//! Every error is redacted and never carries the webhook URL, which holds its token.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::message::{Message, Redactor};
use crate::appliance::error_chain as chain;
use crate::config::check_webhook_url;
use crate::config::{Notifier, NotifierKind, NotifierSecrets, SmtpNotifier, SmtpTls};

/// Longest time one message (connect, TLS, AUTH, DATA; or one HTTP request) may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a notifier could not be set up or could not send.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The notifier's settings cannot be used (an unreadable CA file, a bad URL).
    #[error("notifier \"{name}\": {reason}")]
    Setup {
        /// The notifier.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The SMTP server could not be reached or refused the message.
    #[error("sending mail through {server}: {reason}")]
    Smtp {
        /// `host:port`.
        server: String,
        /// lettre's error, redacted.
        reason: String,
    },
    /// The webhook could not be reached or did not accept the body.
    #[error("posting to the webhook at {host}: {reason}")]
    Webhook {
        /// The URL's host (never the whole URL).
        host: String,
        /// What went wrong, redacted.
        reason: String,
    },
}

/// One notifier's way out.
#[derive(Debug)]
pub enum Transport {
    /// Mail.
    Smtp(SmtpTransport),
    /// HTTP POST.
    Webhook(WebhookTransport),
}

/// An SMTP server and the envelope.
pub struct SmtpTransport {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    settings: SmtpNotifier,
    redactor: Redactor,
}

impl std::fmt::Debug for SmtpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // lettre's own Debug would show the connection details; the server is enough.
        write!(f, "SmtpTransport({})", self.server())
    }
}

/// A webhook URL and its headers.
pub struct WebhookTransport {
    client: reqwest::Client,
    url: reqwest::Url,
    host: String,
    headers: reqwest::header::HeaderMap,
    redactor: Redactor,
}

impl std::fmt::Debug for WebhookTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookTransport({})", self.host)
    }
}

impl Transport {
    /// Builds the transport of `notifier` with its secrets; `redactor` covers every
    /// secret of the pipeline file. Reads the CA file, if any; contacts nobody.
    pub fn build(
        notifier: &Notifier,
        secrets: &NotifierSecrets,
        redactor: &Redactor,
    ) -> Result<Transport, NotifyError> {
        let setup = |reason: String| NotifyError::Setup {
            name: notifier.name.clone(),
            reason,
        };
        match &notifier.kind {
            NotifierKind::Smtp(smtp) => {
                let tls = match smtp.tls {
                    SmtpTls::None => Tls::None,
                    mode => {
                        let mut params = TlsParameters::builder(smtp.server.clone());
                        if let Some(ca) = &smtp.ca_file {
                            let pem = std::fs::read(ca).map_err(|e| {
                                setup(format!("cannot read ca_file {}: {e}", ca.display()))
                            })?;
                            let cert = Certificate::from_pem(&pem).map_err(|e| {
                                setup(format!(
                                    "ca_file {} holds no certificate: {e}",
                                    ca.display()
                                ))
                            })?;
                            params = params.add_root_certificate(cert);
                        }
                        let params = params
                            .build_rustls()
                            .map_err(|e| setup(format!("setting up TLS: {}", chain(&e))))?;
                        if mode == SmtpTls::Tls {
                            Tls::Wrapper(params)
                        } else {
                            Tls::Required(params)
                        }
                    }
                };
                // `builder_dangerous` only means that TLS is left to the caller, which
                // sets it right here from `tls`.
                let mut builder =
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.server.clone())
                        .port(smtp.port)
                        .tls(tls)
                        .timeout(Some(SEND_TIMEOUT));
                if let Some(user) = &smtp.username {
                    let password = secrets
                        .password
                        .as_ref()
                        .ok_or_else(|| setup("the password was not read".into()))?;
                    builder = builder.credentials(Credentials::new(
                        user.clone(),
                        password.expose().to_string(),
                    ));
                }
                Ok(Transport::Smtp(SmtpTransport {
                    transport: builder.build(),
                    settings: smtp.clone(),
                    redactor: redactor.clone(),
                }))
            }
            NotifierKind::Webhook(hook) => {
                let url_text = secrets
                    .url
                    .as_ref()
                    .ok_or_else(|| setup("the webhook url was not read".into()))?;
                let host =
                    check_webhook_url(url_text.expose()).map_err(|e| setup(format!("url: {e}")))?;
                let url = reqwest::Url::parse(url_text.expose())
                    .map_err(|e| setup(format!("url is not a valid URL ({e})")))?;
                if hook.headers.len() != secrets.headers.len() {
                    return Err(setup("a header value was not read".into()));
                }
                let mut headers = reqwest::header::HeaderMap::new();
                for (name, value) in &secrets.headers {
                    let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| setup(format!("\"{name}\" is not a header name")))?;
                    let mut value = reqwest::header::HeaderValue::from_str(value.expose())
                        .map_err(|_| {
                            setup(format!("the value of header {name} is not valid in HTTP"))
                        })?;
                    value.set_sensitive(true);
                    headers.insert(name, value);
                }
                let client = reqwest::Client::builder()
                    .timeout(SEND_TIMEOUT)
                    .user_agent(concat!("btic/", env!("CARGO_PKG_VERSION")))
                    // A redirect could carry the body (and headers) elsewhere.
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| setup(format!("setting up HTTP: {}", chain(&e))))?;
                Ok(Transport::Webhook(WebhookTransport {
                    client,
                    url,
                    host,
                    headers,
                    redactor: redactor.clone(),
                }))
            }
        }
    }

    /// What it sends to, for people: `smtp mail.example.com:587 (starttls)`,
    /// `webhook at hooks.example.com` (never the URL's path, which holds the token).
    pub fn describe(&self) -> String {
        match self {
            Transport::Smtp(s) => format!("smtp {} ({})", s.server(), s.settings.tls.as_str()),
            Transport::Webhook(w) => format!("webhook at {}", w.host),
        }
    }

    /// Sends one message; says how it was accepted.
    pub async fn send(&self, message: &Message) -> Result<String, NotifyError> {
        match self {
            Transport::Smtp(s) => s.send(message).await,
            Transport::Webhook(w) => w.send(message).await,
        }
    }

    /// Greets an SMTP server as a send would (EHLO, STARTTLS or TLS, AUTH with the
    /// credentials) and quits without sending; `None` for a webhook, which cannot be
    /// tried without posting.
    pub async fn greet(&self) -> Option<Result<String, NotifyError>> {
        match self {
            Transport::Smtp(s) => Some(s.greet().await),
            Transport::Webhook(_) => None,
        }
    }
}

impl SmtpTransport {
    fn server(&self) -> String {
        format!("{}:{}", self.settings.server, self.settings.port)
    }

    fn error(&self, e: &dyn std::error::Error) -> NotifyError {
        NotifyError::Smtp {
            server: self.server(),
            reason: self.redactor.text(&chain(e)),
        }
    }

    async fn send(&self, message: &Message) -> Result<String, NotifyError> {
        let mut builder = lettre::Message::builder()
            .from(self.settings.from.clone())
            .subject(message.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .user_agent(concat!("btic/", env!("CARGO_PKG_VERSION")).to_string());
        for to in &self.settings.to {
            builder = builder.to(to.clone());
        }
        let mail = builder
            .body(message.text.clone())
            .map_err(|e| self.error(&e))?;
        let response = self
            .transport
            .send(mail)
            .await
            .map_err(|e| self.error(&e))?;
        let recipients: Vec<String> = self.settings.to.iter().map(|m| m.to_string()).collect();
        Ok(format!(
            "accepted by {} for {} ({})",
            self.server(),
            recipients.join(", "),
            response.code()
        ))
    }

    async fn greet(&self) -> Result<String, NotifyError> {
        match self.transport.test_connection().await {
            Ok(true) => Ok(format!(
                "{} answered: EHLO{}{} ok, nothing sent",
                self.server(),
                match self.settings.tls {
                    SmtpTls::StartTls => ", STARTTLS",
                    SmtpTls::Tls => " over TLS",
                    SmtpTls::None => " (unencrypted)",
                },
                if self.settings.username.is_some() {
                    ", AUTH"
                } else {
                    ""
                }
            )),
            Ok(false) => Err(NotifyError::Smtp {
                server: self.server(),
                reason: "the server did not answer NOOP after the greeting".into(),
            }),
            Err(e) => Err(self.error(&e)),
        }
    }
}

impl WebhookTransport {
    fn error(&self, reason: String) -> NotifyError {
        NotifyError::Webhook {
            host: self.host.clone(),
            reason: self.redactor.text(&reason),
        }
    }

    async fn send(&self, message: &Message) -> Result<String, NotifyError> {
        let response = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .json(&message.body)
            .send()
            .await
            // reqwest puts the URL in its errors; this one holds the hook's token.
            .map_err(|e| self.error(chain(&e.without_url())))?;
        let status = response.status();
        if status.is_success() {
            return Ok(format!(
                "accepted by {} (HTTP {})",
                self.host,
                status.as_u16()
            ));
        }
        let body = response.text().await.unwrap_or_default();
        let body: String = body.trim().chars().take(200).collect();
        Err(self.error(if body.is_empty() {
            format!("HTTP {}", status.as_u16())
        } else {
            format!("HTTP {}: {body}", status.as_u16())
        }))
    }
}
