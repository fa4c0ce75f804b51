//! Pipelines from the command line: `pipeline run` (live, stage by stage, with the failing
//! step's last lines), `pipeline status`, `pipeline logs [-f]`, `pipeline cancel`, `pipeline
//! rerun`, `approve`, `freeze`, `unfreeze`, `dora`.

use std::io::IsTerminal as _;
use std::time::Duration;

use serde_json::json;
use slipway_api::{RunLogs, RunView};

use crate::Context;
use crate::args::PipelineCommand;
use crate::client::Client;
use crate::error::CliError;
use crate::output;

fn env_segment(ctx: &Context) -> String {
    ctx.env.clone().unwrap_or_else(|| "-".to_string())
}

pub(crate) async fn pipeline(ctx: &Context, cmd: PipelineCommand) -> Result<u8, CliError> {
    let client = Client::connect(&ctx.state).await?;
    match cmd {
        PipelineCommand::Run { git_ref, no_wait } => {
            let started: RunView = client
                .post(
                    &format!("/v1/environments/{}/runs", env_segment(ctx)),
                    &json!({ "ref": git_ref }),
                )
                .await?;
            finish(ctx, &client, started, no_wait).await
        }
        PipelineCommand::Rerun { run, no_wait } => {
            let started: RunView = client
                .post(&format!("/v1/runs/{run}/rerun"), &json!({}))
                .await?;
            finish(ctx, &client, started, no_wait).await
        }
        PipelineCommand::Status { run: Some(id) } => {
            let run: RunView = client.get(&format!("/v1/runs/{id}")).await?;
            if ctx.json {
                output::json(&run);
            } else {
                print_run(&run);
            }
            Ok(0)
        }
        PipelineCommand::Status { run: None } => {
            let path = match &ctx.env {
                Some(e) => format!("/v1/runs?env={e}"),
                None => "/v1/runs".to_string(),
            };
            let runs: Vec<RunView> = client.get(&path).await?;
            if ctx.json {
                output::json(&runs);
                return Ok(0);
            }
            if runs.is_empty() {
                println!("no runs yet; `slipway pipeline run` starts one");
                return Ok(0);
            }
            let mut table = output::table([
                "RUN",
                "ENV",
                "REF",
                "COMMIT",
                "TRIGGER",
                "STATUS",
                "STARTED",
                "TOOK",
                "FAILED STEP",
            ]);
            for r in &runs {
                table.add_row([
                    r.run.to_string(),
                    r.environment.clone(),
                    r.git_ref.clone(),
                    r.commit.chars().take(12).collect(),
                    r.trigger.clone(),
                    r.status.clone(),
                    r.started_at.map_or("-".into(), output::time),
                    r.duration_ms
                        .map_or("-".into(), |d| format!("{:.1}s", d as f64 / 1000.0)),
                    r.failed_step.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            println!("{table}");
            for r in runs.iter().filter(|r| r.status == "waiting") {
                println!(
                    "\nrun {} waits for approval: `slipway approve {}` lets it go on",
                    r.run, r.run
                );
            }
            Ok(0)
        }
        PipelineCommand::Logs { run, follow } => logs(&client, run, follow, ctx.json).await,
        PipelineCommand::Cancel { run } => {
            let r: RunView = client
                .post(&format!("/v1/runs/{run}/cancel"), &json!({}))
                .await?;
            if ctx.json {
                output::json(&r);
            } else {
                println!("run {} {}", r.run, r.status);
            }
            Ok(0)
        }
    }
}

async fn finish(
    ctx: &Context,
    client: &Client,
    started: RunView,
    no_wait: bool,
) -> Result<u8, CliError> {
    if no_wait {
        if ctx.json {
            output::json(&started);
        } else {
            println!(
                "run {} of {} at {} queued; `slipway pipeline logs {} -f` follows it",
                started.run,
                started.environment,
                &started.commit[..started.commit.len().min(12)],
                started.run
            );
        }
        return Ok(0);
    }
    let done = follow(client, started.run, ctx.json).await?;
    if ctx.json {
        output::json(&done);
    } else if done.outcome.as_deref() == Some("succeeded") {
        println!(
            "run {} succeeded: {} at {} in {}",
            done.run,
            done.environment,
            &done.commit[..done.commit.len().min(12)],
            done.duration_ms
                .map_or("-".into(), |d| format!("{:.1}s", d as f64 / 1000.0))
        );
    }
    match done.outcome.as_deref() {
        Some("succeeded") => Ok(0),
        other => Err(CliError::new(format!(
            "run {} {}{}: {}",
            done.run,
            other.unwrap_or("did not end"),
            done.failed_step
                .as_ref()
                .map(|s| format!(" at {s}"))
                .unwrap_or_default(),
            done.reason.as_deref().unwrap_or("no reason recorded")
        ))
        .hint(format!(
            "`slipway pipeline logs {}` has every line",
            done.run
        ))),
    }
}

fn mark(status: &str) -> &'static str {
    match status {
        "succeeded" => "✓",
        "failed" | "interrupted" => "✗",
        "refused" => "⊘",
        "cancelled" => "-",
        "skipped" => "·",
        "waiting" => "…",
        "running" => "▸",
        _ => " ",
    }
}

fn secs(ms: Option<u64>) -> String {
    ms.map_or(String::new(), |d| format!(" {:.1}s", d as f64 / 1000.0))
}

/// Shows a run's steps as they change until it ends; returns its last view. Ctrl-C stops
/// watching, not the run: it says so and exits 130.
async fn follow(client: &Client, id: i64, quiet: bool) -> Result<RunView, CliError> {
    tokio::select! {
        done = watch(client, id, quiet) => done,
        _ = tokio::signal::ctrl_c() => {
            let mut e = CliError::new(format!(
                "stopped watching; run {id} goes on in the control plane"
            ))
            .hint(format!(
                "`slipway pipeline logs {id} -f` follows it, `slipway pipeline cancel {id}` stops it"
            ));
            e.code = 130;
            Err(e)
        }
    }
}

async fn watch(client: &Client, id: i64, quiet: bool) -> Result<RunView, CliError> {
    let tty = std::io::stderr().is_terminal() && !quiet;
    let spinner = tty.then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.enable_steady_tick(Duration::from_millis(120));
        s
    });
    let mut printed: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut last_status = String::new();
    loop {
        let run: RunView = client.get(&format!("/v1/runs/{id}")).await?;
        let mut lines = Vec::new();
        // The end is summed up by the caller, after the last steps' lines.
        if run.status != last_status && run.outcome.is_none() {
            lines.push(format!(
                "run {} {} ({} at {})",
                run.run,
                run.status,
                run.environment,
                &run.commit[..run.commit.len().min(12)]
            ));
            if run.status == "queued"
                && let Some(ahead) = ahead_of(client, &run).await
            {
                lines.push(format!("  {ahead}"));
            }
            last_status = run.status.clone();
        }
        let mut current = None;
        for stage in &run.stages {
            for job in &stage.jobs {
                for step in &job.steps {
                    let key = format!("{}/{}/{}", stage.name, job.name, step.name);
                    if step.status == "running" || step.status == "waiting" {
                        current = Some(format!("{key}{}", secs(step.duration_ms)));
                    }
                    if printed.get(&key) == Some(&step.status) || step.status == "pending" {
                        continue;
                    }
                    let detail = step
                        .detail
                        .as_ref()
                        .filter(|_| step.status != "running")
                        .map(|d| format!(" — {d}"))
                        .unwrap_or_default();
                    let timing = if step.status == "running" || step.status == "waiting" {
                        String::new()
                    } else {
                        secs(step.duration_ms)
                    };
                    if step.status != "skipped" || printed.contains_key(&key) {
                        lines.push(format!("  {} {key}{timing}{detail}", mark(&step.status)));
                    }
                    if matches!(step.status.as_str(), "failed" | "refused") {
                        for t in &step.tail {
                            lines.push(format!("      | {t}"));
                        }
                    }
                    printed.insert(key, step.status.clone());
                }
            }
        }
        if !quiet {
            for l in lines {
                match &spinner {
                    Some(s) => s.println(l),
                    None => eprintln!("{l}"),
                }
            }
        }
        if let Some(s) = &spinner {
            s.set_message(current.unwrap_or_default());
        }
        if run.outcome.is_some() {
            if let Some(s) = spinner {
                s.finish_and_clear();
            }
            return Ok(run);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What a queued run waits for: the run of its environment that is going.
async fn ahead_of(client: &Client, run: &RunView) -> Option<String> {
    let runs: Vec<RunView> = client
        .get(&format!("/v1/runs?env={}", run.environment))
        .await
        .ok()?;
    let going = runs
        .iter()
        .find(|r| r.run != run.run && matches!(r.status.as_str(), "running" | "waiting"))?;
    Some(if going.status == "waiting" {
        format!(
            "it waits for run {}, which waits for approval: `slipway approve {}` lets it go on, `slipway pipeline cancel {}` stops it",
            going.run, going.run, going.run
        )
    } else {
        format!(
            "it waits for run {} ({}) to end: one run per environment at a time",
            going.run, going.status
        )
    })
}

fn print_run(run: &RunView) {
    println!(
        "run {} · {} · {} at {}{} · {} ({})",
        run.run,
        run.environment,
        run.git_ref,
        &run.commit[..run.commit.len().min(12)],
        run.subject
            .as_ref()
            .map(|s| format!(" \"{s}\""))
            .unwrap_or_default(),
        run.status,
        run.trigger
    );
    for stage in &run.stages {
        println!("{} {}", mark(&stage.status), stage.name);
        for job in &stage.jobs {
            println!(
                "  {} {}{}",
                mark(&job.status),
                job.name,
                secs(job.duration_ms)
            );
            for step in &job.steps {
                println!(
                    "    {} {}{}{}",
                    mark(&step.status),
                    step.name,
                    secs(step.duration_ms),
                    step.detail
                        .as_ref()
                        .map(|d| format!(" — {d}"))
                        .unwrap_or_default()
                );
                for t in &step.tail {
                    println!("        | {t}");
                }
            }
        }
    }
    if let Some(r) = &run.reason {
        println!("reason: {r}");
    }
}

async fn logs(client: &Client, run: i64, follow: bool, json: bool) -> Result<u8, CliError> {
    let mut after = 0;
    loop {
        let chunk: RunLogs = client
            .get(&format!("/v1/runs/{run}/logs?after={after}"))
            .await?;
        for l in &chunk.lines {
            if json {
                println!("{}", json!({ "line": l }));
            } else {
                println!("{l}");
            }
        }
        after = chunk.next;
        if !follow || chunk.done {
            return Ok(0);
        }
        if chunk.lines.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

pub(crate) async fn approve(ctx: &Context, run: i64) -> Result<u8, CliError> {
    let client = Client::connect(&ctx.state).await?;
    let r: RunView = client
        .post(&format!("/v1/runs/{run}/approve"), &json!({}))
        .await?;
    if ctx.json {
        output::json(&r);
    } else {
        println!("run {} approved; it goes on ({})", r.run, r.status);
    }
    Ok(0)
}

pub(crate) async fn freeze(
    ctx: &Context,
    environment: Option<String>,
    reason: Option<String>,
) -> Result<u8, CliError> {
    let client = Client::connect(&ctx.state).await?;
    let env = environment
        .or_else(|| ctx.env.clone())
        .unwrap_or_else(|| "-".into());
    let answer: serde_json::Value = match &reason {
        Some(r) => {
            client
                .post(
                    &format!("/v1/environments/{env}/freeze"),
                    &json!({ "reason": r }),
                )
                .await?
        }
        None => {
            client
                .post(&format!("/v1/environments/{env}/unfreeze"), &json!({}))
                .await?
        }
    };
    if ctx.json {
        output::json(&answer);
    } else if reason.is_some() {
        println!(
            "deploys to {} are frozen; `slipway unfreeze {}` lifts it",
            answer["environment"].as_str().unwrap_or(&env),
            answer["environment"].as_str().unwrap_or(&env)
        );
    } else {
        println!(
            "deploys to {} may go ahead",
            answer["environment"].as_str().unwrap_or(&env)
        );
    }
    Ok(0)
}

pub(crate) async fn dora(ctx: &Context, days: f64) -> Result<u8, CliError> {
    let client = Client::connect(&ctx.state).await?;
    let path = match &ctx.env {
        Some(e) => format!("/v1/dora?env={e}&days={days}"),
        None => format!("/v1/dora?days={days}"),
    };
    let d: serde_json::Value = client.get(&path).await?;
    if ctx.json {
        output::json(&d);
        return Ok(0);
    }
    let dur = |v: &serde_json::Value| {
        v["median_s"].as_f64().map_or("-".to_string(), |s| {
            if s < 120.0 {
                format!("{s:.1}s")
            } else if s < 7200.0 {
                format!("{:.1}m", s / 60.0)
            } else {
                format!("{:.1}h", s / 3600.0)
            }
        })
    };
    println!(
        "DORA · {} · last {days} days",
        d["environment"].as_str().unwrap_or("all environments")
    );
    let mut t = output::table(["FIGURE", "VALUE", "FROM"]);
    t.add_row([
        "deployment frequency".to_string(),
        format!(
            "{:.2}/day",
            d["deployment_frequency_per_day"].as_f64().unwrap_or(0.0)
        ),
        format!("{} successful deploys", d["successful_deploys"]),
    ]);
    t.add_row([
        "lead time for changes (median)".to_string(),
        dur(&d["lead_time"]),
        format!(
            "{} deploys with a known commit time",
            d["lead_time"]["count"]
        ),
    ]);
    t.add_row([
        "change failure rate".to_string(),
        d["change_failure_rate"]
            .as_f64()
            .map_or("-".into(), |r| format!("{:.1}%", r * 100.0)),
        format!(
            "{} of {} changes rolled back",
            d["failed_changes"], d["changes"]
        ),
    ]);
    t.add_row([
        "time to restore (median)".to_string(),
        dur(&d["time_to_restore"]),
        format!("{} restores", d["time_to_restore"]["count"]),
    ]);
    println!("{t}");
    Ok(0)
}
