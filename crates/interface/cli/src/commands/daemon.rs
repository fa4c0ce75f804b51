//! Starting and stopping the control plane: `up` (foreground or `--detach`) and `down`.

use std::io::IsTerminal as _;
use std::os::unix::process::CommandExt as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use slipway_api::ApplyResult;
use slipway_api::state_dir::StateDir;
use slipway_server::{DaemonError, DaemonOptions};

use super::project::load;
use crate::Context;
use crate::args::UpArgs;
use crate::client::Client;
use crate::error::CliError;
use crate::output;

/// Longest a detached daemon may take to answer.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// Longest `down` waits for the daemon to exit.
// Instances get their grace periods (30s by default) before the control plane exits.
const STOP_DEADLINE: Duration = Duration::from_secs(120);

pub(crate) async fn up(ctx: &Context, args: UpArgs) -> Result<u8, CliError> {
    // Check the file here, where errors print with their source lines.
    let project = load(ctx)?;
    eprint!("{}", project.warnings.render());
    let environment = ctx
        .env
        .clone()
        .unwrap_or_else(|| project.default_environment());
    project.resolve(&environment).map_err(|e| {
        CliError::new(e.to_string()).hint("pass one of the environments in slipway.toml with --env")
    })?;

    if let Some(info) = Client::running(&ctx.state).await {
        let client = Client::connect(&ctx.state).await?;
        // A deployment going on (the start-up one, say) ends first: one at a time. Detached,
        // `up` does not wait: the apply says the environment is busy.
        if !args.detach {
            wait_idle(&client, &environment, ctx.json).await?;
        }
        let result: ApplyResult = client
            .post(&format!("/v1/environments/{environment}/apply"), &json!({}))
            .await?;
        let deployed = match result.deployment {
            Some(id) if args.detach => {
                let started: slipway_api::DeploymentView =
                    client.get(&format!("/v1/deployments/{id}")).await?;
                if !ctx.json {
                    println!(
                        "deployment {id} of {} started; `slipway deployments` shows how it goes, `slipway events -f` follows it",
                        started.release
                    );
                }
                Some(started)
            }
            Some(id) => Some(super::deploy::follow_until_up(&client, id, ctx.json).await?),
            None => None,
        };
        if ctx.json {
            output::json(
                &json!({ "status": "running", "pid": info.pid, "listen": info.listen, "apply": result, "deployment": deployed }),
            );
        } else {
            let what = if result.changed {
                "applied"
            } else {
                "already applied"
            };
            println!(
                "control plane already running (pid {}, {}); {} {} generation {}",
                info.pid, info.listen, environment, what, result.generation
            );
        }
        return match &deployed {
            // Started (detached), or up and only watched now.
            Some(d) if d.outcome.is_none() => Ok(0),
            Some(d) if d.outcome.as_deref() != Some("succeeded") => Err(super::deploy::failure(d)),
            _ => Ok(0),
        };
    }

    // A control plane or instances of this project that lost their files (a deleted state
    // directory) would be doubled by a new start, the old proxy still holding the ports.
    if let Some(lost) = lost(&ctx.state) {
        return Err(CliError::new(format!(
            "this project already runs without its state directory ({}): {lost}",
            ctx.state.root().display()
        ))
        .hint("`slipway down` stops them; then `slipway up` starts afresh"));
    }
    if args.detach {
        return detach(ctx, &args, &environment, true).await;
    }

    init_logging();
    let options = DaemonOptions {
        file: ctx.file.clone(),
        state_dir: ctx.state.clone(),
        listen: args.listen,
        environment: Some(environment),
    };
    slipway_server::run(options).await.map_err(daemon_error)?;
    Ok(0)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLIPWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

fn daemon_error(e: DaemonError) -> CliError {
    match e {
        DaemonError::AlreadyRunning {
            state_dir,
            info,
            pid,
        } => {
            let who = match (info, pid) {
                (Some(i), _) => format!(" (pid {}, {})", i.pid, i.listen),
                (None, Some(p)) => format!(" (pid {p}, without its daemon.json)"),
                (None, None) => String::new(),
            };
            CliError::new(format!(
                "a control plane is already running for {}{who}",
                state_dir.display()
            ))
            .hint("use it (`slipway status`), or stop it first with `slipway down`")
        }
        DaemonError::Invalid(report) => {
            CliError::new("the project file is invalid").detail(report.render())
        }
        DaemonError::Listen { addr, source } => CliError::from_error(
            &format!("cannot listen on {addr}"),
            &source,
        )
        .hint(
            "another program uses that port: set `[control] listen` or pass `--listen 127.0.0.1:0`",
        ),
        other => CliError::from_error("the control plane failed", &other),
    }
}

/// Starts a control plane for `ctx`'s project in the background and waits until it answers
/// and its first deployment ended (for `slipway demo`).
pub(crate) async fn start_detached(
    ctx: &Context,
    listen: Option<std::net::SocketAddr>,
    environment: &str,
) -> Result<u8, CliError> {
    detach(
        ctx,
        &UpArgs {
            detach: true,
            listen,
        },
        environment,
        false,
    )
    .await
}

async fn detach(
    ctx: &Context,
    args: &UpArgs,
    environment: &str,
    report: bool,
) -> Result<u8, CliError> {
    ctx.state
        .create()
        .map_err(|e| CliError::from_error("cannot create the state directory", &e))?;
    let log_path = ctx.state.log_file();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| CliError::from_error(&format!("cannot open {}", log_path.display()), &e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| CliError::from_error("cannot open the log", &e))?;
    let exe = std::env::current_exe()
        .map_err(|e| CliError::from_error("cannot find the slipway binary", &e))?;
    let log_start = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
    let mut command = std::process::Command::new(exe);
    command
        .arg("-f")
        .arg(&ctx.file)
        .arg("--state-dir")
        .arg(ctx.state.root())
        .arg("--env")
        .arg(environment)
        .arg("up");
    if let Some(listen) = args.listen {
        command.arg("--listen").arg(listen.to_string());
    }
    // Its own process group: a Ctrl-C in this terminal does not reach it.
    command
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0);
    let spawned = jiff::Timestamp::now();
    let mut child = command
        .spawn()
        .map_err(|e| CliError::from_error("cannot start the control plane", &e))?;
    let pid = child.id();
    let spinner = indicatif::ProgressBar::new_spinner().with_message("starting the control plane");
    spinner.enable_steady_tick(Duration::from_millis(100));
    let started = Instant::now();
    let info = loop {
        if let Ok(Some(status)) = child.try_wait() {
            spinner.finish_and_clear();
            let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: String = log_text
                .get(log_start as usize..)
                .unwrap_or_default()
                .to_string();
            return Err(
                CliError::new(format!("the control plane exited at start ({status})"))
                    .detail(tail)
                    .hint(format!("its log is {}", log_path.display())),
            );
        }
        if let Some(info) = Client::running(&ctx.state).await.filter(|i| i.pid == pid) {
            break info;
        }
        if started.elapsed() > START_DEADLINE {
            spinner.finish_and_clear();
            return Err(CliError::new(format!(
                "the control plane (pid {pid}) did not answer within {}s",
                START_DEADLINE.as_secs()
            ))
            .hint(format!("see {}", log_path.display())));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    spinner.finish_and_clear();
    // `up --detach` returns once the services are up (as `docker compose up --wait`).
    let client = Client::connect(&ctx.state).await?;
    wait_idle(&client, environment, ctx.json || !report).await?;
    // The deployment this control plane started (it may have ended before `wait_idle` looked)
    // could not start the release: say why, and that the control plane runs on.
    let newest: Vec<slipway_api::DeploymentView> = client
        .get(&format!("/v1/deployments?env={environment}&limit=1"))
        .await?;
    if let Some(d) = newest
        .iter()
        .find(|d| d.started_at >= spawned && d.outcome.as_deref().is_some_and(|o| o != "succeeded"))
    {
        let logs = d
            .services
            .iter()
            .find(|s| !s.output.is_empty())
            .map(|s| format!("`slipway logs {}` has the whole output; ", s.name))
            .unwrap_or_default();
        return Err(super::deploy::failure(d).hint(format!(
            "{logs}fix slipway.toml, then `slipway up` applies it again (the control plane, pid {}, keeps running; `slipway down` stops it)",
            info.pid
        )));
    }
    if !report {
        return Ok(0);
    }
    if ctx.json {
        output::json(
            &json!({ "status": "started", "pid": info.pid, "listen": info.listen, "environment": environment, "log": log_path }),
        );
    } else {
        println!(
            "control plane started (pid {}) on http://{} for {environment}; log: {}",
            info.pid,
            info.listen,
            log_path.display()
        );
    }
    Ok(0)
}

/// Waits until no deployment of `environment` is going, showing the one that is; returns how
/// the ones it waited for ended.
async fn wait_idle(
    client: &Client,
    environment: &str,
    quiet: bool,
) -> Result<Vec<slipway_api::DeploymentView>, CliError> {
    let going: Vec<slipway_api::DeploymentView> = client
        .get(&format!("/v1/deployments?env={environment}&limit=5"))
        .await?;
    let mut ended = Vec::new();
    for d in going.iter().filter(|d| d.outcome.is_none()) {
        // A deployment waiting for a person would keep `up` waiting forever.
        if let Some(why) = &d.paused {
            return Err(CliError::new(format!(
                "deployment {} ({} of {}) is paused: {why}",
                d.deployment, d.kind, d.release
            ))
            .hint("`slipway promote` (or `resume`) lets it go on, `slipway abort` rolls it back; then run `slipway up` again"));
        }
        if !quiet {
            eprintln!(
                "waiting for deployment {} ({} of {}) to end",
                d.deployment, d.kind, d.release
            );
        }
        ended.push(super::deploy::follow_until_up(client, d.deployment, quiet).await?);
    }
    Ok(ended)
}

/// Whether a process is alive (and not a zombie waiting to be reaped).
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z" | "X"))
        }
        Err(_) => false,
    }
}

