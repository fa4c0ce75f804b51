//! Handlers of the deploy routes: deploy, deployments, rollback, the controls (promote, pause,
//! resume, abort) and releases. The work is the deploy engine's; this module turns requests
//! into its calls and its records into wire views.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use slipway_api::{
    AnalysisView, ControlBody, DeployBody, DeploymentView, DeploymentsQuery, ErrorBody, PinBody,
    ReleaseView, RollbackBody, ServiceProgressView, TrafficSummary,
};
use slipway_deploy::analysis::Summary;
use slipway_deploy::record::EnvironmentData;
use slipway_deploy::{Action, DeployError, DeploymentState, parse_release_id, release_id};
use slipway_spec::model::StrategyKind;
use slipway_store::DeploymentRecord;

use super::AppState;
use super::error::ApiError;
use super::handlers::{ApiJson, ApiQuery};
use super::middleware::{AuditNote, AuditNotes};
use crate::environments;

/// The actor of API calls: the admin token's holder.
const ACTOR: &str = "admin";

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        match e {
            DeployError::Busy { detail, .. } => ApiError::new(
                StatusCode::CONFLICT,
                detail,
                Some("`slipway deployments` shows how it goes"),
            ),
            DeployError::Invalid(why) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, why, None::<&str>)
            }
            // Each message names what to look at: releases, deployments.
            DeployError::NotFound(why) => ApiError::new(StatusCode::NOT_FOUND, why, None::<&str>),
            DeployError::Conflict(why) => ApiError::new(StatusCode::CONFLICT, why, None::<&str>),
            // The message names the gate and what to do.
            DeployError::Refused(r) => ApiError::new(StatusCode::CONFLICT, r.message, None::<&str>),
            DeployError::Store(e) => e.into(),
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

fn parse_strategy(s: &str) -> Result<StrategyKind, ApiError> {
    match s {
        "recreate" => Ok(StrategyKind::Recreate),
        "rolling" => Ok(StrategyKind::Rolling),
        "blue-green" | "bluegreen" | "blue_green" => Ok(StrategyKind::BlueGreen),
        "canary" => Ok(StrategyKind::Canary),
        other => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("unknown strategy `{other}`"),
            Some("use recreate, rolling, blue-green or canary"),
        )),
    }
}

fn summary(s: &Summary) -> TrafficSummary {
    TrafficSummary {
        requests: s.requests,
        error_rate: s.error_rate,
        p50_ms: s.p50_ms,
        p95_ms: s.p95_ms,
    }
}

/// The wire view of a deployment, with its sets' readiness now.
pub(crate) async fn view(app: &AppState, d: &DeploymentRecord) -> DeploymentView {
    let state: DeploymentState = serde_json::from_value(d.state.clone()).unwrap_or_default();
    let sets = app
        .workloads
        .existing_runtime(&d.environment)
        .await
        .map(|r| async move { r.sets().await });
    let sets = match sets {
        Some(f) => f.await,
        None => Vec::new(),
    };
    let release = release_id(d.release);
    let from = d.from_release.map(release_id);
    let version = app
        .store
        .release(&d.environment, d.release)
        .await
        .ok()
        .flatten()
        .map(|r| r.version)
        .unwrap_or_default();
    let ready = |service: &str, release: &str| {
        sets.iter()
            .find(|s| s.service == service && s.release == release)
            .map_or(0, |s| s.ready)
    };
    let config: Option<slipway_deploy::ReleaseSnapshot> = app
        .store
        .release(&d.environment, d.release)
        .await
        .ok()
        .flatten()
        .and_then(|r| serde_json::from_value(r.snapshot).ok());
    let services = state
        .services
        .iter()
        .map(|(name, p)| {
            let steps = config
                .as_ref()
                .and_then(|c| c.config.services.get(name))
                .map_or(0, |s| s.strategy.steps.len());
            ServiceProgressView {
                name: name.clone(),
                strategy: strategy_name(p.strategy).to_string(),
                phase: p.phase.clone(),
                step: (p.strategy == StrategyKind::Canary && steps > 0)
                    .then_some((p.step + 1, steps)),
                weight: p.weight,
                new_instances: (p.new_replicas, ready(name, &release)),
                old_instances: (
                    p.old_replicas,
                    from.as_deref().map_or(0, |f| ready(name, f)),
                ),
                detail: p.detail.clone(),
                output: p.output.clone(),
                analysis: state.analysis.get(name).map(|j| AnalysisView {
                    verdict: serde_json::to_value(j.verdict)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    reason: j.reason.clone(),
                    canary: summary(&j.canary),
                    baseline: j.baseline.as_ref().map(summary),
                }),
            }
        })
        .collect();
    let end = d.finished.unwrap_or_else(jiff::Timestamp::now);
    let ms = |a: jiff::Timestamp, b: jiff::Timestamp| {
        u64::try_from(b.duration_since(a).as_millis()).unwrap_or(0)
    };
    DeploymentView {
        deployment: d.id,
        environment: d.environment.clone(),
        kind: d.kind.clone(),
        release,
        version,
        from_release: from,
        status: d.status.clone(),
        outcome: slipway_deploy::outcome(d).map(str::to_string),
        reason: d.reason.clone(),
        paused: state.paused.clone(),
        actor: state.actor.clone(),
        started_at: d.started,
        finished_at: d.finished,
        duration_ms: ms(d.started, end),
        switched_ms: state
            .switched_ms
            .map(|s| u64::try_from(s - d.started.as_millisecond()).unwrap_or(0)),
        reverted_in_ms: state.reverted_in_ms,
        watch_until: state
            .watch_until_ms
            .and_then(|w| jiff::Timestamp::from_millisecond(w).ok()),
        services,
    }
}

