//! From alert transitions to notifications, as Alertmanager's dispatcher does it and simpler
//! to configure: each alert goes to its channels; per channel, alerts are grouped by
//! `group_by` labels (by default `alertname`: a hundred instances breaching one rule are one
//! notification); a new group waits `group_wait` for its siblings (0 for P1), then notifies;
//! later changes are batched every `group_interval`; an unchanged firing group is repeated
//! every `repeat_interval` (P1 every 15 minutes until acknowledged, P4 never).
//!
//! Beyond Alertmanager: an alert that resolves and fires again within `repeat_interval` of
//! its last page does not page again on its own (flapping never pages twice); an
//! acknowledged group stops repeating until it resolves; a firing P1 alert mutes the lower
//! alerts of the same service (inhibition); silences mute what their matchers match until
//! they end. The router is plain data, saved and restored whole.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use slipway_spec::model::Severity;

use crate::notify::{AlertItem, Notification, Status};

/// How a severity's groups are timed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Wait before a new group's first notification, for its siblings.
    pub group_wait: Duration,
    /// Least time between two notifications of a group that changed.
    pub group_interval: Duration,
    /// Repeat an unchanged firing group this often (None: never).
    pub repeat_interval: Option<Duration>,
}

impl Timing {
    /// Seed 000's response times as defaults: P1 and P2 go at once, P1 repeats every 15 min
    /// until acknowledged, P2 every hour, P3 every 4 h, P4 never.
    pub fn default_for(severity: Severity) -> Timing {
        let (wait, interval, repeat) = match severity {
            Severity::P1 => (0, 30, Some(15 * 60)),
            Severity::P2 => (0, 60, Some(3600)),
            Severity::P3 => (10, 300, Some(4 * 3600)),
            Severity::P4 => (60, 1800, None),
        };
        Timing {
            group_wait: Duration::from_secs(wait),
            group_interval: Duration::from_secs(interval),
            repeat_interval: repeat.map(Duration::from_secs),
        }
    }
}

/// How groups are made and timed: the labels they are made by, each severity's timing, and
/// the maintenance windows that mute alerts on a schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    /// The labels a group is made by.
    pub group_by: Vec<String>,
    /// P1's to P4's timing.
    pub timings: [Timing; 4],
    /// Recurring maintenance windows.
    pub maintenance: Vec<Window>,
}

impl Default for Routing {
    fn default() -> Routing {
        Routing {
            group_by: vec!["alertname".into()],
            timings: Severity::ALL.map(Timing::default_for),
            maintenance: Vec::new(),
        }
    }
}

/// A maintenance window: a silence opening on a schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    /// Its name (`[alerting.maintenance.NAME]`).
    pub name: String,
    /// When it opens.
    pub schedule: croner::Cron,
    /// The schedule's time zone.
    pub timezone: jiff::tz::TimeZone,
    /// How long it stays open (ms).
    pub duration_ms: i64,
    /// What it mutes (none: everything).
    pub matchers: Vec<Matcher>,
    /// Why.
    pub comment: String,
}

impl Window {
    /// The silence it is at `now` (ms), if it is open: opened by the first occurrence after
    /// `now - duration`, if that is not later than `now`.
    pub fn open_at(&self, now: i64) -> Option<Silence> {
        let from = jiff::Timestamp::from_millisecond(now - self.duration_ms)
            .ok()?
            .to_zoned(self.timezone.clone());
        let opened = self
            .schedule
            .find_next_occurrence(&from, false)
            .ok()?
            .timestamp()
            .as_millisecond();
        (opened <= now).then(|| Silence {
            id: format!("maintenance:{}", self.name),
            matchers: self.matchers.clone(),
            starts_at: opened,
            ends_at: opened + self.duration_ms,
            created_by: "slipway.toml".into(),
            comment: self.comment.clone(),
        })
    }
}

impl Routing {
    /// `severity`'s timing.
    pub fn timing(&self, severity: Severity) -> Timing {
        self.timings[severity as usize]
    }

