//! Handlers of the control, environment and audit routes.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use slipway_api::{
    AnnotationRequest, ApplyResult, AuditEntry, AuditQuery, EnvQuery, ErrorBody, Event, Health,
    LogLine, LogsQuery, ReleaseRef, RunStarted, ServiceStatus, ShutdownQuery, StatusReport,
};
use slipway_spec::{Project, ResolvedEnv};
use slipway_store::NewEvent;

use super::AppState;
use super::error::ApiError;
use super::middleware::{AuditNote, AuditNotes};
use crate::environments;

/// JSON bodies whose rejections are API errors (a 400 with a reason).
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct ApiJson<T>(pub(crate) T);

/// Query strings whose rejections are API errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> Self {
        // Keep axum's distinction: 400 bad syntax, 415 not JSON, 422 wrong fields.
        ApiError::new(
            r.status(),
            format!("invalid JSON body: {}", r.body_text()),
            Some("see /openapi.json for the request schema"),
        )
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::bad_request(
            format!("invalid query: {}", r.body_text()),
            "see /openapi.json for the parameters",
        )
    }
}

/// Liveness of the daemon; the only route without authentication.
#[utoipa::path(get, path = "/healthz", tag = "control", responses((status = 200, body = Health)))]
pub(crate) async fn healthz(State(app): State<Arc<AppState>>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: crate::VERSION.into(),
        pid: app.control.pid,
    })
}

/// The OpenAPI document.
pub(crate) async fn openapi_document() -> Json<utoipa::openapi::OpenApi> {
    Json(super::openapi())
}

/// Unknown routes.
pub(crate) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route",
        Some("see /openapi.json for the routes"),
    )
}

/// The project as last loaded, loading it if needed.
fn project(app: &AppState) -> Result<Project, ApiError> {
    if let Some(p) = app.project.read().expect("project lock").clone() {
        return Ok(p);
    }
    let p = environments::load_project(&app.file)?;
    *app.project.write().expect("project lock") = Some(p.clone());
    Ok(p)
}

/// Services, instances and traffic of an environment.
#[utoipa::path(
    get, path = "/v1/status", tag = "environments",
    params(EnvQuery),
    responses(
        (status = 200, body = StatusReport),
        (status = 404, description = "Unknown environment", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn status(
    State(app): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<EnvQuery>,
) -> Result<Json<StatusReport>, ApiError> {
    let project = project(&app)?;
    let environment = query.env.unwrap_or_else(|| project.default_environment());
    let applied = app.store.applied(&environment).await?;
    // What the control plane runs is what was applied; an environment never brought up shows
    // what the file says, with no instances.
    let resolved: ResolvedEnv = match &applied {
        Some(a) => serde_json::from_value(a.snapshot.clone()).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the applied configuration of `{environment}` cannot be read: {e}"),
                Some("run `slipway up` to apply the project file again"),
            )
        })?,
        None => project.resolve(&environment).map_err(|e| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                e.to_string(),
                Some("pass one of the environments in slipway.toml with --env"),
            )
        })?,
    };
    let running = app.workloads.status(&environment).await.unwrap_or_default();
    let current = app
        .engine
        .current_release(&environment)
        .await
        .ok()
        .flatten();
    let roles = set_roles(&app, &environment).await;
    // The services of the release that runs first (a rollback may bring back one the file no
    // longer has), then any other that has instances, then those of the file not deployed yet.
    let current_config: Option<slipway_deploy::ReleaseSnapshot> = current
        .as_ref()
        .and_then(|r| serde_json::from_value(r.snapshot.clone()).ok());
    let mut declared: Vec<&slipway_spec::ResolvedService> = Vec::new();
    if let Some(c) = &current_config {
        declared.extend(c.config.services.values());
    }
    for s in resolved.services.values() {
        if !declared.iter().any(|d| d.name == s.name) {
            declared.push(s);
        }
    }
    let mut services: Vec<ServiceStatus> = Vec::new();
    for s in &declared {
        let live = running.iter().find(|r| r.name == s.name).cloned();
        services.push(match live {
            Some(mut live) => {
                // The proxy's port when it listens (it resolves 0), else the file's.
                live.port = live.port.or(s.port);
                live
            }
            None => ServiceStatus {
                name: s.name.clone(),
                kind: s.kind.as_str().to_string(),
                replicas: s.replicas,
                port: s.port,
                state: "not-running".into(),
                restarts: 0,
                last_exit: None,
                instances: Vec::new(),
                traffic: Vec::new(),
                next_run: None,
                runs: Vec::new(),
                sets: Vec::new(),
            },
        });
    }
    for live in running {
        if !services.iter().any(|s| s.name == live.name) {
            services.push(live);
        }
    }
    for s in &mut services {
        s.sets.sort_by_key(|x| {
            std::cmp::Reverse(slipway_deploy::parse_release_id(&x.release).unwrap_or(0))
        });
        for set in &mut s.sets {
            set.role = roles
                .get(&set.release)
                .cloned()
                .unwrap_or_else(|| "previous".into());
        }
    }
    let release = current.map(|r| ReleaseRef {
        id: slipway_deploy::release_id(r.number),
        version: r.version,
    });
    Ok(Json(StatusReport {
        project: resolved.project,
        environment,
        release,
        generation: applied.map(|a| a.generation),
        services,
        control: app.control.clone(),
    }))
}

