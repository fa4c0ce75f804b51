//! The command line, as clap sees it. Names and flags here are the product's command-line
//! contract (see the product brief): add freely, never rename.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Slipway: build, deploy, watch and roll back your services from one binary.
#[derive(Debug, Parser)]
#[command(
    name = "slipway",
    version,
    propagate_version = true,
    after_help = "Examples:\n  slipway init                 write a starter slipway.toml\n  slipway validate             check slipway.toml\n  slipway up --detach          start the control plane in the background\n  slipway status               services, instances and traffic\n  slipway events -f            follow the event log\n  slipway down                 stop the control plane"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// The project file (before the command: `slipway -f app.toml status`).
    #[arg(
        short = 'f',
        long = "file",
        env = "SLIPWAY_FILE",
        default_value = "slipway.toml"
    )]
    pub file: PathBuf,
    /// State directory (default: `.slipway/` beside the project file).
    #[arg(long, global = true, env = "SLIPWAY_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Environment (default: the project's `default_environment`).
    #[arg(long = "env", global = true, env = "SLIPWAY_ENV")]
    pub env: Option<String>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented starter slipway.toml, guessing commands from the folder.
    #[command(
        after_help = "Examples:\n  slipway init\n  slipway -f deploy/slipway.toml init --force"
    )]
    Init {
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Check slipway.toml and report every problem with file:line:column and a hint.
    #[command(
        after_help = "Examples:\n  slipway validate\n  slipway validate --json | jq '.diagnostics[]'"
    )]
    Validate,
    /// Print the JSON Schema of slipway.toml (for editor completion).
    #[command(
        after_help = "Examples:\n  slipway schema > slipway.schema.json\n  # then add `#:schema ./slipway.schema.json` at the top of slipway.toml"
    )]
    Schema,
    /// Show what `up` would change against the configuration last applied.
    #[command(
        after_help = "Examples:\n  slipway plan\n  slipway --env production plan --detailed-exitcode"
    )]
    Plan {
        /// Exit 2 when there are changes (0 when none).
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Start the control plane and apply slipway.toml (when already running: apply it).
    #[command(
        after_help = "Examples:\n  slipway up                   in the foreground; Ctrl-C stops it\n  slipway up --detach          in the background; logs in .slipway/daemon.log\n  slipway up --listen 127.0.0.1:0"
    )]
    Up(UpArgs),
    /// Stop the control plane.
    #[command(after_help = "Examples:\n  slipway down")]
    Down,
    /// Services, instances and traffic of an environment.
    #[command(after_help = "Examples:\n  slipway status\n  slipway --env production status --json")]
    Status,
    /// The event log.
    #[command(
        after_help = "Examples:\n  slipway events\n  slipway events -f\n  slipway events --json --limit 500"
    )]
    Events {
        /// Keep printing new events as they happen.
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many of the newest events to show first.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// The audit log: who did what to which environment, why, and how it ended.
    #[command(
        after_help = "Examples:\n  slipway audit\n  slipway --env production audit --action 'deploy.*'\n  slipway audit --json --limit 1000"
    )]
    Audit {
        /// How many of the newest records.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only this action, or every action starting with a prefix: `deploy.*`,
        /// `environment.freeze`, `pipeline.approve`.
        #[arg(long)]
        action: Option<String>,
    },
    /// Add a note to the event log (a marker for incidents and dashboards).
    #[command(after_help = "Examples:\n  slipway annotate \"moved DNS to the new load balancer\"")]
    Annotate {
        /// The note.
        message: String,
    },
    /// Log lines of a service's instances, merged by time; secret values are redacted.
    #[command(
        after_help = "Examples:\n  slipway logs web\n  slipway logs web -f --level warn\n  slipway logs worker --since 10m --grep job --json"
    )]
    Logs(LogsArgs),
    /// Cron services: run one now.
    #[command(subcommand)]
    Cron(CronCommand),
    /// Deploy the project file as a new release and show it live.
    #[command(
        disable_version_flag = true,
        after_help = "Examples:\n  slipway deploy\n  slipway deploy --version v2.3.0 --strategy canary\n  slipway deploy --set FEATURE_X=on          a config-only release\n  slipway --env production deploy --no-wait\n  slipway deploy --json | jq '{outcome, reason, duration_ms}'"
    )]
    Deploy(DeployArgs),
    /// An environment's releases: version, what changed, which is current.
    #[command(
        after_help = "Examples:\n  slipway releases\n  slipway releases pin r3       never pruned by retention\n  slipway --json releases"
    )]
    Releases {
        /// Pin or unpin a release.
        #[command(subcommand)]
        action: Option<ReleasesCommand>,
    },
    /// Recent deployments and rollbacks, with their outcome and reason.
    #[command(
        after_help = "Examples:\n  slipway deployments\n  slipway deployments --json --limit 5"
    )]
    Deployments {
        /// How many of the newest.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Go back to the previous release, code and configuration together.
    ///
    /// Instant when the release is still warm (a blue-green standby); during a deploy, that
    /// deploy is rolled back.
    #[command(
        after_help = "Examples:\n  slipway rollback\n  slipway rollback --to r3 --reason \"checkout errors\"\n  slipway rollback --json | jq .duration_ms"
    )]
    Rollback {
        /// The release to go back to (default: the previous one).
        #[arg(long)]
        to: Option<String>,
        /// Why, for the record.
        #[arg(long)]
        reason: Option<String>,
        /// Return once it started.
        #[arg(long)]
        no_wait: bool,
    },
    /// Let a paused deployment go on (a pause step, an inconclusive analysis).
    #[command(
        after_help = "Examples:\n  slipway promote\n  slipway promote --full        skip the remaining steps"
    )]
    Promote {
        /// Skip the remaining canary steps.
        #[arg(long)]
        full: bool,
    },
    /// Stop the running deployment's clock where it is.
    #[command(after_help = "Examples:\n  slipway pause\n  slipway resume")]
    Pause,
    /// Start a paused deployment's clock again.
    #[command(after_help = "Examples:\n  slipway resume")]
    Resume,
    /// Roll the running deployment back.
    #[command(after_help = "Examples:\n  slipway abort --reason \"latency looks off\"")]
    Abort {
        /// Why, for the record.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Run the data plane (`slipway up` starts and supervises it).
    #[command(
        after_help = "Examples:\n  slipway proxy --dir .slipway/proxy --admin 127.0.0.1:7071\n  curl -s -H \"authorization: Bearer $(cat .slipway/proxy/admin.token)\" http://127.0.0.1:7071/stats"
    )]
    Proxy(ProxyArgs),
    /// Pipelines: run one, watch it, read its logs, cancel or re-run it.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// Approve a pipeline run waiting for it (recorded in the audit log).
    #[command(after_help = "Examples:\n  slipway approve 12")]
    Approve {
        /// The run.
        run: i64,
    },
    /// Stop deploys to an environment (pipelines and `slipway deploy` refuse) until unfrozen.
    #[command(
        after_help = "Examples:\n  slipway freeze production --reason \"end-of-quarter close\"\n  slipway unfreeze production"
    )]
    Freeze {
        /// The environment (default: `--env`, else the project's default).
        environment: Option<String>,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Let deploys to a frozen environment go ahead again.
    #[command(after_help = "Examples:\n  slipway unfreeze production")]
    Unfreeze {
        /// The environment (default: `--env`, else the project's default).
        environment: Option<String>,
    },
    /// DORA figures: deploy frequency, lead time, change failure rate, time to restore.
    #[command(
        after_help = "Examples:\n  slipway dora\n  slipway --env production dora --days 7 --json"
    )]
    Dora {
        /// The window, in days back from now.
        #[arg(long, default_value_t = 30.0)]
        days: f64,
    },
    /// Metrics: PromQL queries, the series stored, the scrape targets' health.
    #[command(subcommand)]
    Metrics(MetricsCommand),
    /// Alerts: what fires and waits, the rules, deliveries, history, acknowledgements.
    #[command(
        after_help = "Examples:\n  slipway alerts\n  slipway alerts history --rule api_down\n  slipway alerts ack alertname=api_down\n  slipway --json alerts | jq '.alerts[] | select(.state == \"firing\")'"
    )]
    Alerts {
        #[command(subcommand)]
        cmd: Option<AlertsCommand>,
    },
    /// Silences: mute the alerts matching labels for a while, with a reason.
    #[command(subcommand)]
    Silence(SilenceCommand),
    /// SLOs: each indicator, the error budget left and its burn rates, per environment.
    #[command(
        after_help = "Examples:\n  slipway slo\n  slipway --json slo | jq '.[] | select(.budget_remaining < 0.2)'\n  slipway slo export --format prometheus > slo-rules.yml\n  slipway slo import sloth.yml >> slipway.toml"
    )]
    Slo {
        #[command(subcommand)]
        cmd: Option<SloCommand>,
    },
    /// A guided tour: a canary deploy under load, then a bad one rolled back by itself.
    #[command(
        after_help = "Examples:\n  slipway demo\n  slipway demo --keep            leave it running to try rollback, releases, events"
    )]
    Demo {
        /// Leave the demo's control plane running afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Print shell completions.
    #[command(
        after_help = "Examples:\n  slipway completions bash > /etc/bash_completion.d/slipway\n  slipway completions zsh > \"${fpath[1]}/_slipway\""
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `slipway up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Run in the background (pid in .slipway/daemon.json, log in .slipway/daemon.log).
    #[arg(long)]
    pub detach: bool,
    /// API address (default: `[control] listen`, else 127.0.0.1:7070); port 0 picks one.
    #[arg(long, env = "SLIPWAY_LISTEN")]
    pub listen: Option<SocketAddr>,
}

/// `slipway logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The service.
    pub service: String,
    /// Keep printing new lines as they are written.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only lines from this long ago (`10m`, `2h`) or since this time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Only this level or more severe: trace, debug, info, warn, error.
    #[arg(long)]
    pub level: Option<String>,
    /// Only lines containing this text.
    #[arg(long)]
    pub grep: Option<String>,
    /// How many of the newest lines to show first.
    #[arg(long, default_value_t = 200)]
    pub limit: usize,
}

