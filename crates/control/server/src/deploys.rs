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

/// Whether `up` deploys an applied generation: when the environment has no release yet, or
/// the generation is not the current release's and no deploy of it was tried (a rolled-back
/// generation is not deployed again by every `up`; `slipway deploy` does that).
pub(crate) fn up_deploys(current: Option<i64>, attempted: Option<i64>, generation: i64) -> bool {
    match current {
        None => true,
        Some(c) => attempted.is_none_or(|a| generation > a) && c != generation,
    }
}

/// What `slipway up` would do with the project file now, for `slipway plan`: the differences
/// with what runs (the current release, with the environment's `--set` overrides), and whether
/// it deploys them. Reads the store only.
pub async fn up_plan(
    store: &dyn slipway_store::Store,
    project: &Project,
    environment: &str,
) -> Result<UpPlan, String> {
    let resolved = project.resolve(environment).map_err(|e| e.to_string())?;
    let snapshot = serde_json::to_value(&resolved).map_err(|e| e.to_string())?;
    let applied = store
        .applied(environment)
        .await
        .map_err(|e| e.to_string())?;
    let state = store
        .environment_state(environment)
        .await
        .map_err(|e| e.to_string())?;
    let current = match state.current_release {
        Some(n) => store
            .release(environment, n)
            .await
            .map_err(|e| e.to_string())?,
        None => None,
    };
    let release: Option<slipway_deploy::ReleaseSnapshot> = current
        .as_ref()
        .and_then(|r| serde_json::from_value(r.snapshot.clone()).ok());
    // The generation `up` would record the file as.
    let generation = match &applied {
        None => 1,
        Some(a) if slipway_spec::plan::diff(Some(&a.snapshot), &snapshot).has_changes() => {
            a.generation + 1
        }
        Some(a) => a.generation,
    };
    let attempted: Option<i64> = store
        .meta(&attempted_key(environment))
        .await
        .map_err(|e| e.to_string())?
        .and_then(|v| v.parse().ok());
    let Some(release) = release else {
        return Ok(UpPlan {
            plan: slipway_spec::plan::diff(None, &snapshot),
            against: None,
            deploys: true,
            why: "the environment has no release yet: `slipway up` deploys the first one".into(),
        });
    };
    let data = slipway_deploy::record::EnvironmentData::from_value(&state.data);
    let wanted = slipway_deploy::ReleaseSnapshot::new(
        &resolved,
        data.overrides.clone(),
        Default::default(),
        generation,
    );
    let wanted = serde_json::to_value(&wanted.config).map_err(|e| e.to_string())?;
    let running = serde_json::to_value(&release.config).map_err(|e| e.to_string())?;
    let plan = slipway_spec::plan::diff(Some(&running), &wanted);
    let number = current.as_ref().map_or(0, |r| r.number);
    let deploys = plan.has_changes() && up_deploys(Some(release.generation), attempted, generation);
    let why = if !plan.has_changes() {
        format!("r{number} runs this already: `slipway up` deploys nothing")
    } else if deploys {
        format!("`slipway up` deploys these changes as a new release, replacing r{number}")
    } else {
        "`slipway up` does not deploy these: a deploy of this file was tried already and did not stay (see `slipway deployments`); `slipway deploy` tries again".to_string()
    };
    Ok(UpPlan {
        plan,
        against: Some(format!("r{number}")),
        deploys,
        why,
    })
}

/// See [`up_plan`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct UpPlan {
    /// The differences, service by service.
    #[serde(flatten)]
    pub plan: slipway_spec::plan::Plan,
    /// The release compared with (`None`: nothing runs yet).
    pub against: Option<String>,
    /// Whether `slipway up` starts a deployment.
    pub deploys: bool,
    /// Why, for people.
    pub why: String,
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
    if !up_deploys(current, attempted, applied.generation) {
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
        approved_by: None,
        commit: None,
        fix: false,
    };
    start(app, project, applied, request).await.map(Some)
}
