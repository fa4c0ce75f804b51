//! The control plane's wire contract, shared by the daemon (`slipway-server`) and its clients
//! (`slipway-cli`, tests): request and response bodies of the HTTP API, and the layout of the
//! state directory through which the CLI finds a running daemon and its token.
//!
//! Field names here are part of the product's command-line contract (`status --json` prints
//! [`StatusReport`]): extend them freely, never rename them.

pub mod state_dir;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use slipway_store::{AppliedConfig, AuditEntry, Event, EventLevel};

/// Header carrying the request id the daemon assigns (or keeps) for every call.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Every error the API returns has this body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Configuration problems, when the error is an invalid `slipway.toml`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<DiagnosticView>,
}

/// A configuration problem, as `slipway validate --json` prints it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DiagnosticView {
    /// `error` or `warning`.
    pub level: String,
    /// File.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted key path.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub hint: Option<String>,
}

/// `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok` when it answers.
    pub status: String,
    /// Slipway's version.
    pub version: String,
    /// The daemon's process id.
    pub pid: u32,
}

/// `GET /v1/status`: one environment's services, instances and traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusReport {
    /// The project's name.
    pub project: String,
    /// The environment shown.
    pub environment: String,
    /// The release serving the environment, once something is deployed.
    pub release: Option<ReleaseRef>,
    /// Generation of the applied configuration (`None`: never applied).
    pub generation: Option<i64>,
    /// The services, in file order.
    pub services: Vec<ServiceStatus>,
    /// The control plane itself.
    pub control: ControlInfo,
}

/// A release, by id and version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReleaseRef {
    /// Release id.
    pub id: String,
    /// Version label (git sha, tag or label).
    pub version: String,
}

/// One service in [`StatusReport`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceStatus {
    /// Name.
    pub name: String,
    /// `web`, `worker` or `cron`.
    pub kind: String,
    /// Instances wanted.
    pub replicas: u32,
    /// Public port on the proxy.
    pub port: Option<u16>,
    /// `running`, `crashlooping`, `failed`, `build-failed`, `completed`, `scheduled`, or
    /// `not-running` (the environment is not brought up).
    #[serde(default)]
    pub state: String,
    /// Restarts since the control plane started supervising it.
    #[serde(default)]
    pub restarts: u32,
    /// How the last instance ended ("exit status 1", "killed by SIGKILL").
    #[serde(default)]
    pub last_exit: Option<String>,
    /// Running instances.
    pub instances: Vec<InstanceStatus>,
    /// How traffic is split between releases.
    pub traffic: Vec<TrafficShare>,
    /// Next scheduled run (cron services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<jiff::Timestamp>,
    /// Recent runs, newest last (cron services).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<CronRun>,
    /// Each release's instances, wanted and ready: one set normally; two during a deploy, or
    /// while an old release stays warm (a standby, the post-deploy watch).
    #[serde(default)]
    pub sets: Vec<SetReadiness>,
}

/// One release's set of instances of a service, in [`ServiceStatus`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SetReadiness {
    /// Release.
    pub release: String,
    /// Instances it should have.
    pub replicas: u32,
    /// Instances running, healthy and not retiring.
    pub ready: u32,
    /// `current` (the environment's release), `new` (being deployed), `standby` (kept warm for
    /// an instant rollback), or `previous` (kept while the new one is watched, or going away).
    pub role: String,
}

/// One run of a cron service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CronRun {
    /// Instance id of the run.
    pub id: String,
    /// `schedule` or `manual`.
    pub trigger: String,
    /// Started.
    pub started_at: jiff::Timestamp,
    /// Finished (none while running).
    pub finished_at: Option<jiff::Timestamp>,
    /// Exit status.
    pub exit_code: Option<i32>,
    /// `running`, `succeeded`, `failed` or `timed-out`.
    pub outcome: String,
    /// How long it took.
    pub duration_ms: Option<u64>,
}

/// One health-check result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CheckResult {
    /// When it ran.
    pub at: jiff::Timestamp,
    /// Passed.
    pub ok: bool,
    /// What was seen.
    pub detail: String,
    /// How long it took.
    pub ms: u64,
}

