//! `slipway slo`: each SLO's indicator over its window, the error budget left and how fast it
//! burns, per environment, read from the error ratios the control plane records; `slo export`
//! writes the same rules for a Prometheus of one's own.

use std::time::Duration;

use serde::Serialize;
use slipway_slo::{Slo, compact, ratio_series};

use crate::Context;
use crate::args::SloCommand;
use crate::client::Client;
use crate::commands::project::load;
use crate::error::CliError;
use crate::output;

/// One SLO in one environment.
#[derive(Debug, Serialize)]
struct SloStatus {
    slo: String,
    environment: String,
    objective: String,
    window: String,
    /// The share of good events over the window.
    sli: Option<f64>,
    /// The share of the error budget left (negative: overspent).
    budget_remaining: Option<f64>,
    /// Burn rates over the windows the alerts watch (1 = exactly sustainable).
    burn_rates: std::collections::BTreeMap<String, f64>,
}

fn bar(left: f64) -> String {
    let cells = 20;
    let full = (left.clamp(0.0, 1.0) * cells as f64).round() as usize;
    format!("{}{}", "█".repeat(full), "░".repeat(cells - full))
}

pub(crate) async fn slo(ctx: &Context, cmd: Option<SloCommand>) -> Result<u8, CliError> {
    match cmd {
        // Reads another tool's file, not the project: works without a slipway.toml.
        Some(SloCommand::Import { file }) => import(ctx, &file),
        Some(SloCommand::Export { format }) => {
            if format != "prometheus" {
                return Err(CliError::new(format!("no export format `{format}`"))
                    .hint("use `--format prometheus` (a rule file for `rule_files`)"));
            }
            print!("{}", slipway_slo::prometheus_rules(&project_slos(ctx)?));
            Ok(0)
        }
        None => status(ctx, &project_slos(ctx)?).await,
    }
}

/// The project's SLOs (what cannot be read is a warning).
fn project_slos(ctx: &Context) -> Result<Vec<Slo>, CliError> {
    let (slos, problems) = Slo::all(&load(ctx)?.config);
    for p in &problems {
        eprintln!("warning: {p}");
    }
    Ok(slos)
}

fn import(ctx: &Context, file: &std::path::Path) -> Result<u8, CliError> {
    let yaml = std::fs::read_to_string(file)
        .map_err(|e| CliError::new(format!("cannot read {}: {e}", file.display())))?;
    let slos = slipway_slo::import::import(&yaml).map_err(|e| {
        CliError::new(format!("{}: {e}", file.display())).hint(
            "give a Sloth spec (`version: prometheus/v1`) or OpenSLO v1 `SLO` documents with a ratioMetric",
        )
    })?;
    if ctx.json {
        output::json(&slos);
    } else {
        print!("{}", slipway_slo::import::to_toml(&slos));
    }
    Ok(0)
}

async fn status(ctx: &Context, slos: &[Slo]) -> Result<u8, CliError> {
    if slos.is_empty() {
        if ctx.json {
            output::json(&Vec::<SloStatus>::new());
        } else {
            println!(
                "no SLOs: add one, e.g.\n\n  [slos.api-availability]\n  service = \"web\"\n  objective = \"99.9%\""
            );
        }
        return Ok(0);
    }
    let client = Client::connect(&ctx.state).await?;
    let mut rows: Vec<SloStatus> = Vec::new();
    for slo in slos {
        let ratio = |w: Duration| format!("{}{{slo=\"{}\"}}", ratio_series(w), slo.name);
        let by_env = |answer: serde_json::Value| -> Vec<(String, f64)> {
            answer["data"]["result"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| {
                    let env = r["metric"]["environment"]
                        .as_str()
                        .unwrap_or("-")
                        .to_string();
                    let v: f64 = r["value"][1].as_str()?.parse().ok()?;
                    v.is_finite().then_some((env, v))
                })
                .collect()
        };
        let period = by_env(
            client
                .prometheus("/api/v1/query", &[("query", ratio(slo.window))])
                .await?,
        );
        let mut burns: Vec<(String, Vec<(String, f64)>)> = Vec::new();
        let mut watched: Vec<Duration> = slo.burns.iter().flat_map(|b| [b.long, b.short]).collect();
        watched.sort();
        watched.dedup();
        for w in watched {
            burns.push((
                compact(w),
                by_env(
                    client
                        .prometheus("/api/v1/query", &[("query", ratio(w))])
                        .await?,
                ),
            ));
        }
        let mut envs: Vec<String> = period.iter().map(|(e, _)| e.clone()).collect();
        for (_, b) in &burns {
            envs.extend(b.iter().map(|(e, _)| e.clone()));
        }
        envs.sort();
        envs.dedup();
        if envs.is_empty() {
            envs.push("-".into());
        }
        for env in envs {
            let error = period.iter().find(|(e, _)| *e == env).map(|(_, v)| *v);
            rows.push(SloStatus {
                slo: slo.name.clone(),
                environment: env.clone(),
                objective: slo.objective_text.clone(),
                window: compact(slo.window),
                sli: error.map(|e| 1.0 - e),
                budget_remaining: error.map(|e| 1.0 - e / slo.budget()),
                burn_rates: burns
                    .iter()
                    .filter_map(|(w, b)| {
                        b.iter()
                            .find(|(e, _)| *e == env)
                            .map(|(_, v)| (w.clone(), v / slo.budget()))
                    })
                    .collect(),
            });
        }
    }
    if ctx.json {
        output::json(&rows);
        return Ok(0);
    }
    let mut t = output::table([
        "SLO",
        "ENV",
        "OBJECTIVE",
        "SLI",
        "BUDGET LEFT",
        "BURN 1h",
        "BURN 5m",
    ]);
    for r in &rows {
        let burn = |w: &str| {
            r.burn_rates
                .get(w)
                .map_or_else(|| "-".to_string(), |b| format!("{b:.1}×"))
        };
        t.add_row([
            r.slo.clone(),
            r.environment.clone(),
            format!("{} / {}", r.objective, r.window),
            r.sli
                .map_or("no data".into(), |s| format!("{:.3}%", s * 100.0)),
            r.budget_remaining
                .map_or("-".into(), |b| format!("{} {:.0}%", bar(b), b * 100.0)),
            burn("1h"),
            burn("5m"),
        ]);
    }
    println!("{t}");
    Ok(0)
}
