//! The built-in steps: `deploy` (the deploy engine, after the environment's own gates),
//! `smoke` (HTTP checks through the public route, rolling the deploy back when they fail),
//! `monitor` (the post-deploy watch), `secret-scan`, `approve`, `require` and `policy`.

use std::time::Duration;

use slipway_deploy::smoke::{self, SmokePlan};
use slipway_deploy::{DeployError, DeployRequest};
use slipway_spec::pipeline::{Action, MonitorWith, RequireWith, SmokeWith};
use slipway_spec::resolve::ProbeCheck;
use slipway_store::EventLevel;

use crate::exec::{Exec, StepEnd, lock};
use crate::runner::{green, short};
use crate::state::status;

/// Runs one built-in step.
pub(crate) async fn run(
    exec: &Exec,
    si: usize,
    ji: usize,
    k: usize,
    action: &Action,
    who: &str,
    timeout: Option<Duration>,
) -> StepEnd {
    match action {
        Action::Require(with) => {
            let end = require(exec, with).await;
            if end.status == status::SUCCEEDED {
                lock(&exec.gates).required = true;
            }
            end
        }
        Action::Policy(_) => {
            let end = policy(exec).await;
            if end.status == status::SUCCEEDED {
                lock(&exec.gates).policy = true;
            }
            end
        }
        Action::Approve(with) => {
            let limit = with.timeout.map(|t| t.std()).or(timeout);
            approve(exec, si, ji, k, limit).await
        }
        Action::SecretScan(with) => secret_scan(exec, with.allowlist.as_deref(), who).await,
        Action::Deploy(with) => deploy(exec, si, ji, k, with.strategy, who).await,
        Action::Smoke(with) => smoke_after(exec, with, who).await,
        Action::Monitor(with) => monitor(exec, with, who).await,
        Action::Run { .. } => StepEnd::failed("a `run` step is not a built-in"),
    }
}

/// The same commit must have a green run in each required environment.
async fn require(exec: &Exec, with: &RequireWith) -> StepEnd {
    let required: Vec<String> = match &with.environment {
        Some(e) => vec![e.clone()],
        None => match exec.config() {
            Ok(c) => c.gate.requires.clone(),
            Err(e) => return StepEnd::failed(e),
        },
    };
    if required.is_empty() {
        return StepEnd::ok("no environment must be green first");
    }
    let store = exec.pipelines.inner.store.as_ref();
    for env in &required {
        match green(store, env, &exec.record.commit).await {
            Ok(Some(run)) => {
                exec.log.line(
                    "require",
                    &format!(
                        "{} is green in {env} (run {})",
                        short(&exec.record.commit),
                        run.id
                    ),
                );
            }
            Ok(None) => {
                return StepEnd::refused(format!(
                    "commit {} has no green run in {env}; run the pipeline there first (`slipway --env {env} pipeline run --ref {}`)",
                    short(&exec.record.commit),
                    short(&exec.record.commit)
                ));
            }
            Err(e) => return StepEnd::failed(format!("the state store failed: {e}")),
        }
    }
    StepEnd::ok(format!("green in {}", required.join(", ")))
}

/// Deploys must not be frozen.
async fn policy(exec: &Exec) -> StepEnd {
    match exec
        .pipelines
        .inner
        .engine
        .frozen(&exec.record.environment)
        .await
    {
        Ok(Some(f)) => StepEnd::refused(format!(
            "deploys to {} are frozen by {}: {} (`slipway unfreeze {}` lifts it)",
            exec.record.environment, f.by, f.reason, exec.record.environment
        )),
        Ok(None) => StepEnd::ok("deploys are allowed"),
        Err(e) => StepEnd::failed(e.to_string()),
    }
}

/// Waits for `slipway approve RUN`.
async fn approve(exec: &Exec, si: usize, ji: usize, k: usize, limit: Option<Duration>) -> StepEnd {
    if lock(&exec.gates).approved {
        return StepEnd::ok("already approved in this run");
    }
    let id = exec.record.id;
    exec.step_mut(si, ji, k, |s| {
        s.status = status::WAITING.into();
        s.detail = Some(format!(
            "waits for approval: `slipway approve {id}` lets it go on, `slipway pipeline cancel {id}` stops it"
        ));
    });
    exec.set_status(status::WAITING);
    exec.save(false, None, None).await;
    exec.event(
        "pipeline.waiting",
        format!(
            "run {} waits for approval: `slipway approve {}`",
            exec.record.id, exec.record.id
        ),
        EventLevel::Info,
    )
    .await;
    let mut rx = lock(&exec.approvals).clone();
    let far = Duration::from_secs(100 * 365 * 24 * 3600);
    let by = loop {
        if let Some(by) = rx.borrow().clone() {
            break Some(by);
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { break None },
            _ = exec.cancel.cancelled() => break None,
            _ = tokio::time::sleep(limit.unwrap_or(far)) => {
                exec.set_status(status::RUNNING);
                return StepEnd::failed(format!(
                    "nobody approved within {}s",
                    limit.unwrap_or_default().as_secs()
                ));
            }
        }
    };
    exec.set_status(status::RUNNING);
    match by {
        Some(by) => {
            lock(&exec.gates).approved = true;
            lock(&exec.state).approved_by = Some(by.clone());
            exec.event(
                "pipeline.approved",
                format!("run {} approved by {by}", exec.record.id),
                EventLevel::Info,
            )
            .await;
            StepEnd::ok(format!("approved by {by}"))
        }
        None => StepEnd {
            status: status::CANCELLED,
            detail: "cancelled while waiting for approval".into(),
            exit_code: None,
            tail: Vec::new(),
        },
    }
}

