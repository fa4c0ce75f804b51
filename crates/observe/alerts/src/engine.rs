//! Alerting as a whole: every rule evaluated against the metrics back-end, transitions routed
//! into notifications, and all of it (the rules' alerts, the router, the history, the
//! notifications) committed to the store in one write before anything is sent. A sender then
//! works through the outbox, channel by channel and in order, retrying with backoff and
//! jitter. A control plane killed at any point comes back with the state of its last commit:
//! nothing decided is lost, and nothing already queued is queued again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use slipway_metrics::backend::MetricsBackend;
use slipway_spec::model::Severity;
use slipway_store::{NewAlertEvent, NewNotification, Store, StoreError};

use crate::eval::evaluate;
use crate::notify::{AlertItem, Notification, Notifier, Status};
use crate::route::{Config, Routed, Router, Routing, Silence};
use crate::rule::Rule;
use crate::state::{RuleState, Transition};

/// What is saved: each rule's alerts, the router, the silences.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// By rule name.
    pub rules: BTreeMap<String, RuleState>,
    /// Groups and pages.
    pub router: Router,
    /// Silences (expired ones are dropped).
    pub silences: Vec<Silence>,
}

/// A channel: where it sends, and which severities it takes (empty: all).
pub struct Channel {
    /// The sender.
    pub notifier: Arc<dyn Notifier>,
    /// Severities it takes.
    pub severities: Vec<Severity>,
}

/// The last evaluation of a rule, for `slipway alerts`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RuleHealth {
    /// When it was last evaluated (ms).
    pub evaluated_ms: i64,
    /// Why its last evaluation failed.
    pub error: Option<String>,
}

/// The alerting engine of one control plane.
pub struct Alerting {
    rules: Vec<Rule>,
    channels: HashMap<String, Channel>,
    store: Arc<dyn Store>,
    saved: Saved,
    health: BTreeMap<String, RuleHealth>,
    routing: Routing,
    pacer: Pacer,
    external_url: String,
}

/// Notifications as the outbox keeps them.
fn queue(notifications: &[Notification], now: i64) -> Vec<NewNotification> {
    notifications
        .iter()
        .map(|n| NewNotification {
            key: n.id.clone(),
            channel: n.receiver.clone(),
            payload: serde_json::to_string(n).unwrap_or_default(),
            created_ms: now,
        })
        .collect()
}

/// Backoff before try `attempts + 1`: 1 s doubling to 5 min, plus up to a quarter more.
pub fn backoff_ms(attempts: i64) -> i64 {
    let base = 1000i64
        .saturating_mul(1 << attempts.clamp(0, 9))
        .min(300_000);
    base + fastrand::i64(0..=base / 4)
}

impl Alerting {
    /// The engine over `rules` and `channels`, its state restored from `store`.
    pub async fn open(
        rules: Vec<Rule>,
        channels: HashMap<String, Channel>,
        store: Arc<dyn Store>,
        external_url: &str,
    ) -> Result<Alerting, StoreError> {
        let saved = store
            .alerting_state()
            .await?
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        Ok(Alerting {
            rules,
            channels,
            store,
            saved,
            health: BTreeMap::new(),
            routing: Routing::default(),
            pacer: Pacer::default(),
            external_url: external_url.to_string(),
        })
    }

    /// Replaces the rules and channels (a new configuration); alerts of rules that are gone
    /// are dropped at the next evaluation.
    pub fn reconfigure(&mut self, rules: Vec<Rule>, channels: HashMap<String, Channel>) {
        self.rules = rules;
        self.channels = channels;
    }

    /// The next moment (ms) a pending alert's `for` runs out, when the rules should be
    /// evaluated again for it to fire on time.
    pub fn next_due(&self) -> Option<i64> {
        self.rules
            .iter()
            .filter_map(|r| {
                let state = self.saved.rules.get(&r.name)?;
                let for_ms = i64::try_from(r.for_.as_millis()).unwrap_or(i64::MAX / 4);
                state
                    .alerts
                    .values()
                    .filter(|a| a.phase == crate::state::Phase::Pending)
                    .map(|a| a.active_at.saturating_add(for_ms))
                    .min()
            })
            .min()
    }

    /// How alerts are grouped and timed from now on.
    pub fn set_routing(&mut self, routing: Routing) {
        self.routing = routing;
    }

