//! A run's persisted state: its stages, jobs and steps with their status, times, exit codes and
//! the last lines of a failed step's output. The store keeps it as JSON beside the run's own
//! status; a run is written each time one of its steps changes.

use serde::{Deserialize, Serialize};

/// Statuses of runs, jobs and steps.
pub mod status {
    /// Waiting for another run of its environment.
    pub const QUEUED: &str = "queued";
    /// Going.
    pub const RUNNING: &str = "running";
    /// Waiting for `slipway approve`.
    pub const WAITING: &str = "waiting";
    /// Not started yet.
    pub const PENDING: &str = "pending";
    /// Done, and good.
    pub const SUCCEEDED: &str = "succeeded";
    /// Done, and bad.
    pub const FAILED: &str = "failed";
    /// A gate said no (`require`, `policy`).
    pub const REFUSED: &str = "refused";
    /// Stopped by a person, or by a newer run.
    pub const CANCELLED: &str = "cancelled";
    /// Its `when` did not match, or an earlier stage failed.
    pub const SKIPPED: &str = "skipped";
    /// The control plane stopped while it was going.
    pub const INTERRUPTED: &str = "interrupted";

    /// Whether a run in this status has ended.
    pub fn is_final(status: &str) -> bool {
        matches!(status, SUCCEEDED | FAILED | REFUSED | CANCELLED)
    }
}

/// A run's stages, jobs and steps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// The commit's subject line.
    pub subject: Option<String>,
    /// When the commit was made (Unix milliseconds).
    #[serde(default)]
    pub commit_time_ms: Option<i64>,
    /// Stages, in order.
    pub stages: Vec<StageState>,
    /// The deployment its `deploy` step started.
    pub deployment: Option<i64>,
    /// Who approved it, when it had to be.
    pub approved_by: Option<String>,
    /// The run that superseded it.
    pub superseded_by: Option<i64>,
}

/// One stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageState {
    /// Name.
    pub name: String,
    /// Status.
    pub status: String,
    /// Its jobs.
    pub jobs: Vec<JobState>,
}

/// One job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    /// Name.
    pub name: String,
    /// Status.
    pub status: String,
    /// Started (Unix milliseconds).
    pub started_ms: Option<i64>,
    /// Ended.
    pub finished_ms: Option<i64>,
    /// Its steps.
    pub steps: Vec<StepState>,
}

/// One step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    /// Name.
    pub name: String,
    /// `run`, or the built-in's name.
    pub kind: String,
    /// Status.
    pub status: String,
    /// Started (Unix milliseconds).
    pub started_ms: Option<i64>,
    /// Ended.
    pub finished_ms: Option<i64>,
    /// A command's exit status.
    pub exit_code: Option<i32>,
    /// Attempts made (retries + 1 at most).
    pub attempts: u32,
    /// What happened, for people.
    pub detail: Option<String>,
    /// The last lines of its output, when it failed.
    #[serde(default)]
    pub tail: Vec<String>,
}

impl StepState {
    /// A step not started yet.
    pub fn pending(name: &str, kind: &str) -> Self {
        StepState {
            name: name.to_string(),
            kind: kind.to_string(),
            status: status::PENDING.into(),
            started_ms: None,
            finished_ms: None,
            exit_code: None,
            attempts: 0,
            detail: None,
            tail: Vec::new(),
        }
    }

    /// Milliseconds it took (or has taken).
    pub fn duration_ms(&self, now_ms: i64) -> Option<u64> {
        let start = self.started_ms?;
        u64::try_from(self.finished_ms.unwrap_or(now_ms) - start).ok()
    }
}

impl RunState {
    /// The state a stored run carries (empty when it has none or cannot be read).
    pub fn of(record: &slipway_store::RunRecord) -> Self {
        serde_json::from_value(record.state.clone()).unwrap_or_default()
    }

    /// Marks every step and job that was going as interrupted, and returns the first of them as
    /// `stage/job/step`.
    pub fn interrupt(&mut self) -> Option<String> {
        let mut first = None;
        for stage in &mut self.stages {
            for job in &mut stage.jobs {
                for step in &mut job.steps {
                    if matches!(step.status.as_str(), status::RUNNING | status::WAITING) {
                        step.status = status::INTERRUPTED.into();
                        first.get_or_insert(format!("{}/{}/{}", stage.name, job.name, step.name));
                    }
                }
                if matches!(job.status.as_str(), status::RUNNING | status::WAITING) {
                    job.status = status::INTERRUPTED.into();
                }
            }
            if matches!(stage.status.as_str(), status::RUNNING | status::WAITING) {
                stage.status = status::INTERRUPTED.into();
            }
        }
        first
    }
}
