//! Resolution: one environment's complete, concrete configuration.
//!
//! An environment's view is the file's sections with `[environments.NAME…]` overlaid (tables
//! merge key by key, everything else is replaced), then every default filled in, so the layers
//! above (runtime, deploy engine, releases) read concrete values and never re-derive a default.
//! A [`ResolvedEnv`] is what a release snapshots; it must stay (de)serializable.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::model::{
    Approval, CanaryStep, Config, Count, CronConcurrency, Database, Deploy, HealthCheck,
    HealthKind, HealthSpec, Pause, Resources, RestartPolicy, RestartSpec, SecretDecl, Service,
    ServiceKind, Signal, StrategyKind, StrategySpec,
};
use crate::units::{Duration, Percent};

/// One environment, fully resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedEnv {
    /// Project name.
    pub project: String,
    /// Environment name.
    pub environment: String,
    /// The project folder (absolute).
    pub dir: PathBuf,
    /// Services in file order.
    pub services: IndexMap<String, ResolvedService>,
    /// Declared secrets.
    pub secrets: IndexMap<String, ResolvedSecret>,
    /// Deploy settings.
    pub deploy: ResolvedDeploy,
    /// Log capture settings.
    pub logs: ResolvedLogs,
    /// What may deploy to this environment.
    pub gate: Gate,
    /// The application's database, if declared.
    pub database: Option<Database>,
    /// Metrics settings (the same for every environment).
    #[serde(default)]
    pub metrics: ResolvedMetrics,
}

/// `[metrics]` with defaults filled in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedMetrics {
    /// How long samples are kept.
    pub retention: Duration,
    /// Default scrape and rule interval.
    pub interval: Duration,
    /// Extra scrape targets.
    pub targets: Vec<crate::model::MetricsTarget>,
    /// Recording rules from the file.
    pub rules: Vec<crate::model::RecordingRule>,
    /// Prometheus rule files (as written).
    pub rule_files: Vec<String>,
    /// Remote-write endpoint.
    pub remote_write: Option<String>,
    /// A Prometheus server queried instead of the embedded store.
    pub backend: Option<crate::model::MetricsBackend>,
}

impl Default for ResolvedMetrics {
    fn default() -> Self {
        ResolvedMetrics {
            retention: Duration::from_secs(30 * 86_400),
            interval: Duration::from_secs(15),
            targets: Vec::new(),
            rules: Vec::new(),
            rule_files: Vec::new(),
            remote_write: None,
            backend: None,
        }
    }
}

impl crate::model::MetricsTarget {
    /// Every URL it scrapes: `url`, then `urls`.
    pub fn all_urls(&self) -> impl Iterator<Item = &str> {
        self.url.iter().chain(&self.urls).map(String::as_str)
    }
}

impl PartialEq for crate::model::MetricsTarget {
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name
            && self.url == o.url
            && self.urls == o.urls
            && self.interval == o.interval
            && self.labels == o.labels
    }
}

impl PartialEq for crate::model::RecordingRule {
    fn eq(&self, o: &Self) -> bool {
        self.record == o.record
            && self.expr == o.expr
            && self.labels == o.labels
            && self.interval == o.interval
    }
}

/// Where a service's instances are scraped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedScrape {
    /// HTTP path.
    pub path: String,
    /// Interval.
    pub interval: Duration,
    /// A fixed port on the instance (`None`: its `$PORT`).
    pub port: Option<u16>,
}

/// A declared secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedSecret {
    /// What it is for.
    pub description: Option<String>,
    /// Deploys refuse to start without it.
    pub required: bool,
    /// Services that get it (`None`: all).
    pub services: Option<Vec<String>>,
}

/// Deploy settings of an environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedDeploy {
    /// One-shot release command.
    pub release: Option<String>,
    /// Its time limit.
    pub release_timeout: Duration,
    /// Releases kept.
    pub retain: u32,
    /// Readiness deadline for new instances.
    pub timeout: Duration,
}

/// Log capture settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedLogs {
    /// Rotation size in bytes.
    pub max_size: u64,
    /// Rotated files kept.
    pub keep: u32,
}