    /// The silences in force or to come at `now`: those set, and the maintenance windows
    /// open.
    pub fn silences(&self, now: i64) -> Vec<Silence> {
        let mut all: Vec<Silence> = self
            .saved
            .silences
            .iter()
            .filter(|s| s.ends_at > now)
            .cloned()
            .collect();
        all.extend(self.routing.windows_open(now));
        all
    }

    /// What is saved.
    pub fn saved(&self) -> &Saved {
        &self.saved
    }

    /// Each rule's last evaluation.
    pub fn health(&self) -> &BTreeMap<String, RuleHealth> {
        &self.health
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The channels a rule's alerts go to: those it names, or every channel; either way only
    /// those that take its severity.
    fn channels_for(&self, rule: &Rule) -> Vec<String> {
        let mut names: Vec<String> = if rule.channels.is_empty() {
            self.channels.keys().cloned().collect()
        } else {
            rule.channels.clone()
        };
        names.retain(|n| {
            self.channels
                .get(n)
                .is_some_and(|c| c.severities.is_empty() || c.severities.contains(&rule.severity))
        });
        names.sort();
        names
    }

    /// One round at `now` (ms): every rule evaluated, what changed routed, the notifications
    /// that are due decided, and all of it committed. Returns how many notifications were
    /// queued.
    pub async fn evaluate(
        &mut self,
        backend: &dyn MetricsBackend,
        now: i64,
    ) -> Result<usize, StoreError> {
        let mut history = Vec::new();
        let mut changed = false;
        let names: std::collections::HashSet<&str> =
            self.rules.iter().map(|r| r.name.as_str()).collect();
        let before = self.saved.rules.len();
        self.saved.rules.retain(|k, _| names.contains(k.as_str()));
        changed |= before != self.saved.rules.len();
        // Taken out for the loop (it borrows the rest of `self`), put back after it.
        let rules = std::mem::take(&mut self.rules);
        for rule in &rules {
            let state = self.saved.rules.entry(rule.name.clone()).or_default();
            let shape = |s: &RuleState| -> Vec<(String, crate::state::Phase)> {
                s.alerts.iter().map(|(k, a)| (k.clone(), a.phase)).collect()
            };
            let was = shape(state);
            let result = evaluate(rule, state, backend, now, &self.external_url).await;
            let is = shape(state);
            changed |= was != is;
            let health = self.health.entry(rule.name.clone()).or_default();
            health.evaluated_ms = now;
            let transitions = match result {
                Ok(t) => {
                    health.error = None;
                    t
                }
                Err(e) => {
                    health.error = Some(e.to_string());
                    continue;
                }
            };
            let channels = self.channels_for(rule);
            for t in transitions {
                // A channel that fails is not told about itself (its alert goes to the others).
                let mut channels = channels.clone();
                if rule.name == CHANNEL_FAILING
                    && let Some(c) = t.labels().get("channel")
                {
                    channels.retain(|n| n.as_str() != c);
                }
                let (labels, value, status, starts_at, ends_at) = match &t {
                    Transition::Fired {
                        labels, value, at, ..
                    } => (labels, *value, Status::Firing, *at, None),
                    Transition::Resolved {
                        labels,
                        value,
                        fired_at,
                        at,
                    } => (labels, *value, Status::Resolved, *fired_at, Some(*at)),
                };
                let pairs = crate::rule::pairs(labels);
                history.push(NewAlertEvent {
                    time_ms: now,
                    rule: rule.name.clone(),
                    status: match status {
                        Status::Firing => "fired".into(),
                        Status::Resolved => "resolved".into(),
                    },
                    severity: rule.severity.as_str().into(),
                    labels: serde_json::Value::Object(
                        pairs
                            .iter()
                            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                            .collect(),
                    ),
                    value: Some(value),
                    actor: None,
                });
                let item = AlertItem {
                    status,
                    annotations: rule.render_annotations(labels, value, &self.external_url),
                    labels: pairs,
                    starts_at,
                    ends_at,
                    generator_url: format!(
                        "{}/alerts/{}",
                        self.external_url.trim_end_matches('/'),
                        rule.name
                    ),
                };
                self.saved.router.ingest(
                    &Routed {
                        alert: item,
                        channels: channels.clone(),
                        severity: rule.severity,
                    },
                    &self.routing.group_by,
                    now,
                );
                changed = true;
            }
        }
        self.rules = rules;
        self.saved.silences.retain(|s| s.ends_at > now);
        let routing = &self.routing;
        let timing = |s| routing.timing(s);
        let silences = self.silences(now);
        let notifications: Vec<Notification> = self.saved.router.due(
            &Config {
                group_by: &routing.group_by,
                timing: &timing,
                silences: &silences,
                external_url: &self.external_url,
            },
            now,
        );
        if !changed && notifications.is_empty() {
            return Ok(0);
        }
        let queued = queue(&notifications, now);
        let state = serde_json::to_string(&self.saved).unwrap_or_default();
        self.store
            .commit_alerting(&state, &history, &queued)
            .await?;
        Ok(queued.len())
    }

    /// Sends what is due at `now` (ms); returns how many were delivered.
    pub async fn deliver(&mut self, now: i64) -> Result<usize, StoreError> {
        let senders = self.senders();
        Ok(deliver(self.store.as_ref(), &senders, &mut self.pacer, now)
            .await?
            .delivered)
    }

    /// The channels' senders, to [`deliver`] without holding the engine.
    pub fn senders(&self) -> HashMap<String, Arc<dyn Notifier>> {
        self.channels
            .iter()
            .map(|(k, c)| (k.clone(), c.notifier.clone()))
            .collect()
    }

    /// The store it commits to.
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Acknowledges the firing groups with an alert matching all `matchers` (they stop
    /// repeating until they resolve); recorded in the history with who. Returns how many.
    pub async fn ack(
        &mut self,
        matchers: &[crate::route::Matcher],
        by: &str,
        now: i64,
    ) -> Result<usize, StoreError> {
        let (n, told) = self.saved.router.ack(matchers, by, &self.external_url);
        let history = vec![NewAlertEvent {
            time_ms: now,
            rule: matchers
                .iter()
                .find(|m| m.name == "alertname" && !m.regex && !m.negative)
                .map_or_else(|| "*".to_string(), |m| m.value.clone()),
            status: "acknowledged".into(),
            severity: String::new(),
            labels: serde_json::Value::Object(
                matchers
                    .iter()
                    .map(|m| (m.name.clone(), serde_json::Value::String(m.to_string())))
                    .collect(),
            ),
            value: None,
            actor: Some(by.to_string()),
        }];
        let queued = queue(&told, now);
        let state = serde_json::to_string(&self.saved).unwrap_or_default();
        self.store
            .commit_alerting(&state, &history, &queued)
            .await?;
        Ok(n)
    }

    /// Adds a silence.
    pub async fn silence(&mut self, s: Silence) -> Result<(), StoreError> {
        self.saved.silences.push(s);
        let state = serde_json::to_string(&self.saved).unwrap_or_default();
        self.store.commit_alerting(&state, &[], &[]).await
    }

    /// Ends a silence now; whether it existed.
    pub async fn expire_silence(&mut self, id: &str, now: i64) -> Result<bool, StoreError> {
        let mut found = false;
        for s in &mut self.saved.silences {
            if s.id == id && s.ends_at > now {
                s.ends_at = now;
                found = true;
            }
        }
        let state = serde_json::to_string(&self.saved).unwrap_or_default();
        self.store.commit_alerting(&state, &[], &[]).await?;
        Ok(found)
    }
}

/// The built-in rule that fires when a channel has failed to deliver for a while (on
/// `slipway_notification_channel_failing_seconds`); its alerts skip the channel they are about.
pub const CHANNEL_FAILING: &str = "slipway_channel_failing";

/// What one pass over the outbox did.
#[derive(Debug, Default)]
pub struct Report {
    /// Notifications delivered.
    pub delivered: usize,
    /// Channels that took what they were sent.
    pub succeeded: std::collections::BTreeSet<String>,
    /// Channels that failed, with why.
    pub failed: BTreeMap<String, String>,
    /// Notifications held back by a channel's rate limit (sent on a later pass).
    pub held: usize,
}

/// Since when each channel has been failing, and why (kept by whoever works the outbox).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChannelHealth {
    /// Channel → (failing since, ms; the last error).
    pub failing: BTreeMap<String, (i64, String)>,
}

impl ChannelHealth {
    /// Takes a pass's outcomes: a channel that delivered is well again; one that failed is
    /// failing since its first failure.
    pub fn record(&mut self, report: &Report, now: i64) {
        for c in &report.succeeded {
            self.failing.remove(c);
        }
        for (c, e) in &report.failed {
            let since = self.failing.get(c).map_or(now, |f| f.0);
            self.failing.insert(c.clone(), (since, e.clone()));
        }
    }

