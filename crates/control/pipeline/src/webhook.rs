//! Run reports: on each change of a run's status, a JSON POST to `[pipeline] webhook`, either
//! Slipway's own shape (run, environment, commit, stages with their status) or a GitHub
//! commit status (`state`, `description`, `context`). `{commit}`, `{environment}` and `{run}` in
//! the URL are replaced, so it can point at `…/statuses/{commit}`. A report that cannot be
//! delivered is an event, never a failed run.

use serde_json::json;
use slipway_spec::model::WebhookFormat;
use slipway_spec::pipeline::ResolvedPipeline;
use slipway_store::{EventLevel, NewEvent, RunRecord};

use crate::runner::Inner;
use crate::state::{RunState, status};

/// The body of a report.
pub fn payload(format: WebhookFormat, run: &RunRecord) -> serde_json::Value {
    let state = RunState::of(run);
    match format {
        WebhookFormat::Slipway => json!({
            "run": run.id,
            "environment": run.environment,
            "ref": run.git_ref,
            "commit": run.commit,
            "status": run.status,
            "reason": run.reason,
            "failed_step": run.failed_step,
            "deployment": state.deployment,
            "stages": state.stages.iter().map(|s| json!({
                "name": s.name, "status": s.status,
                "jobs": s.jobs.iter().map(|j| json!({ "name": j.name, "status": j.status })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }),
        WebhookFormat::GithubStatus => {
            let state = match run.status.as_str() {
                status::SUCCEEDED => "success",
                status::FAILED | status::REFUSED => "failure",
                status::CANCELLED => "error",
                _ => "pending",
            };
            let description = match (&run.failed_step, &run.reason) {
                (Some(step), Some(reason)) => format!("{step}: {reason}"),
                (None, Some(reason)) => reason.clone(),
                _ => format!("run {} {}", run.id, run.status),
            };
            json!({
                "state": state,
                "description": description.chars().take(140).collect::<String>(),
                "context": format!("slipway/{}", run.environment),
                "sha": run.commit,
            })
        }
    }
}

/// Posts a report of `run` if the pipeline has a webhook.
pub(crate) async fn post(inner: &Inner, pipeline: &ResolvedPipeline, run: &RunRecord) {
    let Some((url, format)) = &pipeline.webhook else {
        return;
    };
    let url = url
        .replace("{commit}", &run.commit)
        .replace("{environment}", &run.environment)
        .replace("{run}", &run.id.to_string());
    let body = payload(*format, run);
    let mut last = String::new();
    for attempt in 0..3u64 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
        }
        match inner.http.post(&url).json(&body).send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => last = format!("answered {}", r.status()),
            Err(e) => last = e.to_string(),
        }
    }
    let _ = inner
        .store
        .append_event(
            NewEvent::info(
                "pipeline.webhook_failed",
                format!(
                    "the report of run {} could not be delivered to {url}: {last}",
                    run.id
                ),
            )
            .level(EventLevel::Warning)
            .environment(&run.environment)
            .subject(format!("run-{}", run.id)),
        )
        .await;
}
