//! Alert rules as the evaluator runs them: from `[alerts.NAME]` in `slipway.toml` and from the
//! alerting rules of Prometheus rule files (accepted as they are), each with its templates
//! parsed once and its hysteresis turned into the expression that keeps it firing.

use std::time::Duration;

use slipway_metrics::labels::Labels;
use slipway_spec::model::{Alert, Recover, Severity};
use slipway_spec::rulefile::{RuleFile, RuleKind};
use slipway_spec::template::{Context, Template, TemplateError};

/// One alerting rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Its name (the `alertname` label).
    pub name: String,
    /// The condition: every series it returns is an alert.
    pub expr: String,
    /// How long the condition must hold before the alert fires.
    pub for_: Duration,
    /// How long a firing alert stays firing once the condition is gone.
    pub keep_firing_for: Duration,
    /// Hysteresis: while a firing alert's labels are in this expression's result, it keeps
    /// firing even though `expr` no longer returns it.
    pub holding: Option<String>,
    /// P1…P4.
    pub severity: Severity,
    /// Channels it notifies (empty: every channel that takes its severity).
    pub channels: Vec<String>,
    /// Label templates (besides `alertname` and `severity`).
    pub labels: Vec<(String, Template)>,
    /// Annotation templates (`summary`, `description`, and a rule file's others).
    pub annotations: Vec<(String, Template)>,
    /// What to do about it.
    pub runbook: Option<String>,
    /// Where to look.
    pub dashboard: Option<String>,
    /// Where it was written (`slipway.toml` or a rule file), for messages.
    pub source: String,
}

/// A rule that cannot be built (validate reports these with file, line and column first).
#[derive(Debug, thiserror::Error)]
#[error("alert `{rule}`: {what}")]
pub struct RuleError {
    /// The rule.
    pub rule: String,
    /// What is wrong.
    pub what: String,
}

fn template(rule: &str, what: &str, text: &str) -> Result<Template, RuleError> {
    Template::parse(text).map_err(|e: TemplateError| RuleError {
        rule: rule.to_string(),
        what: format!("{what}: {} (at byte {})", e.message, e.offset),
    })
}

impl Rule {
    /// A rule of `slipway.toml`.
    pub fn from_spec(name: &str, alert: &Alert) -> Result<Rule, RuleError> {
        let holding = match &alert.recover {
            None => None,
            Some(Recover::Expr(e)) => Some(e.clone()),
            Some(Recover::Threshold(t)) => Some(
                slipway_spec::promql::threshold_comparison(&alert.expr)
                    .ok_or_else(|| RuleError {
                        rule: name.to_string(),
                        what: "a recovery threshold needs an `expr` comparing with a number".into(),
                    })?
                    .holding(*t),
            ),
        };
        let mut annotations = Vec::new();
        for (key, text) in [
            ("summary", &alert.summary),
            ("description", &alert.description),
        ] {
            if let Some(t) = text {
                annotations.push((key.to_string(), template(name, key, t)?));
            }
        }
        Ok(Rule {
            name: name.to_string(),
            expr: alert.expr.clone(),
            for_: alert.for_.map(|d| d.std()).unwrap_or_default(),
            keep_firing_for: alert.keep_firing_for.map(|d| d.std()).unwrap_or_default(),
            holding,
            severity: alert.severity.unwrap_or_default(),
            channels: alert.channels.clone(),
            labels: alert
                .labels
                .iter()
                .map(|(k, v)| Ok((k.clone(), template(name, k, v)?)))
                .collect::<Result<_, RuleError>>()?,
            annotations,
            runbook: alert.runbook.clone(),
            dashboard: alert.dashboard.clone(),
            source: "slipway.toml".into(),
        })
    }

