//! Handlers of the pipeline routes: start, list and show runs, their logs, approve, cancel and
//! re-run them; freeze and unfreeze deploys; DORA figures. The work is `slipway-pipeline`'s.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use slipway_api::{
    DoraQuery, ErrorBody, FreezeBody, JobView, RunBody, RunLogs, RunLogsQuery, RunView, RunsQuery,
    StageView, StepView,
};
use slipway_pipeline::state::status;
use slipway_pipeline::{PipelineError, RunRequest, RunState};
use slipway_store::{RunQuery, RunRecord};

use super::AppState;
use super::error::ApiError;
use super::handlers::{ApiJson, ApiQuery};
use super::middleware::{AuditNote, AuditNotes};

const ACTOR: &str = "admin";

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::NotFound(why) => ApiError::new(
                StatusCode::NOT_FOUND,
                why,
                Some("`slipway pipeline status` lists the runs"),
            ),
            PipelineError::Invalid(why) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, why, None::<&str>)
            }
            PipelineError::Conflict(why) => ApiError::new(StatusCode::CONFLICT, why, None::<&str>),
            PipelineError::Git(e) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                e.to_string(),
                Some("check the ref with `git log -1 REF`"),
            ),
            PipelineError::Store(e) => e.into(),
        }
    }
}

