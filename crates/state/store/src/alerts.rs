//! What the store keeps for alerts: the alerting state (one JSON document), the history of
//! what alerts did, and the outbox of notifications.

/// A history row to append.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct NewAlertEvent {
    /// When (ms).
    pub time_ms: i64,
    /// The rule.
    pub rule: String,
    /// `fired`, `resolved` or `acknowledged`.
    pub status: String,
    /// `P1`…`P4`.
    pub severity: String,
    /// The alert's labels.
    pub labels: serde_json::Value,
    /// The condition's value.
    pub value: Option<f64>,
    /// Who (for an acknowledgement).
    pub actor: Option<String>,
}

/// A history row.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AlertEvent {
    /// Its id.
    pub id: i64,
    /// The rest, as it was appended.
    #[serde(flatten)]
    pub event: NewAlertEvent,
}

/// Which history rows to read: the newest, or with `after` or `since_ms` the oldest of those
/// (a reader following the history, a timeline).
#[derive(Clone, Debug, Default)]
pub struct AlertHistoryQuery {
    /// Only this rule.
    pub rule: Option<String>,
    /// At most this many.
    pub limit: u32,
    /// Only rows after this id.
    pub after: Option<i64>,
    /// Only rows at or after this time (ms).
    pub since_ms: Option<i64>,
}

/// A notification to queue.
#[derive(Clone, Debug, PartialEq)]
pub struct NewNotification {
    /// Unique per notification: queuing the same key twice queues it once.
    pub key: String,
    /// The channel.
    pub channel: String,
    /// The notification, as JSON.
    pub payload: String,
    /// When it was decided (ms); it is due at once.
    pub created_ms: i64,
}

/// A queued notification.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct OutboxEntry {
    /// Its place in the queue.
    pub seq: i64,
    /// Its key.
    pub key: String,
    /// The channel.
    pub channel: String,
    /// The notification, as JSON.
    pub payload: String,
    /// When it was decided (ms).
    pub created_ms: i64,
    /// Tries so far.
    pub attempts: i64,
    /// When it may be tried next (ms).
    pub next_ms: i64,
    /// When it was delivered (ms).
    pub sent_ms: Option<i64>,
    /// Why the last try failed (never a secret).
    pub last_error: Option<String>,
}
