//! Trust in the delivery core, each a finding that once let a user believe something false
//! about production: a restart during a post-deploy watch brings production back at once (and
//! 20 kills across deploys with a watch never leave it down), every path into an environment
//! passes its gates, the audit log says who did what to which environment and how it ended, a
//! deleted state directory neither orphans nor doubles anything, `resume` does not pretend,
//! unknown environments are refused, a first release is watched too, and a rollback to a
//! release that cannot start says so at once.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Project, SMALL, pausing_canary, recorded_processes, start_ticks, wait_for};

/// Staging (the default) and production, whose web service canaries and then watches the new
/// release for `watch`.
fn two_environments(watch: &str, production_extra: &str) -> Project {
    Project::new(&format!(
        r#"
[project]
name = "integrity"
default_environment = "staging"

[env]
SAMPLE_VERSION = "v1"

[environments.staging]
[environments.production]
requires = ["staging"]
{production_extra}

[environments.production.services.web]
replicas = 2
strategy = {{ type = "canary", steps = ["50%"], bake = "300ms", analysis = {{ watch = "{watch}", min_requests = 5 }} }}

[services.web]
start = "slipway-sample web"
port = 0
health = {{ path = "/health", interval = "200ms" }}
strategy = "rolling"

[services.worker]
kind = "worker"
start = "slipway-sample worker"
health = {{ type = "uptime", start_period = "200ms" }}
"#
    ))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn latest(project: &Project, env: &str) -> Value {
    project.json(&["--env", env, "deployments", "--limit", "1"])[0].clone()
}

fn ended(project: &Project, env: &str, deadline: Duration) -> Value {
    wait_for("the deployment to end", deadline, || {
        let d = latest(project, env);
        d["outcome"].is_string().then_some(d)
    })
}

/// The production web service's public address, from `status`.
fn production_url(project: &Project) -> String {
    let status = project.json(&["--env", "production", "status"]);
    let port = status["services"][0]["port"].as_u64().expect("a port");
    format!("http://127.0.0.1:{port}/")
}

/// A 2xx answer from `url` (a fresh connection each time), with its JSON body.
fn answer(url: &str) -> Option<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let r = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json::<Value>().await.ok()
    })
}

/// Waits until staging's first release (which `up` deploys) ended.
fn staging_up(project: &Project) {
    wait_for("staging's first release", Duration::from_secs(60), || {
        latest(project, "staging")["outcome"]
            .is_string()
            .then_some(())
    });
}

/// Production's first release (watched too, for the window), and staging's, at version v1.
fn first_releases(project: &Project) {
    staging_up(project);
    let d = project.json(&[
        "--env",
        "production",
        "deploy",
        "--version",
        "local",
        "--no-wait",
    ]);
    assert!(d["deployment"].is_number(), "{d:#}");
    let done = ended(project, "production", Duration::from_secs(90));
    assert_eq!(done["outcome"], "succeeded", "{done:#}");
}

