//! The types of `slipway.toml`, exactly as a user writes the file.
//!
//! Every section of the product is here, including those whose behaviour later layers add
//! (`[database]`, `[pipeline]`, `[[alerts]]`, `[[slos]]`, `[flags]`, `[channels]`), so the file
//! format is settled once. Doc comments become descriptions in `slipway schema`.
//!
//! Nothing in a service is required at this level: an environment's
//! `[environments.NAME.services.SVC]` table overrides any field of the service with the same
//! schema, and the rules that need the merged result (a web service needs a `port`, a cron job
//! a `schedule`) are checked after overlaying, in `crate::check::semantic`.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::{Duration, Percent, Size};

/// Environment variables: a string, or a number or boolean written as TOML (kept as text).
pub type EnvMap = IndexMap<String, EnvValue>;

/// One environment variable's value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum EnvValue {
    /// Text, used as it is.
    String(String),
    /// An integer, passed as its decimal text.
    Integer(i64),
    /// A float, passed as its shortest text.
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
}

impl std::fmt::Display for EnvValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvValue::String(s) => f.write_str(s),
            EnvValue::Integer(i) => write!(f, "{i}"),
            EnvValue::Float(x) => write!(f, "{x}"),
            EnvValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// The whole `slipway.toml`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "slipway.toml", description = "Slipway project file")]
pub struct Config {
    /// The project: its name and default environment.
    #[serde(default)]
    pub project: Project,
    /// The control plane: where its API listens.
    #[serde(default)]
    pub control: Control,
    /// Environment variables every service of every environment gets.
    #[serde(default)]
    pub env: EnvMap,
    /// Secrets the services need; values live in the encrypted store, never in this file.
    #[serde(default)]
    pub secrets: IndexMap<String, SecretDecl>,
    /// Environments (local, staging, production…), each overriding anything below.
    #[serde(default)]
    pub environments: IndexMap<String, Environment>,
    /// The services: web, worker and cron processes.
    #[serde(default)]
    pub services: IndexMap<String, Service>,
    /// How releases are deployed: release command, default strategy, retention, watch.
    #[serde(default)]
    pub deploy: Deploy,
    /// Instance log capture.
    #[serde(default)]
    pub logs: Logs,
    /// Metrics: how long they are kept, extra scrape targets, recording rules, and a real
    /// Prometheus to ship them to or to query instead.
    #[serde(default)]
    pub metrics: Metrics,
    /// The application's database and its migrations.
    pub database: Option<Database>,
    /// The delivery pipeline: stages, jobs and steps.
    pub pipeline: Option<Pipeline>,
    /// Alert rules, by name.
    #[serde(default)]
    pub alerts: IndexMap<String, Alert>,
    /// Service level objectives with error budgets, by name.
    #[serde(default)]
    pub slos: IndexMap<String, Slo>,
    /// Feature flags.
    #[serde(default)]
    pub flags: IndexMap<String, Flag>,
    /// Notification channels alerts and pipelines report to.
    #[serde(default)]
    pub channels: IndexMap<String, Channel>,
    /// Settings of alerting as a whole.
    #[serde(default)]
    pub alerting: Alerting,
    /// Incidents: which alerts open one, where their updates go.
    #[serde(default)]
    pub incidents: Incidents,
}

/// `[incidents]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Incidents {
    /// The severities of the alerts that open an incident by themselves when they fire
    /// (default `["P1"]`; `[]`: only people open incidents). One incident per alert group;
    /// the group's later alerts attach to it.
    pub open_on: Option<Vec<Severity>>,
    /// Where status updates go (default: the channels of the alert that opened it; for one
    /// opened by hand, the channels that take its severity).
    pub channels: Option<Vec<String>>,
    /// How far before the opening the timeline reaches back (default `1h`).
    pub lookback: Option<Duration>,
    /// How long before the first alert a deploy counts as its likely cause (default `30m`).
    pub suspect_window: Option<Duration>,
}

/// `[project]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// The project's name; defaults to the folder name.
    pub name: Option<String>,
    /// The environment commands use without `--env`; defaults to `local` if it exists (or when
    /// no environment is declared), otherwise the first one declared.
    pub default_environment: Option<String>,
}

/// `[control]`: the control-plane daemon.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// Address of the HTTP API, always loopback: `127.0.0.1:7070` unless set. Port 0 picks a
    /// free port, written to the state directory for the CLI.
    pub listen: Option<String>,
}

/// A secret declaration: a description, or a table.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SecretDecl {
    /// Just a description: `STRIPE_KEY = "Stripe API key"`.
    Description(String),
    /// The full form.
    Full(SecretSpec),
}

