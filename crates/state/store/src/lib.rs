//! Slipway's state: the [`Store`] trait, its records, and the SQLite implementation.
//!
//! Everything the control plane must remember across restarts goes through [`Store`]: the
//! append-only event log, the append-only audit log, the configuration last applied to each
//! environment, immutable releases, deployments (their persisted state machines) and each
//! environment's release pointers; later pipeline runs. The embedded default is
//! [`SqliteStore`] (WAL mode, in the state directory); a PostgreSQL implementation for larger
//! installations satisfies the same trait and passes the same suite in [`contract`].
//!
//! This crate knows nothing of HTTP, processes or the config file format: snapshots are opaque
//! JSON to it.

#[cfg(feature = "contract")]
pub mod contract;
mod sqlite;

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use sqlite::SqliteStore;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("cannot open the state database at {location}")]
    Open {
        /// File or URL.
        location: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate the state database")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("state database query failed while {doing}")]
    Query {
        /// What was being done.
        doing: &'static str,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// Another deployment of the environment is still going.
    #[error("deployment {active} of `{environment}` is still going")]
    Busy {
        /// The environment.
        environment: String,
        /// The deployment that holds it.
        active: i64,
    },
    /// No such record.
    #[error("no {what} `{key}`")]
    NotFound {
        /// Which kind of record.
        what: &'static str,
        /// Its key.
        key: String,
    },
    /// A stored value could not be decoded.
    #[error("stored {what} is corrupt")]
    Corrupt {
        /// Which record.
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// How serious an event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum EventLevel {
    /// Routine.
    Info,
    /// Something needs a look.
    Warning,
    /// Something failed.
    Error,
}

impl EventLevel {
    fn as_str(self) -> &'static str {
        match self {
            EventLevel::Info => "info",
            EventLevel::Warning => "warning",
            EventLevel::Error => "error",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "warning" => EventLevel::Warning,
            "error" => EventLevel::Error,
            _ => EventLevel::Info,
        }
    }
}

/// An event to append.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// Severity.
    pub level: EventLevel,
    /// Dotted kind, such as `daemon.started` or `instance.exited`.
    pub kind: String,
    /// Environment concerned, if any.
    pub environment: Option<String>,
    /// What it is about (a service, an instance, a deployment).
    pub subject: Option<String>,
    /// One line for people.
    pub message: String,
    /// Structured details.
    pub data: serde_json::Value,
}

impl NewEvent {
    /// An info event with no environment, subject or data.
    pub fn info(kind: impl Into<String>, message: impl Into<String>) -> Self {
        NewEvent {
            level: EventLevel::Info,
            kind: kind.into(),
            environment: None,
            subject: None,
            message: message.into(),
            data: serde_json::Value::Object(Default::default()),
        }
    }

    /// The same event at another level.
    pub fn level(mut self, level: EventLevel) -> Self {
        self.level = level;
        self
    }

    /// The same event about an environment.
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    /// The same event about a subject.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// The same event with data.
    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }
}

/// An event in the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// Position in the log; strictly increasing.
    pub id: i64,
    /// When it was appended.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub time: Timestamp,
    /// Severity.
    pub level: EventLevel,
    /// Dotted kind.
    pub kind: String,
    /// Environment concerned.
    pub environment: Option<String>,
    /// What it is about.
    pub subject: Option<String>,
    /// One line for people.
    pub message: String,
    /// Structured details.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: serde_json::Value,
}

/// Which events to read.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    /// Only events after this id.
    pub after: Option<i64>,
    /// Only this environment.
    pub environment: Option<String>,
    /// At most this many, the oldest first (`None`: all).
    pub limit: Option<u32>,
    /// The newest `limit` instead of the oldest.
    pub newest: bool,
    /// Only events appended at or after this time (ms).
    pub since_ms: Option<i64>,
}

/// An audit record to append.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewAudit {
    /// Who (a token's name, `system` for what the control plane does on its own, or
    /// `anonymous`).
    pub actor: String,
    /// What, as a dotted verb: `deploy.start`, `environment.freeze`, `pipeline.approve`.
    pub action: String,
    /// The environment it is about, if any.
    pub environment: Option<String>,
    /// On what (`deployment 20`, `r3`, `run 12`, a route).
    pub target: String,
    /// Why, as the actor said (`--reason`), or as the control plane decided.
    pub reason: Option<String>,
    /// The API request it came from.
    pub request_id: Option<String>,
    /// What a later outcome completes it by (`deployment-20`, `run-12`), for work that ends
    /// after the call returns.
    pub subject: Option<String>,
    /// How it ended: `succeeded`, `refused`, `denied`, `failed`, or `started` until the work
    /// it started ends (see [`Store::complete_audit`]).
    pub outcome: String,
    /// Structured details; never secret values.
    pub details: serde_json::Value,
}