async fn secret_scan(exec: &Exec, allowlist: Option<&str>, who: &str) -> StepEnd {
    let default = lock(&exec.pipeline)
        .as_ref()
        .map(|p| p.secret_allowlist.clone())
        .unwrap_or_else(|| slipway_spec::pipeline::DEFAULT_ALLOWLIST.to_string());
    let name = allowlist.unwrap_or(&default).to_string();
    let allow = match std::fs::read_to_string(exec.src.join(&name)) {
        Ok(text) => match crate::secret_scan::AllowList::parse(&text) {
            Ok(a) => a,
            Err(e) => return StepEnd::failed(format!("{name}: {e}")),
        },
        Err(_) => crate::secret_scan::AllowList::default(),
    };
    let files = match crate::git::tracked_files(&exec.src).await {
        Ok(f) => f,
        Err(e) => return StepEnd::failed(e.to_string()),
    };
    let report = match crate::secret_scan::scan_files(&exec.src, &files, &allow) {
        Ok(r) => r,
        Err(e) => return StepEnd::failed(format!("cannot read the checkout: {e}")),
    };
    exec.log.line(
        who,
        &format!(
            "scanned {} tracked file(s) ({} skipped), {} finding(s) allowed by {name}",
            report.files_scanned, report.files_skipped, report.allowed
        ),
    );
    if report.findings.is_empty() {
        return StepEnd::ok(format!("no secrets in {} file(s)", report.files_scanned));
    }
    let lines: Vec<String> = report
        .findings
        .iter()
        .map(|f| {
            format!(
                "{}:{}:{} {} ({})",
                f.file, f.line, f.column, f.rule, f.redacted
            )
        })
        .collect();
    for l in &lines {
        exec.log.line(who, l);
    }
    StepEnd {
        status: status::FAILED,
        detail: format!(
            "{} secret(s) found: {}; if one is a false positive, add `{}` to {name}",
            lines.len(),
            lines.first().cloned().unwrap_or_default(),
            report
                .findings
                .first()
                .map(|f| f.fingerprint.clone())
                .unwrap_or_default()
        ),
        exit_code: None,
        tail: lines,
    }
}

/// The first web service with a public port.
fn routed_service(
    config: &slipway_spec::ResolvedEnv,
    named: Option<&str>,
) -> Option<slipway_spec::ResolvedService> {
    config
        .services
        .values()
        .find(|s| {
            s.kind == slipway_spec::model::ServiceKind::Web
                && s.port.is_some()
                && named.is_none_or(|n| n == s.name)
        })
        .cloned()
}

fn readiness_path(s: &slipway_spec::ResolvedService) -> String {
    match s.readiness.as_ref().map(|p| &p.check) {
        Some(ProbeCheck::Http { path, .. }) => path.clone(),
        _ => "/".into(),
    }
}

/// The smoke checks the run's `smoke` step will make, for the deploy to make on the preview
/// route first.
fn smoke_plan(exec: &Exec, config: &slipway_spec::ResolvedEnv) -> Option<SmokePlan> {
    let pipeline = lock(&exec.pipeline).clone()?;
    let with: SmokeWith =
        pipeline
            .jobs
            .iter()
            .flat_map(|j| &j.steps)
            .find_map(|s| match &s.action {
                Action::Smoke(w) => Some(w.clone()),
                _ => None,
            })?;
    let service = routed_service(config, with.service.as_deref())?;
    Some(SmokePlan::new(
        &service.name,
        &with,
        &readiness_path(&service),
    ))
}