/// A secret declaration's full form.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    /// What it is for.
    pub description: Option<String>,
    /// Whether a deploy refuses to start without a value (default true).
    pub required: Option<bool>,
    /// Only these services get it (default: every service).
    pub services: Option<Vec<String>>,
}

/// `[environments.NAME]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// Git branch whose pushes deploy here (`"main"`); a `*` glob is allowed.
    pub branch: Option<String>,
    /// Git tag pattern whose pushes deploy here (`"v*.*.*"`).
    pub tag: Option<String>,
    /// Environments in which the same commit must have succeeded first.
    #[serde(default)]
    pub requires: Vec<String>,
    /// `manual` makes every deploy here wait for `slipway approve`.
    #[serde(default)]
    pub approval: Approval,
    /// Environment variables overlaid on the project's `[env]`.
    #[serde(default)]
    pub env: EnvMap,
    /// Per-service overrides of any service field.
    #[serde(default)]
    #[schemars(with = "IndexMap<String, Service>")]
    pub services: IndexMap<String, toml::Table>,
    /// Overrides of `[deploy]`.
    #[schemars(with = "Option<Deploy>")]
    pub deploy: Option<toml::Table>,
    /// Overrides of `[database]`.
    #[schemars(with = "Option<Database>")]
    pub database: Option<toml::Table>,
}

/// Whether deploys to an environment need a person's approval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Approval {
    /// Deploys proceed on their own.
    #[default]
    Auto,
    /// Deploys wait for `slipway approve`.
    Manual,
}

/// What a service is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceKind {
    /// Serves HTTP on `$PORT` behind the proxy's public `port`.
    #[default]
    Web,
    /// A long-running background process.
    Worker,
    /// A job started on a `schedule`.
    Cron,
}

impl ServiceKind {
    /// The name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Web => "web",
            ServiceKind::Worker => "worker",
            ServiceKind::Cron => "cron",
        }
    }
}

/// `[services.NAME]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// `web` (default), `worker` or `cron`.
    pub kind: Option<ServiceKind>,
    /// Shell command run once per release, in the release's build directory.
    pub build: Option<String>,
    /// Shell command that runs one instance.
    pub start: Option<String>,
    /// Working directory, relative to the project folder.
    pub cwd: Option<String>,
    /// Public port on the proxy (web services); each instance gets its own `$PORT`. `0` lets
    /// the proxy pick a free port, shown by `slipway status`.
    pub port: Option<u16>,
    /// Number of instances (default 1).
    pub replicas: Option<u32>,
    /// Readiness check: gates traffic and deploys. A path string is an HTTP check.
    pub health: Option<HealthSpec>,
    /// Liveness check: restarts the instance when it fails.
    pub liveness: Option<HealthSpec>,
    /// How a new release replaces the old one.
    pub strategy: Option<StrategySpec>,
    /// How long in-flight requests may take to finish once traffic moves away (default 30s).
    pub drain: Option<Duration>,
    /// How an instance is stopped.
    pub stop: Option<Stop>,
    /// What happens when an instance exits.
    pub restart: Option<RestartSpec>,
    /// Crontab schedule (cron services).
    pub schedule: Option<String>,
    /// Time zone of `schedule` (default UTC).
    pub timezone: Option<String>,
    /// Whether cron runs may overlap (default `forbid`).
    pub concurrency: Option<CronConcurrency>,
    /// Longest a cron run may take before it is stopped.
    pub timeout: Option<Duration>,
    /// Services that must be started (and ready) before this one.
    pub after: Option<Vec<String>>,
    /// Environment variables of this service, overlaid on the environment's.
    #[serde(default)]
    pub env: EnvMap,
    /// Which declared secrets this service gets (default: all that apply to it).
    pub secrets: Option<Vec<String>>,
    /// Resource limits.
    pub resources: Option<Resources>,
    /// Container image, for the Docker and Kubernetes runtimes.
    pub image: Option<String>,
    /// Where its instances expose Prometheus metrics, to be scraped.
    pub metrics: Option<ServiceMetrics>,
}

/// `metrics = { path = "/metrics", interval = "15s" }` of a service.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceMetrics {
    /// HTTP path (default `/metrics`).
    pub path: Option<String>,
    /// How often each instance is scraped (default `[metrics] interval`, 15s).
    pub interval: Option<Duration>,
    /// Port on the instance (default its `$PORT`; a worker needs one).
    pub port: Option<u16>,
}

