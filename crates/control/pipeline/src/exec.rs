//! One run, from its checkout to its outcome: stages in order, a stage's jobs in waves of those
//! whose `needs` are met, each job's steps in order with retries, artifacts kept for later
//! stages; every change written to the store (and the webhook) as it happens.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use indexmap::IndexMap;
use serde_json::json;
use slipway_spec::pipeline::{Action, ResolvedJob, ResolvedPipeline, ResolvedStep};
use slipway_spec::{Project, ResolvedEnv};
use slipway_store::{EventLevel, NewEvent, RunRecord, RunUpdate};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::command::{self, Ended};
use crate::git;
use crate::log::RunLog;
use crate::runner::{Pipelines, now_ms, plan, short};
use crate::state::{RunState, status};

/// How a step ended.
pub(crate) struct StepEnd {
    pub(crate) status: &'static str,
    pub(crate) detail: String,
    pub(crate) exit_code: Option<i32>,
    pub(crate) tail: Vec<String>,
}

impl StepEnd {
    pub(crate) fn ok(detail: impl Into<String>) -> Self {
        StepEnd {
            status: status::SUCCEEDED,
            detail: detail.into(),
            exit_code: None,
            tail: Vec::new(),
        }
    }

    pub(crate) fn failed(detail: impl Into<String>) -> Self {
        StepEnd {
            status: status::FAILED,
            detail: detail.into(),
            exit_code: None,
            tail: Vec::new(),
        }
    }

    pub(crate) fn refused(detail: impl Into<String>) -> Self {
        StepEnd {
            status: status::REFUSED,
            detail: detail.into(),
            exit_code: None,
            tail: Vec::new(),
        }
    }
}

/// What gates a run already passed (so each `deploy` enforces only what is left).
#[derive(Default)]
pub(crate) struct Gates {
    pub(crate) required: bool,
    pub(crate) approved: bool,
    pub(crate) policy: bool,
}

