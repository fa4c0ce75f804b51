//! The error-budget policy: every few seconds each SLO's budget is read per environment
//! (from the error ratio its recording rules keep over its window); an environment where one
//! is spent has its deploys frozen but for fixes, named after the SLO, and the freeze lifts by
//! itself once that SLO's budget is back above its `unfreeze_above`. Both are events and
//! audited as the system's.

use std::sync::Arc;
use std::time::Duration;

use slipway_deploy::record::BudgetFreeze;
use slipway_metrics::promql::Value;
use slipway_slo::{Slo, ratio_series};
use tokio_util::sync::CancellationToken;

use crate::http::AppState;

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// The budget left of `slo` in each environment it has data for.
async fn budgets(app: &AppState, slo: &Slo) -> Vec<(String, f64)> {
    let query = format!("{}{{slo=\"{}\"}}", ratio_series(slo.window), slo.name);
    match app.metrics.backend().instant(&query, now_ms()).await {
        Ok(Value::Vector(rows)) => rows
            .into_iter()
            .filter(|(_, v)| v.is_finite())
            .filter_map(|(l, v)| {
                l.get("environment")
                    .map(|e| (e.to_string(), 1.0 - v / slo.budget()))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// One look at every SLO: freezes and lifts.
async fn check(app: &AppState) {
    let Some(project) = app.project.read().ok().and_then(|p| p.clone()) else {
        return;
    };
    let (slos, _) = Slo::all(&project.config);
    let mut spent: std::collections::BTreeMap<String, BudgetFreeze> = Default::default();
    let mut left: std::collections::BTreeMap<(String, String), f64> = Default::default();
    for slo in slos.iter().filter(|s| s.freeze_deploys) {
        for (env, budget) in budgets(app, slo).await {
            left.insert((env.clone(), slo.name.clone()), budget);
            if budget <= 0.0 {
                spent.entry(env).or_insert(BudgetFreeze {
                    slo: slo.name.clone(),
                    budget_remaining: budget,
                    lift_above: slo.unfreeze_above,
                    since_ms: now_ms(),
                });
            }
        }
    }
    for env in project.environments() {
        let Ok(current) = app.engine.budget_frozen(&env).await else {
            continue;
        };
        let next = match (&current, spent.remove(&env)) {
            // Held until its own SLO has its share back (or is gone, or has no data).
            (Some(c), other) => {
                let back = left
                    .get(&(env.clone(), c.slo.clone()))
                    .is_none_or(|b| *b >= c.lift_above);
                match (back, other) {
                    (false, _) => continue,
                    (true, Some(o)) if o.slo != c.slo => Some(o),
                    (true, _) => None,
                }
            }
            (None, Some(o)) => Some(o),
            (None, None) => continue,
        };
        let (action, target, reason) = match (&current, &next) {
            (_, Some(n)) => (
                "slo.freeze",
                format!("deploys to {env} but fixes"),
                format!(
                    "SLO {} has spent its error budget ({:.0}% left)",
                    n.slo,
                    n.budget_remaining * 100.0
                ),
            ),
            (Some(c), None) => (
                "slo.unfreeze",
                format!("deploys to {env}"),
                format!(
                    "SLO {} is back above {:.0}% of its budget",
                    c.slo,
                    c.lift_above * 100.0
                ),
            ),
            (None, None) => continue,
        };
        match app.engine.budget_freeze(&env, next).await {
            Ok(true) => {
                let _ = app
                    .store
                    .append_audit(slipway_store::NewAudit {
                        actor: "system".into(),
                        action: action.into(),
                        environment: Some(env.clone()),
                        target,
                        reason: Some(reason),
                        outcome: "succeeded".into(),
                        ..Default::default()
                    })
                    .await;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(environment = %env, error = %e, "cannot apply the budget policy")
            }
        }
    }
}

/// Starts the policy loop.
pub(crate) fn spawn(app: Arc<AppState>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        loop {
            check(&app).await;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = shutdown.cancelled() => break,
            }
        }
    });
}