    /// The silences the maintenance windows open at `now`.
    pub fn windows_open(&self, now: i64) -> Vec<Silence> {
        self.maintenance
            .iter()
            .filter_map(|w| w.open_at(now))
            .collect()
    }

    /// The routing `[alerting]` asks for: its `group_by`, each severity's timing (what it
    /// leaves out at its default) and its maintenance windows; what cannot be read is named
    /// in `problems` and left out.
    pub fn from_spec(a: &slipway_spec::model::Alerting, problems: &mut Vec<String>) -> Routing {
        let mut r = Routing::default();
        for (name, m) in &a.maintenance {
            let schedule = match m.schedule.parse::<croner::Cron>() {
                Ok(c) => c,
                Err(e) => {
                    problems.push(format!("maintenance window `{name}`: {e}"));
                    continue;
                }
            };
            let timezone = match jiff::tz::TimeZone::get(m.timezone.as_deref().unwrap_or("UTC")) {
                Ok(tz) => tz,
                Err(e) => {
                    problems.push(format!("maintenance window `{name}`: {e}"));
                    continue;
                }
            };
            let matchers: Result<Vec<Matcher>, String> =
                m.matchers.iter().map(|t| Matcher::parse(t)).collect();
            match matchers {
                Ok(matchers) => r.maintenance.push(Window {
                    name: name.clone(),
                    schedule,
                    timezone,
                    duration_ms: i64::try_from(m.duration.std().as_millis())
                        .unwrap_or(i64::MAX / 4),
                    matchers,
                    comment: m
                        .comment
                        .clone()
                        .unwrap_or_else(|| format!("maintenance window `{name}`")),
                }),
                Err(e) => problems.push(format!("maintenance window `{name}`: {e}")),
            }
        }
        if let Some(g) = &a.group_by {
            r.group_by = g.clone();
        }
        for s in Severity::ALL {
            if let Some(t) = a.timing(s) {
                let slot = &mut r.timings[s as usize];
                if let Some(w) = t.group_wait {
                    slot.group_wait = w.0;
                }
                if let Some(i) = t.group_interval {
                    slot.group_interval = i.0;
                }
                if let Some(rep) = t.repeat_interval {
                    slot.repeat_interval = rep.0;
                }
            }
        }
        r
    }
}

pub use slipway_spec::matcher::Matcher;

/// A silence: what it mutes, until when, who set it and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// Its id.
    pub id: String,
    /// All must match.
    pub matchers: Vec<Matcher>,
    /// When it starts (ms).
    pub starts_at: i64,
    /// When it ends (ms).
    pub ends_at: i64,
    /// Who set it.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

impl Silence {
    /// Whether it mutes these labels at `now`.
    pub fn mutes(&self, labels: &[(String, String)], now: i64) -> bool {
        self.starts_at <= now
            && now < self.ends_at
            && self.matchers.iter().all(|m| m.matches(labels))
    }
}

/// An alert entering the router: a transition of one rule's alert, with the channels it goes
/// to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Routed {
    /// The alert (status, labels, annotations, times).
    pub alert: AlertItem,
    /// Its channels.
    pub channels: Vec<String>,
    /// Its severity.
    pub severity: Severity,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Group {
    channel: String,
    severity: Option<Severity>,
    labels: Vec<(String, String)>,
    /// By fingerprint.
    alerts: BTreeMap<String, AlertItem>,
    created_ms: i64,
    last_sent_ms: Option<i64>,
    /// Fingerprints firing in the last notification.
    sent_firing: BTreeSet<String>,
    /// Something changed since the last notification (new alert, resolution).
    dirty: bool,
    /// Notifications sent so far (part of each one's id).
    sent: u64,
    acked_by: Option<String>,
}

