//! An incident's timeline, filled by itself: what the store knew anyway, from `lookback`
//! before the incident opened until it was resolved, about its environment and services.
//!
//! - From the event log: deploys and rollbacks (started, switched, committed, rolled back,
//!   failed), configuration applied, flags, scaling, pipeline runs, annotations, and its
//!   services' instances crashing, failing checks and recovering.
//! - From the alert history: each alert of its environment and services that fired or
//!   resolved.
//! - From its own log: opening, status updates, assignments, resolution.
//!
//! [`suspect`] finds the deploy that most likely caused it (the last one to finish or start
//! within `suspect_window` before the first alert) and whether it was rolled back since.

use serde::Serialize;
use slipway_store::{AlertEvent, Event, IncidentEntry, IncidentRecord};

/// Where a line of the timeline comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The event log.
    Event,
    /// The alert history.
    Alert,
    /// The incident's own log.
    Incident,
}

/// A line of the timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Entry {
    /// When (ms).
    pub time_ms: i64,
    /// Where it comes from.
    pub source: Source,
    /// Its kind (`deploy.started`, `alert.fired`, `update`…).
    pub kind: String,
    /// One line.
    pub message: String,
}

/// Event kinds that belong on a timeline (prefixes end with a dot).
const KINDS: [&str; 14] = [
    "deploy.started",
    "deploy.switched",
    "deploy.committed",
    "deploy.succeeded",
    "deploy.rolling_back",
    "deploy.rolled_back",
    "deploy.failed",
    "deploy.promoted",
    "rollback.",
    "config.",
    "flag.",
    "scale.",
    "pipeline.",
    "annotation",
];

/// Kinds about one service's instances, kept when the service is the incident's.
const SERVICE_KINDS: [&str; 3] = ["instance.", "service.", "cron.failed"];

fn kind_matches(kind: &str, patterns: &[&str]) -> bool {
    patterns.iter().any(|p| {
        if p.ends_with('.') {
            kind.starts_with(p)
        } else {
            kind == *p
        }
    })
}

/// The span the timeline covers: `lookback` before the opening until the resolution (or now).
pub fn span(incident: &IncidentRecord, lookback_ms: i64, now_ms: i64) -> (i64, i64) {
    let from = incident.opened_ms.min(incident.detected_ms) - lookback_ms;
    (from, incident.resolved_ms.unwrap_or(now_ms))
}

fn same_environment(incident: &IncidentRecord, environment: Option<&str>) -> bool {
    match (&incident.environment, environment) {
        (Some(mine), Some(theirs)) => mine == theirs,
        // Events of no environment (an annotation of the whole project) belong to every one.
        _ => true,
    }
}

fn of_services(incident: &IncidentRecord, service: Option<&str>) -> bool {
    incident.services.is_empty()
        || service.is_some_and(|s| incident.services.iter().any(|m| m == s))
}

/// The service an event is about: its `service` datum (every event of a service's instances
/// has one), else its subject.
fn event_service(e: &Event) -> Option<&str> {
    e.data["service"].as_str().or(e.subject.as_deref())
}

/// The timeline of an incident from the events, alert rows and log lines read for its span.
pub fn assemble(
    incident: &IncidentRecord,
    events: &[Event],
    alerts: &[AlertEvent],
    log: &[IncidentEntry],
    (from, until): (i64, i64),
) -> Vec<Entry> {
    let within = |t: i64| t >= from && t <= until;
    let attached: Vec<i64> = log
        .iter()
        .filter_map(|l| l.entry.data["alert_event"].as_i64())
        .chain(incident.alert_event)
        .collect();
    let mut out: Vec<Entry> = Vec::new();
    for e in events {
        let t = e.time.as_millisecond();
        if !within(t) || !same_environment(incident, e.environment.as_deref()) {
            continue;
        }
        let keep = kind_matches(&e.kind, &KINDS)
            || (kind_matches(&e.kind, &SERVICE_KINDS) && of_services(incident, event_service(e)));
        if keep {
            out.push(Entry {
                time_ms: t,
                source: Source::Event,
                kind: e.kind.clone(),
                message: e.message.clone(),
            });
        }
    }
    for a in alerts {
        let labels = &a.event.labels;
        let ours = attached.contains(&a.id)
            || (same_environment(incident, labels["environment"].as_str())
                && of_services(incident, labels["service"].as_str()));
        if !within(a.event.time_ms) || !ours {
            continue;
        }
        let what: Vec<String> = ["service", "instance", "slo"]
            .iter()
            .filter_map(|k| labels[*k].as_str().map(|v| format!("{k}={v}")))
            .collect();
        let value = a
            .event
            .value
            .map(|v| format!(" (value {})", trim_number(v)))
            .unwrap_or_default();
        out.push(Entry {
            time_ms: a.event.time_ms,
            source: Source::Alert,
            kind: format!("alert.{}", a.event.status),
            message: format!(
                "{} {} {}{}{}",
                a.event.severity,
                a.event.rule,
                a.event.status,
                if what.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", what.join(", "))
                },
                value
            ),
        });
    }
    for l in log {
        // Alerts attached are on the timeline from the alert history already.
        if l.entry.kind == "alert" {
            continue;
        }
        out.push(Entry {
            time_ms: l.entry.time_ms,
            source: Source::Incident,
            kind: l.entry.kind.clone(),
            message: if l.entry.actor == "system" {
                l.entry.message.clone()
            } else {
                format!("{} ({})", l.entry.message, l.entry.actor)
            },
        });
    }
    // Stable: what happened at the same millisecond keeps the order it was written in.
    out.sort_by_key(|e| e.time_ms);
    out
}