/// The wire view of a run.
pub(crate) fn view(r: &RunRecord) -> RunView {
    let state = RunState::of(r);
    let now = jiff::Timestamp::now().as_millisecond();
    let ms =
        |a: Option<i64>, b: Option<i64>| a.and_then(|a| u64::try_from(b.unwrap_or(now) - a).ok());
    RunView {
        run: r.id,
        environment: r.environment.clone(),
        git_ref: r.git_ref.clone(),
        commit: r.commit.clone(),
        subject: state.subject.clone(),
        trigger: r.trigger.clone(),
        status: r.status.clone(),
        outcome: status::is_final(&r.status).then(|| r.status.clone()),
        failed_step: r.failed_step.clone(),
        reason: r.reason.clone(),
        deployment: state.deployment,
        approved_by: state.approved_by.clone(),
        created_at: r.created,
        started_at: r.started,
        finished_at: r.finished,
        duration_ms: ms(
            r.started.map(|t| t.as_millisecond()),
            r.finished.map(|t| t.as_millisecond()),
        ),
        stages: state
            .stages
            .iter()
            .map(|s| StageView {
                name: s.name.clone(),
                status: s.status.clone(),
                jobs: s
                    .jobs
                    .iter()
                    .map(|j| JobView {
                        name: j.name.clone(),
                        status: j.status.clone(),
                        duration_ms: ms(j.started_ms, j.finished_ms),
                        steps: j
                            .steps
                            .iter()
                            .map(|st| StepView {
                                name: st.name.clone(),
                                kind: st.kind.clone(),
                                status: st.status.clone(),
                                duration_ms: st.duration_ms(now),
                                exit_code: st.exit_code,
                                attempts: st.attempts,
                                detail: st.detail.clone(),
                                tail: st.tail.clone(),
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The audit note of a call about a run: completed with the run's outcome when it ends.
fn run_note(r: &RunRecord, started: bool) -> AuditNote {
    AuditNote {
        environment: Some(r.environment.clone()),
        target: Some(format!(
            "run {} ({} at {})",
            r.id,
            r.git_ref,
            &r.commit[..r.commit.len().min(12)]
        )),
        subject: started.then(|| format!("run-{}", r.id)),
        ..Default::default()
    }
}

/// Starts a pipeline run of a commit in an environment.
#[utoipa::path(
    post, path = "/v1/environments/{env}/runs", tag = "pipelines",
    params(("env" = String, Path, description = "Environment")),
    request_body = RunBody,
    responses(
        (status = 202, body = RunView),
        (status = 404, description = "Unknown environment", body = ErrorBody),
        (status = 422, description = "Not a git repository, or an unknown ref", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn start(
    State(app): State<Arc<AppState>>,
    Path(env): Path<String>,
    ApiJson(body): ApiJson<RunBody>,
) -> Result<Response, ApiError> {
    let env = super::known_environment(&app, &env).await?;
    crate::deploys::ensure_restored(&app, &env).await;
    let record = app
        .pipelines
        .start(RunRequest {
            environment: env,
            git_ref: body.git_ref,
            commit: None,
            trigger: "manual".into(),
            actor: ACTOR.into(),
        })
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        AuditNotes::one(run_note(&record, true)),
        Json(view(&record)),
    )
        .into_response())
}

/// Recent runs, newest first.
#[utoipa::path(
    get, path = "/v1/runs", tag = "pipelines",
    params(RunsQuery),
    responses((status = 200, body = Vec<RunView>)),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(app): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<RunsQuery>,
) -> Result<Json<Vec<RunView>>, ApiError> {
    let runs = app
        .store
        .runs(&RunQuery {
            environment: q.env,
            limit: q.limit.unwrap_or(20).min(1000),
            ..Default::default()
        })
        .await?;
    Ok(Json(runs.iter().map(view).collect()))
}

async fn record(app: &AppState, id: i64) -> Result<RunRecord, ApiError> {
    app.store.run(id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no run {id}"),
            Some("`slipway pipeline status` lists the runs"),
        )
    })
}

/// One run, with its stages, jobs and steps.
#[utoipa::path(
    get, path = "/v1/runs/{id}", tag = "pipelines",
    params(("id" = i64, Path, description = "Run id")),
    responses((status = 200, body = RunView), (status = 404, description = "No such run", body = ErrorBody)),
    security(("bearer" = [])),
)]
pub(crate) async fn get(
    State(app): State<Arc<AppState>>,
    Path(id): Path<i64>,
) -> Result<Json<RunView>, ApiError> {
    Ok(Json(view(&record(&app, id).await?)))
}

/// A run's log from a byte offset.
#[utoipa::path(
    get, path = "/v1/runs/{id}/logs", tag = "pipelines",
    params(("id" = i64, Path, description = "Run id"), RunLogsQuery),
    responses((status = 200, body = RunLogs), (status = 404, description = "No such run", body = ErrorBody)),
    security(("bearer" = [])),
)]
pub(crate) async fn logs(
    State(app): State<Arc<AppState>>,
    Path(id): Path<i64>,
    ApiQuery(q): ApiQuery<RunLogsQuery>,
) -> Result<Json<RunLogs>, ApiError> {
    let r = record(&app, id).await?;
    let chunk =
        slipway_pipeline::log::read(&app.pipelines.log_path(id), q.after.unwrap_or(0), 5000)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot read the log of run {id}: {e}"),
                    None::<&str>,
                )
            })?;
    Ok(Json(RunLogs {
        done: status::is_final(&r.status) && chunk.lines.is_empty(),
        lines: chunk.lines,
        next: chunk.next,
    }))
}

/// Approves a run waiting for it (recorded in the audit log with who approved).
#[utoipa::path(
    post, path = "/v1/runs/{id}/approve", tag = "pipelines",
    params(("id" = i64, Path, description = "Run id")),
    responses((status = 200, body = RunView), (status = 409, description = "Not waiting for an approval", body = ErrorBody)),
    security(("bearer" = [])),
)]
pub(crate) async fn approve(
    State(app): State<Arc<AppState>>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let r = app.pipelines.approve(id, ACTOR).await?;
    Ok((AuditNotes::one(run_note(&r, false)), Json(view(&r))).into_response())
}