/// `[alerting]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Alerting {
    /// Slipway's own rules (a service crash-looping, an instance down, a deploy rolled back,
    /// a cron run failed); default true.
    pub builtin: Option<bool>,
    /// The labels alerts are grouped by into one notification per channel (default
    /// `["alertname"]`: a hundred instances breaching one rule are one message).
    pub group_by: Option<Vec<String>>,
    /// How P1 groups are timed (default: at once, changes every 30s, repeat every 15m until
    /// acknowledged).
    #[serde(rename = "P1")]
    pub p1: Option<GroupTiming>,
    /// How P2 groups are timed (default: at once, changes every 1m, repeat every 1h).
    #[serde(rename = "P2")]
    pub p2: Option<GroupTiming>,
    /// How P3 groups are timed (default: wait 10s, changes every 5m, repeat every 4h).
    #[serde(rename = "P3")]
    pub p3: Option<GroupTiming>,
    /// How P4 groups are timed (default: wait 1m, changes every 30m, never repeated).
    #[serde(rename = "P4")]
    pub p4: Option<GroupTiming>,
    /// Recurring maintenance windows: the alerts they match are muted while one is open.
    #[serde(default)]
    pub maintenance: IndexMap<String, Maintenance>,
}

/// `[alerting.maintenance.NAME]`: a silence that comes back on a schedule.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    /// When each window opens (crontab: `0 2 * * SUN`).
    pub schedule: String,
    /// How long it stays open.
    pub duration: Duration,
    /// The schedule's time zone (default `UTC`).
    pub timezone: Option<String>,
    /// The alerts it mutes (`service=db`, `alertname=~"backup_.*"`); none: every alert.
    #[serde(default)]
    pub matchers: Vec<String>,
    /// Why (shown with the silence it makes).
    pub comment: Option<String>,
}

impl Alerting {
    /// The timing written for `severity`, if any.
    pub fn timing(&self, severity: Severity) -> Option<&GroupTiming> {
        match severity {
            Severity::P1 => self.p1.as_ref(),
            Severity::P2 => self.p2.as_ref(),
            Severity::P3 => self.p3.as_ref(),
            Severity::P4 => self.p4.as_ref(),
        }
    }
}

/// `[alerting.P1]`…: when a severity's groups are notified (what is left out keeps its
/// default).
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupTiming {
    /// Wait this long for siblings before a new group's first notification.
    pub group_wait: Option<Duration>,
    /// Least time between two notifications of a group that changed (a resolved alert, a
    /// new one).
    pub group_interval: Option<Duration>,
    /// Repeat a group that still fires this often, or `"never"`.
    pub repeat_interval: Option<Repeat>,
}

/// A repeat interval: a duration, or `"never"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Repeat(pub Option<std::time::Duration>);

impl TryFrom<String> for Repeat {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.trim() == "never" {
            return Ok(Repeat(None));
        }
        s.parse::<Duration>()
            .map(|d| Repeat(Some(d.0)))
            .map_err(|e| format!("{e}, or \"never\""))
    }
}

impl From<Repeat> for String {
    fn from(r: Repeat) -> String {
        match r.0 {
            None => "never".into(),
            Some(d) => Duration(d).to_string(),
        }
    }
}

impl JsonSchema for Repeat {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Repeat".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": crate::units::format::REPEAT,
            "description": "A length of time with units (\"15m\", \"4h\"), or \"never\".",
            "examples": ["15m", "never"],
        })
    }
}

/// `[metrics]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// How long samples are kept (default 30d).
    pub retention: Option<Duration>,
    /// Default scrape interval (default 15s).
    pub interval: Option<Duration>,
    /// Extra targets: exporters such as postgres_exporter or node_exporter.
    #[serde(default)]
    pub targets: Vec<MetricsTarget>,
    /// Recording rules: `record` names the series `expr` (PromQL) computes.
    #[serde(default)]
    pub rules: Vec<RecordingRule>,
    /// Prometheus rule files (YAML), relative to the project folder; globs allowed.
    #[serde(default)]
    pub rule_files: Vec<String>,
    /// A Prometheus-compatible remote-write endpoint every sample is also shipped to.
    pub remote_write: Option<String>,
    /// Where rules, deploy analysis and dashboards query (default: the embedded store).
    pub backend: Option<MetricsBackend>,
}

/// `[metrics] backend = { prometheus = "http://prometheus:9090" }`: query that server instead
/// of the embedded store.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsBackend {
    /// The Prometheus (or Mimir, VictoriaMetrics, Thanos) base URL its HTTP API is under.
    pub prometheus: String,
}