/// Which audit records to read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditQuery {
    /// At most this many, the newest.
    pub limit: u32,
    /// Only this environment's.
    pub environment: Option<String>,
    /// Only these actions: a name, or a prefix ending in `*` (`deploy.*`).
    pub action: Option<String>,
}

/// An audit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Position in the log.
    pub id: i64,
    /// When.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub time: Timestamp,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// The environment.
    #[serde(default)]
    pub environment: Option<String>,
    /// On what.
    pub target: String,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
    /// The API request.
    #[serde(default)]
    pub request_id: Option<String>,
    /// What a later outcome completes it by.
    #[serde(default)]
    pub subject: Option<String>,
    /// How it ended: the final outcome once the work it started ended.
    pub outcome: String,
    /// When the final outcome was written, for work that ended after the call.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub completed: Option<Timestamp>,
    /// Details.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: serde_json::Value,
}

/// The configuration last applied to an environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppliedConfig {
    /// Environment.
    pub environment: String,
    /// How many times a configuration has been applied to it.
    pub generation: i64,
    /// When.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub time: Timestamp,
    /// The resolved environment as JSON.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub snapshot: serde_json::Value,
}

/// A release to record.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRelease {
    /// Environment.
    pub environment: String,
    /// Code version label (a git commit, a tag, or what the user passed).
    pub version: String,
    /// One line for people (what changed).
    pub description: String,
    /// What the release runs, opaque to the store (the resolved configuration and more).
    pub snapshot: serde_json::Value,
}

/// A recorded release: immutable but for its flags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// Environment.
    pub environment: String,
    /// Number within the environment, from 1 (shown as `r<number>`).
    pub number: i64,
    /// Code version label.
    pub version: String,
    /// When it was recorded.
    pub time: Timestamp,
    /// One line for people.
    pub description: String,
    /// What it runs.
    pub snapshot: serde_json::Value,
    /// Kept by retention whatever its age.
    pub pinned: bool,
    /// Its build output was deleted by retention; it can no longer be deployed.
    pub pruned: bool,
}

/// A deployment to record.
#[derive(Clone, Debug, PartialEq)]
pub struct NewDeployment {
    /// Environment.
    pub environment: String,
    /// `deploy` or `rollback`.
    pub kind: String,
    /// The release it brings.
    pub release: i64,
    /// The release it replaces.
    pub from_release: Option<i64>,
    /// Initial status.
    pub status: String,
    /// Initial state machine, opaque to the store.
    pub state: serde_json::Value,
}

/// A change to a deployment.
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentUpdate {
    /// New status.
    pub status: String,
    /// Whether it still holds its environment.
    pub active: bool,
    /// Why it ended as it did (or is doing what it does).
    pub reason: Option<String>,
    /// The whole state machine.
    pub state: serde_json::Value,
}

/// A recorded deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// Id, from 1, across environments.
    pub id: i64,
    /// Environment.
    pub environment: String,
    /// `deploy` or `rollback`.
    pub kind: String,
    /// The release it brings.
    pub release: i64,
    /// The release it replaces.
    pub from_release: Option<i64>,
    /// Status.
    pub status: String,
    /// Whether it still holds its environment.
    pub active: bool,
    /// Started.
    pub started: Timestamp,
    /// Last changed.
    pub updated: Timestamp,
    /// Ended.
    pub finished: Option<Timestamp>,
    /// Why it ended as it did.
    pub reason: Option<String>,
    /// Its state machine.
    pub state: serde_json::Value,
}

/// An environment's release pointers and what the deploy engine keeps with them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentState {
    /// The release it runs.
    pub current_release: Option<i64>,
    /// The one it ran before.
    pub previous_release: Option<i64>,
    /// Opaque to the store (configuration overrides, a warm standby…).
    pub data: serde_json::Value,
}

/// A pipeline run to record.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRun {
    /// Environment.
    pub environment: String,
    /// The ref it was started for (`main`, `v1.2.3`, a sha).
    pub git_ref: String,
    /// The commit it runs.
    pub commit: String,
    /// When that commit was made.
    pub commit_time: Option<Timestamp>,
    /// `manual`, `push` or `rerun`.
    pub trigger: String,
    /// Initial status.
    pub status: String,
    /// Stages, jobs and steps, opaque to the store.
    pub state: serde_json::Value,
}

