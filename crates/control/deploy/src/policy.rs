//! Whether a change may go into an environment: the one place that decides, for every path
//! into it — `slipway deploy` and the API, `slipway up`, pipeline deploy steps, rollbacks.
//!
//! A deploy passes the environment's gates: no freeze, every environment it `requires` has run
//! the same code (a green pipeline run of the commit, or a successful deploy of the same
//! version), and a person's approval where `approval = "manual"` (a pipeline run's `slipway
//! approve`), and no SLO's spent error budget freezing it, unless the change is a fix. An
//! admin may go past them with `force`; the gates it went past are recorded with
//! the deployment and in the audit log. A rollback goes back to a release that passed the gates
//! when it was deployed, so none of them holds it back (a freeze stops changes, not repairs).
//!
//! **Invariant:** nothing creates a deployment without [`admit`] saying yes.

use slipway_spec::model::Approval;
use slipway_spec::resolve::Gate;
use slipway_store::{RunQuery, Store, StoreError};

use crate::record::EnvironmentData;

/// What is about to go into an environment.
#[derive(Clone, Copy, Debug)]
pub enum Change<'a> {
    /// A new release of this code version (and commit, when a pipeline run deploys one).
    Deploy {
        /// The release's version label (a short commit, a tag, `--version`).
        version: &'a str,
        /// The full commit, when known.
        commit: Option<&'a str>,
    },
    /// Back to an earlier release.
    Rollback,
}

/// A change asking to go in.
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    /// The environment.
    pub environment: &'a str,
    /// Its gates.
    pub gate: &'a Gate,
    /// What goes in.
    pub change: Change<'a>,
    /// Who approved it, when a person did (a pipeline run's approval).
    pub approved_by: Option<&'a str>,
    /// An admin's override of the gates.
    pub force: bool,
    /// A fix (`deploy --fix`, a pipeline on a `hotfix/*` branch): an SLO's budget freeze
    /// lets it through.
    pub fix: bool,
}

/// A change let in: the gates it passed, and those `force` went past.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Admission {
    /// Gates that held, for people (`frozen: no`, `staging ran 1a2b3c`).
    pub passed: Vec<String>,
    /// Gates that would have refused it (`approval`, `requires staging`, `freeze`).
    pub forced: Vec<String>,
}

/// Why a change may not go in.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The gate: `freeze`, `budget`, `requires`, `approval`.
    pub gate: &'static str,
    /// What holds it back and what to do, for people.
    pub message: String,
}

/// Why [`admit`] could not decide.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A gate refused.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The store failed.
    #[error("the state store failed")]
    Store(#[from] StoreError),
}

/// Decides whether a change may go into an environment; see the module docs.
pub async fn admit(store: &dyn Store, ask: Ask<'_>) -> Result<Admission, PolicyError> {
    let mut admission = Admission::default();
    let Change::Deploy { version, commit } = ask.change else {
        admission
            .passed
            .push("a rollback goes back to a release that passed the gates".into());
        return Ok(admission);
    };
    let env = ask.environment;
    let mut refusals: Vec<Refusal> = Vec::new();
    let state = store.environment_state(env).await?;
    match EnvironmentData::from_value(&state.data).freeze {
        Some(f) => refusals.push(Refusal {
            gate: "freeze",
            message: format!(
                "deploys to `{env}` are frozen by {}: {} (`slipway unfreeze {env}` lifts it; an admin's `--force` deploys anyway)",
                f.by, f.reason
            ),
        }),
        None => admission.passed.push("not frozen".into()),
    }
    match EnvironmentData::from_value(&state.data).budget_freeze {
        Some(b) if ask.fix => admission.passed.push(format!(
            "a fix, let past the budget freeze of SLO {}",
            b.slo
        )),
        Some(b) => refusals.push(Refusal {
            gate: "budget",
            message: format!(
                "deploys to `{env}` are frozen: SLO `{}` has spent its error budget ({:.0}% left); only fixes go in until it is back above {:.0}% (`slipway deploy --fix`, or a pipeline on a `hotfix/*` branch; an admin's `--force` deploys anyway)",
                b.slo,
                b.budget_remaining * 100.0,
                b.lift_above * 100.0
            ),
        }),
        None => admission.passed.push("no SLO's budget is spent".into()),
    }
    for required in &ask.gate.requires {
        match green_in(store, required, version, commit).await? {
            Some(evidence) => admission.passed.push(evidence),
            None => refusals.push(Refusal {
                gate: "requires",
                message: format!(
                    "`{env}` requires `{required}` first, and `{required}` never ran version {version} successfully: deploy it there first (`slipway --env {required} deploy --version {version}`, or the pipeline), or `--force` as an admin"
                ),
            }),
        }
    }
    if ask.gate.approval == Approval::Manual {
        match ask.approved_by {
            Some(by) => admission.passed.push(format!("approved by {by}")),
            None => refusals.push(Refusal {
                gate: "approval",
                message: format!(
                    "`{env}` needs a person's approval (`approval = \"manual\"`): run the pipeline (`slipway --env {env} pipeline run`) and `slipway approve RUN`, or deploy with `--force` as an admin (audited)"
                ),
            }),
        }
    }
    if ask.force {
        admission.forced = refusals
            .into_iter()
            .map(|r| match r.gate {
                "requires" => format!("requires: {}", r.message),
                other => other.to_string(),
            })
            .collect();
        return Ok(admission);
    }
    match refusals.into_iter().next() {
        Some(r) => Err(r.into()),
        None => Ok(admission),
    }
}

/// Evidence that `environment` ran this code: a green pipeline run of the commit, or a
/// successful deploy of a release with this version.
async fn green_in(
    store: &dyn Store,
    environment: &str,
    version: &str,
    commit: Option<&str>,
) -> Result<Option<String>, StoreError> {
    if let Some(commit) = commit {
        let runs = store
            .runs(&RunQuery {
                environment: Some(environment.to_string()),
                commit: Some(commit.to_string()),
                statuses: vec!["succeeded".into()],
                limit: 1,
            })
            .await?;
        if let Some(run) = runs.first() {
            return Ok(Some(format!(
                "{environment} ran {version} green (run {})",
                run.id
            )));
        }
    }
    let releases = store.releases(environment, 10_000).await?;
    let deployments = store.deployments(Some(environment), 10_000).await?;
    let found = deployments.iter().find(|d| {
        d.kind == crate::record::KIND_DEPLOY
            && d.status == crate::record::status::SUCCEEDED
            && releases
                .iter()
                .any(|r| r.number == d.release && r.version == version)
    });
    Ok(found.map(|d| format!("{environment} runs or ran {version} (deployment {})", d.id)))
}
