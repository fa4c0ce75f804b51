//! The persisted state machine of a deployment: everything the engine needs to resume or roll
//! back after a crash, written to the store *before* the step it describes is acted on.
//!
//! A deployment moves `running` → (`paused` ↔ `running`) → `watching` → `succeeded`, or at any
//! point before it is committed → `rolling-back` → `rolled_back` (or `failed` when there was
//! nothing to roll back to, or nothing had changed). The commit — the environment's current
//! release becoming the new one — is written in the same transaction as the deployment's
//! state, so after a crash the engine knows which side of it it was on: before, it rolls back;
//! after, it finishes.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use slipway_spec::model::StrategyKind;

use crate::analysis::Judgement;
use crate::platform::ServiceTraffic;

/// `deploy` or `rollback`.
pub const KIND_DEPLOY: &str = "deploy";
/// See [`KIND_DEPLOY`].
pub const KIND_ROLLBACK: &str = "rollback";

/// Statuses a deployment has (the store keeps them as text).
pub mod status {
    /// Moving forward.
    pub const RUNNING: &str = "running";
    /// Waiting for `slipway promote` or `slipway resume`.
    pub const PAUSED: &str = "paused";
    /// Committed; watching the new release against the pre-deploy baseline.
    pub const WATCHING: &str = "watching";
    /// Going back to the release it replaced.
    pub const ROLLING_BACK: &str = "rolling-back";
    /// Done: the new release runs.
    pub const SUCCEEDED: &str = "succeeded";
    /// Done: the previous release runs again.
    pub const ROLLED_BACK: &str = "rolled_back";
    /// Done: it could not go forward, and nothing was changed (or there was nothing to go
    /// back to).
    pub const FAILED: &str = "failed";

    /// Whether a deployment in this status has ended.
    pub fn is_final(status: &str) -> bool {
        matches!(status, SUCCEEDED | ROLLED_BACK | FAILED)
    }
}

/// The whole state machine.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploymentState {
    /// Who asked for it.
    pub actor: String,
    /// Strategy forced for every web service (`deploy --strategy`).
    pub strategy: Option<StrategyKind>,
    /// Per service.
    pub services: IndexMap<String, ServiceProgress>,
    /// The release command ran and succeeded.
    pub release_command_done: bool,
    /// The environment's current release is the new one.
    pub committed: bool,
    /// Milliseconds (Unix) when traffic was all on the new release.
    pub switched_ms: Option<i64>,
    /// Why it is paused, while it is.
    pub paused: Option<String>,
    /// The pause is for `slipway promote` (a pause step, an analysis that stayed
    /// inconclusive), not for `slipway resume`.
    #[serde(default)]
    pub needs_promotion: bool,
    /// Asked to skip the remaining steps (`promote --full`).
    pub skip_steps: bool,
    /// The watch ends at this time (Unix milliseconds).
    pub watch_until_ms: Option<i64>,
    /// Pre-deploy stats of the stable release, per service.
    pub baseline: IndexMap<String, BaselineStats>,
    /// Why it is rolling back or failed.
    pub reason: Option<String>,
    /// Milliseconds from the decision to go back (an abort asked for, a failed analysis) to
    /// the old release having the traffic again, when it went back before the commit.
    #[serde(default)]
    pub reverted_in_ms: Option<u64>,
    /// The last analysis of each service.
    pub analysis: IndexMap<String, Judgement>,
    /// Smoke checks the new release must pass on the preview route before it gets traffic.
    #[serde(default)]
    pub smoke: Option<crate::smoke::SmokePlan>,
    /// How long to watch after the switch, instead of each service's `analysis.watch`.
    #[serde(default)]
    pub watch: Option<std::time::Duration>,
    /// The environment's gates an admin's `--force` went past.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forced: Vec<String>,
    /// The gates it passed, for people.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<String>,
}

/// One service's progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceProgress {
    /// The strategy it moves with.
    pub strategy: StrategyKind,
    /// `waiting` (for services it is `after`), `moving`, `done`, `reverted`.
    pub phase: String,
    /// Canary step index (0-based) being baked.
    pub step: usize,
    /// The new release's share of traffic, 0–100.
    pub weight: f64,
    /// Instances the new release's set has (or is being brought to).
    pub new_replicas: u32,
    /// Instances the old release's set has (or is being brought to).
    pub old_replicas: u32,
    /// The traffic plan last asked for (`None`: the service gets no traffic).
    pub traffic: Option<ServiceTraffic>,
    /// One line for people.
    pub detail: String,
    /// The last lines the new release's instances wrote, when they could not start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<String>,
}

impl ServiceProgress {
    /// A service about to move.
    pub fn new(strategy: StrategyKind, old_replicas: u32) -> Self {
        ServiceProgress {
            strategy,
            phase: "waiting".into(),
            step: 0,
            weight: 0.0,
            new_replicas: 0,
            old_replicas,
            traffic: None,
            detail: "waiting".into(),
            output: Vec::new(),
        }
    }
}

/// What the stable release did before the deploy began.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BaselineStats {
    /// Requests in the window.
    pub requests: u64,
    /// Share answered 5xx.
    pub error_rate: f64,
    /// 95th percentile latency.
    pub p95_ms: Option<f64>,
}

/// The blue-green standby (or watched) set an environment keeps warm, in its state's data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Standby {
    /// The release kept running.
    pub release: i64,
    /// Until then (Unix milliseconds).
    pub until_ms: i64,
}

/// Deploys to an environment are stopped until someone lifts this (`slipway freeze`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Freeze {
    /// Why.
    pub reason: String,
    /// Who.
    pub by: String,
    /// Since (Unix milliseconds).
    pub since_ms: i64,
}

/// What the engine keeps in an environment's state beside its release pointers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentData {
    /// Variables every service gets on top of the file's (`deploy --set`).
    #[serde(default)]
    pub overrides: IndexMap<String, String>,
    /// A previous release kept warm for an instant rollback.
    #[serde(default)]
    pub standby: Option<Standby>,
    /// Deploys are frozen.
    #[serde(default)]
    pub freeze: Option<Freeze>,
    /// Deploys but fixes are frozen because an SLO has spent its error budget here.
    #[serde(default)]
    pub budget_freeze: Option<BudgetFreeze>,
}

/// An SLO's spent error budget freezing an environment's deploys, but fixes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetFreeze {
    /// The SLO.
    pub slo: String,
    /// The share of its budget left when it froze (≤ 0).
    pub budget_remaining: f64,
    /// The share it must be back above to lift.
    pub lift_above: f64,
    /// Since (Unix milliseconds).
    pub since_ms: i64,
}

impl EnvironmentData {
    /// Reads it from the store's opaque JSON (an empty object when never written).
    pub fn from_value(value: &serde_json::Value) -> Self {
        serde_json::from_value(value.clone()).unwrap_or_default()
    }

    /// Its JSON.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}
