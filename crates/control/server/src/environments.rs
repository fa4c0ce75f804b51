//! Applying the project file to an environment: resolve it, compare it with what was applied
//! before, and record it (with an event) when it differs.
//!
//! The file is read again on every apply, so `slipway up` after an edit picks the edit up; an
//! invalid file changes nothing and its diagnostics go back to the caller.

use std::path::Path;

use serde_json::json;
use slipway_api::ApplyResult;
use slipway_spec::{LoadError, Project, Report};
use slipway_store::{NewEvent, Store, StoreError};

/// Why an environment could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The project file has errors.
    #[error("the project file is invalid")]
    Invalid(Report),
    /// The project file could not be read.
    #[error("cannot load the project file")]
    Load(#[source] LoadError),
    /// No such environment.
    #[error("unknown environment `{name}`")]
    UnknownEnvironment {
        /// Asked for.
        name: String,
        /// Known ones.
        known: Vec<String>,
    },
    /// The store failed.
    #[error("cannot record the applied configuration")]
    Store(#[source] StoreError),
}

/// Loads the project file, turning an invalid file into [`ApplyError::Invalid`].
pub fn load_project(file: &Path) -> Result<Project, ApplyError> {
    slipway_spec::load(file).map_err(|e| match e {
        LoadError::Invalid { report } => ApplyError::Invalid(report),
        other => ApplyError::Load(other),
    })
}

/// Resolves `environment` (the project's default when `None`) and records it if it changed.
pub async fn apply(
    store: &dyn Store,
    project: &Project,
    environment: Option<&str>,
) -> Result<ApplyResult, ApplyError> {
    let name = environment.map_or_else(|| project.default_environment(), str::to_string);
    let resolved = project
        .resolve(&name)
        .map_err(|_| ApplyError::UnknownEnvironment {
            name: name.clone(),
            known: project.environments(),
        })?;
    let snapshot = serde_json::to_value(&resolved).expect("a resolved environment serializes");
    let previous = store.applied(&name).await.map_err(ApplyError::Store)?;
    let plan = slipway_spec::plan::diff(previous.as_ref().map(|p| &p.snapshot), &snapshot);
    let changed = previous.is_none() || plan.has_changes();
    let generation = if changed {
        let applied = store
            .record_applied(&name, &snapshot)
            .await
            .map_err(ApplyError::Store)?;
        let summary: Vec<String> = plan
            .services
            .iter()
            .filter(|s| s.action != slipway_spec::plan::Action::Unchanged)
            .map(|s| {
                format!(
                    "{} {}",
                    s.name,
                    serde_json::to_value(s.action)
                        .unwrap_or_default()
                        .as_str()
                        .unwrap_or("")
                )
            })
            .collect();
        store
            .append_event(
                NewEvent::info(
                    "config.applied",
                    format!(
                        "configuration generation {} applied to {name}",
                        applied.generation
                    ),
                )
                .environment(&name)
                .data(json!({ "generation": applied.generation, "services": summary })),
            )
            .await
            .map_err(ApplyError::Store)?;
        applied.generation
    } else {
        previous.map_or(0, |p| p.generation)
    };
    Ok(ApplyResult {
        environment: name,
        generation,
        changed,
        plan: serde_json::to_value(&plan).expect("a plan serializes"),
        deployment: None,
    })
}
