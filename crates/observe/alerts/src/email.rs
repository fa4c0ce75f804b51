//! The email channel: a notification as one message (plain text and HTML) over SMTP with
//! `lettre`, TLS by rustls (STARTTLS, or TLS at once on port 465), logged in when a user is
//! given. Its `Message-ID` is the notification's id (a relay seeing it twice can tell) and
//! every message of a group refers to the same thread, so mail clients keep an alert's firing
//! and resolved messages together.

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::notify::{Notification, Notifier, NotifyError, Status, html_escape as escape};

/// How the connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// Plain at first, then `STARTTLS` (required: a server that does not offer it is refused).
    StartTls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
    /// No TLS (a relay on the same host).
    None,
}

/// Where and how email is sent.
#[derive(Clone)]
pub struct Smtp {
    /// The server's host name (checked against its certificate).
    pub host: String,
    /// Its port.
    pub port: u16,
    /// How the connection is protected.
    pub security: Security,
    /// The login, if the server wants one.
    pub user: Option<String>,
    /// Its password (from a secret; never logged).
    pub password: Option<String>,
    /// The sender.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// Certificates (PEM) trusted besides the system's, for a relay with a private CA.
    pub extra_roots: Vec<String>,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Smtp {{ {}:{} .. }}", self.host, self.port)
    }
}

/// The email channel.
pub struct Email {
    from: Mailbox,
    to: Vec<Mailbox>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Email {
    /// A channel sending through `smtp`; an address or certificate that cannot be read is an
    /// error naming it.
    pub fn new(smtp: Smtp) -> Result<Email, String> {
        let from: Mailbox = smtp
            .from
            .parse()
            .map_err(|e| format!("the sender `{}` is not an address: {e}", smtp.from))?;
        let to = smtp
            .to
            .iter()
            .map(|t| {
                t.parse::<Mailbox>()
                    .map_err(|e| format!("the recipient `{t}` is not an address: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tls = if smtp.security == Security::None {
            Tls::None
        } else {
            let mut params = TlsParameters::builder(smtp.host.clone());
            for pem in &smtp.extra_roots {
                let cert = Certificate::from_pem(pem.as_bytes())
                    .map_err(|e| format!("a trusted certificate cannot be read: {e}"))?;
                params = params.add_root_certificate(cert);
            }
            let params = params
                .build_rustls()
                .map_err(|e| format!("TLS cannot be set up: {e}"))?;
            match smtp.security {
                Security::Tls => Tls::Wrapper(params),
                _ => Tls::Required(params),
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
            .port(smtp.port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(10)));
        if let Some(user) = &smtp.user {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                smtp.password.clone().unwrap_or_default(),
            ));
        }
        Ok(Email {
            from,
            to,
            transport: builder.build(),
        })
    }

    /// The message for `n`.
    pub fn message(&self, n: &Notification) -> Result<Message, NotifyError> {
        let thread = format!("<{}@slipway>", &n.group_digest()[..32]);
        let id: String =
            n.id.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '.'
                    }
                })
                .collect();
        let mut m = Message::builder()
            .from(self.from.clone())
            .subject(n.title())
            .message_id(Some(format!("<{id}@slipway>")))
            .in_reply_to(thread.clone())
            .references(thread)
            .user_agent("Slipway".into());
        for to in &self.to {
            m = m.to(to.clone());
        }
        m.multipart(MultiPart::alternative_plain_html(text(n), html(n)))
            .map_err(|e| NotifyError {
                message: format!("the message cannot be made: {e}"),
                retryable: false,
            })
    }
}

/// The plain-text body: each alert's line, its labels and links, and where to look.
pub fn text(n: &Notification) -> String {
    let mut out = format!("{}\n\n", n.title());
    for (a, line) in n.alerts.iter().zip(n.lines()) {
        out.push_str(&line);
        out.push('\n');
        let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("  labels: {}\n", labels.join(" ")));
        if let Some(d) = a.annotation("description") {
            out.push_str(&format!("  {d}\n"));
        }
        for (k, name) in [("runbook_url", "runbook"), ("dashboard_url", "dashboard")] {
            if let Some(u) = a.annotation(k) {
                out.push_str(&format!("  {name}: {u}\n"));
            }
        }
        out.push_str(&format!(
            "  since: {}\n",
            crate::notify::rfc3339(Some(a.starts_at))
        ));
    }
    out.push_str(&format!("\n{}/alerts\n", n.external_url));
    out
}

/// The HTML body: the same as [`text`], as a table.
pub fn html(n: &Notification) -> String {
    let colour = if n.status == Status::Firing {
        "#b3261e"
    } else {
        "#1e7b34"
    };
    let mut rows = String::new();
    for (a, line) in n.alerts.iter().zip(n.lines()) {
        let labels: Vec<String> = a
            .labels
            .iter()
            .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
            .collect();
        let links: Vec<String> = [("runbook_url", "Runbook"), ("dashboard_url", "Dashboard")]
            .into_iter()
            .filter_map(|(k, name)| {
                a.annotation(k)
                    .map(|u| format!("<a href=\"{}\">{name}</a>", escape(u)))
            })
            .collect();
        rows.push_str(&format!(
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>\n",
            escape(&line),
            labels.join(" "),
            links.join(" · ")
        ));
    }
    format!(
        "<!doctype html><html><body>\n<h2 style=\"color:{colour}\">{}</h2>\n<table>\n{rows}</table>\n<p><a href=\"{}/alerts\">Alerts in Slipway</a></p>\n</body></html>\n",
        escape(&n.title()),
        escape(&n.external_url)
    )
}

#[async_trait]
impl Notifier for Email {
    fn kind(&self) -> &'static str {
        "email"
    }

    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let message = self.message(n)?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| {
            // A 4xx reply, a timeout or a broken connection may pass later; a 5xx will not.
            let retryable = !e.is_permanent();
            let what = if e.is_permanent() || e.is_transient() {
                format!("the SMTP server refused the message ({e})")
            } else if e.is_timeout() {
                "the SMTP server does not answer (timed out)".into()
            } else if e.is_tls() {
                format!("the SMTP server's TLS failed ({e})")
            } else {
                format!("the SMTP server does not answer ({e})")
            };
            NotifyError {
                message: what,
                retryable,
            }
        })
    }
}