/// `slipway deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Version label of the code (default: the project's git commit, else `local`).
    #[arg(long)]
    pub version: Option<String>,
    /// Strategy for every web service, instead of their own.
    #[arg(long, value_parser = ["recreate", "rolling", "blue-green", "canary"])]
    pub strategy: Option<String>,
    /// Set a variable for every service of the environment (kept for later releases).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Stop setting a variable set by an earlier `--set`.
    #[arg(long = "unset", value_name = "KEY")]
    pub unset: Vec<String>,
    /// What this release is, for people (default: what changed).
    #[arg(long, short = 'm')]
    pub message: Option<String>,
    /// Return once it started (follow it with `slipway deployments` or `slipway events -f`).
    #[arg(long)]
    pub no_wait: bool,
    /// Deploy even though the environment is frozen (`slipway freeze`).
    #[arg(long)]
    pub force: bool,
    /// A fix: goes in while an SLO's spent error budget freezes other deploys (audited).
    #[arg(long)]
    pub fix: bool,
}

/// `slipway pipeline …`.
#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Run the pipeline on a commit in an environment and show it live.
    #[command(
        after_help = "Examples:\n  slipway --env staging pipeline run\n  slipway --env production pipeline run --ref v1.2.3\n  slipway pipeline run --json | jq '{outcome, failed_step, reason}'"
    )]
    Run {
        /// Branch, tag or sha (default: the environment's branch, else HEAD).
        #[arg(long = "ref")]
        git_ref: Option<String>,
        /// Return once it is queued.
        #[arg(long)]
        no_wait: bool,
    },
    /// Recent runs, or one run's stages, jobs and steps.
    #[command(
        after_help = "Examples:\n  slipway pipeline status\n  slipway pipeline status 12 --json"
    )]
    Status {
        /// The run (default: the recent runs).
        run: Option<i64>,
    },
    /// A run's output, every step's, tagged `[job/step]`.
    #[command(after_help = "Examples:\n  slipway pipeline logs 12\n  slipway pipeline logs 12 -f")]
    Logs {
        /// The run.
        run: i64,
        /// Keep printing until the run ends.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Cancel a queued or running run.
    #[command(after_help = "Examples:\n  slipway pipeline cancel 12")]
    Cancel {
        /// The run.
        run: i64,
    },
    /// Run the same commit in the same environment again.
    #[command(after_help = "Examples:\n  slipway pipeline rerun 12")]
    Rerun {
        /// The run.
        run: i64,
        /// Return once it is queued.
        #[arg(long)]
        no_wait: bool,
    },
}