/// One `[[metrics.targets]]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsTarget {
    /// Its `job` label.
    pub name: String,
    /// The URL scraped (`http://127.0.0.1:9187/metrics`).
    #[serde(default)]
    pub url: Option<String>,
    /// Several URLs of one job (three node exporters, say), each its own `instance`.
    #[serde(default)]
    pub urls: Vec<String>,
    /// How often (default `[metrics] interval`).
    pub interval: Option<Duration>,
    /// Labels added to its series.
    #[serde(default)]
    pub labels: IndexMap<String, String>,
}

/// One `[[metrics.rules]]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordingRule {
    /// The series it writes.
    pub record: String,
    /// The PromQL expression.
    pub expr: String,
    /// Labels added to the result.
    #[serde(default)]
    pub labels: IndexMap<String, String>,
    /// How often it is evaluated (default `[metrics] interval`).
    pub interval: Option<Duration>,
}

/// A readiness or liveness check: an HTTP path, or a table.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum HealthSpec {
    /// `health = "/health"`: HTTP GET of this path must answer 2xx.
    Path(String),
    /// The full form.
    Check(HealthCheck),
}

/// Kinds of health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HealthKind {
    /// HTTP GET of `path` on the instance's `$PORT`.
    Http,
    /// A TCP connection to the instance's `$PORT`.
    Tcp,
    /// A shell `command` that must exit 0.
    Command,
    /// A `file` the process touches, no older than `max_age`.
    Heartbeat,
    /// The process stayed up for `start_period`.
    Uptime,
}

/// A health check's full form.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// The kind; guessed from `path`, `command` or `file` when absent.
    #[serde(rename = "type")]
    pub kind: Option<HealthKind>,
    /// HTTP path.
    pub path: Option<String>,
    /// Expected HTTP status (default: any 2xx).
    pub status: Option<u16>,
    /// Shell command for `command` checks.
    pub command: Option<String>,
    /// File for `heartbeat` checks, relative to the instance's own run directory; the instance
    /// finds its absolute path in `$SLIPWAY_HEARTBEAT_FILE`.
    pub file: Option<String>,
    /// Oldest a heartbeat file may be (default 3 × interval).
    pub max_age: Option<Duration>,
    /// Time between checks (default 1s for readiness, 5s for liveness).
    pub interval: Option<Duration>,
    /// How long one check may take (default 2s).
    pub timeout: Option<Duration>,
    /// Grace after start during which failures do not count (default 0s; uptime checks: 5s).
    pub start_period: Option<Duration>,
    /// Consecutive successes that make an instance healthy (default 1).
    #[schemars(range(min = 1))]
    pub healthy_threshold: Option<u32>,
    /// Consecutive failures that make an instance unhealthy (default 3).
    #[schemars(range(min = 1))]
    pub unhealthy_threshold: Option<u32>,
}

/// A deploy strategy: its name, or a table.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StrategySpec {
    /// `strategy = "canary"` with every setting at its default.
    Kind(StrategyKind),
    /// The full form.
    Full(Box<Strategy>),
}

/// The four ways a release replaces the previous one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// Stop the old instances, then start the new ones (brief downtime; no overlap).
    Recreate,
    /// Replace instances a few at a time, readiness-gated.
    Rolling,
    /// Start a full new set on the preview route, then switch all traffic at once.
    BlueGreen,
    /// Move traffic in weighted steps with automated analysis.
    Canary,
}

/// A deploy strategy's full form.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Strategy {
    /// The strategy (default `rolling` for web and worker services: new instances first, then
    /// the old ones drained; `recreate` for cron).
    #[serde(rename = "type")]
    pub kind: Option<StrategyKind>,
    /// Rolling: instances above `replicas` during the update (default 1; `"25%"` allowed).
    pub max_surge: Option<Count>,
    /// Rolling: instances that may be unready during the update (default 0).
    pub max_unavailable: Option<Count>,
    /// Canary: traffic steps (default 5%, 25%, 50%, 100%).
    pub steps: Option<Vec<CanaryStep>>,
    /// Canary: how long each step bakes before the next (default 3s).
    pub bake: Option<Duration>,
    /// Blue-green: how long the old set stays warm for an instant rollback (default 15m).
    pub standby: Option<Duration>,
    /// Workers: how long old and new instances run side by side before the old ones are
    /// stopped (default 0s: as soon as the new ones are ready).
    pub overlap: Option<Duration>,
    /// Sticky assignment of users to a release.
    pub sticky: Option<Sticky>,
    /// Tenants (sticky key values) sent to the canary from its first step.
    pub canary_tenants: Option<Vec<String>>,
    /// Automated analysis of the new release against the running one.
    pub analysis: Option<Analysis>,
}

/// A number of instances, or a share of `replicas`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Count {
    /// A number of instances.
    Absolute(u32),
    /// A share of `replicas`, rounded up.
    Percent(Percent),
}