impl Group {
    /// A notification of `alerts` (firing if any is).
    fn notification(
        &self,
        id: String,
        key: &str,
        alerts: Vec<AlertItem>,
        external_url: &str,
        reason: &str,
    ) -> Notification {
        let common = |pick: fn(&AlertItem) -> &Vec<(String, String)>| -> Vec<(String, String)> {
            let Some(first) = alerts.first() else {
                return Vec::new();
            };
            pick(first)
                .iter()
                .filter(|kv| alerts.iter().all(|a| pick(a).contains(kv)))
                .cloned()
                .collect()
        };
        Notification {
            id,
            group_key: key.to_string(),
            receiver: self.channel.clone(),
            status: if alerts.iter().any(|a| a.status == Status::Firing) {
                Status::Firing
            } else {
                Status::Resolved
            },
            group_labels: self.labels.clone(),
            common_labels: common(|a| &a.labels),
            common_annotations: common(|a| &a.annotations),
            alerts,
            external_url: external_url.to_string(),
            reason: reason.to_string(),
            acknowledged_by: None,
        }
    }
}

/// The router: groups, and when each fingerprint last paged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Router {
    groups: BTreeMap<String, Group>,
    /// Fingerprint → channel → when it last went out firing (ms).
    paged: BTreeMap<String, BTreeMap<String, i64>>,
}