/// A change to a run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunUpdate {
    /// New status.
    pub status: String,
    /// Its start time is set the first time this is true.
    pub started: bool,
    /// Its end time is set the first time this is true.
    pub finished: bool,
    /// Why it ended as it did.
    pub reason: Option<String>,
    /// `stage/job/step` that failed.
    pub failed_step: Option<String>,
    /// The whole state.
    pub state: serde_json::Value,
}

/// A recorded run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Id, from 1.
    pub id: i64,
    /// Environment.
    pub environment: String,
    /// The ref it was started for.
    pub git_ref: String,
    /// The commit it runs.
    pub commit: String,
    /// When that commit was made.
    pub commit_time: Option<Timestamp>,
    /// `manual`, `push` or `rerun`.
    pub trigger: String,
    /// Status.
    pub status: String,
    /// Recorded.
    pub created: Timestamp,
    /// Started (out of the queue).
    pub started: Option<Timestamp>,
    /// Ended.
    pub finished: Option<Timestamp>,
    /// Why it ended as it did.
    pub reason: Option<String>,
    /// `stage/job/step` that failed.
    pub failed_step: Option<String>,
    /// Stages, jobs and steps.
    pub state: serde_json::Value,
}

/// Which runs to read (newest first).
#[derive(Clone, Debug, Default)]
pub struct RunQuery {
    /// Only this environment.
    pub environment: Option<String>,
    /// Only this commit.
    pub commit: Option<String>,
    /// Only these statuses.
    pub statuses: Vec<String>,
    /// At most this many.
    pub limit: u32,
}