/// One canary step: a weight, or a table.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CanaryStep {
    /// A traffic weight with the default bake time: `"25%"` or `25`.
    Weight(Percent),
    /// The full form.
    Step(CanaryStepSpec),
}

/// A canary step's full form.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryStepSpec {
    /// Share of traffic for the new release.
    pub weight: Option<Percent>,
    /// How long this step bakes.
    pub bake: Option<Duration>,
    /// `true` waits for `slipway promote`; a duration waits that long.
    pub pause: Option<Pause>,
}

/// A pause: until promoted, or for a time.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Pause {
    /// `true`: until `slipway promote`.
    UntilPromoted(bool),
    /// This long.
    For(Duration),
}

/// How users stay on one release.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sticky {
    /// Cookie whose value is the sticky key (default `slipway-release`).
    pub cookie: Option<String>,
    /// Header whose value is the sticky key, such as a tenant id.
    pub header: Option<String>,
}

/// Automated canary analysis settings.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Analysis {
    /// How often the new release is compared with the baseline (default 1s); an interval with
    /// too few requests is extended until it has `min_requests`.
    pub interval: Option<Duration>,
    /// Fewer requests than this make an analysis inconclusive: the step is extended, never
    /// failed for lack of traffic (default 20).
    pub min_requests: Option<u64>,
    /// Highest error ratio allowed (default 5%).
    pub max_error_rate: Option<Percent>,
    /// Highest error ratio above the baseline's allowed (default 1%).
    pub max_error_rate_increase: Option<Percent>,
    /// Highest p95 latency allowed.
    pub max_p95: Option<Duration>,
    /// Highest p99 latency allowed.
    pub max_p99: Option<Duration>,
    /// Highest p95 increase over the baseline allowed (default 20%).
    pub max_p95_increase: Option<Percent>,
    /// Latency increases smaller than this never fail the analysis (default 5ms).
    pub latency_tolerance: Option<Duration>,
    /// Consecutive failed intervals that roll back (default 2); a failure significant at
    /// 1 in 1 000 rolls back at once.
    #[schemars(range(min = 1))]
    pub failure_limit: Option<u32>,
    /// Run the Mann-Whitney U test on latency samples (default true).
    pub judge: Option<bool>,
    /// After reaching 100%, keep watching for this long and roll back on a breach (default 0s).
    pub watch: Option<Duration>,
    /// What a canary step does when the service gets no request at all while it bakes, so
    /// there is nothing to compare and no user to protect: `continue` (default: the next step,
    /// said in an event) or `wait` (extend it, then pause for `slipway promote`, as with too
    /// little traffic).
    pub idle: Option<IdlePolicy>,
}

/// See [`Analysis::idle`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum IdlePolicy {
    /// Go on to the next step.
    #[default]
    Continue,
    /// Wait for traffic, as when there is too little.
    Wait,
}

/// Signals that may stop an instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Signal {
    /// Terminate (the default).
    #[default]
    #[serde(rename = "SIGTERM", alias = "TERM")]
    Term,
    /// Interrupt.
    #[serde(rename = "SIGINT", alias = "INT")]
    Int,
    /// Quit.
    #[serde(rename = "SIGQUIT", alias = "QUIT")]
    Quit,
    /// Hang up.
    #[serde(rename = "SIGHUP", alias = "HUP")]
    Hup,
    /// User signal 1.
    #[serde(rename = "SIGUSR1", alias = "USR1")]
    Usr1,
    /// User signal 2.
    #[serde(rename = "SIGUSR2", alias = "USR2")]
    Usr2,
    /// Window change (some servers stop gracefully on it).
    #[serde(rename = "SIGWINCH", alias = "WINCH")]
    Winch,
}

/// `stop = { signal = "SIGTERM", grace = "30s" }`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stop {
    /// Signal sent to the process group first (default SIGTERM).
    pub signal: Option<Signal>,
    /// Time allowed after the signal before SIGKILL (default 30s).
    pub grace: Option<Duration>,
}

/// A restart policy: its name, or a table.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RestartSpec {
    /// `restart = "on-failure"` with default limits.
    Policy(RestartPolicy),
    /// The full form.
    Full(Restart),
}

/// When an exited instance is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Whatever the exit status (default for web and worker).
    Always,
    /// Only after a non-zero exit or a signal.
    OnFailure,
    /// Never (default for cron).
    Never,
}