fn trim_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// The deploy that likely caused an incident.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Suspect {
    /// The deployment.
    pub deployment: i64,
    /// The release it brought (`r14`).
    pub release: String,
    /// The release before it (`r13`).
    pub from: Option<String>,
    /// When it started (ms).
    pub started_ms: i64,
    /// When it was rolled back, if it was.
    pub rolled_back_ms: Option<i64>,
}

impl Suspect {
    /// The obvious mitigation, for people: the rollback it needs, or the one that happened.
    pub fn mitigation(&self, environment: Option<&str>, first_alert_ms: i64) -> String {
        let before = crate::human(first_alert_ms - self.started_ms);
        let env = environment
            .map(|e| format!(" --env {e}"))
            .unwrap_or_default();
        match (self.rolled_back_ms, &self.from) {
            (Some(t), _) => format!(
                "{} was deployed {before} before the first alert and was rolled back at {} UTC",
                self.release,
                crate::clock(t)
            ),
            (None, Some(from)) => format!(
                "{} was deployed {before} before the first alert: `slipway rollback{env} --to {from}`",
                self.release
            ),
            (None, None) => format!(
                "{} was deployed {before} before the first alert; it is the first release, so there is nothing to roll back to",
                self.release
            ),
        }
    }
}

/// The last deploy (not a rollback) of the incident's environment that started within
/// `window_ms` before `first_alert_ms`, and its rollback if one followed.
pub fn suspect(
    incident: &IncidentRecord,
    events: &[Event],
    first_alert_ms: i64,
    window_ms: i64,
) -> Option<Suspect> {
    let mut found: Option<Suspect> = None;
    for e in events {
        if !same_environment(incident, e.environment.as_deref()) {
            continue;
        }
        let t = e.time.as_millisecond();
        let deployment = e.data["deployment"].as_i64();
        match e.kind.as_str() {
            "deploy.started" if t <= first_alert_ms && first_alert_ms - t <= window_ms => {
                found = Some(Suspect {
                    deployment: deployment.unwrap_or_default(),
                    release: e.data["release"].as_str().unwrap_or_default().to_string(),
                    from: e.data["from"].as_str().map(str::to_string),
                    started_ms: t,
                    rolled_back_ms: None,
                });
            }
            "deploy.rolled_back" => {
                if let Some(s) = found.as_mut().filter(|s| Some(s.deployment) == deployment) {
                    s.rolled_back_ms.get_or_insert(t);
                }
            }
            // A rollback by hand away from the suspect's release.
            "rollback.started" => {
                if let Some(s) = found
                    .as_mut()
                    .filter(|s| e.data["from"].as_str() == Some(s.release.as_str()))
                {
                    s.rolled_back_ms.get_or_insert(t);
                }
            }
            _ => {}
        }
    }
    found
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;
    use slipway_store::{EventLevel, NewAlertEvent, NewIncidentEntry};

    pub(crate) fn event(id: i64, t: i64, kind: &str, data: serde_json::Value) -> Event {
        Event {
            id,
            time: jiff::Timestamp::from_millisecond(t).unwrap(),
            level: EventLevel::Info,
            kind: kind.into(),
            environment: Some("production".into()),
            subject: None,
            message: format!("{kind} message"),
            data,
        }
    }

    pub(crate) fn alert(id: i64, t: i64, status: &str, service: &str) -> AlertEvent {
        AlertEvent {
            id,
            event: NewAlertEvent {
                time_ms: t,
                rule: "api_errors".into(),
                status: status.into(),
                severity: "P1".into(),
                labels: json!({ "environment": "production", "service": service }),
                value: Some(0.25),
                actor: None,
            },
        }
    }

    pub(crate) fn incident() -> IncidentRecord {
        IncidentRecord {
            id: 1,
            title: "api 5xx".into(),
            severity: "P1".into(),
            status: "triage".into(),
            environment: Some("production".into()),
            services: vec!["api".into()],
            opened_by: "alert:api_errors".into(),
            alert_event: Some(10),
            opened_ms: 600_000,
            detected_ms: 600_000,
            ..Default::default()
        }
    }

    pub(crate) fn history() -> (Vec<Event>, Vec<AlertEvent>, Vec<IncidentEntry>) {
        let events = vec![
            event(
                1,
                10_000,
                "deploy.started",
                json!({"deployment": 3, "release": "r13", "from": "r12"}),
            ),
            event(
                2,
                200_000,
                "deploy.started",
                json!({"deployment": 4, "release": "r14", "from": "r13"}),
            ),
            event(
                3,
                230_000,
                "deploy.committed",
                json!({"deployment": 4, "release": "r14"}),
            ),
            event(4, 300_000, "deploy.analysis", json!({"deployment": 4})),
            event(
                5,
                650_000,
                "deploy.rolling_back",
                json!({"deployment": 4, "release": "r14"}),
            ),
            event(
                6,
                660_000,
                "deploy.rolled_back",
                json!({"deployment": 4, "release": "r14"}),
            ),
            event(7, 400_000, "instance.exited", json!({"service": "worker"})),
            event(8, 410_000, "instance.exited", json!({"service": "api"})),
        ];
        let alerts = vec![
            alert(10, 560_000, "fired", "api"),
            alert(11, 570_000, "fired", "billing"),
            alert(12, 700_000, "resolved", "api"),
        ];
        let log = vec![IncidentEntry {
            id: 1,
            incident: 1,
            entry: NewIncidentEntry {
                time_ms: 600_000,
                kind: "opened".into(),
                actor: "system".into(),
                message: "opened by api_errors".into(),
                data: json!({}),
            },
        }];
        (events, alerts, log)
    }

    #[test]
    fn the_timeline_keeps_the_incidents_environment_and_services_in_order() {
        let (events, alerts, log) = history();
        let i = incident();
        let t = assemble(&i, &events, &alerts, &log, span(&i, 3_600_000, 900_000));
        let kinds: Vec<&str> = t.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "deploy.started",
                "deploy.started",
                "deploy.committed",
                "instance.exited",
                "alert.fired",
                "opened",
                "deploy.rolling_back",
                "deploy.rolled_back",
                "alert.resolved"
            ],
            "no analysis noise, no other service's instances or alerts"
        );
        assert!(t.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));
        assert!(
            t[4].message.contains("P1 api_errors fired [service=api]"),
            "{:?}",
            t[4]
        );
    }

    #[test]
    fn the_span_reaches_back_and_stops_at_the_resolution() {
        let (events, alerts, log) = history();
        let mut i = incident();
        i.resolved_ms = Some(665_000);
        let t = assemble(&i, &events, &alerts, &log, span(&i, 300_000, 900_000));
        assert_eq!(
            t[0].kind, "instance.exited",
            "the deploys before the lookback are out"
        );
        assert!(
            t.iter().all(|e| (300_000..=665_000).contains(&e.time_ms)),
            "{t:?}"
        );
        assert!(!t.iter().any(|e| e.kind == "alert.resolved"));
    }

    #[test]
    fn the_deploy_before_the_first_alert_is_the_suspect_and_its_rollback_is_seen() {
        let (events, _, _) = history();
        let i = incident();
        let s = suspect(&i, &events, 560_000, 1_800_000).unwrap();
        assert_eq!(
            (s.release.as_str(), s.from.as_deref()),
            ("r14", Some("r13"))
        );
        assert_eq!(s.rolled_back_ms, Some(660_000));
        let m = s.mitigation(i.environment.as_deref(), 560_000);
        assert_eq!(
            m,
            "r14 was deployed 6m before the first alert and was rolled back at 00:11 UTC"
        );

        // Not rolled back yet: the command that does it.
        let s = suspect(&i, &events[..4], 560_000, 1_800_000).unwrap();
        assert_eq!(
            s.mitigation(Some("production"), 560_000),
            "r14 was deployed 6m before the first alert: `slipway rollback --env production --to r13`"
        );
        // Too long before: no suspect.
        assert_eq!(suspect(&i, &events, 560_000, 60_000), None);
    }
}
