//! The postmortem in seed 000's template (date, duration, severity, impact, timeline in
//! `HH:MM`, root cause, what went well and poorly, action items with owner and due date):
//! every section that can be measured is filled, the judgement sections are left for people
//! with a prompt of what to write.

use std::fmt::Write;

use serde::Serialize;
use slipway_store::{ActionRecord, IncidentRecord};

use crate::timeline::{Entry, Suspect};
use crate::{clock, human};

/// What was measured of an incident's impact (by the caller, from the metrics back-end).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Impact {
    /// Requests to its services while it lasted.
    pub requests: Option<f64>,
    /// Of those, the ones that failed (5xx).
    pub failed: Option<f64>,
    /// Per SLO of its services, the share of the error budget it spent (`0.42`).
    pub budget_spent: Vec<(String, f64)>,
}

/// Everything the postmortem is written from.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// The incident.
    pub incident: &'a IncidentRecord,
    /// Its timeline.
    pub timeline: &'a [Entry],
    /// The deploy that likely caused it.
    pub suspect: Option<&'a Suspect>,
    /// Its measured impact.
    pub impact: &'a Impact,
    /// Its action items.
    pub actions: &'a [ActionRecord],
    /// When it is written (ms), for an incident still open.
    pub now_ms: i64,
}

/// When each phase ended, measured from the timeline and the record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Times {
    /// Impact began: the suspected deploy, else the detection.
    pub started_ms: i64,
    /// The first alert (or the opening).
    pub detected_ms: i64,
    /// The first mitigation: a rollback, or status `monitoring`.
    pub mitigated_ms: Option<i64>,
    /// The resolution.
    pub resolved_ms: Option<i64>,
}

impl Times {
    /// The phases of an incident.
    pub fn of(incident: &IncidentRecord, suspect: Option<&Suspect>) -> Times {
        let rollback = suspect.and_then(|s| s.rolled_back_ms);
        let mitigated = match (incident.mitigated_ms, rollback) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Times {
            started_ms: suspect.map_or(incident.detected_ms, |s| s.started_ms),
            detected_ms: incident.detected_ms,
            mitigated_ms: mitigated,
            resolved_ms: incident.resolved_ms,
        }
    }
}

