//! The HTTP API: the router, the shared state handlers see, and the OpenAPI document.
//!
//! Layers, outermost first: request id, audit (every non-read call, after it ran), then, for
//! everything but `/healthz`, bearer-token authentication. Handlers live in [`handlers`] and
//! [`events`]; errors become responses only in [`error`].

mod alerts;
mod deploys;
mod error;
mod events;
mod handlers;
mod middleware;
mod prom;
mod runs;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::middleware::from_fn_with_state;
use sha2::{Digest, Sha256};
use slipway_api::ControlInfo;
use slipway_spec::Project;
use slipway_store::Store;
use tokio_util::sync::CancellationToken;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::workloads::Workloads;

/// What every handler can reach.
pub(crate) struct AppState {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) file: PathBuf,
    token_digest: [u8; 32],
    pub(crate) shutdown: CancellationToken,
    pub(crate) control: ControlInfo,
    /// The project as last loaded successfully (start-up or the latest apply).
    pub(crate) project: RwLock<Option<Project>>,
    /// The environments' instances.
    pub(crate) workloads: Arc<Workloads>,
    /// Set when the shutdown should stop the workloads too (`slipway down`).
    pub(crate) stop_workloads: AtomicBool,
    /// The deploy engine.
    pub(crate) engine: slipway_deploy::Engine,
    /// Pipeline runs.
    pub(crate) pipelines: slipway_pipeline::Pipelines,
    /// Environments restored under the engine since start-up.
    pub(crate) restored: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Scraping, the metrics store and the query back-end.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// Alert rules, their state and the notification outbox.
    pub(crate) alerts: Arc<crate::alerts::Alerts>,
}

/// What the control plane drives: workloads, deploys, pipelines.
pub(crate) struct Drivers {
    pub(crate) workloads: Arc<Workloads>,
    pub(crate) engine: slipway_deploy::Engine,
    pub(crate) pipelines: slipway_pipeline::Pipelines,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    pub(crate) alerts: Arc<crate::alerts::Alerts>,
}

impl AppState {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        file: PathBuf,
        token: &str,
        shutdown: CancellationToken,
        control: ControlInfo,
        drivers: Drivers,
    ) -> Self {
        let Drivers {
            workloads,
            engine,
            pipelines,
            metrics,
            alerts,
        } = drivers;
        AppState {
            store,
            file,
            token_digest: digest(token),
            shutdown,
            control,
            project: RwLock::new(None),
            workloads,
            stop_workloads: AtomicBool::new(false),
            engine,
            pipelines,
            restored: std::sync::Mutex::new(std::collections::HashSet::new()),
            metrics,
            alerts,
        }
    }

    /// Whether `token` is the admin token. Comparing digests keeps the comparison's timing
    /// independent of how much of the secret a guess shares.
    pub(crate) fn token_matches(&self, token: &str) -> bool {
        digest(token) == self.token_digest
    }
}

/// The environment a request names (`-`: the project's default). It must be one the project
/// file declares, or one that still runs something; anything else is a 404 that lists them.
pub(crate) async fn known_environment(
    app: &AppState,
    env: &str,
) -> Result<String, error::ApiError> {
    let project = match app.project.read().ok().and_then(|p| p.clone()) {
        Some(p) => p,
        None => crate::environments::load_project(&app.file)?,
    };
    if env == "-" {
        return Ok(project.default_environment());
    }
    let mut known = project.environments();
    if known.iter().any(|e| e == env) {
        return Ok(env.to_string());
    }
    for live in app.store.live_environments().await? {
        if live == env {
            return Ok(live);
        }
        if !known.contains(&live) {
            known.push(live);
        }
    }
    Err(error::ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        format!("unknown environment `{env}`"),
        Some(&format!("known: {}", known.join(", "))),
    ))
}