/// Starts a deployment of the project file as it is now (plus `set`/`unset`).
#[utoipa::path(
    post, path = "/v1/environments/{env}/deploy", tag = "deploys",
    params(("env" = String, Path, description = "Environment")),
    request_body = DeployBody,
    responses(
        (status = 202, body = DeploymentView),
        (status = 404, description = "Unknown environment", body = ErrorBody),
        (status = 409, description = "Another deployment is going", body = ErrorBody),
        (status = 422, description = "The project file or the request is invalid", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn deploy(
    State(app): State<Arc<AppState>>,
    Path(env): Path<String>,
    ApiJson(body): ApiJson<DeployBody>,
) -> Result<Response, ApiError> {
    let strategy = body.strategy.as_deref().map(parse_strategy).transpose()?;
    let project = environments::load_project(&app.file)?;
    *app.project.write().expect("project lock") = Some(project.clone());
    let env = super::known_environment(&app, &env).await?;
    // Names only: a value set on the command line may be sensitive.
    let set_keys: Vec<String> = body.set.keys().cloned().collect();
    let unset = body.unset.clone();
    let message = body.message.clone();
    let applied = environments::apply(app.store.as_ref(), &project, Some(&env)).await?;
    *app.project.write().expect("project lock") = Some(project.clone());
    let record = crate::deploys::start(
        &app,
        &project,
        &applied,
        slipway_deploy::DeployRequest {
            environment: applied.environment.clone(),
            config: project
                .resolve(&applied.environment)
                .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e.to_string(), None::<&str>))?,
            generation: applied.generation,
            version: body.version,
            strategy,
            set: body.set.into_iter().collect(),
            unset: body.unset.clone(),
            message: body.message.clone(),
            actor: ACTOR.to_string(),
            secrets: app.workloads.secret_versions(),
            smoke: None,
            watch: None,
            force: body.force,
            approved_by: None,
            commit: None,
            fix: body.fix,
        },
    )
    .await?;
    let view = view(&app, &record).await;
    let state: DeploymentState = serde_json::from_value(record.state.clone()).unwrap_or_default();
    let mut note = deployment_note(&record, None, &view.version).details(serde_json::json!({
        "version": view.version, "strategy": body.strategy, "force": body.force,
        "forced": state.forced, "set": set_keys, "unset": unset,
    }));
    // Why, as the caller said (`--message`), and a forced gate said plainly.
    let forced = (!state.forced.is_empty()).then(|| {
        let gates: Vec<&str> = state
            .forced
            .iter()
            .map(|f| f.split(':').next().unwrap_or(f))
            .collect();
        format!("--force past {}", gates.join(", "))
    });
    note.reason = match (forced, message) {
        (Some(f), Some(m)) => Some(format!("{f}: {m}")),
        (f, m) => f.or(m),
    };
    Ok((StatusCode::ACCEPTED, AuditNotes::one(note), Json(view)).into_response())
}

/// The audit note of a call that started (or acted on) a deployment: completed with the
/// deployment's outcome when it ends.
pub(crate) fn deployment_note(
    record: &DeploymentRecord,
    action: Option<&'static str>,
    version: &str,
) -> AuditNote {
    AuditNote {
        action,
        environment: Some(record.environment.clone()),
        target: Some(format!(
            "deployment {} ({} of {}{})",
            record.id,
            record.kind,
            release_id(record.release),
            if version.is_empty() {
                String::new()
            } else {
                format!(", {version}")
            }
        )),
        subject: Some(format!("deployment-{}", record.id)),
        ..Default::default()
    }
}