/// `slipway alerts …`.
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// What alerts did: fired, resolved, acknowledged (newest first).
    History {
        /// Only this rule.
        #[arg(long)]
        rule: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Send a test notification to a channel now, to check its endpoint and secret.
    #[command(after_help = "Examples:\n  slipway alerts test oncall")]
    Test {
        /// The channel (`[channels.NAME]`).
        channel: String,
    },
    /// Acknowledge the firing alerts matching every matcher: their groups stop repeating
    /// until they resolve.
    #[command(
        after_help = "Examples:\n  slipway alerts ack alertname=api_down\n  slipway alerts ack service=web severity=P1"
    )]
    Ack {
        /// Matchers (`name=value`, `name!=value`, `name=~regex`, `name!~regex`).
        #[arg(required = true)]
        matchers: Vec<String>,
    },
}

/// `slipway slo …`.
#[derive(Debug, Subcommand)]
pub enum SloCommand {
    /// Print a Sloth spec's or OpenSLO documents' SLOs as `[slos.NAME]`, for slipway.toml.
    Import {
        /// The YAML file.
        file: std::path::PathBuf,
    },
    /// Print the SLOs' recording and burn-rate alerting rules as a Prometheus rule file.
    Export {
        /// The format (`prometheus`: rule-file YAML that `promtool check rules` accepts).
        #[arg(long, default_value = "prometheus")]
        format: String,
    },
}