/// One instance in [`ServiceStatus`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceStatus {
    /// Instance id.
    pub id: String,
    /// Process id.
    pub pid: Option<u32>,
    /// Release it runs.
    pub release: String,
    /// `starting`, `running`, `stopping`, `exited`, `crashlooping`…
    pub state: String,
    /// `starting`, `healthy`, `unhealthy`, or `none` (not checked).
    pub health: String,
    /// The port it listens on (`$PORT`).
    pub port: Option<u16>,
    /// Replica slot.
    #[serde(default)]
    pub slot: u32,
    /// When it started.
    pub started_at: Option<jiff::Timestamp>,
    /// Re-adopted by this control plane after a restart.
    #[serde(default)]
    pub adopted: bool,
    /// CPU use over the last seconds, in percent of one core.
    pub cpu_percent: Option<f64>,
    /// Resident memory of its process group.
    pub rss_bytes: Option<u64>,
    /// Recent readiness results, newest last.
    #[serde(default)]
    pub checks: Vec<CheckResult>,
}

/// One release's share of a service's traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrafficShare {
    /// Release id.
    pub release: String,
    /// `stable`, `canary` or `preview`.
    pub track: String,
    /// Percent of requests.
    pub weight: f64,
}

/// The control plane, as [`StatusReport`] shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ControlInfo {
    /// Process id.
    pub pid: u32,
    /// Slipway's version.
    pub version: String,
    /// When it started.
    #[schema(value_type = String, format = DateTime)]
    pub started_at: jiff::Timestamp,
    /// API address.
    pub listen: String,
    /// State store back-end.
    pub store: String,
}

/// Query of `GET /v1/status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EnvQuery {
    /// Environment (default: the project's default).
    pub env: Option<String>,
}

/// Query of `GET /v1/events` and `GET /v1/events/stream`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events after this id (the stream also honours `Last-Event-ID`).
    pub after: Option<i64>,
    /// Only this environment.
    pub env: Option<String>,
    /// At most this many of the newest (default 100 for lists; the stream sends all).
    pub limit: Option<u32>,
}

/// Query of `GET /v1/audit`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// At most this many of the newest (default 100).
    pub limit: Option<u32>,
    /// Only this environment's records.
    pub env: Option<String>,
    /// Only this action, or those starting with a prefix ending in `*` (`deploy.*`).
    pub action: Option<String>,
}

/// Body of `POST /v1/annotations`: a note in the event log (a deploy marker, an incident
/// remark), like a dashboard annotation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnnotationRequest {
    /// The note.
    pub message: String,
    /// Environment it is about.
    pub environment: Option<String>,
}

/// Result of `POST /v1/environments/{env}/apply`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApplyResult {
    /// Environment.
    pub environment: String,
    /// New generation of its applied configuration.
    pub generation: i64,
    /// Whether anything differed from the previous one.
    pub changed: bool,
    /// The plan that was applied (see `slipway plan --json`).
    #[schema(value_type = Object)]
    pub plan: serde_json::Value,
    /// The deployment the change started, if it started one.
    #[serde(default)]
    pub deployment: Option<i64>,
}

/// Query of `GET /v1/services/{service}/logs`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
pub struct LogsQuery {
    /// Environment (default: the project's default).
    pub env: Option<String>,
    /// Only records at or after this time (RFC 3339) …
    pub since: Option<jiff::Timestamp>,
    /// … or strictly after it (for following).
    pub after: Option<jiff::Timestamp>,
    /// Only this level or more severe: `trace`, `debug`, `info`, `warn`, `error`.
    pub level: Option<String>,
    /// Only records containing this text.
    pub grep: Option<String>,
    /// At most this many records (default 200): the newest, or with `after`, the oldest after
    /// it, so a follower pages forward without losing lines.
    pub limit: Option<usize>,
}

/// One line of a service's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    /// When it was written.
    pub ts: jiff::Timestamp,
    /// Instance id.
    pub instance: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// Level, for JSON lines that carry one.
    pub level: Option<String>,
    /// The message, or the whole line.
    pub message: String,
    /// Other fields of a JSON line.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(value_type = Object)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// Answer of `POST /v1/services/{service}/runs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunStarted {
    /// Service.
    pub service: String,
    /// Instance id of the run.
    pub run: String,
}

/// Query of `POST /v1/shutdown`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
pub struct ShutdownQuery {
    /// `stop` stops every instance first (`slipway down`); `keep` (default) leaves them
    /// running for the next control plane to adopt.
    pub workloads: Option<String>,
}