#[test]
fn a_restart_during_the_watch_brings_production_back_at_once_and_resumes_the_watch() {
    let project = two_environments("12s", "");
    let mut daemon = project.start();
    first_releases(&project);
    let url = production_url(&project);
    // A deploy that commits, then watches for 12 s.
    project.json(&[
        "--env",
        "production",
        "deploy",
        "--version",
        "local",
        "--set",
        "SAMPLE_VERSION=v2",
        "--no-wait",
    ]);
    let watching = wait_for("the watch", Duration::from_secs(30), || {
        let d = latest(&project, "production");
        (d["status"] == "watching").then_some(d)
    });
    // `down` (everything stops), then `up`: production serves again within seconds.
    project.ok(&["down"]);
    assert!(answer(&url).is_none(), "down stops production too");
    let _ = daemon.wait_exit(Duration::from_secs(30));
    let restarted = Instant::now();
    daemon = project.start();
    // (`port = 0`: the restarted proxy may pick another one; `status` says which.)
    let body = wait_for("production to serve again", Duration::from_secs(5), || {
        answer(&production_url(&project))
    });
    let url = production_url(&project);
    eprintln!(
        "production serves {:?} after the restart",
        restarted.elapsed()
    );
    assert_eq!(body["version"], "v2", "the committed release: {body}");
    // Every command agrees that the deployment goes on, in its watch.
    let d = latest(&project, "production");
    assert_eq!(d["deployment"], watching["deployment"]);
    assert_eq!(d["status"], "watching", "{d:#}");
    let out = project.run(&["--env", "production", "deploy", "--version", "local"]);
    assert!(stderr(&out).contains("still going"), "{}", stderr(&out));
    // The watch resumes with the time it had left: it ends near its recorded end, not at once
    // and not a whole watch later.
    let until: jiff::Timestamp = d["watch_until"]
        .as_str()
        .unwrap_or_else(|| panic!("no watch_until: {d:#}"))
        .parse()
        .unwrap();
    let done = ended(&project, "production", Duration::from_secs(40));
    assert_eq!(done["outcome"], "succeeded", "{done:#}");
    let finished: jiff::Timestamp = done["finished_at"].as_str().unwrap().parse().unwrap();
    let late = finished.duration_since(until).as_secs_f64();
    assert!(
        (-1.0..8.0).contains(&late),
        "ended {late:.1}s after its watch was due: {done:#}"
    );
    // kill -9 during the next watch: production never stops serving, and `abort` answers.
    project.json(&[
        "--env",
        "production",
        "deploy",
        "--version",
        "local",
        "--set",
        "SAMPLE_VERSION=v3",
        "--no-wait",
    ]);
    wait_for("the second watch", Duration::from_secs(30), || {
        (latest(&project, "production")["status"] == "watching").then_some(())
    });
    daemon.kill();
    assert!(
        answer(&url).is_some(),
        "the proxy and instances outlive the control plane"
    );
    let _daemon = project.start();
    let out = project.run(&["--env", "production", "abort", "--reason", "test over"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let done = ended(&project, "production", Duration::from_secs(30));
    assert_eq!(done["outcome"], "rolled_back", "{done:#}");
    let back = wait_for("v2 to answer again", Duration::from_secs(10), || {
        answer(&production_url(&project)).filter(|b| b["version"] == "v2")
    });
    assert_eq!(back["release"], done["from_release"], "{done:#}");
}

#[test]
fn killed_at_twenty_points_of_deploys_with_a_watch_production_always_serves_within_5s() {
    let project = two_environments("2s", "");
    let mut daemon = project.start();
    first_releases(&project);
    let mut seed: u64 = 0x0dd_ba11_5eed_2026;
    let mut outcomes = std::collections::BTreeMap::<String, u32>::new();
    for round in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Over the canary (~1 s) and the 2 s watch.
        let delay = Duration::from_millis(seed % 3500);
        let version = format!("v{}", round + 2);
        project.json(&[
            "--env",
            "production",
            "deploy",
            "--version",
            "local",
            "--set",
            &format!("SAMPLE_VERSION={version}"),
            "--no-wait",
        ]);
        std::thread::sleep(delay);
        // Every third round stops it all (`down`); the others kill the control plane alone.
        if round % 3 == 0 {
            project.ok(&["down"]);
            let _ = daemon.wait_exit(Duration::from_secs(30));
        } else {
            daemon.kill();
        }
        let restarted = Instant::now();
        daemon = project.start();
        let body = wait_for(
            "production to serve after the restart",
            Duration::from_secs(5),
            || answer(&production_url(&project)),
        );
        let url = production_url(&project);
        let done = ended(&project, "production", Duration::from_secs(60));
        let outcome = done["outcome"].as_str().unwrap().to_string();
        assert!(
            outcome == "succeeded" || outcome == "rolled_back",
            "round {round} (stopped after {delay:?}): {done:#}"
        );
        // What serves is the release production is committed to.
        let status = project.json(&["--env", "production", "status"]);
        let current = status["release"]["id"].as_str().unwrap().to_string();
        let now = wait_for(
            "the committed release to answer",
            Duration::from_secs(10),
            || answer(&url).filter(|b| b["release"] == current.as_str()),
        );
        eprintln!(
            "round {round}: stopped after {delay:?}, served again within {:?} ({}), {outcome}, {} serves",
            restarted.elapsed(),
            body["release"],
            now["release"]
        );
        *outcomes.entry(outcome).or_default() += 1;
    }
    eprintln!("outcomes: {outcomes:?}");
    project.ok(&["down"]);
}

#[test]
fn every_path_into_production_passes_its_gates_and_force_is_audited() {
    let project = two_environments("0s", "approval = \"manual\"");
    let _daemon = project.start();
    staging_up(&project);
    // A direct deploy: refused, naming the gate.
    let out = project.run(&["--env", "production", "deploy", "--version", "local"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(text.contains("approval"), "{text}");
    assert!(text.contains("--force"), "{text}");
    // `up` for production is the same path.
    let out = project.run(&["--env", "production", "up", "--detach"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("approval"), "{}", stderr(&out));
    // A version staging never ran: refused by `requires` even when approval is forced away?
    // No: `--force` goes past every gate, and says which.
    let forced = project.json(&[
        "--env",
        "production",
        "deploy",
        "--version",
        "never-in-staging",
        "--force",
    ]);
    assert_eq!(forced["outcome"], "succeeded", "{forced:#}");
    let audit = project.json(&["--env", "production", "audit", "--action", "deploy.start"]);
    let row = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["outcome"] == "succeeded")
        .cloned()
        .expect("the forced deploy is audited");
    let reason = row["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("--force past"), "{row:#}");
    assert!(
        reason.contains("approval") && reason.contains("requires"),
        "{row:#}"
    );
    assert_eq!(row["details"]["force"], true, "{row:#}");
    let refused = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["outcome"] == "refused")
        .count();
    assert_eq!(refused, 2, "both refusals are audited: {audit:#}");
}

#[test]
fn requires_means_the_same_version_ran_in_the_required_environment() {
    let project = two_environments("0s", "");
    let _daemon = project.start();
    staging_up(&project);
    let out = project.run(&["--env", "production", "deploy", "--version", "v7"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(text.contains("requires `staging`"), "{text}");
    assert!(text.contains("v7"), "{text}");
    let staged = project.json(&["deploy", "--version", "v7"]);
    assert_eq!(staged["outcome"], "succeeded", "{staged:#}");
    let shipped = project.json(&["--env", "production", "deploy", "--version", "v7"]);
    assert_eq!(shipped["outcome"], "succeeded", "{shipped:#}");
}

#[test]
fn the_audit_log_tells_freeze_unfreeze_deploy_rollback_and_abort_apart() {
    let project = pausing_canary();
    let _daemon = project.start();
    staging_up(&project);
    project.ok(&["freeze", "staging", "--reason", "quarter close"]);
    project.ok(&["unfreeze", "staging"]);
    let started = project.json(&["deploy", "--set", "A=1", "--no-wait", "--message", "try A"]);
    wait_for("the pause step", Duration::from_secs(30), || {
        (latest(&project, "staging")["status"] == "paused").then_some(())
    });
    project.ok(&["abort", "--reason", "not today"]);
    ended(&project, "staging", Duration::from_secs(30));
    project.json(&["deploy", "--set", "A=2", "--no-wait"]);
    wait_for("the pause step again", Duration::from_secs(30), || {
        (latest(&project, "staging")["status"] == "paused").then_some(())
    });
    project.ok(&["promote"]);
    ended(&project, "staging", Duration::from_secs(30));
    project.json(&["rollback", "--reason", "A=2 is slow"]);
    let audit = project.json(&["--env", "staging", "audit"]);
    let rows = audit.as_array().unwrap();
    let find = |action: &str| -> Value {
        rows.iter()
            .rfind(|r| r["action"] == action && r["actor"] == "admin")
            .cloned()
            .unwrap_or_else(|| panic!("no {action} in {audit:#}"))
    };
    let freeze = find("environment.freeze");
    assert_eq!(freeze["reason"], "quarter close");
    assert_eq!(freeze["outcome"], "succeeded");
    let unfreeze = find("environment.unfreeze");
    assert_eq!(unfreeze["outcome"], "succeeded");
    let abort = find("deploy.abort");
    assert_eq!(abort["reason"], "not today");
    let rollback = find("deploy.rollback");
    assert_eq!(rollback["reason"], "A=2 is slow");
    assert_eq!(rollback["outcome"], "succeeded", "{rollback:#}");
    // The aborted deploy's own record has its real outcome, not the 202 of its start.
    let aborted = rows
        .iter()
        .find(|r| {
            r["action"] == "deploy.start"
                && r["subject"] == format!("deployment-{}", started["deployment"])
        })
        .unwrap();
    assert_eq!(aborted["outcome"], "rolled_back", "{aborted:#}");
    assert_eq!(aborted["reason"], "try A");
    for r in [&freeze, &unfreeze, &abort, &rollback, aborted] {
        assert_eq!(r["environment"], "staging", "{r:#}");
        assert!(r["request_id"].is_string(), "{r:#}");
    }
    let actions: std::collections::BTreeSet<&str> =
        rows.iter().filter_map(|r| r["action"].as_str()).collect();
    for a in [
        "environment.freeze",
        "environment.unfreeze",
        "deploy.start",
        "deploy.rollback",
        "deploy.abort",
        "deploy.promote",
    ] {
        assert!(actions.contains(a), "{a} missing: {actions:?}");
    }
    // Filters: by action prefix.
    let deploys = project.json(&["--env", "staging", "audit", "--action", "deploy.*"]);
    assert!(
        deploys
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["action"].as_str().unwrap().starts_with("deploy."))
    );
}

#[test]
fn a_deleted_state_directory_stops_its_control_plane_and_a_new_up_does_not_double_anything() {
    let project = Project::new(SMALL);
    let out = project.run(&["up", "--detach", "--listen", "127.0.0.1:0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let daemon = project.state().daemon_info().unwrap().unwrap().pid;
    let processes = recorded_processes(&project.state());
    assert!(processes.len() >= 3, "{processes:?}");
    std::fs::remove_dir_all(project.state().root()).unwrap();
    // It notices, and stops itself and everything it ran.
    wait_for("the control plane to stop", Duration::from_secs(10), || {
        (start_ticks(daemon).is_none()).then_some(())
    });
    wait_for("its processes to stop", Duration::from_secs(20), || {
        processes
            .iter()
            .all(|p| start_ticks(p.pid) != Some(p.start_ticks))
            .then_some(())
    });
    // A control plane that left its instances running, then lost its folder: a new `up` finds
    // them and refuses to double them; `down` stops them.
    let out = project.run(&["up", "--detach", "--listen", "127.0.0.1:0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let daemon = project.state().daemon_info().unwrap().unwrap().pid;
    let processes = recorded_processes(&project.state());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_for(
        "the control plane to detach",
        Duration::from_secs(20),
        || (start_ticks(daemon).is_none()).then_some(()),
    );
    std::fs::remove_dir_all(project.state().root()).unwrap();
    let out = project.run(&["up", "--detach", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("without its state directory"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("slipway down"), "{}", stderr(&out));
    let status = project.run(&["status"]);
    assert!(stderr(&status).contains("are gone"), "{}", stderr(&status));
    project.ok(&["down"]);
    assert!(
        processes
            .iter()
            .all(|p| start_ticks(p.pid) != Some(p.start_ticks)),
        "down stopped them"
    );
    let out = project.run(&["up", "--detach", "--listen", "127.0.0.1:0"]);
    assert!(out.status.success(), "a fresh start: {}", stderr(&out));
    project.ok(&["down"]);
}

#[test]
fn resume_does_not_pretend_and_unknown_environments_are_refused() {
    let project = pausing_canary();
    let _daemon = project.start();
    staging_up(&project);
    project.json(&["deploy", "--set", "A=1", "--no-wait"]);
    wait_for("the pause step", Duration::from_secs(30), || {
        (latest(&project, "staging")["status"] == "paused").then_some(())
    });
    let out = project.run(&["resume"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(text.contains("waits for a decision"), "{text}");
    assert!(text.contains("slipway promote"), "{text}");
    assert_eq!(latest(&project, "staging")["status"], "paused");
    project.ok(&["promote"]);
    ended(&project, "staging", Duration::from_secs(30));
    for args in [
        &["freeze", "nosuchenv", "--reason", "x"][..],
        &["--env", "nosuch", "dora"],
        &["--env", "nosuch", "events"],
        &["--env", "nosuch", "deployments"],
        &["--env", "nosuch", "pause"],
    ] {
        let out = project.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("unknown environment"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn a_rollback_to_a_release_that_cannot_take_its_port_says_so_at_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    drop(taken);
    let project = Project::new(&SMALL.replace("port = 0", &format!("port = {port}")));
    let _daemon = project.start();
    staging_up(&project);
    // r2 serves on another port; then someone takes r1's.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other_port = other.local_addr().unwrap().port();
    drop(other);
    let toml = std::fs::read_to_string(project.file()).unwrap();
    std::fs::write(
        project.file(),
        toml.replace(&format!("port = {port}"), &format!("port = {other_port}")),
    )
    .unwrap();
    let d = project.json(&["deploy"]);
    assert_eq!(d["outcome"], "succeeded", "{d:#}");
    // The proxy lets go of r1's port once r2 serves on its own.
    let squatter = wait_for("r1's port to be free", Duration::from_secs(20), || {
        std::net::TcpListener::bind(("127.0.0.1", port)).ok()
    });
    let started = Instant::now();
    let out = project.run(&["rollback"]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(started.elapsed() < Duration::from_secs(15), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert_eq!(
        project.json(&["status"])["release"]["id"],
        "r2",
        "r2 still runs"
    );
    drop(squatter);
}
