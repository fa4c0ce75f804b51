//! The deploy engine: starts deployments and rollbacks, carries each out in a task of its own
//! ([`crate::run`], [`crate::strategy`], [`crate::finish`]), takes people's controls (promote,
//! pause, resume, abort), and at start-up brings every environment back to what the store says
//! — its current release, a warm standby, and deployments a crash interrupted, which it rolls
//! back (or, if they had committed, finishes).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::json;
use slipway_spec::model::StrategyKind;
use slipway_spec::resolve::ResolvedEnv;
use slipway_store::{
    DeploymentRecord, EventLevel, NewDeployment, NewEvent, NewRelease, Store, StoreError,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::finish;
use crate::platform::{Platform, ServiceTraffic};
use crate::record::{
    DeploymentState, EnvironmentData, KIND_DEPLOY, KIND_ROLLBACK, ServiceProgress, status,
};
use crate::release::{ReleaseSnapshot, describe, release_id};
use crate::run::{Controls, Loaded, Run, Stop, now_ms};
use crate::strategy::{self, routed};

/// A deploy someone asked for.
#[derive(Clone, Debug)]
pub struct DeployRequest {
    /// Environment.
    pub environment: String,
    /// The environment resolved from the project file now.
    pub config: ResolvedEnv,
    /// The file's applied generation.
    pub generation: i64,
    /// Code version label (default: the project's git commit, else `local`).
    pub version: Option<String>,
    /// Strategy forced on every web service.
    pub strategy: Option<StrategyKind>,
    /// Variables set for every service, kept for later releases.
    pub set: IndexMap<String, String>,
    /// Variables no longer overridden.
    pub unset: Vec<String>,
    /// What the release is, for people (default: what changed).
    pub message: Option<String>,
    /// Who asked.
    pub actor: String,
    /// Secret name → a digest of its value.
    pub secrets: IndexMap<String, String>,
    /// Smoke checks on the preview route before any traffic moves.
    pub smoke: Option<crate::smoke::SmokePlan>,
    /// How long to watch the release after the switch, instead of its services' own watch.
    pub watch: Option<std::time::Duration>,
    /// An admin's override of the environment's gates (freeze, `requires`, approval); the
    /// gates it goes past are recorded.
    pub force: bool,
    /// Who approved this deploy, where a person did (a pipeline run's `slipway approve`).
    pub approved_by: Option<String>,
    /// The commit, when a pipeline run deploys one.
    pub commit: Option<crate::release::Commit>,
    /// A fix: an SLO's budget freeze lets it through.
    pub fix: bool,
}

/// What people can do to a running deployment.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Go on from a pause; with `full`, skip the remaining steps.
    Promote {
        /// Skip the remaining steps.
        full: bool,
    },
    /// Stop the clock.
    Pause,
    /// Start it again.
    Resume,
    /// Roll back.
    Abort {
        /// Why.
        reason: String,
    },
}

/// Why the engine refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Another deployment holds the environment.
    #[error("{detail}")]
    Busy {
        /// The environment.
        environment: String,
        /// The deployment holding it.
        active: i64,
        /// For people.
        detail: String,
    },
    /// The request itself is wrong.
    #[error("{0}")]
    Invalid(String),
    /// Nothing to act on.
    #[error("{0}")]
    NotFound(String),
    /// Not possible in the current state.
    #[error("{0}")]
    Conflict(String),
    /// A gate of the environment holds it back.
    #[error(transparent)]
    Refused(#[from] crate::policy::Refusal),
    /// The store failed.
    #[error("the state store failed")]
    Store(#[from] StoreError),
}

struct Handle {
    environment: String,
    controls: watch::Sender<Controls>,
}

struct Inner {
    store: Arc<dyn Store>,
    platform: Arc<dyn Platform>,
    running: Mutex<HashMap<i64, Handle>>,
    shutdown: CancellationToken,
}

/// See the module docs.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The code version of a project folder: its git commit when it is a repository.
pub fn code_version(dir: &std::path::Path) -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "local".to_string())
}