/// A run being carried out.
pub(crate) struct Exec {
    pub(crate) pipelines: Pipelines,
    pub(crate) record: RunRecord,
    pub(crate) src: PathBuf,
    pub(crate) run_dir: PathBuf,
    pub(crate) log: RunLog,
    pub(crate) state: Mutex<RunState>,
    pub(crate) status: Mutex<String>,
    pub(crate) cancel: CancellationToken,
    pub(crate) approvals: Mutex<watch::Receiver<Option<String>>>,
    pub(crate) gates: Mutex<Gates>,
    pub(crate) project: Mutex<Option<Project>>,
    pub(crate) pipeline: Mutex<Option<ResolvedPipeline>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Exec {
    /// Writes the state (and status) now.
    pub(crate) async fn save(
        &self,
        finished: bool,
        reason: Option<String>,
        failed_step: Option<String>,
    ) {
        let state = serde_json::to_value(&*lock(&self.state)).unwrap_or_default();
        let status_now = lock(&self.status).clone();
        let update = RunUpdate {
            status: status_now,
            started: true,
            finished,
            reason,
            failed_step,
            state,
        };
        match self
            .pipelines
            .inner
            .store
            .update_run(self.record.id, &update)
            .await
        {
            Ok(r) => {
                if finished {
                    crate::runner::complete_audit(self.pipelines.inner.store.as_ref(), &r).await;
                }
                let pipeline = lock(&self.pipeline).clone();
                if let Some(p) = pipeline {
                    crate::webhook::post(&self.pipelines.inner, &p, &r).await;
                }
            }
            Err(e) => tracing::warn!(run = self.record.id, error = %e, "cannot write the run"),
        }
    }

    pub(crate) fn set_status(&self, s: &str) {
        *lock(&self.status) = s.to_string();
    }

    /// Changes one step.
    pub(crate) fn step_mut(
        &self,
        stage: usize,
        job: usize,
        step: usize,
        f: impl FnOnce(&mut crate::state::StepState),
    ) {
        let mut st = lock(&self.state);
        if let Some(s) = st
            .stages
            .get_mut(stage)
            .and_then(|s| s.jobs.get_mut(job))
            .and_then(|j| j.steps.get_mut(step))
        {
            f(s);
        }
    }

    pub(crate) async fn event(&self, kind: &str, message: String, level: EventLevel) {
        self.pipelines
            .event(
                NewEvent::info(kind, message)
                    .level(level)
                    .environment(&self.record.environment)
                    .subject(format!("run-{}", self.record.id))
                    .data(json!({ "run": self.record.id, "commit": self.record.commit })),
            )
            .await;
    }

    /// The environment resolved from the checkout's project file.
    pub(crate) fn config(&self) -> Result<ResolvedEnv, String> {
        let project = lock(&self.project)
            .clone()
            .ok_or("the project is not loaded")?;
        project
            .resolve(&self.record.environment)
            .map_err(|e| e.to_string())
    }

    /// The variables of a `run` step.
    fn step_env(&self, step: &ResolvedStep) -> IndexMap<String, String> {
        let mut env = IndexMap::new();
        for key in [
            "HOME",
            "USER",
            "LANG",
            "LC_ALL",
            "TZ",
            "TMPDIR",
            "CARGO_HOME",
            "RUSTUP_HOME",
        ] {
            if let Ok(v) = std::env::var(key) {
                env.insert(key.to_string(), v);
            }
        }
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        let path = match &self.pipelines.inner.options.bin_dir {
            Some(dir) => format!("{}:{path}", dir.display()),
            None => path,
        };
        env.insert("PATH".into(), path);
        env.insert("CI".into(), "true".into());
        env.insert("SLIPWAY_RUN".into(), self.record.id.to_string());
        env.insert("SLIPWAY_ENV".into(), self.record.environment.clone());
        env.insert("SLIPWAY_COMMIT".into(), self.record.commit.clone());
        env.insert("SLIPWAY_REF".into(), self.record.git_ref.clone());
        env.insert(
            "SLIPWAY_ARTIFACTS".into(),
            self.run_dir.join("artifacts").display().to_string(),
        );
        env.extend(step.env.clone());
        env
    }
}

/// Carries run `id` out to its end.
pub(crate) async fn execute(
    pipelines: &Pipelines,
    id: i64,
    cancel: CancellationToken,
    approvals: watch::Receiver<Option<String>>,
) {
    let record = match pipelines.inner.store.run(id).await {
        Ok(Some(r)) => r,
        _ => return,
    };
    let run_dir = pipelines.inner.options.runs_dir.join(id.to_string());
    let exec = Arc::new(Exec {
        pipelines: pipelines.clone(),
        src: run_dir.join("src"),
        log: RunLog::new(&run_dir.join("run.log")),
        run_dir,
        state: Mutex::new(RunState::of(&record)),
        status: Mutex::new(status::RUNNING.into()),
        cancel,
        approvals: Mutex::new(approvals),
        gates: Mutex::new(Gates::default()),
        project: Mutex::new(None),
        pipeline: Mutex::new(None),
        record,
    });
    exec.save(false, None, None).await;
    exec.event(
        "pipeline.started",
        format!(
            "run {} of {} at {} started",
            exec.record.id,
            exec.record.environment,
            short(&exec.record.commit)
        ),
        EventLevel::Info,
    )
    .await;
    let (final_status, reason, failed_step) = match prepare(&exec).await {
        Err(why) => (status::FAILED, Some(why), Some("checkout".to_string())),
        Ok(()) => stages(&exec).await,
    };
    let final_status = if exec.cancel.is_cancelled() && final_status != status::SUCCEEDED {
        status::CANCELLED
    } else {
        final_status
    };
    let reason = if final_status == status::CANCELLED {
        Some(lock(&exec.state).superseded_by.map_or_else(
            || "cancelled".to_string(),
            |by| format!("superseded by run {by}"),
        ))
    } else {
        reason
    };
    exec.set_status(final_status);
    exec.save(true, reason.clone(), failed_step.clone()).await;
    let level = if final_status == status::SUCCEEDED {
        EventLevel::Info
    } else {
        EventLevel::Warning
    };
    exec.event(
        &format!("pipeline.{final_status}"),
        format!(
            "run {} {final_status}{}{}",
            exec.record.id,
            failed_step.map(|s| format!(" at {s}")).unwrap_or_default(),
            reason.map(|r| format!(": {r}")).unwrap_or_default()
        ),
        level,
    )
    .await;
}

/// The checkout, the project file at that commit, and the stages planned.
async fn prepare(exec: &Arc<Exec>) -> Result<(), String> {
    let daemon_project = slipway_spec::load(&exec.pipelines.inner.options.project_file).ok();
    let (repo, relative) = exec
        .pipelines
        .source(daemon_project.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&exec.src);
    if let Some(parent) = exec.src.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    exec.log.line(
        "checkout",
        &format!(
            "git clone {} && git checkout {}",
            repo.location, exec.record.commit
        ),
    );
    repo.checkout(&exec.record.commit, &exec.src)
        .await
        .map_err(|e| e.to_string())?;
    if let Ok(c) = git::commit_in(&exec.src, &exec.record.commit).await {
        let mut st = lock(&exec.state);
        st.subject.get_or_insert(c.subject);
        st.commit_time_ms = Some(c.time * 1000);
    }
    let file = exec.src.join(&relative);
    let project = slipway_spec::load(&file).map_err(|e| match e {
        slipway_spec::LoadError::Invalid { report } => format!(
            "{} at {} has {} error(s):\n{}",
            relative.display(),
            short(&exec.record.commit),
            report.error_count(),
            report.render()
        ),
        other => format!(
            "{} at {}: {other}",
            relative.display(),
            short(&exec.record.commit)
        ),
    })?;
    let pipeline = slipway_spec::pipeline::resolve(&project.config);
    let (branch, tag) = ref_kind(&exec.record.git_ref);
    lock(&exec.state).stages = plan(&pipeline, &exec.record.environment, branch, tag);
    *lock(&exec.project) = Some(project);
    *lock(&exec.pipeline) = Some(pipeline);
    exec.save(false, None, None).await;
    Ok(())
}

/// `(branch, tag)` of a ref as written (`main`, `refs/heads/main`, `v1.2.3`, `refs/tags/v1`).
pub(crate) fn ref_kind(git_ref: &str) -> (Option<&str>, Option<&str>) {
    if let Some(t) = git_ref.strip_prefix("refs/tags/") {
        return (None, Some(t));
    }
    let b = git_ref.strip_prefix("refs/heads/").unwrap_or(git_ref);
    // A bare name may be either; `when` checks both.
    (Some(b), Some(b))
}

/// Runs the stages; returns the run's status, reason and failed step.
async fn stages(exec: &Arc<Exec>) -> (&'static str, Option<String>, Option<String>) {
    let Some(pipeline) = lock(&exec.pipeline).clone() else {
        return (status::FAILED, Some("no pipeline".into()), None);
    };
    let stage_count = lock(&exec.state).stages.len();
    let mut halted: Option<(&'static str, String, String)> = None;
    for si in 0..stage_count {
        if halted.is_some() || exec.cancel.is_cancelled() {
            skip_stage(exec, si);
            continue;
        }
        lock(&exec.state).stages[si].status = status::RUNNING.into();
        exec.save(false, None, None).await;
        let jobs: Vec<(usize, ResolvedJob)> = {
            let st = lock(&exec.state);
            st.stages[si]
                .jobs
                .iter()
                .enumerate()
                .filter_map(|(ji, j)| {
                    pipeline
                        .jobs
                        .iter()
                        .find(|pj| pj.name == j.name)
                        .map(|pj| (ji, pj.clone()))
                })
                .collect()
        };
        // Waves: every pending job whose needs are done runs; repeat until nothing moves.
        loop {
            let ready: Vec<(usize, ResolvedJob)> = {
                let st = lock(&exec.state);
                let done = |name: &str| {
                    st.stages.iter().flat_map(|s| &s.jobs).any(|j| {
                        j.name == name
                            && (j.status == status::SUCCEEDED || j.status == status::SKIPPED)
                    })
                };
                jobs.iter()
                    .filter(|(ji, j)| {
                        st.stages[si].jobs[*ji].status == status::PENDING
                            && j.needs.iter().all(|n| done(n))
                    })
                    .cloned()
                    .collect()
            };
            if ready.is_empty() || halted.is_some() || exec.cancel.is_cancelled() {
                break;
            }
            let results = futures_util::future::join_all(
                ready.iter().map(|(ji, job)| run_job(exec, si, *ji, job)),
            )
            .await;
            for r in results {
                if let Err(h) = r {
                    halted.get_or_insert(h);
                }
            }
        }
        // Jobs that never became ready (a need failed or was never met) are skipped.
        {
            let mut st = lock(&exec.state);
            for j in &mut st.stages[si].jobs {
                if j.status == status::PENDING {
                    j.status = status::SKIPPED.into();
                    for s in &mut j.steps {
                        s.status = status::SKIPPED.into();
                    }
                }
            }
            let failed = st.stages[si]
                .jobs
                .iter()
                .any(|j| j.status == status::FAILED || j.status == status::REFUSED);
            st.stages[si].status = if exec.cancel.is_cancelled() {
                status::CANCELLED
            } else if failed {
                status::FAILED
            } else {
                status::SUCCEEDED
            }
            .into();
        }
        exec.save(false, None, None).await;
    }
    match halted {
        Some((s, reason, step)) => (s, Some(reason), Some(step)),
        None if exec.cancel.is_cancelled() => (status::CANCELLED, None, None),
        None => (status::SUCCEEDED, None, None),
    }
}

fn skip_stage(exec: &Exec, si: usize) {
    let mut st = lock(&exec.state);
    let cancelled = exec.cancel.is_cancelled();
    let stage = &mut st.stages[si];
    if stage.status == status::PENDING {
        stage.status = if cancelled {
            status::CANCELLED
        } else {
            status::SKIPPED
        }
        .into();
    }
    for j in &mut stage.jobs {
        if j.status == status::PENDING {
            j.status = status::SKIPPED.into();
            for s in &mut j.steps {
                s.status = status::SKIPPED.into();
            }
        }
    }
}

/// Runs one job's steps; `Err` carries (run status, reason, `stage/job/step`) when it failed.
async fn run_job(
    exec: &Arc<Exec>,
    si: usize,
    ji: usize,
    job: &ResolvedJob,
) -> Result<(), (&'static str, String, String)> {
    let stage_name = lock(&exec.state).stages[si].name.clone();
    {
        let mut st = lock(&exec.state);
        let j = &mut st.stages[si].jobs[ji];
        j.status = status::RUNNING.into();
        j.started_ms = Some(now_ms());
    }
    exec.save(false, None, None).await;
    let deadline = job.timeout.map(|t| tokio::time::Instant::now() + t.std());
    let mut outcome: Result<(), (&'static str, String, String)> = Ok(());
    for (k, step) in job.steps.iter().enumerate() {
        if exec.cancel.is_cancelled() {
            break;
        }
        let who = format!("{}/{}", job.name, step.name);
        exec.step_mut(si, ji, k, |s| {
            s.status = status::RUNNING.into();
            s.started_ms = Some(now_ms());
        });
        exec.save(false, None, None).await;
        exec.log.line(
            &who,
            &format!("--- {} ({})", step.name, crate::runner::kind(&step.action)),
        );
        let mut end = StepEnd::failed("not run");
        let attempts = step.retries + 1;
        for attempt in 1..=attempts {
            exec.step_mut(si, ji, k, |s| s.attempts = attempt);
            let timeout = match (step.timeout.map(|t| t.std()), deadline) {
                (Some(t), Some(d)) => {
                    Some(t.min(d.saturating_duration_since(tokio::time::Instant::now())))
                }
                (Some(t), None) => Some(t),
                (None, Some(d)) => Some(d.saturating_duration_since(tokio::time::Instant::now())),
                (None, None) => None,
            };
            end = run_step(exec, si, ji, k, step, &who, timeout).await;
            if end.status != status::FAILED || exec.cancel.is_cancelled() {
                break;
            }
            if attempt < attempts {
                exec.log.line(
                    &who,
                    &format!(
                        "attempt {attempt} of {attempts} failed: {}; trying again",
                        end.detail
                    ),
                );
            }
        }
        let failed = end.status != status::SUCCEEDED;
        exec.log
            .line(&who, &format!("{}: {}", end.status, end.detail));
        exec.step_mut(si, ji, k, |s| {
            s.status = end.status.into();
            s.finished_ms = Some(now_ms());
            s.exit_code = end.exit_code;
            s.detail = Some(end.detail.clone());
            if failed {
                s.tail = end.tail.clone();
            }
        });
        exec.save(false, None, None).await;
        if failed {
            let run_status = if exec.cancel.is_cancelled() {
                status::CANCELLED
            } else if end.status == status::REFUSED {
                status::REFUSED
            } else {
                status::FAILED
            };
            outcome = Err((
                run_status,
                end.detail.clone(),
                format!("{stage_name}/{}/{}", job.name, step.name),
            ));
            for later in k + 1..job.steps.len() {
                exec.step_mut(si, ji, later, |s| s.status = status::SKIPPED.into());
            }
            break;
        }
    }
    if outcome.is_ok() && !exec.cancel.is_cancelled() {
        keep_artifacts(exec, job);
    }
    {
        let mut st = lock(&exec.state);
        let j = &mut st.stages[si].jobs[ji];
        j.finished_ms = Some(now_ms());
        j.status = match &outcome {
            Ok(()) if exec.cancel.is_cancelled() => status::CANCELLED,
            Ok(()) => status::SUCCEEDED,
            Err((s, _, _)) if *s == status::REFUSED => status::REFUSED,
            Err((s, _, _)) if *s == status::CANCELLED => status::CANCELLED,
            Err(_) => status::FAILED,
        }
        .into();
    }
    exec.save(false, None, None).await;
    outcome
}

/// Copies a job's artifacts to `runs/ID/artifacts/`, where later stages find them through
/// `$SLIPWAY_ARTIFACTS` (they are also still in the run's checkout).
fn keep_artifacts(exec: &Exec, job: &ResolvedJob) {
    for a in &job.artifacts {
        let from = exec.src.join(a);
        let to = exec.run_dir.join("artifacts").join(a);
        match copy_tree(&from, &to) {
            Ok(()) => exec.log.line(&job.name, &format!("kept artifact {a}")),
            Err(e) => exec
                .log
                .line(&job.name, &format!("artifact {a} not kept: {e}")),
        }
    }
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let meta = std::fs::metadata(from)?;
    if meta.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    } else {
        if let Some(p) = to.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::copy(from, to)?;
    }
    Ok(())
}

/// One attempt of one step.
async fn run_step(
    exec: &Arc<Exec>,
    si: usize,
    ji: usize,
    k: usize,
    step: &ResolvedStep,
    who: &str,
    timeout: Option<std::time::Duration>,
) -> StepEnd {
    match &step.action {
        Action::Run { command, shell } => {
            let dir = match &step.cwd {
                Some(c) => exec.src.join(c),
                None => exec.src.clone(),
            };
            let env = exec.step_env(step);
            let out = command::run(
                command::Spec {
                    shell,
                    command,
                    dir: &dir,
                    env: &env,
                    timeout,
                },
                &exec.cancel,
                &exec.log,
                who,
            )
            .await;
            let tail = out.tail;
            match out.ended {
                Ended::Exited(Some(0)) => StepEnd {
                    exit_code: Some(0),
                    ..StepEnd::ok("exit 0")
                },
                Ended::Exited(code) => StepEnd {
                    status: status::FAILED,
                    detail: code.map_or("killed by a signal".to_string(), |c| format!("exit {c}")),
                    exit_code: code,
                    tail,
                },
                Ended::TimedOut => StepEnd {
                    status: status::FAILED,
                    detail: format!("timed out after {}s", timeout.map_or(0, |t| t.as_secs())),
                    exit_code: None,
                    tail,
                },
                Ended::Cancelled => StepEnd {
                    status: status::CANCELLED,
                    detail: "cancelled".into(),
                    exit_code: None,
                    tail,
                },
                Ended::NotStarted(why) => StepEnd::failed(why),
            }
        }
        other => crate::builtin::run(exec, si, ji, k, other, who, timeout).await,
    }
}
