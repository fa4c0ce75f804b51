//! Deploys end to end: each strategy under steady load, automatic rollback of a bad canary,
//! a canary on too little traffic, instant rollback from a warm standby with its configuration,
//! the release command, one deployment at a time and its controls, workers moving with the
//! release, retention, and `kill -9` of the control plane at many points of a canary.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Load, Project, get, recorded_processes, start_ticks, wait_for};

/// A project whose web service (two instances of the sample app) deploys with `strategy`.
fn project(strategy: &str, extra: &str) -> Project {
    Project::new(&format!(
        r#"
[project]
name = "deploys"

[env]
SAMPLE_VERSION = "v1"
SAMPLE_ECHO = "SAMPLE_VERSION,GREETING"
GREETING = "hello"

[services.web]
start = "slipway-sample web"
port = 0
replicas = 2
health = {{ path = "/health", interval = "200ms" }}
strategy = {strategy}
{extra}
"#
    ))
}

/// The proxy port of the web service, once its first release is up.
fn web_url(project: &Project) -> String {
    let url = crate::support::first_web_url(project, 2);
    wait_idle(project);
    url
}

/// Waits until no deployment is going.
fn wait_idle(project: &Project) -> Value {
    wait_for("no deployment going", Duration::from_secs(60), || {
        let list = project.json(&["deployments", "--limit", "1"]);
        let last = list.as_array()?.first()?.clone();
        last["outcome"].is_string().then_some(last)
    })
}

/// `slipway --json deploy ARGS`: its exit status and the deployment it printed.
fn deploy(project: &Project, args: &[&str]) -> (Output, Value) {
    let mut all = vec!["--json", "deploy"];
    all.extend_from_slice(args);
    let out = project.run(&all);
    let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "deploy printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, value)
}

