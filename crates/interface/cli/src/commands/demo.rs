//! `slipway demo`: a scripted tour on the sample app that a newcomer can run with nothing but
//! the binary. It writes a small project in a temporary folder, starts a control plane for
//! it, puts steady load on the web service, deploys v2 as a canary (which goes all the way),
//! then a bad v3 (its failure knob set to 30 %), which the analysis rolls back by itself, and
//! sums up what the load saw.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use slipway_api::state_dir::StateDir;
use slipway_api::{DeploymentView, StatusReport};

use crate::Context;
use crate::client::Client;
use crate::error::CliError;
use crate::output;

/// The demo project: a web service of three sample instances deployed as a canary with short
/// steps, and a worker.
const PROJECT: &str = r#"# Written by `slipway demo`.
[project]
name = "demo"

[env]
SAMPLE_VERSION = "v1"
SAMPLE_ECHO = "SAMPLE_VERSION"

[services.web]
start = "slipway-sample web"
port = 0
replicas = 3
health = { path = "/health", interval = "500ms" }
strategy = { type = "canary", steps = ["5%", "25%", "50%"], bake = "2s" }

[services.worker]
kind = "worker"
start = "slipway-sample worker"
health = { type = "uptime", start_period = "1s" }
"#;

/// What the demo's load saw.
#[derive(Default)]
struct Seen {
    by_version: BTreeMap<String, u64>,
    failed: u64,
}

fn step(ctx: &Context, text: &str) {
    if !ctx.json {
        println!("\n==> {text}");
    }
}

pub(crate) async fn demo(ctx: &Context, keep: bool) -> Result<u8, CliError> {
    let dir = tempfile::Builder::new()
        .prefix("slipway-demo-")
        .tempdir()
        .map_err(|e| CliError::from_error("cannot make a folder for the demo", &e))?;
    let file = dir.path().join("slipway.toml");
    std::fs::write(&file, PROJECT)
        .map_err(|e| CliError::from_error("cannot write the demo project", &e))?;
    let demo = Context {
        file: file.clone(),
        state: StateDir::beside(&file),
        env: None,
        json: true,
    };
    step(
        ctx,
        &format!(
            "a demo project in {} (its slipway.toml: web × 3 as a canary, a worker)",
            dir.path().display()
        ),
    );
    super::daemon::start_detached(&demo, "127.0.0.1:0".parse().ok(), "local").await?;
    let client = Client::connect(&demo.state).await?;
    // Ctrl-C ends the tour but not the clean-up: nothing is left running in a temporary folder.
    let result = tokio::select! {
        r = tour(ctx, &client, keep.then(|| dir.path()), &file) => r,
        _ = tokio::signal::ctrl_c() => Err(CliError::new("the demo was interrupted")),
    };
    if keep && result.is_ok() {
        let kept = dir.keep();
        if !ctx.json {
            println!(
                "\nthe demo keeps running: `cd {}` and try `slipway status`, `slipway releases`, `slipway rollback`; `slipway down` stops it",
                kept.display()
            );
        }
    } else {
        super::daemon::stop(&demo.state).await?;
        if !ctx.json {
            println!(
                "\nthe demo's control plane and instances are stopped; `slipway demo --keep` leaves them running"
            );
        }
    }
    result
}