/// Promotion rules of an environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    /// Branch pattern.
    pub branch: Option<String>,
    /// Tag pattern.
    pub tag: Option<String>,
    /// Environments that must be green first.
    pub requires: Vec<String>,
    /// Manual approval.
    pub approval: Approval,
}

/// One service, fully resolved for an environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedService {
    /// Service name.
    pub name: String,
    /// web, worker or cron.
    pub kind: ServiceKind,
    /// Build command.
    pub build: Option<String>,
    /// Start command.
    pub start: String,
    /// Absolute working directory.
    pub cwd: PathBuf,
    /// Public port on the proxy.
    pub port: Option<u16>,
    /// Instances.
    pub replicas: u32,
    /// Readiness check.
    pub readiness: Option<Probe>,
    /// Liveness check.
    pub liveness: Option<Probe>,
    /// Deploy strategy.
    pub strategy: ResolvedStrategy,
    /// Drain timeout.
    pub drain: Duration,
    /// Stop signal.
    pub stop_signal: Signal,
    /// Time between the stop signal and SIGKILL.
    pub stop_grace: Duration,
    /// Restart policy.
    pub restart: ResolvedRestart,
    /// Schedule, for cron services.
    pub cron: Option<CronSchedule>,
    /// Services started before this one.
    pub after: Vec<String>,
    /// Environment variables: project, then environment, then service.
    pub env: IndexMap<String, String>,
    /// Secrets this service gets.
    pub secrets: Vec<String>,
    /// Resource limits.
    pub resources: Option<Resources>,
    /// Container image.
    pub image: Option<String>,
    /// Where its instances expose metrics, if they do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<ResolvedScrape>,
}

/// A resolved health check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// What is checked.
    pub check: ProbeCheck,
    /// Time between checks.
    pub interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Grace after start.
    pub start_period: Duration,
    /// Successes to become healthy.
    pub healthy_threshold: u32,
    /// Failures to become unhealthy.
    pub unhealthy_threshold: u32,
}

/// What a probe checks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ProbeCheck {
    /// HTTP GET on `$PORT`.
    Http {
        /// Path.
        path: String,
        /// Expected status (`None`: any 2xx).
        status: Option<u16>,
    },
    /// TCP connect to `$PORT`.
    Tcp,
    /// Shell command exit status.
    Command {
        /// The command.
        command: String,
    },
    /// Heartbeat file freshness.
    Heartbeat {
        /// The file.
        file: String,
        /// Oldest allowed.
        max_age: Duration,
    },
    /// The process stayed up for the start period.
    Uptime,
}

/// A resolved strategy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedStrategy {
    /// Which strategy.
    pub kind: StrategyKind,
    /// Rolling: extra instances.
    pub max_surge: u32,
    /// Rolling: unready instances allowed.
    pub max_unavailable: u32,
    /// Canary steps, ending at 100 %.
    pub steps: Vec<ResolvedStep>,
    /// Blue-green standby time.
    pub standby: Duration,
    /// Worker overlap.
    pub overlap: Duration,
    /// Sticky cookie name.
    pub sticky_cookie: String,
    /// Sticky header name.
    pub sticky_header: Option<String>,
    /// Tenants sent to the canary.
    pub canary_tenants: Vec<String>,
    /// Analysis settings.
    pub analysis: ResolvedAnalysis,
}

/// A canary step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedStep {
    /// Traffic share of the new release, in percent.
    pub weight: f64,
    /// Bake time.
    pub bake: Duration,
    /// Pause behaviour.
    pub pause: StepPause,
}

/// Whether a step waits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepPause {
    /// No pause.
    None,
    /// Until `slipway promote`.
    UntilPromoted,
    /// A fixed time.
    For(Duration),
}

