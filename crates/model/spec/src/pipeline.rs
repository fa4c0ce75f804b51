//! The delivery pipeline, resolved: stages in order, jobs with their steps, and the typed
//! settings (`with`) of each built-in step, with defaults filled in.
//!
//! Without `[pipeline]` jobs, a project gets the default pipeline of the seeds: scan (secret
//! scan), deploy, smoke (its web services' readiness paths) and monitor. Every `deploy` step also
//! enforces its environment's own gates (`requires`, `approval = "manual"`, a freeze), whether or
//! not the job spells them out with `require`, `approve` and `policy` steps.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::DEFAULT_STAGES;
use crate::model::{BuiltinStep, Config, EnvMap, RunConcurrency, WebhookFormat, When};
use crate::units::Duration;

/// `with` of a `smoke` step: HTTP checks of a web service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmokeWith {
    /// The web service checked (default: the first one with a public port).
    pub service: Option<String>,
    /// Checks, in order (default: `GET` of the service's readiness path).
    #[serde(default)]
    pub checks: Vec<SmokeCheck>,
    /// Attempts of each check before it fails (default 5).
    pub attempts: Option<u32>,
    /// First wait between attempts, doubling up to 10s (default 500ms); 10s or more stays as is.
    pub backoff: Option<Duration>,
    /// Longest all checks may take together (default 90s).
    pub timeout: Option<Duration>,
}

/// One HTTP smoke check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmokeCheck {
    /// A name shown in results (default: `METHOD path`).
    pub name: Option<String>,
    /// HTTP method (default GET).
    pub method: Option<String>,
    /// Path, with its query.
    pub path: String,
    /// Request headers.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Request body.
    pub body: Option<String>,
    /// Expected status (default: any 2xx).
    pub status: Option<u16>,
    /// Text the response body must contain.
    pub contains: Option<String>,
    /// JSON fields the response must have, by JSON pointer (`"/version" = "v2"`).
    #[serde(default)]
    #[schemars(with = "IndexMap<String, serde_json::Value>")]
    pub json: IndexMap<String, serde_json::Value>,
}

/// `with` of a `monitor` step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorWith {
    /// How long the new release is watched after it has all the traffic (default: its
    /// services' `analysis.watch`, else 5m).
    pub window: Option<Duration>,
}

/// `with` of a `require` step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequireWith {
    /// The environment the same commit must have passed in (default: the run's environment's
    /// `requires`).
    pub environment: Option<String>,
}

/// `with` of a `deploy` step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployWith {
    /// Strategy for every web service instead of their own.
    pub strategy: Option<crate::model::StrategyKind>,
}

/// `with` of an `approve` step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveWith {
    /// Longest the run waits for `slipway approve` before it fails (default: no limit).
    pub timeout: Option<Duration>,
}

/// `with` of a `secret-scan` step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretScanWith {
    /// Allow-list file in the repository (default: `[pipeline] secret_allowlist`).
    pub allowlist: Option<String>,
}

/// `with` of a `policy` step (nothing to set yet).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyWith {}

/// What a step does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Action {
    /// A shell command.
    Run {
        /// The command.
        command: String,
        /// The shell and its flags, before the command (`sh -e`).
        shell: String,
    },
    /// Deploy the commit.
    Deploy(DeployWith),
    /// HTTP checks.
    Smoke(SmokeWith),
    /// The post-deploy watch.
    Monitor(MonitorWith),
    /// Scan tracked files for secrets.
    SecretScan(SecretScanWith),
    /// Wait for `slipway approve`.
    Approve(ApproveWith),
    /// The same commit green elsewhere first.
    Require(RequireWith),
    /// Deploys allowed now?
    Policy(PolicyWith),
}

/// A step, resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedStep {
    /// Shown in progress and logs.
    pub name: String,
    /// What it does.
    pub action: Action,
    /// Its variables (the job's, then its own).
    pub env: IndexMap<String, String>,
    /// Working directory, relative to the checkout.
    pub cwd: Option<String>,
    /// Longest it may take.
    pub timeout: Option<Duration>,
    /// Extra attempts after a failure.
    pub retries: u32,
}

/// A job, resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedJob {
    /// Name.
    pub name: String,
    /// Its stage.
    pub stage: String,
    /// Jobs of the run that must succeed first.
    pub needs: Vec<String>,
    /// Runs only when this matches.
    pub when: Option<When>,
    /// Steps, in order.
    pub steps: Vec<ResolvedStep>,
    /// Paths handed to later stages.
    pub artifacts: Vec<String>,
    /// Longest the whole job may take.
    pub timeout: Option<Duration>,
}