/// Recent deployments, newest first.
#[utoipa::path(
    get, path = "/v1/deployments", tag = "deploys",
    params(DeploymentsQuery),
    responses((status = 200, body = Vec<DeploymentView>)),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(app): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<DeploymentsQuery>,
) -> Result<Json<Vec<DeploymentView>>, ApiError> {
    let env = match &q.env {
        Some(e) => Some(super::known_environment(&app, e).await?),
        None => None,
    };
    let records = app
        .store
        .deployments(env.as_deref(), q.limit.unwrap_or(20).min(1000))
        .await?;
    let mut out = Vec::new();
    for r in &records {
        out.push(view(&app, r).await);
    }
    Ok(Json(out))
}

/// One deployment, with its live progress.
#[utoipa::path(
    get, path = "/v1/deployments/{id}", tag = "deploys",
    params(("id" = i64, Path, description = "Deployment id")),
    responses(
        (status = 200, body = DeploymentView),
        (status = 404, description = "No such deployment", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn get(
    State(app): State<Arc<AppState>>,
    Path(id): Path<i64>,
) -> Result<Json<DeploymentView>, ApiError> {
    let record = app.store.deployment(id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no deployment {id}"),
            Some("`slipway deployments` lists them"),
        )
    })?;
    Ok(Json(view(&app, &record).await))
}

/// Rolls the environment back (to its previous release, or `to`); during a deployment,
/// aborts it instead.
#[utoipa::path(
    post, path = "/v1/environments/{env}/rollback", tag = "deploys",
    params(("env" = String, Path, description = "Environment")),
    request_body = RollbackBody,
    responses(
        (status = 202, body = DeploymentView),
        (status = 404, description = "No release to go back to", body = ErrorBody),
        (status = 409, description = "Not possible now", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn rollback(
    State(app): State<Arc<AppState>>,
    Path(env): Path<String>,
    ApiJson(body): ApiJson<RollbackBody>,
) -> Result<Response, ApiError> {
    let env = super::known_environment(&app, &env).await?;
    let to = match &body.to {
        Some(t) => Some(parse_release_id(t).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("`{t}` is not a release id"),
                Some("write r3 (see `slipway releases`)"),
            )
        })?),
        None => None,
    };
    let record = app.engine.rollback(&env, to, body.reason, ACTOR).await?;
    let view = view(&app, &record).await;
    // During a deploy, a rollback is that deploy's abort.
    let note = if record.kind == slipway_deploy::record::KIND_ROLLBACK {
        deployment_note(&record, None, &view.version)
    } else {
        AuditNote {
            subject: None,
            ..deployment_note(&record, Some("deploy.abort"), &view.version)
        }
    };
    Ok((StatusCode::ACCEPTED, AuditNotes::one(note), Json(view)).into_response())
}

async fn control(app: &AppState, env: String, action: Action) -> Result<Response, ApiError> {
    let env = super::known_environment(app, &env).await?;
    let record = app.engine.control(&env, action, ACTOR).await?;
    let view = view(app, &record).await;
    let note = AuditNote {
        subject: None,
        ..deployment_note(&record, None, &view.version)
    };
    Ok((AuditNotes::one(note), Json(view)).into_response())
}

/// Goes on from a pause (`full`: skips the remaining steps).
#[utoipa::path(
    post, path = "/v1/environments/{env}/promote", tag = "deploys",
    params(("env" = String, Path, description = "Environment")),
    request_body = ControlBody,
    responses((status = 200, body = DeploymentView), (status = 404, description = "No deployment is going", body = ErrorBody)),
    security(("bearer" = [])),
)]
pub(crate) async fn promote(
    State(app): State<Arc<AppState>>,
    Path(env): Path<String>,
    ApiJson(body): ApiJson<ControlBody>,
) -> Result<Response, ApiError> {
    control(&app, env, Action::Promote { full: body.full }).await
}

/// Stops the deployment's clock where it is.
#[utoipa::path(
    post, path = "/v1/environments/{env}/pause", tag = "deploys",
    params(("env" = String, Path, description = "Environment")),
    responses((status = 200, body = DeploymentView), (status = 404, description = "No deployment is going", body = ErrorBody)),
    security(("bearer" = [])),
)]
pub(crate) async fn pause(
    State(app): State<Arc<AppState>>,
    Path(env): Path<String>,
) -> Result<Response, ApiError> {
    control(&app, env, Action::Pause).await
}