/// A restart policy's full form.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    /// The policy (default `always`).
    pub policy: Option<RestartPolicy>,
    /// Restarts allowed before giving up (default: no limit).
    pub max_retries: Option<u32>,
    /// First backoff delay, doubled on each crash (default 500ms).
    pub backoff: Option<Duration>,
    /// Longest backoff delay (default 30s).
    pub max_backoff: Option<Duration>,
    /// This many restarts within `crashloop_window` marks the service `crashlooping` (default 5).
    #[schemars(range(min = 1))]
    pub crashloop_restarts: Option<u32>,
    /// See `crashloop_restarts` (default 2m).
    pub crashloop_window: Option<Duration>,
}

/// Whether cron runs may overlap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CronConcurrency {
    /// Skip a run while the previous one is still going (default).
    #[default]
    Forbid,
    /// Start runs regardless.
    Allow,
}

/// Resource limits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Memory limit.
    pub memory: Option<Size>,
    /// CPU limit, in cores.
    pub cpus: Option<f64>,
}

/// `[deploy]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// One-shot command (e.g. migrations) run once per deploy before any traffic moves; its
    /// failure aborts the deploy with nothing changed.
    pub release: Option<String>,
    /// Longest the release command may take (default 10m).
    pub release_timeout: Option<Duration>,
    /// Default strategy of web services.
    pub strategy: Option<StrategySpec>,
    /// Releases kept per environment (default 10); the current, previous and pinned ones are
    /// never pruned.
    #[schemars(range(min = 1))]
    pub retain: Option<u32>,
    /// Longest new instances may take to become ready (default 60s).
    pub timeout: Option<Duration>,
}

/// `[logs]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Logs {
    /// Size at which an instance's log file is rotated (default 10MB).
    pub max_size: Option<Size>,
    /// Rotated files kept per instance (default 3).
    pub keep: Option<u32>,
}

/// Database engines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DatabaseEngine {
    /// PostgreSQL.
    #[default]
    Postgres,
    /// SQLite.
    Sqlite,
}

/// `[database]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// The engine (default postgres).
    pub engine: Option<DatabaseEngine>,
    /// Environment variable or secret holding the connection URL (default `DATABASE_URL`).
    pub url_env: Option<String>,
    /// Folder of migration files, relative to the project (default `migrations`).
    pub migrations: Option<String>,
    /// Lint migrations for locking hazards before running them (default true).
    pub lint: Option<bool>,
    /// `lock_timeout` set for each migration (default 5s).
    pub lock_timeout: Option<Duration>,
    /// `statement_timeout` set for each migration.
    pub statement_timeout: Option<Duration>,
    /// Backups and restore drills.
    pub backup: Option<Backup>,
}

/// `[database.backup]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    /// Crontab schedule of backups.
    pub schedule: Option<String>,
    /// Backups kept.
    pub retain: Option<u32>,
    /// Folder for backup files (default inside the state directory).
    pub dir: Option<String>,
    /// Restore each backup into a scratch database to prove it (default true).
    pub verify: Option<bool>,
}

/// `[pipeline]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Stage names in order (default build, test, scan, deploy, smoke, monitor).
    pub stages: Option<Vec<String>>,
    /// Jobs by name.
    #[serde(default)]
    pub jobs: IndexMap<String, Job>,
    /// What a new run does while another runs in the same environment (default `queue`).
    pub concurrency: Option<RunConcurrency>,
    /// Where run status reports are posted.
    pub webhook: Option<Webhook>,
    /// A git repository followed for pushes.
    pub watch: Option<GitWatch>,
    /// File listing accepted secret-scan findings (default `.slipway-secrets-allow`).
    pub secret_allowlist: Option<String>,
}

/// What a new pipeline run does while another runs in the same environment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RunConcurrency {
    /// Wait for it.
    #[default]
    Queue,
    /// Cancel it.
    Supersede,
}

/// A pipeline job.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// The stage this job belongs to.
    pub stage: String,
    /// Jobs of the same run that must succeed first.
    #[serde(default)]
    pub needs: Vec<String>,
    /// Run only when this matches.
    pub when: Option<When>,
    /// Steps, in order.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Files or folders handed to later stages.
    #[serde(default)]
    pub artifacts: Vec<String>,
    /// Environment variables of every step.
    #[serde(default)]
    pub env: EnvMap,
    /// Longest the whole job may take.
    pub timeout: Option<Duration>,
}

/// A condition on the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// Branch glob.
    pub branch: Option<String>,
    /// Tag glob.
    pub tag: Option<String>,
    /// Environment name.
    pub environment: Option<String>,
}