pub(crate) use middleware::settle as settle_audit;

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Slipway control plane",
        description = "The API `slipway` talks to. Every route but `/healthz` needs `Authorization: Bearer <token>`; the token is in the state directory's `admin.token`. Every call that is not a read is written to the audit log.",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "control", description = "The daemon itself"),
        (name = "environments", description = "Applied configuration and status"),
        (name = "events", description = "The event log"),
        (name = "audit", description = "The audit log"),
        (name = "services", description = "Service logs and runs"),
        (name = "deploys", description = "Releases, deployments, rollbacks and their controls"),
        (name = "pipelines", description = "Pipeline runs, approvals, freezes and DORA figures"),
        (name = "alerts", description = "Alerts, their history, acknowledgements and silences"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

fn api_router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(handlers::status))
        .routes(routes!(handlers::apply))
        .routes(routes!(events::list_events))
        .routes(routes!(events::stream_events))
        .routes(routes!(handlers::annotate))
        .routes(routes!(handlers::list_audit))
        .routes(routes!(handlers::shutdown))
        .routes(routes!(handlers::service_logs))
        .routes(routes!(handlers::run_service))
        .routes(routes!(deploys::deploy))
        .routes(routes!(deploys::list))
        .routes(routes!(deploys::get))
        .routes(routes!(deploys::rollback))
        .routes(routes!(deploys::promote))
        .routes(routes!(deploys::pause))
        .routes(routes!(deploys::resume))
        .routes(routes!(deploys::abort))
        .routes(routes!(deploys::releases))
        .routes(routes!(deploys::pin))
        .routes(routes!(runs::start))
        .routes(routes!(runs::list))
        .routes(routes!(runs::get))
        .routes(routes!(runs::logs))
        .routes(routes!(runs::approve))
        .routes(routes!(runs::cancel))
        .routes(routes!(runs::rerun))
        .routes(routes!(runs::freeze))
        .routes(routes!(runs::unfreeze))
        .routes(routes!(runs::dora))
        .routes(routes!(alerts::list))
        .routes(routes!(alerts::history))
        .routes(routes!(alerts::ack))
        .routes(routes!(alerts::test_channel))
        .routes(routes!(alerts::add_silence, alerts::list_silences))
        .routes(routes!(alerts::expire_silence))
}

/// The OpenAPI document of the API (also served at `/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut api) = OpenApiRouter::<Arc<AppState>>::with_openapi(ApiDoc::openapi())
        .routes(routes!(handlers::healthz))
        .merge(api_router())
        .split_for_parts();
    api.info.version = crate::VERSION.to_string();
    api
}

/// Prometheus' query API and the control plane's `/metrics` (outside the OpenAPI document:
/// their contract is Prometheus').
fn prom_router() -> Router<Arc<AppState>> {
    use axum::routing::get;
    Router::new()
        .route("/api/v1/query", get(prom::query).post(prom::query))
        .route(
            "/api/v1/query_range",
            get(prom::query_range).post(prom::query_range),
        )
        .route("/api/v1/series", get(prom::series).post(prom::series))
        .route("/api/v1/labels", get(prom::labels).post(prom::labels))
        .route("/api/v1/label/{name}/values", get(prom::label_values))
        .route("/api/v1/targets", get(prom::targets))
        .route("/api/v1/status/buildinfo", get(prom::buildinfo))
        .route("/metrics", get(prom::self_metrics))
}

/// The whole API.
pub(crate) fn router(app: Arc<AppState>) -> Router {
    let (protected, _) = api_router().split_for_parts();
    let protected = protected
        .route(
            "/openapi.json",
            axum::routing::get(handlers::openapi_document),
        )
        .merge(prom_router())
        .fallback(handlers::not_found)
        .layer(from_fn_with_state(app.clone(), middleware::authenticate));
    let (public, _) = OpenApiRouter::new()
        .routes(routes!(handlers::healthz))
        .split_for_parts();
    public
        .merge(protected)
        .layer(from_fn_with_state(app.clone(), middleware::audit))
        .layer(axum::middleware::from_fn(middleware::request_id))
        .with_state(app)
}