fn valid_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Engine {
    /// An engine on `store` driving `platform`.
    pub fn new(store: Arc<dyn Store>, platform: Arc<dyn Platform>) -> Self {
        Engine {
            inner: Arc::new(Inner {
                store,
                platform,
                running: Mutex::new(HashMap::new()),
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// Stops every deployment where it is (its state is persisted; the next start resumes or
    /// rolls it back), for the control plane's shutdown.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    async fn load(&self, environment: &str, number: i64) -> Result<Loaded, DeployError> {
        let record = self
            .inner
            .store
            .release(environment, number)
            .await?
            .ok_or_else(|| {
                DeployError::NotFound(format!(
                    "no release r{number} in `{environment}` (see `slipway releases`)"
                ))
            })?;
        Loaded::new(&record).map_err(DeployError::Invalid)
    }

    /// The release an environment runs, if it has one.
    pub async fn current_release(
        &self,
        environment: &str,
    ) -> Result<Option<slipway_store::ReleaseRecord>, DeployError> {
        let state = self.inner.store.environment_state(environment).await?;
        match state.current_release {
            Some(n) => Ok(self.inner.store.release(environment, n).await?),
            None => Ok(None),
        }
    }

    pub(crate) async fn current(&self, environment: &str) -> Result<Option<Loaded>, DeployError> {
        let state = self.inner.store.environment_state(environment).await?;
        match state.current_release {
            Some(n) => Ok(Some(self.load(environment, n).await?)),
            None => Ok(None),
        }
    }

    /// The generation of the project file an environment's current release was built from.
    pub async fn current_generation(&self, environment: &str) -> Result<Option<i64>, DeployError> {
        Ok(self
            .current(environment)
            .await?
            .map(|l| l.snapshot.generation))
    }

    async fn busy(&self, environment: &str) -> Result<(), DeployError> {
        let active = self.inner.store.active_deployments().await?;
        if let Some(d) = active.iter().find(|d| d.environment == environment) {
            return Err(busy_error(d));
        }
        Ok(())
    }

    /// Records a release and starts deploying it.
    pub async fn deploy(&self, req: DeployRequest) -> Result<DeploymentRecord, DeployError> {
        for key in req.set.keys().chain(&req.unset) {
            if !valid_name(key) {
                return Err(DeployError::Invalid(format!(
                    "`{key}` is not a variable name (letters, digits and `_`, not starting with a digit)"
                )));
            }
        }
        self.busy(&req.environment).await?;
        let store = &self.inner.store;
        let env_state = store.environment_state(&req.environment).await?;
        let data = EnvironmentData::from_value(&env_state.data);
        let version = req
            .version
            .clone()
            .unwrap_or_else(|| code_version(&req.config.dir));
        let admission = crate::policy::admit(
            store.as_ref(),
            crate::policy::Ask {
                environment: &req.environment,
                gate: &req.config.gate,
                change: crate::policy::Change::Deploy {
                    version: &version,
                    commit: req.commit.as_ref().map(|c| c.sha.as_str()),
                },
                approved_by: req.approved_by.as_deref(),
                force: req.force,
                fix: req.fix,
            },
        )
        .await
        .map_err(|e| match e {
            crate::policy::PolicyError::Refused(r) => DeployError::Refused(r),
            crate::policy::PolicyError::Store(s) => DeployError::Store(s),
        })?;
        if let Some(k) = req.unset.iter().find(|k| !data.overrides.contains_key(*k)) {
            let set: Vec<&str> = data.overrides.keys().map(String::as_str).collect();
            return Err(DeployError::Invalid(format!(
                "`--unset {k}`: no `--set` of {} overrides `{k}` ({}); a value from slipway.toml is changed there",
                req.environment,
                if set.is_empty() {
                    "it has no overrides".to_string()
                } else {
                    format!("its overrides: {}", set.join(", "))
                }
            )));
        }
        let mut overrides = data.overrides.clone();
        for k in &req.unset {
            overrides.shift_remove(k);
        }
        for (k, v) in &req.set {
            overrides.insert(k.clone(), v.clone());
        }
        let mut snapshot =
            ReleaseSnapshot::new(&req.config, overrides, req.secrets.clone(), req.generation);
        snapshot.commit.clone_from(&req.commit);
        let current = match env_state.current_release {
            Some(n) => Some(self.load(&req.environment, n).await?),
            None => None,
        };
        let description = req
            .message
            .clone()
            .unwrap_or_else(|| describe(current.as_ref().map(|c| &c.snapshot), &snapshot));
        let record = store
            .create_release(NewRelease {
                environment: req.environment.clone(),
                version,
                description,
                snapshot: serde_json::to_value(&snapshot).unwrap_or_default(),
            })
            .await?;
        let new = Loaded::new(&record).map_err(DeployError::Invalid)?;
        let mut state = DeploymentState {
            actor: req.actor.clone(),
            strategy: req.strategy,
            smoke: req.smoke.clone(),
            watch: req.watch,
            forced: admission.forced.clone(),
            gates: admission.passed.clone(),
            ..Default::default()
        };
        for (name, spec) in &snapshot.config.services {
            let old_replicas = current
                .as_ref()
                .and_then(|c| c.service(name))
                .map_or(0, |s| s.replicas);
            state.services.insert(
                name.clone(),
                ServiceProgress::new(strategy::effective(spec, req.strategy), old_replicas),
            );
        }
        let deployment = match store
            .create_deployment(NewDeployment {
                environment: req.environment.clone(),
                kind: KIND_DEPLOY.into(),
                release: new.number,
                from_release: current.as_ref().map(|c| c.number),
                status: status::RUNNING.into(),
                state: serde_json::to_value(&state).unwrap_or_default(),
            })
            .await
        {
            Ok(d) => d,
            Err(StoreError::Busy { active, .. }) => {
                return Err(match store.deployment(active).await? {
                    Some(d) => busy_error(&d),
                    None => DeployError::Conflict(format!(
                        "another deployment of `{}` is going",
                        req.environment
                    )),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let strategies: Vec<String> = state
            .services
            .iter()
            .map(|(n, p)| format!("{n} {}", strategy_name(p.strategy)))
            .collect();
        self.event(
            NewEvent::info(
                "deploy.started",
                format!(
                    "deployment {} of {} ({}) started by {}: {}",
                    deployment.id,
                    new.release.id,
                    new.release.version,
                    req.actor,
                    strategies.join(", ")
                ),
            )
            .environment(&req.environment)
            .subject(format!("deployment-{}", deployment.id))
            .data(json!({
                "deployment": deployment.id, "release": new.release.id,
                "from": current.as_ref().map(|c| c.release.id.clone()),
                "version": new.release.version, "actor": req.actor,
                "gates": admission.passed, "forced": admission.forced,
            })),
        )
        .await;
        self.spawn(&deployment, new, current, state, false);
        Ok(deployment)
    }

    /// Rolls an environment back to `to` (default: its previous release). While a deployment
    /// is going, that deployment is aborted instead and rolls back by itself.
    pub async fn rollback(
        &self,
        environment: &str,
        to: Option<i64>,
        reason: Option<String>,
        actor: &str,
    ) -> Result<DeploymentRecord, DeployError> {
        let store = &self.inner.store;
        let active = store.active_deployments().await?;
        if let Some(d) = active.iter().find(|d| d.environment == environment) {
            if d.kind == KIND_DEPLOY && to.is_none_or(|t| Some(t) == d.from_release) {
                return self
                    .control(
                        environment,
                        Action::Abort {
                            reason: reason.unwrap_or_else(|| "rollback requested".into()),
                        },
                        actor,
                    )
                    .await;
            }
            return Err(busy_error(d));
        }
        let env_state = store.environment_state(environment).await?;
        let current_number = env_state.current_release.ok_or_else(|| {
            DeployError::NotFound(format!(
                "`{environment}` has no release yet; deploy one with `slipway deploy`"
            ))
        })?;
        let target_number = to.or(env_state.previous_release).ok_or_else(|| {
            DeployError::NotFound(format!(
                "`{environment}` has no previous release; name one with `--to` (see `slipway releases`)"
            ))
        })?;
        if target_number == current_number {
            return Err(DeployError::Conflict(format!(
                "r{target_number} is already the current release of `{environment}`"
            )));
        }
        let record = store
            .release(environment, target_number)
            .await?
            .ok_or_else(|| {
                DeployError::NotFound(format!(
                    "no release r{target_number} in `{environment}` (see `slipway releases`)"
                ))
            })?;
        if record.pruned {
            return Err(DeployError::Conflict(format!(
                "r{target_number} was pruned by retention (`[deploy] retain`); pin releases you want to keep with `slipway releases pin`"
            )));
        }
        let target = Loaded::new(&record).map_err(DeployError::Invalid)?;
        let current = self.load(environment, current_number).await?;
        let data = EnvironmentData::from_value(&env_state.data);
        let warm = data
            .standby
            .as_ref()
            .is_some_and(|s| s.release == target_number);
        let reason = format!(
            "{} by {actor}{}",
            if warm {
                "instant rollback (warm standby)"
            } else {
                "rollback"
            },
            reason.map(|r| format!(": {r}")).unwrap_or_default()
        );
        let mut state = DeploymentState {
            actor: actor.to_string(),
            reason: Some(reason.clone()),
            ..Default::default()
        };
        for (name, spec) in &target.snapshot.config.services {
            let mut p = ServiceProgress::new(spec.strategy.kind, 0);
            p.detail = if warm {
                "warm".into()
            } else {
                "starting".into()
            };
            state.services.insert(name.clone(), p);
        }
        let deployment = store
            .create_deployment(NewDeployment {
                environment: environment.to_string(),
                kind: KIND_ROLLBACK.into(),
                release: target.number,
                from_release: Some(current.number),
                status: status::RUNNING.into(),
                state: serde_json::to_value(&state).unwrap_or_default(),
            })
            .await
            .map_err(|e| match e {
                StoreError::Busy {
                    environment,
                    active,
                } => DeployError::Busy {
                    detail: format!("deployment {active} of `{environment}` is still going"),
                    environment,
                    active,
                },
                other => other.into(),
            })?;
        self.event(
            NewEvent::info(
                "rollback.started",
                format!(
                    "rolling {environment} back from {} to {}: {reason}",
                    current.release.id, target.release.id
                ),
            )
            .level(EventLevel::Warning)
            .environment(environment)
            .subject(format!("deployment-{}", deployment.id))
            .data(json!({
                "deployment": deployment.id, "from": current.release.id,
                "to": target.release.id, "reason": reason, "warm": warm,
            })),
        )
        .await;
        self.spawn(&deployment, target, Some(current), state, false);
        Ok(deployment)
    }

    /// Promote, pause, resume or abort the deployment going on in `environment`.
    pub async fn control(
        &self,
        environment: &str,
        action: Action,
        actor: &str,
    ) -> Result<DeploymentRecord, DeployError> {
        // `resume` only ends a `slipway pause`: a pause that waits for a decision (a pause
        // step, an analysis that stayed inconclusive) is not lifted by it, so say so.
        if action == Action::Resume
            && let Some(d) = self
                .inner
                .store
                .active_deployments()
                .await?
                .into_iter()
                .find(|d| d.environment == environment)
        {
            let state: DeploymentState =
                serde_json::from_value(d.state.clone()).unwrap_or_default();
            if d.status != status::PAUSED {
                return Err(DeployError::Conflict(format!(
                    "deployment {} is not paused (it is {}); `slipway pause` stops its clock",
                    d.id, d.status
                )));
            }
            if state.needs_promotion {
                let why = state.paused.unwrap_or_default();
                let what = if why.contains("slipway promote") {
                    String::new()
                } else {
                    "; `slipway promote` lets it go on, `slipway abort` rolls it back".into()
                };
                return Err(DeployError::Conflict(format!(
                    "deployment {} waits for a decision, not a resume: {why}{what}",
                    d.id
                )));
            }
        }
        let id = {
            let running = lock(&self.inner.running);
            let Some((id, handle)) = running.iter().find(|(_, h)| h.environment == environment)
            else {
                return Err(DeployError::NotFound(format!(
                    "no deployment of `{environment}` is going (see `slipway deployments`)"
                )));
            };
            handle.controls.send_modify(|c| match &action {
                Action::Pause => c.paused = true,
                Action::Resume => c.paused = false,
                Action::Promote { full } => {
                    c.paused = false;
                    c.promotions += 1;
                    c.full |= *full;
                }
                Action::Abort { reason } => {
                    c.abort = Some(format!("aborted by {actor}: {reason}"));
                    c.abort_at_ms
                        .get_or_insert(jiff::Timestamp::now().as_millisecond());
                }
            });
            *id
        };
        let what = match &action {
            Action::Pause => "paused".to_string(),
            Action::Resume => "resumed".to_string(),
            Action::Promote { full: true } => "promoted to the end".to_string(),
            Action::Promote { full: false } => "promoted".to_string(),
            Action::Abort { reason } => format!("aborted ({reason})"),
        };
        self.event(
            NewEvent::info(
                "deploy.control",
                format!("deployment {id} {what} by {actor}"),
            )
            .environment(environment)
            .subject(format!("deployment-{id}"))
            .data(json!({ "deployment": id, "actor": actor })),
        )
        .await;
        self.inner
            .store
            .deployment(id)
            .await?
            .ok_or_else(|| DeployError::NotFound(format!("no deployment {id}")))
    }

    /// Waits until a deployment has ended (or, with `watching`, until it only watches the new
    /// release, all traffic on it), polling the store.
    pub async fn wait(&self, id: i64, watching: bool) -> Result<DeploymentRecord, DeployError> {
        loop {
            let d = self
                .inner
                .store
                .deployment(id)
                .await?
                .ok_or_else(|| DeployError::NotFound(format!("no deployment {id}")))?;
            if !d.active || (watching && d.status == status::WATCHING) {
                return Ok(d);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Freezes deploys to an environment (`None` lifts the freeze).
    pub async fn freeze(
        &self,
        environment: &str,
        reason: Option<&str>,
        actor: &str,
    ) -> Result<Option<crate::record::Freeze>, DeployError> {
        let store = &self.inner.store;
        let mut state = store.environment_state(environment).await?;
        let mut data = EnvironmentData::from_value(&state.data);
        data.freeze = reason.map(|r| crate::record::Freeze {
            reason: r.to_string(),
            by: actor.to_string(),
            since_ms: now_ms(),
        });
        state.data = data.to_value();
        store.set_environment_state(environment, &state).await?;
        let message = match reason {
            Some(r) => format!("deploys to {environment} frozen by {actor}: {r}"),
            None => format!("deploys to {environment} unfrozen by {actor}"),
        };
        self.event(
            NewEvent::info(
                if reason.is_some() {
                    "deploy.frozen"
                } else {
                    "deploy.unfrozen"
                },
                message,
            )
            .level(if reason.is_some() {
                EventLevel::Warning
            } else {
                EventLevel::Info
            })
            .environment(environment)
            .data(json!({ "reason": reason, "actor": actor })),
        )
        .await;
        Ok(data.freeze)
    }

    /// An SLO's budget freeze on an environment: set, or lifted with `None`. Returns whether
    /// anything changed (a freeze already set by the same SLO is kept as it was).
    pub async fn budget_freeze(
        &self,
        environment: &str,
        freeze: Option<crate::record::BudgetFreeze>,
    ) -> Result<bool, DeployError> {
        let store = &self.inner.store;
        let mut state = store.environment_state(environment).await?;
        let mut data = EnvironmentData::from_value(&state.data);
        let was = data.budget_freeze.clone();
        let (message, kind, level) = match (&was, &freeze) {
            (None, None) => return Ok(false),
            (Some(w), Some(f)) if w.slo == f.slo => return Ok(false),
            (_, Some(f)) => (
                format!(
                    "deploys to {environment} frozen but for fixes: SLO {} has spent its error budget ({:.0}% left)",
                    f.slo,
                    f.budget_remaining * 100.0
                ),
                "deploy.budget_frozen",
                EventLevel::Warning,
            ),
            (Some(w), None) => (
                format!(
                    "deploys to {environment} unfrozen: SLO {} is back above {:.0}% of its error budget",
                    w.slo,
                    w.lift_above * 100.0
                ),
                "deploy.budget_unfrozen",
                EventLevel::Info,
            ),
        };
        data.budget_freeze = freeze;
        state.data = data.to_value();
        store.set_environment_state(environment, &state).await?;
        self.event(
            NewEvent::info(kind, message)
                .level(level)
                .environment(environment)
                .data(json!({ "slo": data.budget_freeze.as_ref().or(was.as_ref()).map(|b| b.slo.clone()) })),
        )
        .await;
        Ok(true)
    }

    /// An SLO's budget freeze on an environment, if one holds it.
    pub async fn budget_frozen(
        &self,
        environment: &str,
    ) -> Result<Option<crate::record::BudgetFreeze>, DeployError> {
        let state = self.inner.store.environment_state(environment).await?;
        Ok(EnvironmentData::from_value(&state.data).budget_freeze)
    }

    /// Why deploys to an environment are frozen, if they are.
    pub async fn frozen(
        &self,
        environment: &str,
    ) -> Result<Option<crate::record::Freeze>, DeployError> {
        let state = self.inner.store.environment_state(environment).await?;
        Ok(EnvironmentData::from_value(&state.data).freeze)
    }

    /// Pins or unpins a release (pinned releases are never pruned).
    pub async fn pin(
        &self,
        environment: &str,
        number: i64,
        pinned: bool,
    ) -> Result<(), DeployError> {
        self.inner
            .store
            .set_release_flags(environment, number, Some(pinned), None)
            .await
            .map_err(|e| match e {
                StoreError::NotFound { .. } => DeployError::NotFound(format!(
                    "no release r{number} in `{environment}` (see `slipway releases`)"
                )),
                other => other.into(),
            })
    }

    /// Brings an environment back to what the store says after a start: its current release
    /// at full size, a standby still in its time, and each interrupted deployment's sets and
    /// routes as they were (then resumed or rolled back); instances nothing claims are
    /// stopped.
    pub async fn restore(&self, environment: &str) -> Result<(), DeployError> {
        let store = &self.inner.store;
        let platform = &self.inner.platform;
        let mut env_state = store.environment_state(environment).await?;
        let mut data = EnvironmentData::from_value(&env_state.data);
        let current = match env_state.current_release {
            Some(n) => Some(self.load(environment, n).await?),
            None => None,
        };
        if let Some(cur) = &current {
            for (name, spec) in &cur.snapshot.config.services {
                if let Err(e) = platform
                    .ensure_set(&cur.snapshot.config, &cur.release, name, spec.replicas)
                    .await
                {
                    tracing::warn!(service = %name, error = %e, "cannot bring the current release back");
                }
                if routed(spec) {
                    let plan = ServiceTraffic::stable(&cur.release.id, spec);
                    if let Err(e) = platform.set_traffic(environment, name, Some(plan)).await {
                        tracing::warn!(service = %name, error = %e, "cannot route the current release");
                    }
                }
            }
        }
        if let Some(standby) = data.standby.clone() {
            let keep =
                standby.until_ms > now_ms() && Some(standby.release) != env_state.current_release;
            if keep && let Ok(sb) = self.load(environment, standby.release).await {
                for (name, spec) in &sb.snapshot.config.services {
                    let _ = platform
                        .ensure_set(&sb.snapshot.config, &sb.release, name, spec.replicas)
                        .await;
                }
                self.schedule_standby(environment, standby.release, standby.until_ms);
            } else {
                data.standby = None;
                env_state.data = data.to_value();
                store.set_environment_state(environment, &env_state).await?;
            }
        }
        let active: Vec<DeploymentRecord> = store
            .active_deployments()
            .await?
            .into_iter()
            .filter(|d| d.environment == environment)
            .collect();
        for d in active {
            let new = self.load(environment, d.release).await?;
            let old = match d.from_release {
                Some(n) => Some(self.load(environment, n).await?),
                None => None,
            };
            let state: DeploymentState =
                serde_json::from_value(d.state.clone()).unwrap_or_default();
            // A committed deploy keeps the release it replaced warm while it watches: a breach
            // goes back to it at once.
            if state.committed
                && d.kind == KIND_DEPLOY
                && let Some(old) = &old
            {
                for (name, spec) in &old.snapshot.config.services {
                    let _ = platform
                        .ensure_set(&old.snapshot.config, &old.release, name, spec.replicas)
                        .await;
                }
            }
            for (name, p) in &state.services {
                let wanted = if d.kind == KIND_ROLLBACK {
                    new.service(name).map_or(0, |s| s.replicas)
                } else {
                    p.new_replicas
                };
                if wanted > 0 || (p.phase != "waiting" && new.service(name).is_some()) {
                    let _ = platform
                        .ensure_set(&new.snapshot.config, &new.release, name, wanted)
                        .await;
                }
                if let Some(plan) = &p.traffic {
                    let _ = platform
                        .set_traffic(environment, name, Some(plan.clone()))
                        .await;
                }
            }
            self.event(
                NewEvent::info(
                    "deploy.recovering",
                    format!(
                        "deployment {} ({} of {}) was interrupted by a control-plane restart; {}",
                        d.id,
                        d.kind,
                        new.release.id,
                        if state.committed {
                            "finishing it"
                        } else {
                            "rolling it back"
                        }
                    ),
                )
                .level(EventLevel::Warning)
                .environment(environment)
                .subject(format!("deployment-{}", d.id))
                .data(json!({ "deployment": d.id, "committed": state.committed })),
            )
            .await;
            let status_now = d.status.clone();
            let mut run_state = state;
            if status_now == status::PAUSED {
                run_state.paused = None;
            }
            self.spawn(&d, new, old, run_state, true);
        }
        platform.release_unclaimed(environment).await;
        Ok(())
    }

    fn spawn(
        &self,
        record: &DeploymentRecord,
        new: Loaded,
        old: Option<Loaded>,
        state: DeploymentState,
        recover: bool,
    ) {
        let (tx, rx) = watch::channel(Controls::default());
        lock(&self.inner.running).insert(
            record.id,
            Handle {
                environment: record.environment.clone(),
                controls: tx,
            },
        );
        let run = Arc::new(Run {
            id: record.id,
            kind: record.kind.clone(),
            environment: record.environment.clone(),
            store: self.inner.store.clone(),
            platform: self.inner.platform.clone(),
            new,
            old,
            state: Mutex::new(state),
            status: Mutex::new(record.status.clone()),
            controls: rx,
            shutdown: self.inner.shutdown.clone(),
            halt: CancellationToken::new(),
            started: Instant::now()
                - Duration::from_millis(
                    u64::try_from(now_ms() - record.started.as_millisecond()).unwrap_or(0),
                ),
        });
        let engine = self.clone();
        tokio::spawn(async move {
            let outcome = drive(&run, recover).await;
            lock(&engine.inner.running).remove(&run.id);
            match outcome {
                Err(Stop::Shutdown) => {}
                Err(Stop::Failed(why)) => {
                    tracing::error!(deployment = run.id, error = %why, "a deployment could not end cleanly");
                    let _ = finish::end(&run, status::FAILED, Some(why)).await;
                }
                Ok(()) => {
                    let final_status = run.status.lock().map(|s| s.clone()).unwrap_or_default();
                    if final_status == status::SUCCEEDED {
                        engine.after_success(&run).await;
                    }
                }
            }
        });
    }

    /// After a deployment succeeded: schedule the end of a standby, prune old releases.
    async fn after_success(&self, run: &Run) {
        let store = &self.inner.store;
        let Ok(env_state) = store.environment_state(&run.environment).await else {
            return;
        };
        let data = EnvironmentData::from_value(&env_state.data);
        if let Some(s) = &data.standby {
            self.schedule_standby(&run.environment, s.release, s.until_ms);
        }
        let retain = run.new.snapshot.config.deploy.retain.max(1) as usize;
        let Ok(releases) = store.releases(&run.environment, 10_000).await else {
            return;
        };
        let mut keep: HashSet<i64> = releases.iter().take(retain).map(|r| r.number).collect();
        keep.extend(env_state.current_release);
        keep.extend(env_state.previous_release);
        keep.extend(data.standby.as_ref().map(|s| s.release));
        for r in releases
            .iter()
            .filter(|r| !r.pruned && !r.pinned && !keep.contains(&r.number))
        {
            if let Ok(loaded) = Loaded::new(r) {
                self.inner
                    .platform
                    .prune(&run.environment, &loaded.release)
                    .await;
            }
            if store
                .set_release_flags(&run.environment, r.number, None, Some(true))
                .await
                .is_ok()
            {
                self.event(
                    NewEvent::info(
                        "release.pruned",
                        format!(
                            "{} pruned (`[deploy] retain` keeps {retain}; current, previous and pinned releases are kept)",
                            release_id(r.number)
                        ),
                    )
                    .environment(&run.environment)
                    .subject(release_id(r.number)),
                )
                .await;
            }
        }
    }

    /// Stops a standby release's sets when its time is over (unless it became current, or a
    /// deployment is using the environment; then it looks again later).
    fn schedule_standby(&self, environment: &str, release: i64, until_ms: i64) {
        let engine = self.clone();
        let environment = environment.to_string();
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(u64::try_from(until_ms - now_ms()).unwrap_or(0));
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = engine.inner.shutdown.cancelled() => return,
                }
                let store = &engine.inner.store;
                let Ok(mut state) = store.environment_state(&environment).await else {
                    return;
                };
                let mut data = EnvironmentData::from_value(&state.data);
                if data
                    .standby
                    .as_ref()
                    .is_none_or(|s| s.release != release || s.until_ms > now_ms())
                {
                    return;
                }
                let busy = store
                    .active_deployments()
                    .await
                    .map(|a| a.iter().any(|d| d.environment == environment))
                    .unwrap_or(true);
                if busy {
                    wait = Duration::from_secs(5);
                    continue;
                }
                if let Ok(sb) = engine.load(&environment, release).await {
                    for name in sb.snapshot.config.services.keys() {
                        engine
                            .inner
                            .platform
                            .remove_set(&environment, name, &sb.release.id)
                            .await;
                    }
                }
                data.standby = None;
                state.data = data.to_value();
                let _ = store.set_environment_state(&environment, &state).await;
                engine
                    .event(
                        NewEvent::info(
                            "deploy.standby_ended",
                            format!("{} is no longer kept warm", release_id(release)),
                        )
                        .environment(&environment)
                        .subject(release_id(release)),
                    )
                    .await;
                return;
            }
        });
    }

    async fn event(&self, event: NewEvent) {
        if let Err(e) = self.inner.store.append_event(event).await {
            tracing::warn!(error = %e, "cannot record an event");
        }
    }
}

fn strategy_name(k: StrategyKind) -> &'static str {
    match k {
        StrategyKind::Recreate => "recreate",
        StrategyKind::Rolling => "rolling",
        StrategyKind::BlueGreen => "blue-green",
        StrategyKind::Canary => "canary",
    }
}

fn busy_error(d: &DeploymentRecord) -> DeployError {
    let age = jiff::Timestamp::now()
        .duration_since(d.started)
        .as_secs()
        .max(0);
    let state: DeploymentState = serde_json::from_value(d.state.clone()).unwrap_or_default();
    DeployError::Busy {
        environment: d.environment.clone(),
        active: d.id,
        detail: format!(
            "deployment {} of `{}` ({} of {}, {}, started {age}s ago by {}) is still going; wait for it, or `slipway abort` it",
            d.id,
            d.environment,
            d.kind,
            release_id(d.release),
            d.status,
            if state.actor.is_empty() {
                "someone"
            } else {
                &state.actor
            }
        ),
    }
}

/// Carries a deployment out to its end.
async fn drive(run: &Arc<Run>, recover: bool) -> Result<(), Stop> {
    let result = if run.kind == KIND_ROLLBACK {
        if recover && !run.state().committed {
            // Nothing switched for good: the environment stays on its current release.
            go_home(run).await
        } else if recover {
            finish::end(run, status::SUCCEEDED, run.state().reason).await
        } else {
            finish::rollback(run).await
        }
    } else {
        forward(run, recover).await
    };
    match result {
        Ok(()) | Err(Stop::Shutdown) => result,
        Err(Stop::Failed(reason)) => {
            if run.state().committed && run.kind == KIND_DEPLOY {
                finish::revert_committed(run, &reason).await
            } else if run.kind == KIND_ROLLBACK {
                go_home(run).await?;
                finish::end(run, status::FAILED, Some(reason)).await
            } else {
                finish::revert(run, &reason).await
            }
        }
    }
}

/// An interrupted or failed rollback: traffic stays on (or goes back to) the release that was
/// current, and the target's sets go unless they are the warm standby.
async fn go_home(run: &Run) -> Result<(), Stop> {
    let Some(current) = &run.old else {
        return Ok(());
    };
    for (name, spec) in &current.snapshot.config.services {
        let _ = run
            .platform
            .ensure_set(
                &current.snapshot.config,
                &current.release,
                name,
                spec.replicas,
            )
            .await;
        if routed(spec) {
            let _ = run
                .platform
                .set_traffic(
                    &run.environment,
                    name,
                    Some(ServiceTraffic::stable(&current.release.id, spec)),
                )
                .await;
        }
    }
    let state = run.store.environment_state(&run.environment).await?;
    let standby = EnvironmentData::from_value(&state.data)
        .standby
        .is_some_and(|s| s.release == run.new.number);
    if !standby {
        for name in run.new.snapshot.config.services.keys() {
            run.platform
                .remove_set(&run.environment, name, &run.new.release.id)
                .await;
        }
    }
    if run.state().reason.is_some()
        && !status::is_final(&run.status.lock().map(|s| s.clone()).unwrap_or_default())
    {
        finish::end(
            run,
            status::FAILED,
            Some(
                "interrupted by a control-plane restart before it switched; nothing changed".into(),
            ),
        )
        .await?;
    }
    Ok(())
}

/// The forward path of a deploy.
async fn forward(run: &Arc<Run>, recover: bool) -> Result<(), Stop> {
    let state = run.state();
    if run.old.is_none() && (recover || state.committed) {
        // A first release has nothing to go back to: it carries on.
        return finish::first_release(run).await;
    }
    if state.committed {
        // Committed: the new release is the current one. What is left is the watch (with the
        // time it had left, `watch_until_ms` being persisted) and the finishing step.
        return finish::after_commit(run).await;
    }
    if recover {
        return Err(Stop::Failed(
            "the control plane restarted during the deployment".into(),
        ));
    }
    drop_stale_standby(run).await?;
    release_command(run).await?;
    if run.old.is_none() {
        return finish::first_release(run).await;
    }
    let baseline = finish::baseline(run).await;
    run.persist(None, None, |s| s.baseline = baseline).await?;
    move_all(run).await?;
    finish::commit(run).await?;
    finish::after_commit(run).await
}

/// A standby of a release before the current one is no use once a new deploy starts.
async fn drop_stale_standby(run: &Run) -> Result<(), Stop> {
    let mut state = run.store.environment_state(&run.environment).await?;
    let mut data = EnvironmentData::from_value(&state.data);
    let Some(standby) = data.standby.take() else {
        return Ok(());
    };
    state.data = data.to_value();
    run.store
        .set_environment_state(&run.environment, &state)
        .await?;
    if Some(standby.release) != state.current_release
        && let Ok(record) = run.store.release(&run.environment, standby.release).await
        && let Some(record) = record
        && let Ok(sb) = Loaded::new(&record)
    {
        for name in sb.snapshot.config.services.keys() {
            run.platform
                .remove_set(&run.environment, name, &sb.release.id)
                .await;
        }
    }
    Ok(())
}

/// Moves every service, each after the services it is `after`, the others in parallel; the
/// first failure stops the rest.
async fn move_all(run: &Arc<Run>) -> Result<(), Stop> {
    let names: Vec<String> = run.new.snapshot.config.services.keys().cloned().collect();
    let (done_tx, done_rx) = watch::channel(HashSet::<String>::new());
    let movers = names.iter().map(|name| {
        let done_tx = done_tx.clone();
        let mut done_rx = done_rx.clone();
        let deps: Vec<String> = run
            .new
            .service(name)
            .map(|s| {
                s.after
                    .iter()
                    .filter(|a| names.contains(a))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        async move {
            loop {
                if deps.iter().all(|d| done_rx.borrow().contains(d)) {
                    break;
                }
                tokio::select! {
                    changed = done_rx.changed() => if changed.is_err() { break },
                    _ = run.halt.cancelled() => break,
                    _ = run.shutdown.cancelled() => break,
                }
            }
            let result = match run.check() {
                Ok(()) => strategy::move_service(run, name).await,
                Err(e) => Err(e),
            };
            match &result {
                Ok(()) => {
                    done_tx.send_modify(|d| {
                        d.insert(name.clone());
                    });
                }
                Err(_) => run.halt.cancel(),
            }
            result
        }
    });
    let results = futures_util::future::join_all(movers).await;
    let mut first: Option<Stop> = None;
    for r in results {
        match r {
            Ok(()) => {}
            Err(Stop::Shutdown) => return Err(Stop::Shutdown),
            Err(Stop::Failed(why)) if why == "another service failed" => {
                first.get_or_insert(Stop::Failed(why));
            }
            Err(e) => {
                if !matches!(&first, Some(Stop::Failed(w)) if w != "another service failed") {
                    first = Some(e);
                }
            }
        }
    }
    first.map_or(Ok(()), Err)
}

/// Runs `[deploy] release` once, with the new release's variables, before any traffic moves.
async fn release_command(run: &Run) -> Result<(), Stop> {
    if run.state().release_command_done {
        return Ok(());
    }
    let config = &run.new.snapshot.config;
    let Some(command) = config.deploy.release.clone() else {
        return Ok(());
    };
    let service = config
        .services
        .values()
        .find(|s| s.kind == slipway_spec::model::ServiceKind::Web)
        .or_else(|| config.services.values().next())
        .map(|s| s.name.clone());
    let (vars, secret_keys) = match &service {
        Some(s) => run
            .platform
            .command_environment(config, &run.new.release, s)
            .map_err(|e| Stop::Failed(format!("the release command cannot run: {e}")))?,
        None => (IndexMap::new(), Vec::new()),
    };
    run.info(
        "deploy.release_command",
        format!("running the release command: {command}"),
        json!({ "command": command }),
    )
    .await;
    let started = Instant::now();
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&command)
        .current_dir(&config.dir)
        .env_clear()
        .envs(&vars)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::select! {
        out = tokio::time::timeout(config.deploy.release_timeout.std(), child) => out,
        _ = run.shutdown.cancelled() => return Err(Stop::Shutdown),
    };
    let redactor = slipway_runtime::logs::Redactor::new(
        secret_keys.iter().filter_map(|k| vars.get(k).cloned()),
    );
    let output = match output {
        Err(_) => {
            return Err(Stop::Failed(format!(
                "the release command `{command}` did not finish within {} (`[deploy] release_timeout`)",
                config.deploy.release_timeout
            )));
        }
        Ok(Err(e)) => {
            return Err(Stop::Failed(format!(
                "the release command `{command}` could not start: {e}"
            )));
        }
        Ok(Ok(o)) => o,
    };
    let text = redactor.redact(&format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ));
    let tail: Vec<&str> = text.lines().rev().take(10).collect();
    let tail: Vec<String> = tail.into_iter().rev().map(str::to_string).collect();
    let took = started.elapsed().as_millis();
    if !output.status.success() {
        run.event(
            "deploy.release_command_failed",
            format!(
                "the release command failed ({}) after {took}ms",
                output.status
            ),
            EventLevel::Error,
            json!({ "output": tail }),
        )
        .await;
        return Err(Stop::Failed(format!(
            "the release command `{command}` failed ({}): {}",
            output.status,
            tail.last().cloned().unwrap_or_default()
        )));
    }
    run.persist(None, None, |s| s.release_command_done = true)
        .await?;
    run.info(
        "deploy.release_command_done",
        format!("the release command succeeded in {took}ms"),
        json!({ "output": tail }),
    )
    .await;
    Ok(())
}

/// The state of a deployment as a value for the API (status, outcome and timings).
pub fn outcome(record: &DeploymentRecord) -> Option<&'static str> {
    match record.status.as_str() {
        status::SUCCEEDED => Some(status::SUCCEEDED),
        status::ROLLED_BACK => Some(status::ROLLED_BACK),
        status::FAILED => Some(status::FAILED),
        _ => None,
    }
}
