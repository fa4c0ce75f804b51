//! DORA figures from recorded history: deployment frequency, lead time for changes, change
//! failure rate and time to restore, over a window, for one environment or all.
//!
//! Definitions (printed by `slipway dora` too):
//! - a *change* is a deploy that reached users: it ended `succeeded`, or `rolled_back` (a deploy
//!   that failed before anything moved, such as a failed release command, is not a change);
//! - *deployment frequency*: successful deploys per day;
//! - *lead time for changes*: from the commit to all traffic on its release, for successful
//!   deploys made by a pipeline run (the ones whose commit time is known);
//! - a *failed change* is one that was rolled back, by the deploy itself or by a later
//!   `slipway rollback` away from its release; *change failure rate* is failed changes ÷
//!   changes;
//! - *time to restore*: for a deploy that rolled itself back, its start to its end; for a
//!   release rolled back later, its switch to the rollback's switch.

use serde::{Deserialize, Serialize};
use slipway_deploy::{DeploymentState, ReleaseSnapshot};
use slipway_store::{DeploymentRecord, Store, StoreError};

/// A distribution of durations, in seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Durations {
    /// How many.
    pub count: usize,
    /// Median.
    pub median_s: Option<f64>,
    /// Mean.
    pub mean_s: Option<f64>,
}

impl Durations {
    fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        let count = values.len();
        if count == 0 {
            return Durations::default();
        }
        let median = if count % 2 == 1 {
            values[count / 2]
        } else {
            (values[count / 2 - 1] + values[count / 2]) / 2.0
        };
        Durations {
            count,
            median_s: Some(median),
            mean_s: Some(values.iter().sum::<f64>() / count as f64),
        }
    }
}

/// The four figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dora {
    /// Environment (`None`: all).
    pub environment: Option<String>,
    /// Window start.
    pub since: jiff::Timestamp,
    /// Window end.
    pub until: jiff::Timestamp,
    /// Changes in the window.
    pub changes: usize,
    /// Successful deploys in the window.
    pub successful_deploys: usize,
    /// Successful deploys per day.
    pub deployment_frequency_per_day: f64,
    /// Commit to all traffic on its release.
    pub lead_time: Durations,
    /// Changes that were rolled back.
    pub failed_changes: usize,
    /// Failed changes ÷ changes (`None` without changes).
    pub change_failure_rate: Option<f64>,
    /// Failure to restored.
    pub time_to_restore: Durations,
}

fn switched_ms(d: &DeploymentRecord) -> i64 {
    let state: DeploymentState = serde_json::from_value(d.state.clone()).unwrap_or_default();
    match state.switched_ms {
        Some(s) => s,
        None => d.finished.unwrap_or(d.updated).as_millisecond(),
    }
}

/// The figures over `[since, until]`.
pub async fn compute(
    store: &dyn Store,
    environment: Option<&str>,
    since: jiff::Timestamp,
    until: jiff::Timestamp,
) -> Result<Dora, StoreError> {
    let all = store.deployments(environment, 100_000).await?;
    let in_window = |d: &&DeploymentRecord| d.started >= since && d.started <= until;
    let deploys: Vec<&DeploymentRecord> = all
        .iter()
        .filter(in_window)
        .filter(|d| d.kind == "deploy" && (d.status == "succeeded" || d.status == "rolled_back"))
        .collect();
    let rollbacks: Vec<&DeploymentRecord> = all
        .iter()
        .filter(|d| d.kind == "rollback" && d.status == "succeeded")
        .collect();
    let mut lead = Vec::new();
    let mut restore = Vec::new();
    let mut failed = 0;
    let mut succeeded = 0;
    for d in &deploys {
        if d.status == "rolled_back" {
            failed += 1;
            let end = d.finished.unwrap_or(d.updated);
            restore.push(end.duration_since(d.started).as_secs_f64());
            continue;
        }
        succeeded += 1;
        if let Ok(Some(release)) = store.release(&d.environment, d.release).await
            && let Ok(snapshot) = serde_json::from_value::<ReleaseSnapshot>(release.snapshot)
            && let Some(commit) = snapshot.commit.filter(|c| c.time_ms > 0)
        {
            lead.push((switched_ms(d) - commit.time_ms) as f64 / 1000.0);
        }
        // Rolled back later: the first rollback away from this release after it.
        if let Some(r) = rollbacks
            .iter()
            .filter(|r| {
                r.environment == d.environment
                    && r.from_release == Some(d.release)
                    && r.started > d.started
            })
            .min_by_key(|r| r.started)
        {
            failed += 1;
            restore.push((switched_ms(r) - switched_ms(d)) as f64 / 1000.0);
        }
    }
    let days = (until.duration_since(since).as_secs_f64() / 86_400.0).max(1.0 / 24.0);
    let changes = deploys.len();
    Ok(Dora {
        environment: environment.map(str::to_string),
        since,
        until,
        changes,
        successful_deploys: succeeded,
        deployment_frequency_per_day: succeeded as f64 / days,
        lead_time: Durations::of(lead),
        failed_changes: failed,
        change_failure_rate: (changes > 0).then(|| failed as f64 / changes as f64),
        time_to_restore: Durations::of(restore),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_means() {
        let d = Durations::of(vec![3.0, 1.0, 2.0, 10.0]);
        assert_eq!(d.count, 4);
        assert_eq!(d.median_s, Some(2.5));
        assert_eq!(d.mean_s, Some(4.0));
        assert_eq!(Durations::of(vec![]).median_s, None);
        assert_eq!(Durations::of(vec![7.0]).median_s, Some(7.0));
    }
}
