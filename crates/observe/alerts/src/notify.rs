//! Notifications and the channels that carry them. A [`Notification`] is one group of alerts
//! at one transition, shaped as Alertmanager's template data (so the generic webhook sends
//! Alertmanager's webhook payload, version 4, and existing receivers work); each channel kind
//! renders it as its receiver expects, behind one [`Notifier`] trait that one contract suite
//! tests for every kind.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Firing or resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Some alert of the group fires.
    Firing,
    /// Every alert of the group has resolved.
    Resolved,
}

impl Status {
    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One alert in a notification.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AlertItem {
    /// Firing or resolved.
    pub status: Status,
    /// Its labels (`alertname`, `severity`…), sorted.
    pub labels: Vec<(String, String)>,
    /// Its rendered annotations (`summary`, `description`, `runbook_url`…).
    pub annotations: Vec<(String, String)>,
    /// When it started firing (ms).
    pub starts_at: i64,
    /// When it resolved (ms), if it has.
    pub ends_at: Option<i64>,
    /// A link to the rule's expression.
    pub generator_url: String,
}

impl AlertItem {
    /// Alertmanager's fingerprint: FNV-1a 64 of the sorted label names and values, each
    /// followed by a 0xff separator, in 16 hex digits.
    pub fn fingerprint(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        let mut pairs = self.labels.clone();
        pairs.sort();
        for (k, v) in &pairs {
            eat(k.as_bytes());
            eat(&[0xff]);
            eat(v.as_bytes());
            eat(&[0xff]);
        }
        format!("{h:016x}")
    }