/// Starts a paused deployment's clock again.
#[utoipa::path(
    post, path = "/v1/environments/{env}/resume", tag = "deploys",
    params(("env" = String, Path, description = "Environment")),
    responses((status = 200, body = DeploymentView), (status = 404, description = "No deployment is going", body = ErrorBody)),
    security(("bearer" = [])),
)]
pub(crate) async fn resume(
    State(app): State<Arc<AppState>>,
    Path(env): Path<String>,
) -> Result<Response, ApiError> {
    control(&app, env, Action::Resume).await
}

/// Rolls the deployment back.
#[utoipa::path(
    post, path = "/v1/environments/{env}/abort", tag = "deploys",
    params(("env" = String, Path, description = "Environment")),
    request_body = ControlBody,
    responses((status = 200, body = DeploymentView), (status = 404, description = "No deployment is going", body = ErrorBody)),
    security(("bearer" = [])),
)]
pub(crate) async fn abort(
    State(app): State<Arc<AppState>>,
    Path(env): Path<String>,
    ApiJson(body): ApiJson<ControlBody>,
) -> Result<Response, ApiError> {
    let reason = body.reason.unwrap_or_else(|| "no reason given".into());
    control(&app, env, Action::Abort { reason }).await
}

/// An environment's releases, newest first.
#[utoipa::path(
    get, path = "/v1/environments/{env}/releases", tag = "deploys",
    params(("env" = String, Path, description = "Environment")),
    responses((status = 200, body = Vec<ReleaseView>)),
    security(("bearer" = [])),
)]
pub(crate) async fn releases(
    State(app): State<Arc<AppState>>,
    Path(env): Path<String>,
) -> Result<Json<Vec<ReleaseView>>, ApiError> {
    let env = super::known_environment(&app, &env).await?;
    let state = app.store.environment_state(&env).await?;
    let data = EnvironmentData::from_value(&state.data);
    let deployments = app.store.deployments(Some(&env), 1000).await?;
    let records = app.store.releases(&env, 1000).await?;
    Ok(Json(
        records
            .into_iter()
            .map(|r| {
                let standby = data.standby.as_ref().is_some_and(|s| s.release == r.number);
                let role = if state.current_release == Some(r.number) {
                    Some("current")
                } else if state.previous_release == Some(r.number) {
                    Some("previous")
                } else if standby {
                    Some("standby")
                } else {
                    None
                };
                let snapshot: Option<slipway_deploy::ReleaseSnapshot> =
                    serde_json::from_value(r.snapshot.clone()).ok();
                ReleaseView {
                    id: release_id(r.number),
                    version: r.version,
                    created_at: r.time,
                    description: r.description,
                    role: role.map(str::to_string),
                    standby,
                    pinned: r.pinned,
                    pruned: r.pruned,
                    last_outcome: deployments
                        .iter()
                        .find(|d| d.release == r.number && d.kind == "deploy")
                        .map(|d| d.status.clone()),
                    overrides: snapshot
                        .map(|s| s.overrides.into_iter().collect())
                        .unwrap_or_default(),
                }
            })
            .collect(),
    ))
}

/// Pins a release (kept by retention) or unpins it.
#[utoipa::path(
    post, path = "/v1/environments/{env}/releases/{release}/pin", tag = "deploys",
    params(("env" = String, Path, description = "Environment"), ("release" = String, Path, description = "Release (r3)")),
    request_body = PinBody,
    responses((status = 200, description = "Done"), (status = 404, description = "No such release", body = ErrorBody)),
    security(("bearer" = [])),
)]
pub(crate) async fn pin(
    State(app): State<Arc<AppState>>,
    Path((env, release)): Path<(String, String)>,
    ApiJson(body): ApiJson<PinBody>,
) -> Result<Response, ApiError> {
    let env = super::known_environment(&app, &env).await?;
    let number = parse_release_id(&release).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("`{release}` is not a release id"),
            Some("write r3"),
        )
    })?;
    app.engine.pin(&env, number, body.pinned).await?;
    let note = AuditNote {
        action: Some(if body.pinned {
            "release.pin"
        } else {
            "release.unpin"
        }),
        target: Some(release_id(number)),
        ..Default::default()
    };
    Ok((
        AuditNotes::one(note),
        Json(serde_json::json!({ "release": release_id(number), "pinned": body.pinned })),
    )
        .into_response())
}
