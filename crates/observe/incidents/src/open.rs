//! Incidents opened by alerts: each alert history row that fires is either attached to the
//! open incident of its group, or opens one when its severity is one of `[incidents]
//! open_on` (default `P1`), or is left alone. The caller follows the alert history with a
//! cursor and creates what this decides through `Store::create_incident`, whose unique
//! `alert_event` makes a row open one incident however often it is read.

use slipway_store::{AlertEvent, IncidentRecord, NewIncidentEntry};

/// What to do with one alert row.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Open this incident (with this first log line).
    Open(Box<IncidentRecord>, NewIncidentEntry),
    /// Attach the alert to the open incident with this id (with this log line).
    Attach(i64, NewIncidentEntry),
    /// Nothing.
    Ignore,
}

/// The alert group of a row: its rule, environment, and the values of the routing's
/// `group_by` labels, as the alert router groups notifications.
pub fn group(row: &AlertEvent, group_by: &[String]) -> String {
    let labels = &row.event.labels;
    let mut key = format!(
        "{}{{environment={}",
        row.event.rule,
        labels["environment"].as_str().unwrap_or_default()
    );
    for l in group_by
        .iter()
        .filter(|l| *l != "alertname" && *l != "environment")
    {
        key.push_str(&format!(
            ",{l}={}",
            labels[l.as_str()].as_str().unwrap_or_default()
        ));
    }
    key.push('}');
    key
}

/// What one alert row does, given the open incidents, the severities that open one, the
/// routing's `group_by`, the alert's rendered summary (the incident's title) and the
/// channels it was routed to.
pub fn decide(
    row: &AlertEvent,
    open: &[IncidentRecord],
    open_on: &[String],
    group_by: &[String],
    summary: Option<&str>,
    channels: &[String],
) -> Decision {
    if row.event.status != "fired" {
        return Decision::Ignore;
    }
    let key = group(row, group_by);
    let environment = row.event.labels["environment"].as_str().map(str::to_string);
    let service = row.event.labels["service"].as_str().map(str::to_string);
    let line = |kind: &str, message: String| NewIncidentEntry {
        time_ms: row.event.time_ms,
        kind: kind.into(),
        actor: "system".into(),
        message,
        data: serde_json::json!({ "alert_event": row.id, "rule": row.event.rule }),
    };
    if let Some(i) = open
        .iter()
        .filter(|i| i.status != "resolved")
        .find(|i| i.group.as_deref() == Some(key.as_str()))
    {
        return Decision::Attach(
            i.id,
            line(
                "alert",
                format!("{} {} fired again", row.event.severity, row.event.rule),
            ),
        );
    }
    if !open_on.iter().any(|s| s == &row.event.severity) {
        return Decision::Ignore;
    }
    let title = summary.map(str::to_string).unwrap_or_else(|| {
        format!(
            "{}{}",
            row.event.rule,
            service
                .as_deref()
                .map(|s| format!(" on {s}"))
                .unwrap_or_default()
        )
    });
    let record = IncidentRecord {
        title,
        severity: row.event.severity.clone(),
        status: crate::Status::Triage.as_str().into(),
        environment,
        services: service.into_iter().collect(),
        channels: channels.to_vec(),
        opened_by: format!("alert:{}", row.event.rule),
        group: Some(key),
        alert_event: Some(row.id),
        opened_ms: row.event.time_ms,
        detected_ms: row.event.time_ms,
        ..Default::default()
    };
    let message = format!("opened by {} {} firing", row.event.severity, row.event.rule);
    Decision::Open(Box::new(record), line("opened", message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::tests::alert;

    fn p1() -> Vec<String> {
        vec!["P1".into()]
    }

    #[test]
    fn a_p1_alert_opens_an_incident_for_its_group_and_service() {
        let row = alert(10, 560_000, "fired", "api");
        let Decision::Open(i, line) =
            decide(&row, &[], &p1(), &[], Some("api 5xx"), &["pager".into()])
        else {
            panic!("opens")
        };
        assert_eq!(i.title, "api 5xx");
        assert_eq!(i.severity, "P1");
        assert_eq!(i.status, "triage");
        assert_eq!(i.environment.as_deref(), Some("production"));
        assert_eq!(i.services, ["api"]);
        assert_eq!(i.channels, ["pager"]);
        assert_eq!(i.alert_event, Some(10));
        assert_eq!(
            i.group.as_deref(),
            Some("api_errors{environment=production}")
        );
        assert_eq!(line.kind, "opened");
        assert_eq!(line.data["alert_event"], 10);
    }

    #[test]
    fn later_alerts_of_the_group_attach_and_the_rest_are_left_alone() {
        let first = alert(10, 560_000, "fired", "api");
        let Decision::Open(mut open, _) = decide(&first, &[], &p1(), &[], None, &[]) else {
            panic!("opens")
        };
        assert_eq!(open.title, "api_errors on api");
        open.id = 7;
        let again = alert(13, 900_000, "fired", "api");
        assert!(matches!(
            decide(&again, &[*open.clone()], &p1(), &[], None, &[]),
            Decision::Attach(7, _)
        ));
        // Resolutions, severities that do not open, and a resolved incident's group.
        assert_eq!(
            decide(
                &alert(14, 1, "resolved", "api"),
                &[*open.clone()],
                &p1(),
                &[],
                None,
                &[]
            ),
            Decision::Ignore
        );
        assert_eq!(
            decide(&again, &[], &["P2".into()], &[], None, &[]),
            Decision::Ignore
        );
        open.status = "resolved".into();
        assert!(matches!(
            decide(&again, &[*open], &p1(), &[], None, &[]),
            Decision::Open(..)
        ));
        // Grouped by service, another service's alert is another incident.
        let by = vec!["alertname".to_string(), "service".to_string()];
        assert_ne!(
            group(&alert(1, 0, "fired", "api"), &by),
            group(&alert(2, 0, "fired", "billing"), &by)
        );
    }
}