    /// A label's value.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// An annotation's value.
    pub fn annotation(&self, name: &str) -> Option<&str> {
        self.annotations
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One notification: a group of alerts, to one channel, at one transition.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Notification {
    /// Unique per group and transition: the idempotency key a receiver may deduplicate by.
    pub id: String,
    /// The group (`{}:{alertname="api_down"}`), the same for every notification of it.
    pub group_key: String,
    /// The channel's name.
    pub receiver: String,
    /// Firing if any alert fires.
    pub status: Status,
    /// The labels the group is made by.
    pub group_labels: Vec<(String, String)>,
    /// The labels every alert shares.
    pub common_labels: Vec<(String, String)>,
    /// The annotations every alert shares.
    pub common_annotations: Vec<(String, String)>,
    /// The alerts.
    pub alerts: Vec<AlertItem>,
    /// Where the control plane is reached.
    pub external_url: String,
    /// Why it is sent (`first notification`, `new alerts added`, `some alerts resolved`,
    /// `all alerts resolved`, `repeat interval elapsed`, `acknowledged`).
    pub reason: String,
    /// Who acknowledged the group, when this tells that (channels without the notion, such
    /// as the generic webhook, skip it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
}

fn object(pairs: &[(String, String)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// RFC 3339 with milliseconds, as Alertmanager writes times; the zero time for "not yet".
pub fn rfc3339(ms: Option<i64>) -> String {
    match ms.and_then(|m| jiff::Timestamp::from_millisecond(m).ok()) {
        Some(t) => format!("{t:.3}"),
        None => "0001-01-01T00:00:00Z".into(),
    }
}

/// `s` with `&`, `<`, `>` and `"` escaped, for HTML (email) and Telegram's HTML mode.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Notification {
    /// The SHA-256 of the group key, in hex: one stable name per group for the receivers
    /// that thread or deduplicate by it (PagerDuty's `dedup_key`, email and Slack threads).
    pub fn group_digest(&self) -> String {
        hex::encode(Sha256::digest(self.group_key.as_bytes()))
    }

    /// The alerts firing.
    pub fn firing(&self) -> impl Iterator<Item = &AlertItem> {
        self.alerts.iter().filter(|a| a.status == Status::Firing)
    }

    /// The alerts resolved.
    pub fn resolved(&self) -> impl Iterator<Item = &AlertItem> {
        self.alerts.iter().filter(|a| a.status == Status::Resolved)
    }

    /// The group's severity (its most urgent alert's).
    pub fn severity(&self) -> &str {
        self.alerts
            .iter()
            .filter_map(|a| a.label("severity"))
            .min()
            .unwrap_or("P3")
    }

    /// A one-line title: `[FIRING:3] api_down (service=web)`.
    pub fn title(&self) -> String {
        let name = self
            .common_labels
            .iter()
            .find(|(k, _)| k == "alertname")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "alerts".into());
        let extra: Vec<String> = self
            .group_labels
            .iter()
            .filter(|(k, _)| k != "alertname")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let count = match (&self.acknowledged_by, self.status) {
            (Some(by), _) => format!("ACKNOWLEDGED by {by}"),
            (None, Status::Firing) => format!("FIRING:{}", self.firing().count()),
            (None, Status::Resolved) => "RESOLVED".into(),
        };
        if extra.is_empty() {
            format!("[{count}] {} {name}", self.severity())
        } else {
            format!(
                "[{count}] {} {name} ({})",
                self.severity(),
                extra.join(", ")
            )
        }
    }

    /// Each alert's summary (or description, or labels), one per line.
    pub fn lines(&self) -> Vec<String> {
        self.alerts
            .iter()
            .map(|a| {
                let text = a
                    .annotation("summary")
                    .or_else(|| a.annotation("description"))
                    .map(str::to_string)
                    .unwrap_or_else(|| {
                        a.labels
                            .iter()
                            .filter(|(k, _)| k != "alertname" && k != "severity")
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    });
                let mark = if a.status == Status::Firing {
                    "🔥"
                } else {
                    "✅"
                };
                format!("{mark} {text}")
            })
            .collect()
    }

    /// Alertmanager's webhook payload, version 4.
    pub fn webhook_v4(&self) -> Value {
        json!({
            "version": "4",
            "groupKey": self.group_key,
            "truncatedAlerts": 0,
            "status": self.status.as_str(),
            "receiver": self.receiver,
            "groupLabels": object(&self.group_labels),
            "commonLabels": object(&self.common_labels),
            "commonAnnotations": object(&self.common_annotations),
            "externalURL": self.external_url,
            "notification_reason": self.reason,
            "alerts": self.alerts.iter().map(|a| json!({
                "status": a.status.as_str(),
                "labels": object(&a.labels),
                "annotations": object(&a.annotations),
                "startsAt": rfc3339(Some(a.starts_at)),
                "endsAt": rfc3339(a.ends_at),
                "generatorURL": a.generator_url,
                "fingerprint": a.fingerprint(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// A delivery that did not happen.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct NotifyError {
    /// What went wrong (never the endpoint's secret URL or key).
    pub message: String,
    /// Whether trying again later may work (a timeout, a 5xx, a 429), or not (a 4xx: the
    /// payload or the key is wrong).
    pub retryable: bool,
}

/// A channel.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// The kind (`webhook`, `slack`…).
    fn kind(&self) -> &'static str;

    /// Delivers one notification.
    async fn send(&self, n: &Notification) -> Result<(), NotifyError>;

    /// Tells of a change (a deploy), for a channel that relates changes to incidents
    /// (PagerDuty's change events); the others ignore it.
    async fn change(&self, _change: &Change) -> Result<(), NotifyError> {
        Ok(())
    }

    /// Whether it tells acknowledgements (PagerDuty, chats, email do; the generic webhook
    /// and Alertmanager, whose payloads have no such thing, do not: theirs are skipped).
    fn tells_acks(&self) -> bool {
        true
    }
}

/// A change worth relating to incidents: a deploy that finished.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// One line (`deploy of web@v42 to production succeeded`).
    pub summary: String,
    /// Where (`production`).
    pub source: String,
    /// When (ms).
    pub at: i64,
    /// Details (release, deployment, outcome).
    pub details: Value,
    /// Where to read more.
    pub link: Option<String>,
}

/// What a channel needs: its kind and endpoint (the URL or key comes from a secret where the
/// channel says so; it is never logged).
#[derive(Clone)]
pub struct Endpoint {
    /// The URL notifications go to (for PagerDuty and Telegram, the API's base URL).
    pub url: String,
    /// The PagerDuty routing key, or the Telegram bot token.
    pub key: Option<String>,
    /// The Telegram chat.
    pub chat: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Endpoint { .. }")
    }
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}

/// POSTs JSON with the notification's id as `Idempotency-Key` (so a receiver that got it
/// already, before a crash kept us from recording that, can tell); a 2xx is delivered, a 429
/// or 5xx or no answer is worth a retry.
async fn post(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    body: &Value,
    what: &str,
) -> Result<(), NotifyError> {
    let r = client
        .post(url)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .map_err(|e| NotifyError {
            // reqwest's error names the URL; say only what kind of failure it was.
            message: format!(
                "{what} does not answer ({})",
                if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "connection refused"
                } else {
                    "request failed"
                }
            ),
            retryable: true,
        })?;
    let status = r.status();
    if status.is_success() {
        return Ok(());
    }
    let text: String = r
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    Err(NotifyError {
        message: format!("{what} answered {status}: {text}"),
        retryable: status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408,
    })
}

/// The generic webhook: Alertmanager's webhook payload, version 4.
pub struct Webhook {
    endpoint: Endpoint,
    client: reqwest::Client,
}

impl Webhook {
    /// A webhook to `endpoint.url`.
    pub fn new(endpoint: Endpoint) -> Webhook {
        Webhook {
            endpoint,
            client: client(),
        }
    }
}

#[async_trait]
impl Notifier for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn tells_acks(&self) -> bool {
        false
    }

    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        post(
            &self.client,
            &self.endpoint.url,
            &n.id,
            &n.webhook_v4(),
            "the webhook",
        )
        .await
    }
}

/// A Slack incoming webhook: a Block Kit message (a header, one line per alert, links).
pub struct Slack {
    endpoint: Endpoint,
    client: reqwest::Client,
}

impl Slack {
    /// A Slack incoming webhook at `endpoint.url`.
    pub fn new(endpoint: Endpoint) -> Slack {
        Slack {
            endpoint,
            client: client(),
        }
    }

    /// The message.
    pub fn message(n: &Notification) -> Value {
        let title: String = n.title().chars().take(150).collect();
        let body: String = n.lines().join("\n").chars().take(2900).collect();
        let mut blocks = vec![
            json!({"type": "header", "text": {"type": "plain_text", "text": title}}),
            json!({"type": "section", "text": {"type": "mrkdwn", "text": body}}),
        ];
        let links: Vec<String> = n
            .alerts
            .iter()
            .flat_map(|a| {
                [("runbook_url", "Runbook"), ("dashboard_url", "Dashboard")]
                    .into_iter()
                    .filter_map(|(k, name)| a.annotation(k).map(|u| format!("<{u}|{name}>")))
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !links.is_empty() {
            blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": links.join(" · ")}]}));
        }
        json!({ "text": title, "blocks": blocks })
    }
}

#[async_trait]
impl Notifier for Slack {
    fn kind(&self) -> &'static str {
        "slack"
    }

    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        post(
            &self.client,
            &self.endpoint.url,
            &n.id,
            &Slack::message(n),
            "Slack",
        )
        .await
    }
}

/// PagerDuty Events API v2: `trigger` while firing, `resolve` once resolved, one incident per
/// group (`dedup_key` is the SHA-256 of the group key, as Alertmanager's).
pub struct PagerDuty {
    endpoint: Endpoint,
    client: reqwest::Client,
}

impl PagerDuty {
    /// PagerDuty at `endpoint.url` (`https://events.pagerduty.com`) with routing key
    /// `endpoint.key`.
    pub fn new(endpoint: Endpoint) -> PagerDuty {
        PagerDuty {
            endpoint,
            client: client(),
        }
    }

    /// The event.
    pub fn event(n: &Notification, routing_key: &str) -> Value {
        let dedup = n.group_digest();
        let action = match (n.status, &n.acknowledged_by) {
            (Status::Firing, Some(_)) => "acknowledge",
            (Status::Firing, None) => "trigger",
            (Status::Resolved, _) => "resolve",
        };
        let severity = match n.severity() {
            "P1" => "critical",
            "P2" => "error",
            "P3" => "warning",
            _ => "info",
        };
        let summary: String = n.title().chars().take(1024).collect();
        let mut links = Vec::new();
        for a in &n.alerts {
            for (k, text) in [("runbook_url", "Runbook"), ("dashboard_url", "Dashboard")] {
                if let Some(u) = a.annotation(k)
                    && !links.iter().any(|l: &Value| l["href"] == u)
                {
                    links.push(json!({"href": u, "text": text}));
                }
            }
        }
        json!({
            "routing_key": routing_key,
            "event_action": action,
            "dedup_key": dedup,
            "payload": {
                "summary": summary,
                "source": n.common_labels.iter().find(|(k, _)| k == "service").map_or("slipway", |(_, v)| v.as_str()),
                "severity": severity,
                "custom_details": {
                    "firing": n.firing().map(n_lines).collect::<Vec<_>>().join("\n"),
                    "resolved": n.resolved().map(n_lines).collect::<Vec<_>>().join("\n"),
                    "num_firing": n.firing().count(),
                    "num_resolved": n.resolved().count(),
                },
            },
            "links": links,
            "client": "Slipway",
            "client_url": n.external_url,
        })
    }
}

fn n_lines(a: &AlertItem) -> String {
    let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    match a.annotation("summary") {
        Some(s) => format!("{s} ({})", labels.join(" ")),
        None => labels.join(" "),
    }
}

impl PagerDuty {
    /// A change event (Events API v2, `/v2/change/enqueue`).
    pub fn change_event(c: &Change, routing_key: &str) -> Value {
        let mut v = json!({
            "routing_key": routing_key,
            "payload": {
                "summary": c.summary.chars().take(1024).collect::<String>(),
                "timestamp": rfc3339(Some(c.at)),
                "source": c.source,
                "custom_details": c.details,
            },
        });
        if let Some(l) = &c.link {
            v["links"] = json!([{"href": l, "text": "Deployments"}]);
        }
        v
    }
}

#[async_trait]
impl Notifier for PagerDuty {
    fn kind(&self) -> &'static str {
        "pagerduty"
    }

    async fn change(&self, c: &Change) -> Result<(), NotifyError> {
        let key = self.endpoint.key.as_deref().unwrap_or_default();
        let url = format!(
            "{}/v2/change/enqueue",
            self.endpoint.url.trim_end_matches('/')
        );
        let id = format!("change-{}-{}", c.source, c.at);
        post(
            &self.client,
            &url,
            &id,
            &PagerDuty::change_event(c, key),
            "PagerDuty",
        )
        .await
    }

    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let key = self.endpoint.key.as_deref().unwrap_or_default();
        let url = format!("{}/v2/enqueue", self.endpoint.url.trim_end_matches('/'));
        post(
            &self.client,
            &url,
            &n.id,
            &PagerDuty::event(n, key),
            "PagerDuty",
        )
        .await
    }
}

/// A Telegram bot's `sendMessage` (HTML, within Telegram's 4096 characters).
pub struct Telegram {
    endpoint: Endpoint,
    client: reqwest::Client,
}

impl Telegram {
    /// The bot `endpoint.key` at `endpoint.url` (`https://api.telegram.org`), writing to
    /// `endpoint.chat`.
    pub fn new(endpoint: Endpoint) -> Telegram {
        Telegram {
            endpoint,
            client: client(),
        }
    }