/// `slipway silence …`.
#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Mute the alerts matching every matcher.
    #[command(
        after_help = "Examples:\n  slipway silence add service=web --for 2h --comment \"migration\"\n  slipway silence add 'alertname=~\"disk_.*\"' --for 1d --comment \"new disks on Monday\"\n  slipway silence add service=db --start 2026-12-24T22:00:00Z --for 4h --comment \"failover drill\""
    )]
    Add {
        /// Matchers (`name=value`, `name!=value`, `name=~regex`, `name!~regex`).
        #[arg(required = true)]
        matchers: Vec<String>,
        /// How long (`30m`, `2h`, `1d`).
        #[arg(long = "for", default_value = "1h")]
        duration: String,
        /// When it starts (RFC 3339, `2026-12-24T22:00:00Z`; default now): a maintenance
        /// window planned ahead.
        #[arg(long)]
        start: Option<String>,
        /// Why (required: the next person will ask).
        #[arg(long)]
        comment: String,
    },
    /// The active silences.
    List,
    /// End a silence now.
    Expire {
        /// Its id (`slipway silence list`).
        id: String,
    },
}

/// `slipway metrics …`.
#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// Evaluate a PromQL expression now, or over a range (a sparkline per series).
    #[command(
        after_help = "Examples:\n  slipway metrics query up\n  slipway metrics query 'sum by (status) (rate(sample_http_requests_total[1m]))'\n  slipway metrics query 'histogram_quantile(0.95, sum by (le) (rate(sample_http_request_duration_seconds_bucket[5m])))' --range 1h --step 1m\n  slipway --json metrics query up | jq '.data.result[].metric'"
    )]
    Query {
        /// The PromQL expression.
        expr: String,
        /// Evaluate over this long a window ending at `--time` (`1h`, `30m`, `7d`).
        #[arg(long)]
        range: Option<String>,
        /// The resolution of a range (default: the range over 60 points).
        #[arg(long, requires = "range")]
        step: Option<String>,
        /// When (RFC 3339 or Unix seconds; default: now).
        #[arg(long)]
        time: Option<String>,
    },
    /// The series stored that match selectors (default: all of them).
    #[command(
        after_help = "Examples:\n  slipway metrics series\n  slipway metrics series 'up{job=\"web\"}' sample_http_requests_total\n  slipway --json metrics series '{service=\"web\"}'"
    )]
    Series {
        /// Series selectors (`up`, `{service="web"}`, `http_requests_total{status=~"5.."}`).
        matchers: Vec<String>,
    },
    /// Every scrape target: its health, last scrape and error.
    #[command(
        after_help = "Examples:\n  slipway metrics targets\n  slipway --json metrics targets"
    )]
    Targets,
}

/// `slipway releases …`.
#[derive(Debug, Subcommand)]
pub enum ReleasesCommand {
    /// Keep a release whatever retention says.
    Pin {
        /// The release (`r3`).
        release: String,
    },
    /// Let retention prune a release again.
    Unpin {
        /// The release (`r3`).
        release: String,
    },
}

/// `slipway cron …`.
#[derive(Debug, Subcommand)]
pub enum CronCommand {
    /// Start a run of a cron service now (its history is in `slipway status`).
    #[command(after_help = "Examples:\n  slipway cron run report")]
    Run {
        /// The cron service.
        name: String,
    },
}

/// `slipway proxy`.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Its directory: admin token, saved route table, `proxy.json`.
    #[arg(long)]
    pub dir: PathBuf,
    /// Admin API address (port 0 picks one; see `proxy.json`).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub admin: SocketAddr,
    /// Share (0–1) of requests written to the JSON access log on stdout.
    #[arg(long, default_value_t = 0.01)]
    pub access_log_sample: f64,
}
