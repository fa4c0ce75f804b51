//! The control plane's side of deploys: bringing an environment back under the engine the
//! first time it is touched, and starting deploys — from the API, and from `slipway up` when
//! the project file changed since the environment's last deploy.

use slipway_api::ApplyResult;
use slipway_deploy::{DeployError, DeployRequest};
use slipway_spec::Project;
use slipway_store::DeploymentRecord;

use crate::http::AppState;

/// Metadata key of the file generation an environment last had a deploy started for.
fn attempted_key(environment: &str) -> String {
    format!("deploy.attempted_generation.{environment}")
}

/// Restores an environment (its current release, standby and interrupted deployments) once
/// per control plane.
pub(crate) async fn ensure_restored(app: &AppState, environment: &str) {
    let first = app
        .restored
        .lock()
        .map(|mut r| r.insert(environment.to_string()))
        .unwrap_or(false);
    if first && let Err(e) = app.engine.restore(environment).await {
        tracing::error!(%environment, error = %e, "cannot restore the environment");
    }
}

/// Starts a deploy, remembering which file generation it was for.
pub(crate) async fn start(
    app: &AppState,
    _project: &Project,
    applied: &ApplyResult,
    request: DeployRequest,
) -> Result<DeploymentRecord, DeployError> {
    ensure_restored(app, &applied.environment).await;
    let record = app.engine.deploy(request).await?;
    app.store
        .set_meta(
            &attempted_key(&applied.environment),
            &applied.generation.to_string(),
        )
        .await?;
    Ok(record)
}

/// After the file was applied: deploys it when it changed since the environment's last
/// deploy (or the environment has no release yet). Returns the deployment started, if any.
pub(crate) async fn deploy_if_changed(
    app: &AppState,
    project: &Project,
    applied: &ApplyResult,
    actor: &str,
) -> Result<Option<DeploymentRecord>, DeployError> {
    ensure_restored(app, &applied.environment).await;
    let current = app.engine.current_generation(&applied.environment).await?;
    let attempted: Option<i64> = app
        .store
        .meta(&attempted_key(&applied.environment))
        .await?
        .and_then(|v| v.parse().ok());
    let due = match current {
        None => true,
        Some(_) => {
            attempted.is_none_or(|a| applied.generation > a) && current != Some(applied.generation)
        }
    };
    if !due {
        return Ok(None);
    }
    let config = project
        .resolve(&applied.environment)
        .map_err(|e| DeployError::Invalid(e.to_string()))?;
    let request = DeployRequest {
        environment: applied.environment.clone(),
        config,
        generation: applied.generation,
        version: None,
        strategy: None,
        set: Default::default(),
        unset: Vec::new(),
        message: None,
        actor: actor.to_string(),
        secrets: app.workloads.secret_versions(),
        smoke: None,
        watch: None,
        force: false,
        commit: None,
    };
    start(app, project, applied, request).await.map(Some)
}