/// Analysis settings with defaults filled in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedAnalysis {
    /// Interval.
    pub interval: Duration,
    /// Minimum requests per interval.
    pub min_requests: u64,
    /// Absolute error-ratio limit (0–1).
    pub max_error_rate: f64,
    /// Error-ratio increase over baseline allowed (0–1).
    pub max_error_rate_increase: f64,
    /// Absolute p95 limit.
    pub max_p95: Option<Duration>,
    /// Absolute p99 limit.
    pub max_p99: Option<Duration>,
    /// Relative p95 increase allowed (0.2 = 20 %).
    pub max_p95_increase: f64,
    /// Latency increases below this never fail.
    pub latency_tolerance: Duration,
    /// Consecutive failures that roll back.
    pub failure_limit: u32,
    /// Mann-Whitney judge on.
    pub judge: bool,
    /// Post-deploy watch window.
    pub watch: Duration,
    /// What a step does when the service gets no traffic at all.
    #[serde(default)]
    pub idle: crate::model::IdlePolicy,
}

/// A resolved restart policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedRestart {
    /// Policy.
    pub policy: RestartPolicy,
    /// Retry limit.
    pub max_retries: Option<u32>,
    /// First backoff.
    pub backoff: Duration,
    /// Backoff cap.
    pub max_backoff: Duration,
    /// Restarts within the window that mark a crash loop.
    pub crashloop_restarts: u32,
    /// The window.
    pub crashloop_window: Duration,
}

/// A cron schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CronSchedule {
    /// Crontab expression.
    pub schedule: String,
    /// Time zone.
    pub timezone: String,
    /// Overlap policy.
    pub concurrency: CronConcurrency,
    /// Time limit of one run.
    pub timeout: Option<Duration>,
}

/// Default readiness check interval.
pub const DEFAULT_READINESS_INTERVAL: Duration = Duration::from_secs(1);