/// What the router needs to know of the configuration.
pub struct Config<'a> {
    /// Group alerts by these labels (default `alertname`).
    pub group_by: &'a [String],
    /// Timing per severity.
    pub timing: &'a dyn Fn(Severity) -> Timing,
    /// Active silences.
    pub silences: &'a [Silence],
    /// Where the control plane is reached.
    pub external_url: &'a str,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Router {
    /// Takes an alert transition in.
    pub fn ingest(&mut self, routed: &Routed, group_by: &[String], now: i64) {
        let fp = routed.alert.fingerprint();
        for channel in &routed.channels {
            let labels: Vec<(String, String)> = group_by
                .iter()
                .filter_map(|g| routed.alert.label(g).map(|v| (g.clone(), v.to_string())))
                .collect();
            let key = format!(
                "{channel}:{{{}}}",
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v:?}"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let g = self.groups.entry(key).or_insert_with(|| Group {
                channel: channel.clone(),
                labels,
                created_ms: now,
                ..Group::default()
            });
            g.severity = Some(
                g.severity
                    .map_or(routed.severity, |s| s.min(routed.severity)),
            );
            let known = g.alerts.get(&fp).map(|a| a.status);
            match routed.alert.status {
                Status::Firing => {
                    if known != Some(Status::Firing) {
                        g.dirty = true;
                    }
                }
                Status::Resolved => {
                    if known.is_none() {
                        // Never seen firing here (it resolved before the router knew it).
                        continue;
                    }
                    g.dirty = true;
                }
            }
            g.alerts.insert(fp.clone(), routed.alert.clone());
        }
    }

    /// Acknowledges the groups holding an alert matching all of `matchers`: they stop
    /// repeating until they resolve. Returns how many, and for those already notified an
    /// acknowledgement to tell their channel (PagerDuty acknowledges its incident, a chat
    /// says who took it); one per group and notification, however often it is acked.
    pub fn ack(
        &mut self,
        matchers: &[Matcher],
        by: &str,
        external_url: &str,
    ) -> (usize, Vec<Notification>) {
        let mut n = 0;
        let mut told = Vec::new();
        for (key, g) in &mut self.groups {
            if g.alerts.values().any(|a| {
                a.status == Status::Firing && matchers.iter().all(|m| m.matches(&a.labels))
            }) {
                g.acked_by = Some(by.to_string());
                n += 1;
                if g.last_sent_ms.is_some() {
                    let alerts: Vec<AlertItem> = g
                        .alerts
                        .values()
                        .filter(|a| a.status == Status::Firing)
                        .cloned()
                        .collect();
                    let mut note = g.notification(
                        format!("{key}#{}-ack", g.sent),
                        key,
                        alerts,
                        external_url,
                        "acknowledged",
                    );
                    note.acknowledged_by = Some(by.to_string());
                    told.push(note);
                }
            }
        }
        (n, told)
    }

    /// The notifications due at `now`, the router's state moved on as if they were sent
    /// (the caller writes them to the outbox in the same step as it saves the router).
    pub fn due(&mut self, cfg: &Config<'_>, now: i64) -> Vec<Notification> {
        // Firing P1 alerts mute lower ones of the same service.
        let p1_services: BTreeSet<String> = self
            .groups
            .values()
            .flat_map(|g| g.alerts.values())
            .filter(|a| a.status == Status::Firing && a.label("severity") == Some("P1"))
            .filter_map(|a| a.label("service").map(str::to_string))
            .collect();
        let muted = |a: &AlertItem| -> bool {
            cfg.silences.iter().any(|s| s.mutes(&a.labels, now))
                || (a.label("severity") != Some("P1")
                    && a.label("service").is_some_and(|s| p1_services.contains(s)))
        };
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (key, g) in &mut self.groups {
            let timing = (cfg.timing)(g.severity.unwrap_or_default());
            let visible: Vec<&AlertItem> = g.alerts.values().filter(|a| !muted(a)).collect();
            let firing: BTreeSet<String> = visible
                .iter()
                .filter(|a| a.status == Status::Firing)
                .map(|a| a.fingerprint())
                .collect();
            // A fingerprint that paged on this channel within the flap window (the repeat
            // interval, or an hour for a severity that never repeats) does not page again on
            // its own.
            let window = ms(timing.repeat_interval.unwrap_or(Duration::from_secs(3600)));
            let paged = &self.paged;
            let channel = g.channel.clone();
            let repaged = |fp: &String| {
                paged
                    .get(fp)
                    .and_then(|c| c.get(&channel))
                    .is_some_and(|t| now - t < window)
            };
            let reason = match g.last_sent_ms {
                None => {
                    if now - g.created_ms < ms(timing.group_wait) {
                        continue;
                    }
                    // Everything resolved (or muted) before the first word, or only flapping
                    // alerts that paged lately: nothing to say (yet).
                    firing
                        .iter()
                        .any(|fp| !repaged(fp))
                        .then_some("first notification")
                }
                Some(last) => {
                    let resolved_now = g.sent_firing.iter().any(|fp| !firing.contains(fp));
                    let new = firing
                        .iter()
                        .any(|fp| !g.sent_firing.contains(fp) && !repaged(fp));
                    if g.dirty && (new || resolved_now) && now - last >= ms(timing.group_interval) {
                        Some(if new {
                            "new alerts added"
                        } else if firing.is_empty() {
                            "all alerts resolved"
                        } else {
                            "some alerts resolved"
                        })
                    } else if !firing.is_empty()
                        && g.acked_by.is_none()
                        && timing.repeat_interval.is_some_and(|r| now - last >= ms(r))
                    {
                        Some("repeat interval elapsed")
                    } else {
                        None
                    }
                }
            };
            if let Some(reason) = reason {
                let alerts: Vec<AlertItem> = visible
                    .iter()
                    .filter(|a| {
                        a.status == Status::Firing || g.sent_firing.contains(&a.fingerprint())
                    })
                    .map(|a| (*a).clone())
                    .collect();
                g.sent += 1;
                out.push(g.notification(
                    format!("{key}#{}", g.sent),
                    key,
                    alerts,
                    cfg.external_url,
                    reason,
                ));
                for fp in &firing {
                    self.paged
                        .entry(fp.clone())
                        .or_default()
                        .insert(g.channel.clone(), now);
                }
                g.last_sent_ms = Some(now);
                g.sent_firing = firing.clone();
                g.dirty = false;
            }
            // Resolved alerts that have been told (or were never told) leave the group.
            let told = g.last_sent_ms.is_some();
            g.alerts
                .retain(|fp, a| a.status == Status::Firing || (told && g.sent_firing.contains(fp)));
            if g.alerts.is_empty() {
                gone.push(key.clone());
            }
            if firing.is_empty() {
                g.acked_by = None;
            }
        }
        for key in gone {
            self.groups.remove(&key);
        }
        // Forget pages older than a day (the longest repeat worth remembering).
        self.paged.retain(|_, c| {
            c.retain(|_, t| now - *t < 86_400_000);
            !c.is_empty()
        });
        out
    }

    /// The groups holding firing alerts, for `slipway alerts`: key, channel, firing count,
    /// who acknowledged it.
    pub fn groups(&self) -> Vec<(String, String, usize, Option<String>)> {
        self.groups
            .iter()
            .map(|(k, g)| {
                (
                    k.clone(),
                    g.channel.clone(),
                    g.alerts
                        .values()
                        .filter(|a| a.status == Status::Firing)
                        .count(),
                    g.acked_by.clone(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(
        alertname: &str,
        instance: usize,
        service: &str,
        severity: Severity,
        status: Status,
    ) -> Routed {
        Routed {
            alert: AlertItem {
                status,
                labels: vec![
                    ("alertname".into(), alertname.into()),
                    ("instance".into(), format!("i{instance}")),
                    ("service".into(), service.into()),
                    ("severity".into(), severity.as_str().into()),
                ],
                annotations: vec![],
                starts_at: 0,
                ends_at: None,
                generator_url: String::new(),
            },
            channels: vec!["hook".into()],
            severity,
        }
    }

    struct Env {
        group_by: Vec<String>,
        silences: Vec<Silence>,
    }

    impl Env {
        fn new() -> Env {
            Env {
                group_by: vec!["alertname".into()],
                silences: vec![],
            }
        }

        fn due(&self, r: &mut Router, now: i64) -> Vec<Notification> {
            let timing = |s: Severity| Timing::default_for(s);
            r.due(
                &Config {
                    group_by: &self.group_by,
                    timing: &timing,
                    silences: &self.silences,
                    external_url: "",
                },
                now,
            )
        }
    }

    #[test]
    fn a_hundred_instances_breaching_one_rule_are_one_notification() {
        let env = Env::new();
        let mut r = Router::default();
        for i in 0..100 {
            r.ingest(
                &item("api_errors", i, "api", Severity::P3, Status::Firing),
                &env.group_by,
                1000,
            );
        }
        // P3 waits 10 s for siblings.
        assert!(env.due(&mut r, 5_000).is_empty());
        let n = env.due(&mut r, 11_000);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].alerts.len(), 100);
        assert_eq!(n[0].reason, "first notification");
        assert_eq!(
            n[0].group_labels,
            [("alertname".to_string(), "api_errors".to_string())]
        );
        assert!(
            n[0].common_labels
                .contains(&("service".into(), "api".into()))
        );
        assert!(!n[0].common_labels.iter().any(|(k, _)| k == "instance"));
        // Nothing more until something changes or the repeat interval passes.
        assert!(env.due(&mut r, 60_000).is_empty());
    }

    #[test]
    fn p1_goes_at_once_repeats_every_15_minutes_until_acknowledged() {
        let env = Env::new();
        let mut r = Router::default();
        r.ingest(
            &item("api_down", 0, "api", Severity::P1, Status::Firing),
            &env.group_by,
            0,
        );
        assert_eq!(env.due(&mut r, 0).len(), 1);
        assert!(env.due(&mut r, 899_000).is_empty());
        let n = env.due(&mut r, 900_000);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].reason, "repeat interval elapsed");
        assert_ne!(n[0].id, "hook:{alertname=\"api_down\"}#1");
        let api_down = [Matcher::parse("alertname=api_down").unwrap()];
        let (n, told) = r.ack(&api_down, "ana", "http://slipway");
        assert_eq!(n, 1);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].acknowledged_by.as_deref(), Some("ana"));
        assert_eq!(told[0].reason, "acknowledged");
        // Told once per notified group: acked again, the same key (the outbox skips it).
        let (_, again) = r.ack(&api_down, "ana", "http://slipway");
        assert_eq!(again[0].id, told[0].id);
        assert!(env.due(&mut r, 1_800_000).is_empty());
        // Resolved: told once, and the group (and its ack) is gone.
        r.ingest(
            &item("api_down", 0, "api", Severity::P1, Status::Resolved),
            &env.group_by,
            1_900_000,
        );
        let n = env.due(&mut r, 1_900_000);
        assert_eq!(
            (n.len(), n[0].status, n[0].reason.as_str()),
            (1, Status::Resolved, "all alerts resolved")
        );
        assert!(r.groups().is_empty());
    }

    #[test]
    fn an_alert_resolved_within_group_wait_says_nothing() {
        let env = Env::new();
        let mut r = Router::default();
        r.ingest(
            &item("slow", 0, "api", Severity::P3, Status::Firing),
            &env.group_by,
            0,
        );
        r.ingest(
            &item("slow", 0, "api", Severity::P3, Status::Resolved),
            &env.group_by,
            3_000,
        );
        assert!(env.due(&mut r, 20_000).is_empty());
        assert!(r.groups().is_empty());
    }

    #[test]
    fn flapping_never_pages_twice_within_the_repeat_interval() {
        let env = Env::new();
        let mut r = Router::default();
        let mut pages = 0;
        // Fires and resolves every two minutes for an hour (P2 repeats hourly).
        for k in 0..30i64 {
            let t = k * 120_000;
            r.ingest(
                &item("errors", 0, "api", Severity::P2, Status::Firing),
                &env.group_by,
                t,
            );
            pages += env
                .due(&mut r, t)
                .iter()
                .filter(|n| n.status == Status::Firing)
                .count();
            r.ingest(
                &item("errors", 0, "api", Severity::P2, Status::Resolved),
                &env.group_by,
                t + 60_000,
            );
            pages += env
                .due(&mut r, t + 60_000)
                .iter()
                .filter(|n| n.status == Status::Firing)
                .count();
        }
        assert_eq!(pages, 1);
    }

    #[test]
    fn a_firing_p1_mutes_the_lower_alerts_of_its_service_and_silences_mute_what_they_match() {
        let mut env = Env::new();
        let mut r = Router::default();
        r.ingest(
            &item("api_down", 0, "api", Severity::P1, Status::Firing),
            &env.group_by,
            0,
        );
        r.ingest(
            &item("errors", 0, "api", Severity::P2, Status::Firing),
            &env.group_by,
            0,
        );
        r.ingest(
            &item("errors", 1, "web", Severity::P2, Status::Firing),
            &env.group_by,
            0,
        );
        let n = env.due(&mut r, 0);
        let names: Vec<(String, usize)> = n
            .iter()
            .map(|n| (n.group_key.clone(), n.alerts.len()))
            .collect();
        assert_eq!(
            names,
            [
                ("hook:{alertname=\"api_down\"}".to_string(), 1),
                ("hook:{alertname=\"errors\"}".to_string(), 1)
            ]
        );
        let errors = n.iter().find(|n| n.group_key.contains("errors")).unwrap();
        assert_eq!(errors.alerts[0].label("service"), Some("web"));
        // A silence on web: a new web alert stays quiet until it ends.
        env.silences.push(Silence {
            id: "s1".into(),
            matchers: vec![Matcher::parse("service=web").unwrap()],
            starts_at: 0,
            ends_at: 600_000,
            created_by: "ana".into(),
            comment: "migration".into(),
        });
        r.ingest(
            &item("disk", 2, "web", Severity::P2, Status::Firing),
            &env.group_by,
            1_000,
        );
        assert!(env.due(&mut r, 100_000).is_empty());
        let n = env.due(&mut r, 600_000);
        assert_eq!(n.len(), 1, "{n:?}");
        assert!(n[0].group_key.contains("disk"));
    }

    #[test]
    fn matchers_parse_like_alertmanagers() {
        let m = Matcher::parse("service=~\"web|api\"").unwrap();
        assert!(m.regex && !m.negative && m.value == "web|api");
        assert!(m.matches(&[("service".into(), "api".into())]));
        assert!(!m.matches(&[("service".into(), "apis".into())]));
        let m = Matcher::parse("env!=prod").unwrap();
        assert!(m.matches(&[]) && !m.matches(&[("env".into(), "prod".into())]));
        assert!(Matcher::parse("nothing").is_err());
        assert!(Matcher::parse("a=~(").is_err());
        assert_eq!(Matcher::parse("a!~b").unwrap().to_string(), "a!~\"b\"");
    }
}