    /// How long `channel` has been failing at `now` (0 when it is not), in seconds.
    pub fn failing_seconds(&self, channel: &str, now: i64) -> f64 {
        self.failing
            .get(channel)
            .map_or(0.0, |(since, _)| (now - since) as f64 / 1000.0)
    }
}

/// A rate limit per channel: a token bucket holding `burst` sends, refilled at `per_second`
/// (Slack and Telegram take about one message a second per webhook or chat). What exceeds
/// it waits in the outbox, in order.
#[derive(Clone, Debug)]
pub struct Pacer {
    burst: f64,
    per_second: f64,
    buckets: HashMap<String, (f64, i64)>,
}

impl Default for Pacer {
    fn default() -> Pacer {
        Pacer::new(10.0, 1.0)
    }
}

impl Pacer {
    /// Bursts of `burst` sends, then `per_second`.
    pub fn new(burst: f64, per_second: f64) -> Pacer {
        Pacer {
            burst,
            per_second,
            buckets: HashMap::new(),
        }
    }

    /// Whether `channel` may send at `now` (ms); if so, the send is counted.
    pub fn take(&mut self, channel: &str, now: i64) -> bool {
        let (tokens, at) = self
            .buckets
            .entry(channel.to_string())
            .or_insert((self.burst, now));
        *tokens = (*tokens + (now - *at).max(0) as f64 / 1000.0 * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Works the outbox at `now` (ms): each channel's due notifications in order, a failure
/// holding back the channel's later ones, as does the channel's rate limit in `pacer`.
pub async fn deliver(
    store: &dyn Store,
    channels: &HashMap<String, Arc<dyn Notifier>>,
    pacer: &mut Pacer,
    now: i64,
) -> Result<Report, StoreError> {
    let mut report = Report::default();
    let mut failed_channels = std::collections::HashSet::new();
    let mut held_channels = std::collections::HashSet::new();
    for e in store.due_notifications(now, 100).await? {
        if failed_channels.contains(&e.channel) || held_channels.contains(&e.channel) {
            // An earlier one of this channel failed just now, or it has sent its share: keep
            // the order.
            continue;
        }
        let Ok(n) = serde_json::from_str::<Notification>(&e.payload) else {
            store
                .notification_failed(
                    e.seq,
                    now + 86_400_000,
                    "the queued notification cannot be read",
                )
                .await?;
            continue;
        };
        let Some(notifier) = channels.get(&e.channel) else {
            store
                .notification_failed(
                    e.seq,
                    now + backoff_ms(e.attempts),
                    &format!("no channel `{}` is configured", e.channel),
                )
                .await?;
            failed_channels.insert(e.channel.clone());
            report
                .failed
                .insert(e.channel.clone(), "no such channel".into());
            continue;
        };
        if n.acknowledged_by.is_some() && !notifier.tells_acks() {
            // Nothing to tell this channel: done.
            store.notification_sent(e.seq, now).await?;
            continue;
        }
        if !pacer.take(&e.channel, now) {
            held_channels.insert(e.channel.clone());
            report.held += 1;
            continue;
        }
        match notifier.send(&n).await {
            Ok(()) => {
                store.notification_sent(e.seq, now).await?;
                report.delivered += 1;
                report.succeeded.insert(e.channel.clone());
            }
            Err(err) => {
                // A refusal (4xx) will not fix itself soon: try again at the slowest pace.
                let wait = if err.retryable {
                    backoff_ms(e.attempts)
                } else {
                    backoff_ms(9)
                };
                store
                    .notification_failed(e.seq, now + wait, &err.message)
                    .await?;
                failed_channels.insert(e.channel.clone());
                report.failed.insert(e.channel.clone(), err.message);
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::Pacer;

    #[test]
    fn a_channel_sends_a_burst_then_one_a_second_and_others_are_not_held() {
        let mut p = Pacer::default();
        let sent = (0..25).filter(|_| p.take("slack", 0)).count();
        assert_eq!(sent, 10);
        assert!(p.take("pager", 0), "another channel has its own bucket");
        assert!(!p.take("slack", 999));
        assert!(p.take("slack", 1000));
        assert!(!p.take("slack", 1000));
        // Idle for a minute: a full burst again, not sixty.
        let sent = (0..25).filter(|_| p.take("slack", 61_000)).count();
        assert_eq!(sent, 10);
    }
}