/// What each release with instances is to an environment: `current`, `new` (a deployment
/// brings it in), `standby`; any other is `previous`.
async fn set_roles(app: &AppState, environment: &str) -> std::collections::HashMap<String, String> {
    let mut roles = std::collections::HashMap::new();
    if let Ok(state) = app.store.environment_state(environment).await {
        if let Some(sb) = slipway_deploy::record::EnvironmentData::from_value(&state.data).standby {
            roles.insert(
                slipway_deploy::release_id(sb.release),
                "standby".to_string(),
            );
        }
        if let Some(n) = state.current_release {
            roles.insert(slipway_deploy::release_id(n), "current".to_string());
        }
    }
    if let Ok(active) = app.store.active_deployments().await {
        for d in active.iter().filter(|d| d.environment == environment) {
            let new = slipway_deploy::release_id(d.release);
            // A rollback's target is the one coming back; a committed deploy's new release is
            // already the current one.
            roles.entry(new).or_insert_with(|| "new".to_string());
        }
    }
    roles
}

/// Reads the project file again and applies it to an environment: when it changed since the
/// environment's last deploy, a deployment of it starts (with each service's strategy).
#[utoipa::path(
    post, path = "/v1/environments/{env}/apply", tag = "environments",
    params(("env" = String, Path, description = "Environment")),
    responses(
        (status = 200, body = ApplyResult),
        (status = 404, description = "Unknown environment", body = ErrorBody),
        (status = 409, description = "A deployment is going", body = ErrorBody),
        (status = 422, description = "The project file is invalid", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn apply(
    State(app): State<Arc<AppState>>,
    Path(env): Path<String>,
) -> Result<Response, ApiError> {
    let project = environments::load_project(&app.file)?;
    *app.project.write().expect("project lock") = Some(project.clone());
    let env = super::known_environment(&app, &env).await?;
    let mut result = environments::apply(app.store.as_ref(), &project, Some(&env)).await?;
    if project.resolve(&env).is_ok() {
        app.metrics
            .reconfigure(crate::metrics::config_for(&project, &env));
    }
    app.alerts.reconfigure(&project).await;
    let applied = AuditNote {
        target: Some(format!("generation {}", result.generation)),
        outcome: Some("succeeded"),
        details: json!({ "changed": result.changed, "generation": result.generation }),
        ..Default::default()
    };
    let started =
        match crate::deploys::deploy_if_changed(&app, &project, &result, "slipway up").await {
            Ok(d) => d,
            // The file is applied; the deploy it calls for is refused (a gate, a deploy going).
            Err(e) => {
                let refused = AuditNote {
                    action: Some("deploy.start"),
                    target: Some(format!("environment {env}")),
                    reason: Some(e.to_string()),
                    outcome: Some("refused"),
                    ..Default::default()
                };
                let mut res = ApiError::from(e).into_response();
                res.extensions_mut()
                    .insert(AuditNotes(vec![applied, refused]));
                return Ok(res);
            }
        };
    result.deployment = started.as_ref().map(|d| d.id);
    let mut notes = vec![applied];
    if let Some(d) = &started {
        notes.push(super::deploys::deployment_note(d, Some("deploy.start"), ""));
    }
    Ok((axum::Extension(AuditNotes(notes)), Json(result)).into_response())
}

/// Adds a note to the event log.
#[utoipa::path(
    post, path = "/v1/annotations", tag = "events",
    request_body = AnnotationRequest,
    responses(
        (status = 201, body = Event),
        (status = 400, description = "Invalid body", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn annotate(
    State(app): State<Arc<AppState>>,
    ApiJson(body): ApiJson<AnnotationRequest>,
) -> Result<Response, ApiError> {
    let message = body.message.trim();
    if message.is_empty() {
        return Err(ApiError::bad_request(
            "`message` is empty",
            "write what happened, e.g. \"switched DNS to the new load balancer\"",
        ));
    }
    if message.len() > 4096 {
        return Err(ApiError::bad_request(
            "`message` is longer than 4096 bytes",
            "keep annotations to a few lines",
        ));
    }
    let mut event = NewEvent::info("annotation", message).data(json!({ "actor": "admin" }));
    if let Some(env) = body.environment {
        event = event.environment(env);
    }
    let stored = app.store.append_event(event).await?;
    Ok((StatusCode::CREATED, Json(stored)).into_response())
}

/// The newest audit records.
#[utoipa::path(
    get, path = "/v1/audit", tag = "audit",
    params(AuditQuery),
    responses((status = 200, body = Vec<AuditEntry>)),
    security(("bearer" = [])),
)]
pub(crate) async fn list_audit(
    State(app): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    Ok(Json(
        app.store
            .audit(&slipway_store::AuditQuery {
                limit: query.limit.unwrap_or(100).min(10_000),
                environment: query.env,
                action: query.action,
            })
            .await?,
    ))
}

/// Stops the control plane. With `workloads=stop` (what `slipway down` sends) every instance
/// is stopped first; otherwise instances keep running and the next control plane adopts them.
#[utoipa::path(
    post, path = "/v1/shutdown", tag = "control",
    params(ShutdownQuery),
    responses((status = 202, description = "Stopping")),
    security(("bearer" = [])),
)]
pub(crate) async fn shutdown(
    State(app): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<ShutdownQuery>,
) -> StatusCode {
    tracing::info!(workloads = ?query.workloads, "shutdown requested over the API");
    if query.workloads.as_deref() == Some("stop") {
        app.stop_workloads
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    app.shutdown.cancel();
    StatusCode::ACCEPTED
}

/// Log lines of a service's instances, oldest first, merged by time.
#[utoipa::path(
    get, path = "/v1/services/{service}/logs", tag = "services",
    params(("service" = String, Path, description = "Service"), LogsQuery),
    responses(
        (status = 200, body = Vec<LogLine>),
        (status = 404, description = "Unknown service or environment not brought up", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn service_logs(
    State(app): State<Arc<AppState>>,
    Path(service): Path<String>,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> Result<Json<Vec<LogLine>>, ApiError> {
    let project = project(&app)?;
    let environment = query.env.unwrap_or_else(|| project.default_environment());
    if !project.config.services.contains_key(&service) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no service named `{service}`"),
            Some("`slipway status` lists the services"),
        ));
    }
    let runtime = app
        .workloads
        .existing_runtime(&environment)
        .await
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("environment `{environment}` is not brought up"),
                Some("run `slipway up`"),
            )
        })?;
    if let Some(level) = &query.level
        && !["trace", "debug", "info", "warn", "warning", "error"].contains(&level.as_str())
    {
        return Err(ApiError::bad_request(
            format!("unknown level `{level}`"),
            "use one of trace, debug, info, warn, error",
        ));
    }
    let filter = slipway_runtime::logs::LogFilter {
        since: query.since,
        after: query.after,
        level: query.level,
        grep: query.grep,
        limit: Some(query.limit.unwrap_or(200).min(100_000)),
    };
    let records = runtime.logs(&service, &filter).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
            None::<&str>,
        )
    })?;
    Ok(Json(
        records
            .into_iter()
            .map(|r| LogLine {
                ts: r.ts,
                instance: r.instance,
                stream: r.stream,
                level: r.level,
                message: r.message,
                fields: r.fields,
            })
            .collect(),
    ))
}