/// Overlays `over` on `base`: tables merge key by key, anything else is replaced.
pub fn merge_tables(base: &mut toml::Table, over: &toml::Table) {
    for (key, value) in over {
        match (base.get_mut(key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Applies an override table to a typed section through its TOML form.
pub(crate) fn overlay<T>(base: &T, over: Option<&toml::Table>) -> Result<T, toml::de::Error>
where
    T: Serialize + for<'de> Deserialize<'de> + Clone,
{
    let Some(over) = over else {
        return Ok(base.clone());
    };
    let mut table = toml::Table::try_from(base).expect("model types serialize to TOML tables");
    merge_tables(&mut table, over);
    table.try_into()
}

/// The services of an environment after its overrides, still in file form.
pub(crate) fn merged_services(
    config: &Config,
    environment: &str,
) -> Result<IndexMap<String, Service>, toml::de::Error> {
    let overrides = config.environments.get(environment).map(|e| &e.services);
    config
        .services
        .iter()
        .map(|(name, service)| {
            let over = overrides.and_then(|o| o.get(name));
            Ok((name.clone(), overlay(service, over)?))
        })
        .collect()
}

/// Resolves an environment of a checked configuration.
///
/// `config` must have passed [`crate::load`]'s checks; the few things that could still fail
/// here are internal errors.
pub(crate) fn resolve(
    config: &Config,
    dir: &Path,
    project: &str,
    environment: &str,
) -> Result<ResolvedEnv, toml::de::Error> {
    let env_spec = config.environments.get(environment);
    let deploy: Deploy = overlay(&config.deploy, env_spec.and_then(|e| e.deploy.as_ref()))?;
    let database = match &config.database {
        Some(db) => Some(overlay(db, env_spec.and_then(|e| e.database.as_ref()))?),
        None => None,
    };
    let mut shared: IndexMap<String, String> = config
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    if let Some(e) = env_spec {
        for (k, v) in &e.env {
            shared.insert(k.clone(), v.to_string());
        }
    }
    let secrets: IndexMap<String, ResolvedSecret> = config
        .secrets
        .iter()
        .map(|(name, decl)| {
            let resolved = match decl {
                SecretDecl::Description(d) => ResolvedSecret {
                    description: Some(d.clone()),
                    required: true,
                    services: None,
                },
                SecretDecl::Full(s) => ResolvedSecret {
                    description: s.description.clone(),
                    required: s.required.unwrap_or(true),
                    services: s.services.clone(),
                },
            };
            (name.clone(), resolved)
        })
        .collect();
    let services = merged_services(config, environment)?
        .into_iter()
        .map(|(name, s)| {
            let mut resolved = resolve_service(&name, &s, &deploy, &shared, &secrets, dir);
            if let (Some(m), Some(spec)) = (resolved.metrics.as_mut(), s.metrics.as_ref())
                && spec.interval.is_none()
            {
                m.interval = config.metrics.interval.unwrap_or(Duration::from_secs(15));
            }
            (name, resolved)
        })
        .collect();
    Ok(ResolvedEnv {
        project: project.to_string(),
        environment: environment.to_string(),
        dir: dir.to_path_buf(),
        services,
        secrets,
        deploy: ResolvedDeploy {
            release: deploy.release.clone(),
            release_timeout: deploy.release_timeout.unwrap_or(Duration::from_secs(600)),
            retain: deploy.retain.unwrap_or(10),
            timeout: deploy.timeout.unwrap_or(Duration::from_secs(60)),
        },
        logs: ResolvedLogs {
            max_size: config.logs.max_size.map_or(10_000_000, |s| s.bytes()),
            keep: config.logs.keep.unwrap_or(3),
        },
        gate: Gate {
            branch: env_spec.and_then(|e| e.branch.clone()),
            tag: env_spec.and_then(|e| e.tag.clone()),
            requires: env_spec.map(|e| e.requires.clone()).unwrap_or_default(),
            approval: env_spec.map(|e| e.approval).unwrap_or_default(),
        },
        database,
        metrics: ResolvedMetrics {
            retention: config
                .metrics
                .retention
                .unwrap_or(Duration::from_secs(30 * 86_400)),
            interval: config.metrics.interval.unwrap_or(Duration::from_secs(15)),
            targets: config.metrics.targets.clone(),
            rules: config.metrics.rules.clone(),
            rule_files: config.metrics.rule_files.clone(),
            remote_write: config.metrics.remote_write.clone(),
            backend: config.metrics.backend.clone(),
        },
    })
}

fn resolve_service(
    name: &str,
    s: &Service,
    deploy: &Deploy,
    shared_env: &IndexMap<String, String>,
    secrets: &IndexMap<String, ResolvedSecret>,
    dir: &Path,
) -> ResolvedService {
    let kind = s.kind.unwrap_or_default();
    let mut env = shared_env.clone();
    for (k, v) in &s.env {
        env.insert(k.clone(), v.to_string());
    }
    let secrets_for_service = match &s.secrets {
        Some(list) => list.clone(),
        None => secrets
            .iter()
            .filter(|(_, d)| {
                d.services
                    .as_ref()
                    .is_none_or(|l| l.iter().any(|x| x == name))
            })
            .map(|(k, _)| k.clone())
            .collect(),
    };
    let replicas = s.replicas.unwrap_or(1);
    let readiness = match (&s.health, kind) {
        (Some(spec), _) => Some(probe(spec, false)),
        // Without a check, a web instance is ready once its port accepts connections, and a
        // worker once it has stayed up for a few seconds; cron runs are not probed.
        (None, ServiceKind::Web) => Some(default_probe(ProbeCheck::Tcp, false)),
        (None, ServiceKind::Worker) => Some(Probe {
            start_period: Duration::from_secs(3),
            ..default_probe(ProbeCheck::Uptime, false)
        }),
        (None, ServiceKind::Cron) => None,
    };
    let liveness = s.liveness.as_ref().map(|spec| probe(spec, true));
    let strategy_spec = s.strategy.as_ref().or(match kind {
        ServiceKind::Web => deploy.strategy.as_ref(),
        _ => None,
    });
    let default_kind = match kind {
        ServiceKind::Web | ServiceKind::Worker => StrategyKind::Rolling,
        ServiceKind::Cron => StrategyKind::Recreate,
    };
    let restart_default = match kind {
        ServiceKind::Cron => RestartPolicy::Never,
        _ => RestartPolicy::Always,
    };
    let restart = match &s.restart {
        None => ResolvedRestart::defaults(restart_default),
        Some(RestartSpec::Policy(p)) => ResolvedRestart::defaults(*p),
        Some(RestartSpec::Full(r)) => {
            let d = ResolvedRestart::defaults(r.policy.unwrap_or(restart_default));
            ResolvedRestart {
                max_retries: r.max_retries,
                backoff: r.backoff.unwrap_or(d.backoff),
                max_backoff: r.max_backoff.unwrap_or(d.max_backoff),
                crashloop_restarts: r.crashloop_restarts.unwrap_or(d.crashloop_restarts),
                crashloop_window: r.crashloop_window.unwrap_or(d.crashloop_window),
                ..d
            }
        }
    };
    let stop = s.stop.clone().unwrap_or_default();
    ResolvedService {
        name: name.to_string(),
        kind,
        build: s.build.clone(),
        start: s.start.clone().unwrap_or_default(),
        cwd: s
            .cwd
            .as_ref()
            .map_or_else(|| dir.to_path_buf(), |c| dir.join(c)),
        port: s.port,
        replicas,
        readiness,
        liveness,
        strategy: resolve_strategy(strategy_spec, default_kind, replicas),
        drain: s.drain.unwrap_or(Duration::from_secs(30)),
        stop_signal: stop.signal.unwrap_or_default(),
        stop_grace: stop.grace.unwrap_or(Duration::from_secs(30)),
        restart,
        cron: (kind == ServiceKind::Cron).then(|| CronSchedule {
            schedule: s.schedule.clone().unwrap_or_default(),
            timezone: s.timezone.clone().unwrap_or_else(|| "UTC".to_string()),
            concurrency: s.concurrency.unwrap_or_default(),
            timeout: s.timeout,
        }),
        after: s.after.clone().unwrap_or_default(),
        env,
        secrets: secrets_for_service,
        resources: s.resources.clone(),
        image: s.image.clone(),
        metrics: s.metrics.as_ref().map(|m| ResolvedScrape {
            path: m.path.clone().unwrap_or_else(|| "/metrics".into()),
            interval: m.interval.unwrap_or(Duration::from_secs(15)),
            port: m.port,
        }),
    }
}

impl ResolvedRestart {
    fn defaults(policy: RestartPolicy) -> Self {
        ResolvedRestart {
            policy,
            max_retries: None,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            crashloop_restarts: 5,
            crashloop_window: Duration::from_secs(120),
        }
    }
}

fn default_probe(check: ProbeCheck, liveness: bool) -> Probe {
    Probe {
        check,
        interval: if liveness {
            Duration::from_secs(5)
        } else {
            DEFAULT_READINESS_INTERVAL
        },
        timeout: Duration::from_secs(2),
        start_period: Duration::from_secs(0),
        healthy_threshold: 1,
        unhealthy_threshold: 3,
    }
}

/// The kind a health check table means, written or guessed from its fields.
pub(crate) fn health_kind(check: &HealthCheck) -> HealthKind {
    check.kind.unwrap_or(if check.command.is_some() {
        HealthKind::Command
    } else if check.file.is_some() {
        HealthKind::Heartbeat
    } else {
        HealthKind::Http
    })
}

fn probe(spec: &HealthSpec, liveness: bool) -> Probe {
    let check = match spec {
        HealthSpec::Path(path) => {
            return default_probe(
                ProbeCheck::Http {
                    path: path.clone(),
                    status: None,
                },
                liveness,
            );
        }
        HealthSpec::Check(c) => c,
    };
    let base = default_probe(ProbeCheck::Tcp, liveness);
    let interval = check.interval.unwrap_or(base.interval);
    let kind = health_kind(check);
    let probe_check = match kind {
        HealthKind::Http => ProbeCheck::Http {
            path: check.path.clone().unwrap_or_else(|| "/health".to_string()),
            status: check.status,
        },
        HealthKind::Tcp => ProbeCheck::Tcp,
        HealthKind::Command => ProbeCheck::Command {
            command: check.command.clone().unwrap_or_default(),
        },
        HealthKind::Heartbeat => ProbeCheck::Heartbeat {
            file: check.file.clone().unwrap_or_default(),
            max_age: check
                .max_age
                .unwrap_or(Duration(interval.0.saturating_mul(3))),
        },
        HealthKind::Uptime => ProbeCheck::Uptime,
    };
    let default_start = if kind == HealthKind::Uptime {
        Duration::from_secs(5)
    } else {
        base.start_period
    };
    Probe {
        check: probe_check,
        interval,
        timeout: check.timeout.unwrap_or(base.timeout),
        start_period: check.start_period.unwrap_or(default_start),
        healthy_threshold: check.healthy_threshold.unwrap_or(base.healthy_threshold),
        unhealthy_threshold: check
            .unhealthy_threshold
            .unwrap_or(base.unhealthy_threshold),
    }
}

/// Default canary steps: 5 %, 25 %, 50 %, 100 %.
pub const DEFAULT_CANARY_STEPS: [f64; 4] = [5.0, 25.0, 50.0, 100.0];

fn resolve_strategy(
    spec: Option<&StrategySpec>,
    default_kind: StrategyKind,
    replicas: u32,
) -> ResolvedStrategy {
    let full = match spec {
        Some(StrategySpec::Full(f)) => (**f).clone(),
        Some(StrategySpec::Kind(k)) => crate::model::Strategy {
            kind: Some(*k),
            ..Default::default()
        },
        None => Default::default(),
    };
    let count = |c: Option<Count>, default: u32| match c {
        None => default,
        Some(Count::Absolute(n)) => n,
        Some(Count::Percent(p)) => (p.ratio() * f64::from(replicas)).ceil() as u32,
    };
    let bake = full.bake.unwrap_or(Duration::from_secs(3));
    let mut steps: Vec<ResolvedStep> = match &full.steps {
        Some(list) => list
            .iter()
            .map(|step| match step {
                CanaryStep::Weight(p) => ResolvedStep {
                    weight: p.percent(),
                    bake,
                    pause: StepPause::None,
                },
                CanaryStep::Step(s) => ResolvedStep {
                    weight: s.weight.map_or(0.0, Percent::percent),
                    bake: s.bake.unwrap_or(bake),
                    pause: match &s.pause {
                        None | Some(Pause::UntilPromoted(false)) => StepPause::None,
                        Some(Pause::UntilPromoted(true)) => StepPause::UntilPromoted,
                        Some(Pause::For(d)) => StepPause::For(*d),
                    },
                },
            })
            .collect(),
        None => DEFAULT_CANARY_STEPS
            .iter()
            .map(|&weight| ResolvedStep {
                weight,
                bake,
                pause: StepPause::None,
            })
            .collect(),
    };
    // A pause-only step keeps the previous weight.
    let mut last = 0.0;
    for step in &mut steps {
        if step.weight == 0.0 && step.pause != StepPause::None {
            step.weight = last;
        }
        last = step.weight;
    }
    if steps.last().is_none_or(|s| s.weight < 100.0) {
        steps.push(ResolvedStep {
            weight: 100.0,
            bake: Duration::from_secs(0),
            pause: StepPause::None,
        });
    }
    let a = full.analysis.clone().unwrap_or_default();
    let sticky = full.sticky.clone().unwrap_or_default();
    ResolvedStrategy {
        kind: full.kind.unwrap_or(default_kind),
        max_surge: count(full.max_surge, 1),
        max_unavailable: count(full.max_unavailable, 0),
        steps,
        standby: full.standby.unwrap_or(Duration::from_secs(900)),
        overlap: full.overlap.unwrap_or(Duration::from_secs(0)),
        sticky_cookie: sticky
            .cookie
            .unwrap_or_else(|| "slipway-release".to_string()),
        sticky_header: sticky.header,
        canary_tenants: full.canary_tenants.clone().unwrap_or_default(),
        analysis: ResolvedAnalysis {
            interval: a.interval.unwrap_or(Duration::from_secs(1)),
            min_requests: a.min_requests.unwrap_or(20),
            max_error_rate: a.max_error_rate.map_or(0.05, Percent::ratio),
            max_error_rate_increase: a.max_error_rate_increase.map_or(0.01, Percent::ratio),
            max_p95: a.max_p95,
            max_p99: a.max_p99,
            max_p95_increase: a.max_p95_increase.map_or(0.2, Percent::ratio),
            latency_tolerance: a.latency_tolerance.unwrap_or(Duration::from_millis(5)),
            failure_limit: a.failure_limit.unwrap_or(2),
            judge: a.judge.unwrap_or(true),
            watch: a.watch.unwrap_or(Duration::from_secs(0)),
            idle: a.idle.unwrap_or_default(),
        },
    }
}