    /// The alerting rules of a Prometheus rule file. Their `severity` label, when it is
    /// `P1`…`P4` or one of the usual words (`critical`/`page` → P1, `error`/`high` → P2,
    /// `warning`/`ticket` → P3, `info`/`low` → P4), sets the severity; `runbook_url` and
    /// `dashboard_url` annotations become the runbook and dashboard.
    pub fn from_rule_file(file: &RuleFile) -> Result<Vec<Rule>, RuleError> {
        let mut out = Vec::new();
        for group in &file.groups {
            for r in &group.rules {
                let RuleKind::Alert(name) = &r.kind else {
                    continue;
                };
                let mut labels: Vec<(String, String)> = group
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for (k, v) in &r.labels {
                    labels.retain(|(x, _)| x != k);
                    labels.push((k.clone(), v.clone()));
                }
                let severity = labels
                    .iter()
                    .find(|(k, _)| k == "severity")
                    .and_then(|(_, v)| severity_word(v));
                let annotation = |k: &str| r.annotations.get(k).cloned();
                out.push(Rule {
                    name: name.clone(),
                    expr: r.expr.clone(),
                    for_: r.for_.map(|d| d.std()).unwrap_or_default(),
                    keep_firing_for: r.keep_firing_for.map(|d| d.std()).unwrap_or_default(),
                    holding: None,
                    severity: severity.unwrap_or_default(),
                    channels: Vec::new(),
                    labels: labels
                        .iter()
                        .filter(|(k, _)| k != "severity" || severity.is_none())
                        .map(|(k, v)| Ok((k.clone(), template(name, k, v)?)))
                        .collect::<Result<_, RuleError>>()?,
                    annotations: r
                        .annotations
                        .iter()
                        .map(|(k, v)| Ok((k.clone(), template(name, k, v)?)))
                        .collect::<Result<_, RuleError>>()?,
                    runbook: annotation("runbook_url").or_else(|| annotation("runbook")),
                    dashboard: annotation("dashboard_url").or_else(|| annotation("dashboard")),
                    source: format!("{}:{}", file.path.display(), r.line),
                });
            }
        }
        Ok(out)
    }

    /// The labels of the alert for one result series: its labels without `__name__`, the
    /// rule's labels rendered over them, `alertname` and `severity`.
    pub fn alert_labels(&self, series: &Labels, value: f64, external_url: &str) -> Labels {
        let mut out = series.without_name();
        let pairs = pairs(&out);
        let cx = Context {
            labels: &pairs,
            value,
            external_url,
        };
        for (k, t) in &self.labels {
            out.set(k.clone(), t.render(&cx));
        }
        out.set("alertname".into(), self.name.clone());
        out.set("severity".into(), self.severity.as_str().into());
        out
    }

    /// The annotations of an alert, rendered.
    pub fn render_annotations(
        &self,
        labels: &Labels,
        value: f64,
        external_url: &str,
    ) -> Vec<(String, String)> {
        let pairs = pairs(labels);
        let cx = Context {
            labels: &pairs,
            value,
            external_url,
        };
        let mut out: Vec<(String, String)> = self
            .annotations
            .iter()
            .map(|(k, t)| (k.clone(), t.render(&cx)))
            .collect();
        if let Some(r) = &self.runbook
            && !out.iter().any(|(k, _)| k == "runbook_url")
        {
            out.push(("runbook_url".into(), r.clone()));
        }
        if let Some(d) = &self.dashboard
            && !out.iter().any(|(k, _)| k == "dashboard_url")
        {
            out.push(("dashboard_url".into(), d.clone()));
        }
        out
    }
}

/// A label set as owned pairs (what templates read).
pub fn pairs(labels: &Labels) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A severity from the words Prometheus rules use for it.
fn severity_word(v: &str) -> Option<Severity> {
    Some(match v.to_ascii_lowercase().as_str() {
        "p1" | "p0" | "critical" | "page" | "emergency" => Severity::P1,
        "p2" | "error" | "high" | "major" => Severity::P2,
        "p3" | "warning" | "ticket" | "medium" => Severity::P3,
        "p4" | "info" | "low" | "none" => Severity::P4,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recovery_threshold_becomes_the_holding_condition_and_labels_are_rendered() {
        let alert: Alert = toml::from_str(
            r#"
            expr = 'rate(errors_total[5m]) > 0.05'
            recover = 0.02
            severity = "P2"
            summary = "{{ $labels.service }} at {{ $value | humanizePercentage }}"
            runbook = "docs/runbooks/errors.md"
            labels = { team = "{{ $labels.service }}-oncall" }
            "#,
        )
        .unwrap();
        let rule = Rule::from_spec("errors", &alert).unwrap();
        assert_eq!(
            rule.holding.as_deref(),
            Some("(rate(errors_total[5m])) > 0.02")
        );
        let series = Labels::from_pairs([("__name__", "errors_total"), ("service", "api")]);
        let labels = rule.alert_labels(&series, 0.07, "");
        assert_eq!(
            labels.to_string(),
            r#"{alertname="errors", service="api", severity="P2", team="api-oncall"}"#
        );
        let ann = rule.render_annotations(&labels, 0.07, "");
        assert_eq!(
            ann,
            [
                ("summary".to_string(), "api at 7%".to_string()),
                (
                    "runbook_url".to_string(),
                    "docs/runbooks/errors.md".to_string()
                )
            ]
        );
    }
}