/// Starts a run of a cron service now (`slipway cron run NAME`).
#[utoipa::path(
    post, path = "/v1/services/{service}/runs", tag = "services",
    params(("service" = String, Path, description = "Cron service"), EnvQuery),
    responses(
        (status = 201, body = RunStarted),
        (status = 404, description = "Unknown service or environment not brought up", body = ErrorBody),
        (status = 409, description = "Not a cron service, or a run is already going", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn run_service(
    State(app): State<Arc<AppState>>,
    Path(service): Path<String>,
    ApiQuery(query): ApiQuery<EnvQuery>,
) -> Result<Response, ApiError> {
    use slipway_runtime::supervisor::RuntimeError;
    let environment = super::known_environment(&app, query.env.as_deref().unwrap_or("-")).await?;
    let outcome = app
        .workloads
        .run_now(&environment, &service)
        .await
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("environment `{environment}` is not brought up"),
                Some("run `slipway up`"),
            )
        })?;
    match outcome {
        Ok(run) => {
            let note = AuditNote {
                environment: Some(environment),
                target: Some(format!("{service} ({run})")),
                ..Default::default()
            };
            Ok((
                StatusCode::CREATED,
                AuditNotes::one(note),
                Json(RunStarted { service, run }),
            )
                .into_response())
        }
        Err(e @ RuntimeError::UnknownService(_)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            e.to_string(),
            Some("`slipway status` lists the services"),
        )),
        Err(e @ RuntimeError::NotCron(_)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            e.to_string(),
            Some("only services with kind = \"cron\" have runs"),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::CONFLICT,
            e.to_string(),
            Some("wait for the current run to finish, or set concurrency = \"allow\""),
        )),
    }
}