fn events_of(project: &Project, kind: &str) -> Vec<Value> {
    project
        .json(&["events", "--limit", "1000"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

/// Deploys v2 under 50 connections of steady load and checks that no request failed and
/// that the answers moved from v1 to v2.
fn deploy_under_load_loses_nothing(strategy: &str, extra: &str) {
    let project = project(strategy, extra);
    let _daemon = project.start();
    let url = web_url(&project);
    let load = Load::start(&url, 50, None);
    wait_for("load running", Duration::from_secs(10), || {
        (load.answered() > 500).then_some(())
    });
    let (out, d) = deploy(&project, &["--set", "SAMPLE_VERSION=v2"]);
    assert!(
        out.status.success(),
        "{d:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(d["outcome"], "succeeded", "{d:#}");
    let after = load.answered();
    wait_for("load after the deploy", Duration::from_secs(10), || {
        (load.answered() > after + 500).then_some(())
    });
    let report = load.stop();
    eprintln!(
        "{strategy}: {} ok, {} failed, by version {:?}, deploy {}ms",
        report.ok, report.failed, report.by_version, d["duration_ms"]
    );
    assert_eq!(
        report.failed,
        0,
        "{strategy}: {} of {} requests failed during the deploy: {:?}",
        report.failed,
        report.ok + report.failed,
        report.failures
    );
    let versions: Vec<&str> = report.timeline.iter().map(|(_, v)| v.as_str()).collect();
    assert!(versions[..100].iter().all(|v| *v == "v1"), "v1 before");
    assert!(
        versions[versions.len() - 100..].iter().all(|v| *v == "v2"),
        "v2 after"
    );
    if strategy != "\"blue-green\"" {
        // Traffic moved gradually: some v2 answers came before the last v1 one.
        let first_v2 = versions.iter().position(|v| *v == "v2").unwrap();
        let last_v1 = versions.iter().rposition(|v| *v == "v1").unwrap();
        assert!(
            last_v1 > first_v2 + 50,
            "{strategy}: v1 and v2 served side by side ({first_v2}..{last_v1})"
        );
    }
    let status = project.json(&["status"]);
    assert_eq!(status["release"]["id"], "r2");
    assert_eq!(
        status["services"][0]["traffic"],
        serde_json::json!([{ "release": "r2", "track": "stable", "weight": 100.0 }])
    );
    project.ok(&["down"]);
}

#[test]
fn a_rolling_deploy_loses_no_request_under_load() {
    deploy_under_load_loses_nothing("\"rolling\"", "");
}

#[test]
fn a_blue_green_deploy_loses_no_request_under_load() {
    deploy_under_load_loses_nothing("\"blue-green\"", "");
}

#[test]
fn a_canary_deploy_loses_no_request_under_load() {
    deploy_under_load_loses_nothing(
        "{ type = \"canary\", steps = [\"5%\", \"25%\", \"50%\"], bake = \"1s\" }",
        "",
    );
}

#[test]
fn a_failing_canary_rolls_back_by_itself_and_few_requests_see_it() {
    // Default canary settings.
    let project = project("\"canary\"", "");
    let _daemon = project.start();
    let url = web_url(&project);
    let load = Load::start(&url, 50, None);
    wait_for("load running", Duration::from_secs(10), || {
        (load.answered() > 500).then_some(())
    });
    let from = load.now_ms();
    let started = Instant::now();
    let (out, d) = deploy(&project, &["--set", "SAMPLE_FAIL_RATE=0.3"]);
    let took = started.elapsed();
    let to = load.now_ms();
    std::thread::sleep(Duration::from_millis(500));
    let report = load.stop();
    assert!(!out.status.success(), "a rolled-back deploy exits non-zero");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rolled_back"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(d["outcome"], "rolled_back", "{d:#}");
    let reason = d["reason"].as_str().unwrap();
    assert!(reason.contains("error rate"), "{reason}");
    let (total, failed) = report.between(from, to);
    let share = failed as f64 / total as f64;
    eprintln!(
        "bad canary: rolled back in {}ms ({took:?} for the command); {failed} of {total} requests \
         during the deploy failed ({:.3}%); reason: {reason}",
        d["duration_ms"],
        share * 100.0
    );
    assert!(
        d["duration_ms"].as_u64().unwrap() <= 15_000,
        "rolled back within 15s: {d:#}"
    );
    // The canary takes 5% of the traffic and is judged on its first requests, so few see its
    // errors: under 0.5% of a long deploy's requests, or (a rollback so quick that the window
    // holds few requests) no more than the analysis' minimum sample (20 requests).
    assert!(
        share < 0.005 || failed <= 20,
        "{failed} ({:.3}%) of the requests saw the canary's errors",
        share * 100.0
    );
    // Everything after the rollback is the stable release, and nothing fails.
    let after: Vec<&(u64, String)> = report
        .timeline
        .iter()
        .filter(|(t, _)| *t > to + 100)
        .collect();
    assert!(after.len() > 100);
    assert!(
        after.iter().all(|(_, v)| v == "v1"),
        "v1 serves after the rollback"
    );
    let status = project.json(&["status"]);
    assert_eq!(status["release"]["id"], "r1");
    let instances = status["services"][0]["instances"].as_array().unwrap();
    assert!(
        instances.iter().all(|i| i["release"] == "r1"),
        "{instances:?}"
    );
    let rolled = events_of(&project, "deploy.rolled_back");
    assert_eq!(rolled.len(), 1);
}

#[test]
fn a_healthy_canary_on_too_little_traffic_is_extended_not_rolled_back() {
    let project = project(
        "{ type = \"canary\", steps = [\"10%\", \"50%\"], bake = \"1s\" }",
        "",
    );
    let _daemon = project.start();
    let url = web_url(&project);
    // About 5 requests a second: the canary sees one every couple of seconds.
    let load = Load::start(&url, 1, Some(Duration::from_millis(200)));
    let (out, d) = deploy(&project, &["--no-wait", "--set", "SAMPLE_VERSION=v2"]);
    assert!(out.status.success());
    let id = d["deployment"].as_i64().unwrap();
    let extended = wait_for("the step to be extended", Duration::from_secs(20), || {
        events_of(&project, "deploy.extended").into_iter().next()
    });
    assert!(
        extended["message"]
            .as_str()
            .unwrap()
            .contains("inconclusive"),
        "{extended}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let now = project.json(&["deployments", "--limit", "1"])[0].clone();
    assert_eq!(now["deployment"], id);
    assert_eq!(
        now["status"], "running",
        "still going, not rolled back: {now:#}"
    );
    let analysis = &now["services"][0]["analysis"];
    assert_eq!(analysis["verdict"], "inconclusive", "{now:#}");
    project.ok(&["promote", "--full"]);
    let done = wait_idle(&project);
    assert_eq!(done["outcome"], "succeeded", "{done:#}");
    let report = load.stop();
    assert_eq!(report.failed, 0, "{:?}", report.failures);
    assert!(events_of(&project, "deploy.rolled_back").is_empty());
}

#[test]
fn rollback_after_blue_green_is_instant_and_brings_the_config_back() {
    let project = project("\"blue-green\"", "");
    let _daemon = project.start();
    let url = web_url(&project);
    let (out, d) = deploy(
        &project,
        &["--set", "SAMPLE_VERSION=v2", "--set", "GREETING=bye"],
    );
    assert!(out.status.success(), "{d:#}");
    let body = get(&url);
    assert_eq!(body["env"]["GREETING"], "bye", "{body}");
    assert_eq!(body["version"], "v2");
    let releases = project.json(&["releases"]);
    assert_eq!(releases[0]["role"], "current");
    // The standby is the previous release too: both show.
    assert_eq!(releases[1]["role"], "previous", "{releases:#}");
    assert_eq!(releases[1]["standby"], true, "{releases:#}");
    assert_eq!(releases[0]["overrides"]["GREETING"], "bye");

    let load = Load::start(&url, 20, None);
    wait_for("load running", Duration::from_secs(10), || {
        (load.answered() > 200).then_some(())
    });
    let at = load.now_ms();
    let rolled = project.json(&["rollback", "--reason", "checkout errors"]);
    assert_eq!(rolled["outcome"], "succeeded", "{rolled:#}");
    assert_eq!(rolled["to_release"], "r1");
    let took = rolled["duration_ms"].as_u64().unwrap();
    eprintln!("rollback to the warm standby: all traffic on r1 after {took}ms");
    assert!(
        took < 1000,
        "all traffic on the previous release in {took}ms"
    );
    std::thread::sleep(Duration::from_millis(300));
    let report = load.stop();
    assert_eq!(report.failed, 0, "{:?}", report.failures);
    // Within a second of the rollback starting, every answer is the previous release.
    assert!(
        report
            .timeline
            .iter()
            .filter(|(t, _)| *t > at + 1000)
            .all(|(_, v)| v == "v1")
    );
    // The previous release's configuration is back.
    for _ in 0..10 {
        let body = get(&url);
        assert_eq!(body["env"]["GREETING"], "hello", "{body}");
        assert_eq!(body["version"], "v1");
    }
    let last = project.json(&["deployments", "--limit", "1"])[0].clone();
    assert_eq!(last["kind"], "rollback");
    assert!(
        last["reason"].as_str().unwrap().contains("checkout errors"),
        "{last}"
    );
    assert!(
        last["reason"].as_str().unwrap().contains("warm standby"),
        "{last}"
    );
    // The overrides went back too: the next deploy builds on r1's configuration.
    let (out, d) = deploy(&project, &["--set", "SAMPLE_VERSION=v3"]);
    assert!(out.status.success(), "{d:#}");
    assert_eq!(get(&url)["env"]["GREETING"], "hello");
}

#[test]
fn the_release_command_runs_before_traffic_and_its_failure_changes_nothing() {
    let project = project(
        "\"rolling\"",
        "\n[deploy]\nrelease = \"test \\\"$FAIL_RELEASE\\\" != 1 && echo \\\"$SAMPLE_VERSION\\\" >> migrations.log\"\n",
    );
    let _daemon = project.start();
    let url = web_url(&project);
    let log = project.dir.path().join("migrations.log");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "v1\n",
        "ran for the first release"
    );
    let (out, d) = deploy(&project, &["--set", "SAMPLE_VERSION=v2"]);
    assert!(out.status.success(), "{d:#}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "v1\nv2\n");
    let (out, d) = deploy(
        &project,
        &["--set", "FAIL_RELEASE=1", "--set", "SAMPLE_VERSION=v3"],
    );
    assert!(!out.status.success());
    assert_eq!(d["outcome"], "failed", "nothing was changed: {d:#}");
    assert!(
        d["reason"].as_str().unwrap().contains("release command"),
        "{d:#}"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "v1\nv2\n");
    // No instance of r3 ever started; r2 still serves.
    let started: Vec<Value> = events_of(&project, "instance.started")
        .into_iter()
        .filter(|e| e["data"]["release"] == "r3")
        .collect();
    assert!(started.is_empty(), "{started:?}");
    assert_eq!(project.json(&["status"])["release"]["id"], "r2");
    assert_eq!(get(&url)["version"], "v2");
}

#[test]
fn one_deployment_at_a_time_and_pause_promote_abort_do_what_they_say() {
    let project = project(
        "{ type = \"canary\", steps = [\"20%\", { pause = true }, \"60%\"], bake = \"200ms\", analysis = { min_requests = 0 } }",
        "",
    );
    let _daemon = project.start();
    let url = web_url(&project);
    let (_, d) = deploy(&project, &["--no-wait", "--set", "SAMPLE_VERSION=v2"]);
    let id = d["deployment"].as_i64().unwrap();
    let paused = wait_for("the pause step", Duration::from_secs(20), || {
        let d = project.json(&["deployments", "--limit", "1"])[0].clone();
        (d["status"] == "paused").then_some(d)
    });
    assert!(
        paused["paused"]
            .as_str()
            .unwrap()
            .contains("slipway promote"),
        "{paused:#}"
    );
    assert_eq!(paused["services"][0]["weight"], 20.0);
    // A second deploy is refused, naming the one going on.
    let out = project.run(&["deploy", "--set", "SAMPLE_VERSION=v3"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("deployment {id}")), "{err}");
    assert!(err.contains("still going"), "{err}");
    // `up` does not wait forever behind a deployment that waits for a person.
    let out = project.run(&["up"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("deployment {id}")), "{err}");
    assert!(
        err.contains("is paused") && err.contains("slipway promote"),
        "{err}"
    );
    // Promote: on to the next step.
    project.ok(&["promote"]);
    let done = wait_idle(&project);
    assert_eq!(done["outcome"], "succeeded", "{done:#}");
    assert_eq!(get(&url)["version"], "v2");

    // A deploy paused by a person, then aborted.
    let (_, d) = deploy(&project, &["--no-wait", "--set", "SAMPLE_VERSION=v3"]);
    let id = d["deployment"].as_i64().unwrap();
    wait_for("the pause step again", Duration::from_secs(20), || {
        let d = project.json(&["deployments", "--limit", "1"])[0].clone();
        (d["status"] == "paused").then_some(())
    });
    project.ok(&["abort", "--reason", "not today"]);
    let done = wait_idle(&project);
    assert_eq!(done["deployment"], id);
    assert_eq!(done["outcome"], "rolled_back");
    assert!(
        done["reason"]
            .as_str()
            .unwrap()
            .contains("aborted by admin: not today"),
        "{done:#}"
    );
    assert_eq!(get(&url)["version"], "v2");
    // Traffic went back right after the abort, long before the deploy's end was written.
    let reverted = done["reverted_in_ms"].as_u64().expect("timed");
    assert!(reverted < 1000, "{done:#}");

    // `rollback` during a deploy rolls that deploy back, and times the way back, not the deploy.
    let (_, d) = deploy(&project, &["--no-wait", "--set", "SAMPLE_VERSION=v4"]);
    wait_for(
        "the pause step a third time",
        Duration::from_secs(20),
        || {
            let d = project.json(&["deployments", "--limit", "1"])[0].clone();
            (d["status"] == "paused").then_some(())
        },
    );
    std::thread::sleep(Duration::from_millis(1500)); // so the deploy's own age is over 1 s
    let back = project.json(&["rollback"]);
    assert_eq!(back["outcome"], "succeeded", "{back:#}");
    assert_eq!(back["deployment"], d["deployment"], "{back:#}");
    assert_eq!(back["to_release"], done["from_release"], "{back:#}");
    assert!(back["duration_ms"].as_u64().unwrap() < 1000, "{back:#}");
    assert_eq!(get(&url)["version"], "v2");
    let audit = project.ok(&["audit"]);
    assert!(audit.contains("deploy.abort"), "{audit}");
    // Nothing to control now.
    let out = project.run(&["promote"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no deployment"));
}

#[test]
fn workers_move_with_the_release_and_every_service_gets_the_same_variables() {
    let project = project(
        "\"rolling\"",
        r#"
[services.worker]
kind = "worker"
start = "slipway-sample worker"
env = { SAMPLE_PRINT = "SHARED", SAMPLE_JOB_MS = "50" }
health = { type = "uptime", start_period = "300ms" }

[environments.local.env]
SHARED = "from-file"
"#,
    );
    let _daemon = project.start();
    let url = web_url(&project);
    let (out, d) = deploy(&project, &["--set", "SHARED=from-set"]);
    assert!(out.status.success(), "{d:#}");
    let status = project.json(&["status"]);
    for s in status["services"].as_array().unwrap() {
        for i in s["instances"].as_array().unwrap() {
            assert_eq!(i["release"], "r2", "{s:#}");
        }
    }
    assert_eq!(get(&url)["version"], "v1");
    let logs = project.ok(&["logs", "worker", "--limit", "1000"]);
    assert!(
        logs.contains("from-set"),
        "the worker got the new value: {logs}"
    );
    let new_lines: Vec<&str> = logs.lines().filter(|l| l.contains("worker-r2")).collect();
    assert!(
        new_lines.iter().all(|l| !l.contains("from-file")),
        "{new_lines:?}"
    );
}

#[test]
fn retention_prunes_old_releases_but_keeps_current_previous_and_pinned() {
    let project = project("\"recreate\"", "\n[deploy]\nretain = 2\n");
    let _daemon = project.start();
    let _ = web_url(&project);
    project.ok(&["releases", "pin", "r1"]);
    for v in ["v2", "v3", "v4", "v5"] {
        let (out, d) = deploy(&project, &["--set", &format!("SAMPLE_VERSION={v}")]);
        assert!(out.status.success(), "{d:#}");
    }
    let releases = project.json(&["releases"]);
    let by_id = |id: &str| {
        releases
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_id("r5")["role"], "current");
    assert_eq!(by_id("r4")["role"], "previous");
    assert_eq!(by_id("r1")["pinned"], true);
    assert_eq!(by_id("r1")["pruned"], false, "pinned releases are kept");
    assert_eq!(by_id("r2")["pruned"], true);
    assert_eq!(by_id("r3")["pruned"], true);
    let out = project.run(&["rollback", "--to", "r2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pruned"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A pinned release can still be rolled back to (not warm: it starts again).
    let rolled = project.json(&["rollback", "--to", "r1"]);
    assert_eq!(rolled["outcome"], "succeeded", "{rolled:#}");
    assert_eq!(project.json(&["status"])["release"]["id"], "r1");
}

/// The sample app's web instances and shims must all belong to live sets.
fn assert_no_orphans(project: &Project, status: &Value) {
    let live: Vec<u64> = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["instances"].as_array().unwrap().clone())
        .filter_map(|i| i["pid"].as_u64())
        .collect();
    let proxy: Value = serde_json::from_str(
        &std::fs::read_to_string(project.state().root().join("proxy/proxy.json")).unwrap(),
    )
    .unwrap();
    let proxy_pid = proxy["pid"].as_u64().unwrap();
    let dirs = std::fs::read_dir(project.state().root().join("instances")).unwrap();
    for dir in dirs.flatten() {
        let record: Value = match std::fs::read_to_string(dir.path().join("instance.json")) {
            Ok(t) => serde_json::from_str(&t).unwrap_or_default(),
            Err(_) => continue,
        };
        let pid = record["process"]["pid"].as_u64().unwrap_or(0);
        let ticks = record["process"]["start_ticks"].as_u64().unwrap_or(0);
        if pid > 1 && start_ticks(pid as u32) == Some(ticks) {
            assert!(
                live.contains(&pid) || pid == proxy_pid,
                "pid {pid} ({}) runs but belongs to no live set: {status:#}",
                record["id"]
            );
        }
    }
    let _ = recorded_processes(&project.state());
}

#[test]
fn kill_9_of_the_control_plane_at_twenty_points_of_canaries_always_ends_cleanly() {
    let project = project(
        "{ type = \"canary\", steps = [\"25%\", \"50%\"], bake = \"400ms\", analysis = { min_requests = 0 } }",
        r#"
[services.worker]
kind = "worker"
start = "slipway-sample worker"
health = { type = "uptime", start_period = "200ms" }
"#,
    );
    let mut daemon = project.start();
    let url = web_url(&project);
    // Deterministic "random" kill points over a canary of about 1.5s.
    let mut seed: u64 = 0x5eed_1234_abcd_0042;
    let mut outcomes = std::collections::BTreeMap::<String, u32>::new();
    for round in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(seed % 1800);
        let (out, d) = deploy(
            &project,
            &[
                "--no-wait",
                "--set",
                &format!("SAMPLE_VERSION=v{}", round + 2),
            ],
        );
        assert!(out.status.success(), "round {round}: {d:#}");
        std::thread::sleep(delay);
        daemon.kill();
        daemon = project.start();
        let done = wait_idle(&project);
        let outcome = done["outcome"].as_str().unwrap().to_string();
        // Killed before any traffic moved, the deployment fails with nothing changed (it is
        // reverted, and says why); later it rolls back or, once committed, succeeds.
        let interrupted_early = outcome == "failed"
            && done["switched_ms"].is_null()
            && done["reason"]
                .as_str()
                .is_some_and(|r| r.contains("control plane restarted"));
        assert!(
            outcome == "succeeded" || outcome == "rolled_back" || interrupted_early,
            "round {round} (killed after {delay:?}): {done:#}"
        );
        *outcomes.entry(outcome).or_default() += 1;
        // Traffic is on a live pool: the current release answers through the proxy.
        let status = project.json(&["status"]);
        let current = status["release"]["id"].as_str().unwrap().to_string();
        let web = &status["services"][0];
        assert_eq!(
            web["traffic"],
            serde_json::json!([{ "release": current, "track": "stable", "weight": 100.0 }]),
            "round {round}: {status:#}"
        );
        let body = wait_for(
            "an answer from the current release",
            Duration::from_secs(10),
            || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let r = reqwest::get(&url).await.ok()?;
                    if !r.status().is_success() {
                        return None;
                    }
                    r.json::<Value>().await.ok()
                })
            },
        );
        assert_eq!(body["release"], current.as_str(), "round {round}");
        // Only the current release's instances (and the proxy) run.
        wait_for("the old sets to be gone", Duration::from_secs(20), || {
            let status = project.json(&["status"]);
            status["services"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| s["instances"].as_array().unwrap().clone())
                .all(|i| i["release"] == current.as_str())
                .then_some(())
        });
        assert_no_orphans(&project, &project.json(&["status"]));
    }
    eprintln!("outcomes after kill -9 at 20 points: {outcomes:?}");
    project.ok(&["down"]);
}

#[test]
fn the_post_deploy_watch_rolls_back_a_release_that_goes_bad_after_the_switch() {
    let project = project(
        "{ type = \"canary\", steps = [\"50%\"], bake = \"500ms\", analysis = { watch = \"20s\" } }",
        "",
    );
    let _daemon = project.start();
    let url = web_url(&project);
    let load = Load::start(&url, 10, None);
    // A minute's worth of baseline is not needed: a few seconds of clean traffic will do.
    wait_for("baseline traffic", Duration::from_secs(10), || {
        (load.answered() > 2000).then_some(())
    });
    let (out, d) = deploy(&project, &["--no-wait", "--set", "SAMPLE_VERSION=v2"]);
    assert!(out.status.success(), "{d:#}");
    let watching = wait_for("the watch", Duration::from_secs(30), || {
        let d = project.json(&["deployments", "--limit", "1"])[0].clone();
        (d["status"] == "watching").then_some(d)
    });
    assert!(watching["watch_until"].is_string(), "{watching:#}");
    assert_eq!(
        project.json(&["status"])["release"]["id"],
        "r2",
        "committed"
    );
    // The new release goes bad: 30 % of its answers become 503s.
    let proxy = project.state().root().join("proxy");
    let token = std::fs::read_to_string(proxy.join("admin.token")).unwrap();
    let admin = std::fs::read_to_string(proxy.join("admin.addr")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .put(format!("http://{}/faults/local/web", admin.trim()))
            .bearer_auth(token.trim())
            .json(&serde_json::json!({ "abort_percent": 30, "abort_status": 503 }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    });
    let done = wait_idle(&project);
    assert_eq!(done["outcome"], "rolled_back", "{done:#}");
    assert!(
        done["reason"]
            .as_str()
            .unwrap()
            .contains("post-deploy watch"),
        "{done:#}"
    );
    assert_eq!(project.json(&["status"])["release"]["id"], "r1");
    let _ = load.stop();
}

#[test]
fn a_sticky_canary_keeps_each_user_on_one_release_and_only_moves_them_forward() {
    let project = project(
        "{ type = \"canary\", steps = [\"20%\", { pause = true }, \"60%\", { pause = true }], bake = \"200ms\", sticky = { header = \"x-user\" }, canary_tenants = [\"acme\"], analysis = { min_requests = 0 } }",
        "",
    );
    let _daemon = project.start();
    let url = web_url(&project);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let version_of = |user: &str| -> String {
        rt.block_on(async {
            let v: Value = client
                .get(&url)
                .header("x-user", user)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["version"].as_str().unwrap().to_string()
        })
    };
    let users: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    // Each user, asked three times, must get one answer; returns the users on v2.
    let canary_users = |weight: f64| -> Vec<String> {
        let mut on_canary = Vec::new();
        for user in &users {
            let seen: Vec<String> = (0..3).map(|_| version_of(user)).collect();
            assert!(
                seen.iter().all(|v| v == &seen[0]),
                "{user} at {weight}% saw {seen:?}"
            );
            if seen[0] == "v2" {
                on_canary.push(user.clone());
            }
        }
        on_canary
    };
    let paused_at = |weight: f64| {
        wait_for("the pause step", Duration::from_secs(30), || {
            let d = project.json(&["deployments", "--limit", "1"])[0].clone();
            (d["status"] == "paused" && d["services"][0]["weight"] == weight).then_some(())
        });
    };

    deploy(&project, &["--no-wait", "--set", "SAMPLE_VERSION=v2"]);
    paused_at(20.0);
    let at_20 = canary_users(20.0);
    // A hash split of 200 users at 20 %: far from 0 and from all (binomial sd ≈ 5.7).
    assert!(
        (15..=70).contains(&at_20.len()),
        "{} of 200 on the canary at 20%",
        at_20.len()
    );
    // The canary tenant is on the new release from the first step.
    assert_eq!(version_of("acme"), "v2");

    project.ok(&["promote"]);
    paused_at(60.0);
    let at_60 = canary_users(60.0);
    assert!(
        (90..=170).contains(&at_60.len()),
        "{} of 200 on the canary at 60%",
        at_60.len()
    );
    // Growing the canary only moves users from stable to canary, never back.
    let moved_back: Vec<&String> = at_20.iter().filter(|u| !at_60.contains(u)).collect();
    assert!(
        moved_back.is_empty(),
        "back on stable at 60%: {moved_back:?}"
    );

    project.ok(&["promote"]);
    let done = wait_idle(&project);
    assert_eq!(done["outcome"], "succeeded", "{done:#}");
    assert!(users.iter().take(20).all(|u| version_of(u) == "v2"));
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) && pid != std::process::id() {
            found.push((pid, cmdline));
        }
    }
    found
}

#[test]
fn the_demo_deploys_a_good_canary_rolls_a_bad_one_back_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::support::slipway_bin())
        .args(["--json", "demo"])
        .current_dir(tmp.path())
        .env("TMPDIR", tmp.path())
        .env_remove("SLIPWAY_STATE_DIR")
        .env_remove("SLIPWAY_ENV")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    let summary: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(summary["v2"]["outcome"], "succeeded", "{summary:#}");
    assert_eq!(summary["v3"]["outcome"], "rolled_back", "{summary:#}");
    assert!(
        summary["v3"]["reason"]
            .as_str()
            .unwrap()
            .contains("error rate"),
        "{summary:#}"
    );
    // The load saw v1 and then v2 answer, and hardly any of v3's errors.
    let by = &summary["answered_by"];
    assert!(
        by["v1"].as_u64().unwrap() > 0 && by["v2"].as_u64().unwrap() > 0,
        "{by}"
    );
    assert!(summary["requests"].as_u64().unwrap() > 1000, "{summary:#}");
    assert!(
        summary["failed_share"].as_f64().unwrap() < 0.005,
        "{summary:#}"
    );
    // Its folder is gone and nothing it started is left running.
    // Not a path that no longer exists (`project` is only for `--keep`).
    assert_eq!(summary["project"], Value::Null, "{summary:#}");
    let project = summary["deleted_folder"].as_str().unwrap();
    assert!(!Path::new(project).exists(), "{project} is left behind");
    let left = processes_mentioning(project);
    assert!(left.is_empty(), "left running: {left:?}");
}