    /// The message.
    pub fn message(n: &Notification, chat: &str) -> Value {
        let escape = html_escape;
        let mut text = format!(
            "<b>{}</b>\n{}",
            escape(&n.title()),
            escape(&n.lines().join("\n"))
        );
        if let Some(r) = n.alerts.iter().find_map(|a| a.annotation("runbook_url")) {
            text.push_str(&format!("\n<a href=\"{}\">Runbook</a>", escape(r)));
        }
        let text: String = text.chars().take(4096).collect();
        json!({
            "chat_id": chat,
            "text": text,
            "parse_mode": "HTML",
            "disable_web_page_preview": true,
        })
    }
}

#[async_trait]
impl Notifier for Telegram {
    fn kind(&self) -> &'static str {
        "telegram"
    }

    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let token = self.endpoint.key.as_deref().unwrap_or_default();
        let chat = self.endpoint.chat.as_deref().unwrap_or_default();
        let url = format!(
            "{}/bot{token}/sendMessage",
            self.endpoint.url.trim_end_matches('/')
        );
        post(
            &self.client,
            &url,
            &n.id,
            &Telegram::message(n, chat),
            "Telegram",
        )
        .await
    }
}

/// An existing Alertmanager: the alerts posted to its API v2 (`POST /api/v2/alerts`), where
/// its own routing, silences and receivers take over.
pub struct Alertmanager {
    endpoint: Endpoint,
    client: reqwest::Client,
}

