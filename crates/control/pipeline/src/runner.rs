//! Pipeline runs: the queue (one run per environment at a time, a newer one queued or
//! superseding), and each run's execution — a clean checkout of its exact commit, then the
//! stages in order, a stage's jobs in parallel as their `needs` allow, each job's steps in
//! order, every change persisted and posted to the status webhook.
//!
//! A run is `refused` when a gate says no (`require`, `policy`, or the environment's own gates
//! enforced before every `deploy`), `failed` when a step fails (and then later stages never
//! start), `cancelled` by `slipway pipeline cancel` or a superseding run. A control plane that
//! stops while runs are going marks them failed at its next start, naming the interrupted
//! step; queued runs carry on.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::json;
use slipway_deploy::Engine;
use slipway_deploy::platform::Platform;
use slipway_spec::Project;
use slipway_spec::model::RunConcurrency;
use slipway_spec::pipeline::{Action, ResolvedJob, ResolvedPipeline};
use slipway_store::{
    EventLevel, NewEvent, NewRun, RunQuery, RunRecord, RunUpdate, Store, StoreError,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::git::{self, Repo};
use crate::state::{JobState, RunState, StageState, StepState, status};

/// Where runs live and what they need of the control plane.
#[derive(Clone, Debug)]
pub struct PipelineOptions {
    /// The project file the control plane runs (its repository is the one runs check out).
    pub project_file: PathBuf,
    /// `runs/` in the state directory: a folder per run (checkout, log, artifacts).
    pub runs_dir: PathBuf,
    /// Put first on steps' `PATH` (where `slipway` and `slipway-sample` live).
    pub bin_dir: Option<PathBuf>,
}

/// A run someone (or a push) asked for.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// Environment.
    pub environment: String,
    /// Branch, tag or sha (default: the environment's branch, else `HEAD`).
    pub git_ref: Option<String>,
    /// The exact commit, when the caller knows it (the watcher).
    pub commit: Option<String>,
    /// `manual`, `push` or `rerun`.
    pub trigger: String,
    /// Who asked.
    pub actor: String,
}

/// Why a run could not be started or acted on.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Nothing of that name.
    #[error("{0}")]
    NotFound(String),
    /// The request is wrong.
    #[error("{0}")]
    Invalid(String),
    /// Not possible now.
    #[error("{0}")]
    Conflict(String),
    /// Git failed.
    #[error(transparent)]
    Git(#[from] git::GitError),
    /// The store failed.
    #[error("the state store failed")]
    Store(#[from] StoreError),
}

struct Going {
    id: i64,
    cancel: CancellationToken,
    approvals: watch::Sender<Option<String>>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) engine: Engine,
    pub(crate) platform: Arc<dyn Platform>,
    pub(crate) options: PipelineOptions,
    queues: Mutex<HashMap<String, VecDeque<i64>>>,
    going: Mutex<HashMap<String, Going>>,
    pub(crate) http: reqwest::Client,
}

/// See the module docs.
#[derive(Clone)]
pub struct Pipelines {
    pub(crate) inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl Pipelines {
    /// Pipelines for the project of `options`.
    pub fn new(
        store: Arc<dyn Store>,
        engine: Engine,
        platform: Arc<dyn Platform>,
        options: PipelineOptions,
    ) -> Self {
        Pipelines {
            inner: Arc::new(Inner {
                store,
                engine,
                platform,
                options,
                queues: Mutex::new(HashMap::new()),
                going: Mutex::new(HashMap::new()),
                http: reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(10))
                    .build()
                    .unwrap_or_default(),
            }),
        }
    }