/// Body of `POST /v1/environments/{env}/deploy`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeployBody {
    /// Code version label (default: the project's git commit, else `local`).
    pub version: Option<String>,
    /// `recreate`, `rolling`, `blue-green` or `canary`, for every web service.
    pub strategy: Option<String>,
    /// Variables set for every service of the environment (kept for later releases).
    #[serde(default)]
    pub set: std::collections::BTreeMap<String, String>,
    /// Variables no longer set by earlier `set`s.
    #[serde(default)]
    pub unset: Vec<String>,
    /// What this release is, for people.
    pub message: Option<String>,
    /// Deploy even though the environment is frozen.
    #[serde(default)]
    pub force: bool,
    /// A fix: goes in while an SLO's spent error budget freezes other deploys.
    #[serde(default)]
    pub fix: bool,
}

/// Body of `POST /v1/environments/{env}/rollback`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RollbackBody {
    /// Release to go back to (`r3`; default: the previous one).
    pub to: Option<String>,
    /// Why, for the record.
    pub reason: Option<String>,
}

/// Body of `POST /v1/environments/{env}/{promote|pause|resume|abort}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ControlBody {
    /// `promote`: skip the remaining steps.
    #[serde(default)]
    pub full: bool,
    /// `abort`: why.
    pub reason: Option<String>,
}

/// Body of `POST /v1/environments/{env}/releases/{release}/pin`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PinBody {
    /// Pin (true) or unpin (false).
    pub pinned: bool,
}

/// Query of `GET /v1/deployments`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
pub struct DeploymentsQuery {
    /// Only this environment.
    pub env: Option<String>,
    /// How many of the newest (default 20).
    pub limit: Option<u32>,
}

/// A deployment (or rollback) and how it is going: what `slipway deploy` shows live.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeploymentView {
    /// Id.
    pub deployment: i64,
    /// Environment.
    pub environment: String,
    /// `deploy` or `rollback`.
    pub kind: String,
    /// The release it brings (`r4`).
    pub release: String,
    /// Its version label.
    pub version: String,
    /// The release it replaces.
    pub from_release: Option<String>,
    /// `running`, `paused`, `watching`, `rolling-back`, `succeeded`, `rolled_back`, `failed`.
    pub status: String,
    /// Once it ended: `succeeded`, `rolled_back` or `failed`.
    pub outcome: Option<String>,
    /// Why it rolled back or failed (or why a rollback was made).
    pub reason: Option<String>,
    /// Why it is paused.
    pub paused: Option<String>,
    /// Who started it.
    pub actor: String,
    /// Started.
    pub started_at: jiff::Timestamp,
    /// Ended.
    pub finished_at: Option<jiff::Timestamp>,
    /// Start to end (or to now), in milliseconds.
    pub duration_ms: u64,
    /// Start to all traffic on the new release, in milliseconds.
    pub switched_ms: Option<u64>,
    /// From the decision to go back (an abort, a failed analysis) to all traffic on the old
    /// release again, in milliseconds, when it went back before its commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_in_ms: Option<u64>,
    /// The post-deploy watch ends then.
    pub watch_until: Option<jiff::Timestamp>,
    /// Per service.
    pub services: Vec<ServiceProgressView>,
}

/// One service in a [`DeploymentView`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceProgressView {
    /// Name.
    pub name: String,
    /// The strategy it moves with.
    pub strategy: String,
    /// `waiting`, `moving`, `done` or `reverted`.
    pub phase: String,
    /// Canary step (1-based) and how many there are.
    pub step: Option<(usize, usize)>,
    /// The new release's share of traffic, 0–100.
    pub weight: f64,
    /// Instances of the new release wanted, and ready.
    pub new_instances: (u32, u32),
    /// Instances of the old release wanted, and ready.
    pub old_instances: (u32, u32),
    /// One line for people.
    pub detail: String,
    /// The last analysis.
    pub analysis: Option<AnalysisView>,
    /// The last lines the new release's instances wrote, when they could not start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<String>,
}

/// An analysis of the new release against the old.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnalysisView {
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: String,
    /// Why.
    pub reason: String,
    /// The new release.
    pub canary: TrafficSummary,
    /// The release it is compared with.
    pub baseline: Option<TrafficSummary>,
}