impl Alertmanager {
    /// The Alertmanager at `endpoint.url` (`http://alertmanager:9093`).
    pub fn new(endpoint: Endpoint) -> Alertmanager {
        Alertmanager {
            endpoint,
            client: client(),
        }
    }

    /// The alerts as API v2 wants them: a firing alert's `endsAt` is left out (Alertmanager
    /// then holds it for its `resolve_timeout`; Slipway sends again before that).
    pub fn alerts(n: &Notification) -> Value {
        Value::Array(
            n.alerts
                .iter()
                .map(|a| {
                    let mut v = json!({
                        "labels": object(&a.labels),
                        "annotations": object(&a.annotations),
                        "startsAt": rfc3339(Some(a.starts_at)),
                        "generatorURL": a.generator_url,
                    });
                    if let Some(e) = a.ends_at {
                        v["endsAt"] = Value::String(rfc3339(Some(e)));
                    }
                    v
                })
                .collect(),
        )
    }
}

#[async_trait]
impl Notifier for Alertmanager {
    fn kind(&self) -> &'static str {
        "alertmanager"
    }

    fn tells_acks(&self) -> bool {
        false
    }

    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let url = format!("{}/api/v2/alerts", self.endpoint.url.trim_end_matches('/'));
        post(
            &self.client,
            &url,
            &n.id,
            &Alertmanager::alerts(n),
            "Alertmanager",
        )
        .await
    }
}