    /// The repository runs check out, and the project file's path inside it.
    pub(crate) async fn repository(&self) -> Result<(PathBuf, PathBuf), PipelineError> {
        let file = std::path::absolute(&self.inner.options.project_file)
            .unwrap_or(self.inner.options.project_file.clone());
        let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let top = git::top_level(&dir).await.ok_or_else(|| {
            PipelineError::Invalid(format!(
                "{} is not in a git repository; pipelines run commits (`git init && git add . && git commit -m first`)",
                dir.display()
            ))
        })?;
        let top = std::fs::canonicalize(&top).unwrap_or(top);
        let file = std::fs::canonicalize(&file).unwrap_or(file);
        let relative = file
            .strip_prefix(&top)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| PathBuf::from("slipway.toml"));
        Ok((top, relative))
    }

    /// The repository runs come from (the one `project`, the daemon's project file as loaded,
    /// watches, else the project's own) and the project file's path inside a checkout of it.
    pub(crate) async fn source(
        &self,
        project: Option<&Project>,
    ) -> Result<(Repo, PathBuf), PipelineError> {
        let (top, relative) = self.repository().await?;
        let watched = project.and_then(|p| {
            slipway_spec::pipeline::resolve(&p.config)
                .watch
                .map(|(location, _)| Repo::new(&location, &p.dir))
        });
        let repo = watched.unwrap_or_else(|| Repo::new(&top.display().to_string(), &top));
        Ok((repo, relative))
    }

    /// The log file of a run.
    pub fn log_path(&self, id: i64) -> PathBuf {
        self.inner
            .options
            .runs_dir
            .join(id.to_string())
            .join("run.log")
    }

    /// Records a run and queues it (or, with `concurrency = "supersede"`, cancels what runs).
    pub async fn start(&self, req: RunRequest) -> Result<RunRecord, PipelineError> {
        let project = slipway_spec::load(&self.inner.options.project_file).map_err(|e| {
            PipelineError::Invalid(format!("the project file cannot be loaded: {e}"))
        })?;
        if !project.environments().contains(&req.environment) {
            return Err(PipelineError::NotFound(format!(
                "unknown environment `{}` (known: {})",
                req.environment,
                project.environments().join(", ")
            )));
        }
        let config = project
            .resolve(&req.environment)
            .map_err(|e| PipelineError::Invalid(e.to_string()))?;
        let pipeline = slipway_spec::pipeline::resolve(&project.config);
        let (repo, _) = self.source(Some(&project)).await?;
        let git_ref = req
            .git_ref
            .clone()
            .or_else(|| config.gate.branch.clone().filter(|b| !b.contains('*')))
            .unwrap_or_else(|| "HEAD".to_string());
        let (sha, time, subject) = match &req.commit {
            Some(sha) => (sha.clone(), None, None),
            None => {
                let c = repo.resolve(&git_ref).await.map_err(|e| {
                    let from_gate = req.git_ref.is_none() && config.gate.branch.as_deref() == Some(&git_ref);
                    PipelineError::Invalid(format!(
                        "`{git_ref}` is not a branch, tag or commit of {}{} ({})",
                        repo.location,
                        if from_gate {
                            format!("; `{}` deploys from the `{git_ref}` branch, which does not exist yet: push it, or pass `--ref`", req.environment)
                        } else {
                            String::new()
                        },
                        e.message
                    ))
                })?;
                // A remote's commit has no time or subject until the run's checkout reads them.
                let time = (c.time > 0).then_some(c.time);
                let subject = (!c.subject.is_empty()).then_some(c.subject);
                (c.sha, time, subject)
            }
        };
        let state = RunState {
            subject,
            ..Default::default()
        };
        let record = self
            .inner
            .store
            .create_run(NewRun {
                environment: req.environment.clone(),
                git_ref: git_ref.clone(),
                commit: sha.clone(),
                commit_time: time.and_then(|t| jiff::Timestamp::from_second(t).ok()),
                trigger: req.trigger.clone(),
                status: status::QUEUED.into(),
                state: serde_json::to_value(&state).unwrap_or_default(),
            })
            .await?;
        self.event(
            NewEvent::info(
                "pipeline.queued",
                format!(
                    "run {} of {} at {} ({}) queued by {} ({})",
                    record.id,
                    req.environment,
                    short(&sha),
                    git_ref,
                    req.actor,
                    req.trigger
                ),
            )
            .environment(&req.environment)
            .subject(format!("run-{}", record.id))
            .data(
                json!({ "run": record.id, "commit": sha, "ref": git_ref, "trigger": req.trigger }),
            ),
        )
        .await;
        crate::webhook::post(&self.inner, &pipeline, &record).await;
        if pipeline.concurrency == RunConcurrency::Supersede {
            self.supersede(&req.environment, record.id, &pipeline).await;
        }
        lock(&self.inner.queues)
            .entry(req.environment.clone())
            .or_default()
            .push_back(record.id);
        self.pump(&req.environment);
        Ok(record)
    }

    /// Cancels the runs of `environment` that are queued or going, for run `by`.
    async fn supersede(&self, environment: &str, by: i64, pipeline: &ResolvedPipeline) {
        let queued: Vec<i64> = lock(&self.inner.queues)
            .get_mut(environment)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default();
        for id in queued {
            let Ok(record) = self.record(id).await else {
                continue;
            };
            let mut state = RunState::of(&record);
            state.superseded_by = Some(by);
            let reason = format!("superseded by run {by}");
            let _ = self
                .end_idle(
                    &record,
                    &state,
                    status::CANCELLED,
                    &reason,
                    None,
                    Some(pipeline),
                )
                .await;
        }
        if let Some(g) = lock(&self.inner.going).get(environment) {
            g.cancel.cancel();
        }
    }

    /// The pipeline of the daemon's project file as it is now, if it loads.
    fn current_pipeline(&self) -> Option<ResolvedPipeline> {
        slipway_spec::load(&self.inner.options.project_file)
            .ok()
            .map(|p| slipway_spec::pipeline::resolve(&p.config))
    }

    /// Ends a run that no task executes (queued, or going when the control plane stopped):
    /// writes it, records the event and posts the status webhook, so a commit status never
    /// stays pending.
    async fn end_idle(
        &self,
        record: &RunRecord,
        state: &RunState,
        final_status: &str,
        reason: &str,
        failed_step: Option<String>,
        pipeline: Option<&ResolvedPipeline>,
    ) -> Result<RunRecord, PipelineError> {
        let id = record.id;
        let updated = self
            .inner
            .store
            .update_run(
                id,
                &RunUpdate {
                    status: final_status.into(),
                    started: record.status != status::QUEUED,
                    finished: true,
                    reason: Some(reason.into()),
                    failed_step,
                    state: serde_json::to_value(state).unwrap_or_default(),
                },
            )
            .await?;
        complete_audit(self.inner.store.as_ref(), &updated).await;
        let level = if final_status == status::FAILED {
            EventLevel::Warning
        } else {
            EventLevel::Info
        };
        self.event(
            NewEvent::info(
                format!("pipeline.{final_status}"),
                format!("run {id} {final_status}: {reason}"),
            )
            .level(level)
            .environment(&record.environment)
            .subject(format!("run-{id}")),
        )
        .await;
        if let Some(pipeline) = pipeline {
            crate::webhook::post(&self.inner, pipeline, &updated).await;
        }
        Ok(updated)
    }

    /// Starts the next queued run of `environment` if none is going.
    fn pump(&self, environment: &str) {
        let mut going = lock(&self.inner.going);
        if going.contains_key(environment) {
            return;
        }
        let Some(id) = lock(&self.inner.queues)
            .get_mut(environment)
            .and_then(VecDeque::pop_front)
        else {
            return;
        };
        let cancel = CancellationToken::new();
        let (tx, rx) = watch::channel(None);
        going.insert(
            environment.to_string(),
            Going {
                id,
                cancel: cancel.clone(),
                approvals: tx,
            },
        );
        drop(going);
        let this = self.clone();
        let environment = environment.to_string();
        tokio::spawn(async move {
            crate::exec::execute(&this, id, cancel, rx).await;
            lock(&this.inner.going).remove(&environment);
            this.pump(&environment);
            this.prune_checkouts().await;
        });
    }

    /// Deletes the checkouts (and artifacts) of all but the newest runs, keeping any a release
    /// that can still be deployed or rolled back to runs from. Logs stay.
    async fn prune_checkouts(&self) {
        const KEEP: usize = 20;
        let store = &self.inner.store;
        let Ok(runs) = store
            .runs(&RunQuery {
                limit: 100_000,
                ..Default::default()
            })
            .await
        else {
            return;
        };
        let mut needed: Vec<PathBuf> = Vec::new();
        let envs: std::collections::BTreeSet<&str> =
            runs.iter().map(|r| r.environment.as_str()).collect();
        for env in envs {
            for r in store.releases(env, 10_000).await.unwrap_or_default() {
                if r.pruned {
                    continue;
                }
                if let Some(dir) = r.snapshot["config"]["dir"].as_str() {
                    needed.push(PathBuf::from(dir));
                }
            }
        }
        for r in runs
            .iter()
            .skip(KEEP)
            .filter(|r| status::is_final(&r.status))
        {
            let dir = self.inner.options.runs_dir.join(r.id.to_string());
            let src = dir.join("src");
            if !src.exists() || needed.iter().any(|n| n.starts_with(&src)) {
                continue;
            }
            let _ = std::fs::remove_dir_all(&src);
            let _ = std::fs::remove_dir_all(dir.join("artifacts"));
        }
    }

    /// The stored run `id`, or a not-found error naming it.
    async fn record(&self, id: i64) -> Result<RunRecord, PipelineError> {
        self.inner
            .store
            .run(id)
            .await?
            .ok_or_else(|| PipelineError::NotFound(format!("no run {id}")))
    }

    /// Cancels a run (queued or going).
    pub async fn cancel(&self, id: i64, actor: &str) -> Result<RunRecord, PipelineError> {
        let record = self.record(id).await?;
        if status::is_final(&record.status) {
            return Err(PipelineError::Conflict(format!(
                "run {id} already ended ({})",
                record.status
            )));
        }
        let was_queued = lock(&self.inner.queues)
            .get_mut(&record.environment)
            .map(|q| {
                let before = q.len();
                q.retain(|x| *x != id);
                before != q.len()
            })
            .unwrap_or(false);
        if was_queued {
            let reason = format!("cancelled by {actor}");
            let pipeline = self.current_pipeline();
            return self
                .end_idle(
                    &record,
                    &RunState::of(&record),
                    status::CANCELLED,
                    &reason,
                    None,
                    pipeline.as_ref(),
                )
                .await;
        }
        let going = lock(&self.inner.going)
            .get(&record.environment)
            .filter(|g| g.id == id)
            .map(|g| g.cancel.clone());
        match going {
            Some(cancel) => {
                cancel.cancel();
                Ok(self.wait(id).await?)
            }
            None => Err(PipelineError::Conflict(format!("run {id} is not going"))),
        }
    }

    /// Approves a run waiting at an `approve` step (or a `deploy` to an environment with
    /// `approval = "manual"`).
    pub async fn approve(&self, id: i64, actor: &str) -> Result<RunRecord, PipelineError> {
        let record = self.record(id).await?;
        if record.status != status::WAITING {
            return Err(PipelineError::Conflict(format!(
                "run {id} is not waiting for an approval (it is {})",
                record.status
            )));
        }
        let sent = lock(&self.inner.going)
            .get(&record.environment)
            .filter(|g| g.id == id)
            .map(|g| g.approvals.send(Some(actor.to_string())).is_ok())
            .unwrap_or(false);
        if !sent {
            return Err(PipelineError::Conflict(format!("run {id} is not going")));
        }
        // The run writes its new status itself; wait for it so the answer shows it.
        for _ in 0..100 {
            let r = self.inner.store.run(id).await?;
            if let Some(r) = r.filter(|r| r.status != status::WAITING) {
                return Ok(r);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(record)
    }

    /// Starts a new run of the same environment and commit.
    pub async fn rerun(&self, id: i64, actor: &str) -> Result<RunRecord, PipelineError> {
        let record = self.record(id).await?;
        self.start(RunRequest {
            environment: record.environment,
            git_ref: Some(record.git_ref),
            commit: Some(record.commit),
            trigger: "rerun".into(),
            actor: actor.to_string(),
        })
        .await
    }

    /// Waits until a run has ended.
    pub async fn wait(&self, id: i64) -> Result<RunRecord, PipelineError> {
        loop {
            let r = self.record(id).await?;
            if status::is_final(&r.status) {
                return Ok(r);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// After a start: runs that were going are marked failed (naming the step the stop
    /// interrupted); queued runs are queued again.
    pub async fn recover(&self) -> Result<(), PipelineError> {
        let store = &self.inner.store;
        let open = store
            .runs(&RunQuery {
                statuses: vec![
                    status::QUEUED.into(),
                    status::RUNNING.into(),
                    status::WAITING.into(),
                ],
                limit: 10_000,
                ..Default::default()
            })
            .await?;
        let mut queued: Vec<&RunRecord> = Vec::new();
        let pipeline = self.current_pipeline();
        for r in &open {
            if r.status == status::QUEUED {
                queued.push(r);
                continue;
            }
            let mut state = RunState::of(r);
            let step = state.interrupt();
            let reason = format!(
                "interrupted by a control-plane restart{}",
                step.as_ref()
                    .map(|s| format!(" during {s}"))
                    .unwrap_or_default()
            );
            self.end_idle(r, &state, status::FAILED, &reason, step, pipeline.as_ref())
                .await?;
        }
        queued.sort_by_key(|r| r.id);
        for r in queued {
            lock(&self.inner.queues)
                .entry(r.environment.clone())
                .or_default()
                .push_back(r.id);
        }
        let envs: Vec<String> = lock(&self.inner.queues).keys().cloned().collect();
        for e in envs {
            self.pump(&e);
        }
        Ok(())
    }

    pub(crate) async fn event(&self, event: NewEvent) {
        if let Err(e) = self.inner.store.append_event(event).await {
            tracing::warn!(error = %e, "cannot record an event");
        }
    }
}

/// The first 12 characters of a sha.
pub fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// The stages of a pipeline with their jobs, before anything ran: jobs whose `when` does not
/// match the run are skipped.
pub(crate) fn plan(
    pipeline: &ResolvedPipeline,
    environment: &str,
    branch: Option<&str>,
    tag: Option<&str>,
) -> Vec<StageState> {
    pipeline
        .stages
        .iter()
        .map(|stage| StageState {
            name: stage.clone(),
            status: status::PENDING.into(),
            jobs: pipeline
                .jobs
                .iter()
                .filter(|j| &j.stage == stage)
                .map(|j| job_state(j, environment, branch, tag))
                .collect(),
        })
        .collect()
}

fn job_state(
    j: &ResolvedJob,
    environment: &str,
    branch: Option<&str>,
    tag: Option<&str>,
) -> JobState {
    let runs = j
        .when
        .as_ref()
        .is_none_or(|w| w.matches(environment, branch, tag));
    JobState {
        name: j.name.clone(),
        status: if runs {
            status::PENDING
        } else {
            status::SKIPPED
        }
        .into(),
        started_ms: None,
        finished_ms: None,
        steps: j
            .steps
            .iter()
            .map(|s| {
                let mut st = StepState::pending(&s.name, kind(&s.action));
                if !runs {
                    st.status = status::SKIPPED.into();
                }
                st
            })
            .collect(),
    }
}

/// The kind of an action, as shown.
pub(crate) fn kind(action: &Action) -> &'static str {
    match action {
        Action::Run { .. } => "run",
        Action::Deploy(_) => "deploy",
        Action::Smoke(_) => "smoke",
        Action::Monitor(_) => "monitor",
        Action::SecretScan(_) => "secret-scan",
        Action::Approve(_) => "approve",
        Action::Require(_) => "require",
        Action::Policy(_) => "policy",
    }
}

/// Runs that ended for a commit in an environment.
/// Writes a run's final outcome into the audit records of the calls that started it.
pub(crate) async fn complete_audit(store: &dyn Store, run: &RunRecord) {
    if let Err(e) = store
        .complete_audit(&format!("run-{}", run.id), &run.status)
        .await
    {
        tracing::warn!(run = run.id, error = %e, "cannot complete the run's audit record");
    }
}

pub(crate) async fn green(
    store: &dyn Store,
    environment: &str,
    commit: &str,
) -> Result<Option<RunRecord>, StoreError> {
    Ok(store
        .runs(&RunQuery {
            environment: Some(environment.to_string()),
            commit: Some(commit.to_string()),
            statuses: vec![status::SUCCEEDED.into()],
            limit: 1,
        })
        .await?
        .into_iter()
        .next())
}