/// Built-in pipeline steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BuiltinStep {
    /// Deploy the commit with the environment's strategy.
    Deploy,
    /// HTTP smoke checks against the new release.
    Smoke,
    /// Post-deploy watch with automatic rollback.
    Monitor,
    /// Scan tracked files for secrets.
    SecretScan,
    /// Wait for `slipway approve`.
    Approve,
    /// The same commit must be green in another environment.
    Require,
    /// Ask the deploy policy whether deploys are allowed now.
    Policy,
}

/// One pipeline step: a command (`run`) or a built-in (`uses`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// A name shown in progress and logs.
    pub name: Option<String>,
    /// Shell command.
    pub run: Option<String>,
    /// Built-in step.
    pub uses: Option<BuiltinStep>,
    /// Shell for `run` (default `sh -e`).
    pub shell: Option<String>,
    /// Environment variables.
    #[serde(default)]
    pub env: EnvMap,
    /// Working directory, relative to the checkout.
    pub cwd: Option<String>,
    /// Longest the step may take.
    pub timeout: Option<Duration>,
    /// Extra attempts after a failure (default 0).
    pub retries: Option<u32>,
    /// Settings of a built-in step.
    pub with: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Where run reports go.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// URL that receives a POST per run state change.
    pub url: String,
    /// Payload shape (default `slipway`).
    pub format: Option<WebhookFormat>,
}

/// Webhook payload shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookFormat {
    /// Slipway's own JSON.
    Slipway,
    /// A GitHub commit status.
    GithubStatus,
}

/// A git repository followed for pushes.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GitWatch {
    /// Local path or remote URL.
    pub repo: String,
    /// How often it is polled (default 30s).
    pub interval: Option<Duration>,
}

/// Alert severities, as seed 000 grades them: P1 pages now (< 15 min), P2 pages (< 1 h), P3
/// tells the team (< 4 h), P4 makes a ticket (next business day).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
pub enum Severity {
    /// Critical: page on-call, all hands.
    #[serde(alias = "p1")]
    P1,
    /// High: page on-call.
    #[serde(alias = "p2")]
    P2,
    /// Medium: notify the team's channel.
    #[default]
    #[serde(alias = "p3")]
    P3,
    /// Low: a ticket for the next business day.
    #[serde(alias = "p4")]
    P4,
}

impl Severity {
    /// Every severity, most urgent first.
    pub const ALL: [Severity; 4] = [Severity::P1, Severity::P2, Severity::P3, Severity::P4];

    /// `P1`…`P4`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::P1 => "P1",
            Severity::P2 => "P2",
            Severity::P3 => "P3",
            Severity::P4 => "P4",
        }
    }
}

/// What must hold before a firing alert resolves (hysteresis).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Recover {
    /// A recovery threshold for an `expr` of the form `A > N` (or `<`, `>=`, `<=`): the alert
    /// resolves only once `A` is back past this value.
    Threshold(f64),
    /// An expression: the alert resolves only once it returns a sample for the alert's
    /// labels.
    Expr(String),
}

/// `[alerts.NAME]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// The condition, in PromQL: every series it returns is a firing (or pending) alert.
    pub expr: String,
    /// How long the condition must hold before the alert fires (default 0s).
    #[serde(rename = "for")]
    pub for_: Option<Duration>,
    /// How long it keeps firing once the condition is gone (default 0s).
    pub keep_firing_for: Option<Duration>,
    /// Hysteresis: a recovery threshold or expression that must hold before it resolves.
    pub recover: Option<Recover>,
    /// P1…P4 (default P3).
    pub severity: Option<Severity>,
    /// Channels notified (default: every channel that takes its severity).
    #[serde(default)]
    pub channels: Vec<String>,
    /// One line for the notification, a template (`{{ $labels.service }}`, `{{ $value }}`).
    pub summary: Option<String>,
    /// More detail, a template.
    pub description: Option<String>,
    /// What to do about it: a URL or a path in the repository.
    pub runbook: Option<String>,
    /// A dashboard to look at.
    pub dashboard: Option<String>,
    /// Labels added to the alert (templates allowed).
    #[serde(default)]
    pub labels: IndexMap<String, String>,
}

/// What an SLO measures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Indicator {
    /// Share of the service's requests through the proxy answered without a 5xx.
    #[default]
    Availability,
    /// Share of the service's requests through the proxy answered within `latency`.
    Latency,
    /// Share of the service's health checks that passed.
    Health,
    /// `good` (or `bad`) events over `total`, two PromQL expressions.
    Ratio,
}

/// One pair of burn-rate windows: fires when the error ratio over both exceeds `factor` times
/// the error budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BurnWindow {
    /// The long window (`1h`).
    pub long: Duration,
    /// The short window, so the alert ends soon after the burn does (`5m`).
    pub short: Duration,
    /// How many times faster than sustainable the budget burns (`14.4`).
    pub factor: f64,
    /// `page` (the SLO's `page_severity`) or `ticket` (its `ticket_severity`).
    pub alert: BurnAlert,
}