/// The control plane's state. Implementations are safe to share between tasks.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// The version of the newest applied schema migration.
    async fn schema_version(&self) -> Result<i64, StoreError>;

    /// Appends an event and tells subscribers.
    async fn append_event(&self, event: NewEvent) -> Result<Event, StoreError>;

    /// Reads events in id order.
    async fn events(&self, query: &EventQuery) -> Result<Vec<Event>, StoreError>;

    /// Events appended from now on (through this store). A slow subscriber may miss some and
    /// sees a lag error; it should read the gap with [`Store::events`].
    fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<Event>;

    /// Appends an audit record.
    async fn append_audit(&self, entry: NewAudit) -> Result<AuditEntry, StoreError>;

    /// Reads the newest audit records that match, oldest first, each with its final outcome.
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;

    /// Writes the final outcome of the audit records about `subject` still `started` (a
    /// deployment or run that ended). Each record gets one, once.
    async fn complete_audit(&self, subject: &str, outcome: &str) -> Result<u64, StoreError>;

    /// Records the configuration applied to an environment, returning it with its generation.
    async fn record_applied(
        &self,
        environment: &str,
        snapshot: &serde_json::Value,
    ) -> Result<AppliedConfig, StoreError>;

    /// The configuration last applied to an environment.
    async fn applied(&self, environment: &str) -> Result<Option<AppliedConfig>, StoreError>;

    /// Reads a metadata value.
    async fn meta(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Writes a metadata value.
    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError>;

    /// Records a release with the next number of its environment.
    async fn create_release(&self, release: NewRelease) -> Result<ReleaseRecord, StoreError>;

    /// One release of an environment.
    async fn release(
        &self,
        environment: &str,
        number: i64,
    ) -> Result<Option<ReleaseRecord>, StoreError>;

    /// The newest `limit` releases of an environment, newest first.
    async fn releases(
        &self,
        environment: &str,
        limit: u32,
    ) -> Result<Vec<ReleaseRecord>, StoreError>;

    /// Sets a release's flags (`None` leaves one as it is).
    async fn set_release_flags(
        &self,
        environment: &str,
        number: i64,
        pinned: Option<bool>,
        pruned: Option<bool>,
    ) -> Result<(), StoreError>;

    /// Records a new active deployment; [`StoreError::Busy`] when the environment has one.
    async fn create_deployment(
        &self,
        deployment: NewDeployment,
    ) -> Result<DeploymentRecord, StoreError>;

    /// Updates a deployment and, in the same transaction, its environment's state when given
    /// (so a deployment and the release its environment runs never disagree after a crash).
    async fn update_deployment(
        &self,
        id: i64,
        update: &DeploymentUpdate,
        environment: Option<&EnvironmentState>,
    ) -> Result<DeploymentRecord, StoreError>;

    /// One deployment.
    async fn deployment(&self, id: i64) -> Result<Option<DeploymentRecord>, StoreError>;

    /// The newest `limit` deployments (of one environment, or all), newest first.
    async fn deployments(
        &self,
        environment: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeploymentRecord>, StoreError>;

    /// Deployments still holding their environment, oldest first.
    async fn active_deployments(&self) -> Result<Vec<DeploymentRecord>, StoreError>;

    /// Environments that run something: a current release, or a deployment going.
    async fn live_environments(&self) -> Result<Vec<String>, StoreError>;

    /// An environment's state (the default when nothing was recorded).
    async fn environment_state(&self, environment: &str) -> Result<EnvironmentState, StoreError>;

    /// Replaces an environment's state.
    async fn set_environment_state(
        &self,
        environment: &str,
        state: &EnvironmentState,
    ) -> Result<(), StoreError>;

    /// Records a pipeline run.
    async fn create_run(&self, run: NewRun) -> Result<RunRecord, StoreError>;

    /// Updates a run.
    async fn update_run(&self, id: i64, update: &RunUpdate) -> Result<RunRecord, StoreError>;

    /// One run.
    async fn run(&self, id: i64) -> Result<Option<RunRecord>, StoreError>;

    /// Runs matching a query, newest first.
    async fn runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError>;

    /// The alerting state last committed.
    async fn alerting_state(&self) -> Result<Option<String>, StoreError>;

    /// Saves the alerting state, appends history and queues notifications, in one write:
    /// all of it lands or none does. A notification whose key is queued already is skipped.
    async fn commit_alerting(
        &self,
        state: &str,
        history: &[NewAlertEvent],
        notifications: &[NewNotification],
    ) -> Result<(), StoreError>;

    /// History, newest first; with `after` or `since_ms`, oldest first.
    async fn alert_history(&self, query: &AlertHistoryQuery)
    -> Result<Vec<AlertEvent>, StoreError>;

    /// The notifications to try at `now_ms`, oldest first: per channel, the unsent ones up
    /// to the first that is not due yet (so a channel's notifications go out in order).
    async fn due_notifications(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Marks a notification delivered.
    async fn notification_sent(&self, seq: i64, now_ms: i64) -> Result<(), StoreError>;

    /// Records a failed try; the next is not before `next_ms`.
    async fn notification_failed(
        &self,
        seq: i64,
        next_ms: i64,
        error: &str,
    ) -> Result<(), StoreError>;

    /// The newest notifications, sent or not (for `slipway alerts`).
    async fn outbox(&self, limit: u32) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Creates an incident (its `id` is given) with the first line of its log, in one write.
    /// One whose `alert_event` opened an incident already is not created again: that one is
    /// returned, with `false`.
    async fn create_incident(
        &self,
        incident: &IncidentRecord,
        opened: &NewIncidentEntry,
    ) -> Result<(IncidentRecord, bool), StoreError>;

    /// Saves an incident's new record with the log line that says why, in one write.
    async fn update_incident(
        &self,
        incident: &IncidentRecord,
        entry: &NewIncidentEntry,
    ) -> Result<(), StoreError>;

    /// One incident.
    async fn incident(&self, id: i64) -> Result<Option<IncidentRecord>, StoreError>;

    /// Incidents, newest first.
    async fn incidents(&self, query: &IncidentQuery) -> Result<Vec<IncidentRecord>, StoreError>;

    /// An incident's log, oldest first.
    async fn incident_log(&self, incident: i64) -> Result<Vec<IncidentEntry>, StoreError>;

    /// Adds an action item (its incident must exist).
    async fn add_action(&self, action: &NewAction) -> Result<ActionRecord, StoreError>;

    /// Marks an action item done at `done_ms`, or not done (`None`).
    async fn set_action_done(
        &self,
        id: i64,
        done_ms: Option<i64>,
    ) -> Result<ActionRecord, StoreError>;

    /// Action items, of one incident or of all, oldest first; `open`: only those not done.
    async fn actions(
        &self,
        incident: Option<i64>,
        open: bool,
    ) -> Result<Vec<ActionRecord>, StoreError>;
}

mod alerts;
mod incidents;
pub use alerts::{AlertEvent, AlertHistoryQuery, NewAlertEvent, NewNotification, OutboxEntry};
pub use incidents::{
    ActionRecord, IncidentEntry, IncidentQuery, IncidentRecord, NewAction, NewIncidentEntry,
};

fn millis_to_time(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}