/// What of this project runs although its state directory does not say so: a control plane
/// holding the directory's identity without its `daemon.json`, or shims whose instance
/// directories are gone. `None` when nothing is lost.
pub(crate) fn lost(state: &StateDir) -> Option<String> {
    let mut parts = Vec::new();
    let announced = state.daemon_info().ok().flatten().map(|i| i.pid);
    if let Some(pid) = state.owner().filter(|p| Some(*p) != announced) {
        parts.push(format!("its control plane runs (pid {pid})"));
    }
    let strays = slipway_runtime::local::strays::find(&state.root().join("instances"));
    if !strays.is_empty() {
        let pids: Vec<String> = strays.iter().map(|s| s.shim.to_string()).collect();
        parts.push(format!(
            "{} instance(s) run with no record (shims {})",
            strays.len(),
            pids.join(", ")
        ));
    }
    (!parts.is_empty()).then(|| parts.join(", and "))
}

/// Stops what [`lost`] finds: the control plane (SIGINT stops it and its instances) and the
/// stray instances. How many processes it stopped.
fn stop_lost(state: &StateDir) -> usize {
    let mut stopped = 0;
    let announced = state.daemon_info().ok().flatten().map(|i| i.pid);
    if let Some(pid) = state.owner().filter(|p| Some(*p) != announced) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
            nix::sys::signal::Signal::SIGINT,
        );
        let started = Instant::now();
        while alive(pid) && started.elapsed() < STOP_DEADLINE {
            std::thread::sleep(Duration::from_millis(50));
        }
        stopped += 1;
    }
    for stray in slipway_runtime::local::strays::find(&state.root().join("instances")) {
        stray.stop(Duration::from_secs(10));
        stopped += 1;
    }
    stopped
}