fn date(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// The postmortem as Markdown.
pub fn render(input: &Input<'_>) -> String {
    let i = input.incident;
    let times = Times::of(i, input.suspect);
    let end = times.resolved_ms.unwrap_or(input.now_ms);
    let mut md = String::new();
    let _ = writeln!(md, "# Postmortem: {} (incident {})\n", i.title, i.id);
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| Date | {} |", date(i.opened_ms));
    let _ = writeln!(
        md,
        "| Duration | {}{} |",
        human(end - times.started_ms),
        if times.resolved_ms.is_none() {
            " (still open)"
        } else {
            ""
        }
    );
    let _ = writeln!(md, "| Severity | {} |", i.severity);
    let _ = writeln!(md, "| Status | {} |", i.status);
    if let Some(env) = &i.environment {
        let _ = writeln!(md, "| Environment | {env} |");
    }
    if !i.services.is_empty() {
        let _ = writeln!(md, "| Services | {} |", i.services.join(", "));
    }
    let _ = writeln!(
        md,
        "| Commander | {} |",
        i.commander.as_deref().unwrap_or("(none named)")
    );
    for (role, who) in &i.roles {
        let _ = writeln!(md, "| {role} | {who} |");
    }
    let _ = writeln!(md, "| Opened by | {} |", i.opened_by);
    let _ = writeln!(
        md,
        "| Time to detect | {} |",
        human(times.detected_ms - times.started_ms)
    );
    let _ = writeln!(
        md,
        "| Time to mitigate | {} |",
        times
            .mitigated_ms
            .map_or("not mitigated yet".into(), |m| human(m - times.detected_ms))
    );
    let _ = writeln!(
        md,
        "| Time to resolve | {} |",
        times
            .resolved_ms
            .map_or("not resolved yet".into(), |r| human(r - times.detected_ms))
    );

    let _ = writeln!(md, "\n## Impact\n");
    let imp = input.impact;
    match (imp.requests, imp.failed) {
        (Some(total), Some(failed)) if total > 0.0 => {
            let _ = writeln!(
                md,
                "- {failed:.0} of {total:.0} requests failed ({:.2}%).",
                failed / total * 100.0
            );
        }
        (Some(_), Some(failed)) => {
            let _ = writeln!(md, "- {failed:.0} requests failed.");
        }
        _ => {
            let _ = writeln!(md, "- No request metrics for its services.");
        }
    }
    for (slo, share) in &imp.budget_spent {
        let _ = writeln!(
            md,
            "- SLO `{slo}`: {:.1}% of the error budget spent.",
            share * 100.0
        );
    }
    let _ = writeln!(md, "- _Who was affected (users, tenants, revenue)?_");

    let _ = writeln!(md, "\n## Timeline (UTC)\n");
    for e in input.timeline {
        let _ = writeln!(md, "- {} {} — {}", clock(e.time_ms), e.kind, e.message);
    }

    let _ = writeln!(md, "\n## Root cause\n");
    match input.suspect {
        Some(s) => {
            let _ = writeln!(
                md,
                "Likely trigger: {}.\n\n_Why did it fail, and why did the checks before it not catch it?_",
                s.mitigation(i.environment.as_deref(), times.detected_ms)
            );
        }
        None => {
            let _ = writeln!(md, "_What caused it? (no deploy preceded the first alert)_");
        }
    }
    let _ = writeln!(md, "\n## What went well\n\n- _…_");
    let _ = writeln!(md, "\n## What went poorly\n\n- _…_");
    let _ = writeln!(md, "\n## Action items\n");
    if input.actions.is_empty() {
        let _ = writeln!(
            md,
            "None yet: `slipway incident action add {} \"…\" --owner NAME --due YYYY-MM-DD`.",
            i.id
        );
    } else {
        let _ = writeln!(md, "| | Action | Owner | Due |\n|---|---|---|---|");
        for a in input.actions {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                if a.done_ms.is_some() { "[x]" } else { "[ ]" },
                a.text,
                a.owner.as_deref().unwrap_or("—"),
                a.due.as_deref().unwrap_or("—")
            );
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::{assemble, span, suspect};

    #[test]
    fn the_postmortem_has_the_measured_sections_filled() {
        let (events, alerts, log) = crate::timeline::tests::history();
        let mut i = crate::timeline::tests::incident();
        i.detected_ms = 560_000;
        i.resolved_ms = Some(900_000);
        i.status = "resolved".into();
        i.commander = Some("ann".into());
        let t = assemble(&i, &events, &alerts, &log, span(&i, 3_600_000, 900_000));
        let s = suspect(&i, &events, 560_000, 1_800_000);
        let actions = vec![ActionRecord {
            id: 1,
            incident: 1,
            text: "canary the error rate".into(),
            owner: Some("bob".into()),
            due: Some("2026-12-31".into()),
            created_ms: 0,
            done_ms: None,
        }];
        let md = render(&Input {
            incident: &i,
            timeline: &t,
            suspect: s.as_ref(),
            impact: &Impact {
                requests: Some(10_000.0),
                failed: Some(250.0),
                budget_spent: vec![("api-availability".into(), 0.42)],
            },
            actions: &actions,
            now_ms: 900_000,
        });
        for needle in [
            "# Postmortem: api 5xx (incident 1)",
            "| Date | 1970-01-01 00:10 UTC |",
            "| Duration | 11m 40s |",
            "| Severity | P1 |",
            "| Commander | ann |",
            "| Time to detect | 6m |",
            "| Time to mitigate | 1m 40s |",
            "- 250 of 10000 requests failed (2.50%).",
            "- SLO `api-availability`: 42.0% of the error budget spent.",
            "- 00:03 deploy.started — deploy.started message",
            "- 00:11 deploy.rolled_back — deploy.rolled_back message",
            "Likely trigger: r14 was deployed 6m before the first alert and was rolled back at 00:11 UTC.",
            "| [ ] | canary the error rate | bob | 2026-12-31 |",
        ] {
            assert!(md.contains(needle), "missing {needle:?} in\n{md}");
        }
        let deploy = md.find("00:03 deploy.started").unwrap();
        let fired = md.find("alert.fired").unwrap();
        let rolled = md.find("deploy.rolled_back —").unwrap();
        assert!(deploy < fired && fired < rolled, "in order:\n{md}");
    }
}