/// The pipeline, resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedPipeline {
    /// Stage names, in order.
    pub stages: Vec<String>,
    /// Jobs, in file order.
    pub jobs: Vec<ResolvedJob>,
    /// A new run while another runs in the same environment: queue or supersede.
    pub concurrency: RunConcurrency,
    /// Run reports are posted here.
    pub webhook: Option<(String, WebhookFormat)>,
    /// A repository followed for pushes, and how often.
    pub watch: Option<(String, Duration)>,
    /// The secret scan's allow-list file in the repository.
    pub secret_allowlist: String,
}

/// The default allow-list file of the secret scan.
pub const DEFAULT_ALLOWLIST: &str = ".slipway-secrets-allow";

/// Why a built-in step's `with` is not right.
pub fn check_with(
    uses: BuiltinStep,
    with: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), String> {
    let v = serde_json::Value::Object(with.clone());
    let r = match uses {
        BuiltinStep::Deploy => serde_json::from_value::<DeployWith>(v).map(|_| ()),
        BuiltinStep::Smoke => serde_json::from_value::<SmokeWith>(v).map(|_| ()),
        BuiltinStep::Monitor => serde_json::from_value::<MonitorWith>(v).map(|_| ()),
        BuiltinStep::SecretScan => serde_json::from_value::<SecretScanWith>(v).map(|_| ()),
        BuiltinStep::Approve => serde_json::from_value::<ApproveWith>(v).map(|_| ()),
        BuiltinStep::Require => serde_json::from_value::<RequireWith>(v).map(|_| ()),
        BuiltinStep::Policy => serde_json::from_value::<PolicyWith>(v).map(|_| ()),
    };
    r.map_err(|e| e.to_string())
}

fn builtin_name(b: BuiltinStep) -> &'static str {
    match b {
        BuiltinStep::Deploy => "deploy",
        BuiltinStep::Smoke => "smoke",
        BuiltinStep::Monitor => "monitor",
        BuiltinStep::SecretScan => "secret-scan",
        BuiltinStep::Approve => "approve",
        BuiltinStep::Require => "require",
        BuiltinStep::Policy => "policy",
    }
}

fn action(uses: BuiltinStep, with: Option<&serde_json::Map<String, serde_json::Value>>) -> Action {
    fn typed<T: for<'de> Deserialize<'de> + Default>(
        with: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> T {
        // The file was checked (`check_with`) before it got here.
        with.and_then(|w| serde_json::from_value(serde_json::Value::Object(w.clone())).ok())
            .unwrap_or_default()
    }
    match uses {
        BuiltinStep::Deploy => Action::Deploy(typed(with)),
        BuiltinStep::Smoke => Action::Smoke(typed(with)),
        BuiltinStep::Monitor => Action::Monitor(typed(with)),
        BuiltinStep::SecretScan => Action::SecretScan(typed(with)),
        BuiltinStep::Approve => Action::Approve(typed(with)),
        BuiltinStep::Require => Action::Require(typed(with)),
        BuiltinStep::Policy => Action::Policy(typed(with)),
    }
}

fn text(env: &EnvMap) -> IndexMap<String, String> {
    env.iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect()
}

fn builtin_step(name: &str, uses: BuiltinStep) -> ResolvedStep {
    ResolvedStep {
        name: name.to_string(),
        action: action(uses, None),
        env: IndexMap::new(),
        cwd: None,
        timeout: None,
        retries: 0,
    }
}

/// The project's pipeline (the default one when it declares no jobs).
pub fn resolve(config: &Config) -> ResolvedPipeline {
    let p = config.pipeline.clone().unwrap_or_default();
    let stages = p
        .stages
        .clone()
        .unwrap_or_else(|| DEFAULT_STAGES.iter().map(|s| s.to_string()).collect());
    let mut jobs: Vec<ResolvedJob> = p
        .jobs
        .iter()
        .map(|(name, job)| {
            let job_env = text(&job.env);
            ResolvedJob {
                name: name.clone(),
                stage: job.stage.clone(),
                needs: job.needs.clone(),
                when: job.when.clone(),
                steps: job
                    .steps
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let mut env = job_env.clone();
                        env.extend(text(&s.env));
                        let action = match (&s.run, s.uses) {
                            (_, Some(uses)) => action(uses, s.with.as_ref()),
                            (Some(cmd), None) => Action::Run {
                                command: cmd.clone(),
                                shell: s.shell.clone().unwrap_or_else(|| "sh -e".to_string()),
                            },
                            (None, None) => Action::Run {
                                command: "true".into(),
                                shell: "sh -e".into(),
                            },
                        };
                        let name = s.name.clone().unwrap_or_else(|| match (&s.run, s.uses) {
                            (_, Some(uses)) => builtin_name(uses).to_string(),
                            (Some(cmd), _) => {
                                cmd.lines().next().unwrap_or(cmd).chars().take(40).collect()
                            }
                            _ => format!("step {}", i + 1),
                        });
                        ResolvedStep {
                            name,
                            action,
                            env,
                            cwd: s.cwd.clone(),
                            timeout: s.timeout,
                            retries: s.retries.unwrap_or(0),
                        }
                    })
                    .collect(),
                artifacts: job.artifacts.clone(),
                timeout: job.timeout,
            }
        })
        .collect();
    if jobs.is_empty() {
        let job = |name: &str, stage: &str, steps: Vec<ResolvedStep>| ResolvedJob {
            name: name.into(),
            stage: stage.into(),
            needs: Vec::new(),
            when: None,
            steps,
            artifacts: Vec::new(),
            timeout: None,
        };
        jobs = vec![
            job(
                "scan",
                "scan",
                vec![builtin_step("secret-scan", BuiltinStep::SecretScan)],
            ),
            job(
                "deploy",
                "deploy",
                vec![builtin_step("deploy", BuiltinStep::Deploy)],
            ),
            job(
                "smoke",
                "smoke",
                vec![builtin_step("smoke", BuiltinStep::Smoke)],
            ),
            job(
                "monitor",
                "monitor",
                vec![builtin_step("monitor", BuiltinStep::Monitor)],
            ),
        ];
        jobs.retain(|j| stages.contains(&j.stage));
    }
    ResolvedPipeline {
        stages,
        jobs,
        concurrency: p.concurrency.unwrap_or_default(),
        webhook: p
            .webhook
            .map(|w| (w.url, w.format.unwrap_or(WebhookFormat::Slipway))),
        watch: p
            .watch
            .map(|w| (w.repo, w.interval.unwrap_or(Duration::from_secs(30)))),
        secret_allowlist: p
            .secret_allowlist
            .unwrap_or_else(|| DEFAULT_ALLOWLIST.to_string()),
    }
}

