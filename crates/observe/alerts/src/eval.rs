//! One evaluation of a rule: its condition (and, for a firing alert the condition no longer
//! returns, its holding condition) asked of any metrics back-end at one instant, the answer
//! turned into alert label sets and fed to the rule's state.

use slipway_metrics::backend::MetricsBackend;
use slipway_metrics::labels::Labels;
use slipway_metrics::promql::Value;

use crate::rule::Rule;
use crate::state::{Phase, RuleState, Transition};

/// Why an evaluation did not happen; the rule's alerts stay as they were.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The back-end refused or failed the query.
    #[error("{0}")]
    Query(String),
    /// The condition is not an instant vector (or scalar).
    #[error("the expression gives a {0}, not an instant vector")]
    NotAVector(&'static str),
    /// Two result series are the same alert (Prometheus' "vector contains metrics with the
    /// same labelset after applying alert labels").
    #[error("two series are the same alert {0} once the rule's labels are applied")]
    Duplicate(String),
}

/// The alert label sets and values a query returned.
async fn ask(
    rule: &Rule,
    backend: &dyn MetricsBackend,
    expr: &str,
    now: i64,
    external_url: &str,
) -> Result<Vec<(Labels, f64)>, EvalError> {
    let rows = match backend
        .instant(expr, now)
        .await
        .map_err(|e| EvalError::Query(e.message))?
    {
        Value::Vector(rows) => rows,
        // `vector(1)`-like conditions: one alert without labels.
        Value::Scalar(v) => vec![(Labels::new(), v)],
        other => return Err(EvalError::NotAVector(other.type_name())),
    };
    let mut out: Vec<(Labels, f64)> = rows
        .into_iter()
        .map(|(l, v)| (rule.alert_labels(&l, v, external_url), v))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = out.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(EvalError::Duplicate(w[0].0.to_string()));
    }
    Ok(out)
}

/// Evaluates `rule` at `now` (ms) and moves its state on; returns what changed.
pub async fn evaluate(
    rule: &Rule,
    state: &mut RuleState,
    backend: &dyn MetricsBackend,
    now: i64,
    external_url: &str,
) -> Result<Vec<Transition>, EvalError> {
    let active = ask(rule, backend, &rule.expr, now, external_url).await?;
    // The holding condition matters only for a firing alert the condition no longer returns.
    let mut holding = Vec::new();
    if let Some(h) = &rule.holding {
        let active_keys: std::collections::HashSet<String> =
            active.iter().map(|(l, _)| l.to_string()).collect();
        let needed = state
            .alerts
            .iter()
            .any(|(k, a)| a.phase == Phase::Firing && !active_keys.contains(k));
        if needed {
            holding = ask(rule, backend, h, now, external_url)
                .await?
                .into_iter()
                .map(|(l, _)| l)
                .collect();
        }
    }
    Ok(state.step(rule, now, &active, &holding))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use slipway_metrics::backend::Embedded;
    use slipway_metrics::storage::tsdb::{Tsdb, TsdbOptions};
    use slipway_spec::model::Alert;

    use super::*;

    #[tokio::test]
    async fn a_rule_over_the_embedded_store_fires_holds_and_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let store = Tsdb::open(dir.path(), TsdbOptions::default()).unwrap();
        let backend = Embedded::new(Arc::clone(&store));
        let alert: Alert = toml::from_str(
            "expr = 'queue_depth > 100'\nrecover = 80\nfor = \"2s\"\nseverity = \"P3\"",
        )
        .unwrap();
        let rule = Rule::from_spec("high_queue_depth", &alert).unwrap();
        let mut state = RuleState::default();
        let series = |q: &str| Labels::from_pairs([("__name__", "queue_depth"), ("queue", q)]);
        // One sample a second: 120 for three seconds, 90 (between the thresholds), then 50.
        let values = [120.0, 120.0, 120.0, 90.0, 90.0, 50.0];
        let mut seen = Vec::new();
        for (k, v) in values.iter().enumerate() {
            let t = 1_000_000 + k as i64 * 1000;
            store
                .append_batch(&[(series("jobs"), t, *v), (series("mail"), t, 10.0)])
                .unwrap();
            for tr in evaluate(&rule, &mut state, &backend, t, "").await.unwrap() {
                seen.push((k, tr));
            }
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
        let (k, Transition::Fired { labels, value, .. }) = &seen[0] else {
            panic!("{seen:?}");
        };
        assert_eq!(*k, 2);
        assert_eq!(*value, 120.0);
        assert_eq!(
            labels.to_string(),
            r#"{alertname="high_queue_depth", queue="jobs", severity="P3"}"#
        );
        assert!(
            matches!(seen[1], (5, Transition::Resolved { .. })),
            "{seen:?}"
        );
        // A condition that does not parse is an error, and changes nothing.
        let bad = Rule {
            expr: "queue_depth >".into(),
            ..rule.clone()
        };
        assert!(
            evaluate(&bad, &mut state, &backend, 1_010_000, "")
                .await
                .is_err()
        );
    }
}