/// The alert a burn window raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BurnAlert {
    /// Someone must look now.
    Page,
    /// Someone must look soon.
    Ticket,
}

/// `[slos.NAME]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// What it promises, for people.
    pub description: Option<String>,
    /// The service measured (required but for `ratio`).
    pub service: Option<String>,
    /// Target share of good events, e.g. `"99.9%"`.
    pub objective: Percent,
    /// Rolling window the objective holds over (default 30d).
    pub window: Option<Duration>,
    /// What counts as good (default availability).
    pub indicator: Option<Indicator>,
    /// Latency threshold for `latency` SLOs.
    pub latency: Option<Duration>,
    /// Good events (`ratio`): PromQL with `{{.window}}` where the range goes, as Sloth writes
    /// it (`sum(rate(jobs_done_in_time_total[{{.window}}]))`).
    pub good: Option<String>,
    /// Bad events (`ratio`), instead of `good`.
    pub bad: Option<String>,
    /// All events (`ratio`).
    pub total: Option<String>,
    /// Freeze deploys to the environment while the error budget is spent (default true);
    /// fixes still go in.
    pub freeze_deploys: Option<bool>,
    /// The share of the budget that must be back for the freeze to lift (default 5%).
    pub unfreeze_above: Option<Percent>,
    /// The burn-rate alerts (default the SRE Workbook's: 14.4× over 1h and 5m and 6× over 6h
    /// and 30m page; 3× over 1d and 2h and 1× over 3d and 6h open a ticket).
    pub burn: Option<Vec<BurnWindow>>,
    /// Severity of the page alerts (default P1).
    pub page_severity: Option<Severity>,
    /// Severity of the ticket alerts (default P3).
    pub ticket_severity: Option<Severity>,
    /// Channels its alerts go to (default: as any alert).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
}

/// `[flags.NAME]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Flag {
    /// What it controls.
    pub description: Option<String>,
    /// Named values (default `on = true`, `off = false`).
    pub variants: Option<IndexMap<String, serde_json::Value>>,
    /// Variant served when no rule matches (default `off`).
    pub default: Option<String>,
    /// Share of tenants (sticky by tenant id) that get the `on` variant.
    pub rollout: Option<Percent>,
    /// Tenants that always get the `on` variant.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Targeting rules (JSONLogic), checked in order.
    #[serde(default)]
    pub rules: Vec<serde_json::Value>,
}

/// Kinds of notification channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelKind {
    /// A JSON POST.
    Webhook,
    /// A Slack incoming webhook.
    Slack,
    /// PagerDuty Events v2.
    Pagerduty,
    /// Email over SMTP.
    Email,
    /// A Telegram bot's messages to a chat.
    Telegram,
    /// An existing Alertmanager (`POST /api/v2/alerts`).
    Alertmanager,
}

/// An SMTP server's host and port (`smtp.example.com:587`).
pub fn smtp_address(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    (!host.is_empty() && !host.contains('/')).then_some((host, port))
}

/// How an email channel's SMTP connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpTls {
    /// Plain at first, then STARTTLS, which the server must offer.
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No TLS: only for a relay on the same host.
    None,
}

/// `[channels.NAME]`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// The kind of channel.
    #[serde(rename = "type")]
    pub kind: ChannelKind,
    /// Endpoint URL (webhook, slack).
    pub url: Option<String>,
    /// Secret holding the endpoint URL or key, instead of `url`.
    pub secret: Option<String>,
    /// Recipients (email).
    #[serde(default)]
    pub to: Vec<String>,
    /// The SMTP server, `host:port` (email; port 465 speaks TLS at once, others STARTTLS).
    pub smtp: Option<String>,
    /// How the SMTP connection is protected (email; default `starttls`, or `tls` on port 465).
    pub tls: Option<SmtpTls>,
    /// The SMTP login (email; its password is the `secret`).
    pub user: Option<String>,
    /// A CA certificate (PEM file, relative to the project) trusted for the SMTP server
    /// besides the system's (email; a relay with a private CA).
    pub ca: Option<String>,
    /// The sender (email; default `slipway@HOSTNAME`).
    pub from: Option<String>,
    /// The chat messages go to (telegram; slack through its Web API, with threads: a
    /// channel id such as `C0123456789`); the bot token is the `secret`.
    pub chat: Option<String>,
    /// Only these severities are sent (default all).
    pub severities: Option<Vec<Severity>>,
}