/// How long the run's `monitor` step watches, for the deploy to watch that long.
fn watch_window(exec: &Exec, config: &slipway_spec::ResolvedEnv) -> Option<Duration> {
    let pipeline = lock(&exec.pipeline).clone()?;
    let with: MonitorWith =
        pipeline
            .jobs
            .iter()
            .flat_map(|j| &j.steps)
            .find_map(|s| match &s.action {
                Action::Monitor(w) => Some(w.clone()),
                _ => None,
            })?;
    Some(with.window.map(|w| w.std()).unwrap_or_else(|| {
        let own = config
            .services
            .values()
            .map(|s| s.strategy.analysis.watch.std())
            .max()
            .unwrap_or_default();
        if own.is_zero() {
            Duration::from_secs(300)
        } else {
            own
        }
    }))
}

async fn deploy(
    exec: &Exec,
    si: usize,
    ji: usize,
    k: usize,
    strategy: Option<slipway_spec::model::StrategyKind>,
    who: &str,
) -> StepEnd {
    let config = match exec.config() {
        Ok(c) => c,
        Err(e) => return StepEnd::failed(e),
    };
    // The environment's own gates, whether or not the job spelled them out.
    if !lock(&exec.gates).required {
        let end = require(exec, &RequireWith::default()).await;
        if end.status != status::SUCCEEDED {
            return end;
        }
        lock(&exec.gates).required = true;
    }
    if !lock(&exec.gates).policy {
        let end = policy(exec).await;
        if end.status != status::SUCCEEDED {
            return end;
        }
        lock(&exec.gates).policy = true;
    }
    if config.gate.approval == slipway_spec::model::Approval::Manual && !lock(&exec.gates).approved
    {
        exec.log.line(
            who,
            &format!("{} needs approval before deploys", exec.record.environment),
        );
        let end = approve(exec, si, ji, k, None).await;
        if end.status != status::SUCCEEDED {
            return end;
        }
        exec.step_mut(si, ji, k, |s| s.status = status::RUNNING.into());
        exec.save(false, None, None).await;
    }
    let store = &exec.pipelines.inner.store;
    let generation = store
        .applied(&exec.record.environment)
        .await
        .ok()
        .flatten()
        .map_or(0, |a| a.generation);
    let subject = lock(&exec.state).subject.clone().unwrap_or_default();
    let commit_time = lock(&exec.state)
        .commit_time_ms
        .or(exec.record.commit_time.map(|t| t.as_millisecond()));
    let request = DeployRequest {
        environment: exec.record.environment.clone(),
        smoke: smoke_plan(exec, &config),
        watch: watch_window(exec, &config),
        config,
        generation,
        version: Some(short(&exec.record.commit).to_string()),
        strategy,
        set: Default::default(),
        unset: Vec::new(),
        message: Some(format!("run {}: {subject}", exec.record.id)),
        actor: format!("pipeline run {}", exec.record.id),
        secrets: Default::default(),
        force: false,
        // A run of a hotfix branch is a fix: an SLO's budget freeze lets it through.
        fix: is_hotfix(&exec.record.git_ref),
        approved_by: lock(&exec.state).approved_by.clone(),
        commit: Some(slipway_deploy::Commit {
            sha: exec.record.commit.clone(),
            git_ref: exec.record.git_ref.clone(),
            time_ms: commit_time.unwrap_or(0),
            run: Some(exec.record.id),
        }),
    };
    let engine = &exec.pipelines.inner.engine;
    // Another deployment of the environment goes first (one at a time); the run waits its turn.
    let waited_since = tokio::time::Instant::now();
    let mut told = false;
    let d = loop {
        match engine.deploy(request.clone()).await {
            Ok(d) => break d,
            Err(e @ DeployError::Busy { .. }) => {
                if waited_since.elapsed() > Duration::from_secs(600) {
                    return StepEnd::failed(format!("waited 10 minutes for the environment: {e}"));
                }
                if !told {
                    exec.log.line(who, &format!("waiting: {e}"));
                    told = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = exec.cancel.cancelled() => {
                        return StepEnd { status: status::CANCELLED, detail: "cancelled while waiting to deploy".into(), exit_code: None, tail: Vec::new() };
                    }
                }
            }
            Err(e) => return StepEnd::failed(format!("the deploy could not start: {e}")),
        }
    };
    lock(&exec.state).deployment = Some(d.id);
    exec.save(false, None, None).await;
    exec.log.line(
        who,
        &format!("deployment {} of r{} started", d.id, d.release),
    );
    let d = tokio::select! {
        d = engine.wait(d.id, true) => d,
        _ = exec.cancel.cancelled() => {
            let _ = engine
                .control(&exec.record.environment, slipway_deploy::Action::Abort { reason: format!("run {} was cancelled", exec.record.id) }, &format!("pipeline run {}", exec.record.id))
                .await;
            return StepEnd { status: status::CANCELLED, detail: "cancelled; the deploy rolls back".into(), exit_code: None, tail: Vec::new() };
        }
    };
    match d {
        Ok(d) if d.active || d.status == "succeeded" => StepEnd::ok(format!(
            "deployment {}: r{} has all the traffic",
            d.id, d.release
        )),
        Ok(d) => StepEnd::failed(format!(
            "deployment {} {}: {}",
            d.id,
            d.status,
            d.reason.unwrap_or_default()
        )),
        Err(e) => StepEnd::failed(e.to_string()),
    }
}