/// Cancels a queued or going run.
#[utoipa::path(
    post, path = "/v1/runs/{id}/cancel", tag = "pipelines",
    params(("id" = i64, Path, description = "Run id")),
    responses((status = 200, body = RunView), (status = 409, description = "It already ended", body = ErrorBody)),
    security(("bearer" = [])),
)]
pub(crate) async fn cancel(
    State(app): State<Arc<AppState>>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let r = app.pipelines.cancel(id, ACTOR).await?;
    Ok((AuditNotes::one(run_note(&r, false)), Json(view(&r))).into_response())
}

/// Starts a new run of the same commit and environment.
#[utoipa::path(
    post, path = "/v1/runs/{id}/rerun", tag = "pipelines",
    params(("id" = i64, Path, description = "Run id")),
    responses((status = 202, body = RunView), (status = 404, description = "No such run", body = ErrorBody)),
    security(("bearer" = [])),
)]
pub(crate) async fn rerun(
    State(app): State<Arc<AppState>>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let r = app.pipelines.rerun(id, ACTOR).await?;
    Ok((
        StatusCode::ACCEPTED,
        AuditNotes::one(run_note(&r, true)),
        Json(view(&r)),
    )
        .into_response())
}

/// Freezes deploys to an environment (with a reason), or lifts the freeze (without; `unfreeze`
/// says it plainly).
#[utoipa::path(
    post, path = "/v1/environments/{env}/freeze", tag = "pipelines",
    params(("env" = String, Path, description = "Environment")),
    request_body = FreezeBody,
    responses(
        (status = 200, description = "The freeze now"),
        (status = 404, description = "Unknown environment", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn freeze(
    State(app): State<Arc<AppState>>,
    Path(env): Path<String>,
    ApiJson(body): ApiJson<FreezeBody>,
) -> Result<Response, ApiError> {
    set_freeze(&app, &env, body.reason).await
}

/// Lifts a freeze.
#[utoipa::path(
    post, path = "/v1/environments/{env}/unfreeze", tag = "pipelines",
    params(("env" = String, Path, description = "Environment")),
    responses(
        (status = 200, description = "The freeze now (none)"),
        (status = 404, description = "Unknown environment", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn unfreeze(
    State(app): State<Arc<AppState>>,
    Path(env): Path<String>,
) -> Result<Response, ApiError> {
    set_freeze(&app, &env, None).await
}

async fn set_freeze(
    app: &AppState,
    env: &str,
    reason: Option<String>,
) -> Result<Response, ApiError> {
    let env = super::known_environment(app, env).await?;
    let freeze = app.engine.freeze(&env, reason.as_deref(), ACTOR).await?;
    let note = AuditNote {
        action: Some(if reason.is_some() {
            "environment.freeze"
        } else {
            "environment.unfreeze"
        }),
        environment: Some(env.clone()),
        target: Some(format!("environment {env}")),
        reason,
        ..Default::default()
    };
    Ok((
        AuditNotes::one(note),
        Json(serde_json::json!({ "environment": env, "frozen": freeze })),
    )
        .into_response())
}

/// DORA figures from recorded history.
#[utoipa::path(
    get, path = "/v1/dora", tag = "pipelines",
    params(DoraQuery),
    responses((status = 200, description = "Deployment frequency, lead time, change failure rate, time to restore")),
    security(("bearer" = [])),
)]
pub(crate) async fn dora(
    State(app): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<DoraQuery>,
) -> Result<Json<slipway_pipeline::dora::Dora>, ApiError> {
    let days = q.days.unwrap_or(30.0);
    if !(days > 0.0 && days <= 3650.0) {
        return Err(ApiError::bad_request(
            format!("{days} is not a number of days"),
            "pass days between 0 and 3650",
        ));
    }
    let until = jiff::Timestamp::now();
    let since = until
        .checked_sub(jiff::SignedDuration::from_secs_f64(days * 86_400.0))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let env = match &q.env {
        Some(e) => Some(super::known_environment(&app, e).await?),
        None => None,
    };
    let figures =
        slipway_pipeline::dora::compute(app.store.as_ref(), env.as_deref(), since, until).await?;
    Ok(Json(figures))
}
