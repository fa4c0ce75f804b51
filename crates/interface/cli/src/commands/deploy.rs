//! Deploys and their controls: `deploy` (with live progress), `releases`, `deployments`,
//! `rollback`, `promote`, `pause`, `resume`, `abort`.
//!
//! Progress: on a terminal, a bar with the new release's share of traffic and a line per
//! service (step, instances ready, canary against baseline error rate and p95); elsewhere
//! (CI logs, pipes) a line each time something changes, on stderr. `--json` prints the
//! deployment once it ended.

use std::io::IsTerminal as _;
use std::time::Duration;

use serde_json::json;
use slipway_api::{DeploymentView, ReleaseView, ServiceProgressView};

use crate::Context;
use crate::args::{DeployArgs, ReleasesCommand};
use crate::client::Client;
use crate::error::CliError;
use crate::output;

/// The environment in a path: `-` lets the daemon use the project's default.
fn env_segment(ctx: &Context) -> String {
    ctx.env.clone().unwrap_or_else(|| "-".to_string())
}

pub(crate) async fn deploy(ctx: &Context, args: DeployArgs) -> Result<u8, CliError> {
    let mut set = serde_json::Map::new();
    for pair in &args.set {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(CliError::new(format!("`--set {pair}` is not KEY=VALUE"))
                .hint("e.g. `slipway deploy --set FEATURE_X=on`"));
        };
        set.insert(k.trim().to_string(), v.into());
    }
    let client = Client::connect(&ctx.state).await?;
    let environment = match &ctx.env {
        Some(e) => e.clone(),
        None => super::project::load(ctx)?.default_environment(),
    };
    let started: DeploymentView = client
        .post(
            &format!("/v1/environments/{environment}/deploy"),
            &json!({
                "version": args.version, "strategy": args.strategy, "set": set,
                "unset": args.unset, "message": args.message, "force": args.force, "fix": args.fix,
            }),
        )
        .await?;
    if args.no_wait {
        if ctx.json {
            output::json(&started);
        } else {
            println!(
                "deployment {} of {} ({}) started; follow it with `slipway events -f`",
                started.deployment, started.release, started.version
            );
        }
        return Ok(0);
    }
    let done = follow(&client, started.deployment, ctx.json).await?;
    report(ctx.json, &done)
}

/// Prints how a deployment ended; the exit status is 0 only when it succeeded.
pub(crate) fn report(json: bool, done: &DeploymentView) -> Result<u8, CliError> {
    if json {
        output::json(done);
    } else {
        let took = format!("{:.1}s", done.duration_ms as f64 / 1000.0);
        match done.outcome.as_deref() {
            Some("succeeded") => println!(
                "deployment {} succeeded: {} ({}) runs {} in {took}",
                done.deployment, done.release, done.version, done.environment
            ),
            Some(other) => eprintln!(
                "deployment {} {other} in {took}{}",
                done.deployment,
                done.from_release
                    .as_ref()
                    .filter(|_| other == "rolled_back")
                    .map(|f| format!("; {f} serves {} again", done.environment))
                    .unwrap_or_default()
            ),
            None => {}
        }
    }
    match done.outcome.as_deref() {
        Some("succeeded") => Ok(0),
        _ => Err(failure(done)),
    }
}

/// The error for a deployment that did not succeed: its reason, what the instances that
/// could not start printed last, and where to look next.
pub(crate) fn failure(done: &DeploymentView) -> CliError {
    let mut detail = String::new();
    for s in done.services.iter().filter(|s| !s.output.is_empty()) {
        detail.push_str(&format!("last output of {} ({}):\n", s.name, done.release));
        // A crash loop prints the same lines again and again: each run of them once.
        let mut lines: Vec<(&str, usize)> = Vec::new();
        for line in &s.output {
            match lines.last_mut() {
                Some((last, n)) if *last == line.as_str() => *n += 1,
                _ => lines.push((line, 1)),
            }
        }
        for (line, n) in lines {
            let times = if n > 1 {
                format!("   (×{n})")
            } else {
                String::new()
            };
            detail.push_str(&format!("  | {line}{times}\n"));
        }
    }
    let failed: Vec<&str> = done
        .services
        .iter()
        .filter(|s| !s.output.is_empty())
        .map(|s| s.name.as_str())
        .collect();
    let hint = match failed.first() {
        Some(name) => format!(
            "`slipway logs {name}` has the whole output; fix the command or its settings in slipway.toml and deploy again"
        ),
        None => "`slipway events` has every step; `slipway logs SERVICE` the new release's output"
            .to_string(),
    };
    let error = CliError::new(format!(
        "deployment {} {}: {}",
        done.deployment,
        done.outcome.as_deref().unwrap_or("did not end"),
        done.reason.as_deref().unwrap_or("no reason recorded")
    ))
    .hint(hint);
    if detail.is_empty() {
        error
    } else {
        error.detail(detail)
    }
}