/// Smoke checks through the public route, after the switch; a failure rolls this run's
/// deploy back.
async fn smoke_after(exec: &Exec, with: &SmokeWith, who: &str) -> StepEnd {
    let config = match exec.config() {
        Ok(c) => c,
        Err(e) => return StepEnd::failed(e),
    };
    let Some(service) = routed_service(&config, with.service.as_deref()) else {
        return StepEnd::failed(format!(
            "no web service with a public port{} to smoke-test",
            with.service
                .as_ref()
                .map(|s| format!(" named `{s}`"))
                .unwrap_or_default()
        ));
    };
    let plan = SmokePlan::new(&service.name, with, &readiness_path(&service));
    let Some(address) = exec
        .pipelines
        .inner
        .platform
        .public_address(&exec.record.environment, &service.name)
        .await
    else {
        return StepEnd::failed(format!("{} gets no traffic from the proxy", service.name));
    };
    let results = smoke::run(&plan, &format!("http://{address}"), &[], &exec.cancel).await;
    let (ok, results) = match results {
        Ok(r) => (true, r),
        Err(r) => (false, r),
    };
    for r in &results {
        exec.log.line(
            who,
            &format!(
                "{} {} after {} attempt(s): {}",
                if r.ok { "ok" } else { "FAILED" },
                r.name,
                r.attempts,
                r.detail
            ),
        );
    }
    if ok {
        return StepEnd::ok(format!(
            "{} check(s) passed on {}",
            results.len(),
            service.name
        ));
    }
    let why = smoke::failure(&results);
    let deployment = lock(&exec.state).deployment;
    if deployment.is_some() {
        let rolled = exec
            .pipelines
            .inner
            .engine
            .rollback(
                &exec.record.environment,
                None,
                Some(format!(
                    "the smoke test of run {} failed after the switch: {why}",
                    exec.record.id
                )),
                &format!("pipeline run {}", exec.record.id),
            )
            .await;
        match rolled {
            Ok(d) => {
                let _ = exec.pipelines.inner.engine.wait(d.id, false).await;
                return StepEnd::failed(format!("{why}; rolled back"));
            }
            Err(e) => return StepEnd::failed(format!("{why}; the rollback could not start: {e}")),
        }
    }
    StepEnd::failed(why)
}

/// Waits for the post-deploy watch of this run's deployment.
async fn monitor(exec: &Exec, _with: &MonitorWith, who: &str) -> StepEnd {
    let Some(id) = lock(&exec.state).deployment else {
        return StepEnd::ok("nothing was deployed in this run");
    };
    exec.log.line(who, &format!("watching deployment {id}"));
    let engine = &exec.pipelines.inner.engine;
    let d = tokio::select! {
        d = engine.wait(id, false) => d,
        _ = exec.cancel.cancelled() => {
            return StepEnd { status: status::CANCELLED, detail: "cancelled".into(), exit_code: None, tail: Vec::new() };
        }
    };
    match d {
        Ok(d) if d.status == "succeeded" => {
            let state: slipway_deploy::DeploymentState =
                serde_json::from_value(d.state.clone()).unwrap_or_default();
            match state.watch_until_ms {
                Some(until) => StepEnd::ok(format!(
                    "deployment {id} held up through its watch (until {})",
                    jiff::Timestamp::from_millisecond(until)
                        .map(|t| t.strftime("%H:%M:%S").to_string())
                        .unwrap_or_default()
                )),
                None => StepEnd::ok(format!(
                    "deployment {id} succeeded; it had no post-deploy watch (no `window`, no `analysis.watch`)"
                )),
            }
        }
        Ok(d) => StepEnd::failed(format!(
            "deployment {id} {}: {}",
            d.status,
            d.reason.unwrap_or_default()
        )),
        Err(e) => StepEnd::failed(e.to_string()),
    }
}

/// Whether a ref is a hotfix branch (`hotfix/…`, `refs/heads/hotfix/…`).
fn is_hotfix(git_ref: &str) -> bool {
    git_ref
        .trim_start_matches("refs/heads/")
        .starts_with("hotfix/")
}

#[cfg(test)]
mod hotfix_tests {
    #[test]
    fn hotfix_branches_are_fixes_and_others_are_not() {
        assert!(super::is_hotfix("hotfix/login-500"));
        assert!(super::is_hotfix("refs/heads/hotfix/x"));
        assert!(!super::is_hotfix("main"));
        assert!(!super::is_hotfix("feature/hotfix-ui"));
    }
}