/// Requests, errors and latency of one side of an analysis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrafficSummary {
    /// Requests.
    pub requests: u64,
    /// Share answered 5xx.
    pub error_rate: f64,
    /// Median latency.
    pub p50_ms: Option<f64>,
    /// 95th percentile.
    pub p95_ms: Option<f64>,
}

/// A release, as `slipway releases` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReleaseView {
    /// Id (`r4`).
    pub id: String,
    /// Version label.
    pub version: String,
    /// When it was made.
    pub created_at: jiff::Timestamp,
    /// What it changed.
    pub description: String,
    /// `current`, `previous` (what `slipway rollback` goes back to), `standby` (kept warm, not
    /// the previous one), or null.
    pub role: Option<String>,
    /// Its instances are kept warm for an instant rollback.
    #[serde(default)]
    pub standby: bool,
    /// Kept by retention whatever its age.
    pub pinned: bool,
    /// Its build output was deleted by retention.
    pub pruned: bool,
    /// How its last deployment ended.
    pub last_outcome: Option<String>,
    /// Its environment overrides (`deploy --set`).
    pub overrides: std::collections::BTreeMap<String, String>,
}

/// Body of `POST /v1/environments/{env}/runs`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunBody {
    /// Branch, tag or sha (default: the environment's branch, else `HEAD`).
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
}

/// Body of `POST /v1/environments/{env}/freeze`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FreezeBody {
    /// Why deploys stop (`None`: lift the freeze).
    pub reason: Option<String>,
}

/// Query of `GET /v1/runs`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
pub struct RunsQuery {
    /// Only this environment.
    pub env: Option<String>,
    /// How many of the newest (default 20).
    pub limit: Option<u32>,
}

/// Query of `GET /v1/runs/{id}/logs`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
pub struct RunLogsQuery {
    /// Byte offset to read from (the `next` of the previous answer).
    pub after: Option<u64>,
}

/// Lines of a run's log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunLogs {
    /// The lines, `HH:MM:SS.mmm [job/step] text`.
    pub lines: Vec<String>,
    /// The offset to ask for next.
    pub next: u64,
    /// The run has ended (nothing more will be written).
    pub done: bool,
}

/// Query of `GET /v1/dora`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
pub struct DoraQuery {
    /// Only this environment.
    pub env: Option<String>,
    /// The window, in days back from now (default 30).
    pub days: Option<f64>,
}

/// A pipeline run and how it is going: what `slipway pipeline run` shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    /// Id.
    pub run: i64,
    /// Environment.
    pub environment: String,
    /// The ref it was started for.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The commit it runs.
    pub commit: String,
    /// The commit's subject line.
    pub subject: Option<String>,
    /// `manual`, `push` or `rerun`.
    pub trigger: String,
    /// `queued`, `running`, `waiting`, `succeeded`, `failed`, `refused`, `cancelled`.
    pub status: String,
    /// Once it ended: `succeeded`, `failed`, `refused` or `cancelled`.
    pub outcome: Option<String>,
    /// `stage/job/step` that failed or refused.
    pub failed_step: Option<String>,
    /// Why it ended as it did.
    pub reason: Option<String>,
    /// The deployment it started.
    pub deployment: Option<i64>,
    /// Who approved it.
    pub approved_by: Option<String>,
    /// Recorded.
    pub created_at: jiff::Timestamp,
    /// Started.
    pub started_at: Option<jiff::Timestamp>,
    /// Ended.
    pub finished_at: Option<jiff::Timestamp>,
    /// Start to end (or now).
    pub duration_ms: Option<u64>,
    /// Stages, jobs and steps.
    pub stages: Vec<StageView>,
}

/// A stage of a [`RunView`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StageView {
    /// Name.
    pub name: String,
    /// Status.
    pub status: String,
    /// Jobs.
    pub jobs: Vec<JobView>,
}

/// A job of a [`StageView`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    /// Name.
    pub name: String,
    /// Status.
    pub status: String,
    /// How long it took (or has taken).
    pub duration_ms: Option<u64>,
    /// Steps.
    pub steps: Vec<StepView>,
}

/// A step of a [`JobView`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepView {
    /// Name.
    pub name: String,
    /// `run` or a built-in.
    pub kind: String,
    /// Status.
    pub status: String,
    /// How long it took (or has taken).
    pub duration_ms: Option<u64>,
    /// A command's exit status.
    pub exit_code: Option<i32>,
    /// Attempts made.
    pub attempts: u32,
    /// What happened.
    pub detail: Option<String>,
    /// The last lines of its output, when it failed.
    pub tail: Vec<String>,
}