pub(crate) async fn down(ctx: &Context) -> Result<u8, CliError> {
    let lost = stop_lost(&ctx.state);
    if lost > 0 {
        report_down(
            ctx,
            &format!(
                "not running from its files; stopped {lost} process(es) of this project left without them"
            ),
            None,
        );
        return Ok(0);
    }
    match stop(&ctx.state).await? {
        Stopped::NotRunning => report_down(ctx, "not running", None),
        Stopped::Stale(pid) => report_down(
            ctx,
            "not running (it had stopped without cleaning up)",
            Some(pid),
        ),
        Stopped::Now(pid) => report_down(ctx, "stopped", Some(pid)),
    }
    Ok(0)
}

/// What [`stop`] found.
pub(crate) enum Stopped {
    NotRunning,
    /// Its file named a process that was gone.
    Stale(u32),
    /// It ran and is gone now.
    Now(u32),
}

/// Stops the control plane of `state` with its workloads, and waits until its process is gone
/// (it stops the instances first, so they are gone too).
pub(crate) async fn stop(state: &StateDir) -> Result<Stopped, CliError> {
    let info = state
        .daemon_info()
        .map_err(|e| CliError::from_error("cannot read the daemon file", &e))?;
    let Some(info) = info else {
        return Ok(Stopped::NotRunning);
    };
    match Client::connect(state).await {
        Ok(client) => client.post_empty("/v1/shutdown?workloads=stop").await?,
        Err(e) => {
            if alive(info.pid) {
                return Err(e);
            }
            state.remove_daemon_info();
            return Ok(Stopped::Stale(info.pid));
        }
    }
    let started = Instant::now();
    while alive(info.pid) {
        if started.elapsed() > STOP_DEADLINE {
            return Err(CliError::new(format!(
                "the control plane (pid {}) did not stop within {}s",
                info.pid,
                STOP_DEADLINE.as_secs()
            ))
            .hint(format!(
                "see {}; `kill {}` stops it",
                state.log_file().display(),
                info.pid
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Stopped::Now(info.pid))
}

fn report_down(ctx: &Context, status: &str, pid: Option<u32>) {
    if ctx.json {
        output::json(&json!({ "status": status, "pid": pid }));
    } else {
        match pid {
            Some(pid) => println!("control plane {status} (pid {pid})"),
            None => println!("control plane {status}"),
        }
    }
}

/// `slipway proxy`: the data plane, in the foreground.
pub(crate) async fn proxy(args: crate::args::ProxyArgs) -> Result<u8, CliError> {
    init_logging();
    slipway_proxy::run(slipway_proxy::ProxyOptions {
        dir: args.dir,
        admin: args.admin,
        access_sample: args.access_log_sample.clamp(0.0, 1.0),
    })
    .await
    .map_err(|e| CliError::from_error("the proxy stopped", &e))?;
    Ok(0)
}