/// Shows a deployment's progress until it ends; returns its final view. Ctrl-C stops
/// watching, not the deployment: it says so and exits 130.
pub(crate) async fn follow(
    client: &Client,
    id: i64,
    quiet: bool,
) -> Result<DeploymentView, CliError> {
    follow_to(client, id, quiet, false).await
}

/// [`follow`], returning early once the new release has all the traffic and is only watched
/// (`up` waits for the release to be up, not for a 15-minute watch).
pub(crate) async fn follow_until_up(
    client: &Client,
    id: i64,
    quiet: bool,
) -> Result<DeploymentView, CliError> {
    follow_to(client, id, quiet, true).await
}

async fn follow_to(
    client: &Client,
    id: i64,
    quiet: bool,
    until_watching: bool,
) -> Result<DeploymentView, CliError> {
    tokio::select! {
        done = watch(client, id, quiet, until_watching) => done,
        _ = tokio::signal::ctrl_c() => {
            let mut e = CliError::new(format!(
                "stopped watching; deployment {id} goes on in the control plane"
            ))
            .hint("`slipway deployments` shows how it goes, `slipway events -f` follows it, `slipway abort` rolls it back");
            e.code = 130;
            Err(e)
        }
    }
}

async fn watch(
    client: &Client,
    id: i64,
    quiet: bool,
    until_watching: bool,
) -> Result<DeploymentView, CliError> {
    let tty = std::io::stderr().is_terminal() && !quiet;
    let bar = if tty {
        let bar = indicatif::ProgressBar::new(100);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {prefix} [{bar:30.cyan/blue}] {pos:>3}% {elapsed}\n{msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    } else {
        None
    };
    let mut last_line = String::new();
    let mut last_figures = String::new();
    let mut figures_at = std::time::Instant::now();
    loop {
        let view: DeploymentView = client.get(&format!("/v1/deployments/{id}")).await?;
        let line = summary_line(&view);
        match &bar {
            Some(bar) => {
                bar.set_prefix(format!(
                    "{} {} → {}",
                    view.kind,
                    view.from_release.as_deref().unwrap_or("-"),
                    view.release
                ));
                bar.set_position(progress(&view));
                bar.set_message(detail_lines(&view));
                if line != last_line {
                    bar.println(format!("[{}] {line}", output::time(jiff::Timestamp::now())));
                }
            }
            // Without a bar (CI logs, pipes), the analysis figures go on the line: when the
            // step changes, and while it bakes every few seconds if they moved.
            None if !quiet => {
                let figures = analysis_figures(&view);
                let due = figures != last_figures && figures_at.elapsed() >= FIGURES_EVERY;
                if line != last_line || due {
                    eprintln!("[{}] {line}{figures}", output::time(jiff::Timestamp::now()));
                    last_figures = figures;
                    figures_at = std::time::Instant::now();
                }
            }
            None => {}
        }
        last_line = line;
        if view.outcome.is_some() || (until_watching && view.status == "watching") {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            return Ok(view);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// 0–100: the new release's share of traffic (routed services) or of instances.
fn progress(view: &DeploymentView) -> u64 {
    if view.services.is_empty() {
        return 0;
    }
    let sum: f64 = view
        .services
        .iter()
        .map(|s| match s.phase.as_str() {
            "done" => 100.0,
            "waiting" => 0.0,
            _ if s.weight > 0.0 => s.weight,
            _ if s.new_instances.0 > 0 => {
                f64::from(s.new_instances.1) * 100.0 / f64::from(s.new_instances.0.max(1)) * 0.9
            }
            _ => 0.0,
        })
        .sum();
    (sum / view.services.len() as f64).round().clamp(0.0, 100.0) as u64
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn ms(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.1}ms"))
}

fn service_line(s: &ServiceProgressView) -> String {
    let step = s
        .step
        .map(|(i, n)| format!(" step {i}/{n}"))
        .unwrap_or_default();
    let analysis = s
        .analysis
        .as_ref()
        .map(|a| {
            let base = a.baseline.as_ref().map_or(String::new(), |b| {
                format!(" vs stable {} {}", pct(b.error_rate), ms(b.p95_ms))
            });
            format!(
                " · {}: new {} err, p95 {}{base} ({} req)",
                a.verdict,
                pct(a.canary.error_rate),
                ms(a.canary.p95_ms),
                a.canary.requests
            )
        })
        .unwrap_or_default();
    format!(
        "  {} ({}{step}) {}% · new {}/{} ready, old {}/{} · {}{analysis}",
        s.name,
        s.strategy,
        s.weight.round(),
        s.new_instances.1,
        s.new_instances.0,
        s.old_instances.1,
        s.old_instances.0,
        s.detail
    )
}

fn detail_lines(view: &DeploymentView) -> String {
    let mut lines: Vec<String> = view.services.iter().map(service_line).collect();
    if let Some(p) = &view.paused {
        lines.push(format!("  paused: {p}"));
    }
    lines.join("\n")
}

/// How often a piped progress line repeats with new analysis figures.
const FIGURES_EVERY: Duration = Duration::from_secs(5);

/// The canary-against-stable figures of every service being analysed, for a progress line.
fn analysis_figures(view: &DeploymentView) -> String {
    let parts: Vec<String> = view
        .services
        .iter()
        .filter(|s| s.phase != "done" && s.phase != "reverted")
        .filter_map(|s| {
            let a = s.analysis.as_ref()?;
            let base = a.baseline.as_ref().map_or(String::new(), |b| {
                format!(" vs stable {} err, p95 {}", pct(b.error_rate), ms(b.p95_ms))
            });
            Some(format!(
                "{} {}: canary {} err, p95 {}{base} ({} req)",
                s.name,
                a.verdict,
                pct(a.canary.error_rate),
                ms(a.canary.p95_ms),
                a.canary.requests
            ))
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" · {}", parts.join("; "))
    }
}

/// One line that changes when something worth a line happened.
fn summary_line(view: &DeploymentView) -> String {
    let services: Vec<String> = view
        .services
        .iter()
        .map(|s| format!("{} {}", s.name, s.detail))
        .collect();
    let mut line = format!(
        "deployment {} {}: {}",
        view.deployment,
        view.status,
        services.join("; ")
    );
    if let Some(p) = &view.paused {
        line.push_str(&format!(" (paused: {p})"));
    }
    if let Some(r) = view
        .reason
        .as_ref()
        .filter(|_| view.status == "rolling-back")
    {
        line.push_str(&format!(" ({r})"));
    }
    line
}

pub(crate) async fn releases(
    ctx: &Context,
    action: Option<ReleasesCommand>,
) -> Result<u8, CliError> {
    let client = Client::connect(&ctx.state).await?;
    let env = env_segment(ctx);
    if let Some(action) = action {
        let (release, pinned) = match action {
            ReleasesCommand::Pin { release } => (release, true),
            ReleasesCommand::Unpin { release } => (release, false),
        };
        let answer: serde_json::Value = client
            .post(
                &format!("/v1/environments/{env}/releases/{release}/pin"),
                &json!({ "pinned": pinned }),
            )
            .await?;
        if ctx.json {
            output::json(&answer);
        } else {
            println!(
                "{release} {}",
                if pinned {
                    "pinned: retention keeps it"
                } else {
                    "unpinned"
                }
            );
        }
        return Ok(0);
    }
    let list: Vec<ReleaseView> = client
        .get(&format!("/v1/environments/{env}/releases"))
        .await?;
    if ctx.json {
        output::json(&list);
        return Ok(0);
    }
    if list.is_empty() {
        println!("no releases yet; `slipway deploy` makes one");
        return Ok(0);
    }
    let mut table = output::table([
        "RELEASE",
        "VERSION",
        "CREATED",
        "ROLE",
        "LAST DEPLOY",
        "DESCRIPTION",
    ]);
    for r in &list {
        let mut role = r.role.clone().unwrap_or_default();
        if r.standby && role != "standby" {
            role = format!("{role}, warm standby");
        }
        if r.pinned {
            role = if role.is_empty() {
                "pinned".into()
            } else {
                format!("{role}, pinned")
            };
        }
        if r.pruned {
            role = if role.is_empty() {
                "pruned".into()
            } else {
                format!("{role}, pruned")
            };
        }
        table.add_row([
            r.id.clone(),
            r.version.clone(),
            output::time(r.created_at),
            if role.is_empty() { "-".into() } else { role },
            r.last_outcome.clone().unwrap_or_else(|| "-".into()),
            r.description.clone(),
        ]);
    }
    println!("{table}");
    println!(
        "\nroll back with `slipway rollback` (to the previous one) or `slipway rollback --to RELEASE`"
    );
    Ok(0)
}

pub(crate) async fn deployments(ctx: &Context, limit: u32) -> Result<u8, CliError> {
    let client = Client::connect(&ctx.state).await?;
    let path = match &ctx.env {
        Some(env) => format!("/v1/deployments?env={env}&limit={limit}"),
        None => format!("/v1/deployments?limit={limit}"),
    };
    let list: Vec<DeploymentView> = client.get(&path).await?;
    if ctx.json {
        output::json(&list);
        return Ok(0);
    }
    let mut table = output::table([
        "ID", "ENV", "KIND", "FROM", "TO", "STATUS", "STARTED", "TOOK", "REASON",
    ]);
    for d in &list {
        table.add_row([
            d.deployment.to_string(),
            d.environment.clone(),
            d.kind.clone(),
            d.from_release.clone().unwrap_or_else(|| "-".into()),
            d.release.clone(),
            d.status.clone(),
            output::time(d.started_at),
            format!("{:.1}s", d.duration_ms as f64 / 1000.0),
            d.reason.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    println!("{table}");
    Ok(0)
}

pub(crate) async fn rollback(
    ctx: &Context,
    to: Option<String>,
    reason: Option<String>,
    no_wait: bool,
) -> Result<u8, CliError> {
    let client = Client::connect(&ctx.state).await?;
    let env = env_segment(ctx);
    let started: DeploymentView = client
        .post(
            &format!("/v1/environments/{env}/rollback"),
            &json!({ "to": to, "reason": reason }),
        )
        .await?;
    let done = if no_wait {
        started
    } else {
        follow(&client, started.deployment, ctx.json).await?
    };
    // During a deploy, a rollback is that deploy rolling back: it went where it came from.
    let (to_release, outcome) = if done.kind == "rollback" {
        (Some(done.release.clone()), done.outcome.clone())
    } else {
        (
            done.from_release.clone(),
            done.outcome.as_deref().map(|o| {
                if o == "rolled_back" {
                    "succeeded".into()
                } else {
                    o.to_string()
                }
            }),
        )
    };
    // The time to all traffic on the release it goes back to: a rollback's switch, or for an
    // aborted deploy, the abort to traffic back (not the deploy's whole life).
    let duration_ms = if done.kind == "rollback" {
        done.switched_ms.unwrap_or(done.duration_ms)
    } else {
        done.reverted_in_ms.unwrap_or(done.duration_ms)
    };
    if ctx.json {
        output::json(&json!({
            "outcome": outcome, "to_release": to_release, "from_release": if done.kind == "rollback" { done.from_release.clone() } else { Some(done.release.clone()) },
            "duration_ms": duration_ms, "deployment": done.deployment, "reason": done.reason,
        }));
    } else if outcome.as_deref() == Some("succeeded") {
        println!(
            "rolled back to {} in {duration_ms}ms (all traffic on it)",
            to_release.as_deref().unwrap_or("?")
        );
    }
    match outcome.as_deref() {
        Some("succeeded") | None if no_wait => Ok(0),
        Some("succeeded") => Ok(0),
        _ => Err(CliError::new(format!(
            "the rollback did not succeed: {}",
            done.reason.as_deref().unwrap_or("no reason recorded")
        ))
        .hint("`slipway events` has every step")),
    }
}

pub(crate) async fn control(
    ctx: &Context,
    action: &str,
    body: serde_json::Value,
) -> Result<u8, CliError> {
    let client = Client::connect(&ctx.state).await?;
    let env = env_segment(ctx);
    let view: DeploymentView = client
        .post(&format!("/v1/environments/{env}/{action}"), &body)
        .await?;
    if ctx.json {
        output::json(&view);
    } else {
        let done = match action {
            "promote" => "promoted",
            "pause" => "paused",
            "resume" => "resumed",
            _ => "aborted: it rolls back now",
        };
        println!("deployment {} of {} {done}", view.deployment, view.release);
    }
    Ok(0)
}