/// One alert (`GET /v1/alerts`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertView {
    /// Its rule.
    pub rule: String,
    /// `pending` or `firing`.
    pub state: String,
    /// `P1`…`P4`.
    pub severity: String,
    /// Its labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// The condition's last value.
    pub value: Option<f64>,
    /// When the condition was first seen (RFC 3339).
    pub since: String,
    /// When it fired.
    pub fired_at: Option<String>,
    /// Whether it still fires only by hysteresis or `keep_firing_for`.
    pub holding: bool,
    /// Who acknowledged its group.
    pub acknowledged_by: Option<String>,
}

/// One rule (`GET /v1/alerts`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertRuleView {
    /// Its name.
    pub name: String,
    /// `P1`…`P4`.
    pub severity: String,
    /// The condition.
    pub expr: String,
    /// `for`, in seconds.
    pub for_seconds: f64,
    /// Its channels (empty: every channel that takes its severity).
    pub channels: Vec<String>,
    /// Where it was written.
    pub source: String,
    /// When it was last evaluated.
    pub evaluated_at: Option<String>,
    /// Why its last evaluation failed.
    pub error: Option<String>,
}

/// One notification in the outbox (`GET /v1/alerts`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    /// The group and notification number.
    pub key: String,
    /// The channel.
    pub channel: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// Why it was sent.
    pub reason: String,
    /// When it was decided.
    pub created: String,
    /// When it was delivered (None: not yet).
    pub sent: Option<String>,
    /// Tries so far.
    pub attempts: i64,
    /// Why the last try failed.
    pub last_error: Option<String>,
}

/// A silence.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SilenceView {
    /// Its id.
    pub id: String,
    /// What it mutes (`service="web"`).
    pub matchers: Vec<String>,
    /// When it started.
    pub starts_at: String,
    /// When it ends.
    pub ends_at: String,
    /// Who set it.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

/// `GET /v1/alerts`: what fires and waits, the rules, the latest deliveries, the silences.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertsView {
    /// Firing first, then pending.
    pub alerts: Vec<AlertView>,
    /// Every rule.
    pub rules: Vec<AlertRuleView>,
    /// The newest notifications, sent or waiting.
    pub deliveries: Vec<DeliveryView>,
    /// Active silences.
    pub silences: Vec<SilenceView>,
    /// Rules or channels that could not be built.
    pub problems: Vec<String>,
    /// Channels whose last tries failed.
    #[serde(default)]
    pub failing_channels: Vec<FailingChannelView>,
}

/// A channel that fails to deliver.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FailingChannelView {
    /// Its name.
    pub channel: String,
    /// Since its first failure in a row.
    pub since: String,
    /// Why its last try failed (never a secret).
    pub error: String,
}

/// Body of `POST /v1/silences`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SilenceBody {
    /// Matchers (`service=web`, `alertname=~"api_.*"`), all of which must match.
    pub matchers: Vec<String>,
    /// How long it lasts, e.g. `2h`.
    pub duration: String,
    /// When it starts (RFC 3339; default now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    /// Why.
    pub comment: String,
}

/// Body of `POST /v1/alerts/test`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TestBody {
    /// The channel to send a test notification to.
    pub channel: String,
}

/// Body of `POST /v1/alerts/ack`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AckBody {
    /// Matchers of the alerts whose groups are acknowledged.
    pub matchers: Vec<String>,
}

/// Query of `GET /v1/alerts/history`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
pub struct AlertHistoryParams {
    /// Only this rule.
    pub rule: Option<String>,
    /// How many of the newest (default 50).
    pub limit: Option<u32>,
}

/// One row of `GET /v1/alerts/history`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertHistoryView {
    /// When.
    pub time: String,
    /// The rule.
    pub rule: String,
    /// `fired`, `resolved` or `acknowledged`.
    pub status: String,
    /// `P1`…`P4`.
    pub severity: String,
    /// The alert's labels.
    pub labels: serde_json::Value,
    /// The condition's value.
    pub value: Option<f64>,
    /// Who (an acknowledgement).
    pub actor: Option<String>,
}