#[cfg(test)]
mod routing_tests {
    use super::*;

    #[test]
    fn alerting_settings_override_only_what_they_name() {
        let a: slipway_spec::model::Alerting = toml::from_str(
            r#"
group_by = ["alertname", "service"]
[P1]
repeat_interval = "5m"
[P4]
group_wait = "0s"
repeat_interval = "never"
[P3]
repeat_interval = "1d"
"#,
        )
        .unwrap();
        let r = Routing::from_spec(&a, &mut Vec::new());
        assert_eq!(r.group_by, ["alertname", "service"]);
        let p1 = r.timing(Severity::P1);
        assert_eq!(p1.repeat_interval, Some(Duration::from_secs(300)));
        assert_eq!(p1.group_interval, Duration::from_secs(30), "kept");
        assert_eq!(r.timing(Severity::P2), Timing::default_for(Severity::P2));
        assert_eq!(
            r.timing(Severity::P3).repeat_interval,
            Some(Duration::from_secs(86_400))
        );
        let p4 = r.timing(Severity::P4);
        assert_eq!(p4.group_wait, Duration::ZERO);
        assert_eq!(p4.repeat_interval, None);
        let e = toml::from_str::<slipway_spec::model::Alerting>(
            "[P2]\nrepeat_interval = \"sometimes\"",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("never"), "{e}");
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;

    #[test]
    fn a_maintenance_window_mutes_only_while_open_in_its_time_zone() {
        let a: slipway_spec::model::Alerting = toml::from_str(
            r#"
[maintenance.backups]
schedule = "0 2 * * SUN"
duration = "2h"
timezone = "Europe/Berlin"
matchers = ["service=db"]
"#,
        )
        .unwrap();
        let mut problems = Vec::new();
        let r = Routing::from_spec(&a, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_millisecond();
        // Sunday 2026-12-06, 02:00 in Berlin is 01:00 UTC.
        for (t, open) in [
            ("2026-12-06T00:59:59Z", false),
            ("2026-12-06T01:00:00Z", true),
            ("2026-12-06T02:59:59Z", true),
            ("2026-12-06T03:00:00Z", false),
            ("2026-12-09T01:30:00Z", false),
            ("2026-12-13T01:30:00Z", true),
        ] {
            let s = r.windows_open(at(t));
            assert_eq!(s.len(), usize::from(open), "{t}: {s:?}");
            if let Some(s) = s.first() {
                assert_eq!(s.id, "maintenance:backups");
                assert_eq!(s.ends_at - s.starts_at, 2 * 3_600_000);
                let db = [("service".to_string(), "db".to_string())];
                let web = [("service".to_string(), "web".to_string())];
                assert!(s.mutes(&db, at(t)) && !s.mutes(&web, at(t)));
            }
        }
        // What cannot be read is named, and left out.
        let bad: slipway_spec::model::Alerting = toml::from_str(
            "[maintenance.x]\nschedule = \"every sunday\"\nduration = \"1h\"\n[maintenance.y]\nschedule = \"0 2 * * *\"\nduration = \"1h\"\nmatchers = [\"service\"]",
        )
        .unwrap();
        let mut problems = Vec::new();
        assert!(
            Routing::from_spec(&bad, &mut problems)
                .maintenance
                .is_empty()
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
