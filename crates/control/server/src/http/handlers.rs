//! Handlers of the control, environment and audit routes.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use slipway_api::{
    AnnotationRequest, ApplyResult, AuditEntry, AuditQuery, EnvQuery, ErrorBody, Event, Health,
    ServiceStatus, StatusReport,
};
use slipway_spec::{Project, ResolvedEnv};
use slipway_store::NewEvent;

use super::AppState;
use super::error::ApiError;
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
    let services = resolved
        .services
        .values()
        .map(|s| ServiceStatus {
            name: s.name.clone(),
            kind: s.kind.as_str().to_string(),
            replicas: s.replicas,
            port: s.port,
            instances: Vec::new(),
            traffic: Vec::new(),
        })
        .collect();
    Ok(Json(StatusReport {
        project: resolved.project,
        environment,
        release: None,
        generation: applied.map(|a| a.generation),
        services,
        control: app.control.clone(),
    }))
}

/// Reads the project file again and applies it to an environment.
#[utoipa::path(
    post, path = "/v1/environments/{env}/apply", tag = "environments",
    params(("env" = String, Path, description = "Environment")),
    responses(
        (status = 200, body = ApplyResult),
        (status = 404, description = "Unknown environment", body = ErrorBody),
        (status = 422, description = "The project file is invalid", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn apply(
    State(app): State<Arc<AppState>>,
    Path(env): Path<String>,
) -> Result<Json<ApplyResult>, ApiError> {
    let project = environments::load_project(&app.file)?;
    let result = environments::apply(app.store.as_ref(), &project, Some(&env)).await?;
    *app.project.write().expect("project lock") = Some(project);
    Ok(Json(result))
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
            .audit(query.limit.unwrap_or(100).min(10_000))
            .await?,
    ))
}

/// Stops the control plane (workloads keep running; `slipway down` also stops them).
#[utoipa::path(
    post, path = "/v1/shutdown", tag = "control",
    responses((status = 202, description = "Stopping")),
    security(("bearer" = [])),
)]
pub(crate) async fn shutdown(State(app): State<Arc<AppState>>) -> StatusCode {
    tracing::info!("shutdown requested over the API");
    app.shutdown.cancel();
    StatusCode::ACCEPTED
}