async fn tour(
    ctx: &Context,
    client: &Client,
    kept: Option<&std::path::Path>,
    file: &std::path::Path,
) -> Result<u8, CliError> {
    let status: StatusReport = client.get("/v1/status").await?;
    let port = status
        .services
        .iter()
        .find(|s| s.name == "web")
        .and_then(|s| s.port)
        .ok_or_else(|| CliError::new("the demo's web service has no port"))?;
    let url = format!("http://127.0.0.1:{port}/");
    step(
        ctx,
        &format!("v1 runs; 20 clients put steady load on {url}"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let load = start_load(&url, 20, stop.clone(), seen.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;

    step(
        ctx,
        "deploying v2 as a canary: 5 % → 25 % → 50 % → 100 %, analysed against v1 at every step",
    );
    let v2 = deploy(client, "v2", None, ctx.json).await?;
    step(
        ctx,
        "deploying v3, which fails 30 % of its requests: the analysis should roll it back by itself",
    );
    let started = Instant::now();
    let v3 = deploy(client, "v3", Some("0.3"), ctx.json).await?;
    let v3_took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    let seen = seen
        .lock()
        .map(|s| (s.by_version.clone(), s.failed))
        .unwrap_or_default();
    let total: u64 = seen.0.values().sum::<u64>() + seen.1;

    // The folder is deleted after the tour unless `--keep` keeps it.
    let summary = json!({
        "project": kept,
        "deleted_folder": if kept.is_none() { file.parent() } else { None },
        "v2": { "outcome": v2.outcome, "duration_ms": v2.duration_ms, "release": v2.release },
        "v3": { "outcome": v3.outcome, "duration_ms": v3.duration_ms, "reason": v3.reason, "release": v3.release },
        "requests": total,
        "answered_by": seen.0,
        "failed": seen.1,
        "failed_share": if total == 0 { 0.0 } else { seen.1 as f64 / total as f64 },
    });
    if ctx.json {
        output::json(&summary);
    } else {
        println!("\n==> summary");
        println!(
            "  v2: {} in {:.1}s",
            v2.outcome.as_deref().unwrap_or("?"),
            v2.duration_ms as f64 / 1000.0
        );
        println!(
            "  v3: {} in {:.1}s ({:.1}s for the command): {}",
            v3.outcome.as_deref().unwrap_or("?"),
            v3.duration_ms as f64 / 1000.0,
            v3_took.as_secs_f64(),
            v3.reason.as_deref().unwrap_or("-")
        );
        let versions: Vec<String> = seen.0.iter().map(|(v, n)| format!("{v}: {n}")).collect();
        println!(
            "  load: {total} requests ({}), {} failed ({:.3}%)",
            versions.join(", "),
            seen.1,
            if total == 0 {
                0.0
            } else {
                seen.1 as f64 * 100.0 / total as f64
            }
        );
        println!(
            "  every step is in the event log: slipway -f {} events",
            file.display()
        );
    }
    let ok =
        v2.outcome.as_deref() == Some("succeeded") && v3.outcome.as_deref() == Some("rolled_back");
    Ok(if ok { 0 } else { 1 })
}

async fn deploy(
    client: &Client,
    version: &str,
    fail: Option<&str>,
    quiet: bool,
) -> Result<DeploymentView, CliError> {
    let mut set = serde_json::Map::new();
    set.insert("SAMPLE_VERSION".into(), version.into());
    set.insert("SAMPLE_FAIL_RATE".into(), fail.unwrap_or("0").into());
    let started: DeploymentView = client
        .post(
            "/v1/environments/-/deploy",
            &json!({ "version": version, "set": set, "message": format!("demo {version}") }),
        )
        .await?;
    super::deploy::follow(client, started.deployment, quiet).await
}

fn start_load(
    url: &str,
    connections: usize,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) -> tokio::task::JoinHandle<()> {
    let url = url.to_string();
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        let workers: Vec<_> = (0..connections)
            .map(|_| {
                let (client, url, stop, seen) =
                    (client.clone(), url.clone(), stop.clone(), seen.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let outcome = match client.get(&url).send().await {
                            Ok(r) if r.status().is_success() => r
                                .headers()
                                .get("x-sample-version")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string),
                            _ => None,
                        };
                        if let Ok(mut s) = seen.lock() {
                            match outcome {
                                Some(v) => *s.by_version.entry(v).or_default() += 1,
                                None => s.failed += 1,
                            }
                        }
                        // A steady few hundred requests a second, not a benchmark.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.await;
        }
    })
}