/// Whether `pattern` (with `*` for any run of characters) matches `text` whole.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

impl When {
    /// Whether a run of `environment` at `branch` or `tag` matches.
    pub fn matches(&self, environment: &str, branch: Option<&str>, tag: Option<&str>) -> bool {
        let env_ok = self.environment.as_deref().is_none_or(|e| e == environment);
        let branch_ok = self
            .branch
            .as_deref()
            .is_none_or(|p| branch.is_some_and(|b| glob_match(p, b)));
        let tag_ok = self
            .tag
            .as_deref()
            .is_none_or(|p| tag.is_some_and(|t| glob_match(p, t)));
        env_ok && branch_ok && tag_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_branches_and_tags() {
        assert!(glob_match("v*.*.*", "v1.2.3"));
        assert!(!glob_match("v*.*.*", "v1.2"));
        assert!(glob_match("main", "main"));
        assert!(!glob_match("main", "maintenance"));
        assert!(glob_match("release/*", "release/2026-11"));
        assert!(glob_match("*", "anything"));
    }

    #[test]
    fn when_matches_environment_branch_and_tag() {
        let w = When {
            branch: Some("release/*".into()),
            tag: None,
            environment: Some("production".into()),
        };
        assert!(w.matches("production", Some("release/1"), None));
        assert!(!w.matches("staging", Some("release/1"), None));
        assert!(!w.matches("production", Some("main"), None));
        let tags = When {
            tag: Some("v*".into()),
            ..Default::default()
        };
        assert!(tags.matches("any", None, Some("v2")));
        assert!(!tags.matches("any", Some("v2-branch"), None));
        assert!(When::default().matches("any", None, None));
    }

    #[test]
    fn without_jobs_the_default_pipeline_scans_deploys_smokes_and_monitors() {
        let p = resolve(&Config::default());
        let names: Vec<&str> = p.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["scan", "deploy", "smoke", "monitor"]);
        assert_eq!(p.stages, DEFAULT_STAGES);
        assert_eq!(p.secret_allowlist, DEFAULT_ALLOWLIST);
    }

    #[test]
    fn builtin_settings_are_checked() {
        let mut with = serde_json::Map::new();
        with.insert("checks".into(), serde_json::json!([{ "pth": "/" }]));
        let err = check_with(BuiltinStep::Smoke, &with).unwrap_err();
        assert!(err.contains("unknown field `pth`"), "{err}");
        let mut ok = serde_json::Map::new();
        ok.insert(
            "checks".into(),
            serde_json::json!([{ "path": "/health", "status": 200, "json": { "/status": "ok" } }]),
        );
        ok.insert("timeout".into(), serde_json::json!("90s"));
        check_with(BuiltinStep::Smoke, &ok).unwrap();
    }
}
